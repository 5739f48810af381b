//! Auto-evaluation rules: each trace stored in a rule's project after the
//! rule was made queues the rule's evaluation, when it passes the rule's
//! filter and its sample.
//!
//! A rule's `config` is an evaluation config (see [`super::evaluator`])
//! that may add:
//! - `sample_rate`: the share of matching traces to evaluate, 0 to 1
//!   (default 1). The choice is a hash of the rule and the trace id, so it
//!   is stable: a trace is either in a rule's sample or not.
//! - `filter`: `name`, `model` (exact, or a prefix ending in `*`), `tags`
//!   (an object of key → value, all of which must match) and `error`
//!   (`true`: only traces with an error; `false`: only those without).
//!
//! The scheduler runs beside ingest, never inside it: it reads the traces
//! stored since its last pass (its place is kept in the database), runs the
//! matching rule evaluators itself, and stores their results, and queues the
//! LLM evaluations, in one write of its own. While ingest runs it
//! works a tenth of the time, so under sustained load the rules' results
//! trail behind and catch up when the load eases.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::evaluator::{resolve, Evaluator};
use super::queue::{label, span_subjects, subject, EvalQueue, SCHEDULE_BATCH, SCHEDULE_EVERY};
use crate::config::{Config, Plan};
use crate::store::{ActiveRule, AutoEval, NewTraceInfo, Store};

/// While ingest runs, the scheduler waits this many times as long as each
/// batch took (the batch's evaluations cost about as much again).
const AUTO_SHARE: u32 = 9;
/// The longest filter value, in characters.
const MAX_FILTER_CHARS: usize = 256;
/// The most tags a filter may require.
const MAX_FILTER_TAGS: usize = 20;

/// Which traces a rule applies to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleFilter {
    pub sample_rate: f64,
    pub name: Option<String>,
    pub model: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub error: Option<bool>,
}

impl RuleFilter {
    /// Reads `sample_rate` and `filter` from a rule's config; the error
    /// names the field.
    pub fn parse(config: &Value) -> Result<RuleFilter, String> {
        let mut parsed = RuleFilter {
            sample_rate: 1.0,
            ..RuleFilter::default()
        };
        match config.get("sample_rate") {
            None | Some(Value::Null) => {}
            Some(rate) => match rate.as_f64() {
                Some(r) if (0.0..=1.0).contains(&r) => parsed.sample_rate = r,
                _ => return Err("config.sample_rate: must be a number from 0 to 1".into()),
            },
        }
        let filter = match config.get("filter") {
            None | Some(Value::Null) => return Ok(parsed),
            Some(Value::Object(filter)) => filter,
            Some(_) => return Err("config.filter: must be an object".into()),
        };
        for (key, value) in filter {
            match (key.as_str(), value) {
                ("name" | "model", Value::String(s)) => {
                    if s.is_empty() || s.chars().count() > MAX_FILTER_CHARS {
                        return Err(format!(
                            "config.filter.{key}: must be 1 to {MAX_FILTER_CHARS} characters"
                        ));
                    }
                    if key == "name" {
                        parsed.name = Some(s.clone());
                    } else {
                        parsed.model = Some(s.clone());
                    }
                }
                ("error", Value::Bool(b)) => parsed.error = Some(*b),
                ("tags", Value::Object(tags)) => {
                    if tags.len() > MAX_FILTER_TAGS {
                        return Err(format!(
                            "config.filter.tags: at most {MAX_FILTER_TAGS} tags"
                        ));
                    }
                    for (k, v) in tags {
                        let Some(v) = v.as_str() else {
                            return Err(format!("config.filter.tags.{k}: must be a string"));
                        };
                        parsed.tags.insert(k.clone(), v.to_owned());
                    }
                }
                ("name" | "model", _) => {
                    return Err(format!("config.filter.{key}: must be a string"))
                }
                ("error", _) => return Err("config.filter.error: must be true or false".into()),
                ("tags", _) => return Err("config.filter.tags: must be an object".into()),
                (other, _) => {
                    return Err(format!(
                        "config.filter.{other}: unknown; use name, model, tags or error"
                    ))
                }
            }
        }
        Ok(parsed)
    }

    /// Whether the trace passes the filter and falls in the rule's sample.
    pub fn admits(&self, rule_id: &str, trace: &NewTraceInfo) -> bool {
        let matches = |pattern: &Option<String>, value: &Option<String>| match pattern {
            None => true,
            Some(p) => value.as_deref().is_some_and(|v| match p.strip_suffix('*') {
                Some(prefix) => v.starts_with(prefix),
                None => v == p,
            }),
        };
        matches(&self.name, &trace.name)
            && matches(&self.model, &trace.model)
            && self.error.is_none_or(|e| e == trace.error)
            && self
                .tags
                .iter()
                .all(|(k, v)| trace.tags.get(k).is_some_and(|have| have == v))
            && in_sample(self.sample_rate, rule_id, &trace.id)
    }
}

