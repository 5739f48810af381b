//! Failure rules and the anomalies they (and the built-in detector) raise.
//! A rule's open episode is `failure_rules.open_anomaly_id`; raising and
//! recovering an anomaly, and putting its webhook event in the outbox,
//! happen in one transaction, each only if the state read before still
//! holds, so an episode fires once however many passes see it.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{json, Value};

use super::audit::{self, Actor};
use super::metrics::{metrics, MetricsQuery, Totals};
use super::tenancy::new_uuid;
use super::webhooks::enqueue_event;
use super::{now_micros, Result, Store};
use crate::model::Timestamp;

/// What a failure rule watches. The hosted service has `error_rate`,
/// `latency_p95`, `latency_p99` and `score`; `latency_p50`, `cost` and
/// `volume` are this server's.
// Only the API document names these.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub(crate) enum RuleMetric {
    ErrorRate,
    LatencyP50,
    LatencyP95,
    LatencyP99,
    Cost,
    Volume,
    Score,
}

/// How a rule compares its metric with its threshold.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub(crate) enum RuleOperator {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// How serious an anomaly is.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub(crate) enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

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

/// A failure rule (the reference's `FailureRule`, with its project, sample
/// floor, score metric and state).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailureRule {
    #[schema(format = "uuid")]
    pub id: String,
    /// The organisation's id.
    #[schema(format = "uuid")]
    pub tenant_id: String,
    #[schema(example = "error rate above 5%")]
    pub name: String,
    /// `error_rate` (0 to 1), `latency_p50`, `latency_p95`, `latency_p99`
    /// (milliseconds), `cost` (USD over the window), `volume` (traces over
    /// the window) or `score` (mean evaluation score over the window).
    #[schema(value_type = RuleMetric, inline, example = "error_rate")]
    pub metric: String,
    /// `gt`, `gte`, `lt` or `lte`: how the metric compares with `threshold`
    /// when the rule fires.
    #[schema(value_type = RuleOperator, inline, example = "gt")]
    pub operator: String,
    #[schema(example = 0.05)]
    pub threshold: f64,
    /// The trailing window the metric is taken over, in seconds.
    #[schema(example = 300)]
    pub window_secs: i64,
    /// `low`, `medium`, `high` or `critical`: the severity of its anomalies.
    #[schema(value_type = Severity, inline, example = "high")]
    pub severity: String,
    pub enabled: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The project watched; null: every project of the organisation together.
    #[schema(format = "uuid")]
    pub project_id: Option<String>,
    /// The fewest traces (for `score`, evaluations) in the window for the
    /// rule to judge it; with fewer, the condition counts as clear.
    #[schema(example = 20)]
    pub min_samples: i64,
    /// For `score`: the evaluation metric averaged; null: every metric.
    pub score_metric: Option<String>,
    /// `firing` while an episode is open, else `ok`.
    #[schema(example = "ok")]
    pub state: String,
    /// The open episode's anomaly, while firing.
    #[schema(format = "uuid")]
    pub open_anomaly_id: Option<String>,
}

/// A rule to create.
#[derive(Debug, Clone)]
pub struct NewFailureRule {
    pub project_id: Option<i64>,
    pub name: String,
    pub metric: String,
    pub operator: String,
    pub threshold: f64,
    pub window_secs: i64,
    pub severity: String,
    pub min_samples: i64,
    pub score_metric: Option<String>,
    pub enabled: bool,
}

/// A change to a rule; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct FailureRuleChange {
    pub project_id: Option<Option<i64>>,
    pub name: Option<String>,
    pub metric: Option<String>,
    pub operator: Option<String>,
    pub threshold: Option<f64>,
    pub window_secs: Option<i64>,
    pub severity: Option<String>,
    pub min_samples: Option<i64>,
    pub score_metric: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// An enabled rule, as the evaluator reads it.
