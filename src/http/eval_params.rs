//! What the evaluation routes share: the check of an evaluator (type,
//! metric name, config) that evaluations and rules both run, and the query
//! parameters of the evaluation lists and summaries (`metric`, scores,
//! times, the window of a summary), and the checks the dataset routes
//! share (a dataset id in a path, a bounded text field).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use utoipa::IntoParams;

use super::query::{parse_query, TimeWindow};
use crate::error::AppError;
use crate::eval::evaluator::resolve;
use crate::ingest::parse_time;
use crate::store::now_micros;

/// The longest metric name, in characters.
pub const MAX_METRIC_CHARS: usize = 128;
/// The largest `config`, as JSON.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Checks what every evaluation and rule needs: the type, the metric name,
/// and a config (an object, within its size) that resolves to something to
/// run. Returns the config as stored.
pub fn check_eval(
    evaluator_type: &str,
    metric_name: &str,
    config: Option<&Value>,
) -> Result<Map<String, Value>, String> {
    if !matches!(evaluator_type, "llm" | "rule") {
        return Err("evaluator_type: must be llm or rule".into());
    }
    let chars = metric_name.chars().count();
    if metric_name.trim().is_empty() || chars > MAX_METRIC_CHARS {
        return Err(format!(
            "metric_name: must be 1 to {MAX_METRIC_CHARS} characters"
        ));
    }
    let config = match config {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err("config: must be an object".into()),
    };
    let value = Value::Object(config);
    if value.to_string().len() > MAX_CONFIG_BYTES {
        return Err(format!("config: at most {MAX_CONFIG_BYTES} bytes of JSON"));
    }
    if let Some(tier) = value.get("model_tier") {
        if !matches!(tier.as_str(), Some("cheap" | "premium")) {
            return Err("config.model_tier: must be cheap or premium".into());
        }
    }
    resolve(evaluator_type, metric_name, &value)?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Ok(Map::new()),
    }
}

/// `metric`, where it filters: a metric name, matched exactly. Given empty,
/// it is refused (the reference does), unlike other empty parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricParam {
    /// Only this metric (its `metric_name`, matched exactly); not empty.
    #[param(min_length = 1)]
    pub metric: Option<String>,
}

/// `metric`, where a summary is of one metric: required.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequiredMetric {
    /// The metric summed up (its `metric_name`, matched exactly).
    #[param(required = true, min_length = 1)]
    metric: Option<String>,
}

impl RequiredMetric {
    pub fn into_name(self) -> String {
        self.metric.unwrap_or_default()
    }
}

/// Reads `metric` from the raw query, which still shows an empty value.
fn metric_of(parts: &Parts) -> Result<Option<String>, AppError> {
    let raw = parts.uri.query().unwrap_or_default();
    if form_urlencoded::parse(raw.as_bytes()).any(|(k, v)| k == "metric" && v.is_empty()) {
        return Err(AppError::bad_request("metric: must not be empty"));
    }
    Ok(parse_query::<MetricParam>(raw)?.metric)
}

impl<S: Send + Sync> FromRequestParts<S> for MetricParam {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        Ok(MetricParam {
            metric: metric_of(parts)?,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequiredMetric {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        match metric_of(parts)? {
            Some(metric) => Ok(RequiredMetric {
                metric: Some(metric),
            }),
            None => Err(AppError::bad_request("metric: is required")),
        }
    }
}

/// A summary's window: `to` defaults to now, `from` to `span` before `to`
/// (or the beginning, without a span); `to` must not be before `from`.
pub fn summary_window(window: TimeWindow, span: Option<i64>) -> Result<(i64, i64), AppError> {
    let to = window.to.unwrap_or_else(now_micros);
    let from = window.from.unwrap_or(match span {
        Some(span) => to - span,
        None => 0,
    });
    if to < from {
        return Err(AppError::bad_request("to: must not be before from"));
    }
    Ok((from, to))
}

/// A query value read by `parse`; refused with `what` it must be (the
/// query's reader names the parameter).
fn parsed<'de, D: Deserializer<'de>, T>(
    d: D,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|raw| parse(raw.trim()).ok_or_else(|| D::Error::custom(format!("must be {what}"))))
        .transpose()
}

/// A score bound: a number from 0 to 1.
pub fn score<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    parsed(d, "a number from 0 to 1", |raw| {
        raw.parse::<f64>().ok().filter(|s| (0.0..=1.0).contains(s))
    })
}

/// An RFC 3339 time, in microseconds.
pub fn time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    parsed(
        d,
        "an RFC 3339 time such as 2026-01-02T03:04:05Z",
        parse_time,
    )
}

/// A trace id: a UUID, in its canonical form.
pub fn trace_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parsed(d, "a trace id (UUID)", canonical_uuid)
}

/// `true` or `false` (also `1` or `0`).
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    parsed(d, "true or false", |raw| match raw {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    })
}

/// A whole number from `MIN` to `MAX`.
pub fn whole<'de, D: Deserializer<'de>, const MIN: usize, const MAX: usize>(
    d: D,
) -> Result<Option<usize>, D::Error> {
    parsed(d, &format!("a whole number from {MIN} to {MAX}"), |raw| {
        raw.parse::<usize>()
            .ok()
            .filter(|n| (MIN..=MAX).contains(n))
    })
}

/// A UUID in its canonical (hyphenated, lower-case) form.
pub fn canonical_uuid(raw: &str) -> Option<String> {
    uuid::Uuid::parse_str(raw)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// A text field within `max` characters, or a 400 naming it.
pub fn bounded(field: &str, text: &str, max: usize) -> Result<(), AppError> {
    if text.trim().is_empty() || text.chars().count() > max {
        return Err(AppError::bad_request(format!(
            "{field}: must be 1 to {max} characters"
        )));
    }
    Ok(())
}

/// The id of a dataset in a path: not a UUID is as unknown as another's.
pub fn dataset_id(raw: &str) -> Result<String, AppError> {
    canonical_uuid(raw).ok_or(AppError::NotFound("dataset"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Q {
        #[serde(default, deserialize_with = "score")]
        score_min: Option<f64>,
        #[serde(default, deserialize_with = "whole::<_, 1, 100>")]
        buckets: Option<usize>,
        #[serde(flatten)]
        window: TimeWindow,
    }

    fn parse(raw: &str) -> Result<Q, String> {
        parse_query::<Q>(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn a_parameter_that_does_not_fit_is_named() {
        let q = parse("score_min=0.5&buckets=4&from=2026-01-01T00:00:00Z").unwrap();
        assert_eq!((q.score_min, q.buckets), (Some(0.5), Some(4)));
        assert!(q.window.from.is_some());
        assert_eq!(
            parse("score_min=1.5").err().unwrap(),
            "score_min: must be a number from 0 to 1"
        );
        assert_eq!(
            parse("buckets=101").err().unwrap(),
            "buckets: must be a whole number from 1 to 100"
        );
        assert!(parse("to=x").err().unwrap().starts_with("to: "));
    }

    #[test]
    fn a_summary_window_has_defaults_and_an_order() {
        let day = 86_400_000_000;
        let (from, to) = summary_window(TimeWindow::default(), Some(day)).unwrap();
        assert_eq!(to - from, day);
        let (from, _) = summary_window(TimeWindow::default(), None).unwrap();
        assert_eq!(from, 0);
        let ahead = TimeWindow {
            from: Some(now_micros() + day),
            to: None,
        };
        assert_eq!(
            summary_window(ahead, None).err().unwrap().to_string(),
            "to: must not be before from"
        );
    }
}
