//! The `pii` rule: candidate patterns, checksum and number-plan validators
//! (Luhn, IBAN mod 97, SSN issuing rules) and masking of what was found.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use super::rules::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PiiKind {
    Email,
    Phone,
    Card,
    Ssn,
    Iban,
    AwsAccessKey,
    GithubToken,
    SlackToken,
    OpenaiKey,
    AnthropicKey,
    PrivateKey,
}

impl PiiKind {
    pub(super) const ALL: [PiiKind; 11] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::Card,
        PiiKind::Ssn,
        PiiKind::Iban,
        PiiKind::AwsAccessKey,
        PiiKind::GithubToken,
        PiiKind::SlackToken,
        PiiKind::OpenaiKey,
        PiiKind::AnthropicKey,
        PiiKind::PrivateKey,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Ssn => "ssn",
            PiiKind::Iban => "iban",
            PiiKind::AwsAccessKey => "aws_access_key",
            PiiKind::GithubToken => "github_token",
            PiiKind::SlackToken => "slack_token",
            PiiKind::OpenaiKey => "openai_key",
            PiiKind::AnthropicKey => "anthropic_key",
            PiiKind::PrivateKey => "private_key",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<PiiKind> {
        PiiKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// The detectors' patterns, compiled once per process. Each is a candidate
/// finder: checksums, number plans and word boundaries are checked in code.
/// `[0-9]` and ASCII boundaries keep them on the fast DFA engines.
pub(super) struct PiiPatterns {
    private_key: Regex,
    secret_token: Regex,
    aws_access_key: Regex,
    email: Regex,
    iban: Regex,
    card: Regex,
    ssn: Regex,
    phone: Regex,
}

pub(super) static PII_PATTERNS: LazyLock<Result<PiiPatterns, regex::Error>> =
    LazyLock::new(PiiPatterns::build);

impl PiiPatterns {
    fn build() -> Result<PiiPatterns, regex::Error> {
        Ok(PiiPatterns {
            private_key: Regex::new(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")?,
            // GitHub classic and fine-grained tokens, Slack tokens, OpenAI and Anthropic keys.
            secret_token: Regex::new(
                r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}|xox[abposr]-[A-Za-z0-9-]{10,250}|xapp-[0-9]-[A-Za-z0-9-]{10,250}|sk-[A-Za-z0-9_-]{20,250}",
            )?,
            aws_access_key: Regex::new(
                r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}",
            )?,
            email: Regex::new(
                r"(?i)[a-z0-9][a-z0-9._%+-]{0,63}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}",
            )?,
            iban: Regex::new(
                r"[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)",
            )?,
            card: Regex::new(
                r"[0-9]{4}(?:[ -][0-9]{4}){3}|[0-9]{4}[ -][0-9]{6}[ -][0-9]{5}|[0-9]{13,19}",
            )?,
            ssn: Regex::new(r"[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}")?,
            // E.164 (+ and up to 15 digits, separators allowed), North American
            // (555) 123-4567 / 555-123-4567 / 555.123.4567, and trunk-prefix national
            // formats such as 020 7946 0958, 07700 900123 or 01 23 45 67 89.
            phone: Regex::new(
                r"\+[0-9](?:[ .()-]{0,2}[0-9]){6,14}|\([2-9][0-9]{2}\) ?[0-9]{3}[-. ][0-9]{4}|[2-9][0-9]{2}[-.][0-9]{3}[-.][0-9]{4}|0[1-9][0-9]{0,3}(?:[ -][0-9]{2,8}){1,4}",
            )?,
        })
    }
}

struct Finding {
    kind: PiiKind,
    start: usize,
    masked: String,
}

/// Finds PII of the given kinds; where candidates overlap, the more specific
/// detector (keys before emails before IBANs, cards, SSNs and phones) wins.
fn find_pii(text: &str, patterns: &PiiPatterns, wanted: &[PiiKind]) -> Vec<Finding> {
    let mut taken: BTreeMap<usize, usize> = BTreeMap::new();
    let mut findings = Vec::new();
    let mut claim = |kind: PiiKind, start: usize, end: usize, masked: String| {
        let before = taken
            .range(..=start)
            .next_back()
            .is_some_and(|(_, taken_end)| *taken_end > start);
        let inside = taken.range(start..end).next().is_some();
        if before || inside {
            return;
        }
        taken.insert(start, end);
        if wanted.contains(&kind) {
            findings.push(Finding {
                kind,
                start,
                masked,
            });
        }
    };

    for found in patterns.private_key.find_iter(text) {
        claim(
            PiiKind::PrivateKey,
            found.start(),
            found.end(),
            found.as_str().to_owned(),
        );
    }
    for found in patterns.secret_token.find_iter(text) {
        let token = found.as_str();
        if !isolated(text, found.start(), found.end()) {
            continue;
        }
        let (kind, prefix) = classify_token(token);
        let body = token.get(prefix.len()..).unwrap_or("");
        if matches!(kind, PiiKind::OpenaiKey | PiiKind::AnthropicKey) && !looks_random(body) {
            continue;
        }
        claim(
            kind,
            found.start(),
            found.end(),
            mask_secret(token, prefix.len()),
        );
    }
    for found in patterns.aws_access_key.find_iter(text) {
        if isolated(text, found.start(), found.end()) {
            claim(
                PiiKind::AwsAccessKey,
                found.start(),
                found.end(),
                mask_secret(found.as_str(), 4),
            );
        }
    }
    for found in patterns.email.find_iter(text) {
        if isolated(text, found.start(), found.end()) {
            claim(
                PiiKind::Email,
                found.start(),
                found.end(),
                mask_email(found.as_str()),
            );
        }
    }
    for found in patterns.iban.find_iter(text) {
        let compact: String = found.as_str().chars().filter(|c| *c != ' ').collect();
        if isolated(text, found.start(), found.end()) && iban_valid(&compact) {
            claim(
                PiiKind::Iban,
                found.start(),
                found.end(),
                mask_ends(&compact),
            );
        }
    }
    for found in patterns.card.find_iter(text) {
        let digits = digits_of(found.as_str());
        if isolated(text, found.start(), found.end())
            && card_prefix_known(&digits)
            && luhn_valid(&digits)
        {
            claim(
                PiiKind::Card,
                found.start(),
                found.end(),
                mask_card(&digits),
            );
        }
    }
    for found in patterns.ssn.find_iter(text) {
        if isolated_number(text, found.start(), found.end()) && ssn_valid(found.as_str()) {
            let serial = found.as_str().get(7..).unwrap_or("");
            claim(
                PiiKind::Ssn,
                found.start(),
                found.end(),
                format!("***-**-{serial}"),
            );
        }
    }
    for found in patterns.phone.find_iter(text) {
        if isolated_number(text, found.start(), found.end()) && phone_plausible(found.as_str()) {
            claim(
                PiiKind::Phone,
                found.start(),
                found.end(),
                mask_digits(found.as_str(), 2),
            );
        }
    }
    findings
}

pub(super) fn check_pii(label: &str, text: &str, kinds: &[PiiKind]) -> Verdict {
    let Ok(patterns) = PII_PATTERNS.as_ref() else {
        return Verdict::fail("PII patterns are unavailable".to_owned());
    };
    let mut findings = find_pii(text, patterns, kinds);
    if findings.is_empty() {
        return Verdict::pass(format!("no PII found in {label}"));
    }
    // Kinds in order of first appearance, each with up to two distinct masked
    // examples and how many more matches there were.
    findings.sort_by_key(|finding| finding.start);
    let mut groups: Vec<(PiiKind, Vec<&str>, usize)> = Vec::new();
    for finding in &findings {
        let index = match groups.iter().position(|(kind, ..)| *kind == finding.kind) {
            Some(index) => index,
            None => {
                groups.push((finding.kind, Vec::new(), 0));
                groups.len() - 1
            }
        };
        if let Some((_, examples, count)) = groups.get_mut(index) {
            *count += 1;
            if examples.len() < 2 && !examples.contains(&finding.masked.as_str()) {
                examples.push(&finding.masked);
            }
        }
    }
    let described: Vec<String> = groups
        .iter()
        .map(|(kind, examples, count)| {
            let mut shown = examples.join(", ");
            if *count > examples.len() {
                shown.push_str(&format!(", +{} more", count - examples.len()));
            }
            format!("{} ({shown})", kind.name())
        })
        .collect();
    let noun = if groups.len() == 1 { "kind" } else { "kinds" };
    Verdict::fail(format!(
        "found {} {noun} of PII in {label}: {}",
        groups.len(),
        described.join(", ")
    ))
}

fn classify_token(token: &str) -> (PiiKind, &'static str) {
    const PREFIXES: &[(&str, PiiKind)] = &[
        ("github_pat_", PiiKind::GithubToken),
        ("ghp_", PiiKind::GithubToken),
        ("gho_", PiiKind::GithubToken),
        ("ghu_", PiiKind::GithubToken),
        ("ghs_", PiiKind::GithubToken),
        ("ghr_", PiiKind::GithubToken),
        ("xapp-", PiiKind::SlackToken),
        ("sk-ant-", PiiKind::AnthropicKey),
        ("sk-proj-", PiiKind::OpenaiKey),
        ("sk-svcacct-", PiiKind::OpenaiKey),
        ("sk-admin-", PiiKind::OpenaiKey),
        ("sk-", PiiKind::OpenaiKey),
    ];
    for (prefix, kind) in PREFIXES {
        if token.starts_with(prefix) {
            return (*kind, prefix);
        }
    }
    // xoxb-, xoxp-, …: the only pattern left.
    (PiiKind::SlackToken, "xox?-")
}

/// Real API keys are random base62: a hyphenated word like `sk-learn-…` is not one.
fn looks_random(body: &str) -> bool {
    body.len() >= 20
        && body.bytes().any(|b| b.is_ascii_digit())
        && body.bytes().any(|b| b.is_ascii_uppercase())
        && body.bytes().any(|b| b.is_ascii_lowercase())
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// No letter, digit or underscore touches the match on either side.
fn isolated(text: &str, start: usize, end: usize) -> bool {
    let before = text.get(..start).and_then(|head| head.chars().next_back());
    let after = text.get(end..).and_then(|tail| tail.chars().next());
    !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
}

/// As [`isolated`], and not glued to a longer number by `+`, `-`, `.` or `/` followed by a digit.
fn isolated_number(text: &str, start: usize, end: usize) -> bool {
    if !isolated(text, start, end) {
        return false;
    }
    let head = text.get(..start).unwrap_or("");
    let tail = text.get(end..).unwrap_or("");
    let mut back = head.chars().rev();
    let glued_before = matches!(back.next(), Some('-' | '.' | '/' | '+'))
        && back.next().is_some_and(|c| c.is_ascii_digit());
    let mut ahead = tail.chars();
    let glued_after = matches!(ahead.next(), Some('-' | '.' | '/'))
        && ahead.next().is_some_and(|c| c.is_ascii_digit());
    !glued_before && !glued_after
}

fn digits_of(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

fn number_of(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |acc, d| acc * 10 + u32::from(*d))
}

fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Issuer prefixes of the major networks (Visa, Mastercard, Amex, Discover,
/// JCB, Diners, UnionPay, Maestro): a Luhn-valid order number is not a card.
fn card_prefix_known(digits: &[u8]) -> bool {
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let p2 = number_of(&digits[..2]);
    let p3 = number_of(&digits[..3]);
    let p4 = number_of(&digits[..4]);
    digits[0] == 4
        || (51..=55).contains(&p2)
        || (2221..=2720).contains(&p4)
        || matches!(p2, 34 | 37 | 36 | 38 | 39 | 50 | 56..=58 | 62 | 65 | 67)
        || p4 == 6011
        || (644..=649).contains(&p3)
        || (3528..=3589).contains(&p4)
        || (300..=305).contains(&p3)
}

/// Area 000, 666 and 900–999, group 00 and serial 0000 are never issued.
fn ssn_valid(candidate: &str) -> bool {
    let bytes = candidate.as_bytes();
    // Both separators alike: 123-45-6789 or 123 45 6789.
    if bytes.len() != 11 || bytes[3] != bytes[6] {
        return false;
    }
    let digits = digits_of(candidate);
    let (area, group, serial) = (
        number_of(&digits[..3]),
        number_of(&digits[3..5]),
        number_of(&digits[5..]),
    );
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn phone_plausible(candidate: &str) -> bool {
    let digits = digits_of(candidate);
    if candidate.starts_with('+') {
        // E.164: a country code never starts with 0; at most 15 digits.
        return digits.first().is_some_and(|d| *d != 0) && (8..=15).contains(&digits.len());
    }
    if candidate.starts_with('0') {
        return (10..=11).contains(&digits.len());
    }
    let bytes = candidate.as_bytes();
    // 555-123-4567 must not mix separators; (555) 123-4567 may.
    bytes.first() == Some(&b'(') || bytes.get(3) == bytes.get(7)
}

/// ISO 13616: move the first four characters to the end, letters to 10–35, mod 97 must be 1.
fn iban_valid(compact: &str) -> bool {
    if !(15..=34).contains(&compact.len()) || !compact.is_ascii() {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        remainder = match c.to_digit(36) {
            Some(value) if value < 10 => (remainder * 10 + value) % 97,
            Some(value) => (remainder * 100 + value) % 97,
            None => return false,
        };
    }
    remainder == 1
}

fn mask_email(address: &str) -> String {
    let (local, domain) = address.split_once('@').unwrap_or((address, ""));
    let first: String = local.chars().take(1).collect();
    format!("{first}***@{domain}")
}

fn mask_card(digits: &[u8]) -> String {
    let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    let first = text.get(..4).unwrap_or("");
    let last = text.get(text.len().saturating_sub(4)..).unwrap_or("");
    let hidden = vec!["****"; digits.len().saturating_sub(8).div_ceil(4)].join(" ");
    format!("{first} {hidden} {last}")
}

/// First and last four characters, the rest hidden (IBANs).
fn mask_ends(compact: &str) -> String {
    let first = compact.get(..4).unwrap_or("");
    let last = compact.get(compact.len().saturating_sub(4)..).unwrap_or("");
    format!("{first} **** {last}")
}

/// The well-known prefix and the last four characters of a secret.
fn mask_secret(secret: &str, prefix_len: usize) -> String {
    let prefix = secret.get(..prefix_len).unwrap_or("");
    let last = secret.get(secret.len().saturating_sub(4)..).unwrap_or("");
    format!("{prefix}****{last}")
}

/// Every digit but the last `keep` becomes `*`; separators stay.
fn mask_digits(text: &str, keep: usize) -> String {
    let total = text.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    text.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + keep <= total {
                    return '*';
                }
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::rules::Label;
    use super::super::test_support::{expect, run};
    use super::*;
    use serde_json::json;

    fn pii(text: &str) -> Verdict {
        run(json!({"rule": "pii"}), text)
    }

    #[track_caller]
    fn assert_pii(text: &str, kind: &str, masked: &str) {
        let verdict = pii(text);
        expect(&verdict, Label::Fail);
        assert_eq!(
            verdict.reasoning,
            format!("found 1 kind of PII in output: {kind} ({masked})"),
            "in {text:?}"
        );
    }

    #[track_caller]
    fn assert_no_pii(text: &str) {
        let verdict = pii(text);
        expect(&verdict, Label::Pass);
        assert_eq!(verdict.reasoning, "no PII found in output");
    }

    #[test]
    fn pii_reasoning_lists_kinds_with_masked_matches() {
        let verdict = pii("Contact j.doe@example.com, card 4111 1111 1111 1111.");
        expect(&verdict, Label::Fail);
        assert_eq!(
            verdict.reasoning,
            "found 2 kinds of PII in output: email (j***@example.com), card (4111 **** **** 1111)"
        );
        let many = pii("a@x.io a@x.io b@x.io d@x.io");
        assert_eq!(
            many.reasoning,
            "found 1 kind of PII in output: email (a***@x.io, b***@x.io, +2 more)"
        );
    }

    #[test]
    fn pii_emails_and_phones() {
        assert_pii(
            "mail ada.lovelace+ml@math.example.org now",
            "email",
            "a***@math.example.org",
        );
        assert_pii("call +14155552671", "phone", "+*********71");
        assert_pii("call +44 20 7946 0958 today", "phone", "+** ** **** **58");
        assert_pii("call (555) 123-4567", "phone", "(***) ***-**67");
        assert_pii("call 555-123-4567.", "phone", "***-***-**67");
        assert_pii("call 555.123.4567", "phone", "***.***.**67");
        assert_pii("ring 020 7946 0958", "phone", "*** **** **58");
        assert_pii("mobile 07700 900123", "phone", "***** ****23");
        assert_pii("appelez le 01 23 45 67 89", "phone", "** ** ** ** 89");

        assert_no_pii("write to me at ada at example dot com or @ada");
        assert_no_pii("user@localhost is not routable");
        assert_no_pii("released 2024-01-15, version 1.2.3, build 20240115");
        assert_no_pii("order 12345 shipped to +1 later; 555-1234 is short");
        assert_no_pii("mixed 555-123.4567 separators and +0 123 456 789");
        assert_no_pii("ranges 100-200-3000 and 05-12-2024");
    }

    #[test]
    fn pii_cards_need_a_known_issuer_and_luhn() {
        assert_pii("visa 4111111111111111", "card", "4111 **** **** 1111");
        assert_pii("mc 5555-5555-5555-4444", "card", "5555 **** **** 4444");
        assert_pii("amex 378282246310005", "card", "3782 **** **** 0005");
        assert_pii("amex 3782 822463 10005", "card", "3782 **** **** 0005");
        // Luhn fails.
        assert_no_pii("visa 4111111111111112");
        assert_no_pii("number 4111 1111 1111 1112");
        assert_no_pii("random 8302719465028374");
        // Luhn passes but no issuer starts with 1.
        assert_no_pii("tracking 1234567812345670");
        // Longer runs of digits are not cards.
        assert_no_pii("id 41111111111111110000000");
    }

    #[test]
    fn pii_ssns_follow_the_issuing_rules() {
        assert_pii("ssn 536-22-1234", "ssn", "***-**-1234");
        assert_pii("ssn 536 22 1234", "ssn", "***-**-1234");
        for invalid in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "987-65-4321",
            "536-00-1234",
            "536-22-0000",
        ] {
            assert_no_pii(&format!("ssn {invalid}"));
        }
        assert_no_pii("mixed 536-22 1234");
    }

    #[test]
    fn pii_ibans_need_mod_97() {
        assert_pii("pay GB82WEST12345698765432 today", "iban", "GB82 **** 5432");
        assert_pii(
            "pay GB82 WEST 1234 5698 7654 32 today",
            "iban",
            "GB82 **** 5432",
        );
        assert_pii("IBAN: DE89370400440532013000", "iban", "DE89 **** 3000");
        assert_no_pii("pay GB82WEST12345698765431 today");
        assert_no_pii("pay GB00WEST12345698765432 today");
        assert_no_pii("SKU AB12CDEFGHIJKLMNOP");
    }

    #[test]
    fn pii_keys_and_tokens_are_masked() {
        let github = "ghp_1234567890abcdefghijklmnopqrstuvwxYZ";
        let fine_grained = format!("github_pat_{}", "A1b2".repeat(20));
        let slack = "xoxb-1234567890-0987654321-AbCdEfGhIjKl";
        let openai = "sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWxYz12345";
        let anthropic = "sk-ant-api03-Ab3dEf6hIj9kLmN0pQrStUvWxYz12345-xyz_AA";
        let cases = [
            (
                "AKIAIOSFODNN7EXAMPLE",
                "aws_access_key",
                "AKIA****MPLE".to_owned(),
            ),
            (github, "github_token", "ghp_****wxYZ".to_owned()),
            (
                &fine_grained,
                "github_token",
                "github_pat_****A1b2".to_owned(),
            ),
            (slack, "slack_token", "xoxb-****IjKl".to_owned()),
            (openai, "openai_key", "sk-proj-****2345".to_owned()),
            (anthropic, "anthropic_key", "sk-ant-****z_AA".to_owned()),
        ];
        for (secret, kind, masked) in cases {
            let text = format!("export KEY=\"{secret}\"");
            assert_pii(&text, kind, &masked);
            assert!(!pii(&text).reasoning.contains(secret));
        }
        let key =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----";
        assert_pii(key, "private_key", "-----BEGIN RSA PRIVATE KEY-----");
        assert!(!pii(key).reasoning.contains("MIIE"));
        assert_pii(
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "private_key",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
        );

        assert_no_pii("we use sk-learn-style-classifier-models and task-1234567890abcdefghijKLM");
        assert_no_pii("-----BEGIN PUBLIC KEY-----");
        assert_no_pii("AKIAIOSFODNN7EXAMPLEX is too long");
    }

    #[test]
    fn pii_kinds_can_be_restricted() {
        let text = "mail a@b.io, card 4111111111111111";
        let only_cards = run(json!({"rule": "pii", "kinds": ["card"]}), text);
        expect(&only_cards, Label::Fail);
        assert_eq!(
            only_cards.reasoning,
            "found 1 kind of PII in output: card (4111 **** **** 1111)"
        );
        expect(
            &run(json!({"rule": "pii", "kinds": ["ssn", "iban"]}), text),
            Label::Pass,
        );
    }
}
