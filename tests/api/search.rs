//! Full-text search: `GET /v1/traces?q=` (and the export, which takes the
//! same filters) and `GET /v1/search/spans`.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, sample_trace, TestServer};

/// A query string with every value percent-encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://localhost/").expect("url");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_owned()
}

/// The ids of every trace `q` (and the `extra` filters) keeps, all pages.
async fn found(server: &TestServer, q: &str, extra: &str, limit: usize) -> Vec<String> {
    let mut filters = query(&[("q", q)]);
    if !extra.is_empty() {
        filters.push('&');
        filters.push_str(extra);
    }
    let ids = server.list_all(&filters, limit).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a trace repeated for {filters}");
    ids
}

/// Like [`found`], as a set.
async fn found_set(server: &TestServer, q: &str, extra: &str) -> HashSet<String> {
    found(server, q, extra, 50).await.into_iter().collect()
}

fn set<S: AsRef<str>>(ids: &[S]) -> HashSet<String> {
    ids.iter().map(|s| s.as_ref().to_owned()).collect()
}

/// Every span search result for `q` (and the `extra` parameters), following
/// the cursors with pages of `limit`; checks each page's shape.
async fn all_spans(server: &TestServer, q: &str, extra: &str, limit: usize) -> Vec<Value> {
    let mut results = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/search/spans?limit={limit}&{}", query(&[("q", q)]));
        if !extra.is_empty() {
            path.push('&');
            path.push_str(extra);
        }
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.get_json(&path).await;
        let hits = page["results"].as_array().expect("results").clone();
        assert!(hits.len() <= limit, "{path}: more than the limit");
        results.extend(hits);
        match page.get("next_cursor") {
            Some(c) => {
                let c = c.as_str().expect("next_cursor is a string");
                assert!(!c.is_empty(), "{path}: empty cursor");
                cursor = Some(c.to_owned());
            }
            None => return results,
        }
    }
    panic!("span search for {q:?} never reached its last page");
}

fn span_ids(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["span_id"].as_str().expect("span_id").to_owned())
        .collect()
}

/// Creates a second tenant with `key` as its API key; returns its project.
async fn other_tenant(server: &TestServer, key: &str) -> i64 {
    server.other_tenant(key).await
}

/// A trace whose one span has the given id, name, type and output.
fn with_span(trace_name: &str, span_id: &str, span_name: &str, kind: &str, output: &str) -> Value {
    let mut t = sample_trace(trace_name);
    t["spans"] = json!([{
        "id": span_id,
        "name": span_name,
        "type": kind,
        "output": output,
        "start_time": "2026-03-01T10:00:00.5Z",
        "end_time": "2026-03-01T10:00:02Z"
    }]);
    t
}

#[tokio::test]
async fn q_finds_a_trace_by_its_own_text_or_by_any_of_its_spans() {
    let server = TestServer::start().await;
    // Each distinctive word is in exactly one place of one trace.
    let mut span_output = sample_trace("plain");
    span_output["spans"][0]["output"] = json!("Your quokka request was approved.");
    let mut span_name = sample_trace("plain");
    span_name["spans"][0]["name"] = json!("lookup-marmoset");
    let mut span_error = sample_trace("plain");
    span_error["spans"]
        .as_array_mut()
        .expect("spans")
        .push(json!({"name": "tool", "type": "tool", "input": "x", "error": "pangolin timed out"}));
    let mut span_input = sample_trace("plain");
    span_input["spans"][0]["input"] = json!("Summarise the narwhal report");
    let trace_name = sample_trace("capybara pipeline");
    let mut trace_input = sample_trace("plain");
    trace_input["input"] = json!("Where do axolotls live?");
    let mut trace_output = sample_trace("plain");
    trace_output["output"] = json!("Ask the wombat.");
    let mut trace_error = sample_trace("plain");
    trace_error["error"] = json!("Traceback: ocelot overflow");
    let mut ids = Vec::new();
    for t in [
        span_output,
        span_name,
        span_error,
        span_input,
        trace_name,
        trace_input,
        trace_output,
        trace_error,
    ] {
        ids.push(server.ingest(t).await);
    }
    // Ten traces that match nothing distinctive.
    for i in 0..10 {
        server.ingest(sample_trace(&format!("noise {i}"))).await;
    }

    for (q, want) in [
        ("quokka", &ids[0]),
        ("marmoset", &ids[1]),
        ("pangolin", &ids[2]),
        ("narwhal", &ids[3]),
        ("capybara", &ids[4]),
        ("axolotls", &ids[5]),
        ("wombat", &ids[6]),
        ("ocelot", &ids[7]),
        // Case does not matter, either way round.
        ("QUOKKA", &ids[0]),
        ("Wombat", &ids[6]),
        // Words from two fields of the same span.
        ("narwhal llm-call", &ids[3]),
    ] {
        assert_eq!(found(&server, q, "", 50).await, [want.as_str()], "q={q}");
    }
    // Words are whole words, not substrings.
    assert!(found(&server, "quokk", "", 50).await.is_empty());
    assert!(found(&server, "zebra", "", 50).await.is_empty());
    // Every word must match: a word no trace has rules a match out.
    assert!(found(&server, "quokka zebra", "", 50).await.is_empty());
    // The sample span's name is in every trace but the one whose span was
    // renamed.
    let llm = found(&server, "llm", "", 7).await;
    assert_eq!(llm.len(), 17);
    assert!(!llm.contains(&ids[1]));
    // An empty q is no filter at all.
    assert_eq!(server.list_all("q=", 7).await.len(), 18);
    server.stop().await;
}

