//! A dataset run's durable queue, as the experiment runner (`eval::experiment`)
//! works through it: it claims due `run_items` rows within the per-run and
//! per-organisation limits (`running`, one more attempt), reads what each is
//! run with, and writes back `complete` or `failed` with the item's scores,
//! or `pending` again with a later `run_after` for a retry. Rows left
//! `running` by a stop are made `pending` again at start. Recording the last
//! item of a run finishes the run.

use rusqlite::{params, Connection, OptionalExtension};

use super::eval_runs::{run_by_key, run_finished_event};
use super::tenancy::new_uuid;
use super::{now_micros, Result, Store};

/// An item a runner claimed.
#[derive(Debug, Clone)]
pub struct ClaimedRunItem {
    pub id: i64,
    pub run_id: i64,
    /// Including this one.
    pub attempts: u32,
}

/// What an item of a run is run with.
#[derive(Debug, Clone)]
pub struct RunWork {
    /// The run's organisation, whose own judge keys its calls use.
    pub tenant_id: i64,
    pub input: Option<String>,
    pub expected_output: Option<String>,
    /// The model's answer from an earlier attempt.
    pub output: Option<String>,
    pub system_prompt: Option<String>,
    pub model: Option<String>,
    pub judge_model: Option<String>,
    /// The project's enabled evaluation rules: metric, evaluator type, config.
    pub evaluators: Vec<(String, String, String)>,
    /// The item was removed from its dataset.
    pub removed: bool,
}

/// A score to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRunScore {
    pub metric_name: String,
    pub evaluator_type: String,
    /// `None`: failed, with the reason in `reasoning`.
    pub score: Option<f64>,
    pub label: Option<String>,
    pub reasoning: String,
    pub judge_model: Option<String>,
}

/// How an attempt at an item ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunItemOutcome {
    /// Scored (some scores may have failed, each saying why).
    Complete {
        output: Option<String>,
        scores: Vec<NewRunScore>,
    },
    /// The item failed: the model or the version's judge could not be used.
    Failed {
        output: Option<String>,
        reason: String,
        scores: Vec<NewRunScore>,
    },
    /// Try again at `run_after` (microseconds).
    Retry { reason: String, run_after: i64 },
}

impl Store {
    /// Claims up to `limit` due items of unfinished runs, at most
    /// `per_run` of a run and `per_tenant` of an organisation running at
    /// once; each becomes `running` with one more attempt.
    pub async fn claim_run_items(
        &self,
        per_run: usize,
        per_tenant: usize,
        limit: usize,
    ) -> Result<Vec<ClaimedRunItem>> {
        self.write(move |conn| claim(conn, per_run, per_tenant, limit))
            .await
    }

    /// When the next waiting item of an unfinished run is due
    /// (microseconds), if any is.
    pub async fn next_run_item_due(&self) -> Result<Option<i64>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT min((SELECT min(run_after) FROM run_items i \
                     WHERE i.run_id = r.id AND i.status = 'pending')) \
                     FROM eval_runs r WHERE r.status IN ('pending', 'running')",
                )?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    /// What an item is run with.
    pub async fn run_work(&self, run_item_id: i64) -> Result<Option<RunWork>> {
        self.read(move |conn| work(conn, run_item_id)).await
    }

    /// Keeps the model's answer for an item, so a retry does not ask again.
    pub async fn keep_run_output(&self, run_item_id: i64, output: String) -> Result<()> {
        self.write(move |conn| {
            conn.prepare_cached("UPDATE run_items SET output = ?2 WHERE id = ?1")?
                .execute(params![run_item_id, output])?;
            Ok(())
        })
        .await
    }

    /// Records how attempts ended, and finishes the runs left with nothing to do.
    pub async fn finish_run_items(&self, outcomes: Vec<(i64, RunItemOutcome)>) -> Result<()> {
        self.write(move |conn| finish(conn, &outcomes)).await
    }

    /// Makes items a stop cut off pending again; returns how many.
    pub async fn requeue_running_run_items(&self) -> Result<usize> {
        self.write(|conn| {
            Ok(conn
                .prepare_cached(
                    "UPDATE run_items SET status = 'pending', run_after = ?1 WHERE status = 'running'",
                )?
                .execute([now_micros()])?)
        })
        .await
    }
}

