//! The filters of the trace list, shared by `GET /v1/traces` and its export
//! (`GET /v1/traces/export`), and the full-text terms of a search (`q`),
//! shared with the span search. Each parameter is checked with a 400 that
//! names it; a filter this server cannot apply is refused, never ignored.

use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::query::{parse_query, Page, ProjectParam, TimeWindow, Traces};
use crate::error::AppError;
use crate::store::{TraceCursor, TraceFilter};

/// The longest search text accepted, in bytes.
pub const MAX_SEARCH_TEXT: usize = 1024;
/// The most words and phrases one search may hold.
pub const MAX_SEARCH_TERMS: usize = 32;

/// The full-text terms of the `q` parameter, refused when it is too long or
/// holds no word to search for.
pub(super) fn search_terms(q: &str) -> Result<Vec<String>, AppError> {
    if q.len() > MAX_SEARCH_TEXT {
        return Err(AppError::bad_request(format!(
            "q: must be at most {MAX_SEARCH_TEXT} bytes"
        )));
    }
    let terms = crate::store::fts_terms(q);
    if terms.is_empty() {
        return Err(AppError::bad_request(
            "q: must contain a word or number to search for",
        ));
    }
    // Each term is its own index query: bound the work one request can ask for.
    if terms.len() > MAX_SEARCH_TERMS {
        return Err(AppError::bad_request(format!(
            "q: at most {MAX_SEARCH_TERMS} words or phrases"
        )));
    }
    Ok(terms)
}

/// A failure class of the hosted service's `failure_type` filter.
// Only the API document names these.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
enum FailureType {
    Timeout,
    RateLimit,
    InvalidResponse,
    ContextLength,
}

/// A feedback label.
// Only the API document names these.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
enum FeedbackLabel {
    Good,
    Bad,
    Neutral,
}

/// The filters of the trace list, as given; [`TraceQuery::filter`] checks
/// them. Every filter narrows the result; `project_id` is read apart
/// ([`ProjectParam`]), since the list and the export treat an unknown
/// project differently.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TraceQuery {
    /// Only traces of this model.
    model: Option<String>,
    /// `true`: only traces that failed; `false`: only traces that did not.
    #[param(value_type = Option<bool>)]
    error: Option<String>,
    /// Only traces that failed this way: `timeout`, `rate_limit`,
    /// `invalid_response` or `context_length`. Each trace is classed as it
    /// is stored, from its error message (else its first failing span's),
    /// status code and error type.
    #[param(value_type = Option<FailureType>, inline)]
    failure_type: Option<String>,
    /// Minimum trace latency in milliseconds (inclusive). A non-negative integer.
    #[param(value_type = Option<i64>, minimum = 0)]
    latency_min: Option<String>,
    /// Maximum trace latency in milliseconds (inclusive). A non-negative
    /// integer, not less than `latency_min` when both are given.
    #[param(value_type = Option<i64>, minimum = 0)]
    latency_max: Option<String>,
    /// Minimum total token count (prompt + completion, summed across spans)
    /// of the trace (inclusive). A non-negative integer.
    #[param(value_type = Option<i64>, minimum = 0)]
    token_count_min: Option<String>,
    /// Maximum total token count of the trace (inclusive). A non-negative
    /// integer, not less than `token_count_min` when both are given.
    #[param(value_type = Option<i64>, minimum = 0)]
    token_count_max: Option<String>,
    /// Only traces whose tag map holds the pair `tag_key` → `tag_value`.
    /// Given together with `tag_value`; one side alone is refused with
    /// `error.tags_filter_incomplete`.
    tag_key: Option<String>,
    /// The value paired with `tag_key`; see `tag_key`.
    tag_value: Option<String>,
    /// Only traces of this session.
    session_id: Option<String>,
    /// Only traces with at least one feedback of this label.
    #[param(value_type = Option<FeedbackLabel>, inline)]
    feedback: Option<String>,
    /// Full-text search: every word or quoted phrase must appear in the
    /// trace or one of its spans (a word ending in `*` matches as a
    /// prefix). At most 1024 bytes and 32 words or phrases.
    q: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    window: TimeWindow,
}

