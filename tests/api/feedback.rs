//! `POST /v1/feedback`: labels on traces, shown in the trace and filterable.

use serde_json::{json, Value};

use crate::common::{expect_error, expect_error_naming, sample_trace, TestServer};

#[tokio::test]
async fn feedback_is_kept_in_order_and_shown_with_the_trace() {
    let server = TestServer::start().await;
    let id = server.ingest(sample_trace("rated")).await;
    let first = server
        .post(
            "/v1/feedback",
            &json!({"trace_id": id, "label": "good", "score": 0.9,
                    "comment": "spot on", "metadata": {"user": "u-1"}}),
        )
        .await;
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.expect("JSON");
    assert_eq!(first["trace_id"], id.as_str());
    assert_eq!(first["label"], "good");
    assert!(first["id"].is_string());
    let second = server
        .post("/v1/feedback", &json!({"trace_id": id, "label": "bad"}))
        .await;
    assert_eq!(second.status().as_u16(), 201);

    let trace = server.get_json(&format!("/v1/traces/{id}")).await;
    let feedback = trace["feedback"].as_array().expect("feedback list");
    assert_eq!(feedback.len(), 2);
    assert_eq!(feedback[0]["id"], first["id"]);
    assert_eq!(feedback[0]["label"], "good");
    assert_eq!(feedback[0]["score"], 0.9);
    assert_eq!(feedback[0]["comment"], "spot on");
    assert_eq!(feedback[0]["metadata"], json!({"user": "u-1"}));
    assert_eq!(feedback[1]["label"], "bad");
    assert_eq!(feedback[1]["score"], Value::Null);
    assert_eq!(feedback[1]["metadata"], json!({}));
}

#[tokio::test]
async fn bad_feedback_is_refused_and_other_tenants_traces_are_not_found() {
    let server = TestServer::start().await;
    let id = server.ingest(sample_trace("rated")).await;
    expect_error_naming(
        server
            .post("/v1/feedback", &json!({"trace_id": id, "label": "great"}))
            .await,
        400,
        &["label"],
    )
    .await;
    expect_error_naming(
        server.post("/v1/feedback", &json!({"label": "good"})).await,
        422,
        &["trace_id"],
    )
    .await;
    let missing = uuid::Uuid::new_v4().to_string();
    expect_error(
        server
            .post(
                "/v1/feedback",
                &json!({"trace_id": missing, "label": "good"}),
            )
            .await,
        404,
    )
    .await;
    // Another tenant cannot rate this tenant's trace, nor learn it exists.
    let other = "tl_feedback_other_0123456789abcd";
    server.other_tenant(other).await;
    let body = expect_error(
        server
            .post_as(
                other,
                "/v1/feedback",
                &json!({"trace_id": id, "label": "bad"}),
            )
            .await,
        404,
    )
    .await;
    assert_eq!(body["code"], "not_found");
    let trace = server.get_json(&format!("/v1/traces/{id}")).await;
    assert_eq!(trace["feedback"], json!([]));
}

#[tokio::test]
async fn traces_filter_by_feedback_label() {
    let server = TestServer::start().await;
    let good = server.ingest(sample_trace("good one")).await;
    let bad = server.ingest(sample_trace("bad one")).await;
    let both = server.ingest(sample_trace("mixed")).await;
    let _none = server.ingest(sample_trace("unrated")).await;
    for (id, label) in [
        (&good, "good"),
        (&bad, "bad"),
        (&both, "good"),
        (&both, "bad"),
    ] {
        let resp = server
            .post("/v1/feedback", &json!({"trace_id": id, "label": label}))
            .await;
        assert_eq!(resp.status().as_u16(), 201);
    }
    let mut got = server.list_all("feedback=bad", 50).await;
    got.sort();
    let mut want = vec![bad.clone(), both.clone()];
    want.sort();
    assert_eq!(got, want);
    let got = server.list_all("feedback=neutral", 50).await;
    assert!(got.is_empty());
    let got = server.list_all("feedback=good", 1).await;
    assert_eq!(got.len(), 2, "paging with the filter");
    expect_error_naming(
        server.get("/v1/traces?feedback=meh").await,
        400,
        &["feedback"],
    )
    .await;
}

#[tokio::test]
async fn feedback_answers_and_refuses_as_documented() {
    use crate::evals::{documented_fields, fields_of, operation};
    let server = TestServer::start().await;
    let doc = server.get_json("/v1/openapi.json").await;
    let op = operation(&doc, "post", "/v1/feedback");
    let id = server.ingest(sample_trace("documented")).await;
    let mut example = op["requestBody"]["content"]["application/json"]["example"].clone();
    example["trace_id"] = json!(id);
    let resp = server.post("/v1/feedback", &example).await;
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = resp.json().await.expect("JSON");
    assert_eq!(
        fields_of(&created),
        documented_fields(&doc, "FeedbackResponse")
    );
    let request = &doc["components"]["schemas"]["FeedbackRequest"];
    assert_eq!(request["required"], json!(["trace_id", "label"]));

    let description = |status: &str| {
        op["responses"][status]["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // A value out of bounds is a 400, a missing field a 422, an unknown trace a 404.
    assert!(description("400").contains("`bad_request`"));
    expect_error_naming(
        server
            .post("/v1/feedback", &json!({"trace_id": id, "label": "great"}))
            .await,
        400,
        &["label"],
    )
    .await;
    assert!(description("422").contains("`validation_error`"));
    expect_error_naming(
        server.post("/v1/feedback", &json!({"trace_id": id})).await,
        422,
        &["label"],
    )
    .await;
    assert!(description("404").contains("`not_found`"));
    expect_error(
        server
            .post(
                "/v1/feedback",
                &json!({"trace_id": uuid::Uuid::new_v4().to_string(), "label": "good"}),
            )
            .await,
        404,
    )
    .await;
}
