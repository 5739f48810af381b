//! Reading a judge's reply: the first JSON object with a score, however it
//! is wrapped.

use serde_json::{Map, Value};

use crate::eval::rules::{Label, Verdict};
use crate::eval::text::clip;

/// Reasoning beyond this many characters is cut.
pub const MAX_REASONING_CHARS: usize = 2000;
/// How much of an unparseable reply an error message quotes.
pub(super) const REPLY_QUOTE_CHARS: usize = 500;
// `{` positions parse_verdict tries before giving up (bounds its work on odd replies).
const MAX_CANDIDATES: usize = 200;

/// `text`'s first `max_chars` characters, quoted and escaped for an error message.
pub(super) fn quote(text: &str, max_chars: usize) -> String {
    format!("{:?}", clip(text, max_chars))
}

/// Parses a judge's reply into a verdict.
///
/// The verdict is the first JSON object in the reply that has a `score`
/// (bare, fenced or among other text). Keys match case-insensitively;
/// `reason` and `explanation` stand for `reasoning`. The score is a number or
/// numeric string in [0, 1]. An absent or unknown label follows the score:
/// ≥ 0.7 pass, ≥ 0.4 warn, below fail.
pub fn parse_verdict(reply: &str) -> Result<Verdict, String> {
    let object = verdict_object(reply).ok_or_else(|| {
        format!(
            "judge reply holds no JSON object with a \"score\": {}",
            quote(reply, REPLY_QUOTE_CHARS)
        )
    })?;
    let score = match field(&object, &["score"]) {
        Some(Value::Number(number)) => number.as_f64(),
        Some(Value::String(text)) => text.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "judge score is not a number: {}",
            quote(reply, REPLY_QUOTE_CHARS)
        )
    })?;
    if !(0.0..=1.0).contains(&score) {
        return Err(format!(
            "judge score {score} is outside [0, 1]: {}",
            quote(reply, REPLY_QUOTE_CHARS)
        ));
    }
    let label = field(&object, &["label"])
        .and_then(Value::as_str)
        .and_then(parse_label)
        .unwrap_or(if score >= 0.7 {
            Label::Pass
        } else if score >= 0.4 {
            Label::Warn
        } else {
            Label::Fail
        });
    let reasoning = match field(&object, &["reasoning", "reason", "explanation"]) {
        Some(Value::String(text)) => text.trim().to_owned(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Ok(Verdict {
        score,
        label,
        reasoning: truncate(&reasoning, MAX_REASONING_CHARS),
    })
}

/// The first `{…}` in `reply` that parses as a JSON object with a score.
fn verdict_object(reply: &str) -> Option<Map<String, Value>> {
    reply
        .match_indices('{')
        .take(MAX_CANDIDATES)
        .find_map(|(start, _)| {
            // The stream parser stops after one value, ignoring what follows.
            let rest = reply.get(start..)?;
            match serde_json::Deserializer::from_str(rest)
                .into_iter::<Value>()
                .next()
            {
                Some(Ok(Value::Object(object))) if field(&object, &["score"]).is_some() => {
                    Some(object)
                }
                _ => None,
            }
        })
}

/// The first non-null value under any of `names`, matched case-insensitively.
fn field<'v>(object: &'v Map<String, Value>, names: &[&str]) -> Option<&'v Value> {
    names.iter().find_map(|name| {
        object
            .iter()
            .find(|(key, value)| key.trim().eq_ignore_ascii_case(name) && !value.is_null())
            .map(|(_, value)| value)
    })
}

fn parse_label(text: &str) -> Option<Label> {
    match text.trim().to_ascii_lowercase().as_str() {
        "pass" | "passed" => Some(Label::Pass),
        "fail" | "failed" => Some(Label::Fail),
        "warn" | "warning" => Some(Label::Warn),
        _ => None,
    }
}

