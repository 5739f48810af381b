//! Anomalies: what failure rules and the built-in detector raise, and
//! what the detector reads. Raising and recovering an anomaly puts its
//! webhook event in the outbox in the same transaction.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{json, Value};

use super::failure_rules::Severity;
use super::metrics::{metrics, MetricsQuery, Totals};
use super::tenancy::new_uuid;
use super::webhooks::enqueue_event;
use super::{now_micros, Result, Store};
use crate::model::Timestamp;

/// What an anomaly is about. The hosted service has `latency_spike`,
/// `error_rate_spike` and `volume_anomaly`; `cost_spike` (cost rules and
/// the detector's cost) and `score_drop` (score rules) are this server's.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub(crate) enum AnomalyType {
    LatencySpike,
    ErrorRateSpike,
    VolumeAnomaly,
    CostSpike,
    ScoreDrop,
}

/// An anomaly (the reference's `Anomaly`, with where it came from and
/// whether it is over).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Anomaly {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = "uuid")]
    pub tenant_id: String,
    // `error_rate_spike`, `latency_spike`, `volume_anomaly`, `cost_spike`
    // or `score_drop`.
    #[serde(rename = "type")]
    #[schema(rename = "type", value_type = AnomalyType, inline)]
    pub kind: String,
    // `low`, `medium`, `high` or `critical`.
    #[schema(value_type = Severity, inline)]
    pub severity: String,
    #[schema(
        example = "error_rate 0.42 > 0.05 over the last 300 s (rule \"error rate above 5%\")"
    )]
    pub description: String,
    /// Always null: anomalies are about windows of traffic, not one trace.
    #[schema(format = "uuid")]
    pub trace_id: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub detected_at: Timestamp,
    /// What was measured: the window, the sample count, and for the
    /// detector its baseline's median and spread.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The project; null for a rule over every project.
    #[schema(format = "uuid")]
    pub project_id: Option<String>,
    /// `rule` (a failure rule fired) or `builtin` (the detector).
    #[schema(example = "rule")]
    pub source: String,
    /// The failure rule that raised it, if one did.
    #[schema(format = "uuid")]
    pub rule_id: Option<String>,
    /// The metric measured (a rule's metric, or the detector's
    /// `error_rate`, `latency_p95`, `cost`, `volume`).
    #[schema(example = "error_rate")]
    pub metric: String,
    /// Its value when the anomaly was raised.
    pub value: f64,
    /// The rule's threshold (rules).
    pub threshold: Option<f64>,
    /// The baseline's median (the detector).
    pub baseline: Option<f64>,
    /// `open` until the condition clears, then `recovered`.
    #[schema(example = "open")]
    pub status: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub recovered_at: Option<Timestamp>,
}

/// An anomaly to raise.
#[derive(Debug, Clone)]
pub struct NewAnomaly {
    pub tenant_id: i64,
    pub project_id: Option<i64>,
    pub kind: String,
    pub severity: String,
    pub description: String,
    pub metric: String,
    pub value: f64,
    pub threshold: Option<f64>,
    pub baseline: Option<f64>,
    pub metadata: Value,
}

/// An open anomaly of the built-in detector.
#[derive(Debug, Clone)]
pub struct OpenBuiltin {
    pub id: i64,
    pub tenant_id: i64,
    pub project_id: i64,
    pub kind: String,
}

