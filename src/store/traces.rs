//! Reading traces: keyset-paged lists with their filters, a trace with its
//! spans and events, and feedback on a trace. Storing them from ingest is
//! in `trace_insert`.

use std::collections::BTreeMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::value::RawValue;

use super::page::{capped_text, PageBytes, VALUE_MAX_BYTES};
use super::{now_micros, Result, Store, StoreError};
use crate::model::{Event, Feedback, Span, Timestamp, Trace};

/// Feedback to record.
#[derive(Debug, Clone)]
pub struct NewFeedback {
    pub trace_id: String,
    pub label: String,
    pub score: Option<f64>,
    pub comment: Option<String>,
    /// JSON object text.
    pub metadata: String,
}

/// Position after the last trace of a page: newest first, so the next page
/// holds traces that sort strictly before `(started_at, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceCursor {
    pub started_at: i64,
    pub seq: i64,
}

/// Filters for listing traces; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    pub project_id: Option<i64>,
    pub model: Option<String>,
    pub error: Option<bool>,
    /// Traces of this failure class (one of `failures::FAILURE_TYPES`).
    pub failure_type: Option<&'static str>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub latency_min: Option<i64>,
    pub latency_max: Option<i64>,
    pub token_count_min: Option<i64>,
    pub token_count_max: Option<i64>,
    pub tag: Option<(String, String)>,
    pub session_id: Option<String>,
    /// Traces with at least one feedback of this label.
    pub feedback: Option<String>,
    /// FTS5 terms (see [`super::search::fts_terms`]), each of which the
    /// trace or one of its spans must match.
    pub text: Vec<String>,
}

pub struct TracePage {
    pub traces: Vec<Trace>,
    pub next: Option<TraceCursor>,
}

/// The most traces one page can hold, whatever the caller asks.
const MAX_PAGE: usize = 1000;

pub(super) const TRACE_COLUMNS: &str =
    "t.seq, t.id, p.uuid, t.session_id, t.external_id, t.name, unpack(t.input), \
    unpack(t.output), t.model, t.latency_ms, t.cost, t.total_token_count, t.error, t.tags, \
    t.tag_map, unpack(t.metadata), t.span_count, t.started_at, t.ended_at, t.created_at, \
    (SELECT json_group_object(label, n) FROM (SELECT label, count(*) AS n FROM feedback \
     WHERE trace_seq = t.seq GROUP BY label)), \
    (SELECT json_group_object(metric_name, s) FROM (SELECT metric_name, avg(score) AS s \
     FROM evaluations WHERE trace_seq = t.seq AND status = 'complete' AND score IS NOT NULL \
     GROUP BY metric_name))";

impl Store {
    /// One page of the tenant's traces, newest first.
    pub async fn list_traces(
        &self,
        tenant_id: i64,
        filter: TraceFilter,
        after: Option<TraceCursor>,
        limit: usize,
    ) -> Result<TracePage> {
        let limit = limit.clamp(1, MAX_PAGE);
        if !filter.text.is_empty() {
            self.catch_up_search().await?;
        }
        self.read(move |conn| list(conn, tenant_id, &filter, after, limit))
            .await
    }

    /// Records feedback on the tenant's trace `trace_id`; `None` when the
    /// tenant has no such trace. Returns the feedback's id and time.
    pub async fn add_feedback(
        &self,
        tenant_id: i64,
        feedback: NewFeedback,
    ) -> Result<Option<(String, i64)>> {
        self.write_data(move |conn| {
            let seq: Option<i64> = conn
                .prepare_cached("SELECT seq FROM traces WHERE tenant_id = ?1 AND id = ?2")?
                .query_row(params![tenant_id, feedback.trace_id], |r| r.get(0))
                .optional()?;
            let Some(seq) = seq else { return Ok(None) };
            let uuid = uuid::Uuid::now_v7().hyphenated().to_string();
            let now = now_micros();
            conn.prepare_cached(
                "INSERT INTO feedback (uuid, tenant_id, trace_seq, label, score, comment, \
                 metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                uuid,
                tenant_id,
                seq,
                feedback.label,
                feedback.score,
                feedback.comment,
                feedback.metadata,
                now
            ])?;
            Ok(Some((uuid, now)))
        })
        .await
    }

    /// The trace with its spans (by start time) and events, if the tenant owns it.
    pub async fn get_trace(&self, tenant_id: i64, id: String) -> Result<Option<Trace>> {
        self.read(move |conn| detail(conn, tenant_id, &id)).await
    }
}

