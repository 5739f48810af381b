//! Runs of a dataset against a version, as the API reads and changes them.
//!
//! Scheduling a run writes one `run_items` row per item of the dataset as
//! it is then: the run's durable queue, which the experiment runner works
//! through (`run_queue`). A run is `running` from its first claim and
//! `completed` (or `failed`, when every item failed) when none of its items
//! is left to do; `cancelled` when cancelled first.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::datasets::dataset_key;
use super::evals::{count_evals, evals_this_month};
use super::page::PAGE_MAX_BYTES;
use super::tenancy::new_uuid;
use super::webhooks::enqueue_event;
use super::{now_micros, Result, Store};
use crate::model::Timestamp;

/// A run (the reference's `EvalRun`), with its progress.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EvalRun {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = "uuid")]
    pub tenant_id: String,
    #[schema(format = "uuid")]
    pub dataset_id: String,
    #[schema(format = "uuid")]
    pub eval_version_id: String,
    /// The version's name.
    pub eval_version_name: String,
    /// `pending`, `running`, `completed`, `failed` (every item failed) or
    /// `cancelled`.
    #[schema(example = "running")]
    pub status: String,
    /// Items the run scores.
    pub item_count: i64,
    /// Items done, failed ones included.
    pub completed_count: i64,
    /// Items that failed; each says why in the run's export.
    pub failed_count: i64,
    /// The mean of the items' scores (each item's the mean of its scores), 0 to 1.
    pub mean_score: Option<f64>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
    /// Why items failed, when any did.
    pub error_message: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// One item of a run, as it came out.
#[derive(Debug, Clone, Serialize)]
pub struct RunItemResult {
    /// The dataset item; null once it was removed from the dataset.
    pub item_id: Option<String>,
    pub trace_id: String,
    /// `pending`, `running`, `complete`, `failed` or `cancelled`.
    pub status: String,
    /// The item's review label.
    pub label: Option<String>,
    pub input: Option<String>,
    /// What was scored: the model's answer, or the item's own output.
    pub output: Option<String>,
    pub score: Option<f64>,
    pub error: Option<String>,
    pub scores: Vec<RunScore>,
}

/// One score of a run's item: an evaluation linked to the run and the item.
#[derive(Debug, Clone, Serialize)]
pub struct RunScore {
    pub id: String,
    pub metric_name: String,
    pub evaluator_type: String,
    /// `complete` or `failed`.
    pub status: String,
    pub score: Option<f64>,
    pub label: Option<String>,
    /// The evaluator's reasoning, or why it failed.
    pub reasoning: Option<String>,
    pub judge_model: Option<String>,
    pub created_at: Timestamp,
}

/// What scheduling a run came to.
#[derive(Debug, Clone)]
pub enum RunScheduled {
    Run(Box<EvalRun>),
    NoDataset,
    NoVersion,
    /// The dataset has no items.
    Empty,
    /// The dataset has more items than a run may take.
    TooMany {
        count: u64,
    },
    /// The month's evaluations would pass the plan's cap: this many were
    /// queued already.
    OverQuota {
        used: u64,
        count: u64,
    },
    /// Neither the version nor the project has anything that scores.
    NothingScores,
}

const RUN_COLUMNS: &str = "r.uuid, ten.uuid, d.uuid, v.uuid, v.name, r.status, r.item_count, \
    (SELECT count(*) FROM run_items WHERE run_id = r.id AND status IN ('complete', 'failed')), \
    (SELECT count(*) FROM run_items WHERE run_id = r.id AND status = 'failed'), \
    (SELECT avg(score) FROM run_items WHERE run_id = r.id AND status = 'complete'), \
    r.started_at, r.completed_at, r.error_message, r.created_at, r.id";
const RUN_FROM: &str = "eval_runs r JOIN tenants ten ON ten.id = r.tenant_id \
    JOIN datasets d ON d.id = r.dataset_id JOIN eval_versions v ON v.id = r.version_id";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<EvalRun> {
    Ok(EvalRun {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        dataset_id: r.get(2)?,
        eval_version_id: r.get(3)?,
        eval_version_name: r.get(4)?,
        status: r.get(5)?,
        item_count: r.get(6)?,
        completed_count: r.get(7)?,
        failed_count: r.get(8)?,
        mean_score: r.get(9)?,
        started_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
        completed_at: r.get::<_, Option<i64>>(11)?.map(Timestamp),
        error_message: r.get(12)?,
        created_at: Timestamp(r.get(13)?),
    })
}

pub(super) fn run_by_key(conn: &Connection, id: i64) -> Result<Option<EvalRun>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], run_from_row)
        .optional()?)
}

fn run_key(conn: &Connection, tenant_id: i64, uuid: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM eval_runs WHERE tenant_id = ?1 AND uuid = ?2")?
        .query_row(params![tenant_id, uuid], |r| r.get(0))
        .optional()?)
}

