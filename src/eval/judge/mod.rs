//! LLM judges (`evaluator_type: "llm"`) on the operator's endpoint.
//!
//! `[eval.judge]` names one endpoint; nothing is sent anywhere else (no
//! redirects are followed and no proxy from the environment is used).
//! [`Judge::judge`] sends a rubric and a trace's text to it and parses the
//! reply with [`parse_verdict`]. It makes exactly one request: the queue
//! retries a [`JudgeError::Retryable`] with backoff.
//!
//! # Wire formats
//!
//! `openai` posts to `{base_url}/chat/completions` (OpenAI, vLLM, Ollama,
//! LM Studio…) with `Authorization: Bearer <key>`; `anthropic` posts to
//! `{base_url}/v1/messages` (or `{base_url}/messages` when the base already
//! ends in `/v1`) with `x-api-key` and `anthropic-version`. Either way the
//! key header is sent only when a key is configured, and temperature is 0.
//!
//! # The prompt
//!
//! The system prompt carries the rubric and asks for nothing but
//! `{"score", "label", "reasoning"}`; the user message carries the trace in
//! tagged sections. The trace text is cut to `max_input_chars` characters in
//! all: output first, then input, then retrieved context, each cut in its
//! middle with a `[… truncated N characters]` note.

mod config;
mod prompt;
mod reply;
mod verdict;

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde_json::json;

use super::rules::Verdict;
use config::{bad, read_ca};
pub use config::{JudgeConfig, Provider};
use prompt::prompt;
use reply::{reply_text, retry_after, status_error};
pub use verdict::{parse_verdict, MAX_REASONING_CHARS};

const USER_AGENT: &str = concat!("trulayer-server/", env!("CARGO_PKG_VERSION"));
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The longest wait a judge's `Retry-After` may ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// A judge's reply body beyond this many bytes is refused.
const MAX_REPLY_BYTES: usize = 4 << 20;

#[derive(Debug)]
pub struct Judge {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    /// The key header, marked sensitive so it never shows in debug output.
    auth: Option<(HeaderName, HeaderValue)>,
    config: JudgeConfig,
    /// What it is for, as errors name it.
    role: Role,
}

/// What to judge: one metric of one trace.
#[derive(Debug, Clone, Copy)]
pub struct JudgeRequest<'a> {
    /// The metric's name, e.g. `faithfulness`.
    pub metric: &'a str,
    /// What to judge and how to score it.
    pub rubric: &'a str,
    pub input: Option<&'a str>,
    pub output: Option<&'a str>,
    /// Retrieved context, already joined; only when the metric needs it.
    pub context: Option<&'a str>,
    /// An answer known to be good, to compare the output with (a dataset
    /// item's own output); it takes the place of `context`.
    pub reference: Option<&'a str>,
    /// This evaluation's model, instead of the configured one.
    pub model: Option<&'a str>,
    /// The organisation's own key for the provider, instead of the
    /// configured one.
    pub api_key: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeError {
    /// Worth trying again later: 429, 5xx, a timeout, a connection error.
    /// `retry_after` is the endpoint's `Retry-After`, at most [`MAX_RETRY_AFTER`].
    #[error("{reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Will not get better: another 4xx, or a reply that is not a verdict.
    #[error("{0}")]
    Failed(String),
}

impl Judge {
    /// Builds the client and resolves the key; the error names the config key at fault.
    pub fn new(config: &JudgeConfig) -> Result<Judge, String> {
        Judge::for_role(config, Role::JUDGE)
    }