fn claim(
    conn: &Connection,
    per_run: usize,
    per_tenant: usize,
    limit: usize,
) -> Result<Vec<ClaimedRunItem>> {
    let now = now_micros();
    let runs: Vec<(i64, i64, String, i64)> = conn
        .prepare_cached(
            "SELECT r.id, r.tenant_id, r.status, \
             (SELECT count(*) FROM run_items WHERE run_id = r.id AND status = 'running') \
             FROM eval_runs r WHERE r.status IN ('pending', 'running') ORDER BY r.id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut by_tenant: std::collections::HashMap<i64, usize> = Default::default();
    for (_, tenant, _, running) in &runs {
        *by_tenant.entry(*tenant).or_default() += *running as usize;
    }
    let mut claimed = Vec::new();
    let mut take = conn.prepare_cached(
        "UPDATE run_items SET status = 'running', attempts = attempts + 1, started_at = ?3 \
         WHERE id IN (SELECT id FROM run_items WHERE run_id = ?1 AND status = 'pending' \
         AND run_after <= ?3 ORDER BY run_after, id LIMIT ?2) RETURNING id, attempts",
    )?;
    for (run_id, tenant, status, running) in runs {
        let tenant_running = by_tenant.get(&tenant).copied().unwrap_or(0);
        let room = per_run
            .saturating_sub(running as usize)
            .min(per_tenant.saturating_sub(tenant_running))
            .min(limit - claimed.len());
        if room == 0 {
            if claimed.len() == limit {
                break;
            }
            continue;
        }
        let rows = take
            .query_map(params![run_id, room as i64, now], |r| {
                Ok(ClaimedRunItem {
                    id: r.get(0)?,
                    run_id,
                    attempts: r.get::<_, i64>(1)?.clamp(0, u32::MAX as i64) as u32,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if rows.is_empty() {
            continue;
        }
        *by_tenant.entry(tenant).or_default() += rows.len();
        if status == "pending" {
            conn.prepare_cached(
                "UPDATE eval_runs SET status = 'running', started_at = ?2 WHERE id = ?1",
            )?
            .execute(params![run_id, now])?;
        }
        claimed.extend(rows);
    }
    claimed.sort_by_key(|c| c.id);
    Ok(claimed)
}

fn work(conn: &Connection, run_item_id: i64) -> Result<Option<RunWork>> {
    let found = conn
        .prepare_cached(
            "SELECT di.input, di.expected_output, ri.output, v.system_prompt, v.model, \
             v.judge_model, d.project_id, ri.item_id IS NULL, r.tenant_id \
             FROM run_items ri JOIN eval_runs r ON r.id = ri.run_id \
             JOIN eval_versions v ON v.id = r.version_id JOIN datasets d ON d.id = r.dataset_id \
             LEFT JOIN dataset_items di ON di.id = ri.item_id WHERE ri.id = ?1",
        )?
        .query_row([run_item_id], |r| {
            Ok((
                RunWork {
                    tenant_id: r.get(8)?,
                    input: r.get(0)?,
                    expected_output: r.get(1)?,
                    output: r.get(2)?,
                    system_prompt: r.get(3)?,
                    model: r.get(4)?,
                    judge_model: r.get(5)?,
                    evaluators: Vec::new(),
                    removed: r.get(7)?,
                },
                r.get::<_, i64>(6)?,
            ))
        })
        .optional()?;
    let Some((mut work, project_id)) = found else {
        return Ok(None);
    };
    work.evaluators = conn
        .prepare_cached(
            "SELECT metric_name, evaluator_type, coalesce(config, '{}') FROM eval_rules \
             WHERE project_id = ?1 AND enabled ORDER BY id",
        )?
        .query_map([project_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(work))
}

fn finish(conn: &Connection, outcomes: &[(i64, RunItemOutcome)]) -> Result<()> {
    let now = now_micros();
    let mut runs = Vec::new();
    for (id, outcome) in outcomes {
        let (status, output, error, scores) = match outcome {
            RunItemOutcome::Retry { reason, run_after } => {
                conn.prepare_cached(
                    "UPDATE run_items SET status = 'pending', error = ?2, run_after = ?3 \
                     WHERE id = ?1 AND status = 'running'",
                )?
                .execute(params![id, reason, run_after])?;
                continue;
            }
            RunItemOutcome::Complete { output, scores } => ("complete", output, None, scores),
            RunItemOutcome::Failed {
                output,
                reason,
                scores,
            } => ("failed", output, Some(reason), scores),
        };
        let scored: Vec<f64> = scores.iter().filter_map(|s| s.score).collect();
        let mean = (!scored.is_empty()).then(|| scored.iter().sum::<f64>() / scored.len() as f64);
        let run: Option<i64> = conn
            .prepare_cached(
                "UPDATE run_items SET status = ?2, output = coalesce(?3, output), score = ?4, \
                 error = ?5, finished_at = ?6 WHERE id = ?1 AND status = 'running' RETURNING run_id",
            )?
            .query_row(params![id, status, output, mean, error, now], |r| r.get(0))
            .optional()?;
        let Some(run) = run else {
            continue;
        };
        let mut insert = conn.prepare_cached(
            "INSERT INTO run_scores (uuid, run_item_id, metric_name, evaluator_type, status, \
             score, label, reasoning, judge_model, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for s in scores {
            insert.execute(params![
                new_uuid(),
                id,
                s.metric_name,
                s.evaluator_type,
                if s.score.is_some() {
                    "complete"
                } else {
                    "failed"
                },
                s.score,
                s.label,
                s.reasoning,
                s.judge_model,
                now
            ])?;
        }
        if !runs.contains(&run) {
            runs.push(run);
        }
    }
    for run in runs {
        finish_run(conn, run, now)?;
    }
    Ok(())
}

/// A running run none of whose items is left to do ends: `failed` when
/// every item failed, else `completed`, saying how many failed and why.
pub(super) fn finish_run(conn: &Connection, run: i64, now: i64) -> Result<()> {
    // Called on the writer for every finished item: whether one is left is
    // a probe of the index, where counting them all read every item of the
    // run each time (milliseconds at 10,000 items, in every item's path).
    let open: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM run_items \
             WHERE run_id = ?1 AND status IN ('pending', 'running'))",
        )?
        .query_row([run], |r| r.get(0))?;
    if open {
        return Ok(());
    }
    let (done, failed): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*) FILTER (WHERE status = 'complete'), \
             count(*) FILTER (WHERE status = 'failed') FROM run_items WHERE run_id = ?1",
        )?
        .query_row([run], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let first: Option<String> = conn
        .prepare_cached(
            "SELECT error FROM run_items WHERE run_id = ?1 AND status = 'failed' ORDER BY id LIMIT 1",
        )?
        .query_row([run], |r| r.get(0))
        .optional()?
        .flatten();
    let message = (failed > 0).then(|| {
        format!(
            "{failed} of {} items failed; the first: {}",
            done + failed,
            first.unwrap_or_default()
        )
    });
    let status = if done == 0 && failed > 0 {
        "failed"
    } else {
        "completed"
    };
    let changed = conn
        .prepare_cached(
            "UPDATE eval_runs SET status = ?2, completed_at = ?3, error_message = ?4 \
             WHERE id = ?1 AND status = 'running'",
        )?
        .execute(params![run, status, now, message])?;
    if changed > 0 {
        let tenant_id: i64 = conn
            .prepare_cached("SELECT tenant_id FROM eval_runs WHERE id = ?1")?
            .query_row([run], |r| r.get(0))?;
        if let Some(finished) = run_by_key(conn, run)? {
            run_finished_event(conn, tenant_id, &finished)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A running run of `items` items in `conn`, the first one `running`
    /// and the rest `pending`; returns the first item's id.
    fn run_of(conn: &Connection, items: i64) -> i64 {
        conn.execute_batch(
            "INSERT INTO datasets (id, uuid, tenant_id, project_id, name, created_at, updated_at) \
             VALUES (1, 'd', 1, 1, 'd', 0, 0); \
             INSERT INTO eval_versions (id, uuid, dataset_id, tenant_id, name, created_at) \
             VALUES (1, 'v', 1, 1, 'v', 0); \
             INSERT INTO eval_runs (id, uuid, tenant_id, dataset_id, version_id, status, \
             item_count, created_at) VALUES (1, 'r', 1, 1, 1, 'running', 0, 0);",
        )
        .expect("a run");
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO run_items (run_id, trace_id, status, run_after) \
             SELECT 1, 't' || i, CASE i WHEN 1 THEN 'running' ELSE 'pending' END, 0 FROM n",
            [items],
        )
        .expect("its items");
        conn.query_row("SELECT min(id) FROM run_items", [], |r| r.get(0))
            .expect("the first item")
    }

    /// SQLite virtual-machine steps (in hundreds) taken to record one item's
    /// outcome in a run of `items` items.
    fn steps_to_finish_one(items: i64) -> u64 {
        let (_dir, conn) = crate::store::test_database();
        let first = run_of(&conn, items);
        let steps = Arc::new(AtomicU64::new(0));
        let counted = steps.clone();
        conn.progress_handler(
            100,
            Some(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                false
            }),
        )
        .expect("progress handler");
        let outcome = RunItemOutcome::Complete {
            output: Some("Paris.".into()),
            scores: vec![NewRunScore {
                metric_name: "m".into(),
                evaluator_type: "rule".into(),
                score: Some(1.0),
                label: Some("pass".into()),
                reasoning: String::new(),
                judge_model: None,
            }],
        };
        finish(&conn, &[(first, outcome)]).expect("finish");
        let status: String = conn
            .query_row("SELECT status FROM eval_runs WHERE id = 1", [], |r| {
                r.get(0)
            })
            .expect("status");
        assert_eq!(status, "running", "items are left to do");
        steps.load(Ordering::Relaxed)
    }

    #[test]
    fn recording_an_item_of_a_large_run_costs_what_it_costs_in_a_small_one() {
        // The writer records every item as it finishes: that must not read
        // the run's other items, or a run of n items costs n² and holds up
        // every other write (ingest included) a little longer at each item.
        let small = steps_to_finish_one(100);
        let large = steps_to_finish_one(20_000);
        assert!(
            large <= small + 5,
            "{large} hundred steps in a run of 20,000 items, {small} in one of 100"
        );
    }

    #[test]
    fn the_last_item_finishes_its_run_saying_how_many_failed() {
        let (_dir, conn) = crate::store::test_database();
        let first = run_of(&conn, 3);
        conn.execute(
            "UPDATE run_items SET status = CASE id - ?1 WHEN 1 THEN 'failed' ELSE 'complete' END, \
             error = CASE id - ?1 WHEN 1 THEN 'the judge: no answer' END WHERE id > ?1",
            [first],
        )
        .expect("the others done");
        let outcome = RunItemOutcome::Complete {
            output: None,
            scores: Vec::new(),
        };
        finish(&conn, &[(first, outcome)]).expect("finish");
        let (status, message): (String, Option<String>) = conn
            .query_row(
                "SELECT status, error_message FROM eval_runs WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the run");
        assert_eq!(status, "completed");
        assert_eq!(
            message.as_deref(),
            Some("1 of 3 items failed; the first: the judge: no answer")
        );
    }
}
