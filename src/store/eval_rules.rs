//! Auto-evaluation rules: their CRUD, and the scheduler's reads and writes
//! (the rules and new traces of a pass, and recording what it decided,
//! within the monthly caps, behind a mark kept in `eval_rule_state`).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::value::RawValue;

use super::audit::{self, Actor};
use super::evals::{count_evals, eval_trace, evals_this_month, EvalTrace};
use super::{now_micros, Result, Store, StoreError};
use crate::model::Timestamp;

/// An auto-evaluation rule (the reference's `EvalRule`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EvalRule {
    #[schema(format = "uuid")]
    pub id: String,
    /// The organisation's id.
    #[schema(format = "uuid")]
    pub tenant_id: String,
    /// The project whose new traces the rule evaluates.
    #[schema(format = "uuid")]
    pub project_id: String,
    #[schema(example = "not_empty")]
    pub metric_name: String,
    /// `llm` or `rule`.
    #[schema(example = "rule")]
    pub evaluator_type: String,
    /// The evaluator's settings, with the rule's `sample_rate` and `filter`;
    /// null when empty.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Box<RawValue>>,
    pub enabled: bool,
    /// `cheap` or `premium`.
    #[schema(example = "cheap")]
    pub model_tier: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// A rule to create.
#[derive(Debug, Clone)]
pub struct NewEvalRule {
    pub project_id: i64,
    pub metric_name: String,
    pub evaluator_type: String,
    pub config: Option<String>,
    pub enabled: bool,
    pub model_tier: String,
}

/// A change to a rule; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EvalRuleChange {
    pub enabled: Option<bool>,
    pub metric_name: Option<String>,
    /// `Some(None)` clears the config.
    pub config: Option<Option<String>>,
    pub model_tier: Option<String>,
}

/// What creating a rule came to.
#[derive(Debug, Clone)]
pub enum RuleCreated {
    Created(EvalRule),
    /// The organisation has this many rules, its plan's cap.
    OverQuota {
        count: u64,
    },
}

/// An enabled rule, as the scheduler applies it.
#[derive(Debug, Clone)]
pub struct ActiveRule {
    pub id: i64,
    pub uuid: String,
    pub tenant_id: i64,
    pub project_id: i64,
    pub metric_name: String,
    pub evaluator_type: String,
    pub config: String,
    pub model_tier: String,
    pub created_at: i64,
}

/// A newly stored trace, as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct NewTraceInfo {
    pub seq: i64,
    pub tenant_id: i64,
    pub project_id: i64,
    pub id: String,
    pub name: Option<String>,
    pub model: Option<String>,
    pub error: bool,
    pub tags: HashMap<String, String>,
    pub created_at: i64,
}

/// What the auto-evaluation scheduler looks at in one pass: the enabled
/// rules (with their organisations' plans) and the traces stored since its
/// mark.
#[derive(Debug, Clone)]
pub struct AutoCandidates {
    /// The mark the traces follow; the pass is recorded only if it still holds.
    pub mark: i64,
    pub rules: Vec<ActiveRule>,
    /// Plan per tenant with a rule.
    pub plans: HashMap<i64, String>,
    pub traces: Vec<NewTraceInfo>,
    /// More traces wait after these.
    pub more: bool,
}

/// One evaluation an auto-rule asks for: already decided (a rule run by
/// the scheduler) or to be queued (`verdict: None`).
#[derive(Debug, Clone)]
pub struct AutoEval {
    pub trace_seq: i64,
    pub tenant_id: i64,
    pub project_id: i64,
    pub rule: ActiveRule,
    /// Score, label and reasoning of a rule evaluated on the spot.
    pub verdict: Option<(f64, String, String)>,
}

/// What one scheduling pass stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scheduled {
    /// Evaluations queued (LLM evaluations).
    pub queued: usize,
    /// Rule evaluations run by the scheduler and stored complete.
    pub completed: usize,
    /// Evaluations not queued because a monthly cap was reached.
    pub over_quota: usize,
}

