//! Data subject requests: the durable rows the privacy worker
//! (`crate::privacy`) works through, and the steps it takes.
//!
//! A subject is matched against three fields of a trace: its external id,
//! its session id, and one key of its metadata (`privacy.subject_metadata_key`).
//! Both kinds of request walk `traces.seq` in windows of a bounded number
//! of rows, looked through on the read connections. An erasure then
//! deletes what it found (checked again) in one writer job that also
//! records how far it got and what it erased, so the writer is held for
//! the deletions only, ingest commits between batches, and a restart
//! resumes from the last commit. An export never holds the writer.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::audit::{self, Actor};
use super::tenancy::new_uuid;
use super::{now_micros, Result, Store};
use crate::model::Timestamp;

/// What a request erased or exported, so far or in all. Beyond the
/// reference, which reports no counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct DsrCounts {
    /// Traces of the subject.
    pub traces: i64,
    /// Their spans.
    pub spans: i64,
    /// Feedback given on them.
    pub feedback: i64,
    /// Evaluations of them.
    pub evaluations: i64,
    /// Dataset items copied from them.
    pub dataset_items: i64,
    /// Results of dataset runs that scored those items (erasure only).
    pub run_items: i64,
    /// Webhook deliveries whose body named one of the traces (erasure only).
    pub webhook_deliveries: i64,
}

impl DsrCounts {
    fn add(&mut self, other: &DsrCounts) {
        self.traces += other.traces;
        self.spans += other.spans;
        self.feedback += other.feedback;
        self.evaluations += other.evaluations;
        self.dataset_items += other.dataset_items;
        self.run_items += other.run_items;
        self.webhook_deliveries += other.webhook_deliveries;
    }
}

/// A data subject request (the reference's `DsrRequest`), with what it
/// erased or exported.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = DsrRequest)]
pub struct DsrRequest {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The organisation's id.
    #[schema(format = "uuid")]
    pub tenant_id: String,
    /// Who submitted it: `user:<email>`.
    #[schema(example = "user:owner@example.com")]
    pub requested_by: String,
    /// Matched against each trace's external id, session id and the
    /// metadata key `privacy.subject_metadata_key` (default `user_id`).
    #[schema(example = "customer-4711")]
    pub subject_id: String,
    /// `delete` (erasure) or `export`.
    #[serde(rename = "type")]
    #[schema(example = "delete")]
    pub kind: String,
    /// `pending`, `processing`, `completed` or `failed`.
    #[schema(example = "completed")]
    pub status: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
    /// Where a completed export is downloaded (`GET /v1/dsr/{id}/export`,
    /// owners' sessions only) until `export_expires_at`; null otherwise.
    #[schema(example = "/v1/dsr/0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d/export")]
    pub export_url: Option<String>,
    /// Set only when `status = failed`.
    pub error_msg: Option<String>,
    /// Beyond the reference: what was erased (a `delete`) or exported (an
    /// `export`), so far while it is processing.
    pub counts: DsrCounts,
    /// Beyond the reference: the size of the export file, in bytes.
    pub export_bytes: Option<i64>,
    /// Beyond the reference: when the export file is (or was) deleted.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub export_expires_at: Option<Timestamp>,
}

/// A request the worker takes up.
#[derive(Debug, Clone)]
pub struct DsrWork {
    pub id: i64,
    pub uuid: String,
    pub tenant_id: i64,
    pub subject_id: String,
    /// `delete` or `export`.
    pub kind: String,
    /// How far an erasure has looked through `traces.seq`.
    pub cursor_seq: i64,
    pub counts: DsrCounts,
}

/// One step of an export: the JSON lines of the subject's traces (and the
/// dataset items made of them) in a window of `traces.seq`.
#[derive(Debug, Default)]
pub struct ExportChunk {
    pub lines: String,
    pub counts: DsrCounts,
    /// Where the next step starts.
    pub next_seq: i64,
    /// No traces after this window.
    pub done: bool,
}