#[tokio::test]
async fn words_phrases_prefixes_and_diacritics() {
    let server = TestServer::start().await;
    let mut texts = Vec::new();
    for output in [
        "alpha beta gamma",
        "beta alpha",
        "only alpha here",
        "The refund was issued",
        "Refunded twice, then refunding",
        "Un café crème, s'il vous plaît",
        "a naive question",
    ] {
        let mut t = sample_trace("plain");
        t["spans"][0]["output"] = json!(output);
        texts.push(server.ingest(t).await);
    }
    let [abg, ba, alpha_only, refund, refunded, cafe, naive] = &texts[..] else {
        unreachable!()
    };
    for (q, want) in [
        ("alpha", vec![abg, ba, alpha_only]),
        ("alpha beta", vec![abg, ba]),
        ("beta alpha", vec![abg, ba]),
        ("\"alpha beta\"", vec![abg]),
        ("\"beta alpha\"", vec![ba]),
        ("\"alpha beta\" gamma", vec![abg]),
        ("\"alpha gamma\"", vec![]),
        ("refund", vec![refund]),
        ("refun*", vec![refund, refunded]),
        ("REFUN*", vec![refund, refunded]),
        ("refun", vec![]),
        ("refunded", vec![refunded]),
        // Diacritics are ignored on both sides.
        ("cafe", vec![cafe]),
        ("café", vec![cafe]),
        ("CAFE creme", vec![cafe]),
        ("plait", vec![cafe]),
        ("naïve", vec![naive]),
        ("naive", vec![naive]),
    ] {
        assert_eq!(found_set(&server, q, "").await, set(&want), "q={q}");
    }
    // The span search agrees.
    let spans = all_spans(&server, "\"alpha beta\"", "", 20).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["trace_id"], abg.as_str());
    assert_eq!(all_spans(&server, "cafe", "", 20).await.len(), 1);
    assert_eq!(all_spans(&server, "refun*", "", 20).await.len(), 2);
    server.stop().await;
}

/// One trace of [`q_combines_with_every_list_filter_paging_and_export`],
/// with the attributes the filters look at.
struct Spec {
    id: String,
    needle: bool,
    second: bool,
    model: &'static str,
    error: bool,
    minute: u32,
    latency: u64,
    tokens: u64,
    env: &'static str,
    session: bool,
    good: bool,
}

