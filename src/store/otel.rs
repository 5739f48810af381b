//! OpenTelemetry spans merged into traces. OTel has no trace object: a
//! trace is whatever spans share a trace id, and they may arrive in any
//! order over many requests. So each request's spans are added to (or
//! replace their earlier copies in) the trace of that id, and the trace's
//! aggregates are recomputed from all of its stored spans.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::codec::{stored, PackedTexts, Packer};
use super::page::{span_json_size, trace_head_json_size, EXPORT_PAGE_MAX_BYTES};
use super::trace_insert::{count_usage, pack_spans, write_events, write_spans};
use super::traces::detail_part;
use super::{failure_clusters, rollups};
use super::{now_micros, Result, Store};
use crate::model::{last_copies, Aggregates, NewOtelTrace, SpanView, Trace, TraceFields};

/// A trace an ingest request created (rather than added spans to), for
/// the counters and the live feed.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedTrace {
    pub project_id: i64,
    pub id: String,
    pub name: Option<String>,
    pub error: bool,
    pub latency_ms: Option<i64>,
    pub created_at: i64,
}

impl Store {
    /// Merges every trace's spans in one transaction; returns the traces
    /// that did not exist before.
    pub async fn merge_otel_traces(
        &self,
        tenant_id: i64,
        traces: Vec<(i64, NewOtelTrace)>,
    ) -> Result<Vec<CreatedTrace>> {
        // Packed before the writer takes them, as JSON ingest does.
        let packed: Vec<PackedOtel> = {
            let mut packer = self.codec.packer(tenant_id);
            traces
                .iter()
                .map(|(_, t)| PackedOtel::of(&mut packer, t))
                .collect()
        };
        let created = self
            .write_data(move |conn| {
                let now = now_micros();
                let mut created = Vec::new();
                let mut changes = Vec::new();
                for ((project_id, trace), packed) in traces.iter().zip(&packed) {
                    created.extend(merge(
                        conn,
                        tenant_id,
                        *project_id,
                        (trace, packed),
                        now,
                        &mut changes,
                    )?);
                }
                rollups::apply(conn, tenant_id, &changes)?;
                count_usage(conn, tenant_id, now, created.len() as i64)?;
                Ok(created)
            })
            .await;
        self.note_stored();
        created
    }
}

/// An OTel trace's texts, packed before the writer takes them.
struct PackedOtel {
    metadata: Option<Vec<u8>>,
    spans: Vec<PackedTexts>,
    fields: Option<PackedTexts>,
}

impl PackedOtel {
    fn of(packer: &mut Packer, t: &NewOtelTrace) -> Self {
        PackedOtel {
            metadata: packer.pack(&t.metadata),
            spans: pack_spans(packer, &t.spans),
            fields: t.fields.as_ref().map(|f| {
                PackedTexts::of(
                    packer,
                    f.input.as_deref(),
                    f.output.as_deref(),
                    f.metadata.as_deref(),
                )
            }),
        }
    }

    /// The packed texts of `span`, one of the trace's.
    fn span(&self, trace: &NewOtelTrace, span: &crate::model::NewSpan) -> Option<&PackedTexts> {
        let i = trace.spans.iter().position(|s| std::ptr::eq(s, span))?;
        self.spans.get(i)
    }
}