/// What a list query reads of each trace: the whole listed trace, or only
/// where it sorts (`seq`, `started_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Select {
    Rows,
    Keys,
}

/// Where a list query's traces come from: the traces (by time, or through
/// the session or tag index when the filter names one), or a query of one
/// column `seq` (the matches of a search term) with its arguments.
enum Source<'a> {
    Filters,
    Seqs(&'a str, Vec<SqlValue>),
}

pub(super) fn list(
    conn: &Connection,
    tenant_id: i64,
    f: &TraceFilter,
    after: Option<TraceCursor>,
    limit: usize,
) -> Result<TracePage> {
    if !f.text.is_empty() {
        return super::search::list_text(conn, tenant_id, f, after, limit);
    }
    let (sql, args) = query(
        tenant_id,
        f,
        Source::Filters,
        after,
        Some(limit + 1),
        Select::Rows,
    );
    read_page(conn, &sql, args, limit)
}

/// Where the next `n` traces of the list (its full-text terms aside) after
/// `after` sort, read from the indexes alone where the filters allow.
pub(super) fn list_keys(
    conn: &Connection,
    tenant_id: i64,
    f: &TraceFilter,
    after: Option<TraceCursor>,
    n: usize,
) -> Result<Vec<TraceCursor>> {
    let (sql, args) = query(tenant_id, f, Source::Filters, after, Some(n), Select::Keys);
    read_keys(conn, &sql, args)
}

/// Where each trace of `source` (a query of one column `seq`) that the
/// list's other filters keep sorts, in list order: all of them.
pub(super) fn keys_of(
    conn: &Connection,
    tenant_id: i64,
    f: &TraceFilter,
    after: Option<TraceCursor>,
    source: &str,
    values: Vec<SqlValue>,
) -> Result<Vec<TraceCursor>> {
    let (sql, args) = query(
        tenant_id,
        f,
        Source::Seqs(source, values),
        after,
        None,
        Select::Keys,
    );
    read_keys(conn, &sql, args)
}

/// The page holding `keys` (in list order, at most one past `limit`), as
/// `list` answers it.
pub(super) fn page_of(conn: &Connection, keys: &[TraceCursor], limit: usize) -> Result<TracePage> {
    let seqs: Vec<i64> = keys.iter().map(|k| k.seq).collect();
    let sql = format!(
        "SELECT {TRACE_COLUMNS} FROM traces t JOIN projects p ON p.id = t.project_id \
         WHERE t.seq IN (SELECT value FROM json_each(?)) ORDER BY t.started_at DESC, t.seq DESC"
    );
    let seqs = serde_json::Value::from(seqs).to_string();
    read_page(conn, &sql, vec![seqs.into()], limit)
}

