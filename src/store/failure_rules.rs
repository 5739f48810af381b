//! Failure rules, and how they fire and recover (the anomalies themselves
//! are in `anomalies`). A rule's open episode is `failure_rules.open_anomaly_id`; raising and
//! recovering an anomaly, and putting its webhook event in the outbox,
//! happen in one transaction, each only if the state read before still
//! holds, so an episode fires once however many passes see it.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{json, Value};

use super::anomalies::{anomaly_by_id, event_data, insert_anomaly, recover, NewAnomaly};
use super::audit::{self, Actor};
use super::metrics::{metrics, MetricsQuery, Totals};
use super::tenancy::new_uuid;
use super::webhooks::enqueue_event;
use super::{now_micros, Result, Store};
use crate::model::Timestamp;

/// What a failure rule watches: `error_rate` (0 to 1), `latency_p50`,
/// `latency_p95`, `latency_p99` (milliseconds), `cost` (USD over the
/// window), `volume` (traces over the window) or `score` (the mean
/// evaluation score over the window). The hosted service has `error_rate`,
/// `latency_p95`, `latency_p99` and `score`; the others are this server's.
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
    // `error_rate` (0 to 1), `latency_p50`, `latency_p95`, `latency_p99`
    // (milliseconds), `cost` (USD over the window), `volume` (traces over
    // the window) or `score` (mean evaluation score over the window).
    #[schema(value_type = RuleMetric, inline)]
    pub metric: String,
    // `gt`, `gte`, `lt` or `lte`: how the metric compares with `threshold`
    // when the rule fires.
    #[schema(value_type = RuleOperator, inline)]
    pub operator: String,
    #[schema(example = 0.05)]
    pub threshold: f64,
    /// The trailing window the metric is taken over, in seconds.
    #[schema(example = 300)]
    pub window_secs: i64,
    // `low`, `medium`, `high` or `critical`: the severity of its anomalies.
    #[schema(value_type = Severity, inline)]
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
}