impl Store {
    /// Schedules a run of a dataset's items against one of its versions,
    /// within `max_items` and the month's evaluation `quota` (0: none),
    /// each item counting as one evaluation.
    pub async fn schedule_run(
        &self,
        tenant_id: i64,
        dataset_uuid: String,
        version_uuid: String,
        max_items: u64,
        quota: u64,
    ) -> Result<RunScheduled> {
        self.write_data(move |conn| {
            let Some(dataset_id) = dataset_key(conn, tenant_id, &dataset_uuid)? else {
                return Ok(RunScheduled::NoDataset);
            };
            let version: Option<(i64, bool)> = conn
                .prepare_cached(
                    "SELECT id, judge_model IS NOT NULL FROM eval_versions \
                     WHERE dataset_id = ?1 AND uuid = ?2",
                )?
                .query_row(params![dataset_id, version_uuid], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((version_id, judged)) = version else {
                return Ok(RunScheduled::NoVersion);
            };
            let rules: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM eval_rules r JOIN datasets d ON d.project_id = r.project_id \
                     WHERE d.id = ?1 AND r.enabled",
                )?
                .query_row([dataset_id], |r| r.get(0))?;
            if !judged && rules == 0 {
                return Ok(RunScheduled::NothingScores);
            }
            let count: i64 = conn
                .prepare_cached("SELECT count(*) FROM dataset_items WHERE dataset_id = ?1")?
                .query_row([dataset_id], |r| r.get(0))?;
            let count = count.max(0) as u64;
            if count == 0 {
                return Ok(RunScheduled::Empty);
            }
            if max_items > 0 && count > max_items {
                return Ok(RunScheduled::TooMany { count });
            }
            let now = now_micros();
            if quota > 0 {
                let used = evals_this_month(conn, tenant_id, now)?;
                if used + count > quota {
                    return Ok(RunScheduled::OverQuota { used, count });
                }
            }
            conn.prepare_cached(
                "INSERT INTO eval_runs (uuid, tenant_id, dataset_id, version_id, status, \
                 item_count, created_at) VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6)",
            )?
            .execute(params![
                new_uuid(),
                tenant_id,
                dataset_id,
                version_id,
                count as i64,
                now
            ])?;
            let run_id = conn.last_insert_rowid();
            conn.prepare_cached(
                "INSERT INTO run_items (run_id, item_id, trace_id, status, run_after) \
                 SELECT ?1, id, trace_id, 'pending', ?2 FROM dataset_items \
                 WHERE dataset_id = ?3 ORDER BY id",
            )?
            .execute(params![run_id, now, dataset_id])?;
            count_evals(conn, tenant_id, now, count as i64)?;
            Ok(match run_by_key(conn, run_id)? {
                Some(run) => RunScheduled::Run(Box::new(run)),
                None => RunScheduled::NoDataset,
            })
        })
        .await
    }

    /// A dataset's runs, newest first; `None` when the tenant has no such
    /// dataset.
    pub async fn list_runs(
        &self,
        tenant_id: i64,
        dataset_uuid: String,
        limit: usize,
        offset: usize,
    ) -> Result<Option<Vec<EvalRun>>> {
        self.read(move |conn| {
            let Some(dataset_id) = dataset_key(conn, tenant_id, &dataset_uuid)? else {
                return Ok(None);
            };
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.dataset_id = ?1 \
                 ORDER BY r.id DESC LIMIT ?2 OFFSET ?3"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![dataset_id, limit as i64, offset as i64],
                run_from_row,
            )?;
            Ok(Some(rows.collect::<rusqlite::Result<Vec<_>>>()?))
        })
        .await
    }

    pub async fn get_run(&self, tenant_id: i64, uuid: String) -> Result<Option<EvalRun>> {
        self.read(move |conn| match run_key(conn, tenant_id, &uuid)? {
            Some(id) => run_by_key(conn, id),
            None => Ok(None),
        })
        .await
    }

    /// Cancels a run that has not finished: its waiting items are not run
    /// (those in flight finish). `None` when the tenant has no such run.
    pub async fn cancel_run(&self, tenant_id: i64, uuid: String) -> Result<Option<EvalRun>> {
        self.write(move |conn| {
            let Some(id) = run_key(conn, tenant_id, &uuid)? else {
                return Ok(None);
            };
            let now = now_micros();
            let changed = conn
                .prepare_cached(
                    "UPDATE eval_runs SET status = 'cancelled', completed_at = ?2 \
                     WHERE id = ?1 AND status IN ('pending', 'running')",
                )?
                .execute(params![id, now])?;
            if changed > 0 {
                conn.prepare_cached(
                    "UPDATE run_items SET status = 'cancelled', finished_at = ?2 \
                     WHERE run_id = ?1 AND status = 'pending'",
                )?
                .execute(params![id, now])?;
            }
            let run = run_by_key(conn, id)?;
            if let (true, Some(run)) = (changed > 0, &run) {
                run_finished_event(conn, tenant_id, run)?;
            }
            Ok(run)
        })
        .await
    }

    /// A run and every item's score and reasoning, in the dataset's order,
    /// with at most [`PREVIEW_CHARS`] of each input and no output: what a
    /// diff or a gate compares. `None` when the tenant has no such run.
    pub async fn run_scores(
        &self,
        tenant_id: i64,
        uuid: String,
    ) -> Result<Option<(EvalRun, Vec<RunItemResult>)>> {
        self.read(move |conn| {
            let Some(id) = run_key(conn, tenant_id, &uuid)? else {
                return Ok(None);
            };
            let Some(run) = run_by_key(conn, id)? else {
                return Ok(None);
            };
            let (items, _) = results(conn, id, 0, usize::MAX, Detail::Preview)?;
            Ok(Some((run, items.into_iter().map(|(_, r)| r).collect())))
        })
        .await
    }

    /// A page of a run's items with their scores, input and output, after
    /// the internal id `after`: at most `limit`, fewer when their text
    /// passes [`PAGE_MAX_BYTES`] (never none while items remain), and
    /// whether more follow. `None` when the tenant has no such run.
    pub async fn run_result_page(
        &self,
        tenant_id: i64,
        uuid: String,
        after: i64,
        limit: usize,
    ) -> Result<Option<(Vec<(i64, RunItemResult)>, bool)>> {
        self.read(move |conn| {
            let Some(id) = run_key(conn, tenant_id, &uuid)? else {
                return Ok(None);
            };
            Ok(Some(results(conn, id, after, limit, Detail::Full)?))
        })
        .await
    }
}

