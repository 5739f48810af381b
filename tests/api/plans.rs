//! Plans: request rates per family in one-minute windows with their
//! headers, the monthly ingest quota across a restart, and plan gates.

use serde_json::json;

use crate::common::{expect_error, sample_trace, TestServer};

/// A Starter organisation whose limits are small enough to reach.
const STARTER: &str = "plan = \"starter\"\n\
    [plans.starter]\n\
    reads_per_minute = 5\n\
    ingest_requests_per_minute = 1000\n\
    ingest_traces_per_month = 3\n";

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
}

#[tokio::test]
async fn every_authenticated_response_carries_rate_limit_headers() {
    let server = TestServer::start().await;
    // The first organisation is Enterprise: no limit, but the headers say so.
    let resp = server.get("/v1/traces").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(&resp, "x-ratelimit-limit").as_deref(),
        Some("unlimited")
    );
    assert_eq!(
        header(&resp, "x-ratelimit-remaining").as_deref(),
        Some("unlimited")
    );
    let reset: u64 = header(&resp, "x-ratelimit-reset")
        .expect("reset")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&reset), "{reset}");
    // No credentials: no tenant, no headers.
    let anonymous = server
        .client
        .get(server.url("/v1/traces"))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status().as_u16(), 401);
    assert_eq!(header(&anonymous, "x-ratelimit-limit"), None);
}

#[tokio::test]
async fn a_family_over_its_limit_gets_429_and_the_others_carry_on() {
    let server = TestServer::start_with(STARTER).await;
    for remaining in (0..5).rev() {
        let resp = server.get("/v1/traces").await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(header(&resp, "x-ratelimit-limit").as_deref(), Some("5"));
        assert_eq!(
            header(&resp, "x-ratelimit-remaining"),
            Some(remaining.to_string())
        );
    }
    let resp = server.get("/v1/projects").await;
    assert_eq!(header(&resp, "x-ratelimit-remaining").as_deref(), Some("0"));
    let retry_after: u64 = header(&resp, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after));
    let body = expect_error(resp, 429).await;
    assert_eq!(body["code"], "rate_limited");
    // Ingest has its own window.
    let resp = server.post("/v1/ingest", &sample_trace("still-in")).await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(header(&resp, "x-ratelimit-limit").as_deref(), Some("1000"));
}

/// A sample trace from today: Starter keeps traces 30 days, and the restart
/// below runs a retention pass.
fn todays_trace(name: &str) -> serde_json::Value {
    let mut t = sample_trace(name);
    let now = chrono::Utc::now();
    t["started_at"] = json!(now.to_rfc3339());
    t["ended_at"] = json!((now + chrono::Duration::seconds(1)).to_rfc3339());
    t["spans"][0]["start_time"] = json!(now.to_rfc3339());
    t["spans"][0]["end_time"] = json!(now.to_rfc3339());
    t
}

#[tokio::test]
async fn the_monthly_quota_counts_across_a_restart() {
    let server = TestServer::start_with(STARTER).await;
    for i in 0..2 {
        let resp = server
            .post("/v1/ingest", &todays_trace(&format!("t{i}")))
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
    let server = server.restart().await;
    // Two used of three: a batch of two does not fit, one trace does.
    let batch = json!({"traces": [todays_trace("a"), todays_trace("b")]});
    let resp = server.post("/v1/ingest/batch", &batch).await;
    let retry_after: u64 = header(&resp, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry_after > 0);
    let body = expect_error(resp, 429).await;
    assert_eq!(body["code"], "monthly_quota_exceeded");
    let resp = server.post("/v1/ingest", &todays_trace("last")).await;
    assert_eq!(resp.status().as_u16(), 201);
    let resp = server.post("/v1/ingest", &todays_trace("over")).await;
    expect_error(resp, 429).await;
    // OTLP counts against the same quota.
    let otlp = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": "x", "startTimeUnixNano": "1700000000000000000"}]}]}]});
    let resp = server.post("/v1/otlp/traces", &otlp).await;
    let body = expect_error(resp, 429).await;
    assert_eq!(body["code"], "monthly_quota_exceeded");
    // Reads are not ingest.
    assert_eq!(
        server.get_json("/v1/traces").await["traces"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[tokio::test]
async fn a_retention_beyond_the_plan_asks_for_the_plan_that_allows_it() {
    let server = TestServer::start_with(STARTER).await;
    let session = server.session_token().await;
    let projects = server.get_json_as(&session, "/v1/projects").await;
    let id = projects["projects"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let patch = |days: i64| {
        let (server, session, id) = (&server, &session, &id);
        async move {
            server
                .client
                .patch(server.url(&format!("/v1/projects/{id}")))
                .bearer_auth(session)
                .json(&json!({"retention_days_override": days}))
                .send()
                .await
                .expect("sent")
        }
    };
    assert_eq!(
        patch(30).await.status().as_u16(),
        200,
        "Starter allows 30 days"
    );
    let body = expect_error(patch(90).await, 402).await;
    assert_eq!(body["code"], "plan_upgrade_required");
    assert_eq!(body["required_plan"], "pro");
    let body = expect_error(patch(365).await, 402).await;
    assert_eq!(body["required_plan"], "enterprise");
    expect_error(patch(5000).await, 422).await;
}
