//! Typed reads of a rule config's parameters, and the compilation of the
//! parameters that need it (patterns, needles, schemas, PII kinds).

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::checks::{Check, Needle};
use super::pii::{PiiKind, PII_PATTERNS};
use super::rules::{invalid, missing, RuleError, MAX_PATTERN_CHARS, PII_KINDS};
use super::text::{clip, excerpt, excerpt_json};

// Compiled-program and lazy-DFA caps: a hostile pattern fails to compile
// instead of eating memory (the regex crate's matching is linear already).
const REGEX_SIZE_LIMIT: usize = 2 << 20;
const REGEX_DFA_SIZE_LIMIT: usize = 2 << 20;
const REGEX_NEST_LIMIT: u32 = 64;
const DEFAULT_WARN_MARGIN: f64 = 0.1;

pub(super) fn compile_regex(pattern: &str, case_insensitive: bool) -> Result<Regex, RuleError> {
    let chars = pattern.chars().count();
    if chars > MAX_PATTERN_CHARS {
        return Err(invalid(
            "pattern",
            format!("is {chars} characters long; the limit is {MAX_PATTERN_CHARS}"),
        ));
    }
    if pattern.is_empty() {
        return Err(invalid("pattern", "must not be empty"));
    }
    RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|err| {
            invalid(
                "pattern",
                format!("is not a valid regular expression: {}", regex_error(&err)),
            )
        })
}

/// The regex crate's syntax errors span several lines (pattern, caret, message): keep the message.
pub(super) fn regex_error(err: &regex::Error) -> String {
    match err {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|line| line.trim().strip_prefix("error:"))
            .map(|message| message.trim().to_owned())
            .unwrap_or_else(|| text.clone()),
        regex::Error::CompiledTooBig(limit) => {
            format!("it compiles to more than {limit} bytes; simplify it")
        }
        other => other.to_string(),
    }
}