    /// Builds the client of an endpoint used as `role`, which its errors name.
    pub fn for_role(config: &JudgeConfig, role: Role) -> Result<Judge, String> {
        config.validate()?;
        let endpoint = config.endpoint()?;
        let auth = match config.resolve_key()? {
            None => None,
            Some(key) => Some(auth_header(config.provider, &key).ok_or_else(|| {
                bad(
                    if config.api_key.is_some() {
                        "api_key"
                    } else {
                        "api_key_env"
                    },
                    "the key holds characters an HTTP header cannot carry",
                )
            })?),
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(Duration::from_secs(config.timeout_s))
            .redirect(reqwest::redirect::Policy::none())
            // Only the configured endpoint: no HTTP(S)_PROXY from the environment.
            .no_proxy();
        if let Some(path) = &config.ca_cert {
            for cert in read_ca(path)? {
                let cert = reqwest::Certificate::from_der(&cert)
                    .map_err(|e| bad("ca_cert", format!("{}: {e}", path.display())))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("eval.judge: cannot set up the HTTP client: {e}"))?;
        Ok(Judge {
            client,
            endpoint,
            auth,
            // The key lives only in `auth`, which debug output does not show.
            config: JudgeConfig {
                api_key: None,
                ..config.clone()
            },
            role,
        })
    }

    /// The configured model.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    pub fn provider(&self) -> Provider {
        self.config.provider
    }

    /// One judgement: one request, no retries.
    #[tracing::instrument(name = "judge", skip_all, fields(
        provider = ?self.config.provider,
        model = request.model.unwrap_or(&self.config.model),
        metric = request.metric,
    ))]
    pub async fn judge(&self, request: &JudgeRequest<'_>) -> Result<Verdict, JudgeError> {
        let (system, user) = prompt(request, self.config.max_input_chars);
        let (text, cut_short) = self
            .send(request.api_key, request.model, Some(&system), &user)
            .await?;
        parse_verdict(&text).map_err(|problem| {
            if cut_short {
                JudgeError::Failed(format!(
                    "{problem} (the reply stopped at max_tokens {}; raise {}.max_tokens)",
                    self.config.max_tokens, self.role.key
                ))
            } else {
                JudgeError::Failed(problem)
            }
        })
    }

    /// One answer of the model to `user`, after `system` if given: one
    /// request, no retries. A reply cut at `max_tokens` is still an answer.
    /// `api_key`: the organisation's own key, instead of the configured one.
    #[tracing::instrument(name = "model", skip_all, fields(
        provider = ?self.config.provider,
        model = model.unwrap_or(&self.config.model),
    ))]
    pub async fn answer(
        &self,
        api_key: Option<&str>,
        model: Option<&str>,
        system: Option<&str>,
        user: &str,
    ) -> Result<String, JudgeError> {
        let user = prompt::fit(user, self.config.max_input_chars);
        Ok(self.send(api_key, model, system, &user).await?.0)
    }

    /// Sends one chat request; the reply's text, and whether it stopped at
    /// `max_tokens`.
    async fn send(
        &self,
        api_key: Option<&str>,
        model: Option<&str>,
        system: Option<&str>,
        user: &str,
    ) -> Result<(String, bool), JudgeError> {
        let model = model
            .map(str::trim)
            .filter(|model| !model.is_empty())
            .unwrap_or(&self.config.model);
        let body = match self.config.provider {
            Provider::Openai => {
                let mut messages = Vec::with_capacity(2);
                if let Some(system) = system {
                    messages.push(json!({"role": "system", "content": system}));
                }
                messages.push(json!({"role": "user", "content": user}));
                json!({
                    "model": model,
                    "messages": messages,
                    "temperature": 0,
                    "max_tokens": self.config.max_tokens,
                })
            }
            Provider::Anthropic => {
                let mut body = json!({
                    "model": model,
                    "max_tokens": self.config.max_tokens,
                    "messages": [{"role": "user", "content": user}],
                    "temperature": 0,
                });
                if let Some(system) = system {
                    body["system"] = json!(system);
                }
                body
            }
        };
        let mut post = self.client.post(self.endpoint.clone()).json(&body);
        let own = match api_key {
            Some(key) => Some(auth_header(self.config.provider, key).ok_or_else(|| {
                JudgeError::Failed(
                    "the organisation's key holds characters an HTTP header cannot carry".into(),
                )
            })?),
            None => None,
        };
        if let Some((name, value)) = own.as_ref().or(self.auth.as_ref()) {
            post = post.header(name, value);
        }
        if self.config.provider == Provider::Anthropic {
            post = post.header("anthropic-version", ANTHROPIC_VERSION);
        }
        let started = std::time::Instant::now();
        let response = post.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let location = response.headers().get(reqwest::header::LOCATION).cloned();
        let reply = self.read_body(response).await?;
        tracing::debug!(
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "endpoint answered"
        );
        if !status.is_success() {
            return Err(status_error(
                self.role,
                status,
                retry_after,
                location,
                &reply,
            ));
        }
        reply_text(self.role, self.config.provider, &reply)
    }

    /// What errors call the endpoint: `judge` or `model`.
    fn noun(&self) -> &'static str {
        self.role.noun
    }

    /// The body as text, at most [`MAX_REPLY_BYTES`].
    async fn read_body(&self, mut response: reqwest::Response) -> Result<String, JudgeError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e))?
        {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(JudgeError::Failed(format!(
                    "{} reply is larger than {} MiB",
                    self.noun(),
                    MAX_REPLY_BYTES >> 20
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn transport_error(&self, err: &reqwest::Error) -> JudgeError {
        if err.is_timeout() {
            return JudgeError::Retryable {
                reason: format!("{} timed out after {}s", self.noun(), self.config.timeout_s),
                retry_after: None,
            };
        }
        // Every cause, down to e.g. "Connection refused (os error 111)".
        let mut reason = format!("{} unreachable: {err}", self.noun());
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            reason.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        if err.is_builder() {
            JudgeError::Failed(reason)
        } else {
            JudgeError::Retryable {
                reason,
                retry_after: None,
            }
        }
    }
}

/// The header carrying `key` to `provider`, marked sensitive so it never
/// shows in debug output; none when the key cannot be a header value.
fn auth_header(provider: Provider, key: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = match provider {
        Provider::Openai => (AUTHORIZATION, format!("Bearer {key}")),
        Provider::Anthropic => (HeaderName::from_static("x-api-key"), key.to_owned()),
    };
    let mut value = HeaderValue::from_str(&value).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// What an endpoint is used as: the configuration section that sets it,
/// and what its errors call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    pub key: &'static str,
    pub noun: &'static str,
}

impl Role {
    /// `[eval.judge]`, judging.
    pub const JUDGE: Role = Role {
        key: "eval.judge",
        noun: "judge",
    };
    /// `[eval.model]`, answering a run's items.
    pub const MODEL: Role = Role {
        key: "eval.model",
        noun: "model",
    };
    /// `[eval.judge]`, answering a run's items when no `[eval.model]` is set.
    pub const MODEL_AT_JUDGE: Role = Role {
        key: "eval.judge",
        noun: "model",
    };
}

#[cfg(test)]
mod tests {
    use super::config::test_config as config;
    use super::*;
    use crate::eval::rules::Label;
    use reqwest::header::HeaderMap;
    use reqwest::StatusCode;
    use serde_json::Value;

    fn parsed(reply: &str) -> Verdict {
        match parse_verdict(reply) {
            Ok(verdict) => verdict,
            Err(problem) => panic!("{reply:?} was refused: {problem}"),
        }
    }
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{Method, Uri};
    use axum::response::{IntoResponse, Response};
    use std::sync::{Arc, Mutex};

    /// What the test endpoint answers.
    #[derive(Clone)]
    struct Canned {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
        delay: Duration,
    }

    fn ok(body: Value) -> Canned {
        Canned {
            status: 200,
            headers: vec![("content-type", "application/json")],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    fn status(status: u16, headers: Vec<(&'static str, &'static str)>, body: &str) -> Canned {
        Canned {
            status,
            headers,
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// What the test endpoint received.
    struct Received {
        method: Method,
        path: String,
        headers: HeaderMap,
        body: Value,
    }

    type Log = Arc<Mutex<Vec<Received>>>;

    async fn answer(
        State((canned, log)): State<(Canned, Log)>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        log.lock().unwrap().push(Received {
            method,
            path: uri.path().to_owned(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        tokio::time::sleep(canned.delay).await;
        let mut response =
            (StatusCode::from_u16(canned.status).unwrap(), canned.body).into_response();
        for (name, value) in canned.headers {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }

    /// A real HTTP server on 127.0.0.1:0 answering `canned` to everything.
    async fn endpoint(canned: Canned) -> (String, Log) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let log = Log::default();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state((canned, log.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), log)
    }

    async fn run(
        provider: Provider,
        path: &str,
        api_key: Option<&str>,
        canned: Canned,
        request: &JudgeRequest<'_>,
    ) -> (Result<Verdict, JudgeError>, Received) {
        let (base, log) = endpoint(canned).await;
        let mut judge_config = config(provider, &format!("{base}{path}"));
        judge_config.api_key = api_key.map(str::to_owned);
        judge_config.timeout_s = 1;
        let result = Judge::new(&judge_config).unwrap().judge(request).await;
        let mut received = log.lock().unwrap();
        assert_eq!(received.len(), 1, "exactly one request, no retries");
        (result, received.remove(0))
    }

    const REQUEST: JudgeRequest<'static> = JudgeRequest {
        metric: "faithfulness",
        rubric: "RUBRIC: every claim must be supported by the context.",
        input: Some("INPUT: where is the Eiffel tower?"),
        output: Some("OUTPUT: in Paris."),
        context: Some("CONTEXT: the Eiffel tower stands in Paris."),
        reference: None,
        model: None,
        api_key: None,
    };

    fn openai_reply(content: &str) -> Canned {
        ok(json!({
            "id": "chatcmpl-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
        }))
    }

    fn anthropic_reply(text: &str) -> Canned {
        ok(json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "thinking", "thinking": "{\"score\": 0}"},
                        {"type": "text", "text": text}],
            "stop_reason": "end_turn",
        }))
    }

    fn header<'r>(received: &'r Received, name: &str) -> Option<&'r str> {
        received.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn assert_prompt(system: &str, user: &str) {
        assert!(system.contains(REQUEST.rubric), "{system}");
        assert!(system.contains("ONLY a JSON object"), "{system}");
        for part in [REQUEST.input, REQUEST.output, REQUEST.context] {
            assert!(user.contains(part.unwrap()), "{user}");
        }
        assert!(user.contains("<metric>faithfulness</metric>"), "{user}");
    }

    #[tokio::test]
    async fn openai_request_and_verdict() {
        let reply = r#"{"score": 0.9, "label": "pass", "reasoning": "Supported."}"#;
        let (result, received) = run(
            Provider::Openai,
            "/v1/",
            Some("sk-test"),
            openai_reply(reply),
            &REQUEST,
        )
        .await;
        assert_eq!(result, Ok(parsed(reply)));
        assert_eq!(received.method, Method::POST);
        assert_eq!(received.path, "/v1/chat/completions");
        assert_eq!(header(&received, "authorization"), Some("Bearer sk-test"));
        assert_eq!(header(&received, "x-api-key"), None);
        assert_eq!(header(&received, "content-type"), Some("application/json"));
        assert_eq!(header(&received, "user-agent"), Some(USER_AGENT));
        assert!(USER_AGENT.starts_with("trulayer-server/"));
        let body = &received.body;
        assert_eq!(body["model"], "judge-model");
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["max_tokens"], 512);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["role"], "user");
        assert_prompt(
            body["messages"][0]["content"].as_str().unwrap(),
            body["messages"][1]["content"].as_str().unwrap(),
        );
    }

    #[tokio::test]
    async fn openai_without_a_key_sends_no_authorization_and_honours_the_override() {
        let request = JudgeRequest {
            model: Some("bigger-model"),
            ..REQUEST
        };
        let reply = "```json\n{\"score\": \"0.3\"}\n```";
        let (result, received) =
            run(Provider::Openai, "/v1", None, openai_reply(reply), &request).await;
        assert_eq!(result.map(|v| v.label), Ok(Label::Fail));
        assert_eq!(received.path, "/v1/chat/completions");
        assert_eq!(header(&received, "authorization"), None);
        assert_eq!(received.body["model"], "bigger-model");
    }

    #[tokio::test]
    async fn anthropic_request_and_verdict() {
        let reply = r#"{"score": 0.5, "label": "warn", "reasoning": "Partly."}"#;
        let (result, received) = run(
            Provider::Anthropic,
            "",
            Some("sk-ant"),
            anthropic_reply(reply),
            &REQUEST,
        )
        .await;
        assert_eq!(result, Ok(parsed(reply)));
        assert_eq!(received.path, "/v1/messages");
        assert_eq!(header(&received, "x-api-key"), Some("sk-ant"));
        assert_eq!(header(&received, "authorization"), None);
        assert_eq!(header(&received, "anthropic-version"), Some("2023-06-01"));
        assert_eq!(header(&received, "content-type"), Some("application/json"));
        let body = &received.body;
        assert_eq!(body["model"], "judge-model");
        assert_eq!(body["max_tokens"], 512);
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["messages"][0]["role"], "user");
        assert_prompt(
            body["system"].as_str().unwrap(),
            body["messages"][0]["content"].as_str().unwrap(),
        );
    }

    #[tokio::test]
    async fn an_organisations_key_replaces_the_configured_one() {
        let request = JudgeRequest {
            api_key: Some("sk-org-own"),
            ..REQUEST
        };
        let reply = r#"{"score": 1}"#;
        let (_, received) = run(
            Provider::Anthropic,
            "",
            Some("sk-ant"),
            anthropic_reply(reply),
            &request,
        )
        .await;
        assert_eq!(header(&received, "x-api-key"), Some("sk-org-own"));
        let (_, received) = run(Provider::Openai, "/v1", None, openai_reply(reply), &request).await;
        assert_eq!(
            header(&received, "authorization"),
            Some("Bearer sk-org-own")
        );
    }

    #[tokio::test]
    async fn anthropic_base_ending_in_v1_and_no_key() {
        let request = JudgeRequest {
            model: Some("claude-override"),
            ..REQUEST
        };
        let (result, received) = run(
            Provider::Anthropic,
            "/v1",
            None,
            anthropic_reply(r#"{"score": 1}"#),
            &request,
        )
        .await;
        assert_eq!(result.map(|v| v.label), Ok(Label::Pass));
        assert_eq!(received.path, "/v1/messages");
        assert_eq!(header(&received, "x-api-key"), None);
        assert_eq!(header(&received, "anthropic-version"), Some("2023-06-01"));
        assert_eq!(received.body["model"], "claude-override");
    }

    async fn error_for(provider: Provider, canned: Canned) -> JudgeError {
        match run(provider, "/v1", None, canned, &REQUEST).await.0 {
            Ok(verdict) => panic!("judged {verdict:?}"),
            Err(err) => err,
        }
    }

    fn retryable(err: JudgeError) -> (String, Option<Duration>) {
        match err {
            JudgeError::Retryable {
                reason,
                retry_after,
            } => (reason, retry_after),
            other => panic!("{other:?} is not retryable"),
        }
    }

    fn failed(err: JudgeError) -> String {
        match err {
            JudgeError::Failed(reason) => reason,
            other => panic!("{other:?} did not fail"),
        }
    }

    #[tokio::test]
    async fn server_errors_and_rate_limits_are_retryable() {
        let (reason, after) =
            retryable(error_for(Provider::Openai, status(500, vec![], "boom")).await);
        assert!(
            reason.contains("500 Internal Server Error") && reason.contains("boom"),
            "{reason}"
        );
        assert_eq!(after, None);

        let limited = status(429, vec![("retry-after", "7")], "slow down");
        let err = error_for(Provider::Anthropic, limited).await;
        assert!(err.to_string().contains("429"), "{err}");
        assert_eq!(retryable(err).1, Some(Duration::from_secs(7)));

        let far = status(503, vec![("retry-after", "86400")], "");
        assert_eq!(
            retryable(error_for(Provider::Openai, far).await).1,
            Some(MAX_RETRY_AFTER)
        );
        let dated = status(
            503,
            vec![("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")],
            "",
        );
        assert_eq!(retryable(error_for(Provider::Openai, dated).await).1, None);
    }

    #[tokio::test]
    async fn client_errors_and_odd_replies_fail() {
        let body = format!("{{\"error\": \"model not found\"}}{}", "z".repeat(1000));
        let reason = failed(error_for(Provider::Openai, status(400, vec![], &body)).await);
        assert!(
            reason.contains("400 Bad Request") && reason.contains("model not found"),
            "{reason}"
        );
        assert!(
            reason.len() < 450,
            "quotes ~300 characters: {}",
            reason.len()
        );

        let reason =
            failed(error_for(Provider::Openai, status(200, vec![], "<html>oops</html>")).await);
        assert!(
            reason.contains("not a chat completion") && reason.contains("<html>oops</html>"),
            "{reason}"
        );
        let reason = failed(error_for(Provider::Anthropic, ok(json!({"content": []}))).await);
        assert!(
            reason.contains("not a Messages reply") && reason.contains("content"),
            "{reason}"
        );

        let reason = failed(
            error_for(
                Provider::Anthropic,
                anthropic_reply("I refuse to score this."),
            )
            .await,
        );
        assert!(
            reason.contains("no JSON object") && reason.contains("I refuse to score this."),
            "{reason}"
        );
        let reason = failed(error_for(Provider::Openai, openai_reply(r#"{"score": 7}"#)).await);
        assert!(reason.contains("outside [0, 1]"), "{reason}");

        let cut = ok(
            json!({"choices": [{"message": {"content": "{\"score\": 0."}, "finish_reason": "length"}]}),
        );
        let reason = failed(error_for(Provider::Openai, cut).await);
        assert!(reason.contains("raise eval.judge.max_tokens"), "{reason}");

        let moved = status(302, vec![("location", "http://elsewhere.example/v1")], "");
        let reason = failed(error_for(Provider::Openai, moved).await);
        assert!(
            reason.contains("not followed") && reason.contains("elsewhere.example"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_slow_judge_times_out_and_a_missing_one_is_unreachable() {
        let slow = Canned {
            delay: Duration::from_secs(5),
            ..openai_reply(r#"{"score": 1}"#)
        };
        let started = std::time::Instant::now();
        let (reason, after) = retryable(error_for(Provider::Openai, slow).await);
        assert_eq!(reason, "judge timed out after 1s");
        assert_eq!(after, None);
        assert!(started.elapsed() < Duration::from_secs(3));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let judge = Judge::new(&config(Provider::Openai, &format!("http://{address}/v1"))).unwrap();
        let (reason, _) = retryable(judge.judge(&REQUEST).await.unwrap_err());
        assert!(reason.starts_with("judge unreachable"), "{reason}");
    }
}