/// A stable draw in [0, 1) from the rule and the trace, below `rate`.
fn in_sample(rate: f64, rule_id: &str, trace_id: &str) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let digest = Sha256::new()
        .chain_update(rule_id.as_bytes())
        .chain_update([0])
        .chain_update(trace_id.as_bytes())
        .finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    ((u64::from_be_bytes(head) >> 11) as f64 / (1u64 << 53) as f64) < rate
}

/// Looks for new traces every [`SCHEDULE_EVERY`]: the rules that match them
/// are run on the spot when they are rule evaluators, and queued (waking
/// the runner) when they need the judge.
pub(super) async fn schedule(store: Arc<Store>, config: Arc<Config>, queue: Arc<EvalQueue>) {
    let quota_config = config.clone();
    let quota_of: Arc<dyn Fn(&str) -> u64 + Send + Sync> = Arc::new(move |plan: &str| {
        let plan = Plan::parse(plan).unwrap_or(Plan::Enterprise);
        quota_config.plans.limits(plan).evals_per_month
    });
    let mut seen = u64::MAX;
    let mut tick = tokio::time::interval(SCHEDULE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut previous, mut last_store) = (store.stored_changes(), std::time::Instant::now());
    loop {
        tick.tick().await;
        let stored = store.stored_changes();
        if stored != previous {
            (previous, last_store) = (stored, std::time::Instant::now());
        }
        // Traces were stored since the last pass, or a rule may have been
        // made (checked every pass: a cheap read).
        match store.auto_eval_work().await {
            Ok((_, false)) => {
                seen = stored;
                continue;
            }
            Ok((false, true)) if stored == seen => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "auto-evaluation: reading the rules failed");
                continue;
            }
        }
        seen = stored;
        loop {
            let started = std::time::Instant::now();
            let more = match pass(&store, &queue, &quota_of).await {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "auto-evaluation failed");
                    false
                }
            };
            if !more {
                break;
            }
            // While ingest runs, work a tenth of the time: ingest comes
            // first, and the rules catch up once it pauses.
            let now_stored = store.stored_changes();
            if now_stored != previous {
                (previous, last_store) = (now_stored, std::time::Instant::now());
            }
            if last_store.elapsed() < crate::upkeep::INGEST_ACTIVE {
                tokio::time::sleep(started.elapsed() * AUTO_SHARE).await;
            }
        }
    }
}