/// How a request ended.
#[derive(Debug, Clone)]
pub enum DsrOutcome {
    Erased,
    Exported {
        file: String,
        bytes: i64,
        counts: DsrCounts,
        expires_at: i64,
    },
    Failed(String),
}

const COLUMNS: &str = "r.id, r.uuid, r.created_at, r.updated_at, ten.uuid, r.requested_by, \
    r.subject_id, r.type, r.status, r.completed_at, r.export_file, r.error_msg, r.counts, \
    r.export_bytes, r.export_expires_at";
const FROM: &str = "dsr_requests r JOIN tenants ten ON ten.id = r.tenant_id";

fn request_from_row(r: &Row<'_>) -> rusqlite::Result<(i64, DsrRequest)> {
    let uuid: String = r.get(1)?;
    let file: Option<String> = r.get(10)?;
    let counts: String = r.get(12)?;
    Ok((
        r.get(0)?,
        DsrRequest {
            export_url: file.map(|_| format!("/v1/dsr/{uuid}/export")),
            id: uuid,
            created_at: Timestamp(r.get(2)?),
            updated_at: Timestamp(r.get(3)?),
            tenant_id: r.get(4)?,
            requested_by: r.get(5)?,
            subject_id: r.get(6)?,
            kind: r.get(7)?,
            status: r.get(8)?,
            completed_at: r.get::<_, Option<i64>>(9)?.map(Timestamp),
            error_msg: r.get(11)?,
            counts: serde_json::from_str(&counts).unwrap_or_default(),
            export_bytes: r.get(13)?,
            export_expires_at: r.get::<_, Option<i64>>(14)?.map(Timestamp),
        },
    ))
}

fn by_key(conn: &Connection, id: i64) -> Result<Option<DsrRequest>> {
    let sql = format!("SELECT {COLUMNS} FROM {FROM} WHERE r.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], request_from_row)
        .optional()?
        .map(|(_, request)| request))
}

/// The SQL that picks the subject's traces (alias `t`): `?1` the tenant,
/// `?2` the subject, `?3` the metadata path (null: metadata is not looked at).
/// The callers bound `t.seq`; the unary `+` keeps the planner off the
/// tenant's time index, which would walk all the tenant's traces instead
/// of the window (a hundred times slower at 200,000 traces).
const MATCH: &str = "+t.tenant_id = ?1 AND (t.external_id = ?2 OR t.session_id = ?2 \
    OR (?3 IS NOT NULL AND json_valid(unpack(t.metadata)) \
        AND CAST(json_extract(unpack(t.metadata), ?3) AS TEXT) = ?2))";

/// The JSON path of a metadata key; `None` for an empty key.
pub fn metadata_path(key: &str) -> Option<String> {
    (!key.is_empty()).then(|| format!("$.\"{key}\""))
}

/// The last seq of the next window of at most `window` traces after
/// `after`, all tenants together; `None` when there are none.
fn window_end(conn: &Connection, after: i64, window: usize) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT max(seq) FROM (SELECT seq FROM traces WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
        )?
        .query_row(params![after, window as i64], |r| r.get(0))?)
}

