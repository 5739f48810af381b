//! `GET /v1/traces?…` (and the export, which takes the same filters): the
//! query string read as the router and the `Query` extractor read it, then
//! parsed into the filter, cursor and page size the store is given.
#![no_main]

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::Uri;
use libfuzzer_sys::fuzz_target;
use trulayer_server::error::AppError;
use trulayer_server::http::ListQuery;

/// Bounds the list promises (`MAX_LIMIT`, `MAX_SEARCH_TERMS` in the API).
const MAX_LIMIT: usize = 200;
const MAX_SEARCH_TERMS: usize = 32;

fuzz_target!(|query: &[u8]| {
    let mut target = b"/v1/traces?".to_vec();
    target.extend_from_slice(query);
    // What HTTP itself refuses never reaches the handler.
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let Ok(Query(params)) = Query::<HashMap<String, String>>::try_from_uri(&uri) else {
        return;
    };
    match ListQuery::parse(&params) {
        Ok(list) => {
            assert!(
                (1..=MAX_LIMIT).contains(&list.limit),
                "limit {}",
                list.limit
            );
            let filter = &list.filter;
            for (min, max) in [
                (filter.latency_min, filter.latency_max),
                (filter.token_count_min, filter.token_count_max),
                (filter.from, filter.to),
            ] {
                if let (Some(lo), Some(hi)) = (min, max) {
                    assert!(lo <= hi);
                }
            }
            for count in [
                filter.latency_min,
                filter.latency_max,
                filter.token_count_min,
                filter.token_count_max,
            ]
            .into_iter()
            .flatten()
            {
                assert!(count >= 0);
            }
            assert!(filter.text.len() <= MAX_SEARCH_TERMS);
            for term in &filter.text {
                // One FTS5 string, quoted, with no quote inside to end it early
                // and no control character, optionally a prefix query.
                let inner = term
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix("\"*").or_else(|| t.strip_suffix('"')))
                    .unwrap_or_else(|| panic!("not a quoted term: {term:?}"));
                assert!(!inner.contains('"') && !inner.chars().any(char::is_control));
                assert!(inner.chars().any(char::is_alphanumeric));
            }
            if let Some(feedback) = &filter.feedback {
                assert!(["good", "bad", "neutral"].contains(&feedback.as_str()));
            }
        }
        Err(e) => assert!(matches!(e, AppError::BadRequest { .. }), "{e:?}"),
    }
});
