//! The `field` selector: which text of a [`Subject`] a rule looks at.

use std::borrow::Cow;

use serde_json::Value;

use super::rules::{invalid, RuleError, Subject};
use super::text::excerpt;

const FIELD_FORMS: &str =
    "input, output, error, metadata.<path> or span:<name>.<input|output|error>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Field {
    Input,
    Output,
    Error,
    Metadata(Vec<String>),
    Span { name: String, part: SpanPart },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SpanPart {
    Input,
    Output,
    Error,
}

impl SpanPart {
    fn as_str(self) -> &'static str {
        match self {
            SpanPart::Input => "input",
            SpanPart::Output => "output",
            SpanPart::Error => "error",
        }
    }
}

impl Field {
    pub(super) fn parse(spec: &str) -> Result<Field, RuleError> {
        match spec {
            "input" => return Ok(Field::Input),
            "output" => return Ok(Field::Output),
            "error" => return Ok(Field::Error),
            "metadata" => return Ok(Field::Metadata(Vec::new())),
            _ => {}
        }
        if let Some(path) = spec.strip_prefix("metadata.") {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.iter().any(String::is_empty) {
                return Err(invalid(
                    "field",
                    format!("{} has an empty path segment", excerpt(spec)),
                ));
            }
            return Ok(Field::Metadata(segments));
        }
        if let Some(rest) = spec.strip_prefix("span:") {
            // The span name may itself contain dots: the part is after the last one.
            let parsed = rest.rsplit_once('.').and_then(|(name, part)| {
                let part = match part {
                    "input" => SpanPart::Input,
                    "output" => SpanPart::Output,
                    "error" => SpanPart::Error,
                    _ => return None,
                };
                (!name.is_empty()).then(|| Field::Span {
                    name: name.to_owned(),
                    part,
                })
            });
            return parsed.ok_or_else(|| {
                invalid(
                    "field",
                    format!(
                        "{} must look like span:<name>.<input|output|error>",
                        excerpt(spec)
                    ),
                )
            });
        }
        Err(invalid(
            "field",
            format!("{} is not a field; use {FIELD_FORMS}", excerpt(spec)),
        ))
    }

    pub(super) fn label(&self) -> String {
        match self {
            Field::Input => "input".to_owned(),
            Field::Output => "output".to_owned(),
            Field::Error => "error".to_owned(),
            Field::Metadata(path) if path.is_empty() => "metadata".to_owned(),
            Field::Metadata(path) => format!("metadata.{}", path.join(".")),
            Field::Span { name, part } => format!("span:{name}.{}", part.as_str()),
        }
    }

