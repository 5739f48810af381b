//! Deterministic rule evaluators (`evaluator_type: "rule"`).
//!
//! A rule config is a JSON object `{"rule": "<kind>", "field": "<field>", ...}`.
//! [`compile`] checks it once (at trigger time, so a bad config is a 422
//! there) and compiles any regular expression or JSON Schema it carries;
//! [`Rule::evaluate`] then scores a [`Subject`] without I/O and without
//! panicking, whatever the input.
//!
//! # Fields
//!
//! `field` (default `output`) picks the text a rule looks at:
//! `input`, `output`, `error`, `metadata` (the whole object as JSON),
//! `metadata.<dot.path>` (a string value as is, any other value as JSON;
//! a numeric segment indexes an array; `null` counts as absent) or
//! `span:<span name>.<input|output|error>` (the first span with that name).
//! An absent field fails. `latency_max_ms`, `cost_max` and `tokens_max` read
//! the trace's numbers instead and refuse a `field`. Text over
//! [`MAX_TEXT_BYTES`] is evaluated on its first MiB (`length` counts it all).
//!
//! # Kinds and parameters
//!
//! | rule | parameters |
//! | --- | --- |
//! | `regex`, `not_regex` | `pattern` (≤ 1000 chars), `case_insensitive` (false) |
//! | `contains`, `not_contains` | `value` or `values`, `match` (`any`/`all`), `case_sensitive` (false) |
//! | `equals` | `value`, `case_sensitive` (true); both sides trimmed |
//! | `json_valid` | — |
//! | `json_schema` | `schema` (object or boolean; no remote `$ref`) |
//! | `latency_max_ms`, `cost_max`, `tokens_max` | `max` (≥ 0), `warn_margin` (0.1) |
//! | `length` | `min` and/or `max` characters, `warn_margin` (0.1) |
//! | `not_empty` | — |
//! | `pii` | `kinds` (all of [`PII_KINDS`] by default) |
//! | `refusal` | `expect` (`answer` by default, or `refusal`) |
//!
//! # Scores
//!
//! pass → 1.0, warn → 0.5, fail → 0.0. Bounded rules warn when the value is
//! within bounds but within `warn_margin` (a fraction of the bound, default
//! 10%) of one: 480 ms against a 500 ms maximum is a warning, 501 ms fails.
//! `refusal` warns when a refusal phrase appears only after the opening
//! [`REFUSAL_OPENING_WORDS`] words (a possible partial refusal).

use serde_json::Value;

use super::checks::{check_length, check_max, Check, Metric, Needle};
use super::field::Field;
use super::params::{
    compile_contains, compile_pii_kinds, compile_regex, compile_schema, regex_error, Params,
};
use super::refusal::REFUSAL_PATTERN;
use super::text::{excerpt, head};

/// Field text beyond this many bytes is not looked at (cut on a char boundary).
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Longest accepted `pattern`, in characters.
pub const MAX_PATTERN_CHARS: usize = 1000;
/// Every rule kind `compile` accepts.
pub const RULE_KINDS: &[&str] = &[
    "regex",
    "not_regex",
    "contains",
    "not_contains",
    "equals",
    "json_valid",
    "json_schema",
    "latency_max_ms",
    "cost_max",
    "tokens_max",
    "length",
    "not_empty",
    "pii",
    "refusal",
];
/// Every PII kind the `pii` rule detects, in its `kinds` parameter's spelling.
pub const PII_KINDS: &[&str] = &[
    "email",
    "phone",
    "card",
    "ssn",
    "iban",
    "aws_access_key",
    "github_token",
    "slack_token",
    "openai_key",
    "anthropic_key",
    "private_key",
];
/// A refusal phrase in the first this-many words makes the output a refusal;
/// one found only later is a warning.
pub const REFUSAL_OPENING_WORDS: usize = 50;

/// What a rule looks at, taken from a stored trace.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub input: Option<&'a str>,
    pub output: Option<&'a str>,
    pub error: Option<&'a str>,
    pub latency_ms: Option<i64>,
    pub cost: Option<f64>,
    pub total_tokens: Option<i64>,
    /// The trace's metadata object.
    pub metadata: &'a Value,
    pub spans: &'a [SpanSubject<'a>],
}