fn merge(
    conn: &Connection,
    tenant_id: i64,
    project_id: i64,
    (trace, packed): (&NewOtelTrace, &PackedOtel),
    now: i64,
    rollup: &mut Vec<(rollups::Contribution, i64)>,
) -> Result<Option<CreatedTrace>> {
    let existing: Option<(i64, Option<String>)> = conn
        .prepare_cached("SELECT seq, error FROM traces WHERE tenant_id = ?1 AND id = ?2")?
        .query_row(params![tenant_id, trace.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    // The trace's rollup contribution is replaced by what it becomes.
    if let Some((seq, _)) = existing {
        if let Some(old) = rollups::stored(conn, seq)? {
            rollup.push((old, -1));
        }
    }
    let (seq, old_error) = match existing {
        Some(found) => found,
        None => {
            // All of a new trace's spans are in this request: its aggregates
            // come from them, by the same rules as the UPDATE below.
            let (agg, root) = Aggregates::of_request(&trace.spans);
            let unpacked = PackedTexts::default();
            let root_texts = root
                .and_then(|r| packed.span(trace, r))
                .unwrap_or(&unpacked);
            // No JSON content hash: a JSON ingest of this id is a conflict.
            conn.prepare_cached(
                "INSERT INTO traces (tenant_id, project_id, id, session_id, metadata, \
                 started_at, ended_at, latency_ms, total_token_count, cost, span_count, \
                 name, input, output, model, error, created_at, content_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
                 ?15, ?16, ?17, zeroblob(32))",
            )?
            .execute(params![
                tenant_id,
                project_id,
                trace.id,
                trace.session_id,
                stored(Some(&trace.metadata), &packed.metadata),
                agg.started.unwrap_or(now),
                agg.ended,
                agg.latency_ms(),
                agg.tokens,
                agg.cost,
                agg.count,
                root.map(|r| r.name.as_str()),
                stored(root.and_then(|r| r.input.as_deref()), &root_texts.input),
                stored(root.and_then(|r| r.output.as_deref()), &root_texts.output),
                agg.model,
                agg.error,
                now
            ])?;
            // Not RETURNING, which would make the insert keep a statement
            // journal (see `traces::insert_one`).
            let seq = conn.last_insert_rowid();
            let mut queue = conn.prepare_cached(super::session_lookup::QUEUE)?;
            super::session_lookup::queue(
                &mut queue,
                seq,
                tenant_id,
                project_id,
                trace.session_id.as_deref(),
                agg.started.unwrap_or(now),
            )?;
            write_spans(conn, seq, (&trace.spans, &packed.spans), now, true)?;
            write_events(conn, seq, &trace.events)?;
            if let Some(f) = &trace.fields {
                apply_fields(conn, tenant_id, seq, (f, packed.fields.as_ref()))?;
            }
            // A trace with no error anywhere has no failure to classify.
            if agg.error.is_some() || trace.fields.is_some() {
                failure_clusters::classify_stored(conn, seq)?;
            }
            if let Some(new) = rollups::stored(conn, seq)? {
                rollup.push((new, 1));
            }
            return Ok(Some(CreatedTrace {
                project_id,
                id: trace.id.clone(),
                name: root.map(|r| r.name.clone()),
                error: agg.error.is_some(),
                latency_ms: agg.latency_ms(),
                created_at: now,
            }));
        }
    };
    // What the aggregates need of the spans stored before (no text), read
    // before this request's spans are written: a span sent again replaces
    // its stored copy in the aggregates as in the table.
    let stored: Vec<StoredSpan> = conn
        .prepare_cached(
            "SELECT id, parent_span_id IS NULL, type = 'llm', model, error, \
             coalesce(prompt_tokens, 0), coalesce(completion_tokens, 0), cost, start_time, \
             end_time FROM spans WHERE trace_seq = ?1",
        )?
        .query_map([seq], |r| {
            Ok(StoredSpan {
                id: r.get(0)?,
                root: r.get(1)?,
                llm: r.get(2)?,
                model: r.get(3)?,
                error: r.get(4)?,
                tokens: r.get::<_, i64>(5)?.saturating_add(r.get(6)?),
                cost: r.get(7)?,
                start: r.get(8)?,
                end: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let incoming: HashSet<&str> = trace.spans.iter().map(|s| s.id.as_str()).collect();
    let replaced = stored.iter().any(|s| incoming.contains(s.id.as_str()));
    // Spans added to a trace stored before the newest are noted as late,
    // for span search (see `span_search`): those keyed above this.
    let last_key: i64 = conn
        .prepare_cached("SELECT coalesce(max(rid), 0) FROM spans")?
        .query_row([], |r| r.get(0))?;
    write_spans(conn, seq, (&trace.spans, &packed.spans), now, true)?;
    super::span_search::note_late(conn, seq, last_key)?;
    if replaced {
        // A re-sent span brings its events again: replace, do not repeat them.
        let mut clear =
            conn.prepare_cached("DELETE FROM events WHERE trace_seq = ?1 AND span_id = ?2")?;
        for span in stored.iter().filter(|s| incoming.contains(s.id.as_str())) {
            clear.execute(params![seq, span.id])?;
        }
    }
    write_events(conn, seq, &trace.events)?;
    // The aggregates of all the trace's spans, by the rules of a trace
    // whose spans all come in one request (`Aggregates::of_request`).
    let agg = Aggregates::of(
        stored
            .iter()
            .filter(|s| !incoming.contains(s.id.as_str()))
            .map(StoredSpan::view)
            .chain(last_copies(&trace.spans).into_iter().map(SpanView::of)),
    );
    // The root span (no parent) names the trace; until it arrives, the
    // earliest span stands in for it. Its text is read where it is stored.
    conn.prepare_cached(
        "UPDATE traces SET started_at = coalesce(?2, started_at), ended_at = ?3, \
           latency_ms = ?4, total_token_count = ?5, cost = ?6, span_count = ?7, \
           (name, input, output) = (SELECT name, input, output FROM spans \
                                    WHERE trace_seq = ?1 AND id = ?8), \
           model = ?9, error = ?10, session_id = coalesce(session_id, ?11) \
         WHERE seq = ?1",
    )?
    .execute(params![
        seq,
        agg.started,
        agg.ended,
        agg.latency_ms(),
        agg.tokens,
        agg.cost,
        agg.count,
        agg.root_id,
        agg.model,
        agg.error,
        trace.session_id
    ])?;
    if let Some(f) = &trace.fields {
        apply_fields(conn, tenant_id, seq, (f, packed.fields.as_ref()))?;
    }
    // The trace's failure follows from its error and its failing spans:
    // when neither changed, it has not either.
    let failure_may_change = replaced
        || trace.fields.is_some()
        || trace.spans.iter().any(|s| s.error.is_some())
        || old_error.as_deref() != agg.error;
    if failure_may_change {
        failure_clusters::classify_stored(conn, seq)?;
    }
    if let Some(new) = rollups::stored(conn, seq)? {
        rollup.push((new, 1));
    }
    Ok(None)
}

/// A span stored before, as the trace's aggregates need it.
struct StoredSpan {
    id: String,
    root: bool,
    llm: bool,
    model: Option<String>,
    error: Option<String>,
    tokens: i64,
    cost: Option<f64>,
    start: Option<i64>,
    end: Option<i64>,
}

impl StoredSpan {
    fn view(&self) -> SpanView<'_> {
        SpanView {
            id: &self.id,
            root: self.root,
            llm: self.llm,
            model: self.model.as_deref(),
            error: self.error.as_deref(),
            tokens: self.tokens,
            cost: self.cost,
            start: self.start,
            end: self.end,
        }
    }
}

fn apply_fields(
    conn: &Connection,
    tenant_id: i64,
    seq: i64,
    (f, packed): (&TraceFields, Option<&PackedTexts>),
) -> Result<()> {
    let unpacked = PackedTexts::default();
    let packed = packed.unwrap_or(&unpacked);
    let tags = (!f.tags.is_empty()).then(|| serde_json::to_string(&f.tags).ok());
    let tag_map = (!f.tag_map.is_empty()).then(|| serde_json::to_string(&f.tag_map).ok());
    conn.prepare_cached(
        "UPDATE traces SET name = ?2, input = ?3, output = ?4, model = coalesce(?5, model), \
         error = ?6, external_id = ?7, latency_ms = coalesce(?8, latency_ms), \
         cost = coalesce(?9, cost), tags = ?10, tag_map = ?11, \
         metadata = coalesce(?12, metadata), started_at = ?13, ended_at = ?14 WHERE seq = ?1",
    )?
    .execute(params![
        seq,
        f.name,
        stored(f.input.as_deref(), &packed.input),
        stored(f.output.as_deref(), &packed.output),
        f.model,
        f.error,
        f.external_id,
        f.latency_ms,
        f.cost,
        tags.flatten(),
        tag_map.flatten(),
        stored(f.metadata.as_deref(), &packed.metadata),
        f.started_at,
        f.ended_at
    ])?;
    // The root's tags replace the trace's: a key it no longer has leaves the
    // tag rows (and, through their trigger, the tag index) too.
    let keys = serde_json::Value::from(f.tag_map.keys().cloned().collect::<Vec<_>>()).to_string();
    conn.prepare_cached(
        "DELETE FROM trace_tags WHERE trace_seq = ?1 \
         AND key NOT IN (SELECT value FROM json_each(?2))",
    )?
    .execute(params![seq, keys])?;
    let mut tag = conn.prepare_cached(
        "INSERT INTO trace_tags (trace_seq, tenant_id, key, value, started_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (trace_seq, key) DO UPDATE \
         SET value = excluded.value, started_at = excluded.started_at",
    )?;
    for (key, value) in &f.tag_map {
        tag.execute(params![seq, tenant_id, key, value, f.started_at])?;
    }
    Ok(())
}

/// Where an OTLP export continues: the next trace in (started_at, seq)
/// order, and how many of its spans were already sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCursor {
    pub started_at: i64,
    pub seq: i64,
    pub span_offset: usize,
}

/// Traces to export, oldest first, each with the spans of this page.
pub struct ExportPage {
    pub traces: Vec<Trace>,
    pub next: Option<ExportCursor>,
    /// The first trace continues one the previous page began: its own
    /// fields went out there.
    pub continues_first: bool,
}

/// Filters of an export; times are microseconds, `to` exclusive.
#[derive(Debug, Clone, Copy)]
pub struct ExportRange {
    pub from: i64,
    pub to: i64,
    pub project_id: Option<i64>,
}

impl Store {
    /// One page of at most `max_spans` spans and about
    /// [`EXPORT_PAGE_MAX_BYTES`] of JSON; a trace larger than what is left
    /// of the page continues on the next one.
    pub async fn export_page(
        &self,
        tenant_id: i64,
        range: ExportRange,
        after: Option<ExportCursor>,
        max_spans: usize,
    ) -> Result<ExportPage> {
        self.read(move |conn| export(conn, tenant_id, range, after, max_spans))
            .await
    }
}

fn export(
    conn: &Connection,
    tenant_id: i64,
    range: ExportRange,
    after: Option<ExportCursor>,
    max_spans: usize,
) -> Result<ExportPage> {
    let mut position = after.unwrap_or(ExportCursor {
        started_at: range.from,
        seq: 0,
        span_offset: 0,
    });
    let mut continues_first = false;
    let mut budget = max_spans.max(1);
    let mut bytes_left = EXPORT_PAGE_MAX_BYTES;
    let mut traces = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, started_at FROM traces \
         WHERE tenant_id = ?1 AND started_at < ?2 AND (?3 IS NULL OR project_id = ?3) \
           AND (started_at, seq) >= (?4, ?5) AND started_at >= ?6 \
         ORDER BY started_at, seq LIMIT 200",
    )?;
    loop {
        let batch: Vec<(i64, String, i64)> = stmt
            .query_map(
                params![
                    tenant_id,
                    range.to,
                    range.project_id,
                    position.started_at,
                    position.seq,
                    range.from
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect::<rusqlite::Result<_>>()?;
        if batch.is_empty() {
            return Ok(ExportPage {
                traces,
                next: None,
                continues_first,
            });
        }
        for (seq, id, started_at) in batch {
            let offset = if (started_at, seq) == (position.started_at, position.seq) {
                position.span_offset
            } else {
                0
            };
            if budget == 0 {
                return Ok(ExportPage {
                    traces,
                    next: Some(ExportCursor {
                        started_at,
                        seq,
                        span_offset: offset,
                    }),
                    continues_first,
                });
            }
            // Spans are read only while the page has room for them.
            let page_was_empty = traces.is_empty();
            let bytes_before = bytes_left;
            let mut taken = 0;
            // Room for the root span standing for a trace not received over
            // OTLP, which only its first part carries.
            let room = if offset == 0 {
                budget.saturating_sub(1)
            } else {
                budget
            };
            let found = detail_part(conn, tenant_id, &id, offset, |span| {
                let size = span_json_size(span);
                let first = page_was_empty && taken == 0;
                if !first && (taken >= room || size > bytes_left) {
                    return false;
                }
                bytes_left = bytes_left.saturating_sub(size);
                taken += 1;
                true
            })?;
            let Some((mut trace, more_in_trace)) = found else {
                continue;
            };
            if taken == 0 && more_in_trace {
                // Not one more span fits: the trace starts the next page.
                return Ok(ExportPage {
                    traces,
                    next: Some(ExportCursor {
                        started_at,
                        seq,
                        span_offset: offset,
                    }),
                    continues_first,
                });
            }
            if offset == 0 {
                let head = trace_head_json_size(&trace);
                if !page_was_empty && head > bytes_before {
                    // The trace's own fields do not fit: it starts the next page.
                    return Ok(ExportPage {
                        traces,
                        next: Some(ExportCursor {
                            started_at,
                            seq,
                            span_offset: 0,
                        }),
                        continues_first,
                    });
                }
                bytes_left = bytes_left.saturating_sub(head);
            }
            let spans = trace.spans.as_deref().unwrap_or_default();
            // A trace not received over OTLP is exported under a root span
            // standing for it (see `otlp::traces_data`): it counts too.
            if offset == 0 && spans.iter().all(|s| s.otel_span_id.is_none()) {
                budget = budget.saturating_sub(1);
            }
            budget = budget.saturating_sub(taken);
            trace.spans.get_or_insert_with(Vec::new);
            if traces.is_empty() {
                continues_first = offset > 0;
            }
            traces.push(trace);
            if more_in_trace {
                return Ok(ExportPage {
                    traces,
                    next: Some(ExportCursor {
                        started_at,
                        seq,
                        span_offset: offset + taken,
                    }),
                    continues_first,
                });
            }
            if bytes_left == 0 {
                budget = 0;
            }
            position = ExportCursor {
                started_at,
                seq: seq + 1,
                span_offset: 0,
            };
        }
    }
}
