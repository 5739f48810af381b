//! Evaluations and their durable queue, auto-evaluation rules, and the
//! analytics over scores (trends, histogram, window comparison, agreement
//! with human feedback).
//!
//! The queue is the `evaluations` table itself: a trigger inserts a
//! `pending` row; the runner claims due rows (`running`, one more attempt)
//! and writes back `complete` or `failed`, or `pending` again with a later
//! `run_after` for a retry. Rows left `running` by a stop are made `pending`
//! again at start, so nothing queued is lost to a restart.

use std::collections::HashMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::traces::usage_month;
use super::{now_micros, Result, Store, StoreError};
use crate::model::{Evaluation, Timestamp};

const EVAL_COLUMNS: &str = "e.id, e.uuid, t.id, p.uuid, e.metric_name, e.evaluator_type, \
    e.status, e.score, e.label, e.reasoning, e.config, e.model_tier, r.uuid, e.judge_model, \
    e.attempts, e.last_error, e.created_at, e.started_at, e.finished_at";
const EVAL_FROM: &str = "evaluations e JOIN traces t ON t.seq = e.trace_seq \
    JOIN projects p ON p.id = e.project_id LEFT JOIN eval_rules r ON r.id = e.rule_id";

fn evaluation_from_row(r: &Row<'_>) -> rusqlite::Result<Evaluation> {
    Ok(Evaluation {
        id: r.get(1)?,
        trace_id: r.get(2)?,
        project_id: r.get(3)?,
        metric_name: r.get(4)?,
        evaluator_type: r.get(5)?,
        status: r.get(6)?,
        score: r.get(7)?,
        label: r.get(8)?,
        reasoning: r.get(9)?,
        context: "fresh",
        source_action_id: None,
        original_evaluation_id: None,
        config: RawValue::from_string(r.get(10)?).unwrap_or_default(),
        model_tier: r.get(11)?,
        rule_id: r.get(12)?,
        judge_model: r.get(13)?,
        attempts: r.get(14)?,
        last_error: r.get(15)?,
        created_at: Timestamp(r.get(16)?),
        started_at: r.get::<_, Option<i64>>(17)?.map(Timestamp),
        completed_at: r.get::<_, Option<i64>>(18)?.map(Timestamp),
    })
}

/// An evaluation to queue.
#[derive(Debug, Clone)]
pub struct NewEvaluation {
    pub trace_id: String,
    pub metric_name: String,
    pub evaluator_type: String,
    /// JSON object text.
    pub config: String,
    pub model_tier: Option<String>,
}

/// What queuing an evaluation came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Queued {
    Queued {
        id: String,
    },
    /// The trace does not exist in the tenant.
    NoTrace,
    /// The monthly cap is reached: this many were queued this month.
    OverQuota {
        used: u64,
    },
}

/// Filters of `GET /v1/eval`; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct EvalFilter {
    pub trace_id: Option<String>,
    pub project_id: Option<i64>,
    pub metric: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub score_min: Option<f64>,
    pub score_max: Option<f64>,
    /// Only evaluations with an internal id below this (paging, newest first).
    pub before: Option<i64>,
    pub limit: usize,
}

/// An evaluation claimed by the runner.
#[derive(Debug, Clone)]
pub struct ClaimedEval {
    pub id: i64,
    pub uuid: String,
    pub tenant_id: i64,
    pub trace_seq: i64,
    pub metric_name: String,
    pub evaluator_type: String,
    pub config: String,
    /// Including this one.
    pub attempts: u32,
}

/// How one run of an evaluation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalOutcome {
    Complete {
        score: f64,
        label: String,
        reasoning: String,
        judge_model: Option<String>,
    },
    Failed {
        reason: String,
    },
    /// Run again at `run_after` (microseconds).
    Retry {
        reason: String,
        run_after: i64,
    },
}

/// What the evaluators look at: a trace and its spans.
#[derive(Debug, Clone)]
pub struct EvalTrace {
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub latency_ms: Option<i64>,
    pub cost: Option<f64>,
    pub total_tokens: Option<i64>,
    pub metadata: Value,
    pub spans: Vec<EvalSpan>,
}

#[derive(Debug, Clone)]
pub struct EvalSpan {
    pub name: String,
    pub span_type: String,
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
}

/// The queue's state, for `/health` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueDepth {
    pub pending: u64,
    pub running: u64,
    /// How long the longest-waiting due evaluation has waited, in seconds.
    pub oldest_pending_s: f64,
    /// Traces stored that the auto-evaluation rules have not looked at yet
    /// (at most; keys a purge freed count too).
    pub auto_backlog: u64,
}