fn read_keys(conn: &Connection, sql: &str, args: Vec<SqlValue>) -> Result<Vec<TraceCursor>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let keys = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok(TraceCursor {
                seq: r.get(0)?,
                started_at: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(keys)
}

/// The list query: its SQL and arguments, newest first, at most `n` rows.
fn query(
    tenant_id: i64,
    f: &TraceFilter,
    source: Source<'_>,
    after: Option<TraceCursor>,
    n: Option<usize>,
    select: Select,
) -> (String, Vec<SqlValue>) {
    let columns = match select {
        Select::Rows => TRACE_COLUMNS,
        Select::Keys => "t.seq, t.started_at",
    };
    let driven = matches!(source, Source::Seqs(..));
    // Unless a search term's matches drive the query, a session or tag
    // filter drives it from its index, which yields the matching traces
    // already in (started_at, seq) order: a common tag costs no more than
    // an unfiltered page, a rare one or a session no full scan. Each index is merged in the background, so the
    // query is built once with `@SOURCE@` (and `@MERGED@`) in it and run as
    // two arms: the index, and the entries not in it yet (see `lookup` and
    // `session_lookup`).
    let keyed = match (driven, &f.session_id, &f.tag) {
        (true, _, _) => None,
        (false, Some(session), _) => Some((
            "g.tenant_id = ? AND g.session_id = ?",
            vec![SqlValue::from(tenant_id), session.clone().into()],
            [
                (super::session_lookup::ARMS[0], ""),
                (super::session_lookup::ARMS[1], ""),
            ],
        )),
        (false, None, Some((key, value))) => Some((
            "g.trace_seq @MERGED@ (SELECT tags_seq FROM lookup_state) \
             AND g.tenant_id = ? AND g.key = ? AND g.value = ?",
            vec![
                SqlValue::from(tenant_id),
                key.clone().into(),
                value.clone().into(),
            ],
            [("tag_lookup", "<="), ("trace_tags", ">")],
        )),
        (false, None, None) => None,
    };
    let (mut sql, mut args, start, seq) = match (source, &keyed) {
        (Source::Seqs(source, values), _) => {
            let mut args = values;
            args.push(SqlValue::from(tenant_id));
            (
                format!(
                    "SELECT {columns} FROM ({source}) m CROSS JOIN traces t ON t.seq = m.seq \
                     JOIN projects p ON p.id = t.project_id WHERE t.tenant_id = ?"
                ),
                args,
                "t.started_at",
                "t.seq",
            )
        }
        (Source::Filters, Some((condition, values, _))) => {
            let mut args = values.clone();
            args.push(SqlValue::from(tenant_id));
            (
                format!(
                    "SELECT {columns}, g.started_at AS k_start, g.trace_seq AS k_seq \
                     FROM @SOURCE@ g CROSS JOIN traces t ON t.seq = g.trace_seq \
                     JOIN projects p ON p.id = t.project_id \
                     WHERE {condition} AND t.tenant_id = ?"
                ),
                args,
                "g.started_at",
                "g.trace_seq",
            )
        }
        // Keys need nothing of the project.
        (Source::Filters, None) if select == Select::Keys => (
            "SELECT t.seq, t.started_at FROM traces t WHERE t.tenant_id = ?".to_owned(),
            vec![SqlValue::from(tenant_id)],
            "t.started_at",
            "t.seq",
        ),
        (Source::Filters, None) => (
            format!(
                "SELECT {columns} FROM traces t JOIN projects p ON p.id = t.project_id \
                 WHERE t.tenant_id = ?"
            ),
            vec![SqlValue::from(tenant_id)],
            "t.started_at",
            "t.seq",
        ),
    };
    let mut clause = |condition: &str, values: Vec<SqlValue>| {
        sql.push_str(" AND ");
        sql.push_str(condition);
        args.extend(values);
    };
    // The filters the driving index does not apply.
    let session_driven = !driven && f.session_id.is_some();
    if let (Some((key, value)), true) = (&f.tag, driven || session_driven) {
        clause(
            "EXISTS (SELECT 1 FROM trace_tags tg WHERE tg.trace_seq = t.seq AND tg.key = ? \
             AND tg.value = ?)",
            vec![key.clone().into(), value.clone().into()],
        );
    }
    if let Some(project) = f.project_id {
        clause("t.project_id = ?", vec![project.into()]);
    }
    if let Some(model) = &f.model {
        clause("t.model = ?", vec![model.clone().into()]);
    }
    match f.error {
        Some(true) => clause("t.error IS NOT NULL", vec![]),
        Some(false) => clause("t.error IS NULL", vec![]),
        None => {}
    }
    if let Some(class) = f.failure_type {
        clause("t.failure_type = ?", vec![class.to_owned().into()]);
    }
    if let Some(from) = f.from {
        clause(&format!("{start} >= ?"), vec![from.into()]);
    }
    if let Some(to) = f.to {
        clause(&format!("{start} <= ?"), vec![to.into()]);
    }
    if let Some(v) = f.latency_min {
        clause("t.latency_ms >= ?", vec![v.into()]);
    }
    if let Some(v) = f.latency_max {
        clause("t.latency_ms <= ?", vec![v.into()]);
    }
    if let Some(v) = f.token_count_min {
        clause("t.total_token_count >= ?", vec![v.into()]);
    }
    if let Some(v) = f.token_count_max {
        clause("t.total_token_count <= ?", vec![v.into()]);
    }
    if let (Some(session), true) = (&f.session_id, driven) {
        clause("t.session_id = ?", vec![session.clone().into()]);
    }
    if let Some(label) = &f.feedback {
        clause(
            "EXISTS (SELECT 1 FROM feedback fb WHERE fb.trace_seq = t.seq AND fb.label = ?)",
            vec![label.clone().into()],
        );
    }
    if let Some(c) = after {
        clause(
            &format!("({start}, {seq}) < (?, ?)"),
            vec![c.started_at.into(), c.seq.into()],
        );
    }
    sql.push_str(&format!(" ORDER BY {start} DESC, {seq} DESC"));
    let limit = |sql: &mut String, args: &mut Vec<SqlValue>| {
        if let Some(n) = n {
            sql.push_str(" LIMIT ?");
            args.push((n as i64).into());
        }
    };
    limit(&mut sql, &mut args);
    if let Some((_, _, [index, rest])) = keyed {
        let arm = |(source, merged): (&str, &str)| {
            sql.replace("@SOURCE@", source).replace("@MERGED@", merged)
        };
        sql = format!(
            "SELECT * FROM ({}) UNION ALL SELECT * FROM ({}) \
             ORDER BY k_start DESC, k_seq DESC",
            arm(index),
            arm(rest)
        );
        args.extend_from_within(..);
        limit(&mut sql, &mut args);
    }
    (sql, args)
}

/// Runs a list query of whole traces (at most one past `limit`) into a
/// page: it ends early when the page's bytes are used up.
fn read_page(conn: &Connection, sql: &str, args: Vec<SqlValue>, limit: usize) -> Result<TracePage> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut traces = Vec::with_capacity(limit.min(256));
    let mut positions = Vec::with_capacity(limit.min(256));
    let mut page = PageBytes::default();
    while let Some(row) = rows.next()? {
        let trace = listed_trace_from_row(row)?;
        if !page.admit(&trace) {
            // The page is full: it ends here, and its cursor continues
            // from the last trace it holds.
            return Ok(TracePage {
                next: positions.last().copied(),
                traces,
            });
        }
        positions.push(TraceCursor {
            seq: row.get(0)?,
            started_at: row.get(17)?,
        });
        traces.push(trace);
    }
    let next = if traces.len() > limit {
        traces.truncate(limit);
        positions.truncate(limit);
        positions.get(limit - 1).copied()
    } else {
        None
    };
    Ok(TracePage { traces, next })
}

