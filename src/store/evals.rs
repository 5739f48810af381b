//! Evaluations and their durable queue. Auto-evaluation rules are in
//! `eval_rules`, the summaries of scores in `eval_stats`.
//!
//! The queue is the `evaluations` table itself: a trigger inserts a
//! `pending` row; the runner claims due rows (`running`, one more attempt)
//! and writes back `complete` or `failed`, or `pending` again with a later
//! `run_after` for a retry. Rows left `running` by a stop are made `pending`
//! again at start, so nothing queued is lost to a restart.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::value::RawValue;
use serde_json::Value;

use super::trace_insert::usage_month;
use super::{now_micros, Result, Store};
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

impl Store {
    /// Queues an evaluation of the tenant's trace, counting it against the
    /// month's `quota` (0: none) in the same transaction.
    pub async fn queue_eval(
        &self,
        tenant_id: i64,
        eval: NewEvaluation,
        quota: u64,
    ) -> Result<Queued> {
        self.write_data(move |conn| {
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

pub(super) fn evals_this_month(conn: &Connection, tenant_id: i64, now: i64) -> Result<u64> {
    Ok(conn
        .prepare_cached("SELECT evals FROM usage WHERE tenant_id = ?1 AND month = ?2")?
        .query_row(params![tenant_id, usage_month(now)], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0)
        .max(0) as u64)
}

pub(super) fn count_evals(conn: &Connection, tenant_id: i64, now: i64, evals: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO usage (tenant_id, month, evals) VALUES (?1, ?2, ?3) \
         ON CONFLICT (tenant_id, month) DO UPDATE SET evals = evals + excluded.evals",
    )?
    .execute(params![tenant_id, usage_month(now), evals])?;
    Ok(())
}

pub(super) fn eval_trace(conn: &Connection, seq: i64) -> Result<Option<EvalTrace>> {
    let found = conn
        .prepare_cached(
            "SELECT unpack(input), unpack(output), error, latency_ms, cost, total_token_count, \
             unpack(metadata) \
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
        "SELECT name, type, unpack(input), unpack(output), error FROM spans WHERE trace_seq = ?1 \
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