/// Which anomalies a list shows.
#[derive(Debug, Clone, Default)]
pub struct AnomalyFilter {
    pub project_id: Option<i64>,
    /// `Some(true)`: open only; `Some(false)`: recovered only.
    pub open: Option<bool>,
    pub kind: Option<String>,
    pub severity: Option<String>,
    pub source: Option<String>,
    pub rule: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

const ANOMALY_COLUMNS: &str = "a.uuid, t.uuid, a.type, a.severity, a.description, a.detected_at, \
     a.metadata, a.created_at, p.uuid, a.source, a.rule_uuid, a.metric, a.value, a.threshold, \
     a.baseline, a.recovered_at";

const ANOMALY_FROM: &str =
    "anomalies a JOIN tenants t ON t.id = a.tenant_id LEFT JOIN projects p ON p.id = a.project_id";

fn anomaly_from_row(r: &Row) -> rusqlite::Result<Anomaly> {
    let metadata: Option<String> = r.get(6)?;
    let recovered_at: Option<i64> = r.get(15)?;
    Ok(Anomaly {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        kind: r.get(2)?,
        severity: r.get(3)?,
        description: r.get(4)?,
        trace_id: None,
        detected_at: Timestamp(r.get(5)?),
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        created_at: Timestamp(r.get(7)?),
        project_id: r.get(8)?,
        source: r.get(9)?,
        rule_id: r.get(10)?,
        metric: r.get(11)?,
        value: r.get(12)?,
        threshold: r.get(13)?,
        baseline: r.get(14)?,
        status: if recovered_at.is_some() {
            "recovered"
        } else {
            "open"
        }
        .to_owned(),
        recovered_at: recovered_at.map(Timestamp),
    })
}

pub(super) fn anomaly_by_id(conn: &Connection, id: i64) -> Result<Option<Anomaly>> {
    let sql = format!("SELECT {ANOMALY_COLUMNS} FROM {ANOMALY_FROM} WHERE a.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], anomaly_from_row)
        .optional()?)
}

/// Inserts an anomaly; returns its internal id.
pub(super) fn insert_anomaly(
    conn: &Connection,
    a: &NewAnomaly,
    rule: Option<(i64, &str)>,
    now: i64,
) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO anomalies (uuid, tenant_id, project_id, rule_id, rule_uuid, source, type, \
         severity, description, metric, value, threshold, baseline, metadata, detected_at, \
         created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15)",
    )?
    .execute(params![
        new_uuid(),
        a.tenant_id,
        a.project_id,
        rule.map(|r| r.0),
        rule.map(|r| r.1),
        if rule.is_some() { "rule" } else { "builtin" },
        a.kind,
        a.severity,
        a.description,
        a.metric,
        a.value,
        a.threshold,
        a.baseline,
        a.metadata.to_string(),
        now
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Marks an open anomaly recovered, noting why in its metadata, and puts
/// `event` in the outbox with the anomaly as its data. False if it was
/// not open.
pub(super) fn recover(
    conn: &Connection,
    id: i64,
    event: &str,
    note: Value,
    extra: Option<(&str, Value)>,
) -> Result<bool> {
    let now = now_micros();
    let changed = conn
        .prepare_cached(
            "UPDATE anomalies SET recovered_at = ?2, \
             metadata = json_set(coalesce(metadata, '{}'), '$.recovery', json(?3)) \
             WHERE id = ?1 AND recovered_at IS NULL",
        )?
        .execute(params![id, now, note.to_string()])?;
    if changed == 0 {
        return Ok(false);
    }
    if let Some(anomaly) = anomaly_by_id(conn, id)? {
        let tenant_id: i64 =
            conn.query_row("SELECT tenant_id FROM anomalies WHERE id = ?1", [id], |r| {
                r.get(0)
            })?;
        enqueue_event(conn, tenant_id, event, &event_data(&anomaly, extra))?;
    }
    Ok(true)
}

/// An event's data: the anomaly as the API shows it, plus `extra`.
pub(super) fn event_data(anomaly: &Anomaly, extra: Option<(&str, Value)>) -> Value {
    let mut data = serde_json::to_value(anomaly).unwrap_or(Value::Null);
    if let (Some((key, value)), Some(map)) = (extra, data.as_object_mut()) {
        map.insert(key.to_owned(), value);
    }
    data
}

impl Store {
    /// Projects the detector watches: every project not archived.
    pub async fn detection_projects(&self) -> Result<Vec<(i64, i64)>> {
        self.read(|conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT tenant_id, id FROM projects WHERE archived_at IS NULL ORDER BY id",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// A project's traffic over `[from, to]` in buckets of `width`
    /// microseconds, from the rollups (empty buckets are absent).
    pub async fn traffic_series(
        &self,
        tenant_id: i64,
        project_id: i64,
        from: i64,
        to: i64,
        width: i64,
    ) -> Result<std::collections::BTreeMap<i64, Totals>> {
        self.read(move |conn| {
            Ok(metrics(
                conn,
                tenant_id,
                MetricsQuery {
                    project_id: Some(project_id),
                    from,
                    to,
                    interval: Some(width),
                },
            )?
            .buckets)
        })
        .await
    }

    /// Traffic over the last `width` microseconds (one project, or all the
    /// organisation's), from the rollups. The window ends when the read
    /// runs, not when it was asked for: a read that waited behind others
    /// still sees every trace stored by then inside its window.
    pub async fn traffic(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
        width: i64,
    ) -> Result<Totals> {
        self.read(move |conn| {
            let to = now_micros();
            let from = to - width;
            Ok(metrics(
                conn,
                tenant_id,
                MetricsQuery {
                    project_id,
                    from,
                    to,
                    interval: None,
                },
            )?
            .total)
        })
        .await
    }

    /// The detector's open anomalies.
    pub async fn open_builtin_anomalies(&self) -> Result<Vec<OpenBuiltin>> {
        self.read(|conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT id, tenant_id, project_id, type FROM anomalies \
                     WHERE recovered_at IS NULL AND source = 'builtin' AND project_id IS NOT NULL",
                )?
                .query_map([], |r| {
                    Ok(OpenBuiltin {
                        id: r.get(0)?,
                        tenant_id: r.get(1)?,
                        project_id: r.get(2)?,
                        kind: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Raises a detector anomaly and puts an `anomaly.detected` event in
    /// the outbox, unless one of its type is already open for the project.
    pub async fn raise_builtin_anomaly(&self, anomaly: NewAnomaly) -> Result<Option<i64>> {
        self.write(move |conn| {
            let open: Option<i64> = conn
                .prepare_cached(
                    "SELECT id FROM anomalies WHERE tenant_id = ?1 AND project_id IS ?2 \
                     AND type = ?3 AND recovered_at IS NULL AND source = 'builtin'",
                )?
                .query_row(
                    params![anomaly.tenant_id, anomaly.project_id, anomaly.kind],
                    |r| r.get(0),
                )
                .optional()?;
            if open.is_some() {
                return Ok(None);
            }
            let id = insert_anomaly(conn, &anomaly, None, now_micros())?;
            if let Some(raised) = anomaly_by_id(conn, id)? {
                enqueue_event(
                    conn,
                    anomaly.tenant_id,
                    "anomaly.detected",
                    &event_data(&raised, None),
                )?;
            }
            Ok(Some(id))
        })
        .await
    }

    /// Ends a detector anomaly, with an `anomaly.recovered` event.
    pub async fn recover_builtin_anomaly(&self, id: i64, value: Option<f64>) -> Result<bool> {
        self.write(move |conn| {
            recover(
                conn,
                id,
                "anomaly.recovered",
                json!({"reason": "back_to_baseline", "value": value}),
                None,
            )
        })
        .await
    }

    /// A page of the organisation's anomalies, newest first, and whether
    /// more follow.
    pub async fn list_anomalies(
        &self,
        tenant_id: i64,
        filter: AnomalyFilter,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<Anomaly>, bool)> {
        self.read(move |conn| {
            let mut sql =
                format!("SELECT {ANOMALY_COLUMNS} FROM {ANOMALY_FROM} WHERE a.tenant_id = ?");
            let mut args: Vec<SqlValue> = vec![tenant_id.into()];
            let mut and = |clause: &str, value: SqlValue| {
                sql.push_str(clause);
                args.push(value);
            };
            if let Some(p) = filter.project_id {
                and(" AND a.project_id = ?", p.into());
            }
            if let Some(k) = filter.kind {
                and(" AND a.type = ?", k.into());
            }
            if let Some(s) = filter.severity {
                and(" AND a.severity = ?", s.into());
            }
            if let Some(s) = filter.source {
                and(" AND a.source = ?", s.into());
            }
            if let Some(r) = filter.rule {
                and(" AND a.rule_uuid = ?", r.into());
            }
            if let Some(f) = filter.from {
                and(" AND a.detected_at >= ?", f.into());
            }
            if let Some(t) = filter.to {
                and(" AND a.detected_at <= ?", t.into());
            }
            match filter.open {
                Some(true) => sql.push_str(" AND a.recovered_at IS NULL"),
                Some(false) => sql.push_str(" AND a.recovered_at IS NOT NULL"),
                None => {}
            }
            sql.push_str(" ORDER BY a.detected_at DESC, a.id DESC LIMIT ? OFFSET ?");
            args.push((limit as i64 + 1).into());
            args.push((offset as i64).into());
            let mut rows = conn
                .prepare_cached(&sql)?
                .query_map(rusqlite::params_from_iter(args), anomaly_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            Ok((rows, more))
        })
        .await
    }

    pub async fn get_anomaly(&self, tenant_id: i64, uuid: String) -> Result<Option<Anomaly>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {ANOMALY_COLUMNS} FROM {ANOMALY_FROM} WHERE a.tenant_id = ?1 AND a.uuid = ?2"
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![tenant_id, uuid], anomaly_from_row)
                .optional()?)
        })
        .await
    }
}