#[derive(Debug, Clone)]
pub struct ActiveFailureRule {
    pub id: i64,
    pub uuid: String,
    pub tenant_id: i64,
    pub project_id: Option<i64>,
    pub name: String,
    pub metric: String,
    pub operator: String,
    pub threshold: f64,
    pub window_secs: i64,
    pub severity: String,
    pub min_samples: i64,
    pub score_metric: Option<String>,
    pub open_anomaly_id: Option<i64>,
    /// When the rule last changed: a decision made on an older read is dropped.
    pub updated_at: i64,
}

/// An anomaly (the reference's `Anomaly`, with where it came from and
/// whether it is over).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Anomaly {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = "uuid")]
    pub tenant_id: String,
    /// `error_rate_spike`, `latency_spike`, `volume_anomaly`, `cost_spike`
    /// or `score_drop`.
    #[serde(rename = "type")]
    #[schema(rename = "type", value_type = AnomalyType, inline, example = "error_rate_spike")]
    pub kind: String,
    /// `low`, `medium`, `high` or `critical`.
    #[schema(value_type = Severity, inline, example = "high")]
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

/// A rule's trailing window, measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Traces (or, for `score`, evaluations) in the window.
    pub samples: i64,
    /// The metric; `None` when there was nothing to measure.
    pub value: Option<f64>,
}

const RULE_COLUMNS: &str = "r.uuid, t.uuid, p.uuid, r.name, r.metric, r.operator, r.threshold, \
     r.window_secs, r.severity, r.min_samples, r.score_metric, r.enabled, a.uuid, r.created_at, \
     r.updated_at";
const RULE_FROM: &str = "failure_rules r JOIN tenants t ON t.id = r.tenant_id \
     LEFT JOIN projects p ON p.id = r.project_id LEFT JOIN anomalies a ON a.id = r.open_anomaly_id";

fn rule_from_row(r: &Row) -> rusqlite::Result<FailureRule> {
    let open: Option<String> = r.get(12)?;
    Ok(FailureRule {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        project_id: r.get(2)?,
        name: r.get(3)?,
        metric: r.get(4)?,
        operator: r.get(5)?,
        threshold: r.get(6)?,
        window_secs: r.get(7)?,
        severity: r.get(8)?,
        min_samples: r.get(9)?,
        score_metric: r.get(10)?,
        enabled: r.get(11)?,
        state: if open.is_some() { "firing" } else { "ok" }.to_owned(),
        open_anomaly_id: open,
        created_at: Timestamp(r.get(13)?),
        updated_at: Timestamp(r.get(14)?),
    })
}

