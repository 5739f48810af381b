//! The checks a compiled rule runs, and how each one scores its input.

use std::borrow::Cow;

use regex::Regex;
use serde_json::Value;

use super::pii::{check_pii, PiiKind};
use super::refusal::check_refusal;
use super::rules::{Subject, Verdict};
use super::text::{clip, excerpt, percent, quote_list};

#[derive(Debug)]
pub(super) enum Check {
    Regex {
        regex: Regex,
        case_insensitive: bool,
        negate: bool,
    },
    Contains {
        needles: Vec<Needle>,
        all: bool,
        case_sensitive: bool,
        negate: bool,
    },
    Equals {
        value: Needle,
        case_sensitive: bool,
    },
    JsonValid,
    JsonSchema {
        validator: Box<jsonschema::Validator>,
    },
    Max {
        metric: Metric,
        max: f64,
        warn_margin: f64,
    },
    Length {
        min: Option<u64>,
        max: Option<u64>,
        warn_margin: f64,
    },
    NotEmpty,
    Pii {
        kinds: Vec<PiiKind>,
    },
    Refusal {
        expect_refusal: bool,
    },
}

#[derive(Debug)]
pub(super) struct Needle {
    pub(super) shown: String,
    // Lowercased when the match is case-insensitive.
    pub(super) sought: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Metric {
    Latency,
    Cost,
    Tokens,
}

impl Metric {
    pub(super) fn noun(self) -> &'static str {
        match self {
            Metric::Latency => "latency",
            Metric::Cost => "cost",
            Metric::Tokens => "total tokens",
        }
    }
    pub(super) fn show(self, value: f64) -> String {
        match self {
            Metric::Latency => format!("{value} ms"),
            Metric::Cost => format!("${value}"),
            Metric::Tokens => format!("{value}"),
        }
    }
    pub(super) fn read(self, subject: &Subject<'_>) -> Option<f64> {
        match self {
            Metric::Latency => subject.latency_ms.map(|v| v as f64),
            Metric::Cost => subject.cost,
            Metric::Tokens => subject.total_tokens.map(|v| v as f64),
        }
    }
}

impl Check {
    /// Scores `text` (already cut to [`MAX_TEXT_BYTES`](super::rules::MAX_TEXT_BYTES)) for the rule `name`.
    pub(super) fn check_text(&self, name: &str, label: &str, text: &str) -> Verdict {
        match self {
            Check::Regex {
                regex,
                case_insensitive,
                negate,
            } => {
                let flags = if *case_insensitive { "i" } else { "" };
                let shown = format!("/{}/{flags}", clip(regex.as_str(), 100));
                match (regex.find(text), negate) {
                    (Some(found), false) => Verdict::pass(format!(
                        "{label} matches {shown} at {}",
                        excerpt(found.as_str())
                    )),
                    (Some(found), true) => Verdict::fail(format!(
                        "{label} matches {shown} at {}",
                        excerpt(found.as_str())
                    )),
                    (None, false) => Verdict::fail(format!("{label} does not match {shown}")),
                    (None, true) => Verdict::pass(format!("{label} does not match {shown}")),
                }
            }
            Check::Contains {
                needles,
                all,
                case_sensitive,
                negate,
            } => check_contains(label, text, needles, *all, *case_sensitive, *negate),
            Check::Equals {
                value,
                case_sensitive,
            } => {
                let actual = text.trim();
                let equal = if *case_sensitive {
                    actual == value.sought
                } else {
                    actual.to_lowercase() == value.sought
                };
                if equal {
                    Verdict::pass(format!("{label} equals {}", excerpt(&value.shown)))
                } else {
                    Verdict::fail(format!(
                        "{label} {} does not equal {}",
                        excerpt(actual),
                        excerpt(&value.shown)
                    ))
                }
            }
            Check::JsonValid => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Verdict::pass(format!("{label} is valid JSON")),
                Err(err) => Verdict::fail(format!("{label} is not valid JSON: {err}")),
            },
            Check::JsonSchema { validator } => check_schema(label, text, validator),
            Check::NotEmpty => {
                if text.trim().is_empty() {
                    let what = if text.is_empty() {
                        "empty"
                    } else {
                        "empty (whitespace only)"
                    };
                    Verdict::fail(format!("{label} is {what}"))
                } else {
                    Verdict::pass(format!("{label} is not empty"))
                }
            }
            Check::Pii { kinds } => check_pii(label, text, kinds),
            Check::Refusal { expect_refusal } => check_refusal(label, text, *expect_refusal),
            // Handled in `evaluate` before the text is cut.
            Check::Max { .. } | Check::Length { .. } => {
                Verdict::fail(format!("{name} cannot check text"))
            }
        }
    }
}