/// The parts of a span a rule can look at.
#[derive(Debug, Clone, Copy)]
pub struct SpanSubject<'a> {
    pub name: &'a str,
    pub span_type: &'a str,
    pub input: Option<&'a str>,
    pub output: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// A rule's result: score in [0, 1], label, and what matched or failed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub score: f64,
    pub label: Label,
    pub reasoning: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Pass,
    Fail,
    Warn,
}

impl Verdict {
    pub(super) fn pass(reasoning: String) -> Self {
        Verdict {
            score: 1.0,
            label: Label::Pass,
            reasoning,
        }
    }
    pub(super) fn warn(reasoning: String) -> Self {
        Verdict {
            score: 0.5,
            label: Label::Warn,
            reasoning,
        }
    }
    pub(super) fn fail(reasoning: String) -> Self {
        Verdict {
            score: 0.0,
            label: Label::Fail,
            reasoning,
        }
    }
}

/// A rule config that cannot be run; the message names the key and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "config must be a JSON object such as {{\"rule\": \"not_empty\", \"field\": \"output\"}}"
    )]
    NotAnObject,
    #[error("config.{key} is required: {expected}")]
    Missing { key: String, expected: String },
    #[error("config.{key}: {problem}")]
    Invalid { key: String, problem: String },
}

impl RuleError {
    /// The config key at fault (`None` when the config is not an object).
    pub fn key(&self) -> Option<&str> {
        match self {
            RuleError::NotAnObject => None,
            RuleError::Missing { key, .. } | RuleError::Invalid { key, .. } => Some(key),
        }
    }
}

pub(super) fn missing(key: &str, expected: impl Into<String>) -> RuleError {
    RuleError::Missing {
        key: key.to_owned(),
        expected: expected.into(),
    }
}