pub(super) fn detail(conn: &Connection, tenant_id: i64, id: &str) -> Result<Option<Trace>> {
    Ok(detail_part(conn, tenant_id, id, 0, |_| true)?.map(|(trace, _)| trace))
}

/// The trace with its spans from the `skip`th on (by start time), for as
/// long as `take` accepts them: it sees each span before it is kept. True
/// when `take` left spans out.
pub(super) fn detail_part(
    conn: &Connection,
    tenant_id: i64,
    id: &str,
    skip: usize,
    mut take: impl FnMut(&Span) -> bool,
) -> Result<Option<(Trace, bool)>> {
    let sql = format!(
        "SELECT {TRACE_COLUMNS}, ten.uuid FROM traces t JOIN projects p ON p.id = t.project_id \
         JOIN tenants ten ON ten.id = t.tenant_id WHERE t.tenant_id = ?1 AND t.id = ?2"
    );
    let found = conn
        .prepare_cached(&sql)?
        .query_row(params![tenant_id, id], |row| {
            let seq: i64 = row.get(0)?;
            let tenant_uuid: String = row.get(22)?;
            Ok((seq, tenant_uuid, trace_from_row(row)))
        })
        .optional()?;
    let Some((seq, tenant_uuid, trace)) = found else {
        return Ok(None);
    };
    let mut trace = trace?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, parent_span_id, name, type, unpack(input), unpack(output), model, \
         latency_ms, cost, error, prompt_tokens, completion_tokens, unpack(metadata), start_time, end_time, otel_trace_id, \
         otel_span_id, created_at FROM spans WHERE trace_seq = ?1 \
         ORDER BY start_time IS NULL, start_time, rowid LIMIT -1 OFFSET ?2",
    )?;
    let mut rows = stmt.query(params![seq, i64::try_from(skip).unwrap_or(i64::MAX)])?;
    let mut spans = Vec::new();
    let mut left_out = false;
    while let Some(r) = rows.next()? {
        let span = Span {
            id: r.get(0)?,
            tenant_id: tenant_uuid.clone(),
            trace_id: trace.id.clone(),
            parent_span_id: r.get(1)?,
            name: r.get(2)?,
            span_type: r.get(3)?,
            input: r.get(4)?,
            output: r.get(5)?,
            model: r.get(6)?,
            latency_ms: r.get(7)?,
            cost: r.get(8)?,
            error: r.get(9)?,
            prompt_tokens: r.get(10)?,
            completion_tokens: r.get(11)?,
            metadata: raw_json(r.get(12)?),
            start_time: r.get::<_, Option<i64>>(13)?.map(Timestamp),
            end_time: r.get::<_, Option<i64>>(14)?.map(Timestamp),
            otel_trace_id: r.get(15)?,
            otel_span_id: r.get(16)?,
            created_at: Timestamp(r.get(17)?),
        };
        if !take(&span) {
            left_out = true;
            break;
        }
        spans.push(span);
    }
    drop(rows);
    let mut stmt = conn.prepare_cached(
        "SELECT id, span_id, level, message, metadata, timestamp FROM events \
         WHERE trace_seq = ?1 ORDER BY timestamp, rowid",
    )?;
    let events = stmt
        .query_map([seq], |r| {
            Ok(Event {
                id: r.get(0)?,
                span_id: r.get(1)?,
                level: r.get(2)?,
                message: r.get(3)?,
                metadata: raw_json(r.get(4)?),
                timestamp: Timestamp(r.get(5)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT uuid, label, score, comment, metadata, created_at FROM feedback \
         WHERE trace_seq = ?1 ORDER BY id",
    )?;
    let feedback = stmt
        .query_map([seq], |r| {
            Ok(Feedback {
                id: r.get(0)?,
                label: r.get(1)?,
                score: r.get(2)?,
                comment: r.get(3)?,
                metadata: raw_json(r.get(4)?),
                created_at: Timestamp(r.get(5)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    trace.spans = Some(spans);
    trace.events = Some(events);
    trace.feedback = Some(feedback);
    trace.evaluations = Some(super::evals::of_trace(conn, seq)?);
    Ok(Some((trace, left_out)))
}

/// A trace from a row of [`TRACE_COLUMNS`], whole.
pub(super) fn trace_from_row(r: &Row<'_>) -> Result<Trace> {
    trace_from_columns(r, None)
}

/// A trace from a row of [`TRACE_COLUMNS`] as a list shows it: its large
/// values cut to [`VALUE_MAX_BYTES`] (see `page`).
pub(super) fn listed_trace_from_row(r: &Row<'_>) -> Result<Trace> {
    trace_from_columns(r, Some(VALUE_MAX_BYTES))
}

fn trace_from_columns(r: &Row<'_>, cap: Option<usize>) -> Result<Trace> {
    let mut truncated = Vec::new();
    let mut text = |i: usize, name: &'static str| -> Result<Option<String>> {
        let Some(cap) = cap else {
            return Ok(r.get(i)?);
        };
        let (value, cut) = capped_text(r, i, cap)?;
        if cut {
            truncated.push(name);
        }
        Ok(value)
    };
    let input = text(6, "input")?;
    let output = text(7, "output")?;
    let error = text(12, "error")?;
    let metadata: String = match cap {
        Some(cap) if r.get_ref(15)?.as_bytes().map_or(0, <[u8]>::len) > cap => {
            truncated.push("metadata");
            "null".into()
        }
        _ => r.get(15)?,
    };
    let tags: Option<String> = r.get(13)?;
    let tag_map: Option<String> = r.get(14)?;
    Ok(Trace {
        id: r.get(1)?,
        project_id: r.get(2)?,
        session_id: r.get(3)?,
        external_id: r.get(4)?,
        name: r.get(5)?,
        input,
        output,
        model: r.get(8)?,
        latency_ms: r.get(9)?,
        cost: r.get(10)?,
        total_token_count: r.get(11)?,
        error,
        tags: parse_stored(tags)?.unwrap_or_default(),
        tag_map: parse_stored::<BTreeMap<String, String>>(tag_map)?.unwrap_or_default(),
        metadata: raw_json(metadata),
        span_count: r.get(16)?,
        started_at: Timestamp(r.get(17)?),
        ended_at: r.get::<_, Option<i64>>(18)?.map(Timestamp),
        created_at: Timestamp(r.get(19)?),
        spans: None,
        events: None,
        feedback: None,
        evaluations: None,
        feedback_summary: summary(r.get(20)?)?,
        eval_scores: summary(r.get(21)?)?,
        truncated,
    })
}

/// A JSON object of counts or scores; none when it is empty.
fn summary<T: serde::de::DeserializeOwned>(
    text: Option<String>,
) -> Result<Option<BTreeMap<String, T>>> {
    Ok(parse_stored::<BTreeMap<String, T>>(text)?.filter(|m| !m.is_empty()))
}

fn parse_stored<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// Stored JSON text handed through without re-parsing into a tree; text
/// that is somehow not JSON comes out as `null` rather than failing the read.
fn raw_json(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_default()
}