pub(super) fn check_max(metric: Metric, value: Option<f64>, max: f64, warn_margin: f64) -> Verdict {
    let noun = metric.noun();
    let Some(value) = value else {
        return Verdict::fail(format!("{noun} is absent"));
    };
    if !value.is_finite() {
        return Verdict::fail(format!("{noun} is not a number"));
    }
    let (shown, limit) = (metric.show(value), metric.show(max));
    if value > max {
        Verdict::fail(format!("{noun} {shown} exceeds {limit}"))
    } else if value > max * (1.0 - warn_margin) {
        Verdict::warn(format!(
            "{noun} {shown} is within {} of the {limit} limit",
            percent(warn_margin)
        ))
    } else {
        Verdict::pass(format!("{noun} {shown} is within {limit}"))
    }
}

pub(super) fn check_length(
    label: &str,
    text: &str,
    min: Option<u64>,
    max: Option<u64>,
    warn_margin: f64,
) -> Verdict {
    let count = text.chars().count() as u64;
    let has = format!("{label} has {count} characters");
    if let Some(min) = min.filter(|min| count < *min) {
        return Verdict::fail(format!("{has}, fewer than the minimum {min}"));
    }
    if let Some(max) = max.filter(|max| count > *max) {
        return Verdict::fail(format!("{has}, more than the maximum {max}"));
    }
    let near = percent(warn_margin);
    if let Some(max) = max.filter(|max| count as f64 > *max as f64 * (1.0 - warn_margin)) {
        return Verdict::warn(format!("{has}, within {near} of the maximum {max}"));
    }
    if let Some(min) = min.filter(|min| (count as f64) < *min as f64 * (1.0 + warn_margin)) {
        return Verdict::warn(format!("{has}, within {near} of the minimum {min}"));
    }
    let bounds = match (min, max) {
        (Some(min), Some(max)) => format!("between {min} and {max}"),
        (Some(min), None) => format!("at least {min}"),
        (None, Some(max)) => format!("at most {max}"),
        (None, None) => "unbounded".to_owned(),
    };
    Verdict::pass(format!("{has}, {bounds}"))
}

fn check_contains(
    label: &str,
    text: &str,
    needles: &[Needle],
    all: bool,
    case_sensitive: bool,
    negate: bool,
) -> Verdict {
    let haystack: Cow<'_, str> = if case_sensitive {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.to_lowercase())
    };
    let (found, lacking): (Vec<&Needle>, Vec<&Needle>) = needles
        .iter()
        .partition(|needle| haystack.contains(needle.sought.as_str()));
    let found = quote_list(found.iter().map(|needle| needle.shown.as_str()));
    let lacking = quote_list(lacking.iter().map(|needle| needle.shown.as_str()));
    let holds = if all {
        lacking.is_empty()
    } else {
        !found.is_empty()
    };
    let reasoning = match (holds, all) {
        (true, false) => format!("{label} contains {found}"),
        (true, true) if needles.len() == 1 => format!("{label} contains {found}"),
        (true, true) => format!("{label} contains all of {found}"),
        (false, false) if needles.len() == 1 => format!("{label} does not contain {lacking}"),
        (false, false) => format!("{label} contains none of {lacking}"),
        (false, true) => format!("{label} does not contain {lacking}"),
    };
    if holds != negate {
        Verdict::pass(reasoning)
    } else {
        Verdict::fail(reasoning)
    }
}