/// One batch of new traces; says whether more wait.
async fn pass(
    store: &Arc<Store>,
    queue: &Arc<EvalQueue>,
    quota_of: &Arc<dyn Fn(&str) -> u64 + Send + Sync>,
) -> Result<bool, crate::store::StoreError> {
    let Some(batch) = store.auto_eval_candidates(SCHEDULE_BATCH).await? else {
        store.skip_auto_evals().await?;
        return Ok(false);
    };
    let Some(through) = batch.traces.last().map(|t| t.seq) else {
        return Ok(false);
    };
    // What each rule admits and runs, decided once per pass: a rule
    // evaluator is run here, anything else is queued for the judge.
    type Plan<'b> = (&'b ActiveRule, RuleFilter, Option<Arc<Evaluator>>);
    let mut by_project: HashMap<(i64, i64), Vec<Plan<'_>>> = HashMap::new();
    for rule in &batch.rules {
        let config: Value = serde_json::from_str(&rule.config).unwrap_or(Value::Null);
        // A rule's config was checked when it was saved; one that no longer
        // reads applies to nothing rather than to everything.
        let Ok(filter) = RuleFilter::parse(&config) else {
            continue;
        };
        let here = match resolve(&rule.evaluator_type, &rule.metric_name, &config) {
            Ok(evaluator @ Evaluator::Rule(_)) => Some(Arc::new(evaluator)),
            _ => None,
        };
        by_project
            .entry((rule.tenant_id, rule.project_id))
            .or_default()
            .push((rule, filter, here));
    }
    // A rule evaluates the traces stored after it was made that it admits.
    let mut picked: Vec<(&NewTraceInfo, &ActiveRule, Option<Arc<Evaluator>>)> = Vec::new();
    for trace in &batch.traces {
        for (rule, filter, here) in by_project
            .get(&(trace.tenant_id, trace.project_id))
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if trace.created_at >= rule.created_at && filter.admits(&rule.uuid, trace) {
                picked.push((trace, rule, here.clone()));
            }
        }
    }
    let mut seqs: Vec<i64> = picked
        .iter()
        .filter(|(_, _, here)| here.is_some())
        .map(|(t, _, _)| t.seq)
        .collect();
    seqs.dedup();
    let contents = if seqs.is_empty() {
        HashMap::new()
    } else {
        store.eval_traces(seqs).await?
    };
    let jobs: Vec<(AutoEval, Option<Arc<Evaluator>>)> = picked
        .into_iter()
        .map(|(t, r, here)| {
            let eval = AutoEval {
                trace_seq: t.seq,
                tenant_id: t.tenant_id,
                project_id: t.project_id,
                rule: r.clone(),
                verdict: None,
            };
            (eval, here)
        })
        .collect();
    // Rules are CPU work: off the runtime.
    let evals = tokio::task::spawn_blocking(move || {
        jobs.into_iter()
            .filter_map(|(mut eval, evaluator)| {
                if let Some(Evaluator::Rule(check)) = evaluator.as_deref() {
                    // A trace deleted since it was read is not evaluated.
                    let trace = contents.get(&eval.trace_seq)?;
                    let spans = span_subjects(trace);
                    let verdict = check.evaluate(&subject(trace, &spans));
                    eval.verdict = Some((
                        verdict.score,
                        label(verdict.label).to_owned(),
                        verdict.reasoning,
                    ));
                }
                Some(eval)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| crate::store::StoreError::Task(e.to_string()))?;
    let done = store
        .record_auto_evals(batch.mark, through, evals, batch.plans, quota_of.clone())
        .await?;
    let stats = &queue.stats;
    stats.auto_queued.fetch_add(
        (done.queued + done.completed) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    stats
        .completed
        .fetch_add(done.completed as u64, std::sync::atomic::Ordering::Relaxed);
    stats
        .auto_over_quota
        .fetch_add(done.over_quota as u64, std::sync::atomic::Ordering::Relaxed);
    if done.queued > 0 {
        queue.wake();
    }
    Ok(batch.more)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    fn trace(id: &str, name: Option<&str>, model: Option<&str>, error: bool) -> NewTraceInfo {
        NewTraceInfo {
            seq: 1,
            tenant_id: 1,
            project_id: 1,
            id: id.into(),
            name: name.map(str::to_owned),
            model: model.map(str::to_owned),
            error,
            tags: HashMap::from([("env".to_string(), "prod".to_string())]),
            created_at: 0,
        }
    }

    #[test]
    fn filters_match_name_model_tags_and_error() {
        let filter = RuleFilter::parse(&json!({"filter": {
            "name": "chat*", "model": "gpt-4o", "tags": {"env": "prod"}, "error": false
        }}))
        .expect("parses");
        assert!(filter.admits("r", &trace("t", Some("chat.reply"), Some("gpt-4o"), false)));
        assert!(!filter.admits("r", &trace("t", Some("search"), Some("gpt-4o"), false)));
        assert!(!filter.admits("r", &trace("t", Some("chat"), Some("gpt-4o-mini"), false)));
        assert!(!filter.admits("r", &trace("t", Some("chat"), None, false)));
        assert!(!filter.admits("r", &trace("t", Some("chat"), Some("gpt-4o"), true)));
        let staging =
            RuleFilter::parse(&json!({"filter": {"tags": {"env": "staging"}}})).expect("parses");
        assert!(!staging.admits("r", &trace("t", None, None, false)));
        let all = RuleFilter::parse(&json!({})).expect("parses");
        assert!(all.admits("r", &trace("t", None, None, true)));
    }

    #[test]
    fn sampling_is_stable_and_near_its_rate() {
        let filter = RuleFilter::parse(&json!({"sample_rate": 0.3})).expect("parses");
        let ids: Vec<String> = (0..4000).map(|i| format!("trace-{i}")).collect();
        let picked = ids
            .iter()
            .filter(|id| filter.admits("rule-a", &trace(id, None, None, false)))
            .count();
        assert!((1000..1400).contains(&picked), "{picked} of 4000 at 0.3");
        // The same rule picks the same traces; another rule picks others.
        let again = ids
            .iter()
            .filter(|id| filter.admits("rule-a", &trace(id, None, None, false)))
            .count();
        assert_eq!(picked, again);
        let differ = ids
            .iter()
            .filter(|id| {
                filter.admits("rule-a", &trace(id, None, None, false))
                    != filter.admits("rule-b", &trace(id, None, None, false))
            })
            .count();
        assert!(differ > 500, "rules sample independently ({differ})");
        let none = RuleFilter::parse(&json!({"sample_rate": 0})).expect("parses");
        assert!(!ids
            .iter()
            .any(|id| none.admits("r", &trace(id, None, None, false))));
    }

    #[test]
    fn bad_filters_are_refused_with_the_field_named() {
        for (config, field) in [
            (json!({"sample_rate": 1.5}), "config.sample_rate"),
            (json!({"sample_rate": "half"}), "config.sample_rate"),
            (json!({"filter": []}), "config.filter"),
            (json!({"filter": {"name": ""}}), "config.filter.name"),
            (json!({"filter": {"model": 4}}), "config.filter.model"),
            (json!({"filter": {"error": "yes"}}), "config.filter.error"),
            (
                json!({"filter": {"tags": {"a": 1}}}),
                "config.filter.tags.a",
            ),
            (json!({"filter": {"colour": "red"}}), "config.filter.colour"),
        ] {
            let err = RuleFilter::parse(&config).expect_err("refused");
            assert!(err.starts_with(field), "{config}: {err}");
        }
    }
}