#[tokio::test]
async fn q_combines_with_every_list_filter_paging_and_export() {
    let server = TestServer::start().await;
    let second = server
        .running()
        .store()
        .clone()
        .create_project(
            1,
            "second".into(),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("project");
    let mut specs = Vec::new();
    let mut traces = Vec::new();
    for i in 0..24u32 {
        let spec = Spec {
            id: uuid::Uuid::new_v4().to_string(),
            needle: i % 2 == 0,
            second: i % 3 == 0,
            model: if i % 5 < 2 {
                "gpt-4o"
            } else {
                "claude-3-5-haiku"
            },
            error: i % 3 == 1 || i % 8 == 0,
            minute: i,
            latency: 100 * u64::from(i),
            tokens: 10 * u64::from(i) + 1,
            env: if i % 4 < 2 { "prod" } else { "dev" },
            session: i % 5 == 0 || i % 7 == 0,
            good: i % 3 == 2 || i == 4,
        };
        // The word sits in the trace's input for some, in a span's output
        // for the others.
        let (input, output) = match (spec.needle, i % 4) {
            (true, 0) => ("hello", "the needle is here"),
            (true, _) => ("a needle in the input", "nothing"),
            (false, _) => ("hello", "just hay"),
        };
        traces.push(json!({
            "id": spec.id,
            "project_id": if spec.second { "second" } else { "default" },
            "name": format!("t{i}"),
            "input": input,
            "output": "done",
            "model": spec.model,
            "latency_ms": spec.latency,
            "error": if spec.error { json!("it failed") } else { Value::Null },
            "tags": {"env": spec.env},
            "session_id": if spec.session { json!("sess-1") } else { Value::Null },
            "started_at": format!("2026-03-01T10:{:02}:00Z", spec.minute),
            "spans": [{
                "name": "generate", "type": "llm", "model": spec.model,
                "output": output, "prompt_tokens": spec.tokens - 1, "completion_tokens": 1
            }]
        }));
        specs.push(spec);
    }
    let resp = server
        .post("/v1/ingest/batch", &json!({ "traces": traces }))
        .await;
    assert_eq!(resp.status(), 201);
    for s in specs.iter().filter(|s| s.good) {
        let resp = server
            .post("/v1/feedback", &json!({"trace_id": s.id, "label": "good"}))
            .await;
        assert_eq!(resp.status(), 201);
    }

    let second_id = second.uuid.clone();
    type Keep = Box<dyn Fn(&Spec) -> bool>;
    let cases: Vec<(String, Keep)> = vec![
        (String::new(), Box::new(|_| true)),
        (format!("project_id={second_id}"), Box::new(|s| s.second)),
        ("project_id=default".into(), Box::new(|s| !s.second)),
        ("model=gpt-4o".into(), Box::new(|s| s.model == "gpt-4o")),
        ("error=true".into(), Box::new(|s| s.error)),
        ("error=false".into(), Box::new(|s| !s.error)),
        (
            format!("error=true&project_id={second_id}"),
            Box::new(|s| s.error && s.second),
        ),
        (
            "from=2026-03-01T10:05:00Z&to=2026-03-01T10:15:00Z".into(),
            Box::new(|s| (5..=15).contains(&s.minute)),
        ),
        ("latency_min=900".into(), Box::new(|s| s.latency >= 900)),
        ("latency_max=1200".into(), Box::new(|s| s.latency <= 1200)),
        ("token_count_min=101".into(), Box::new(|s| s.tokens >= 101)),
        ("token_count_max=151".into(), Box::new(|s| s.tokens <= 151)),
        (
            "tag_key=env&tag_value=prod".into(),
            Box::new(|s| s.env == "prod"),
        ),
        ("session_id=sess-1".into(), Box::new(|s| s.session)),
        ("feedback=good".into(), Box::new(|s| s.good)),
        (
            "model=claude-3-5-haiku&error=false&tag_key=env&tag_value=dev".into(),
            Box::new(|s| s.model != "gpt-4o" && !s.error && s.env == "dev"),
        ),
    ];
    for (filters, keep) in &cases {
        // Newest first, like the list without q.
        let want: Vec<String> = specs
            .iter()
            .rev()
            .filter(|s| s.needle && keep(s))
            .map(|s| s.id.clone())
            .collect();
        let got = found(&server, "needle", filters, 2).await;
        assert_eq!(got, want, "q=needle&{filters}");
        // And with the word absent, the filter alone keeps the others too.
        let without: HashSet<String> = server.list_all(filters, 50).await.into_iter().collect();
        let want_all: HashSet<String> = specs
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(without, want_all, "{filters}");
    }
    // The error filter with the word: at least a few to page through.
    let with_errors = found(&server, "needle", "error=true", 2).await;
    assert!(with_errors.len() >= 4, "{}", with_errors.len());

    // The export takes q with the other filters.
    let path = format!(
        "/v1/traces/export?format=jsonl&{}&error=false&project_id=default",
        query(&[("q", "needle")])
    );
    let resp = server.get(&path).await;
    assert_eq!(resp.status(), 200);
    let jsonl = resp.text().await.expect("body");
    let exported: HashSet<String> = jsonl
        .lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).expect("a JSON line");
            row["id"].as_str().expect("id").to_owned()
        })
        .collect();
    let want: HashSet<String> = specs
        .iter()
        .filter(|s| s.needle && !s.error && !s.second)
        .map(|s| s.id.clone())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(exported, want);
    let resp = server
        .get(&format!(
            "/v1/traces/export?{}",
            query(&[("q", "needle absentword")])
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let csv = resp.text().await.expect("body");
    assert_eq!(csv.lines().count(), 1, "only the header: {csv}");
    expect_error(server.get("/v1/traces/export?q=!!!").await, 400).await;
    server.stop().await;
}

#[tokio::test]
async fn another_tenants_text_is_never_found() {
    let server = TestServer::start().await;
    const OTHER: &str = "tl_search_other_0123456789abcd";
    other_tenant(&server, OTHER).await;

    let mine = server
        .ingest(with_span(
            "mine",
            "my-span",
            "generate",
            "llm",
            "walrus on the shore",
        ))
        .await;
    let my_project = server.get_json(&format!("/v1/traces/{mine}")).await["project_id"]
        .as_str()
        .expect("project")
        .to_owned();
    let resp = server
        .post_as(
            OTHER,
            "/v1/ingest",
            &with_span(
                "theirs",
                "their-span",
                "generate",
                "llm",
                "walrus and secretword",
            ),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let theirs: Value = resp.json().await.expect("JSON");
    let theirs = theirs["id"].as_str().expect("id").to_owned();

    // Each tenant finds only its own trace and span.
    assert_eq!(found(&server, "walrus", "", 50).await, [mine.as_str()]);
    assert!(found(&server, "secretword", "", 50).await.is_empty());
    let spans = all_spans(&server, "walrus", "", 20).await;
    assert_eq!(span_ids(&spans), ["my-span"]);
    assert_eq!(spans[0]["trace_id"], mine.as_str());
    assert!(all_spans(&server, "secretword", "", 20).await.is_empty());
    assert!(all_spans(&server, "secret*", "", 20).await.is_empty());

    let page: Value = server
        .get_as(OTHER, "/v1/traces?q=walrus")
        .await
        .json()
        .await
        .expect("JSON");
    let ids: Vec<&str> = page["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [theirs.as_str()]);
    let page: Value = server
        .get_as(OTHER, "/v1/search/spans?q=walrus")
        .await
        .json()
        .await
        .expect("JSON");
    let results = page["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{page}");
    assert_eq!(results[0]["span_id"], "their-span");
    assert_ne!(results[0]["project_id"], my_project.as_str());
    // Naming my project does not reach into my tenant.
    expect_error(
        server
            .get_as(
                OTHER,
                &format!("/v1/search/spans?q=walrus&project_id={my_project}"),
            )
            .await,
        404,
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn bad_search_text_is_refused_and_query_syntax_is_taken_literally() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for output in [
        "cats OR dogs",
        "cats only",
        "key col:value here",
        "NEAR the end",
    ] {
        let mut t = sample_trace("plain");
        t["spans"][0]["output"] = json!(output);
        ids.push(server.ingest(t).await);
    }
    // As operators these would match "cats only" too, or instead.
    assert_eq!(
        found(&server, "cats OR dogs", "", 50).await,
        [ids[0].as_str()]
    );
    assert!(found(&server, "cats NOT dogs", "", 50).await.is_empty());
    assert_eq!(found(&server, "col:value", "", 50).await, [ids[2].as_str()]);
    assert_eq!(found(&server, "NEAR", "", 50).await, [ids[3].as_str()]);
    assert_eq!(
        found_set(&server, "cats", "").await,
        set(&[&ids[0], &ids[1]])
    );

    // Hostile text is either searched for or refused, never a server error.
    let mut server_errors = Vec::new();
    for q in [
        "a OR (b",
        "NEAR(x y)",
        "NEAR(cats dogs, 2)",
        "col:value",
        "output:cats",
        "{name output}:cats",
        "\"unbalanced",
        "unbalanced\"",
        "\"",
        "\"\"",
        "*",
        "**",
        "cats**",
        "*cats",
        "^x",
        "^",
        "-cats",
        "+cats",
        "cats AND",
        "AND",
        "OR OR OR",
        "NOT",
        "(",
        ")",
        "'",
        "cats'; DROP TABLE traces; --",
        "\u{0}cats",
        "cats\u{0}",
        "\u{2}cats\u{3}",
        "\u{1F600} cats",
        "\u{301}",
        "%",
        "\\",
        "a\"b\"c",
        "\"a\" \"b\" \"",
    ] {
        for base in ["/v1/traces", "/v1/search/spans"] {
            let path = format!("{base}?{}", query(&[("q", q)]));
            let resp = server.get(&path).await;
            let status = resp.status().as_u16();
            match status {
                200 => {
                    let _: Value = resp.json().await.expect("JSON body");
                }
                400 => {
                    expect_error_naming(resp, 400, &["q"]).await;
                }
                _ => {
                    let body = resp.text().await.unwrap_or_default();
                    server_errors.push(format!("{path} -> {status} {body}"));
                }
            }
        }
    }
    assert!(server_errors.is_empty(), "{server_errors:#?}");

    // Nothing to search for, or too much of it.
    for base in ["/v1/traces", "/v1/search/spans"] {
        for q in ["!!!", "* * *", "\"\" ()"] {
            let path = format!("{base}?{}", query(&[("q", q)]));
            expect_error_naming(server.get(&path).await, 400, &["q"]).await;
        }
        let longest = "a".repeat(1024);
        let path = format!("{base}?q={longest}");
        assert_eq!(server.get(&path).await.status(), 200, "1024 bytes");
        let path = format!("{base}?q={longest}b");
        expect_error_naming(server.get(&path).await, 400, &["q"]).await;
        // Many short words, over the limit in bytes.
        let path = format!("{base}?{}", query(&[("q", &"é ".repeat(400))]));
        expect_error_naming(server.get(&path).await, 400, &["q"]).await;
    }
    // Still healthy and searching.
    assert_eq!(found(&server, "dogs", "", 50).await, [ids[0].as_str()]);
    server.stop().await;
}

#[tokio::test]
async fn span_search_returns_matching_spans_newest_first_with_their_details() {
    let server = TestServer::start().await;
    let second = server
        .running()
        .store()
        .clone()
        .create_project(
            1,
            "second".into(),
            trulayer_server::store::Actor::operator(),
        )
        .await
        .expect("project");
    let before = chrono::Utc::now();
    let mut first = with_span(
        "first",
        "retrieve-1",
        "retrieve docs",
        "retrieval",
        "the ibex manual, chapter 3",
    );
    first["spans"]
        .as_array_mut()
        .expect("spans")
        .push(json!({"id": "other-1", "name": "generate", "type": "llm", "output": "no match"}));
    let first = server.ingest(first).await;
    let mut second_trace = with_span("second", "gen-2", "generate", "llm", "nothing here");
    second_trace["project_id"] = json!("second");
    second_trace["spans"][0]["input"] = json!("Tell me about the ibex. IBEX!");
    let second_trace = server.ingest(second_trace).await;
    // A trace whose own text matches but whose spans do not: no span result.
    let mut trace_only = sample_trace("ibex in the trace name only");
    trace_only["input"] = json!("ibex");
    server.ingest(trace_only).await;
    let after = chrono::Utc::now();

    let page = server.get_json("/v1/search/spans?q=ibex").await;
    assert!(page.get("next_cursor").is_none(), "{page}");
    let results = page["results"].as_array().expect("results");
    assert_eq!(span_ids(results), ["gen-2", "retrieve-1"], "newest first");
    let default_project = server.get_json(&format!("/v1/traces/{first}")).await["project_id"]
        .as_str()
        .expect("project")
        .to_owned();
    for (r, trace, project, name, kind) in [
        (&results[0], &second_trace, &second.uuid, "generate", "llm"),
        (
            &results[1],
            &first,
            &default_project,
            "retrieve docs",
            "retrieval",
        ),
    ] {
        assert_eq!(r["trace_id"], trace.as_str(), "{r}");
        assert_eq!(r["project_id"], project.as_str(), "{r}");
        assert_eq!(r["span_name"], name, "{r}");
        assert_eq!(r["span_type"], kind, "{r}");
        let similarity = r["similarity"].as_f64().expect("similarity is a number");
        assert!((0.0..1.0).contains(&similarity), "{r}");
        let created = r["created_at"].as_str().expect("created_at");
        let created = chrono::DateTime::parse_from_rfc3339(created).expect("RFC 3339");
        assert!(
            created >= before - chrono::TimeDelta::seconds(1)
                && created <= after + chrono::TimeDelta::seconds(1),
            "stored during the test: {r}"
        );
        let snippet = r["snippet"].as_str().expect("snippet");
        assert!(
            snippet.to_lowercase().contains("<mark>ibex</mark>"),
            "{snippet}"
        );
    }
    assert!(results[0]["snippet"]
        .as_str()
        .expect("snippet")
        .contains("<mark>IBEX</mark>"));
    // Every key and nothing else.
    let mut keys: Vec<&str> = results[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "project_id",
            "similarity",
            "snippet",
            "span_id",
            "span_name",
            "span_type",
            "trace_id"
        ]
    );

    // One project, by id or by name.
    for project in [second.uuid.as_str(), "second"] {
        let got = all_spans(&server, "ibex", &format!("project_id={project}"), 20).await;
        assert_eq!(span_ids(&got), ["gen-2"], "{project}");
    }
    let got = all_spans(&server, "ibex", "project_id=default", 20).await;
    assert_eq!(span_ids(&got), ["retrieve-1"]);
    // The time window bounds when each span was stored.
    let newer = results[0]["created_at"].as_str().expect("created_at");
    let older = results[1]["created_at"].as_str().expect("created_at");
    assert!(older < newer, "{older} {newer}");
    let got = all_spans(&server, "ibex", &query(&[("from", newer)]), 20).await;
    assert_eq!(span_ids(&got), ["gen-2"], "from is inclusive");
    let got = all_spans(&server, "ibex", &query(&[("to", older)]), 20).await;
    assert_eq!(span_ids(&got), ["retrieve-1"], "to is inclusive");
    let got = all_spans(
        &server,
        "ibex",
        &query(&[("from", older), ("to", newer)]),
        20,
    )
    .await;
    assert_eq!(got.len(), 2);
    let got = all_spans(&server, "ibex", "from=2099-01-01T00:00:00Z", 20).await;
    assert!(got.is_empty());
    let got = all_spans(&server, "ibex", "to=2001-01-01T00:00:00Z", 20).await;
    assert!(got.is_empty());
    // The time the trace says it started plays no part.
    let got = all_spans(&server, "ibex", "to=2026-03-01T10:00:00Z", 20).await;
    assert!(got.is_empty(), "stored after that, whatever the trace says");
    server.stop().await;
}

#[tokio::test]
async fn span_search_pages_with_a_cursor_and_refuses_bad_parameters() {
    let server = TestServer::start().await;
    let mut stored = Vec::new();
    for i in 0..5 {
        let span = format!("span-{i}");
        server
            .ingest(with_span(
                &format!("t{i}"),
                &span,
                "tool",
                "tool",
                &format!("lemur result {i}"),
            ))
            .await;
        stored.push(span);
    }
    let mut newest_first = stored.clone();
    newest_first.reverse();
    for limit in [1, 2, 4, 5, 100] {
        let got = all_spans(&server, "lemur", "", limit).await;
        assert_eq!(span_ids(&got), newest_first, "pages of {limit}");
    }
    // Pages of two: 2, 2 and a last one of 1 without a cursor.
    let page = server.get_json("/v1/search/spans?q=lemur&limit=2").await;
    assert_eq!(page["results"].as_array().map(Vec::len), Some(2));
    let cursor = page["next_cursor"].as_str().expect("a cursor");
    let page = server
        .get_json(&format!("/v1/search/spans?q=lemur&limit=2&cursor={cursor}"))
        .await;
    let cursor = page["next_cursor"].as_str().expect("a second cursor");
    let page = server
        .get_json(&format!("/v1/search/spans?q=lemur&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page["results"].as_array().map(Vec::len), Some(1));
    assert!(page.get("next_cursor").is_none(), "{page}");
    assert_eq!(page["results"][0]["span_id"], "span-0");

    // Twenty by default.
    let mut many = sample_trace("many");
    many["spans"] = (0..25)
        .map(|i| json!({"id": format!("m{i}"), "name": "lemur step", "type": "other"}))
        .collect();
    server.ingest(many).await;
    let page = server.get_json("/v1/search/spans?q=lemur").await;
    assert_eq!(page["results"].as_array().map(Vec::len), Some(20));
    assert!(page["next_cursor"].is_string());
    assert_eq!(all_spans(&server, "lemur", "", 100).await.len(), 30);
    assert_eq!(all_spans(&server, "lemur", "", 7).await.len(), 30);

    for (path, needle) in [
        ("/v1/search/spans", "q"),
        ("/v1/search/spans?q=", "q"),
        ("/v1/search/spans?q=%20%20", "q"),
        ("/v1/search/spans?q=!!!", "q"),
        ("/v1/search/spans?limit=5", "q"),
        ("/v1/search/spans?q=lemur&limit=0", "limit"),
        ("/v1/search/spans?q=lemur&limit=101", "limit"),
        ("/v1/search/spans?q=lemur&limit=ten", "limit"),
        ("/v1/search/spans?q=lemur&limit=-1", "limit"),
        ("/v1/search/spans?q=lemur&cursor=garbage", "cursor"),
        ("/v1/search/spans?q=lemur&cursor=djE6MTox", "cursor"),
        ("/v1/search/spans?q=lemur&from=yesterday", "from"),
        ("/v1/search/spans?q=lemur&to=2026-13-01", "to"),
    ] {
        expect_error_naming(server.get(path).await, 400, &[needle]).await;
    }
    let body = expect_error(
        server
            .get("/v1/search/spans?q=lemur&project_id=no-such-project")
            .await,
        404,
    )
    .await;
    assert_eq!(body["code"], "not_found");
    // Without a key: refused.
    let resp = server
        .client
        .get(server.url("/v1/search/spans?q=lemur"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn snippets_escape_html_and_mark_the_matched_words() {
    let server = TestServer::start().await;
    server
        .ingest(with_span(
            "xss",
            "xss-span",
            "generate",
            "llm",
            "<script>alert(\"x\")</script> refund & 'more' <b>",
        ))
        .await;
    for q in ["refund", "refun*", "REFUND"] {
        let page = server
            .get_json(&format!("/v1/search/spans?{}", query(&[("q", q)])))
            .await;
        assert_eq!(page["results"].as_array().map(Vec::len), Some(1), "{q}");
        let snippet = page["results"][0]["snippet"].as_str().expect("snippet");
        assert!(snippet.contains("<mark>refund</mark>"), "{q}: {snippet}");
        assert!(snippet.contains("&lt;script&gt;"), "{snippet}");
        assert!(snippet.contains("&lt;/script&gt;"), "{snippet}");
        assert!(snippet.contains("&quot;x&quot;"), "{snippet}");
        assert!(snippet.contains(" &amp; "), "{snippet}");
        assert!(snippet.contains("&lt;b&gt;"), "{snippet}");
        assert!(!snippet.contains("<script"), "{snippet}");
        assert!(!snippet.contains("<b>"), "{snippet}");
        assert!(!snippet.contains('"'), "{snippet}");
        // The only tags are the marks.
        let stripped = snippet.replace("<mark>", "").replace("</mark>", "");
        assert!(
            !stripped.contains('<') && !stripped.contains('>'),
            "{snippet}"
        );
        assert!(!snippet.contains(['\u{2}', '\u{3}']), "{snippet:?}");
    }
    // Every matched word is marked; the original spelling is kept.
    server
        .ingest(with_span(
            "cafe",
            "cafe-span",
            "generate",
            "llm",
            "Deux cafés au Café de Flore, merci",
        ))
        .await;
    let page = server.get_json("/v1/search/spans?q=caf%C3%A9").await;
    let snippet = page["results"][0]["snippet"].as_str().expect("snippet");
    assert!(snippet.contains("<mark>Café</mark>"), "{snippet}");
    let page = server.get_json("/v1/search/spans?q=caf*%20merci").await;
    let snippet = page["results"][0]["snippet"].as_str().expect("snippet");
    for word in ["cafés", "Café", "merci"] {
        assert!(
            snippet.contains(&format!("<mark>{word}</mark>")),
            "{snippet}"
        );
    }
    assert!(!snippet.contains("<mark>Flore</mark>"), "{snippet}");
    server.stop().await;
}

#[tokio::test]
async fn spans_rewritten_by_otlp_are_searched_as_they_now_read() {
    let server = TestServer::start().await;
    let trace_hex = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";
    let trace_id = format!(
        "{}-{}-{}-{}-{}",
        &trace_hex[..8],
        &trace_hex[8..12],
        &trace_hex[12..16],
        &trace_hex[16..20],
        &trace_hex[20..]
    );
    let request = |name: &str| {
        json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
            "scopeSpans": [{"scope": {"name": "handmade"}, "spans": [{
                "traceId": trace_hex,
                "spanId": "1111111111111111",
                "name": name,
                "kind": 1,
                "startTimeUnixNano": "1772359200000000000",
                "endTimeUnixNano": "1772359200100000000"
            }]}]
        }]})
    };
    for name in ["draft gazelle", "final impala"] {
        let resp = server.post("/v1/otlp/traces", &request(name)).await;
        let status = resp.status();
        let answer: Value = resp.json().await.expect("JSON");
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer["partialSuccess"]["rejectedSpans"]
                .as_str()
                .is_none_or(|n| n == "0"),
            "{answer}"
        );
    }
    let trace = server.get_json(&format!("/v1/traces/{trace_id}")).await;
    assert_eq!(trace["span_count"], 1, "{trace}");
    assert_eq!(trace["spans"][0]["name"], "final impala", "{trace}");

    assert_eq!(found(&server, "impala", "", 50).await, [trace_id.as_str()]);
    assert!(found(&server, "gazelle", "", 50).await.is_empty());
    let spans = all_spans(&server, "impala", "", 20).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["trace_id"], trace_id.as_str());
    assert_eq!(spans[0]["span_name"], "final impala");
    assert!(all_spans(&server, "gazelle", "", 20).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_span_sent_later_for_an_older_trace_is_found_in_the_order_it_was_stored() {
    let server = TestServer::start().await;
    let otlp_span = |span_hex: &str, name: &str| {
        json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
            "scopeSpans": [{"scope": {"name": "handmade"}, "spans": [{
                "traceId": "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a",
                "spanId": span_hex,
                "name": name,
                "kind": 1,
                "startTimeUnixNano": "1772359200000000000",
                "endTimeUnixNano": "1772359200100000000"
            }]}]
        }]})
    };
    let send = |body: Value| {
        let server = &server;
        async move {
            let resp = server.post("/v1/otlp/traces", &body).await;
            assert_eq!(resp.status(), 200);
        }
    };
    // The trace's first span, then thirty traces, then its second span: a
    // span of the oldest trace, stored last.
    send(otlp_span("1111111111111111", "lynx opening")).await;
    for i in 0..30 {
        server
            .ingest(with_span(
                &format!("between {i}"),
                &format!("between-{i}"),
                &format!("lynx between {i}"),
                "llm",
                "text",
            ))
            .await;
    }
    send(otlp_span("2222222222222222", "lynx closing")).await;
    let names: Vec<String> = all_spans(&server, "lynx", "", 4)
        .await
        .iter()
        .map(|r| r["span_name"].as_str().expect("name").to_owned())
        .collect();
    let mut expected = vec!["lynx closing".to_owned()];
    expected.extend((0..30).rev().map(|i| format!("lynx between {i}")));
    expected.push("lynx opening".into());
    assert_eq!(names, expected);
    let closing = all_spans(&server, "closing lynx", "", 4).await;
    assert_eq!(closing.len(), 1);
    assert_eq!(
        closing[0]["trace_id"],
        "7a7a7a7a-7a7a-7a7a-7a7a-7a7a7a7a7a7a"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_trace_matches_when_its_words_are_spread_over_it_and_its_spans() {
    let server = TestServer::start().await;
    // "invoice" only in the trace's name, "timeout" only in a span's output.
    let mut spread = with_span(
        "invoice lookup",
        "11111111-1111-4111-8111-111111111111",
        "fetch",
        "tool",
        "gateway timeout after 30s",
    );
    spread["input"] = json!("customer 42");
    let spread = server.ingest(spread).await;
    // Both words, but in two different traces: neither matches both.
    let only_invoice = server.ingest(sample_trace("invoice export")).await;
    let only_timeout = server
        .ingest(with_span(
            "nightly job",
            "22222222-2222-4222-8222-222222222222",
            "fetch",
            "tool",
            "timeout again",
        ))
        .await;
    assert_eq!(
        found_set(&server, "invoice timeout", "").await,
        set(&[&spread])
    );
    assert_eq!(
        found_set(&server, "invoice", "").await,
        set(&[&spread, &only_invoice])
    );
    assert_eq!(
        found_set(&server, "timeout", "").await,
        set(&[&spread, &only_timeout])
    );
    // Span search looks for spans holding every word: none here.
    let spans = server
        .get_json("/v1/search/spans?q=invoice%20timeout")
        .await;
    assert_eq!(spans["results"], json!([]), "{spans}");
}

#[tokio::test]
async fn the_index_catches_up_in_the_background_without_a_search() {
    let server = TestServer::start().await;
    let store = server.running().store().clone();
    let traces: Vec<Value> = (0..300)
        .map(|i| sample_trace(&format!("bulk {i}")))
        .collect();
    for chunk in traces.chunks(100) {
        let resp = server
            .post("/v1/ingest/batch", &json!({ "traces": chunk }))
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
    // Nobody searches: the indexer alone brings the backlog to nothing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let backlog = store.search_backlog().await.expect("backlog");
        if backlog == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{backlog} rows still unindexed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let all = server.list_all("q=bulk", 200).await;
    assert_eq!(all.len(), 300);
}

#[tokio::test]
async fn a_search_is_bounded_in_words_and_any_cursor_is_safe() {
    use base64::Engine;
    let server = TestServer::start().await;
    server
        .ingest(with_span(
            "bounded",
            "33333333-3333-4333-8333-333333333333",
            "s",
            "llm",
            "w1 w2",
        ))
        .await;
    let words: Vec<String> = (0..33).map(|i| format!("w{i}")).collect();
    let many = query(&[("q", &words.join(" "))]);
    let body = expect_error(server.get(&format!("/v1/traces?{many}")).await, 400).await;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("at most 32")),
        "{body}"
    );
    expect_error(server.get(&format!("/v1/search/spans?{many}")).await, 400).await;
    let few = query(&[("q", &words[..32].join(" "))]);
    assert_eq!(server.get(&format!("/v1/traces?{few}")).await.status(), 200);
    // Cursors at the ends of the integer range find nothing, and fail nothing.
    for position in [i64::MIN, -1, 0, i64::MAX] {
        let cursor =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("c1:spans:{position}"));
        let page = server
            .get_json(&format!("/v1/search/spans?q=w1&cursor={cursor}"))
            .await;
        let n = page["results"].as_array().map(Vec::len);
        assert_eq!(
            n,
            Some(usize::from(position == i64::MAX)),
            "{position}: {page}"
        );
    }
}