/// The subject's traces (seq, id) in `(after, end]`, at most `limit`.
fn matching(
    conn: &Connection,
    work: (i64, &str, Option<&str>),
    after: i64,
    end: i64,
    limit: usize,
) -> Result<Vec<(i64, String)>> {
    let (tenant_id, subject, path) = work;
    let sql = format!(
        "SELECT t.seq, t.id FROM traces t WHERE t.seq > ?4 AND t.seq <= ?5 AND {MATCH} \
         ORDER BY t.seq LIMIT ?6"
    );
    let found = conn
        .prepare_cached(&sql)?
        .query_map(
            params![tenant_id, subject, path, after, end, limit as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(found)
}

/// Those of `found` (seq, id) that are still the subject's.
fn still_matching(
    conn: &Connection,
    work: (i64, &str, Option<&str>),
    found: &[(i64, String)],
) -> Result<Vec<(i64, String)>> {
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let (tenant_id, subject, path) = work;
    let seqs: Vec<i64> = found.iter().map(|(seq, _)| *seq).collect();
    let list = serde_json::to_string(&seqs).unwrap_or_else(|_| "[]".into());
    let sql = format!(
        "SELECT t.seq, t.id FROM traces t WHERE t.seq IN (SELECT value FROM json_each(?4)) \
         AND {MATCH} ORDER BY t.seq"
    );
    let still = conn
        .prepare_cached(&sql)?
        .query_map(params![tenant_id, subject, path, list], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(still)
}

fn count_in(conn: &Connection, sql: &str, list: &str) -> Result<i64> {
    Ok(conn.prepare_cached(sql)?.query_row([list], |r| r.get(0))?)
}

/// The cleanups of what other tables keep of erased traces, found by the
/// traces' ids: dataset items (their copied input and output), the dataset
/// run results scored from them, and webhook deliveries whose body names
/// one of them. Every per-trace cleanup of an erasure goes here; a table
/// that keeps trace ids or text of its own adds its deletion here.
pub(super) fn forget_trace_copies(
    conn: &Connection,
    tenant_id: i64,
    trace_ids: &[String],
) -> Result<DsrCounts> {
    let mut counts = DsrCounts::default();
    if trace_ids.is_empty() {
        return Ok(counts);
    }
    let list = serde_json::to_string(trace_ids).unwrap_or_else(|_| "[]".into());
    // Runs still going whose items go: once none is left to do, they end.
    let open_runs: Vec<i64> = conn
        .prepare_cached(
            "SELECT DISTINCT run_id FROM run_items WHERE trace_id IN (SELECT value FROM json_each(?2)) \
             AND run_id IN (SELECT id FROM eval_runs WHERE tenant_id = ?1 \
                            AND status IN ('pending', 'running'))",
        )?
        .query_map(params![tenant_id, list], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // Run results first: removing the items would only unlink them.
    counts.run_items = conn
        .prepare_cached(
            "DELETE FROM run_items WHERE trace_id IN (SELECT value FROM json_each(?2)) \
             AND run_id IN (SELECT id FROM eval_runs WHERE tenant_id = ?1)",
        )?
        .execute(params![tenant_id, list])? as i64;
    let now = now_micros();
    for run in open_runs {
        // A run not started whose every item went has nothing to start on.
        conn.prepare_cached(
            "UPDATE eval_runs SET status = 'running', started_at = coalesce(started_at, ?2) \
             WHERE id = ?1 AND status = 'pending' AND NOT EXISTS \
             (SELECT 1 FROM run_items WHERE run_id = ?1 AND status IN ('pending', 'running'))",
        )?
        .execute(params![run, now])?;
        super::run_queue::finish_run(conn, run, now)?;
    }
    counts.dataset_items = conn
        .prepare_cached(
            "DELETE FROM dataset_items WHERE tenant_id = ?1 \
             AND trace_id IN (SELECT value FROM json_each(?2))",
        )?
        .execute(params![tenant_id, list])? as i64;
    counts.webhook_deliveries = conn
        .prepare_cached(
            "DELETE FROM webhook_deliveries \
             WHERE webhook_id IN (SELECT id FROM webhooks WHERE tenant_id = ?1) \
             AND EXISTS (SELECT 1 FROM json_each(?2) j WHERE instr(payload, j.value) > 0)",
        )?
        .execute(params![tenant_id, list])? as i64;
    Ok(counts)
}

/// Erases the traces of `seqs` (with ids `ids`) of the tenant and every
/// copy of them; returns what went.
fn erase(conn: &Connection, tenant_id: i64, found: &[(i64, String)]) -> Result<DsrCounts> {
    let seqs: Vec<i64> = found.iter().map(|(seq, _)| *seq).collect();
    let ids: Vec<String> = found.iter().map(|(_, id)| id.clone()).collect();
    let list = serde_json::to_string(&seqs).unwrap_or_else(|_| "[]".into());
    let in_list = "IN (SELECT value FROM json_each(?1))";
    let spans = count_in(
        conn,
        &format!("SELECT count(*) FROM spans WHERE trace_seq {in_list}"),
        &list,
    )?;
    let feedback = count_in(
        conn,
        &format!("SELECT count(*) FROM feedback WHERE trace_seq {in_list}"),
        &list,
    )?;
    let evaluations = count_in(
        conn,
        &format!("SELECT count(*) FROM evaluations WHERE trace_seq {in_list}"),
        &list,
    )?;
    let mut counts = forget_trace_copies(conn, tenant_id, &ids)?;
    counts.traces = super::purge::delete_traces(conn, &seqs)? as i64;
    counts.spans = spans;
    counts.feedback = feedback;
    counts.evaluations = evaluations;
    Ok(counts)
}

fn save_progress(conn: &Connection, id: i64, cursor: i64, counts: &DsrCounts) -> Result<()> {
    conn.prepare_cached(
        "UPDATE dsr_requests SET cursor_seq = ?2, counts = ?3, updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![
        id,
        cursor,
        serde_json::to_string(counts).unwrap_or_else(|_| "{}".into()),
        now_micros()
    ])?;
    Ok(())
}

impl Store {
    /// Creates a pending request; the creation is audited without the
    /// subject's id.
    pub async fn create_dsr(
        &self,
        tenant_id: i64,
        subject_id: String,
        kind: &'static str,
        by: Actor,
    ) -> Result<DsrRequest> {
        self.write(move |conn| {
            let uuid = new_uuid();
            let now = now_micros();
            conn.prepare_cached(
                "INSERT INTO dsr_requests (uuid, tenant_id, requested_by, subject_id, type, \
                 status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)",
            )?
            .execute(params![uuid, tenant_id, by.name, subject_id, kind, now])?;
            let id = conn.last_insert_rowid();
            audit::record(
                conn,
                tenant_id,
                &by,
                "dsr.create",
                Some(&uuid),
                serde_json::json!({ "type": kind }),
            )?;
            by_key(conn, id)?.ok_or_else(|| super::StoreError::Corrupt("dsr row vanished".into()))
        })
        .await
    }

    /// The tenant's requests, newest first, before the internal id `before`.
    pub async fn list_dsr(
        &self,
        tenant_id: i64,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<(i64, DsrRequest)>, bool)> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM {FROM} WHERE r.tenant_id = ?1 AND r.id < ?2 \
                 ORDER BY r.id DESC LIMIT ?3"
            );
            let mut rows = conn
                .prepare_cached(&sql)?
                .query_map(
                    params![tenant_id, before.unwrap_or(i64::MAX), limit as i64 + 1],
                    request_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            Ok((rows, more))
        })
        .await
    }

    /// One request of the tenant.
    pub async fn get_dsr(&self, tenant_id: i64, uuid: String) -> Result<Option<DsrRequest>> {
        self.read(move |conn| {
            let sql =
                format!("SELECT {COLUMNS} FROM {FROM} WHERE r.tenant_id = ?1 AND r.uuid = ?2");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![tenant_id, uuid], request_from_row)
                .optional()?
                .map(|(_, request)| request))
        })
        .await
    }

    /// The export file of one of the tenant's requests, while it is kept.
    pub async fn dsr_export_file(&self, tenant_id: i64, uuid: String) -> Result<Option<String>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT export_file FROM dsr_requests WHERE tenant_id = ?1 AND uuid = ?2 \
                     AND status = 'completed'",
                )?
                .query_row(params![tenant_id, uuid], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten())
        })
        .await
    }

    /// The oldest request not finished, now `processing`. Looked for on a
    /// read connection first, so an idle server's polls never take the
    /// writer.
    pub async fn next_dsr(&self) -> Result<Option<DsrWork>> {
        let open: bool = self
            .read(|conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM dsr_requests \
                         WHERE status IN ('pending', 'processing'))",
                    )?
                    .query_row([], |r| r.get(0))?)
            })
            .await?;
        if !open {
            return Ok(None);
        }
        self.write(|conn| {
            let found = conn
                .prepare_cached(
                    "SELECT id, uuid, tenant_id, subject_id, type, cursor_seq, counts \
                     FROM dsr_requests WHERE status IN ('pending', 'processing') \
                     ORDER BY id LIMIT 1",
                )?
                .query_row([], |r| {
                    let counts: String = r.get(6)?;
                    Ok(DsrWork {
                        id: r.get(0)?,
                        uuid: r.get(1)?,
                        tenant_id: r.get(2)?,
                        subject_id: r.get(3)?,
                        kind: r.get(4)?,
                        cursor_seq: r.get(5)?,
                        counts: serde_json::from_str(&counts).unwrap_or_default(),
                    })
                })
                .optional()?;
            if let Some(work) = &found {
                conn.prepare_cached(
                    "UPDATE dsr_requests SET status = 'processing', updated_at = ?2 \
                     WHERE id = ?1 AND status = 'pending'",
                )?
                .execute(params![work.id, now_micros()])?;
            }
            Ok(found)
        })
        .await
    }

    /// One step of an erasure: looks at the next `window` traces after the
    /// request's cursor on a read connection, then erases the subject's
    /// among them, at most `batch`, with everything of them, in one writer
    /// job that also moves the cursor and adds to the counts. The writer
    /// holds its lock for the deletions only, never for the scan. True
    /// when no trace was left to look at. `work` is brought up to date.
    pub async fn erase_step(
        &self,
        work: &mut DsrWork,
        metadata_path: Option<String>,
        window: usize,
        batch: usize,
    ) -> Result<bool> {
        let (id, tenant_id, cursor) = (work.id, work.tenant_id, work.cursor_seq);
        let (subject, path) = (work.subject_id.clone(), metadata_path.clone());
        let Some((found, next)) = self
            .read(move |conn| {
                let Some(end) = window_end(conn, cursor, window)? else {
                    return Ok(None);
                };
                let found = matching(
                    conn,
                    (tenant_id, &subject, path.as_deref()),
                    cursor,
                    end,
                    batch,
                )?;
                // A full batch may leave more of the window: go on after it.
                let next = match found.last() {
                    Some((seq, _)) if found.len() == batch => *seq,
                    _ => end,
                };
                Ok(Some((found, next)))
            })
            .await?
        else {
            return Ok(true);
        };
        let subject = work.subject_id.clone();
        let counts = self
            .write(move |conn| {
                let counts: String = conn
                    .prepare_cached("SELECT counts FROM dsr_requests WHERE id = ?1")?
                    .query_row([id], |r| r.get(0))?;
                let mut counts: DsrCounts = serde_json::from_str(&counts).unwrap_or_default();
                // What was read may have changed since: erase what still matches.
                let still = still_matching(
                    conn,
                    (tenant_id, &subject, metadata_path.as_deref()),
                    &found,
                )?;
                counts.add(&erase(conn, tenant_id, &still)?);
                save_progress(conn, id, next, &counts)?;
                Ok(counts)
            })
            .await?;
        work.cursor_seq = next;
        work.counts = counts;
        Ok(false)
    }

    /// One step of an export: the subject's traces after `after` in the
    /// next `window` traces, whole (spans, events, feedback, evaluations),
    /// and the dataset items made of them, as JSON lines; it stops early
    /// past `max_bytes`.
    pub async fn export_step(
        &self,
        tenant_id: i64,
        subject: String,
        metadata_path: Option<String>,
        after: i64,
        window: usize,
        max_bytes: usize,
    ) -> Result<ExportChunk> {
        self.read(move |conn| {
            let mut chunk = ExportChunk {
                next_seq: after,
                ..Default::default()
            };
            let Some(end) = window_end(conn, after, window)? else {
                chunk.done = true;
                return Ok(chunk);
            };
            let found = matching(
                conn,
                (tenant_id, &subject, metadata_path.as_deref()),
                after,
                end,
                window,
            )?;
            chunk.next_seq = end;
            let mut ids = Vec::new();
            for (seq, id) in found {
                let Some(trace) = super::traces::detail(conn, tenant_id, &id)? else {
                    continue;
                };
                chunk.counts.traces += 1;
                chunk.counts.spans += trace.spans.as_ref().map_or(0, Vec::len) as i64;
                chunk.counts.feedback += trace.feedback.as_ref().map_or(0, Vec::len) as i64;
                chunk.counts.evaluations += trace.evaluations.as_ref().map_or(0, Vec::len) as i64;
                let line = serde_json::json!({ "type": "trace", "trace": trace });
                chunk.lines.push_str(&line.to_string());
                chunk.lines.push('\n');
                ids.push(id);
                if chunk.lines.len() >= max_bytes {
                    chunk.next_seq = seq;
                    break;
                }
            }
            if !ids.is_empty() {
                let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
                let sql = format!(
                    "SELECT {} FROM {} WHERE i.tenant_id = ?1 \
                     AND i.trace_id IN (SELECT value FROM json_each(?2)) ORDER BY i.id",
                    super::datasets::ITEM_COLUMNS,
                    super::datasets::ITEM_FROM
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query(params![tenant_id, list])?;
                while let Some(row) = rows.next()? {
                    let (_, item) = super::datasets::item_from_row(row)?;
                    chunk.counts.dataset_items += 1;
                    let line = serde_json::json!({ "type": "dataset_item", "item": item });
                    chunk.lines.push_str(&line.to_string());
                    chunk.lines.push('\n');
                }
            }
            Ok(chunk)
        })
        .await
    }

    /// Ends a request: completed (an erasure, or an export with its file)
    /// or failed. The end is audited with the counts, never the subject.
    pub async fn finish_dsr(&self, id: i64, outcome: DsrOutcome) -> Result<Option<DsrRequest>> {
        self.write(move |conn| {
            let now = now_micros();
            let (tenant_id, uuid, kind, counts): (i64, String, String, String) = conn
                .prepare_cached(
                    "SELECT tenant_id, uuid, type, counts FROM dsr_requests WHERE id = ?1",
                )?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            let mut counts: DsrCounts = serde_json::from_str(&counts).unwrap_or_default();
            let (action, details) = match &outcome {
                DsrOutcome::Erased => {
                    conn.prepare_cached(
                        "UPDATE dsr_requests SET status = 'completed', completed_at = ?2, \
                         updated_at = ?2 WHERE id = ?1",
                    )?
                    .execute(params![id, now])?;
                    (
                        "dsr.complete",
                        serde_json::json!({ "type": kind, "counts": counts }),
                    )
                }
                DsrOutcome::Exported {
                    file,
                    bytes,
                    counts: exported,
                    expires_at,
                } => {
                    counts = *exported;
                    conn.prepare_cached(
                        "UPDATE dsr_requests SET status = 'completed', completed_at = ?2, \
                         updated_at = ?2, export_file = ?3, export_bytes = ?4, \
                         export_expires_at = ?5, counts = ?6 WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        now,
                        file,
                        bytes,
                        expires_at,
                        serde_json::to_string(&counts).unwrap_or_else(|_| "{}".into())
                    ])?;
                    (
                        "dsr.complete",
                        serde_json::json!({ "type": kind, "counts": counts, "bytes": bytes }),
                    )
                }
                DsrOutcome::Failed(why) => {
                    conn.prepare_cached(
                        "UPDATE dsr_requests SET status = 'failed', completed_at = ?2, \
                         updated_at = ?2, error_msg = ?3 WHERE id = ?1",
                    )?
                    .execute(params![id, now, why])?;
                    (
                        "dsr.fail",
                        serde_json::json!({ "type": kind, "counts": counts, "error": why }),
                    )
                }
            };
            audit::record(
                conn,
                tenant_id,
                &Actor::server(),
                action,
                Some(&uuid),
                details,
            )?;
            by_key(conn, id)
        })
        .await
    }

    /// Export files whose keep time ended by `now`: request id and file.
    pub async fn expired_dsr_exports(&self, now: i64) -> Result<Vec<(i64, String)>> {
        self.read(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT id, export_file FROM dsr_requests \
                     WHERE export_file IS NOT NULL AND export_expires_at <= ?1 ORDER BY id",
                )?
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(found)
        })
        .await
    }

    /// Forgets a request's export file (deleted, or about to be).
    pub async fn drop_dsr_export(&self, id: i64) -> Result<()> {
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE dsr_requests SET export_file = NULL, updated_at = ?2 WHERE id = ?1",
            )?
            .execute(params![id, now_micros()])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace of tenant 1 with `external_id`; returns its seq.
    fn add_trace(conn: &Connection, id: &str, external_id: &str) -> i64 {
        conn.execute(
            "INSERT INTO traces (tenant_id, project_id, id, external_id, input, started_at, \
             created_at, content_hash) VALUES (1, 1, ?1, ?2, 'text', 1, 1, x'00')",
            params![id, external_id],
        )
        .expect("trace");
        conn.last_insert_rowid()
    }

    /// Copies of both traces in a dataset item, a run's result and a
    /// webhook delivery; erasing one trace takes its copies and no others.
    #[test]
    fn erasing_a_trace_takes_its_copies_elsewhere_and_no_others() {
        let (_dir, conn) = crate::store::test_database();
        let gone = add_trace(&conn, "trace-gone", "alice");
        add_trace(&conn, "trace-kept", "bob");
        conn.execute_batch(
            "INSERT INTO datasets (id, uuid, tenant_id, project_id, name, created_at, updated_at)
             VALUES (1, 'd', 1, 1, 'd', 0, 0);
             INSERT INTO dataset_items (id, uuid, dataset_id, tenant_id, trace_id, input,
                 created_at, updated_at)
             VALUES (1, 'i1', 1, 1, 'trace-gone', 'text', 0, 0),
                    (2, 'i2', 1, 1, 'trace-kept', 'text', 0, 0);
             INSERT INTO eval_versions (id, uuid, dataset_id, tenant_id, name, created_at)
             VALUES (1, 'v', 1, 1, 'v', 0);
             INSERT INTO eval_runs (id, uuid, tenant_id, dataset_id, version_id, status,
                 item_count, created_at)
             VALUES (1, 'r', 1, 1, 1, 'completed', 2, 0),
                    (2, 'r2', 1, 1, 1, 'running', 2, 0);
             INSERT INTO run_items (id, run_id, item_id, trace_id, status, output, run_after)
             VALUES (1, 1, 1, 'trace-gone', 'complete', 'answer', 0),
                    (2, 1, 2, 'trace-kept', 'complete', 'answer', 0),
                    (3, 2, 2, 'trace-kept', 'complete', 'answer', 0),
                    (4, 2, 1, 'trace-gone', 'pending', NULL, 0);
             INSERT INTO run_scores (uuid, run_item_id, metric_name, evaluator_type, status,
                 reasoning, created_at)
             VALUES ('s1', 1, 'm', 'rule', 'complete', 'why', 0),
                    ('s2', 2, 'm', 'rule', 'complete', 'why', 0);
             INSERT INTO webhooks (id, uuid, tenant_id, url, secret, events, enabled,
                 created_at, updated_at)
             VALUES (1, 'w', 1, 'http://x', 'secretsecretsecret', '[]', 1, 0, 0);
             INSERT INTO webhook_deliveries (uuid, webhook_id, event_type, payload, status,
                 next_attempt_at, created_at, updated_at)
             VALUES ('d1', 1, 'failure.detected', '{\"trace_id\":\"trace-gone\"}', 'pending', 0, 0, 0),
                    ('d2', 1, 'failure.detected', '{\"trace_id\":\"trace-kept\"}', 'pending', 0, 0, 0);",
        )
        .expect("copies");
        let path = metadata_path("user_id");
        let found = matching(&conn, (1, "alice", path.as_deref()), 0, 10, 10).expect("match");
        assert_eq!(found, [(gone, "trace-gone".to_owned())]);
        let counts = erase(&conn, 1, &found).expect("erase");
        assert_eq!(
            counts,
            DsrCounts {
                traces: 1,
                dataset_items: 1,
                run_items: 2,
                webhook_deliveries: 1,
                ..Default::default()
            }
        );
        let left = |sql: &str| -> String { conn.query_row(sql, [], |r| r.get(0)).expect("query") };
        assert_eq!(left("SELECT group_concat(id) FROM traces"), "trace-kept");
        assert_eq!(
            left("SELECT group_concat(trace_id) FROM dataset_items"),
            "trace-kept"
        );
        assert_eq!(
            left("SELECT group_concat(trace_id) FROM run_items"),
            "trace-kept,trace-kept"
        );
        // The run whose last open item went ends.
        assert_eq!(
            left("SELECT status FROM eval_runs WHERE id = 2"),
            "completed"
        );
        assert_eq!(left("SELECT group_concat(uuid) FROM run_scores"), "s2");
        assert_eq!(
            left("SELECT group_concat(uuid) FROM webhook_deliveries"),
            "d2"
        );
    }

    #[test]
    fn the_subject_is_matched_by_external_id_session_and_the_metadata_key_only() {
        let (_dir, conn) = crate::store::test_database();
        conn.execute_batch(
            "INSERT INTO traces (tenant_id, project_id, id, external_id, session_id, metadata,
                 started_at, created_at, content_hash) VALUES
             (1, 1, 'by-external', 'x-1', NULL, '{}', 1, 1, x'00'),
             (1, 1, 'by-session', NULL, 'x-1', '{}', 1, 1, x'00'),
             (1, 1, 'by-metadata', NULL, NULL, '{\"user_id\":\"x-1\"}', 1, 1, x'00'),
             (1, 1, 'by-number', NULL, NULL, '{\"user_id\":42}', 1, 1, x'00'),
             (1, 1, 'other-key', NULL, NULL, '{\"owner\":\"x-1\"}', 1, 1, x'00'),
             (1, 1, 'not-json', NULL, NULL, 'x-1', 1, 1, x'00'),
             (2, 1, 'other-tenant', 'x-1', NULL, '{}', 1, 1, x'00');",
        )
        .expect("traces");
        let ids = |subject: &str, key: &str| -> Vec<String> {
            let path = metadata_path(key);
            matching(&conn, (1, subject, path.as_deref()), 0, 100, 100)
                .expect("match")
                .into_iter()
                .map(|(_, id)| id)
                .collect()
        };
        assert_eq!(
            ids("x-1", "user_id"),
            ["by-external", "by-session", "by-metadata"]
        );
        assert_eq!(ids("42", "user_id"), ["by-number"]);
        assert_eq!(
            ids("x-1", "owner"),
            ["by-external", "by-session", "other-key"]
        );
        assert_eq!(ids("x-1", ""), ["by-external", "by-session"]);
    }
}