pub(super) fn compile_contains(params: &Params<'_>, negate: bool) -> Result<Check, RuleError> {
    let case_sensitive = params.bool_or("case_sensitive", false)?;
    let values = match (params.get("value"), params.get("values")) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "values",
                "give either config.value or config.values, not both",
            ))
        }
        (None, None) => {
            return Err(missing(
                "value",
                "a string, or config.values: a list of strings",
            ))
        }
        (Some(_), None) => vec![params.required_str("value", "a string")?.to_owned()],
        (None, Some(list)) => {
            let items = list
                .as_array()
                .filter(|items| !items.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "values",
                        format!(
                            "must be a non-empty list of strings, got {}",
                            excerpt_json(list)
                        ),
                    )
                })?;
            items
                .iter()
                .map(|item| {
                    item.as_str().map(str::to_owned).ok_or_else(|| {
                        invalid(
                            "values",
                            format!("must hold only strings, got {}", excerpt_json(item)),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    if values.iter().any(String::is_empty) {
        let key = if params.get("value").is_some() {
            "value"
        } else {
            "values"
        };
        return Err(invalid(key, "must not be an empty string"));
    }
    let all = match params.optional_str("match")? {
        None | Some("any") => false,
        Some("all") => true,
        Some(other) => {
            return Err(invalid(
                "match",
                format!("{} is not allowed; use any or all", excerpt(other)),
            ))
        }
    };
    let needles = values
        .into_iter()
        .map(|shown| {
            let sought = if case_sensitive {
                shown.clone()
            } else {
                shown.to_lowercase()
            };
            Needle { shown, sought }
        })
        .collect();
    Ok(Check::Contains {
        needles,
        all,
        case_sensitive,
        negate,
    })
}

pub(super) fn compile_schema(params: &Params<'_>) -> Result<jsonschema::Validator, RuleError> {
    let schema = params.get("schema").ok_or_else(|| {
        missing(
            "schema",
            "a JSON Schema (an object) the field's JSON must match",
        )
    })?;
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(invalid(
            "schema",
            format!("must be a JSON Schema object, got {}", excerpt_json(schema)),
        ));
    }
    jsonschema::options()
        // Nothing leaves the machine: a `$ref` must resolve inside the schema.
        .offline()
        .with_pattern_options(
            jsonschema::PatternOptions::regex()
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_DFA_SIZE_LIMIT),
        )
        .build(schema)
        .map_err(|err| {
            invalid(
                "schema",
                format!(
                    "is not a valid JSON Schema: {}",
                    clip(&err.to_string(), 200)
                ),
            )
        })
}

pub(super) fn compile_pii_kinds(params: &Params<'_>) -> Result<Vec<PiiKind>, RuleError> {
    if let Err(err) = &*PII_PATTERNS {
        // Only a bug in the built-in patterns gets here; the tests compile them.
        return Err(invalid(
            "rule",
            format!("pii is unavailable: {}", regex_error(err)),
        ));
    }
    let Some(list) = params.get("kinds") else {
        return Ok(PiiKind::ALL.to_vec());
    };
    let allowed = || format!("use some of {}", PII_KINDS.join(", "));
    let items = list
        .as_array()
        .filter(|items| !items.is_empty())
        .ok_or_else(|| {
            invalid(
                "kinds",
                format!("must be a non-empty list of PII kinds; {}", allowed()),
            )
        })?;
    let mut kinds = Vec::new();
    for item in items {
        let kind = item.as_str().and_then(PiiKind::from_name).ok_or_else(|| {
            invalid(
                "kinds",
                format!("{} is not a PII kind; {}", excerpt_json(item), allowed()),
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// Typed reads of a config object; `null` counts as absent.
pub(super) struct Params<'c>(pub(super) &'c Map<String, Value>);

impl<'c> Params<'c> {
    pub(super) fn get(&self, key: &str) -> Option<&'c Value> {
        self.0.get(key).filter(|value| !value.is_null())
    }

    pub(super) fn optional_str(&self, key: &str) -> Result<Option<&'c str>, RuleError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(invalid(
                key,
                format!("must be a string, got {}", excerpt_json(other)),
            )),
        }
    }

    pub(super) fn required_str(&self, key: &str, expected: &str) -> Result<&'c str, RuleError> {
        self.optional_str(key)?
            .ok_or_else(|| missing(key, expected))
    }

    pub(super) fn bool_or(&self, key: &str, default: bool) -> Result<bool, RuleError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(other) => Err(invalid(
                key,
                format!("must be true or false, got {}", excerpt_json(other)),
            )),
        }
    }

    pub(super) fn optional_number(&self, key: &str) -> Result<Option<f64>, RuleError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => match value.as_f64() {
                Some(number) if number.is_finite() && number >= 0.0 => Ok(Some(number)),
                _ => Err(invalid(
                    key,
                    format!("must be a number ≥ 0, got {}", excerpt_json(value)),
                )),
            },
        }
    }

    pub(super) fn optional_count(&self, key: &str) -> Result<Option<u64>, RuleError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or_else(|| {
                invalid(
                    key,
                    format!("must be a whole number ≥ 0, got {}", excerpt_json(value)),
                )
            }),
        }
    }

    pub(super) fn warn_margin(&self) -> Result<f64, RuleError> {
        match self.optional_number("warn_margin")? {
            None => Ok(DEFAULT_WARN_MARGIN),
            Some(margin) if margin <= 1.0 => Ok(margin),
            Some(margin) => Err(invalid(
                "warn_margin",
                format!("must be a fraction from 0 to 1, got {margin}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::MAX_PATTERN_CHARS;
    use super::super::test_support::expect_error;
    use serde_json::json;

    #[test]
    fn wrongly_typed_parameters_are_named() {
        expect_error(
            json!({"rule": "regex", "pattern": 5}),
            "pattern",
            "must be a string, got 5",
        );
        expect_error(
            json!({"rule": "regex", "pattern": "a", "case_insensitive": "yes"}),
            "case_insensitive",
            "true or false",
        );
        expect_error(
            json!({"rule": "contains", "value": "a", "case_sensitive": 1}),
            "case_sensitive",
            "true or false",
        );
        expect_error(
            json!({"rule": "contains", "values": "a"}),
            "values",
            "non-empty list",
        );
        expect_error(
            json!({"rule": "contains", "values": []}),
            "values",
            "non-empty list",
        );
        expect_error(
            json!({"rule": "contains", "values": ["a", 2]}),
            "values",
            "only strings",
        );
        expect_error(json!({"rule": "contains", "value": ""}), "value", "empty");
        expect_error(
            json!({"rule": "contains", "value": "a", "values": ["b"]}),
            "values",
            "not both",
        );
        expect_error(
            json!({"rule": "contains", "value": "a", "match": "most"}),
            "match",
            "any or all",
        );
        expect_error(
            json!({"rule": "latency_max_ms", "max": "500"}),
            "max",
            "number ≥ 0",
        );
        expect_error(json!({"rule": "cost_max", "max": -1}), "max", "number ≥ 0");
        expect_error(
            json!({"rule": "tokens_max", "max": 10, "warn_margin": 2}),
            "warn_margin",
            "0 to 1",
        );
        expect_error(json!({"rule": "length", "min": 1.5}), "min", "whole number");
        expect_error(
            json!({"rule": "length", "min": 10, "max": 5}),
            "min",
            "greater than config.max",
        );
        expect_error(
            json!({"rule": "json_schema", "schema": "object"}),
            "schema",
            "JSON Schema object",
        );
        expect_error(
            json!({"rule": "json_schema", "schema": {"type": 5}}),
            "schema",
            "not a valid JSON Schema",
        );
        expect_error(
            json!({"rule": "pii", "kinds": ["email", "dna"]}),
            "kinds",
            "\"dna\" is not a PII kind",
        );
        expect_error(
            json!({"rule": "pii", "kinds": []}),
            "kinds",
            "non-empty list",
        );
        expect_error(
            json!({"rule": "refusal", "expect": "yes"}),
            "expect",
            "answer or refusal",
        );
        expect_error(
            json!({"rule": "not_empty", "field": 3}),
            "field",
            "must be a string",
        );
    }

    #[test]
    fn bad_regexes_are_refused_at_compile_time() {
        expect_error(
            json!({"rule": "regex", "pattern": "(unclosed"}),
            "pattern",
            "unclosed group",
        );
        expect_error(
            json!({"rule": "not_regex", "pattern": "a{2,1}"}),
            "pattern",
            "not a valid regular expression",
        );
        expect_error(
            json!({"rule": "regex", "pattern": ""}),
            "pattern",
            "must not be empty",
        );
        let long = "a".repeat(MAX_PATTERN_CHARS + 1);
        expect_error(
            json!({"rule": "regex", "pattern": long}),
            "pattern",
            "the limit is 1000",
        );
        // Small to write, huge to compile: the size limit refuses it.
        expect_error(
            json!({"rule": "regex", "pattern": r"(?:\w{100}){100}"}),
            "pattern",
            "bytes",
        );
        // Look-around is not supported by the linear-time engine.
        expect_error(
            json!({"rule": "regex", "pattern": "(?=a)"}),
            "pattern",
            "look-around",
        );
    }

    #[test]
    fn remote_schema_references_are_refused() {
        expect_error(
            json!({"rule": "json_schema", "schema": {"$ref": "https://example.com/s.json"}}),
            "schema",
            "not a valid JSON Schema",
        );
    }
}
