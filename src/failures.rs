//! What a failure is: an error message reduced to its shape, so that
//! "timeout after 3012 ms" and "timeout after 2990 ms" are one failure
//! cluster, and the class of the failure (`failure_type`) that the trace
//! list filters by.
//!
//! The shape keeps the line that says what went wrong (the first line of a
//! message; the last of a Python traceback) and masks what changes from one
//! occurrence to the next: numbers, ids, quoted values, addresses, URLs,
//! paths and emails. A cluster's fingerprint is a digest of the shape.

use std::sync::LazyLock;

use regex::Regex;
use sha2::{Digest, Sha256};

/// The longest shape kept, in characters; a longer one is cut.
pub const MAX_SHAPE_CHARS: usize = 240;

/// The failure classes of the trace list's `failure_type` filter.
pub const FAILURE_TYPES: [&str; 4] = [
    "timeout",
    "rate_limit",
    "invalid_response",
    "context_length",
];

/// An error message's shape and the digest that names its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub text: String,
    pub fingerprint: i64,
}

/// What a pattern's match is replaced with: always, or only when the match
/// holds a digit (a word that is an id rather than a name).
#[derive(Clone, Copy)]
enum Mask {
    Always(&'static str),
    WithDigit(&'static str),
}

/// Placeholders and the patterns they replace, in the order they are
/// applied: the wider forms first, so that an address inside a URL is
/// masked as the URL.
static MASKS: LazyLock<Vec<(Regex, Mask)>> = LazyLock::new(|| {
    use Mask::{Always, WithDigit};
    [
        // Quoted values: the words between quotes vary, the sentence does not.
        (
            r#""[^"\n]{0,200}"|'[^'\n]{0,200}'|`[^`\n]{0,200}`|“[^”\n]{0,200}”"#,
            Always("<str>"),
        ),
        (r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s<>]+", Always("<url>")),
        (r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", Always("<email>")),
        (
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
            Always("<id>"),
        ),
        // IPv4 with an optional port, then IPv6 (at least three groups).
        (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b", Always("<ip>")),
        (
            r"\[?\b(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{1,4}\b\]?(?::\d{1,5})?",
            Always("<ip>"),
        ),
        // host:port
        (r"\b[a-zA-Z][\w-]*(?:\.[\w-]+)*:\d{2,5}\b", Always("<host>")),
        // File paths: Unix (two parts at least) and Windows.
        (r"(?:~|\.{1,2})?(?:/[\w.@+-]+){2,}/?", Always("<path>")),
        (r"\b[a-zA-Z]:\\[^\s:]+", Always("<path>")),
        // Ids: led by a short prefix (`req_…`, `chatcmpl-…`, `org-…`), 0x…,
        // runs of eight hex digits or more holding a digit (digests, object
        // ids, long numbers: an id whose digits happen to hold no letter is
        // still an id), and long words of letters and digits. A model's name
        // (`gpt-4o`) stays.
        (
            r"\b[a-zA-Z]{2,12}[_-][a-zA-Z0-9_-]{6,}\b",
            WithDigit("<id>"),
        ),
        (r"\b0x[0-9a-fA-F]+\b", Always("<id>")),
        (r"\b[0-9a-fA-F]{8,}\b", WithDigit("<id>")),
        (r"\b[a-zA-Z0-9_-]{16,}\b", WithDigit("<id>")),
        // Numbers, with a unit glued to them (`2.8s`, `120ms`, `4k`).
        (
            r"\b\d+(?:[.,]\d+)*(?:ms|us|µs|ns|s|m|h|d|k|K|M|G|kb|KB|mb|MB|gb|GB|x|%)?\b",
            Always("<n>"),
        ),
    ]
    .into_iter()
    .filter_map(|(pattern, mask)| Regex::new(pattern).ok().map(|r| (r, mask)))
    .collect()
});

/// Runs of whitespace, which count as one space.
static SPACES: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\s+").ok());

/// The line of a message that names the failure: the last line of a Python
/// traceback (the exception), else the first line that says anything.
fn telling_line(message: &str) -> &str {
    let lines = || message.lines().map(str::trim).filter(|l| !l.is_empty());
    if message.contains("Traceback (most recent call last)") {
        if let Some(last) =
            lines().rfind(|l| !l.starts_with("File ") && !l.starts_with('^') && !l.starts_with('~'))
        {
            return last;
        }
    }
    lines().next().unwrap_or("")
}

/// The shape of an error message.
pub fn shape(message: &str) -> Shape {
    let line = telling_line(message);
    // Work on a bounded prefix: the masks need not read a megabyte.
    let mut text: String = line.chars().take(MAX_SHAPE_CHARS * 4).collect();
    for (pattern, mask) in MASKS.iter() {
        let replaced = match *mask {
            Mask::Always(with) => pattern.replace_all(&text, with),
            Mask::WithDigit(with) => pattern.replace_all(&text, |c: &regex::Captures<'_>| {
                if c[0].bytes().any(|b| b.is_ascii_digit()) {
                    with.to_owned()
                } else {
                    c[0].to_owned()
                }
            }),
        };
        if let std::borrow::Cow::Owned(replaced) = replaced {
            text = replaced;
        }
    }
    if let Some(spaces) = SPACES.as_ref() {
        if let std::borrow::Cow::Owned(replaced) = spaces.replace_all(&text, " ") {
            text = replaced;
        }
    }
    let mut text = text.trim().to_owned();
    if text.chars().count() > MAX_SHAPE_CHARS {
        text = text.chars().take(MAX_SHAPE_CHARS).collect::<String>();
        text.push('…');
    }
    if text.is_empty() {
        text = "(no message)".to_owned();
    }
    let digest = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Shape {
        fingerprint: i64::from_be_bytes(first),
        text,
    }
}

/// What each class is recognised by, in the order they are tried: a
/// context-length error often says "invalid request" too, and a rate limit
/// may mention a retry after some seconds.
static CLASSES: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        (
            "context_length",
            r"(?i)context[ _-]?(?:length|window)|maximum context|max(?:imum)?[ _-]?tokens? (?:exceeded|limit)|too many tokens|prompt is too long|token limit|input is too long|reduce the length|string_above_max_length|context_length_exceeded",
        ),
        (
            "rate_limit",
            r"(?i)rate[ _-]?limit|too many requests|\b429\b|quota|resource[ _-]?exhausted|throttl|overloaded|requests per min|tokens per min|\b[RT]PM\b",
        ),
        (
            "timeout",
            r"(?i)time[ _-]?out|timed out|deadline[ _-]?exceeded|\b408\b|\b504\b|took too long",
        ),
        (
            "invalid_response",
            r"(?i)invalid[ _-]?(?:json|response|output|format)|json ?decode|jsondecodeerror|parse error|failed to parse|could not parse|unable to parse|unexpected token|malformed|validation ?error|schema|expecting value|unexpected end of|not valid json|output ?parser|empty response|no choices",
        ),
    ]
    .into_iter()
    .filter_map(|(class, pattern)| Regex::new(pattern).ok().map(|r| (class, r)))
    .collect()
});

