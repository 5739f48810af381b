//! Storing traces from JSON ingest: each trace with its tags, spans and
//! events, a whole request in one writer job, idempotent by id and content.
//! The span and event writers are shared with OTLP ingest (`otel`).

use rusqlite::{params, Connection};

use super::codec::{stored, PackedTexts, Packer};
use super::failure_clusters::Failure;
use super::rollups::{self, Contribution};
use super::{now_micros, Result, Store, StoreError};
use crate::failures::TraceFailure;
use crate::model::{NewEvent, NewSpan, NewTrace};

/// What happened to one trace of an ingest request.
#[derive(Debug, Clone, PartialEq)]
pub enum InsertOutcome {
    Created {
        id: String,
        created_at: i64,
    },
    /// The same content was stored before (a retry); nothing changed.
    Duplicate {
        id: String,
    },
}

impl Store {
    /// Stores `traces` for `tenant_id` atomically: either every trace is
    /// created or found to be an identical retry, or nothing is written and
    /// the conflicting trace is named.
    #[tracing::instrument(skip_all, fields(tenant_id, traces = traces.len()))]
    pub async fn insert_traces(
        &self,
        tenant_id: i64,
        traces: Vec<(i64, NewTrace)>,
    ) -> Result<Vec<InsertOutcome>> {
        // Classified here, not on the writer's thread.
        let failures: Vec<TraceFailure> = traces.iter().map(|(_, t)| failure_of(t)).collect();
        // Packed here too, for the same reason.
        let packed: Vec<PackedTrace> = {
            let mut packer = self.codec.packer(tenant_id);
            traces
                .iter()
                .map(|(_, t)| PackedTrace::of(&mut packer, t))
                .collect()
        };
        let outcomes = self
            .write_data(move |conn| {
                let created_at = now_micros();
                let mut statements = InsertStatements::prepare(conn)?;
                let outcomes = traces
                    .iter()
                    .zip(&failures)
                    .zip(&packed)
                    .map(|(((project_id, trace), failure), packed)| {
                        insert_one(
                            conn,
                            &mut statements,
                            tenant_id,
                            *project_id,
                            (trace, packed),
                            failure,
                            created_at,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let added: Vec<(Contribution, i64)> = traces
                    .iter()
                    .zip(&outcomes)
                    .zip(&failures)
                    .filter(|((_, o), _)| matches!(o, InsertOutcome::Created { .. }))
                    .map(|(((project_id, t), _), failure)| {
                        let c = Contribution {
                            project_id: *project_id,
                            started_at: t.started_at,
                            model: t.model.clone(),
                            error: t.error.is_some(),
                            cost: t.cost,
                            tokens: t.total_token_count,
                            latency_ms: t.latency_ms,
                            failure: failure.shape.as_ref().map(|s| Failure {
                                fingerprint: s.fingerprint,
                                message: s.text.clone(),
                            }),
                        };
                        (c, 1)
                    })
                    .collect();
                rollups::apply(conn, tenant_id, &added)?;
                count_usage(conn, tenant_id, created_at, added.len() as i64)?;
                Ok(outcomes)
            })
            .await;
        self.note_stored();
        outcomes
    }
}

/// A trace's failure: its error's shape and its class, from its error or
/// else its first failing span (by start time).
fn failure_of(t: &NewTrace) -> TraceFailure {
    let mut spans: Vec<&NewSpan> = t.spans.iter().filter(|s| s.error.is_some()).collect();
    spans.sort_by_key(|s| s.start_time);
    TraceFailure::of(
        t.error.as_deref(),
        Some(&t.metadata),
        spans
            .into_iter()
            .map(|s| (s.error.as_deref(), Some(s.metadata.as_str()))),
    )
}

/// A trace's texts and its spans', packed before the writer takes them.
struct PackedTrace {
    texts: PackedTexts,
    spans: Vec<PackedTexts>,
}

impl PackedTrace {
    fn of(packer: &mut Packer, t: &NewTrace) -> Self {
        PackedTrace {
            texts: PackedTexts::of(
                packer,
                t.input.as_deref(),
                t.output.as_deref(),
                Some(&t.metadata),
            ),
            spans: pack_spans(packer, &t.spans),
        }
    }
}

/// The texts of `spans`, packed, in their order.
pub(super) fn pack_spans(packer: &mut Packer, spans: &[NewSpan]) -> Vec<PackedTexts> {
    spans
        .iter()
        .map(|s| {
            PackedTexts::of(
                packer,
                s.input.as_deref(),
                s.output.as_deref(),
                Some(&s.metadata),
            )
        })
        .collect()
}

/// The statements a batch of traces is stored with, prepared once for the
/// batch rather than looked up in the statement cache for every trace.
struct InsertStatements<'c> {
    trace: rusqlite::CachedStatement<'c>,
    tag: rusqlite::CachedStatement<'c>,
    span: rusqlite::CachedStatement<'c>,
    session: rusqlite::CachedStatement<'c>,
}

impl<'c> InsertStatements<'c> {
    fn prepare(conn: &'c Connection) -> Result<Self> {
        Ok(InsertStatements {
            // No RETURNING: SQLite runs it as a trigger, which makes the
            // insert keep a statement journal, a copy of every page it touches.
            trace: conn.prepare_cached(
                "INSERT INTO traces (tenant_id, project_id, id, session_id, external_id, name, \
                 input, output, model, latency_ms, cost, error, tags, tag_map, metadata, \
                 total_token_count, span_count, started_at, ended_at, created_at, content_hash, \
                 failure_type, error_fingerprint) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18, ?19, ?20, ?21, ?22, ?23) ON CONFLICT (tenant_id, id) DO NOTHING",
            )?,
            tag: conn.prepare_cached(
                "INSERT INTO trace_tags (trace_seq, tenant_id, key, value, started_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            span: conn.prepare_cached(SPAN_INSERT)?,
            session: conn.prepare_cached(super::session_lookup::QUEUE)?,
        })
    }
}

fn insert_one(
    conn: &Connection,
    statements: &mut InsertStatements<'_>,
    tenant_id: i64,
    project_id: i64,
    (t, packed): (&NewTrace, &PackedTrace),
    failure: &TraceFailure,
    created_at: i64,
) -> Result<InsertOutcome> {
    let tags = (!t.tags.is_empty()).then(|| json_text(&t.tags));
    let tag_map = (!t.tag_map.is_empty()).then(|| json_text(&t.tag_map));
    // The common case, a new trace, costs one index probe: the insert itself.
    let inserted = statements.trace.execute(params![
        tenant_id,
        project_id,
        t.id,
        t.session_id,
        t.external_id,
        t.name,
        stored(t.input.as_deref(), &packed.texts.input),
        stored(t.output.as_deref(), &packed.texts.output),
        t.model,
        t.latency_ms,
        t.cost,
        t.error,
        tags,
        tag_map,
        stored(Some(&t.metadata), &packed.texts.metadata),
        t.total_token_count,
        t.spans.len() as i64,
        t.started_at,
        t.ended_at,
        created_at,
        &t.content_hash[..],
        failure.class,
        failure.shape.as_ref().map(|s| s.fingerprint),
    ])?;
    if inserted == 0 {
        let stored: Vec<u8> = conn
            .prepare_cached("SELECT content_hash FROM traces WHERE tenant_id = ?1 AND id = ?2")?
            .query_row(params![tenant_id, t.id], |r| r.get(0))?;
        return if stored == t.content_hash {
            Ok(InsertOutcome::Duplicate { id: t.id.clone() })
        } else {
            Err(StoreError::Conflict(format!(
                "trace {} already exists with different content",
                t.id
            )))
        };
    }
    let seq = conn.last_insert_rowid();
    super::session_lookup::queue(
        &mut statements.session,
        seq,
        tenant_id,
        project_id,
        t.session_id.as_deref(),
        t.started_at,
    )?;
    for (key, value) in &t.tag_map {
        statements
            .tag
            .execute(params![seq, tenant_id, key, value, t.started_at])?;
    }
    insert_spans(
        &mut statements.span,
        seq,
        &t.spans,
        &packed.spans,
        created_at,
    )?;
    write_events(conn, seq, &t.events)?;
    Ok(InsertOutcome::Created {
        id: t.id.clone(),
        created_at,
    })
}

/// The month (`YYYY-MM`, UTC) a time in microseconds falls in.
pub fn usage_month(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m").to_string())
        .unwrap_or_default()
}

/// Adds `traces` new traces to the tenant's count for the current month.
pub(super) fn count_usage(conn: &Connection, tenant_id: i64, now: i64, traces: i64) -> Result<()> {
    if traces == 0 {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO usage (tenant_id, month, traces) VALUES (?1, ?2, ?3) \
         ON CONFLICT (tenant_id, month) DO UPDATE SET traces = traces + excluded.traces",
    )?
    .execute(params![tenant_id, usage_month(now), traces])?;
    Ok(())
}

const SPAN_INSERT: &str = "INSERT INTO spans (trace_seq, id, parent_span_id, name, type, input, \
     output, model, latency_ms, cost, error, prompt_tokens, completion_tokens, metadata, \
     start_time, end_time, otel_trace_id, otel_span_id, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";

/// A span sent again replaces the stored one (OTLP exporters retry).
const SPAN_UPSERT: &str = "INSERT INTO spans (trace_seq, id, parent_span_id, name, type, input, \
     output, model, latency_ms, cost, error, prompt_tokens, completion_tokens, metadata, \
     start_time, end_time, otel_trace_id, otel_span_id, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) \
     ON CONFLICT (trace_seq, id) DO UPDATE SET parent_span_id = excluded.parent_span_id, \
     name = excluded.name, type = excluded.type, input = excluded.input, \
     output = excluded.output, model = excluded.model, latency_ms = excluded.latency_ms, \
     cost = excluded.cost, error = excluded.error, prompt_tokens = excluded.prompt_tokens, \
     completion_tokens = excluded.completion_tokens, metadata = excluded.metadata, \
     start_time = excluded.start_time, end_time = excluded.end_time, \
     otel_trace_id = excluded.otel_trace_id, otel_span_id = excluded.otel_span_id";

/// Stores the spans of trace `seq`; with `replace`, a span already stored
/// under the same id is overwritten instead of being a conflict.
pub(super) fn write_spans(
    conn: &Connection,
    seq: i64,
    (spans, packed): (&[NewSpan], &[PackedTexts]),
    created_at: i64,
    replace: bool,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(if replace { SPAN_UPSERT } else { SPAN_INSERT })?;
    insert_spans(&mut stmt, seq, spans, packed, created_at)
}

/// Runs `stmt`, one of [`SPAN_INSERT`] and [`SPAN_UPSERT`], for each span,
/// with its texts as `packed` holds them (one entry per span, in order).
fn insert_spans(
    stmt: &mut rusqlite::Statement<'_>,
    seq: i64,
    spans: &[NewSpan],
    packed: &[PackedTexts],
    created_at: i64,
) -> Result<()> {
    let unpacked = PackedTexts::default();
    for (i, s) in spans.iter().enumerate() {
        let p = packed.get(i).unwrap_or(&unpacked);
        stmt.execute(params![
            seq,
            s.id,
            s.parent_span_id,
            s.name,
            s.span_type.as_str(),
            stored(s.input.as_deref(), &p.input),
            stored(s.output.as_deref(), &p.output),
            s.model,
            s.latency_ms,
            s.cost,
            s.error,
            s.prompt_tokens,
            s.completion_tokens,
            stored(Some(&s.metadata), &p.metadata),
            s.start_time,
            s.end_time,
            s.otel_trace_id,
            s.otel_span_id,
            created_at,
        ])?;
    }
    Ok(())
}

pub(super) fn write_events(conn: &Connection, seq: i64, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO events (trace_seq, id, span_id, level, message, metadata, timestamp) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in events {
        stmt.execute(params![
            seq,
            e.id,
            e.span_id,
            e.level,
            e.message,
            e.metadata,
            e.timestamp
        ])?;
    }
    Ok(())
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}
