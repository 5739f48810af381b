//! What an evaluation runs, decided from its `evaluator_type`,
//! `metric_name` and `config`. The same decision is made when an
//! evaluation is triggered (so a config that cannot run is refused there)
//! and when the queue runs it.
//!
//! In order:
//! - `config.preset` names a catalog entry (unknown: refused). A preset
//!   the catalog checks deterministically runs as a rule, whatever the
//!   `evaluator_type`; the others are judged by the LLM judge.
//! - `evaluator_type: "rule"`: `config.rule` names a rule kind, or the
//!   metric name is a rule kind (`"not_empty"`) or a rule preset
//!   (`"pii_leakage"`).
//! - `evaluator_type: "llm"`: `config.prompt` is the rubric, or the metric
//!   name is a catalog entry (`"faithfulness"`), so the SDK's
//!   `client.eval(trace_id, "llm", "faithfulness")` needs no config.

use serde_json::Value;

use super::catalog::{self, PresetRun};
use super::rules::{self, Rule};

/// The longest custom rubric (`config.prompt`), in characters.
pub const MAX_PROMPT_CHARS: usize = 10_000;
/// The longest model override (`config.model`), in characters.
pub const MAX_MODEL_CHARS: usize = 200;

/// What an evaluation runs.
#[derive(Debug)]
pub enum Evaluator {
    /// A deterministic rule, run in-process.
    Rule(Box<Rule>),
    /// The LLM judge with this rubric.
    Judge {
        rubric: String,
        /// The judge is shown the trace's retrieved context.
        needs_context: bool,
        /// Overrides the judge's configured model.
        model: Option<String>,
    },
}

/// Decides what an evaluation runs; the error says what is missing or wrong,
/// naming the field.
pub fn resolve(
    evaluator_type: &str,
    metric_name: &str,
    config: &Value,
) -> Result<Evaluator, String> {
    let empty = Value::Object(Default::default());
    let config = match config {
        Value::Null => &empty,
        Value::Object(_) => config,
        _ => return Err("config: must be an object".into()),
    };
    let text = |key: &str| -> Result<Option<&str>, String> {
        match config.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("config.{key}: must be a string")),
        }
    };
    let model = text("model")?;
    if model.is_some_and(|m| m.trim().is_empty() || m.chars().count() > MAX_MODEL_CHARS) {
        return Err(format!(
            "config.model: must be 1 to {MAX_MODEL_CHARS} characters"
        ));
    }
    let model = model.map(str::to_owned);
    if let Some(name) = text("preset")? {
        let preset = catalog::preset(name).ok_or_else(|| {
            format!("config.preset: {name:?} is not in the catalog (see GET /v1/eval-catalog)")
        })?;
        if evaluator_type == "rule" && !matches!(preset.run, PresetRun::Rule) {
            return Err(format!(
                "config.preset: {name:?} is judged by an LLM; trigger it with evaluator_type llm"
            ));
        }
        return from_preset(preset, config, model);
    }
    match evaluator_type {
        "rule" => {
            if config.get("rule").is_some() {
                return compile(config);
            }
            if rules::RULE_KINDS.contains(&metric_name) {
                let mut with_kind = config.clone();
                with_kind["rule"] = Value::String(metric_name.to_owned());
                return compile(&with_kind);
            }
            match catalog::preset(metric_name) {
                Some(preset) if matches!(preset.run, PresetRun::Rule) => {
                    from_preset(preset, config, model)
                }
                _ => Err(format!(
                    "nothing to run: set config.rule to one of {} (or name a rule preset of \
                     GET /v1/eval-catalog in config.preset)",
                    rules::RULE_KINDS.join(", ")
                )),
            }
        }
        "llm" => {
            if let Some(prompt) = text("prompt")? {
                if prompt.trim().is_empty() || prompt.chars().count() > MAX_PROMPT_CHARS {
                    return Err(format!(
                        "config.prompt: must be 1 to {MAX_PROMPT_CHARS} characters"
                    ));
                }
                return Ok(Evaluator::Judge {
                    rubric: prompt.to_owned(),
                    needs_context: false,
                    model,
                });
            }
            match catalog::preset(metric_name) {
                Some(preset) => from_preset(preset, config, model),
                None => Err(
                    "nothing to judge: set config.preset to an entry of GET /v1/eval-catalog, \
                     or config.prompt to a rubric"
                        .into(),
                ),
            }
        }
        other => Err(format!(
            "evaluator_type: must be llm or rule, not {other:?}"
        )),
    }
}