/// One bucket of `GET /v1/eval/trends`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendBucket {
    pub start: i64,
    pub metric: String,
    pub avg_score: f64,
    pub count: u64,
    pub passed: u64,
}

/// Scores of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowStats {
    pub avg_score: f64,
    pub count: u64,
    pub passed: u64,
}

/// A trace's mean score for a metric beside its human feedback.
#[derive(Debug, Clone, PartialEq)]
pub struct AgreementPair {
    pub score: f64,
    /// good → 1, neutral → 0.5, bad → 0 (the mean over the trace's feedback).
    pub human: f64,
}

/// An auto-evaluation rule (the reference's `EvalRule`).
#[derive(Debug, Clone, Serialize)]
pub struct EvalRule {
    pub id: String,
    pub tenant_id: String,
    pub project_id: String,
    pub metric_name: String,
    pub evaluator_type: String,
    pub config: Option<Box<RawValue>>,
    pub enabled: bool,
    pub model_tier: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A rule to create.
#[derive(Debug, Clone)]
pub struct NewEvalRule {
    pub project_id: i64,
    pub metric_name: String,
    pub evaluator_type: String,
    pub config: Option<String>,
    pub enabled: bool,
    pub model_tier: String,
}

/// A change to a rule; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EvalRuleChange {
    pub enabled: Option<bool>,
    pub metric_name: Option<String>,
    /// `Some(None)` clears the config.
    pub config: Option<Option<String>>,
    pub model_tier: Option<String>,
}

/// What creating a rule came to.
#[derive(Debug, Clone)]
pub enum RuleCreated {
    Created(EvalRule),
    /// The organisation has this many rules, its plan's cap.
    OverQuota {
        count: u64,
    },
}

/// An enabled rule, as the scheduler applies it.
#[derive(Debug, Clone)]
pub struct ActiveRule {
    pub id: i64,
    pub uuid: String,
    pub tenant_id: i64,
    pub project_id: i64,
    pub metric_name: String,
    pub evaluator_type: String,
    pub config: String,
    pub model_tier: String,
    pub created_at: i64,
}

/// A newly stored trace, as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct NewTraceInfo {
    pub seq: i64,
    pub tenant_id: i64,
    pub project_id: i64,
    pub id: String,
    pub name: Option<String>,
    pub model: Option<String>,
    pub error: bool,
    pub tags: HashMap<String, String>,
    pub created_at: i64,
}

/// What the auto-evaluation scheduler looks at in one pass: the enabled
/// rules (with their organisations' plans) and the traces stored since its
/// mark.
#[derive(Debug, Clone)]
pub struct AutoCandidates {
    /// The mark the traces follow; the pass is recorded only if it still holds.
    pub mark: i64,
    pub rules: Vec<ActiveRule>,
    /// Plan per tenant with a rule.
    pub plans: HashMap<i64, String>,
    pub traces: Vec<NewTraceInfo>,
    /// More traces wait after these.
    pub more: bool,
}

/// One evaluation an auto-rule asks for: already decided (a rule run by
/// the scheduler) or to be queued (`verdict: None`).
#[derive(Debug, Clone)]
pub struct AutoEval {
    pub trace_seq: i64,
    pub tenant_id: i64,
    pub project_id: i64,
    pub rule: ActiveRule,
    /// Score, label and reasoning of a rule evaluated on the spot.
    pub verdict: Option<(f64, String, String)>,
}

/// What one scheduling pass stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scheduled {
    /// Evaluations queued (LLM evaluations).
    pub queued: usize,
    /// Rule evaluations run by the scheduler and stored complete.
    pub completed: usize,
    /// Evaluations not queued because a monthly cap was reached.
    pub over_quota: usize,
}