fn check_schema(label: &str, text: &str, validator: &jsonschema::Validator) -> Verdict {
    let instance: Value = match serde_json::from_str(text) {
        Ok(instance) => instance,
        Err(err) => return Verdict::fail(format!("{label} is not valid JSON: {err}")),
    };
    let mut shown = Vec::new();
    let mut more = 0usize;
    for error in validator.iter_errors(&instance) {
        if shown.len() < 3 {
            let path = error.instance_path().as_str();
            let at = if path.is_empty() { "(root)" } else { path };
            shown.push(format!("at {at}: {}", clip(&error.to_string(), 120)));
        } else {
            more += 1;
        }
    }
    if shown.is_empty() {
        return Verdict::pass(format!("{label} matches the JSON schema"));
    }
    let mut reasoning = format!(
        "{label} does not match the JSON schema: {}",
        shown.join("; ")
    );
    if more > 0 {
        reasoning.push_str(&format!(" (+{more} more)"));
    }
    Verdict::fail(reasoning)
}

#[cfg(test)]
mod tests {
    use super::super::rules::{Label, Subject};
    use super::super::test_support::{expect, rule, run, subject};
    use serde_json::json;

    #[test]
    fn regex_and_not_regex() {
        let pass = run(json!({"rule": "regex", "pattern": r"\d{4}"}), "in 2024 we");
        expect(&pass, Label::Pass);
        assert_eq!(pass.reasoning, r#"output matches /\d{4}/ at "2024""#);
        let fail = run(json!({"rule": "regex", "pattern": r"\d{4}"}), "no year");
        expect(&fail, Label::Fail);
        assert_eq!(fail.reasoning, r"output does not match /\d{4}/");

        expect(
            &run(json!({"rule": "regex", "pattern": "^HELLO"}), "hello world"),
            Label::Fail,
        );
        let insensitive = run(
            json!({"rule": "regex", "pattern": "^HELLO", "case_insensitive": true}),
            "hello",
        );
        expect(&insensitive, Label::Pass);
        assert!(
            insensitive.reasoning.contains("/^HELLO/i"),
            "{}",
            insensitive.reasoning
        );

        let forbidden = run(
            json!({"rule": "not_regex", "pattern": "(?i)password"}),
            "my Password is",
        );
        expect(&forbidden, Label::Fail);
        assert!(
            forbidden.reasoning.contains("at \"Password\""),
            "{}",
            forbidden.reasoning
        );
        expect(
            &run(
                json!({"rule": "not_regex", "pattern": "password"}),
                "all good",
            ),
            Label::Pass,
        );
    }

    #[test]
    fn regex_runs_in_linear_time_on_hostile_input() {
        let text = "a".repeat(100_000);
        let verdict = run(json!({"rule": "regex", "pattern": "(a*)*b"}), &text);
        expect(&verdict, Label::Fail);
    }

    #[test]
    fn contains_and_not_contains() {
        let one = json!({"rule": "contains", "value": "Paris"});
        let pass = run(one.clone(), "The capital is paris.");
        expect(&pass, Label::Pass);
        assert_eq!(pass.reasoning, r#"output contains "Paris""#);
        expect(&run(one, "The capital is Lyon."), Label::Fail);

        let sensitive = json!({"rule": "contains", "value": "Paris", "case_sensitive": true});
        expect(&run(sensitive.clone(), "paris"), Label::Fail);
        expect(&run(sensitive, "Paris"), Label::Pass);

        let any = json!({"rule": "contains", "values": ["cat", "dog"]});
        expect(&run(any.clone(), "a dog"), Label::Pass);
        let none = run(any, "a bird");
        expect(&none, Label::Fail);
        assert_eq!(none.reasoning, r#"output contains none of "cat", "dog""#);

        let all = json!({"rule": "contains", "values": ["cat", "dog"], "match": "all"});
        expect(&run(all.clone(), "cat and DOG"), Label::Pass);
        let lacking = run(all, "just a cat");
        expect(&lacking, Label::Fail);
        assert_eq!(lacking.reasoning, r#"output does not contain "dog""#);

        let banned = json!({"rule": "not_contains", "values": ["lorem", "TODO"]});
        let found = run(banned.clone(), "left a todo here");
        expect(&found, Label::Fail);
        assert_eq!(found.reasoning, r#"output contains "TODO""#);
        expect(&run(banned, "clean text"), Label::Pass);

        let not_all = json!({"rule": "not_contains", "values": ["a1", "b2"], "match": "all"});
        expect(&run(not_all.clone(), "only a1"), Label::Pass);
        expect(&run(not_all, "a1 and b2"), Label::Fail);
    }

    #[test]
    fn equals_trims_and_is_case_sensitive_by_default() {
        let config = json!({"rule": "equals", "value": " Paris "});
        let pass = run(config.clone(), "\n Paris\t");
        expect(&pass, Label::Pass);
        assert_eq!(pass.reasoning, r#"output equals "Paris""#);
        let fail = run(config, "paris");
        expect(&fail, Label::Fail);
        assert_eq!(fail.reasoning, r#"output "paris" does not equal "Paris""#);
        expect(
            &run(
                json!({"rule": "equals", "value": "PARIS", "case_sensitive": false}),
                "paris ",
            ),
            Label::Pass,
        );
        expect(
            &run(json!({"rule": "equals", "value": "Paris"}), "Paris, France"),
            Label::Fail,
        );
    }

    #[test]
    fn json_valid() {
        let config = json!({"rule": "json_valid"});
        expect(
            &run(config.clone(), r#"{"a": [1, 2, {"b": null}]}"#),
            Label::Pass,
        );
        expect(&run(config.clone(), "42"), Label::Pass);
        let fail = run(config.clone(), r#"{"a": 1,}"#);
        expect(&fail, Label::Fail);
        assert!(
            fail.reasoning.starts_with("output is not valid JSON: "),
            "{}",
            fail.reasoning
        );
        expect(&run(config.clone(), "```json\n{}\n```"), Label::Fail);
        expect(&run(config.clone(), ""), Label::Fail);
        // Nesting beyond serde_json's recursion limit is an error, not a stack overflow.
        expect(&run(config, &"[".repeat(100_000)), Label::Fail);
    }

    #[test]
    fn json_schema() {
        let config = json!({"rule": "json_schema", "schema": {
            "type": "object",
            "required": ["name", "age"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}
        }});
        let compiled = rule(config);
        expect(
            &compiled.evaluate(&subject(r#"{"name": "Ada", "age": 36}"#)),
            Label::Pass,
        );
        let wrong = compiled.evaluate(&subject(r#"{"name": "Ada", "age": "old"}"#));
        expect(&wrong, Label::Fail);
        assert!(
            wrong
                .reasoning
                .starts_with("output does not match the JSON schema: at /age: "),
            "{}",
            wrong.reasoning
        );
        let missing = compiled.evaluate(&subject(r#"{"age": -1}"#));
        expect(&missing, Label::Fail);
        assert!(
            missing.reasoning.contains("(root)"),
            "{}",
            missing.reasoning
        );
        assert!(missing.reasoning.contains("/age"), "{}", missing.reasoning);
        let not_json = compiled.evaluate(&subject("name: Ada"));
        expect(&not_json, Label::Fail);
        assert!(
            not_json.reasoning.starts_with("output is not valid JSON"),
            "{}",
            not_json.reasoning
        );

        // Local references resolve; patterns use the linear-time engine.
        let local = json!({"rule": "json_schema", "schema": {
            "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
            "type": "array", "items": {"$ref": "#/$defs/code"}
        }});
        expect(&run(local.clone(), r#"["EUR", "USD"]"#), Label::Pass);
        expect(&run(local, r#"["EUR", "usd"]"#), Label::Fail);
        expect(
            &run(json!({"rule": "json_schema", "schema": true}), "[]"),
            Label::Pass,
        );
    }

    #[test]
    fn numeric_maxima_pass_warn_and_fail() {
        let latency = rule(json!({"rule": "latency_max_ms", "max": 500}));
        let at = |ms: Option<i64>| {
            latency.evaluate(&Subject {
                latency_ms: ms,
                ..subject("x")
            })
        };
        let over = at(Some(812));
        expect(&over, Label::Fail);
        assert_eq!(over.reasoning, "latency 812 ms exceeds 500 ms");
        let near = at(Some(480));
        expect(&near, Label::Warn);
        assert_eq!(
            near.reasoning,
            "latency 480 ms is within 10% of the 500 ms limit"
        );
        expect(&at(Some(500)), Label::Warn);
        let fine = at(Some(120));
        expect(&fine, Label::Pass);
        assert_eq!(fine.reasoning, "latency 120 ms is within 500 ms");
        let absent = at(None);
        expect(&absent, Label::Fail);
        assert_eq!(absent.reasoning, "latency is absent");

        let no_warning = rule(json!({"rule": "latency_max_ms", "max": 500, "warn_margin": 0}));
        expect(
            &no_warning.evaluate(&Subject {
                latency_ms: Some(500),
                ..subject("x")
            }),
            Label::Pass,
        );

        let cost = rule(json!({"rule": "cost_max", "max": 0.01}));
        let priced = |cost_usd: Option<f64>| {
            cost.evaluate(&Subject {
                cost: cost_usd,
                ..subject("x")
            })
        };
        let dear = priced(Some(0.0123));
        expect(&dear, Label::Fail);
        assert_eq!(dear.reasoning, "cost $0.0123 exceeds $0.01");
        expect(&priced(Some(0.002)), Label::Pass);
        expect(&priced(Some(0.0095)), Label::Warn);
        expect(&priced(None), Label::Fail);
        expect(&priced(Some(f64::NAN)), Label::Fail);

        let tokens = rule(json!({"rule": "tokens_max", "max": 1000}));
        let used = |n: Option<i64>| {
            tokens.evaluate(&Subject {
                total_tokens: n,
                ..subject("x")
            })
        };
        let many = used(Some(1500));
        expect(&many, Label::Fail);
        assert_eq!(many.reasoning, "total tokens 1500 exceeds 1000");
        expect(&used(Some(950)), Label::Warn);
        expect(&used(Some(10)), Label::Pass);
        expect(&used(None), Label::Fail);
    }

    #[test]
    fn length_counts_characters() {
        let bounded = json!({"rule": "length", "min": 10, "max": 100});
        expect(&run(bounded.clone(), &"x".repeat(50)), Label::Pass);
        let short = run(bounded.clone(), "tiny");
        expect(&short, Label::Fail);
        assert_eq!(
            short.reasoning,
            "output has 4 characters, fewer than the minimum 10"
        );
        let long = run(bounded.clone(), &"x".repeat(101));
        expect(&long, Label::Fail);
        assert_eq!(
            long.reasoning,
            "output has 101 characters, more than the maximum 100"
        );
        let near_max = run(bounded.clone(), &"x".repeat(95));
        expect(&near_max, Label::Warn);
        assert_eq!(
            near_max.reasoning,
            "output has 95 characters, within 10% of the maximum 100"
        );
        expect(&run(bounded, &"x".repeat(10)), Label::Warn);
        // Characters, not bytes.
        expect(
            &run(
                json!({"rule": "length", "max": 4, "warn_margin": 0}),
                "héhé",
            ),
            Label::Pass,
        );
        expect(&run(json!({"rule": "length", "min": 1}), "ok"), Label::Pass);
        expect(&run(json!({"rule": "length", "max": 3}), ""), Label::Pass);
    }

    #[test]
    fn not_empty() {
        let config = json!({"rule": "not_empty"});
        expect(&run(config.clone(), "answer"), Label::Pass);
        let blank = run(config.clone(), " \n\t");
        expect(&blank, Label::Fail);
        assert_eq!(blank.reasoning, "output is empty (whitespace only)");
        expect(&run(config.clone(), ""), Label::Fail);
        let absent = rule(config).evaluate(&Subject {
            output: None,
            ..subject("")
        });
        expect(&absent, Label::Fail);
        assert_eq!(absent.reasoning, "output is empty (output is absent)");
    }
}
