//! Helpers shared by the rule evaluators' unit tests.

use serde_json::Value;

use super::rules::{compile, Label, Rule, RuleError, Subject, Verdict};

static NO_METADATA: Value = Value::Null;

pub(super) fn subject(output: &str) -> Subject<'_> {
    Subject {
        input: None,
        output: Some(output),
        error: None,
        latency_ms: None,
        cost: None,
        total_tokens: None,
        metadata: &NO_METADATA,
        spans: &[],
    }
}

pub(super) fn rule(config: Value) -> Rule {
    match compile(&config) {
        Ok(rule) => rule,
        Err(err) => panic!("{config} should compile: {err}"),
    }
}

pub(super) fn run(config: Value, output: &str) -> Verdict {
    rule(config).evaluate(&subject(output))
}

#[track_caller]
pub(super) fn expect(verdict: &Verdict, label: Label) {
    assert_eq!(verdict.label, label, "reasoning: {}", verdict.reasoning);
    let score = match label {
        Label::Pass => 1.0,
        Label::Warn => 0.5,
        Label::Fail => 0.0,
    };
    assert_eq!(verdict.score, score);
}

pub(super) fn rejected(config: Value) -> RuleError {
    match compile(&config) {
        Ok(rule) => panic!("{config} should be rejected, compiled to {rule:?}"),
        Err(err) => err,
    }
}

#[track_caller]
pub(super) fn expect_error(config: Value, key: &str, mentions: &str) {
    let err = rejected(config);
    let message = err.to_string();
    assert_eq!(err.key(), Some(key), "{message}");
    assert!(message.starts_with(&format!("config.{key}")), "{message}");
    assert!(
        message.contains(mentions),
        "{message} should mention {mentions}"
    );
}
