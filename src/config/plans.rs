//! Plans, `[plans.*]`: what each plan allows an organisation.

use serde::{Deserialize, Serialize};

/// The plans an organisation can be on, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Starter,
    Pro,
    Enterprise,
}

impl Plan {
    pub const ALL: [Plan; 3] = [Plan::Starter, Plan::Pro, Plan::Enterprise];

    pub fn parse(name: &str) -> Option<Plan> {
        match name {
            "starter" => Some(Plan::Starter),
            "pro" => Some(Plan::Pro),
            "enterprise" => Some(Plan::Enterprise),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Starter => "starter",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }
}

/// What each plan allows; `[plans.starter]`, `[plans.pro]`, `[plans.enterprise]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlansConfig {
    pub starter: PlanLimits,
    pub pro: PlanLimits,
    pub enterprise: PlanLimits,
}

impl PlansConfig {
    pub fn limits(&self, plan: Plan) -> &PlanLimits {
        match plan {
            Plan::Starter => &self.starter,
            Plan::Pro => &self.pro,
            Plan::Enterprise => &self.enterprise,
        }
    }
}

/// Limits of one plan. Rates are per tenant and fixed one-minute window;
/// 0 means unlimited.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Read requests (queries, lists, management) per minute.
    pub reads_per_minute: u64,
    /// Ingest requests (JSON and OTLP) per minute.
    pub ingest_requests_per_minute: u64,
    /// Feedback and evaluation requests per minute.
    pub feedback_requests_per_minute: u64,
    /// Traces ingested per calendar month (UTC).
    pub ingest_traces_per_month: u64,
    /// The longest retention a project may be given, in days, and the
    /// retention of projects that set none; 0 means unlimited.
    pub max_retention_days: u32,
    /// Rows per trace, evaluation and dataset export; 0 means unlimited.
    pub export_max_rows: u64,
    /// Evaluations queued per calendar month (UTC), by hand, by rules and
    /// by dataset runs (one per item);
    /// 0 means unlimited.
    pub evals_per_month: u64,
    /// Auto-evaluation rules an organisation may have; 0 means unlimited.
    pub max_eval_rules: u64,
    /// Whether the organisation may create and test webhooks.
    #[serde(default = "allowed")]
    pub webhooks: bool,
}

fn allowed() -> bool {
    true
}
