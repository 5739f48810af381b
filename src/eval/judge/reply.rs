//! Reading what a judge's endpoint answered: an HTTP status that is an
//! error (worth retrying or not), or the provider's reply envelope around
//! the text that holds the verdict.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;

use super::verdict::{quote, REPLY_QUOTE_CHARS};
use super::{JudgeError, Provider, MAX_RETRY_AFTER};

// How much of an error body an error message quotes.
const ERROR_BODY_CHARS: usize = 300;

/// `Retry-After` in seconds, capped; an HTTP date is ignored.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

pub(super) fn status_error(
    role: super::Role,
    status: StatusCode,
    retry_after: Option<Duration>,
    location: Option<HeaderValue>,
    body: &str,
) -> JudgeError {
    let reason = format!(
        "{} endpoint answered {status}: {}",
        role.noun,
        quote(body, ERROR_BODY_CHARS)
    );
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        return JudgeError::Retryable {
            reason,
            retry_after,
        };
    }
    if status.is_redirection() {
        let target = location
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .unwrap_or("elsewhere");
        return JudgeError::Failed(format!(
            "{} endpoint answered {status}, redirecting to {}; redirects are not \
             followed, so set {}.base_url to the final address",
            role.noun,
            quote(target, ERROR_BODY_CHARS),
            role.key
        ));
    }
    JudgeError::Failed(reason)
}

/// The reply's text, and whether the judge stopped at its token budget.
pub(super) fn reply_text(
    role: super::Role,
    provider: Provider,
    body: &str,
) -> Result<(String, bool), JudgeError> {
    let shape = match provider {
        Provider::Openai => "a chat completion with choices[0].message.content",
        Provider::Anthropic => "a Messages reply with text content",
    };
    let not_a_reply = || {
        JudgeError::Failed(format!(
            "{} reply is not {shape}: {}",
            role.noun,
            quote(body, REPLY_QUOTE_CHARS)
        ))
    };
    let value: Value = serde_json::from_str(body).map_err(|_| not_a_reply())?;
    let (text, cut_short) = match provider {
        Provider::Openai => {
            let choice = value.pointer("/choices/0");
            let text = match choice.and_then(|c| c.pointer("/message/content")) {
                Some(Value::String(text)) => Some(text.clone()),
                // Some servers answer with content parts.
                Some(Value::Array(parts)) => Some(text_parts(parts)),
                _ => None,
            };
            let finish = choice.and_then(|c| c.get("finish_reason"));
            (text, finish.and_then(Value::as_str) == Some("length"))
        }
        Provider::Anthropic => {
            let text = value
                .get("content")
                .and_then(Value::as_array)
                .map(|c| text_parts(c));
            let stop = value.get("stop_reason").and_then(Value::as_str);
            (text, stop == Some("max_tokens"))
        }
    };
    match text {
        Some(text) if !text.trim().is_empty() => Ok((text, cut_short)),
        _ => Err(not_a_reply()),
    }
}

/// The `text` of every `{"type": "text"}` block, concatenated.
fn text_parts(blocks: &[Value]) -> String {
    blocks
        .iter()
        .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|block| block.get("text").and_then(Value::as_str))
        .collect()
}