impl Store {
    /// Creates a rule unless the tenant already has `max_rules` (0: no cap).
    pub async fn create_eval_rule(
        &self,
        tenant_id: i64,
        rule: NewEvalRule,
        max_rules: u64,
        by: Actor,
    ) -> Result<RuleCreated> {
        self.write(move |conn| {
            if max_rules > 0 {
                let count: i64 = conn
                    .prepare_cached("SELECT count(*) FROM eval_rules WHERE tenant_id = ?1")?
                    .query_row([tenant_id], |r| r.get(0))?;
                if count as u64 >= max_rules {
                    return Ok(RuleCreated::OverQuota {
                        count: count as u64,
                    });
                }
            }
            let uuid = uuid::Uuid::now_v7().hyphenated().to_string();
            let now = now_micros();
            conn.prepare_cached(
                "INSERT INTO eval_rules (uuid, tenant_id, project_id, metric_name, evaluator_type, \
                 config, enabled, model_tier, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            )?
            .execute(params![
                uuid,
                tenant_id,
                rule.project_id,
                rule.metric_name,
                rule.evaluator_type,
                rule.config,
                rule.enabled,
                rule.model_tier,
                now
            ])?;
            let created = rule_by_uuid(conn, tenant_id, &uuid)?
                .ok_or_else(|| StoreError::Corrupt("a created rule vanished".into()))?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "eval_rule.create",
                Some(&created.id),
                serde_json::json!({
                    "metric_name": created.metric_name,
                    "project_id": created.project_id,
                }),
            )?;
            Ok(RuleCreated::Created(created))
        })
        .await
    }

    pub async fn list_eval_rules(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
    ) -> Result<Vec<EvalRule>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {RULE_COLUMNS} FROM {RULE_FROM} WHERE r.tenant_id = ?1 \
                 AND (?2 IS NULL OR r.project_id = ?2) ORDER BY r.id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![tenant_id, project_id], rule_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub async fn get_eval_rule(&self, tenant_id: i64, id: String) -> Result<Option<EvalRule>> {
        self.read(move |conn| rule_by_uuid(conn, tenant_id, &id))
            .await
    }

    pub async fn update_eval_rule(
        &self,
        tenant_id: i64,
        id: String,
        change: EvalRuleChange,
        by: Actor,
    ) -> Result<Option<EvalRule>> {
        self.write(move |conn| {
            let Some(current) = rule_by_uuid(conn, tenant_id, &id)? else {
                return Ok(None);
            };
            let config = match &change.config {
                Some(config) => config.clone(),
                None => current.config.as_ref().map(|c| c.get().to_owned()),
            };
            conn.prepare_cached(
                "UPDATE eval_rules SET enabled = ?3, metric_name = ?4, config = ?5, \
                 model_tier = ?6, updated_at = ?7 WHERE uuid = ?1 AND tenant_id = ?2",
            )?
            .execute(params![
                id,
                tenant_id,
                change.enabled.unwrap_or(current.enabled),
                change.metric_name.as_ref().unwrap_or(&current.metric_name),
                config,
                change.model_tier.as_ref().unwrap_or(&current.model_tier),
                now_micros()
            ])?;
            let Some(updated) = rule_by_uuid(conn, tenant_id, &id)? else {
                return Ok(None);
            };
            audit::record(
                conn,
                tenant_id,
                &by,
                "eval_rule.update",
                Some(&updated.id),
                serde_json::json!({"metric_name": updated.metric_name, "enabled": updated.enabled}),
            )?;
            Ok(Some(updated))
        })
        .await
    }