/// The failure class an error falls in, from its message and, when the
/// span has them, its status code and error type attributes (`metadata`,
/// the span's or trace's JSON object).
pub fn classify(message: &str, metadata: Option<&str>) -> Option<&'static str> {
    let head: String = message.chars().take(4096).collect();
    if let Some(class) = CLASSES
        .iter()
        .find(|(_, pattern)| pattern.is_match(&head))
        .map(|(class, _)| *class)
    {
        return Some(class);
    }
    let metadata = metadata.filter(|m| m.len() > 2)?;
    let value: serde_json::Value = serde_json::from_str(metadata).ok()?;
    let object = value.as_object()?;
    let status = [
        "http.response.status_code",
        "http.status_code",
        "status_code",
        "http_status",
    ]
    .iter()
    .find_map(|k| {
        let v = object.get(*k)?;
        v.as_i64().or_else(|| v.as_str()?.parse().ok())
    });
    match status {
        Some(429) => return Some("rate_limit"),
        Some(408 | 504) => return Some("timeout"),
        _ => {}
    }
    let kind = ["error.type", "exception.type", "error_type"]
        .iter()
        .find_map(|k| object.get(*k)?.as_str())?;
    CLASSES
        .iter()
        .find(|(_, pattern)| pattern.is_match(kind))
        .map(|(class, _)| *class)
}