    /// The field's text, or why there is none.
    pub(super) fn resolve<'a>(&self, subject: &Subject<'a>) -> Result<Cow<'a, str>, String> {
        let absent = || format!("{} is absent", self.label());
        match self {
            Field::Input => subject.input.map(Cow::Borrowed).ok_or_else(absent),
            Field::Output => subject.output.map(Cow::Borrowed).ok_or_else(absent),
            Field::Error => subject.error.map(Cow::Borrowed).ok_or_else(absent),
            Field::Metadata(path) => {
                let mut node = subject.metadata;
                for segment in path {
                    let next = match node {
                        Value::Object(map) => map.get(segment),
                        Value::Array(items) => {
                            segment.parse::<usize>().ok().and_then(|i| items.get(i))
                        }
                        _ => None,
                    };
                    node = next.ok_or_else(absent)?;
                }
                match node {
                    Value::Null => Err(absent()),
                    Value::String(text) => Ok(Cow::Borrowed(text.as_str())),
                    other => Ok(Cow::Owned(other.to_string())),
                }
            }
            Field::Span { name, part } => {
                let span = subject
                    .spans
                    .iter()
                    .find(|span| span.name == name)
                    .ok_or_else(|| format!("no span named {}", excerpt(name)))?;
                let text = match part {
                    SpanPart::Input => span.input,
                    SpanPart::Output => span.output,
                    SpanPart::Error => span.error,
                };
                text.map(Cow::Borrowed)
                    .ok_or_else(|| format!("span {} has no {}", excerpt(name), part.as_str()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::Label;
    use super::super::rules::{SpanSubject, Subject};
    use super::super::test_support::{expect, expect_error, rule, subject};
    use serde_json::json;

    #[test]
    fn bad_fields_are_refused() {
        expect_error(
            json!({"rule": "not_empty", "field": "answer"}),
            "field",
            "metadata.<path>",
        );
        expect_error(
            json!({"rule": "not_empty", "field": "metadata.a..b"}),
            "field",
            "empty path segment",
        );
        expect_error(
            json!({"rule": "not_empty", "field": "span:retrieve"}),
            "field",
            "span:<name>.",
        );
        expect_error(
            json!({"rule": "not_empty", "field": "span:.output"}),
            "field",
            "span:<name>.",
        );
        expect_error(
            json!({"rule": "not_empty", "field": "span:x.model"}),
            "field",
            "span:<name>.",
        );
        expect_error(
            json!({"rule": "latency_max_ms", "max": 5, "field": "output"}),
            "field",
            "takes no field",
        );
    }

    #[test]
    fn every_field_selector() {
        let metadata = json!({
            "user": {"email": "ada@example.com", "tier": 3, "tags": ["a", "b"]},
            "empty": null
        });
        let spans = [
            SpanSubject {
                name: "retrieve",
                span_type: "retrieval",
                input: Some("query"),
                output: None,
                error: None,
            },
            SpanSubject {
                name: "llm.call",
                span_type: "llm",
                input: None,
                output: Some("first"),
                error: Some("boom"),
            },
            SpanSubject {
                name: "llm.call",
                span_type: "llm",
                input: None,
                output: Some("second"),
                error: None,
            },
        ];
        let trace = Subject {
            input: Some("the question"),
            output: Some("the answer"),
            error: Some("timeout"),
            latency_ms: None,
            cost: None,
            total_tokens: None,
            metadata: &metadata,
            spans: &spans,
        };
        let check = |field: &str, value: &str| {
            rule(json!({"rule": "equals", "field": field, "value": value})).evaluate(&trace)
        };
        expect(&check("input", "the question"), Label::Pass);
        expect(&check("output", "the answer"), Label::Pass);
        expect(&check("error", "timeout"), Label::Pass);
        expect(
            &check("metadata.user.email", "ada@example.com"),
            Label::Pass,
        );
        expect(&check("metadata.user.tier", "3"), Label::Pass);
        expect(&check("metadata.user.tags", r#"["a","b"]"#), Label::Pass);
        expect(&check("metadata.user.tags.1", "b"), Label::Pass);
        expect(&check("span:retrieve.input", "query"), Label::Pass);
        expect(&check("span:llm.call.output", "first"), Label::Pass);
        expect(&check("span:llm.call.error", "boom"), Label::Pass);
        let whole = rule(json!({"rule": "contains", "field": "metadata", "value": "\"tier\":3"}))
            .evaluate(&trace);
        expect(&whole, Label::Pass);
        // Output is the default field.
        expect(
            &rule(json!({"rule": "equals", "value": "the answer"})).evaluate(&trace),
            Label::Pass,
        );

        let absent = |field: &str, reasoning: &str| {
            let verdict = check(field, "anything");
            expect(&verdict, Label::Fail);
            assert_eq!(verdict.reasoning, reasoning);
        };
        absent("metadata.user.phone", "metadata.user.phone is absent");
        absent("metadata.empty", "metadata.empty is absent");
        absent(
            "metadata.user.email.domain",
            "metadata.user.email.domain is absent",
        );
        absent("metadata.user.tags.7", "metadata.user.tags.7 is absent");
        absent("span:rerank.output", r#"no span named "rerank""#);
        absent("span:retrieve.output", r#"span "retrieve" has no output"#);

        let bare = subject("x");
        let missing = |field: &str| {
            rule(json!({"rule": "regex", "field": field, "pattern": "."})).evaluate(&bare)
        };
        for (field, reasoning) in [
            ("input", "input is absent"),
            ("error", "error is absent"),
            ("metadata.a", "metadata.a is absent"),
        ] {
            let verdict = missing(field);
            expect(&verdict, Label::Fail);
            assert_eq!(verdict.reasoning, reasoning);
        }
        let no_output = rule(json!({"rule": "not_regex", "pattern": "x"})).evaluate(&Subject {
            output: None,
            ..bare
        });
        expect(&no_output, Label::Fail);
        assert_eq!(no_output.reasoning, "output is absent");
    }
}