    /// Deletes a rule; its evaluations stay. Returns whether it existed.
    pub async fn delete_eval_rule(&self, tenant_id: i64, id: String, by: Actor) -> Result<bool> {
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM eval_rules WHERE uuid = ?1 AND tenant_id = ?2")?
                .execute(params![id, tenant_id])?
                > 0;
            if deleted {
                audit::record(
                    conn,
                    tenant_id,
                    &by,
                    "eval_rule.delete",
                    Some(&id),
                    serde_json::json!({}),
                )?;
            }
            Ok(deleted)
        })
        .await
    }

    /// Whether an enabled rule exists and traces wait to be looked at.
    pub async fn auto_eval_work(&self) -> Result<(bool, bool)> {
        self.read(|conn| {
            let rules: bool = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM eval_rules WHERE enabled)")?
                .query_row([], |r| r.get(0))?;
            let waiting: bool = conn
                .prepare_cached(
                    "SELECT coalesce((SELECT max(seq) FROM traces), 0) > \
                     (SELECT traces_seq FROM eval_rule_state WHERE id = 1)",
                )?
                .query_row([], |r| r.get(0))?;
            Ok((rules, waiting))
        })
        .await
    }

    /// The enabled rules and up to `batch` traces stored after the
    /// scheduler's mark; `None` when no rule is enabled.
    pub async fn auto_eval_candidates(&self, batch: usize) -> Result<Option<AutoCandidates>> {
        self.read(move |conn| candidates(conn, batch)).await
    }

    /// With no rule enabled, the traces stored so far are done with.
    pub async fn skip_auto_evals(&self) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached(
                "UPDATE eval_rule_state SET traces_seq = max(traces_seq, \
                 coalesce((SELECT max(seq) FROM traces), 0)) WHERE id = 1",
            )?
            .execute([])?;
            Ok(())
        })
        .await
    }

    /// The traces (and spans) evaluations look at, by key.
    pub async fn eval_traces(&self, seqs: Vec<i64>) -> Result<HashMap<i64, EvalTrace>> {
        self.read(move |conn| {
            let mut found = HashMap::new();
            for seq in seqs {
                if let Some(trace) = eval_trace(conn, seq)? {
                    found.insert(seq, trace);
                }
            }
            Ok(found)
        })
        .await
    }

    /// Stores a pass's evaluations (within each tenant's monthly cap,
    /// `quota_of(plan)`, 0: none) and moves the mark past `through`, if the
    /// mark is still `mark` (a purge may have lowered it: then nothing is
    /// stored and the next pass starts again).
    pub async fn record_auto_evals(
        &self,
        mark: i64,
        through: i64,
        evals: Vec<AutoEval>,
        plans: HashMap<i64, String>,
        quota_of: std::sync::Arc<dyn Fn(&str) -> u64 + Send + Sync>,
    ) -> Result<Scheduled> {
        self.write(move |conn| record(conn, mark, through, &evals, &plans, &*quota_of))
            .await
    }
}

const RULE_COLUMNS: &str = "r.uuid, ten.uuid, p.uuid, r.metric_name, r.evaluator_type, r.config, \
    r.enabled, r.model_tier, r.created_at, r.updated_at";
const RULE_FROM: &str =
    "eval_rules r JOIN tenants ten ON ten.id = r.tenant_id JOIN projects p ON p.id = r.project_id";

fn rule_from_row(r: &Row<'_>) -> rusqlite::Result<EvalRule> {
    Ok(EvalRule {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        project_id: r.get(2)?,
        metric_name: r.get(3)?,
        evaluator_type: r.get(4)?,
        config: r
            .get::<_, Option<String>>(5)?
            .and_then(|c| RawValue::from_string(c).ok()),
        enabled: r.get(6)?,
        model_tier: r.get(7)?,
        created_at: Timestamp(r.get(8)?),
        updated_at: Timestamp(r.get(9)?),
    })
}

fn rule_by_uuid(conn: &Connection, tenant_id: i64, id: &str) -> Result<Option<EvalRule>> {
    let sql =
        format!("SELECT {RULE_COLUMNS} FROM {RULE_FROM} WHERE r.uuid = ?1 AND r.tenant_id = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![id, tenant_id], rule_from_row)
        .optional()?)
}

