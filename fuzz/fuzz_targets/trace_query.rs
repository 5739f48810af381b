//! `GET /v1/traces?…` (and the export, which takes the same filters): the
//! query string as the router hands it to the handler, parsed into the
//! filter, cursor and page size, then run as the handler runs it against a
//! real database holding the SDK's sample traces. A parameter the parser
//! lets through must never fail in the store (a 500).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::http::Uri;
use fuzz_support::{pricing, NOW_MICROS};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use trulayer_server::config::Synchronous;
use trulayer_server::error::AppError;
use trulayer_server::http::{parse_json, ListQuery};
use trulayer_server::ingest::BatchRequest;
use trulayer_server::store::{Actor, Store};

/// Bounds the list promises (`MAX_LIMIT`, `MAX_SEARCH_TERMS` in the API).
const MAX_LIMIT: usize = 200;
const MAX_SEARCH_TERMS: usize = 32;

/// Traces the real SDK sent, stored once per process.
const SAMPLE: &[u8] = include_bytes!("../seeds/ingest_json/sdk-batch-rag.json");

struct Database {
    runtime: Runtime,
    store: Store,
    tenant_id: i64,
}

fn database() -> &'static Database {
    static DATABASE: OnceLock<Database> = OnceLock::new();
    DATABASE.get_or_init(|| {
        // Under the fuzz crate's own target directory, one per process.
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("trace_query-db-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = Store::open(&dir, Synchronous::Normal, 2).expect("store opens");
        let tenant_id = runtime.block_on(async {
            let (tenant_id, project_id) = store
                .create_tenant("fuzz".into(), "default".into(), Actor::operator())
                .await
                .expect("tenant");
            let batch: BatchRequest = parse_json(SAMPLE).expect("the SDK's sample parses");
            let traces = batch
                .traces
                .into_iter()
                .map(|t| {
                    let trace = t.into_new_trace("", NOW_MICROS, pricing()).expect("valid");
                    (project_id, trace)
                })
                .collect();
            store
                .insert_traces(tenant_id, traces)
                .await
                .expect("stored");
            tenant_id
        });
        Database {
            runtime,
            store,
            tenant_id,
        }
    })
}

fuzz_target!(|query: &[u8]| {
    let mut target = b"/v1/traces?".to_vec();
    target.extend_from_slice(query);
    // What HTTP itself refuses never reaches the handler.
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    match ListQuery::parse(uri.query().unwrap_or_default()) {
        Ok(list) => {
            check(&list);
            list_as_the_handler_does(list);
        }
        Err(e) => assert!(matches!(e, AppError::BadRequest { .. }), "{e:?}"),
    }
});

fn check(list: &ListQuery) {
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

fn list_as_the_handler_does(list: ListQuery) {
    let db = database();
    db.runtime.block_on(async {
        let mut filter = list.filter;
        if let Some(reference) = list.project {
            let project = db
                .store
                .find_project(db.tenant_id, reference.clone())
                .await
                .unwrap_or_else(|e| panic!("project {reference:?}: {e}"));
            match project {
                Some(project) => filter.project_id = Some(project.id),
                None => return,
            }
        }
        let page = db
            .store
            .list_traces(db.tenant_id, filter, list.cursor, list.limit)
            .await
            .unwrap_or_else(|e| panic!("the store failed a parsed query: {e}"));
        assert!(page.traces.len() <= list.limit);
    });
}