/// A trace's failure: the shape of its own error (what the cluster counts)
/// and its class, taken from its error or else from the first failing span
/// that has one ("traces with spans matching this failure type").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceFailure {
    pub shape: Option<Shape>,
    pub class: Option<&'static str>,
}

impl TraceFailure {
    /// `error` and `metadata` are the trace's; `spans` its spans' errors and
    /// metadata, in start order.
    pub fn of<'a>(
        error: Option<&str>,
        metadata: Option<&str>,
        spans: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
    ) -> TraceFailure {
        let shape = error.map(shape);
        let class = error.and_then(|e| classify(e, metadata)).or_else(|| {
            spans
                .into_iter()
                .filter_map(|(e, m)| Some((e?, m)))
                .find_map(|(e, m)| classify(e, m))
        });
        TraceFailure { shape, class }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_that_differ_in_what_varies_share_a_shape() {
        let same = [
            ("timeout after 3012 ms", "timeout after 2990 ms", "timeout after <n> ms"),
            (
                "Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-4o in organization org-AbC123xyz on tokens per min (TPM): Limit 30000, Used 29876, Requested 1534. Please try again in 2.8s.', 'type': 'tokens'}} (request id: req_8f2a9c0d1e3b4a5f)",
                "Error code: 429 - {'error': {'message': 'Rate limit reached for gpt-4o in organization org-AbC123xyz on tokens per min (TPM): Limit 30000, Used 29990, Requested 800. Please try again in 120ms.', 'type': 'tokens'}} (request id: req_0000aaaa1111bbbb)",
                "Error code: <n> - {<str>: {<str>: <str>, <str>: <str>}} (request id: <id>)",
            ),
            (
                "Rate limit reached for gpt-4o in org-AbC123xyz. Please try again in 2.8s.",
                "Rate limit reached for gpt-4o in org-AbC123xyz. Please try again in 120ms.",
                "Rate limit reached for gpt-4o in <id>. Please try again in <n>.",
            ),
            (
                "connection refused 10.0.0.4:5432",
                "connection refused 10.0.12.9:6432",
                "connection refused <ip>",
            ),
            (
                "could not connect to db-primary.internal:5432: connection refused",
                "could not connect to db-replica-2.internal:5433: connection refused",
                "could not connect to <host>: connection refused",
            ),
            (
                "This model's maximum context length is 8192 tokens. However, your messages resulted in 9021 tokens.",
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 tokens.",
                "This model's maximum context length is <n> tokens. However, your messages resulted in <n> tokens.",
            ),
            (
                "order 7f3e2b1a90cd not found; retrieval index idx-7f3e2b1a90cd empty",
                "order 301829475561 not found; retrieval index idx-301829475561 empty",
                "order <id> not found; retrieval index <id> empty",
            ),
            (
                "tool lookup_order failed: order 7f3e2b1a-90cd-4e21-8a5b-0c9d8e7f6a51 not found",
                "tool lookup_order failed: order 0e5d7a2c-1b3f-4c6d-9e8a-7b6c5d4e3f21 not found",
                "tool lookup_order failed: order <id> not found",
            ),
            (
                "GET https://api.example.com/v1/orders/123?x=1 returned 503",
                "GET https://api.example.com/v1/orders/987 returned 503",
                "GET <url> returned <n>",
            ),
            (
                "user ann@example.com has no access",
                "user bo.b+x@corp.example.org has no access",
                "user <email> has no access",
            ),
            (
                "FileNotFoundError: [Errno 2] No such file or directory: /srv/data/run-17/in.json",
                "FileNotFoundError: [Errno 2] No such file or directory: /srv/data/run-18/in.json",
                "FileNotFoundError: [Errno <n>] No such file or directory: <path>",
            ),
            (
                "Traceback (most recent call last):\n  File \"/app/main.py\", line 42, in run\n    answer = chain.invoke(q)\nValueError: invalid literal for int() with base 10: 'abc'",
                "Traceback (most recent call last):\n  File \"/app/main.py\", line 97, in run\n    answer = chain.invoke(q)\nValueError: invalid literal for int() with base 10: 'xyz'",
                "ValueError: invalid literal for int() with base <n>: <str>",
            ),
            (
                "object at 0x7f8a2c3b4d50 is not callable; digest 9f86d081884c7d65",
                "object at 0x10c2e4f00 is not callable; digest 2c26b46b68ffc68f",
                "object at <id> is not callable; digest <id>",
            ),
            (
                "upstream said: \"quota of team Blue exhausted\"",
                "upstream said: \"quota of team Red exhausted\"",
                "upstream said: <str>",
            ),
        ];
        for (a, b, expected) in same {
            let (sa, sb) = (shape(a), shape(b));
            assert_eq!(sa.text, expected, "{a}");
            assert_eq!(sa, sb, "{a} / {b}");
        }
        // What does differ stays apart.
        assert_ne!(
            shape("timeout after 3012 ms").fingerprint,
            shape("connection refused 10.0.0.4:5432").fingerprint
        );
        assert_ne!(
            shape("model gpt-4o not found").fingerprint,
            shape("model claude not found").fingerprint
        );
    }

    #[test]
    fn a_shape_is_one_bounded_line() {
        assert_eq!(shape("first line 1\nsecond line 2").text, "first line <n>");
        assert_eq!(shape("\n\n   ").text, "(no message)");
        let long = "word ".repeat(1000);
        let s = shape(&long);
        assert_eq!(s.text.chars().count(), MAX_SHAPE_CHARS + 1);
        assert!(s.text.ends_with('…'));
        assert_eq!(
            shape(&"é".repeat(10_000)).text.chars().count(),
            MAX_SHAPE_CHARS + 1
        );
    }

    #[test]
    fn failures_are_classed_by_message_status_and_type() {
        for (message, metadata, class) in [
            ("Request timed out.", None, Some("timeout")),
            ("timeout after 3012 ms", None, Some("timeout")),
            ("ReadTimeout: HTTPSConnectionPool(host='api.openai.com', port=443)", None, Some("timeout")),
            ("DEADLINE_EXCEEDED: deadline exceeded after 29.9s", None, Some("timeout")),
            ("Error code: 429 - Rate limit reached for gpt-4o", None, Some("rate_limit")),
            ("RateLimitError: You exceeded your current quota", None, Some("rate_limit")),
            ("Too Many Requests", None, Some("rate_limit")),
            ("anthropic: overloaded_error", None, Some("rate_limit")),
            (
                "This model's maximum context length is 8192 tokens. However, your messages resulted in 9021 tokens.",
                None,
                Some("context_length"),
            ),
            ("prompt is too long: 210345 tokens > 200000 maximum", None, Some("context_length")),
            ("JSONDecodeError: Expecting value: line 1 column 1 (char 0)", None, Some("invalid_response")),
            ("OutputParserException: Could not parse LLM output", None, Some("invalid_response")),
            ("model returned malformed tool call arguments", None, Some("invalid_response")),
            ("connection refused 10.0.0.4:5432", None, None),
            ("upstream error", Some(r#"{"http.status_code": 429}"#), Some("rate_limit")),
            ("upstream error", Some(r#"{"http.response.status_code": "504"}"#), Some("timeout")),
            ("boom", Some(r#"{"error.type": "APITimeoutError"}"#), Some("timeout")),
            ("boom", Some("{}"), None),
            ("boom", Some("not json"), None),
        ] {
            assert_eq!(classify(message, metadata), class, "{message}");
        }
    }

    #[test]
    fn a_trace_is_classed_by_its_error_else_by_a_failing_span() {
        let f = TraceFailure::of(
            Some("agent gave up"),
            None,
            [(None, None), (Some("Rate limit reached"), None)],
        );
        assert_eq!(f.class, Some("rate_limit"));
        assert_eq!(f.shape.map(|s| s.text).as_deref(), Some("agent gave up"));
        let f = TraceFailure::of(None, None, [(Some("timed out"), None)]);
        assert_eq!((f.shape, f.class), (None, Some("timeout")));
        let f = TraceFailure::of(
            Some("context_length_exceeded"),
            None,
            [(Some("timed out"), None)],
        );
        assert_eq!(f.class, Some("context_length"));
        assert_eq!(TraceFailure::of(None, None, []), TraceFailure::default());
    }
}