fn from_preset(
    preset: &catalog::Preset,
    config: &Value,
    model: Option<String>,
) -> Result<Evaluator, String> {
    match preset.run {
        PresetRun::Rule => compile(&catalog::rule_config(preset, config)?),
        PresetRun::Judge {
            rubric,
            needs_context,
        } => Ok(Evaluator::Judge {
            rubric: rubric.to_owned(),
            needs_context,
            model,
        }),
    }
}

fn compile(config: &Value) -> Result<Evaluator, String> {
    rules::compile(config)
        .map(|rule| Evaluator::Rule(Box::new(rule)))
        .map_err(|e| format!("config: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn judge(evaluator_type: &str, metric: &str, config: Value) -> (String, bool, Option<String>) {
        match resolve(evaluator_type, metric, &config) {
            Ok(Evaluator::Judge {
                rubric,
                needs_context,
                model,
            }) => (rubric, needs_context, model),
            other => panic!("{metric} {config}: expected a judge, got {other:?}"),
        }
    }

    fn is_rule(evaluator_type: &str, metric: &str, config: Value) -> bool {
        matches!(
            resolve(evaluator_type, metric, &config),
            Ok(Evaluator::Rule(_))
        )
    }

    #[test]
    fn rules_come_from_config_metric_name_or_a_rule_preset() {
        assert!(is_rule("rule", "my_check", json!({"rule": "not_empty"})));
        assert!(is_rule("rule", "not_empty", Value::Null));
        assert!(is_rule("rule", "pii_leakage", json!({})));
        // A deterministic preset runs as a rule even when asked for an LLM.
        assert!(is_rule("llm", "anything", json!({"preset": "pii_leakage"})));
        assert!(is_rule(
            "rule",
            "shape",
            json!({"preset": "json_schema_conformance", "schema": {"type": "object"}})
        ));
    }

    #[test]
    fn judges_come_from_a_prompt_or_a_judged_preset() {
        let (rubric, context, model) = judge("llm", "faithfulness", Value::Null);
        assert!(!rubric.is_empty());
        assert!(context, "faithfulness is judged against retrieved context");
        assert_eq!(model, None);
        let (rubric, context, model) = judge(
            "llm",
            "tone",
            json!({"prompt": "Is the reply polite?", "model": "judge-2"}),
        );
        assert_eq!(rubric, "Is the reply polite?");
        assert!(!context);
        assert_eq!(model.as_deref(), Some("judge-2"));
        // A preset wins over a prompt, as the reference says.
        let (rubric, _, _) = judge(
            "llm",
            "x",
            json!({"preset": "toxicity", "prompt": "ignored"}),
        );
        assert_ne!(rubric, "ignored");
    }

    #[test]
    fn what_cannot_run_is_refused_with_the_field_named() {
        let refused = |t: &str, m: &str, c: Value| match resolve(t, m, &c) {
            Err(reason) => reason,
            Ok(e) => panic!("{t} {m} {c} should be refused, got {e:?}"),
        };
        assert!(refused("rule", "quality", json!({})).contains("config.rule"));
        assert!(refused("llm", "quality", json!({})).contains("config.prompt"));
        assert!(refused("llm", "x", json!({"preset": "nope"})).contains("config.preset"));
        assert!(refused("rule", "x", json!({"rule": "regex"})).contains("pattern"));
        assert!(refused("rule", "x", json!([1])).contains("config"));
        assert!(refused("llm", "x", json!({"prompt": ""})).contains("config.prompt"));
        assert!(refused("llm", "x", json!({"prompt": 3})).contains("config.prompt"));
        assert!(refused("llm", "faithfulness", json!({"model": ""})).contains("config.model"));
        assert!(refused("judge", "x", json!({})).contains("evaluator_type"));
        assert!(refused("rule", "x", json!({"preset": "toxicity"})).contains("evaluator_type llm"));
        assert!(
            refused("rule", "x", json!({"preset": "json_schema_conformance"})).contains("schema")
        );
    }
}