/// How much of an item's text a read of results takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// Input and output whole, pages bounded in bytes.
    Full,
    /// The input's first [`PREVIEW_CHARS`] characters, no output.
    Preview,
}

/// The characters of an input a diff shows.
pub const PREVIEW_CHARS: usize = 300;

/// Items of a run after the internal id `after` with their scores, in the
/// dataset's order, and whether more follow.
fn results(
    conn: &Connection,
    run_id: i64,
    after: i64,
    limit: usize,
    detail: Detail,
) -> Result<(Vec<(i64, RunItemResult)>, bool)> {
    let mut items: Vec<(i64, RunItemResult)> = Vec::new();
    let mut more = false;
    {
        let mut stmt = conn.prepare_cached(
            "SELECT ri.id, di.uuid, ri.trace_id, ri.status, di.label, \
             CASE WHEN ?4 THEN substr(di.input, 1, ?5) ELSE di.input END, \
             CASE WHEN ?4 THEN NULL ELSE coalesce(ri.output, di.expected_output) END, \
             ri.score, ri.error \
             FROM run_items ri LEFT JOIN dataset_items di ON di.id = ri.item_id \
             WHERE ri.run_id = ?1 AND ri.id > ?2 ORDER BY ri.id LIMIT ?3",
        )?;
        let preview = detail == Detail::Preview;
        let take = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![run_id, after, take, preview, PREVIEW_CHARS as i64])?;
        let mut bytes = 0usize;
        while let Some(r) = rows.next()? {
            if items.len() == limit {
                more = true;
                break;
            }
            let result = RunItemResult {
                item_id: r.get(1)?,
                trace_id: r.get(2)?,
                status: r.get(3)?,
                label: r.get(4)?,
                input: r.get(5)?,
                output: r.get(6)?,
                score: r.get(7)?,
                error: r.get(8)?,
                scores: Vec::new(),
            };
            let size = result.input.as_ref().map_or(0, String::len)
                + result.output.as_ref().map_or(0, String::len);
            if detail == Detail::Full && !items.is_empty() && bytes + size > PAGE_MAX_BYTES {
                more = true;
                break;
            }
            bytes += size;
            items.push((r.get(0)?, result));
        }
    }
    let (Some((first, _)), Some((last, _))) = (items.first(), items.last()) else {
        return Ok((items, more));
    };
    let mut stmt = conn.prepare_cached(
        "SELECT s.run_item_id, s.uuid, s.metric_name, s.evaluator_type, s.status, s.score, \
         s.label, s.reasoning, s.judge_model, s.created_at \
         FROM run_scores s WHERE s.run_item_id BETWEEN ?1 AND ?2 ORDER BY s.run_item_id, s.id",
    )?;
    let mut rows = stmt.query([*first, *last])?;
    let mut at = 0;
    while let Some(r) = rows.next()? {
        let item: i64 = r.get(0)?;
        // Both are in the items' order.
        while at < items.len() && items[at].0 < item {
            at += 1;
        }
        if at == items.len() {
            break;
        }
        if items[at].0 == item {
            items[at].1.scores.push(RunScore {
                id: r.get(1)?,
                metric_name: r.get(2)?,
                evaluator_type: r.get(3)?,
                status: r.get(4)?,
                score: r.get(5)?,
                label: r.get(6)?,
                reasoning: r.get(7)?,
                judge_model: r.get(8)?,
                created_at: Timestamp(r.get(9)?),
            });
        }
    }
    Ok((items, more))
}

/// The `eval_run.completed` event of a run that ended (completed, failed
/// or cancelled), in the transaction that ended it.
pub(super) fn run_finished_event(conn: &Connection, tenant_id: i64, run: &EvalRun) -> Result<()> {
    let data = serde_json::to_value(run).unwrap_or_default();
    enqueue_event(conn, tenant_id, "eval_run.completed", &data)?;
    Ok(())
}
