//! Text helpers shared by the rule evaluators: cutting field text to
//! [`MAX_TEXT_BYTES`] and quoting excerpts in a reasoning.

use serde_json::Value;

use super::rules::MAX_TEXT_BYTES;

// Longest quoted excerpt of field text or config in a reasoning.
const EXCERPT_CHARS: usize = 60;

/// The first [`MAX_TEXT_BYTES`] of `text`, cut on a char boundary, and whether it was cut.
pub(super) fn head(text: &str) -> (&str, bool) {
    if text.len() <= MAX_TEXT_BYTES {
        return (text, false);
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text.get(..end).unwrap_or(text), true)
}

/// At most `max_chars` characters, with `…` when cut.
pub(super) fn clip(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or(text)),
        None => text.to_owned(),
    }
}

/// A short quoted, escaped excerpt for a reasoning.
pub(super) fn excerpt(text: &str) -> String {
    format!("{:?}", clip(text, EXCERPT_CHARS))
}

pub(super) fn excerpt_json(value: &Value) -> String {
    clip(&value.to_string(), EXCERPT_CHARS)
}

pub(super) fn quote_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    let mut shown: Vec<String> = items.iter().take(5).map(|item| excerpt(item)).collect();
    if items.len() > 5 {
        shown.push(format!("+{} more", items.len() - 5));
    }
    shown.join(", ")
}

pub(super) fn percent(fraction: f64) -> String {
    format!("{}%", (fraction * 1000.0).round() / 10.0)
}
