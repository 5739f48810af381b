//! Plan limits: per-tenant request rates in fixed one-minute windows, per
//! family of endpoints, with `X-RateLimit-*` headers on every authenticated
//! response; the monthly ingest quota; and plan gates (402).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::{AppState, Principal};
use crate::config::Plan;
use crate::error::AppError;
use crate::store::{now_micros, usage_month};

/// Endpoint families, each with its own window and limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ingest,
    Feedback,
    Read,
}

impl Family {
    /// Its name in the API document.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ingest => "ingest",
            Family::Feedback => "feedback",
            Family::Read => "read",
        }
    }

    fn limit(self, plan: Plan, state: &AppState) -> u64 {
        let limits = state.config.plans.limits(plan);
        match self {
            Family::Ingest => limits.ingest_requests_per_minute,
            Family::Feedback => limits.feedback_requests_per_minute,
            Family::Read => limits.reads_per_minute,
        }
    }
}

/// Where a request stands in its window.
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    /// `None`: unlimited.
    pub limit: Option<u64>,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset: u64,
}

/// Counters of the current window per tenant and family.
#[derive(Default)]
pub struct RateLimiter(Mutex<HashMap<(i64, Family), (u64, u64)>>);

impl RateLimiter {
    /// Counts a request; `Err` carries the 429 when the window is full.
    pub fn hit(&self, tenant_id: i64, family: Family, limit: u64) -> Result<RateInfo, RateInfo> {
        let now = now_micros().max(0) as u64 / 1_000_000;
        let (minute, reset) = (now / 60, 60 - now % 60);
        if limit == 0 {
            return Ok(RateInfo {
                limit: None,
                remaining: 0,
                reset,
            });
        }
        let Ok(mut windows) = self.0.lock() else {
            // A poisoned lock fails open: limits are a courtesy, not security.
            return Ok(RateInfo {
                limit: Some(limit),
                remaining: limit,
                reset,
            });
        };
        if windows.len() > 100_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let slot = windows.entry((tenant_id, family)).or_insert((minute, 0));
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        let info = |used: u64| RateInfo {
            limit: Some(limit),
            remaining: limit.saturating_sub(used),
            reset,
        };
        if slot.1 >= limit {
            return Err(info(slot.1));
        }
        slot.1 += 1;
        Ok(info(slot.1))
    }
}

/// Filled by the `Principal` extractor, read by [`rate_headers`].
#[derive(Clone, Default)]
pub struct RateSlot(pub Arc<Mutex<Option<RateInfo>>>);

impl RateSlot {
    pub fn set(&self, info: RateInfo) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(info);
        }
    }
}

/// Applies the tenant's request rate for the route's family.
pub fn check_rate(
    state: &AppState,
    parts: &axum::http::request::Parts,
    family: Family,
    tenant_id: i64,
    plan: Plan,
) -> Result<(), AppError> {
    let outcome = state
        .rates
        .hit(tenant_id, family, family.limit(plan, state));
    let info = match outcome {
        Ok(info) | Err(info) => info,
    };
    if let Some(slot) = parts.extensions.get::<RateSlot>() {
        slot.set(info);
    }
    outcome
        .map(|_| ())
        .map_err(|info| AppError::TooManyRequests {
            message: format!(
                "rate limit of {} requests a minute reached for this organisation",
                info.limit.unwrap_or(0)
            ),
            code: "rate_limited",
            retry_after: info.reset,
        })
}

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Puts `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds) on every
/// authenticated response; an unlimited plan says `unlimited`.
pub async fn rate_headers(mut req: Request, next: Next) -> Response {
    let slot = RateSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut response = next.run(req).await;
    let info = slot.0.lock().ok().and_then(|s| *s);
    if let Some(info) = info {
        let headers = response.headers_mut();
        match info.limit {
            Some(limit) => {
                headers.insert(LIMIT.clone(), limit.into());
                headers.insert(REMAINING.clone(), info.remaining.into());
            }
            None => {
                headers.insert(LIMIT.clone(), HeaderValue::from_static("unlimited"));
                headers.insert(REMAINING.clone(), HeaderValue::from_static("unlimited"));
            }
        }
        headers.insert(RESET.clone(), info.reset.into());
    }
    response
}

/// Refuses an ingest that would take the tenant past its monthly quota.
pub async fn check_monthly_quota(
    state: &AppState,
    principal: &Principal,
    traces: u64,
) -> Result<(), AppError> {
    let quota = state
        .config
        .plans
        .limits(principal.plan)
        .ingest_traces_per_month;
    if quota == 0 {
        return Ok(());
    }
    let now = now_micros();
    let used = state
        .store
        .monthly_usage(principal.tenant_id, usage_month(now))
        .await?;
    if used + traces > quota {
        return Err(AppError::TooManyRequests {
            message: format!(
                "the {} plan's quota of {quota} traces this month is used up ({used} ingested)",
                principal.plan.as_str()
            ),
            code: "monthly_quota_exceeded",
            retry_after: seconds_to_next_month(now),
        });
    }
    Ok(())
}

fn seconds_to_next_month(now_micros: i64) -> u64 {
    use chrono::{Datelike, TimeZone, Utc};
    let Some(now) = chrono::DateTime::from_timestamp_micros(now_micros) else {
        return 3600;
    };
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .map_or(3600, |next| (next - now).num_seconds().max(1) as u64)
}

/// The cheapest plan whose `allows` holds, for a 402's `required_plan`.
pub fn plan_gate(
    state: &AppState,
    current: Plan,
    what: &str,
    allows: impl Fn(&crate::config::PlanLimits) -> bool,
) -> Result<(), AppError> {
    if allows(state.config.plans.limits(current)) {
        return Ok(());
    }
    match Plan::ALL
        .into_iter()
        .find(|p| *p > current && allows(state.config.plans.limits(*p)))
    {
        Some(required) => Err(AppError::PlanUpgradeRequired {
            message: format!(
                "{what} needs the {} plan (this organisation is on {})",
                required.as_str(),
                current.as_str()
            ),
            required_plan: required.as_str(),
        }),
        None => Err(AppError::unprocessable(format!(
            "{what} is beyond every plan"
        ))),
    }
}