fn candidates(conn: &Connection, batch: usize) -> Result<Option<AutoCandidates>> {
    let mark: i64 = conn
        .prepare_cached("SELECT traces_seq FROM eval_rule_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT r.id, r.uuid, r.tenant_id, r.project_id, r.metric_name, r.evaluator_type, \
         coalesce(r.config, '{}'), r.model_tier, r.created_at, ten.plan \
         FROM eval_rules r JOIN tenants ten ON ten.id = r.tenant_id WHERE r.enabled ORDER BY r.id",
    )?;
    let mut rules = Vec::new();
    let mut plans = HashMap::new();
    let rows = stmt.query_map([], |r| {
        Ok((
            ActiveRule {
                id: r.get(0)?,
                uuid: r.get(1)?,
                tenant_id: r.get(2)?,
                project_id: r.get(3)?,
                metric_name: r.get(4)?,
                evaluator_type: r.get(5)?,
                config: r.get(6)?,
                model_tier: r.get(7)?,
                created_at: r.get(8)?,
            },
            r.get::<_, String>(9)?,
        ))
    })?;
    for row in rows {
        let (rule, plan) = row?;
        plans.insert(rule.tenant_id, plan);
        rules.push(rule);
    }
    if rules.is_empty() {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, tenant_id, project_id, id, name, model, error IS NOT NULL, tag_map, created_at \
         FROM traces WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut traces = stmt
        .query_map(params![mark, batch as i64 + 1], |r| {
            let tags: Option<String> = r.get(7)?;
            Ok(NewTraceInfo {
                seq: r.get(0)?,
                tenant_id: r.get(1)?,
                project_id: r.get(2)?,
                id: r.get(3)?,
                name: r.get(4)?,
                model: r.get(5)?,
                error: r.get(6)?,
                tags: tags
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default(),
                created_at: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let more = traces.len() > batch;
    traces.truncate(batch);
    Ok(Some(AutoCandidates {
        mark,
        rules,
        plans,
        traces,
        more,
    }))
}

fn record(
    conn: &Connection,
    mark: i64,
    through: i64,
    evals: &[AutoEval],
    plans: &HashMap<i64, String>,
    quota_of: &(dyn Fn(&str) -> u64 + Send + Sync),
) -> Result<Scheduled> {
    let current: i64 = conn
        .prepare_cached("SELECT traces_seq FROM eval_rule_state WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    if current != mark {
        return Ok(Scheduled::default());
    }
    let mut done = Scheduled::default();
    let mut room: HashMap<i64, Option<u64>> = HashMap::new();
    let now = now_micros();
    let mut insert = conn.prepare_cached(
        "INSERT INTO evaluations (uuid, tenant_id, project_id, trace_seq, rule_id, metric_name, \
         evaluator_type, config, model_tier, status, score, label, reasoning, attempts, \
         run_after, created_at, started_at, finished_at) \
         SELECT ?1, ?2, ?3, seq, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16, ?16 \
         FROM traces WHERE seq = ?4",
    )?;
    for eval in evals {
        let tenant_id = eval.tenant_id;
        let left = match room.get(&tenant_id) {
            Some(left) => *left,
            None => {
                let quota = plans.get(&tenant_id).map_or(0, |p| quota_of(p));
                let left = (quota > 0).then(|| {
                    quota.saturating_sub(evals_this_month(conn, tenant_id, now).unwrap_or(quota))
                });
                room.insert(tenant_id, left);
                left
            }
        };
        if left == Some(0) {
            done.over_quota += 1;
            continue;
        }
        let rule = &eval.rule;
        let (status, score, label, reasoning, attempts, finished) = match &eval.verdict {
            Some((score, label, reasoning)) => (
                "complete",
                Some(*score),
                Some(label.as_str()),
                Some(reasoning.as_str()),
                1,
                Some(now),
            ),
            None => ("pending", None, None, None, 0, None),
        };
        let inserted = insert.execute(params![
            uuid::Uuid::now_v7().hyphenated().to_string(),
            tenant_id,
            eval.project_id,
            eval.trace_seq,
            rule.id,
            rule.metric_name,
            rule.evaluator_type,
            rule.config,
            rule.model_tier,
            status,
            score,
            label,
            reasoning,
            attempts,
            now,
            finished,
        ])?;
        if inserted == 0 {
            // The trace was deleted meanwhile.
            continue;
        }
        count_evals(conn, tenant_id, now, 1)?;
        room.insert(tenant_id, left.map(|l| l - 1));
        if eval.verdict.is_some() {
            done.completed += 1;
        } else {
            done.queued += 1;
        }
    }
    conn.prepare_cached("UPDATE eval_rule_state SET traces_seq = ?1 WHERE id = 1")?
        .execute([through])?;
    Ok(done)
}

/// Lowers the scheduler's mark below a reused `seq` after a purge.
pub(super) fn clamp_mark(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "UPDATE eval_rule_state SET traces_seq = \
         min(traces_seq, coalesce((SELECT max(seq) FROM traces), 0))",
    )?
    .execute([])?;
    Ok(())
}