fn rule_by_uuid(conn: &Connection, tenant_id: i64, uuid: &str) -> Result<Option<FailureRule>> {
    let sql =
        format!("SELECT {RULE_COLUMNS} FROM {RULE_FROM} WHERE r.tenant_id = ?1 AND r.uuid = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![tenant_id, uuid], rule_from_row)
        .optional()?)
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

fn anomaly_by_id(conn: &Connection, id: i64) -> Result<Option<Anomaly>> {
    let sql = format!("SELECT {ANOMALY_COLUMNS} FROM {ANOMALY_FROM} WHERE a.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], anomaly_from_row)
        .optional()?)
}

/// Inserts an anomaly; returns its internal id.
fn insert_anomaly(
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
fn recover(
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
fn event_data(anomaly: &Anomaly, extra: Option<(&str, Value)>) -> Value {
    let mut data = serde_json::to_value(anomaly).unwrap_or(Value::Null);
    if let (Some((key, value)), Some(map)) = (extra, data.as_object_mut()) {
        map.insert(key.to_owned(), value);
    }
    data
}

fn rule_summary(uuid: &str, name: &str) -> Value {
    json!({"id": uuid, "name": name})
}

/// Closes a rule's open episode because the rule changed: it no longer
/// watches what fired.
fn close_for_change(conn: &Connection, rule_id: i64, reason: &str) -> Result<()> {
    let row: Option<(Option<i64>, String, String)> = conn
        .prepare_cached("SELECT open_anomaly_id, uuid, name FROM failure_rules WHERE id = ?1")?
        .query_row([rule_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if let Some((Some(open), uuid, name)) = row {
        recover(
            conn,
            open,
            "failure.recovered",
            json!({"reason": reason}),
            Some(("rule", rule_summary(&uuid, &name))),
        )?;
        conn.prepare_cached("UPDATE failure_rules SET open_anomaly_id = NULL WHERE id = ?1")?
            .execute([rule_id])?;
    }
    Ok(())
}

/// Measures `metric` over `[from, to]` of a tenant's traffic (one project,
/// or all): from the rollups, or for `score` the completed evaluations.
pub(super) fn observe(
    conn: &Connection,
    tenant_id: i64,
    project_id: Option<i64>,
    metric: &str,
    score_metric: Option<&str>,
    from: i64,
    to: i64,
) -> Result<Observation> {
    if metric == "score" {
        let mut sql = "SELECT count(score), avg(score) FROM evaluations \
                       WHERE tenant_id = ? AND status = 'complete' AND score IS NOT NULL \
                       AND created_at BETWEEN ? AND ?"
            .to_owned();
        let mut args: Vec<SqlValue> = vec![tenant_id.into(), from.into(), to.into()];
        if let Some(p) = project_id {
            sql.push_str(" AND project_id = ?");
            args.push(p.into());
        }
        if let Some(m) = score_metric {
            sql.push_str(" AND metric_name = ?");
            args.push(m.to_owned().into());
        }
        let (samples, value) = conn
            .prepare_cached(&sql)?
            .query_row(rusqlite::params_from_iter(args), |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<f64>>(1)?))
            })?;
        return Ok(Observation { samples, value });
    }
    let result = metrics(
        conn,
        tenant_id,
        MetricsQuery {
            project_id,
            from,
            to,
            interval: None,
        },
    )?;
    Ok(measure(&result.total, metric))
}

/// A metric of a set of traces.
pub fn measure(t: &Totals, metric: &str) -> Observation {
    let samples = t.traces;
    let value = match metric {
        "volume" => Some(t.traces as f64),
        "cost" => Some(t.cost),
        _ if t.traces == 0 => None,
        "error_rate" => Some(t.errors as f64 / t.traces as f64),
        "latency_p50" => t.latency.quantile(0.50),
        "latency_p95" => t.latency.quantile(0.95),
        "latency_p99" => t.latency.quantile(0.99),
        _ => None,
    };
    Observation { samples, value }
}

/// What a rule's metric is raised as.
pub fn anomaly_kind(metric: &str) -> &'static str {
    match metric {
        "error_rate" => "error_rate_spike",
        "latency_p50" | "latency_p95" | "latency_p99" => "latency_spike",
        "volume" => "volume_anomaly",
        "cost" => "cost_spike",
        _ => "score_drop",
    }
}

impl Store {
    /// The organisation's rules, oldest first.
    pub async fn list_failure_rules(&self, tenant_id: i64) -> Result<Vec<FailureRule>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {RULE_COLUMNS} FROM {RULE_FROM} WHERE r.tenant_id = ?1 ORDER BY r.id"
            );
            let rows = conn
                .prepare_cached(&sql)?
                .query_map([tenant_id], rule_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn get_failure_rule(
        &self,
        tenant_id: i64,
        uuid: String,
    ) -> Result<Option<FailureRule>> {
        self.read(move |conn| rule_by_uuid(conn, tenant_id, &uuid))
            .await
    }

    /// Creates a rule unless the organisation already has `max` (then
    /// `Err(count)`); the creation is audited.
    pub async fn create_failure_rule(
        &self,
        tenant_id: i64,
        rule: NewFailureRule,
        max: usize,
        by: Actor,
    ) -> Result<std::result::Result<FailureRule, usize>> {
        self.write(move |conn| {
            let count: i64 = conn
                .prepare_cached("SELECT count(*) FROM failure_rules WHERE tenant_id = ?1")?
                .query_row([tenant_id], |r| r.get(0))?;
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            if count >= max {
                return Ok(Err(count));
            }
            let uuid = new_uuid();
            let now = now_micros();
            conn.prepare_cached(
                "INSERT INTO failure_rules (uuid, tenant_id, project_id, name, metric, operator, \
                 threshold, window_secs, severity, min_samples, score_metric, enabled, created_at, \
                 updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
            )?
            .execute(params![
                uuid,
                tenant_id,
                rule.project_id,
                rule.name,
                rule.metric,
                rule.operator,
                rule.threshold,
                rule.window_secs,
                rule.severity,
                rule.min_samples,
                rule.score_metric,
                rule.enabled,
                now
            ])?;
            let created = rule_by_uuid(conn, tenant_id, &uuid)?
                .ok_or_else(|| super::StoreError::Conflict("the rule vanished".into()))?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "failure_rule.create",
                Some(&uuid),
                serde_json::to_value(&created).unwrap_or(Value::Null),
            )?;
            Ok(Ok(created))
        })
        .await
    }

    /// Changes a rule; `None` when the organisation has no such rule. A
    /// rule turned off, or pointed at another metric or project, ends its
    /// open episode. The change is audited.
    pub async fn update_failure_rule(
        &self,
        tenant_id: i64,
        uuid: String,
        change: FailureRuleChange,
        by: Actor,
    ) -> Result<Option<FailureRule>> {
        self.write(move |conn| {
            let Some((id, project_id, metric)) = conn
                .prepare_cached(
                    "SELECT id, project_id, metric FROM failure_rules \
                     WHERE tenant_id = ?1 AND uuid = ?2",
                )?
                .query_row(params![tenant_id, uuid], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let c = change.clone();
            let moved = c.project_id.is_some_and(|p| p != project_id)
                || c.metric.as_ref().is_some_and(|m| *m != metric);
            if c.enabled == Some(false) {
                close_for_change(conn, id, "rule_disabled")?;
            } else if moved {
                close_for_change(conn, id, "rule_changed")?;
            }
            conn.prepare_cached(
                "UPDATE failure_rules SET \
                 project_id = CASE WHEN ?2 THEN ?3 ELSE project_id END, \
                 name = coalesce(?4, name), metric = coalesce(?5, metric), \
                 operator = coalesce(?6, operator), threshold = coalesce(?7, threshold), \
                 window_secs = coalesce(?8, window_secs), severity = coalesce(?9, severity), \
                 min_samples = coalesce(?10, min_samples), \
                 score_metric = CASE WHEN ?11 THEN ?12 ELSE score_metric END, \
                 enabled = coalesce(?13, enabled), updated_at = ?14 WHERE id = ?1",
            )?
            .execute(params![
                id,
                c.project_id.is_some(),
                c.project_id.flatten(),
                c.name,
                c.metric,
                c.operator,
                c.threshold,
                c.window_secs,
                c.severity,
                c.min_samples,
                c.score_metric.is_some(),
                c.score_metric.clone().flatten(),
                c.enabled,
                now_micros()
            ])?;
            let rule = rule_by_uuid(conn, tenant_id, &uuid)?;
            if let Some(rule) = &rule {
                audit::record(
                    conn,
                    tenant_id,
                    &by,
                    "failure_rule.update",
                    Some(&uuid),
                    serde_json::to_value(rule).unwrap_or(Value::Null),
                )?;
            }
            Ok(rule)
        })
        .await
    }

    /// Deletes a rule, ending its open episode; its anomalies stay. False
    /// when the organisation has no such rule. Audited.
    pub async fn delete_failure_rule(
        &self,
        tenant_id: i64,
        uuid: String,
        by: Actor,
    ) -> Result<bool> {
        self.write(move |conn| {
            let Some(id) = conn
                .prepare_cached("SELECT id FROM failure_rules WHERE tenant_id = ?1 AND uuid = ?2")?
                .query_row(params![tenant_id, uuid], |r| r.get::<_, i64>(0))
                .optional()?
            else {
                return Ok(false);
            };
            close_for_change(conn, id, "rule_deleted")?;
            conn.prepare_cached("DELETE FROM failure_rules WHERE id = ?1")?
                .execute([id])?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "failure_rule.delete",
                Some(&uuid),
                json!({}),
            )?;
            Ok(true)
        })
        .await
    }

    /// Every enabled rule of every organisation.
    pub async fn active_failure_rules(&self) -> Result<Vec<ActiveFailureRule>> {
        self.read(|conn| {
            let rows = conn
                .prepare_cached(
                    "SELECT id, uuid, tenant_id, project_id, name, metric, operator, threshold, \
                     window_secs, severity, min_samples, score_metric, open_anomaly_id, updated_at \
                     FROM failure_rules WHERE enabled ORDER BY id",
                )?
                .query_map([], |r| {
                    Ok(ActiveFailureRule {
                        id: r.get(0)?,
                        uuid: r.get(1)?,
                        tenant_id: r.get(2)?,
                        project_id: r.get(3)?,
                        name: r.get(4)?,
                        metric: r.get(5)?,
                        operator: r.get(6)?,
                        threshold: r.get(7)?,
                        window_secs: r.get(8)?,
                        severity: r.get(9)?,
                        min_samples: r.get(10)?,
                        score_metric: r.get(11)?,
                        open_anomaly_id: r.get(12)?,
                        updated_at: r.get(13)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Measures a metric over `[from, to]` (see [`observe`]).
    pub async fn observe_metric(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
        metric: String,
        score_metric: Option<String>,
        from: i64,
        to: i64,
    ) -> Result<Observation> {
        self.read(move |conn| {
            observe(
                conn,
                tenant_id,
                project_id,
                &metric,
                score_metric.as_deref(),
                from,
                to,
            )
        })
        .await
    }

    /// Opens an episode of `rule`: raises the anomaly and puts a
    /// `failure.detected` event in the outbox, unless the rule has changed
    /// since it was read (edited, turned off, deleted, or already firing).
    /// Returns the anomaly's internal id if one was raised.
    pub async fn fire_failure_rule(
        &self,
        rule: ActiveFailureRule,
        anomaly: NewAnomaly,
    ) -> Result<Option<i64>> {
        self.write(move |conn| {
            let current: Option<(bool, Option<i64>, i64)> = conn
                .prepare_cached(
                    "SELECT enabled, open_anomaly_id, updated_at FROM failure_rules WHERE id = ?1",
                )?
                .query_row([rule.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if current != Some((true, None, rule.updated_at)) {
                return Ok(None);
            }
            let id = insert_anomaly(conn, &anomaly, Some((rule.id, &rule.uuid)), now_micros())?;
            conn.prepare_cached("UPDATE failure_rules SET open_anomaly_id = ?2 WHERE id = ?1")?
                .execute(params![rule.id, id])?;
            if let Some(raised) = anomaly_by_id(conn, id)? {
                let data = event_data(
                    &raised,
                    Some(("rule", rule_summary(&rule.uuid, &rule.name))),
                );
                enqueue_event(conn, rule.tenant_id, "failure.detected", &data)?;
            }
            Ok(Some(id))
        })
        .await
    }

    /// Ends the open episode `anomaly_id` of `rule` (the condition cleared
    /// at `value`): sets `recovered_at` and puts a `failure.recovered`
    /// event in the outbox. False if the episode was no longer open.
    pub async fn recover_failure_rule(
        &self,
        rule: ActiveFailureRule,
        anomaly_id: i64,
        value: Option<f64>,
        samples: i64,
    ) -> Result<bool> {
        self.write(move |conn| {
            let open: Option<Option<i64>> = conn
                .prepare_cached("SELECT open_anomaly_id FROM failure_rules WHERE id = ?1")?
                .query_row([rule.id], |r| r.get(0))
                .optional()?;
            if open != Some(Some(anomaly_id)) {
                return Ok(false);
            }
            recover(
                conn,
                anomaly_id,
                "failure.recovered",
                json!({"reason": "condition_cleared", "value": value, "samples": samples}),
                Some(("rule", rule_summary(&rule.uuid, &rule.name))),
            )?;
            conn.prepare_cached("UPDATE failure_rules SET open_anomaly_id = NULL WHERE id = ?1")?
                .execute([rule.id])?;
            Ok(true)
        })
        .await
    }

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

    /// Traffic over `[from, to]` (one project, or all the organisation's),
    /// from the rollups.
    pub async fn traffic(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
        from: i64,
        to: i64,
    ) -> Result<Totals> {
        self.read(move |conn| {
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