pub(super) fn invalid(key: &str, problem: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// A checked, compiled rule; cheap to evaluate many times and shareable across threads.
#[derive(Debug)]
pub struct Rule {
    name: &'static str,
    field: Field,
    check: Check,
}

/// Parses and checks a rule config once (at trigger time, so bad configs get 422 there).
pub fn compile(config: &Value) -> Result<Rule, RuleError> {
    let params = Params(config.as_object().ok_or(RuleError::NotAnObject)?);
    let kinds = format!("one of {}", RULE_KINDS.join(", "));
    let requested = params.required_str("rule", &kinds)?;
    let name = RULE_KINDS
        .iter()
        .copied()
        .find(|kind| *kind == requested)
        .ok_or_else(|| {
            invalid(
                "rule",
                format!("{} is not a known rule; use {kinds}", excerpt(requested)),
            )
        })?;

    let metric = match name {
        "latency_max_ms" => Some(Metric::Latency),
        "cost_max" => Some(Metric::Cost),
        "tokens_max" => Some(Metric::Tokens),
        _ => None,
    };
    let field = match (metric, params.get("field")) {
        (Some(metric), Some(_)) => {
            return Err(invalid(
                "field",
                format!(
                    "{name} reads the trace's {} and takes no field; remove it",
                    metric.noun()
                ),
            ))
        }
        (Some(_), None) => Field::Output,
        (None, _) => Field::parse(params.optional_str("field")?.unwrap_or("output"))?,
    };

    let check = match name {
        "regex" | "not_regex" => {
            let pattern = params.required_str("pattern", "a regular expression")?;
            let case_insensitive = params.bool_or("case_insensitive", false)?;
            Check::Regex {
                regex: compile_regex(pattern, case_insensitive)?,
                case_insensitive,
                negate: name == "not_regex",
            }
        }
        "contains" | "not_contains" => compile_contains(&params, name == "not_contains")?,
        "equals" => {
            let shown = params
                .required_str("value", "the text the field must equal")?
                .trim()
                .to_owned();
            let case_sensitive = params.bool_or("case_sensitive", true)?;
            let sought = if case_sensitive {
                shown.clone()
            } else {
                shown.to_lowercase()
            };
            Check::Equals {
                value: Needle { shown, sought },
                case_sensitive,
            }
        }
        "json_valid" => Check::JsonValid,
        "json_schema" => Check::JsonSchema {
            validator: Box::new(compile_schema(&params)?),
        },
        "length" => {
            let min = params.optional_count("min")?;
            let max = params.optional_count("max")?;
            match (min, max) {
                (None, None) => {
                    return Err(missing(
                        "min",
                        "a minimum and/or a config.max, in characters",
                    ))
                }
                (Some(lo), Some(hi)) if lo > hi => {
                    return Err(invalid(
                        "min",
                        format!("{lo} is greater than config.max {hi}"),
                    ))
                }
                _ => {}
            }
            Check::Length {
                min,
                max,
                warn_margin: params.warn_margin()?,
            }
        }
        "not_empty" => Check::NotEmpty,
        "pii" => Check::Pii {
            kinds: compile_pii_kinds(&params)?,
        },
        "refusal" => {
            if let Err(err) = &*REFUSAL_PATTERN {
                return Err(invalid(
                    "rule",
                    format!("refusal is unavailable: {}", regex_error(err)),
                ));
            }
            let expect_refusal = match params.optional_str("expect")? {
                None | Some("answer") => false,
                Some("refusal") => true,
                Some(other) => {
                    return Err(invalid(
                        "expect",
                        format!("{} is not allowed; use answer or refusal", excerpt(other)),
                    ))
                }
            };
            Check::Refusal { expect_refusal }
        }
        _ => match metric {
            Some(metric) => {
                let max = params.optional_number("max")?.ok_or_else(|| {
                    missing(
                        "max",
                        format!("the largest allowed {}, a number ≥ 0", metric.noun()),
                    )
                })?;
                Check::Max {
                    metric,
                    max,
                    warn_margin: params.warn_margin()?,
                }
            }
            // Unreachable: RULE_KINDS and this match list the same kinds.
            None => {
                return Err(invalid(
                    "rule",
                    format!("{} is not implemented", excerpt(name)),
                ))
            }
        },
    };
    Ok(Rule { name, field, check })
}

impl Rule {
    /// The rule kind, e.g. `regex`.
    pub fn name(&self) -> &str {
        self.name
    }

    pub fn evaluate(&self, subject: &Subject<'_>) -> Verdict {
        if let Check::Max {
            metric,
            max,
            warn_margin,
        } = &self.check
        {
            return check_max(*metric, metric.read(subject), *max, *warn_margin);
        }
        let label = self.field.label();
        let text = match self.field.resolve(subject) {
            Ok(text) => text,
            Err(absent) if matches!(self.check, Check::NotEmpty) => {
                return Verdict::fail(format!("{label} is empty ({absent})"))
            }
            Err(absent) => return Verdict::fail(absent),
        };
        if let Check::Length {
            min,
            max,
            warn_margin,
        } = &self.check
        {
            return check_length(&label, &text, *min, *max, *warn_margin);
        }
        let (head, cut) = head(&text);
        let mut verdict = self.check.check_text(self.name, &label, head);
        if cut {
            verdict.reasoning.push_str(&format!(
                " (evaluated on the first 1 MiB of {} bytes)",
                text.len()
            ));
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::super::pii::{PiiKind, PII_PATTERNS};
    use super::super::test_support::{expect, expect_error, rejected, rule, run, subject};
    use super::*;
    use serde_json::json;

    #[test]
    fn config_must_be_an_object_with_a_known_rule() {
        assert_eq!(rejected(json!("regex")), RuleError::NotAnObject);
        expect_error(json!({}), "rule", "one of regex, not_regex");
        expect_error(json!({"rule": 7}), "rule", "must be a string");
        expect_error(
            json!({"rule": "sentiment"}),
            "rule",
            "\"sentiment\" is not a known rule",
        );
        expect_error(json!({"rule": "sentiment"}), "rule", "json_schema");
    }

    #[test]
    fn missing_parameters_are_named() {
        expect_error(json!({"rule": "regex"}), "pattern", "required");
        expect_error(json!({"rule": "contains"}), "value", "config.values");
        expect_error(json!({"rule": "equals"}), "value", "required");
        expect_error(json!({"rule": "json_schema"}), "schema", "JSON Schema");
        expect_error(json!({"rule": "latency_max_ms"}), "max", "latency");
        expect_error(json!({"rule": "cost_max"}), "max", "cost");
        expect_error(json!({"rule": "tokens_max"}), "max", "total tokens");
        expect_error(json!({"rule": "length"}), "min", "config.max");
    }

    #[test]
    fn unknown_keys_are_ignored_and_names_reported() {
        for kind in RULE_KINDS {
            let config = json!({"rule": kind, "pattern": "x", "value": "x", "schema": {}, "max": 1,
                                "min": 0, "sample_rate": 0.5, "preset": "anything"});
            assert_eq!(rule(config).name(), *kind);
        }
    }

    #[test]
    fn built_in_patterns_compile_and_rules_are_shareable() {
        assert!(PII_PATTERNS.is_ok());
        assert!(REFUSAL_PATTERN.is_ok());
        fn shareable<T: Send + Sync>() {}
        shareable::<Rule>();
        assert_eq!(PII_KINDS.len(), PiiKind::ALL.len());
        for (name, kind) in PII_KINDS.iter().zip(PiiKind::ALL) {
            assert_eq!(*name, kind.name());
        }
    }

    #[test]
    fn text_over_one_mebibyte_is_evaluated_on_its_head() {
        // Three-byte characters: the cut must land on a char boundary.
        let mut text = "€".repeat(MAX_TEXT_BYTES / 3 + 10);
        text.push_str("NEEDLE");
        let verdict = run(json!({"rule": "contains", "value": "needle"}), &text);
        expect(&verdict, Label::Fail);
        assert!(verdict.reasoning.ends_with(&format!(
            "(evaluated on the first 1 MiB of {} bytes)",
            text.len()
        )));
        let (head, cut) = head(&text);
        assert!(cut && head.len() < MAX_TEXT_BYTES && head.len() > MAX_TEXT_BYTES - 4);
        // length counts the whole text.
        let chars = text.chars().count() as u64;
        expect(
            &run(
                json!({"rule": "length", "min": chars, "warn_margin": 0}),
                &text,
            ),
            Label::Pass,
        );
    }

    #[test]
    fn serializes_labels_in_lowercase() {
        let verdict = Verdict::warn("near".to_owned());
        assert_eq!(
            serde_json::to_value(&verdict).ok(),
            Some(json!({"score": 0.5, "label": "warn", "reasoning": "near"}))
        );
    }

    #[test]
    fn no_rule_panics_on_odd_input() {
        let configs = [
            json!({"rule": "regex", "pattern": "^$|\\p{Greek}+"}),
            json!({"rule": "not_regex", "pattern": "(?s).*"}),
            json!({"rule": "contains", "value": "İ"}),
            json!({"rule": "not_contains", "values": ["ß", "ﬃ"], "match": "all"}),
            json!({"rule": "equals", "value": "x", "case_sensitive": false}),
            json!({"rule": "json_valid"}),
            json!({"rule": "json_schema", "schema": {"type": "string", "maxLength": 3}}),
            json!({"rule": "length", "min": 0, "max": 0}),
            json!({"rule": "not_empty"}),
            json!({"rule": "pii"}),
            json!({"rule": "refusal"}),
        ];
        let odd = [
            String::new(),
            "\u{0}\u{FFFF}\u{10FFFF}".to_owned(),
            "'''' ’’ can not".to_owned(),
            "+".repeat(100),
            "-----BEGIN ".to_owned(),
            "9".repeat(5000),
            "4111 ".repeat(300),
            "@".repeat(50) + "a@b.cc",
            "GB82 ".repeat(20),
            "sk-".repeat(30),
            "İstanbul ßtraße ﬃ 😀".to_owned(),
            "\"".to_owned(),
        ];
        for config in configs {
            let compiled = rule(config);
            for text in &odd {
                let verdict = compiled.evaluate(&subject(text));
                assert!((0.0..=1.0).contains(&verdict.score));
                assert!(!verdict.reasoning.is_empty());
            }
        }
    }
}