/// At most `max_chars` characters, the last one `…` when cut.
fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some(_) => clip(text, max_chars.saturating_sub(1)),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn verdict(reply: &str) -> Verdict {
        match parse_verdict(reply) {
            Ok(verdict) => verdict,
            Err(problem) => panic!("{reply:?} was refused: {problem}"),
        }
    }

    fn refusal(reply: &str) -> String {
        match parse_verdict(reply) {
            Ok(verdict) => panic!("{reply:?} was accepted as {verdict:?}"),
            Err(problem) => problem,
        }
    }

    #[test]
    fn parses_a_bare_object() {
        let parsed = verdict(r#"{"score": 0.9, "label": "pass", "reasoning": "Grounded."}"#);
        assert_eq!(
            parsed,
            Verdict {
                score: 0.9,
                label: Label::Pass,
                reasoning: "Grounded.".to_owned()
            }
        );
    }

    #[test]
    fn parses_fenced_json_and_stray_text() {
        let fenced =
            "```json\n{\"score\": 0.2, \"label\": \"FAIL\", \"reason\": \"Made up.\"}\n```";
        let parsed = verdict(fenced);
        assert_eq!((parsed.score, parsed.label), (0.2, Label::Fail));
        assert_eq!(parsed.reasoning, "Made up.");

        let chatty = "Sure! Here is my verdict: {\"Score\": 1, \"Label\": \"Passed\", \
                      \"Explanation\": \"ok\"} Let me know if you need more.";
        let parsed = verdict(chatty);
        assert_eq!((parsed.score, parsed.label), (1.0, Label::Pass));
        assert_eq!(parsed.reasoning, "ok");

        // An object without a score, then the verdict; and a verdict nested in another object.
        let parsed = verdict(r#"{"note": "x"} then {"score": 0.5, "label": "warning"}"#);
        assert_eq!((parsed.score, parsed.label), (0.5, Label::Warn));
        assert_eq!(verdict(r#"{"verdict": {"score": 0.1}}"#).label, Label::Fail);
    }

    #[test]
    fn accepts_a_string_score_and_derives_a_missing_label() {
        let parsed = verdict(r#"{"score": " 0.75 ", "reasoning": "Mostly right."}"#);
        assert_eq!((parsed.score, parsed.label), (0.75, Label::Pass));
        assert_eq!(verdict(r#"{"score": 0.4}"#).label, Label::Warn);
        assert_eq!(
            verdict(r#"{"score": 0.39, "label": "meh"}"#).label,
            Label::Fail
        );
        assert_eq!(verdict(r#"{"score": 0}"#).reasoning, "");
    }

    #[test]
    fn keeps_braces_inside_the_reasoning() {
        let reply =
            r#"{"score": 0.8, "reasoning": "The JSON {\"a\": {\"b\": 1}} is valid } really"}"#;
        assert_eq!(
            verdict(reply).reasoning,
            r#"The JSON {"a": {"b": 1}} is valid } really"#
        );
    }

    #[test]
    fn refuses_out_of_range_missing_and_garbage_scores() {
        for reply in [
            r#"{"score": 1.5}"#,
            r#"{"score": -0.1}"#,
            r#"{"score": "NaN"}"#,
        ] {
            let problem = refusal(reply);
            assert!(problem.contains("outside [0, 1]"), "{problem}");
            assert!(problem.contains("score"), "{problem}");
        }
        let problem = refusal(r#"{"label": "pass", "reasoning": "fine"}"#);
        assert!(
            problem.contains(r#"no JSON object with a "score""#),
            "{problem}"
        );
        assert!(problem.contains("fine"), "{problem}");
        assert!(refusal(r#"{"score": true}"#).contains("not a number"));
        assert!(refusal("I cannot judge this.").contains("I cannot judge this."));
        assert!(refusal("").contains("no JSON object"));
        assert!(refusal("{{{{ {\"score\": ").contains("no JSON object"));
        // The quote stops at 500 characters.
        let long = refusal(&"x".repeat(5000));
        assert!(long.len() < 700, "{}", long.len());
    }

    #[test]
    fn cuts_long_reasoning() {
        let reply = json!({"score": 1, "reasoning": "é".repeat(3000)}).to_string();
        let reasoning = verdict(&reply).reasoning;
        assert_eq!(reasoning.chars().count(), MAX_REASONING_CHARS);
        assert!(reasoning.ends_with('…'));
    }
}