impl TraceQuery {
    /// The store's filter, each parameter checked with an error naming it
    /// (its `project_id` left for the caller to resolve).
    pub fn filter(self) -> Result<TraceFilter, AppError> {
        let count = |name: &'static str, value: Option<String>| -> Result<Option<i64>, AppError> {
            value
                .map(|v| {
                    v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        AppError::bad_request(format!("{name}: must be a non-negative integer"))
                    })
                })
                .transpose()
        };
        let failure_type = match self.failure_type {
            None => None,
            Some(kind) => match crate::failures::FAILURE_TYPES
                .iter()
                .find(|t| **t == kind.as_str())
            {
                Some(known) => Some(*known),
                None => {
                    return Err(AppError::bad_request(
                        "failure_type: must be one of timeout, rate_limit, invalid_response, \
                         context_length",
                    ))
                }
            },
        };
        let error = match self.error.as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return Err(AppError::bad_request("error: must be true or false")),
        };
        let filter = TraceFilter {
            project_id: None,
            model: self.model,
            error,
            failure_type,
            from: self.window.from,
            to: self.window.to,
            latency_min: count("latency_min", self.latency_min)?,
            latency_max: count("latency_max", self.latency_max)?,
            token_count_min: count("token_count_min", self.token_count_min)?,
            token_count_max: count("token_count_max", self.token_count_max)?,
            tag: match (self.tag_key, self.tag_value) {
                (Some(k), Some(v)) => Some((k, v)),
                (None, None) => None,
                _ => {
                    return Err(AppError::BadRequest {
                        message: "tag_key and tag_value must be given together".into(),
                        code: Some("error.tags_filter_incomplete"),
                    })
                }
            },
            session_id: self.session_id,
            feedback: match self.feedback.as_deref() {
                None => None,
                Some(label @ ("good" | "bad" | "neutral")) => Some(label.to_owned()),
                Some(_) => {
                    return Err(AppError::bad_request(
                        "feedback: must be good, bad or neutral",
                    ))
                }
            },
            text: match self.q {
                Some(q) => search_terms(&q)?,
                None => Vec::new(),
            },
        };
        for (min, max, name) in [
            (filter.latency_min, filter.latency_max, "latency_max"),
            (
                filter.token_count_min,
                filter.token_count_max,
                "token_count_max",
            ),
        ] {
            if let (Some(lo), Some(hi)) = (min, max) {
                if hi < lo {
                    return Err(AppError::bad_request(format!(
                        "{name}: must not be less than its lower bound"
                    )));
                }
            }
        }
        Ok(filter)
    }
}

/// The whole query of `GET /v1/traces`, checked as the list checks it:
/// the filter, the project reference (resolved by the list) and the page.
/// Public so that the parser can be fuzzed; nothing outside the API builds one.
pub struct ListQuery {
    pub filter: TraceFilter,
    /// The project reference (id, slug or name), resolved by the list.
    pub project: Option<String>,
    pub cursor: Option<TraceCursor>,
    pub limit: usize,
}

impl ListQuery {
    /// Reads a query string (without the `?`) as the list reads it.
    pub fn parse(query: &str) -> Result<ListQuery, AppError> {
        let ProjectParam { project_id } = parse_query(query)?;
        let filter = parse_query::<TraceQuery>(query)?.filter()?;
        let page: Page<Traces> = parse_query(query)?;
        Ok(ListQuery {
            filter,
            project: project_id,
            limit: page.size(),
            cursor: page.cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(query: &str) -> (String, &'static str) {
        match ListQuery::parse(query) {
            Ok(_) => panic!("{query}: accepted"),
            Err(e) => (e.to_string(), e.code()),
        }
    }

    #[test]
    fn every_filter_is_read_and_each_refusal_names_its_parameter() {
        let q = ListQuery::parse(
            "model=gpt-4o&error=true&failure_type=rate_limit&latency_min=5&latency_max=9&token_count_min=0\
             &token_count_max=10&tag_key=env&tag_value=prod&session_id=s1&feedback=bad\
             &q=refund&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&project_id=p\
             &limit=7&cursor=",
        )
        .unwrap();
        let f = &q.filter;
        assert_eq!(f.model.as_deref(), Some("gpt-4o"));
        assert_eq!(f.error, Some(true));
        assert_eq!(f.failure_type, Some("rate_limit"));
        assert_eq!((f.latency_min, f.latency_max), (Some(5), Some(9)));
        assert_eq!((f.token_count_min, f.token_count_max), (Some(0), Some(10)));
        assert_eq!(f.tag, Some(("env".into(), "prod".into())));
        assert_eq!(f.session_id.as_deref(), Some("s1"));
        assert_eq!(f.feedback.as_deref(), Some("bad"));
        assert_eq!(f.text.len(), 1);
        assert!(f.from.is_some() && f.to.is_some());
        assert_eq!(q.project.as_deref(), Some("p"));
        assert_eq!((q.limit, q.cursor.is_none()), (7, true));
        assert_eq!(ListQuery::parse("").unwrap().limit, 50);

        for (query, starts) in [
            ("latency_min=-1", "latency_min: "),
            ("token_count_max=1.5", "token_count_max: "),
            ("latency_min=9&latency_max=5", "latency_max: "),
            ("error=maybe", "error: "),
            ("feedback=meh", "feedback: "),
            ("failure_type=gremlins", "failure_type: "),
            ("from=soon", "from: "),
            ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to: "),
            ("limit=0", "limit: "),
            ("cursor=abc", "cursor: "),
            ("q=%21%21", "q: "),
        ] {
            let (message, code) = error(query);
            assert!(message.starts_with(starts), "{query}: {message}");
            assert_eq!(code, "bad_request", "{query}");
        }
        assert!(error("model=a&model=b").0.contains("model"));
        assert!(ListQuery::parse("failure_type=context_length").is_ok());
        assert_eq!(error("tag_value=x").1, "error.tags_filter_incomplete");
    }
}