impl Store {
    /// Queues an evaluation of the tenant's trace, counting it against the
    /// month's `quota` (0: none) in the same transaction.
    pub async fn queue_eval(
        &self,
        tenant_id: i64,
        eval: NewEvaluation,
        quota: u64,
    ) -> Result<Queued> {
        self.write(move |conn| {
            let found: Option<(i64, i64)> = conn
                .prepare_cached(
                    "SELECT seq, project_id FROM traces WHERE tenant_id = ?1 AND id = ?2",
                )?
                .query_row(params![tenant_id, eval.trace_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((seq, project_id)) = found else {
                return Ok(Queued::NoTrace);
            };
            let now = now_micros();
            if quota > 0 {
                let used = evals_this_month(conn, tenant_id, now)?;
                if used >= quota {
                    return Ok(Queued::OverQuota { used });
                }
            }
            let uuid = uuid::Uuid::now_v7().hyphenated().to_string();
            insert_eval(
                conn,
                &uuid,
                tenant_id,
                project_id,
                seq,
                None,
                &eval.metric_name,
                &eval.evaluator_type,
                &eval.config,
                eval.model_tier.as_deref(),
                now,
            )?;
            count_evals(conn, tenant_id, now, 1)?;
            Ok(Queued::Queued { id: uuid })
        })
        .await
    }

    pub async fn get_eval(&self, tenant_id: i64, id: String) -> Result<Option<Evaluation>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {EVAL_COLUMNS} FROM {EVAL_FROM} WHERE e.uuid = ?1 AND e.tenant_id = ?2"
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![id, tenant_id], evaluation_from_row)
                .optional()?)
        })
        .await
    }

    /// Evaluations matching `filter`, newest first, with each one's internal
    /// id (for paging an export).
    pub async fn list_evals(
        &self,
        tenant_id: i64,
        filter: EvalFilter,
    ) -> Result<Vec<(i64, Evaluation)>> {
        self.read(move |conn| list(conn, tenant_id, &filter)).await
    }

    /// Claims up to `limit` due evaluations of `evaluator_type`: each
    /// becomes `running` with one more attempt.
    pub async fn claim_evals(
        &self,
        evaluator_type: &'static str,
        limit: usize,
    ) -> Result<Vec<ClaimedEval>> {
        self.write(move |conn| {
            let now = now_micros();
            let mut claimed = Vec::new();
            let mut stmt = conn.prepare_cached(
                "UPDATE evaluations SET status = 'running', attempts = attempts + 1, \
                 started_at = ?2 WHERE id IN (SELECT id FROM evaluations \
                 WHERE status = 'pending' AND run_after <= ?2 AND evaluator_type = ?3 \
                 ORDER BY run_after, id LIMIT ?1) \
                 RETURNING id, uuid, tenant_id, trace_seq, metric_name, evaluator_type, config, attempts",
            )?;
            let rows = stmt.query_map(params![limit as i64, now, evaluator_type], |r| {
                Ok(ClaimedEval {
                    id: r.get(0)?,
                    uuid: r.get(1)?,
                    tenant_id: r.get(2)?,
                    trace_seq: r.get(3)?,
                    metric_name: r.get(4)?,
                    evaluator_type: r.get(5)?,
                    config: r.get(6)?,
                    attempts: r.get::<_, i64>(7)?.clamp(0, u32::MAX as i64) as u32,
                })
            })?;
            for row in rows {
                claimed.push(row?);
            }
            claimed.sort_by_key(|c| c.id);
            Ok(claimed)
        })
        .await
    }

    /// When the next pending evaluation of `evaluator_type` is due
    /// (microseconds), if any is.
    pub async fn next_eval_due(&self, evaluator_type: &'static str) -> Result<Option<i64>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT min(run_after) FROM evaluations \
                     WHERE status = 'pending' AND evaluator_type = ?1",
                )?
                .query_row([evaluator_type], |r| r.get(0))?)
        })
        .await
    }

    /// Records how runs ended.
    pub async fn finish_evals(&self, outcomes: Vec<(i64, EvalOutcome)>) -> Result<()> {
        self.write(move |conn| {
            let now = now_micros();
            let mut done = conn.prepare_cached(
                "UPDATE evaluations SET status = ?2, score = ?3, label = ?4, reasoning = ?5, \
                 judge_model = ?6, last_error = NULL, finished_at = ?7 \
                 WHERE id = ?1 AND status = 'running'",
            )?;
            let mut retry = conn.prepare_cached(
                "UPDATE evaluations SET status = 'pending', last_error = ?2, run_after = ?3 \
                 WHERE id = ?1 AND status = 'running'",
            )?;
            for (id, outcome) in &outcomes {
                match outcome {
                    EvalOutcome::Complete {
                        score,
                        label,
                        reasoning,
                        judge_model,
                    } => {
                        done.execute(params![
                            id,
                            "complete",
                            score,
                            label,
                            reasoning,
                            judge_model,
                            now
                        ])?;
                    }
                    EvalOutcome::Failed { reason } => {
                        done.execute(params![
                            id,
                            "failed",
                            None::<f64>,
                            None::<String>,
                            reason,
                            None::<String>,
                            now
                        ])?;
                    }
                    EvalOutcome::Retry { reason, run_after } => {
                        retry.execute(params![id, reason, run_after])?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Makes evaluations a stop cut off pending again; returns how many.
    pub async fn requeue_running_evals(&self) -> Result<usize> {
        self.write(|conn| {
            Ok(conn
                .prepare_cached(
                    "UPDATE evaluations SET status = 'pending', run_after = ?1 WHERE status = 'running'",
                )?
                .execute([now_micros()])?)
        })
        .await
    }

    /// The trace an evaluation looks at, if it still exists.
    pub async fn eval_trace(&self, trace_seq: i64) -> Result<Option<EvalTrace>> {
        self.read(move |conn| eval_trace(conn, trace_seq)).await
    }

    pub async fn eval_queue_depth(&self) -> Result<QueueDepth> {
        self.read(queue_depth).await
    }

    /// Mean score, count and passes (score ≥ 0.5) of complete evaluations
    /// per time bucket (`width` microseconds, aligned to the epoch) and metric.
    pub async fn eval_trends(
        &self,
        tenant_id: i64,
        project_id: i64,
        metric: Option<String>,
        from: i64,
        to: i64,
        width: i64,
    ) -> Result<Vec<TrendBucket>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT (created_at / ?5) * ?5 AS bucket, metric_name, avg(score), count(*), \
                 sum(score >= 0.5) FROM evaluations \
                 WHERE tenant_id = ?1 AND project_id = ?2 AND status = 'complete' \
                 AND score IS NOT NULL AND created_at BETWEEN ?3 AND ?4 \
                 AND (?6 IS NULL OR metric_name = ?6) \
                 GROUP BY bucket, metric_name ORDER BY bucket, metric_name",
            )?;
            let rows = stmt.query_map(
                params![tenant_id, project_id, from, to, width, metric],
                |r| {
                    Ok(TrendBucket {
                        start: r.get(0)?,
                        metric: r.get(1)?,
                        avg_score: r.get(2)?,
                        count: r.get::<_, i64>(3)?.max(0) as u64,
                        passed: r.get::<_, i64>(4)?.max(0) as u64,
                    })
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Counts of complete scores of `metric` in `buckets` equal ranges of
    /// [0, 1] (the last one closed).
    pub async fn eval_histogram(
        &self,
        tenant_id: i64,
        project_id: i64,
        metric: String,
        from: i64,
        to: i64,
        buckets: usize,
    ) -> Result<Vec<u64>> {
        self.read(move |conn| {
            let mut counts = vec![0u64; buckets.max(1)];
            let mut stmt = conn.prepare_cached(
                "SELECT min(CAST(score * ?6 AS INTEGER), ?6 - 1), count(*) FROM evaluations \
                 WHERE tenant_id = ?1 AND project_id = ?2 AND metric_name = ?3 \
                 AND status = 'complete' AND score IS NOT NULL AND created_at BETWEEN ?4 AND ?5 \
                 GROUP BY 1",
            )?;
            let rows = stmt.query_map(
                params![tenant_id, project_id, metric, from, to, counts.len() as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            for row in rows {
                let (bucket, count) = row?;
                let bucket = bucket.clamp(0, counts.len() as i64 - 1) as usize;
                counts[bucket] += count.max(0) as u64;
            }
            Ok(counts)
        })
        .await
    }

    /// The scores of `metric` in a window.
    pub async fn eval_window(
        &self,
        tenant_id: i64,
        project_id: i64,
        metric: String,
        from: i64,
        to: i64,
    ) -> Result<WindowStats> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT coalesce(avg(score), 0), count(*), coalesce(sum(score >= 0.5), 0) \
                     FROM evaluations WHERE tenant_id = ?1 AND project_id = ?2 \
                     AND metric_name = ?3 AND status = 'complete' AND score IS NOT NULL \
                     AND created_at BETWEEN ?4 AND ?5",
                )?
                .query_row(params![tenant_id, project_id, metric, from, to], |r| {
                    Ok(WindowStats {
                        avg_score: r.get(0)?,
                        count: r.get::<_, i64>(1)?.max(0) as u64,
                        passed: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                })?)
        })
        .await
    }

    /// For each trace with both a complete `metric` evaluation and feedback
    /// (evaluated in the window), its mean score beside its mean human label.
    pub async fn eval_agreement(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
        metric: String,
        from: i64,
        to: i64,
    ) -> Result<Vec<AgreementPair>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT s.score, h.human FROM \
                 (SELECT trace_seq, avg(score) AS score FROM evaluations \
                  WHERE tenant_id = ?1 AND (?2 IS NULL OR project_id = ?2) AND metric_name = ?3 \
                  AND status = 'complete' AND score IS NOT NULL AND created_at BETWEEN ?4 AND ?5 \
                  GROUP BY trace_seq) s \
                 JOIN (SELECT trace_seq, avg(CASE label WHEN 'good' THEN 1.0 \
                       WHEN 'bad' THEN 0.0 ELSE 0.5 END) AS human \
                       FROM feedback WHERE tenant_id = ?1 GROUP BY trace_seq) h \
                 ON h.trace_seq = s.trace_seq LIMIT 1000000",
            )?;
            let rows = stmt.query_map(params![tenant_id, project_id, metric, from, to], |r| {
                Ok(AgreementPair {
                    score: r.get(0)?,
                    human: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Creates a rule unless the tenant already has `max_rules` (0: no cap).
    pub async fn create_eval_rule(
        &self,
        tenant_id: i64,
        rule: NewEvalRule,
        max_rules: u64,
    ) -> Result<RuleCreated> {
        self.write(move |conn| {
            if max_rules > 0 {
                let count: i64 = conn
                    .prepare_cached("SELECT count(*) FROM eval_rules WHERE tenant_id = ?1")?
                    .query_row([tenant_id], |r| r.get(0))?;
                if count as u64 >= max_rules {
                    return Ok(RuleCreated::OverQuota {
                        count: count as u64,
                    });
                }
            }
            let uuid = uuid::Uuid::now_v7().hyphenated().to_string();
            let now = now_micros();
            conn.prepare_cached(
                "INSERT INTO eval_rules (uuid, tenant_id, project_id, metric_name, evaluator_type, \
                 config, enabled, model_tier, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            )?
            .execute(params![
                uuid,
                tenant_id,
                rule.project_id,
                rule.metric_name,
                rule.evaluator_type,
                rule.config,
                rule.enabled,
                rule.model_tier,
                now
            ])?;
            rule_by_uuid(conn, tenant_id, &uuid)?
                .map(RuleCreated::Created)
                .ok_or_else(|| StoreError::Corrupt("a created rule vanished".into()))
        })
        .await
    }

    pub async fn list_eval_rules(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
    ) -> Result<Vec<EvalRule>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {RULE_COLUMNS} FROM {RULE_FROM} WHERE r.tenant_id = ?1 \
                 AND (?2 IS NULL OR r.project_id = ?2) ORDER BY r.id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![tenant_id, project_id], rule_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub async fn get_eval_rule(&self, tenant_id: i64, id: String) -> Result<Option<EvalRule>> {
        self.read(move |conn| rule_by_uuid(conn, tenant_id, &id))
            .await
    }

    pub async fn update_eval_rule(
        &self,
        tenant_id: i64,
        id: String,
        change: EvalRuleChange,
    ) -> Result<Option<EvalRule>> {
        self.write(move |conn| {
            let Some(current) = rule_by_uuid(conn, tenant_id, &id)? else {
                return Ok(None);
            };
            let config = match &change.config {
                Some(config) => config.clone(),
                None => current.config.as_ref().map(|c| c.get().to_owned()),
            };
            conn.prepare_cached(
                "UPDATE eval_rules SET enabled = ?3, metric_name = ?4, config = ?5, \
                 model_tier = ?6, updated_at = ?7 WHERE uuid = ?1 AND tenant_id = ?2",
            )?
            .execute(params![
                id,
                tenant_id,
                change.enabled.unwrap_or(current.enabled),
                change.metric_name.as_ref().unwrap_or(&current.metric_name),
                config,
                change.model_tier.as_ref().unwrap_or(&current.model_tier),
                now_micros()
            ])?;
            rule_by_uuid(conn, tenant_id, &id)
        })
        .await
    }

    /// Deletes a rule; its evaluations stay. Returns whether it existed.
    pub async fn delete_eval_rule(&self, tenant_id: i64, id: String) -> Result<bool> {
        self.write(move |conn| {
            Ok(conn
                .prepare_cached("DELETE FROM eval_rules WHERE uuid = ?1 AND tenant_id = ?2")?
                .execute(params![id, tenant_id])?
                > 0)
        })
        .await
    }

    /// Whether an enabled rule exists and traces wait to be looked at.
    pub async fn auto_eval_work(&self) -> Result<(bool, bool)> {
        self.read(|conn| {
            let rules: bool = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM eval_rules WHERE enabled)")?
                .query_row([], |r| r.get(0))?;
            let waiting: bool = conn
                .prepare_cached(
                    "SELECT coalesce((SELECT max(seq) FROM traces), 0) > \
                     (SELECT traces_seq FROM eval_rule_state WHERE id = 1)",
                )?
                .query_row([], |r| r.get(0))?;
            Ok((rules, waiting))
        })
        .await
    }

    /// The enabled rules and up to `batch` traces stored after the
    /// scheduler's mark; `None` when no rule is enabled.
    pub async fn auto_eval_candidates(&self, batch: usize) -> Result<Option<AutoCandidates>> {
        self.read(move |conn| candidates(conn, batch)).await
    }

    /// With no rule enabled, the traces stored so far are done with.
    pub async fn skip_auto_evals(&self) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached(
                "UPDATE eval_rule_state SET traces_seq = max(traces_seq, \
                 coalesce((SELECT max(seq) FROM traces), 0)) WHERE id = 1",
            )?
            .execute([])?;
            Ok(())
        })
        .await
    }

    /// The traces (and spans) evaluations look at, by key.
    pub async fn eval_traces(&self, seqs: Vec<i64>) -> Result<HashMap<i64, EvalTrace>> {
        self.read(move |conn| {
            let mut found = HashMap::new();
            for seq in seqs {
                if let Some(trace) = eval_trace(conn, seq)? {
                    found.insert(seq, trace);
                }
            }
            Ok(found)
        })
        .await
    }

    /// Stores a pass's evaluations (within each tenant's monthly cap,
    /// `quota_of(plan)`, 0: none) and moves the mark past `through`, if the
    /// mark is still `mark` (a purge may have lowered it: then nothing is
    /// stored and the next pass starts again).
    pub async fn record_auto_evals(
        &self,
        mark: i64,
        through: i64,
        evals: Vec<AutoEval>,
        plans: HashMap<i64, String>,
        quota_of: std::sync::Arc<dyn Fn(&str) -> u64 + Send + Sync>,
    ) -> Result<Scheduled> {
        self.write(move |conn| record(conn, mark, through, &evals, &plans, &*quota_of))
            .await
    }
}

fn list(conn: &Connection, tenant_id: i64, f: &EvalFilter) -> Result<Vec<(i64, Evaluation)>> {
    let mut sql = format!("SELECT {EVAL_COLUMNS} FROM {EVAL_FROM} WHERE e.tenant_id = ?");
    let mut args: Vec<SqlValue> = vec![tenant_id.into()];
    if let Some(trace_id) = &f.trace_id {
        // Through the trace's key, so the evaluations index finds its rows.
        sql.push_str(" AND e.trace_seq = (SELECT seq FROM traces WHERE tenant_id = ? AND id = ?)");
        args.push(tenant_id.into());
        args.push(trace_id.clone().into());
    }
    let mut add = |clause: &str, value: SqlValue| {
        sql.push_str(clause);
        args.push(value);
    };
    if let Some(project_id) = f.project_id {
        add(" AND e.project_id = ?", project_id.into());
    }
    if let Some(metric) = &f.metric {
        add(" AND e.metric_name = ?", metric.clone().into());
    }
    if let Some(from) = f.from {
        add(" AND e.created_at >= ?", from.into());
    }
    if let Some(to) = f.to {
        add(" AND e.created_at <= ?", to.into());
    }
    if let Some(min) = f.score_min {
        add(" AND e.score >= ?", min.into());
    }
    if let Some(max) = f.score_max {
        add(" AND e.score <= ?", max.into());
    }
    if let Some(before) = f.before {
        add(" AND e.id < ?", before.into());
    }
    sql.push_str(" ORDER BY e.id DESC LIMIT ?");
    args.push((f.limit as i64).into());
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        Ok((r.get::<_, i64>(0)?, evaluation_from_row(r)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A trace's evaluations, oldest first (for the trace detail).
pub(super) fn of_trace(conn: &Connection, trace_seq: i64) -> Result<Vec<Evaluation>> {
    let sql =
        format!("SELECT {EVAL_COLUMNS} FROM {EVAL_FROM} WHERE e.trace_seq = ?1 ORDER BY e.id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([trace_seq], evaluation_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[allow(clippy::too_many_arguments)]
fn insert_eval(
    conn: &Connection,
    uuid: &str,
    tenant_id: i64,
    project_id: i64,
    trace_seq: i64,
    rule_id: Option<i64>,
    metric_name: &str,
    evaluator_type: &str,
    config: &str,
    model_tier: Option<&str>,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO evaluations (uuid, tenant_id, project_id, trace_seq, rule_id, metric_name, \
         evaluator_type, config, model_tier, status, run_after, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?10)",
    )?
    .execute(params![
        uuid,
        tenant_id,
        project_id,
        trace_seq,
        rule_id,
        metric_name,
        evaluator_type,
        config,
        model_tier,
        now
    ])?;
    Ok(())
}

fn evals_this_month(conn: &Connection, tenant_id: i64, now: i64) -> Result<u64> {
    Ok(conn
        .prepare_cached("SELECT evals FROM usage WHERE tenant_id = ?1 AND month = ?2")?
        .query_row(params![tenant_id, usage_month(now)], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0)
        .max(0) as u64)
}

fn count_evals(conn: &Connection, tenant_id: i64, now: i64, evals: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO usage (tenant_id, month, evals) VALUES (?1, ?2, ?3) \
         ON CONFLICT (tenant_id, month) DO UPDATE SET evals = evals + excluded.evals",
    )?
    .execute(params![tenant_id, usage_month(now), evals])?;
    Ok(())
}

fn eval_trace(conn: &Connection, seq: i64) -> Result<Option<EvalTrace>> {
    let found = conn
        .prepare_cached(
            "SELECT input, output, error, latency_ms, cost, total_token_count, metadata \
             FROM traces WHERE seq = ?1",
        )?
        .query_row([seq], |r| {
            Ok(EvalTrace {
                input: r.get(0)?,
                output: r.get(1)?,
                error: r.get(2)?,
                latency_ms: r.get(3)?,
                cost: r.get(4)?,
                total_tokens: r.get(5)?,
                metadata: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or(Value::Null),
                spans: Vec::new(),
            })
        })
        .optional()?;
    let Some(mut trace) = found else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT name, type, input, output, error FROM spans WHERE trace_seq = ?1 \
         ORDER BY start_time IS NULL, start_time, rid",
    )?;
    trace.spans = stmt
        .query_map([seq], |r| {
            Ok(EvalSpan {
                name: r.get(0)?,
                span_type: r.get(1)?,
                input: r.get(2)?,
                output: r.get(3)?,
                error: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(trace))
}

fn queue_depth(conn: &Connection) -> Result<QueueDepth> {
    // Both counts read the partial indexes, never the whole table.
    let count = |sql: &str| -> Result<u64> {
        Ok(conn
            .prepare_cached(sql)?
            .query_row([], |r| r.get::<_, i64>(0))?
            .max(0) as u64)
    };
    let mut depth = QueueDepth {
        pending: count("SELECT count(*) FROM evaluations WHERE status = 'pending'")?,
        running: count("SELECT count(*) FROM evaluations WHERE status = 'running'")?,
        oldest_pending_s: 0.0,
        auto_backlog: count(
            "SELECT max(0, coalesce((SELECT max(seq) FROM traces), 0) - \
             (SELECT traces_seq FROM eval_rule_state WHERE id = 1))",
        )?,
    };
    // The longest an evaluation has been due and not started (a retry
    // waiting for its time is not late).
    let now = now_micros();
    for kind in ["rule", "llm"] {
        let due: Option<i64> = conn
            .prepare_cached(
                "SELECT min(run_after) FROM evaluations \
                 WHERE status = 'pending' AND evaluator_type = ?1",
            )?
            .query_row([kind], |r| r.get(0))?;
        if let Some(due) = due {
            depth.oldest_pending_s = depth.oldest_pending_s.max((now - due).max(0) as f64 / 1e6);
        }
    }
    Ok(depth)
}

const RULE_COLUMNS: &str = "r.uuid, ten.uuid, p.uuid, r.metric_name, r.evaluator_type, r.config, \
    r.enabled, r.model_tier, r.created_at, r.updated_at";
const RULE_FROM: &str =
    "eval_rules r JOIN tenants ten ON ten.id = r.tenant_id JOIN projects p ON p.id = r.project_id";

fn rule_from_row(r: &Row<'_>) -> rusqlite::Result<EvalRule> {
    Ok(EvalRule {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        project_id: r.get(2)?,
        metric_name: r.get(3)?,
        evaluator_type: r.get(4)?,
        config: r
            .get::<_, Option<String>>(5)?
            .and_then(|c| RawValue::from_string(c).ok()),
        enabled: r.get(6)?,
        model_tier: r.get(7)?,
        created_at: Timestamp(r.get(8)?),
        updated_at: Timestamp(r.get(9)?),
    })
}

fn rule_by_uuid(conn: &Connection, tenant_id: i64, id: &str) -> Result<Option<EvalRule>> {
    let sql =
        format!("SELECT {RULE_COLUMNS} FROM {RULE_FROM} WHERE r.uuid = ?1 AND r.tenant_id = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![id, tenant_id], rule_from_row)
        .optional()?)
}

fn candidates(conn: &Connection, batch: usize) -> Result<Option<AutoCandidates>> {
    let mark: i64 = conn
        .prepare_cached("SELECT traces_seq FROM eval_rule_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, r.uuid, r.tenant_id, r.project_id, r.metric_name, r.evaluator_type, \
         coalesce(r.config, '{}'), r.model_tier, r.created_at, ten.plan \
         FROM eval_rules r JOIN tenants ten ON ten.id = r.tenant_id WHERE r.enabled ORDER BY r.id",
    )?;
    let mut rules = Vec::new();
    let mut plans = HashMap::new();
    let rows = stmt.query_map([], |r| {
        Ok((
            ActiveRule {
                id: r.get(0)?,
                uuid: r.get(1)?,
                tenant_id: r.get(2)?,
                project_id: r.get(3)?,
                metric_name: r.get(4)?,
                evaluator_type: r.get(5)?,
                config: r.get(6)?,
                model_tier: r.get(7)?,
                created_at: r.get(8)?,
            },
            r.get::<_, String>(9)?,
        ))
    })?;
    for row in rows {
        let (rule, plan) = row?;
        plans.insert(rule.tenant_id, plan);
        rules.push(rule);
    }
    if rules.is_empty() {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, tenant_id, project_id, id, name, model, error IS NOT NULL, tag_map, created_at \
         FROM traces WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut traces = stmt
        .query_map(params![mark, batch as i64 + 1], |r| {
            let tags: Option<String> = r.get(7)?;
            Ok(NewTraceInfo {
                seq: r.get(0)?,
                tenant_id: r.get(1)?,
                project_id: r.get(2)?,
                id: r.get(3)?,
                name: r.get(4)?,
                model: r.get(5)?,
                error: r.get(6)?,
                tags: tags
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default(),
                created_at: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = traces.len() > batch;
    traces.truncate(batch);
    Ok(Some(AutoCandidates {
        mark,
        rules,
        plans,
        traces,
        more,
    }))
}

fn record(
    conn: &Connection,
    mark: i64,
    through: i64,
    evals: &[AutoEval],
    plans: &HashMap<i64, String>,
    quota_of: &(dyn Fn(&str) -> u64 + Send + Sync),
) -> Result<Scheduled> {
    let current: i64 = conn
        .prepare_cached("SELECT traces_seq FROM eval_rule_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    if current != mark {
        return Ok(Scheduled::default());
    }
    let mut done = Scheduled::default();
    let mut room: HashMap<i64, Option<u64>> = HashMap::new();
    let now = now_micros();
    let mut insert = conn.prepare_cached(
        "INSERT INTO evaluations (uuid, tenant_id, project_id, trace_seq, rule_id, metric_name, \
         evaluator_type, config, model_tier, status, score, label, reasoning, attempts, \
         run_after, created_at, started_at, finished_at) \
         SELECT ?1, ?2, ?3, seq, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16, ?16 \
         FROM traces WHERE seq = ?4",
    )?;
    for eval in evals {
        let tenant_id = eval.tenant_id;
        let left = match room.get(&tenant_id) {
            Some(left) => *left,
            None => {
                let quota = plans.get(&tenant_id).map_or(0, |p| quota_of(p));
                let left = (quota > 0).then(|| {
                    quota.saturating_sub(evals_this_month(conn, tenant_id, now).unwrap_or(quota))
                });
                room.insert(tenant_id, left);
                left
            }
        };
        if left == Some(0) {
            done.over_quota += 1;
            continue;
        }
        let rule = &eval.rule;
        let (status, score, label, reasoning, attempts, finished) = match &eval.verdict {
            Some((score, label, reasoning)) => (
                "complete",
                Some(*score),
                Some(label.as_str()),
                Some(reasoning.as_str()),
                1,
                Some(now),
            ),
            None => ("pending", None, None, None, 0, None),
        };
        let inserted = insert.execute(params![
            uuid::Uuid::now_v7().hyphenated().to_string(),
            tenant_id,
            eval.project_id,
            eval.trace_seq,
            rule.id,
            rule.metric_name,
            rule.evaluator_type,
            rule.config,
            rule.model_tier,
            status,
            score,
            label,
            reasoning,
            attempts,
            now,
            finished,
        ])?;
        if inserted == 0 {
            // The trace was deleted meanwhile.
            continue;
        }
        count_evals(conn, tenant_id, now, 1)?;
        room.insert(tenant_id, left.map(|l| l - 1));
        if eval.verdict.is_some() {
            done.completed += 1;
        } else {
            done.queued += 1;
        }
    }
    conn.prepare_cached("UPDATE eval_rule_state SET traces_seq = ?1 WHERE id = 1")?
        .execute([through])?;
    Ok(done)
}

/// Lowers the scheduler's mark below a reused `seq` after a purge.
pub(super) fn clamp_mark(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "UPDATE eval_rule_state SET traces_seq = \
         min(traces_seq, coalesce((SELECT max(seq) FROM traces), 0))",
    )?
    .execute([])?;
    Ok(())
}
