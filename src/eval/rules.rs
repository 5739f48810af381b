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

use std::borrow::Cow;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::pii::{check_pii, PiiKind, PII_PATTERNS};
use super::refusal::{check_refusal, REFUSAL_PATTERN};
use super::text::{clip, excerpt, excerpt_json, head, percent, quote_list};

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

// Compiled-program and lazy-DFA caps: a hostile pattern fails to compile
// instead of eating memory (the regex crate's matching is linear already).
const REGEX_SIZE_LIMIT: usize = 2 << 20;
const REGEX_DFA_SIZE_LIMIT: usize = 2 << 20;
const REGEX_NEST_LIMIT: u32 = 64;
const DEFAULT_WARN_MARGIN: f64 = 0.1;
const FIELD_FORMS: &str =
    "input, output, error, metadata.<path> or span:<name>.<input|output|error>";

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

fn missing(key: &str, expected: impl Into<String>) -> RuleError {
    RuleError::Missing {
        key: key.to_owned(),
        expected: expected.into(),
    }
}

fn invalid(key: &str, problem: impl Into<String>) -> RuleError {
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

#[derive(Debug)]
enum Check {
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
struct Needle {
    shown: String,
    // Lowercased when the match is case-insensitive.
    sought: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Latency,
    Cost,
    Tokens,
}

impl Metric {
    fn noun(self) -> &'static str {
        match self {
            Metric::Latency => "latency",
            Metric::Cost => "cost",
            Metric::Tokens => "total tokens",
        }
    }
    fn show(self, value: f64) -> String {
        match self {
            Metric::Latency => format!("{value} ms"),
            Metric::Cost => format!("${value}"),
            Metric::Tokens => format!("{value}"),
        }
    }
    fn read(self, subject: &Subject<'_>) -> Option<f64> {
        match self {
            Metric::Latency => subject.latency_ms.map(|v| v as f64),
            Metric::Cost => subject.cost,
            Metric::Tokens => subject.total_tokens.map(|v| v as f64),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Input,
    Output,
    Error,
    Metadata(Vec<String>),
    Span { name: String, part: SpanPart },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpanPart {
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
    fn parse(spec: &str) -> Result<Field, RuleError> {
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

    fn label(&self) -> String {
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
    fn resolve<'a>(&self, subject: &Subject<'a>) -> Result<Cow<'a, str>, String> {
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

fn compile_regex(pattern: &str, case_insensitive: bool) -> Result<Regex, RuleError> {
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
fn regex_error(err: &regex::Error) -> String {
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

fn compile_contains(params: &Params<'_>, negate: bool) -> Result<Check, RuleError> {
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

fn compile_schema(params: &Params<'_>) -> Result<jsonschema::Validator, RuleError> {
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

fn compile_pii_kinds(params: &Params<'_>) -> Result<Vec<PiiKind>, RuleError> {
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
struct Params<'c>(&'c Map<String, Value>);

impl<'c> Params<'c> {
    fn get(&self, key: &str) -> Option<&'c Value> {
        self.0.get(key).filter(|value| !value.is_null())
    }

    fn optional_str(&self, key: &str) -> Result<Option<&'c str>, RuleError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(invalid(
                key,
                format!("must be a string, got {}", excerpt_json(other)),
            )),
        }
    }

    fn required_str(&self, key: &str, expected: &str) -> Result<&'c str, RuleError> {
        self.optional_str(key)?
            .ok_or_else(|| missing(key, expected))
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, RuleError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(other) => Err(invalid(
                key,
                format!("must be true or false, got {}", excerpt_json(other)),
            )),
        }
    }

    fn optional_number(&self, key: &str) -> Result<Option<f64>, RuleError> {
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

    fn optional_count(&self, key: &str) -> Result<Option<u64>, RuleError> {
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

    fn warn_margin(&self) -> Result<f64, RuleError> {
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
        let mut verdict = self.check_text(&label, head);
        if cut {
            verdict.reasoning.push_str(&format!(
                " (evaluated on the first 1 MiB of {} bytes)",
                text.len()
            ));
        }
        verdict
    }

    fn check_text(&self, label: &str, text: &str) -> Verdict {
        match &self.check {
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
                Verdict::fail(format!("{} cannot check text", self.name))
            }
        }
    }
}

fn check_max(metric: Metric, value: Option<f64>, max: f64, warn_margin: f64) -> Verdict {
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

fn check_length(
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
    use super::super::pii::{PiiKind, PII_PATTERNS};
    use super::super::test_support::{expect, rule, run, subject};
    use super::*;
    use serde_json::json;

    fn rejected(config: Value) -> RuleError {
        match compile(&config) {
            Ok(rule) => panic!("{config} should be rejected, compiled to {rule:?}"),
            Err(err) => err,
        }
    }

    #[track_caller]
    fn expect_error(config: Value, key: &str, mentions: &str) {
        let err = rejected(config);
        let message = err.to_string();
        assert_eq!(err.key(), Some(key), "{message}");
        assert!(message.starts_with(&format!("config.{key}")), "{message}");
        assert!(
            message.contains(mentions),
            "{message} should mention {mentions}"
        );
    }

    // --- config errors

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

    // --- rules

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

    // --- fields

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

    // --- robustness

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
