//! How much one page of listed traces (or of an OTLP export) may hold, so
//! that a list or an export takes bounded memory however large the stored
//! traces are.
//!
//! A page ends early once its traces' JSON would pass [`PAGE_MAX_BYTES`];
//! its cursor continues from there. In a list, an input, output or error
//! whose JSON passes [`VALUE_MAX_BYTES`] is cut to that size, and metadata
//! that large is left out (`null`); the trace's `truncated` names what was
//! cut. The trace's own detail returns everything whole. An OTLP export
//! page ends early the same way, between two spans, and never cuts a value:
//! a span larger than a page alone is a page of its own.

use rusqlite::types::ValueRef;
use rusqlite::Row;

use super::Result;
use crate::model::{Span, Trace};

/// The most JSON one page of traces may hold.
pub const PAGE_MAX_BYTES: usize = 4 << 20;
/// The most JSON one page of an OTLP export may hold, unless a single span
/// is larger.
pub const EXPORT_PAGE_MAX_BYTES: usize = 4 << 20;
/// The most JSON one listed input, output, error or metadata may hold.
pub const VALUE_MAX_BYTES: usize = 512 << 10;
/// More than a listed trace's JSON takes besides its text fields: ids,
/// times, counts and field names.
const TRACE_FRAME_BYTES: usize = 1024;

/// The bytes of the traces admitted to a page so far.
#[derive(Debug, Default)]
pub struct PageBytes {
    used: usize,
    traces: usize,
}

impl PageBytes {
    /// Counts `trace` into the page if it fits; the first trace always does,
    /// so a page is never empty while traces remain.
    pub fn admit(&mut self, trace: &Trace) -> bool {
        let size = json_size(trace);
        if self.traces > 0 && self.used + size > PAGE_MAX_BYTES {
            return false;
        }
        self.used += size;
        self.traces += 1;
        true
    }
}

/// About the size of a listed trace's JSON, never less.
fn json_size(t: &Trace) -> usize {
    let text = |s: &Option<String>| s.as_deref().map_or(0, json_str_len);
    TRACE_FRAME_BYTES
        + json_str_len(&t.id)
        + json_str_len(&t.project_id)
        + text(&t.session_id)
        + text(&t.external_id)
        + text(&t.name)
        + text(&t.input)
        + text(&t.output)
        + text(&t.model)
        + text(&t.error)
        + t.tags.iter().map(|s| json_str_len(s) + 1).sum::<usize>()
        + t.tag_map
            .iter()
            .map(|(k, v)| json_str_len(k) + json_str_len(v) + 2)
            .sum::<usize>()
        + t.metadata.get().len()
        + t.feedback_summary.as_ref().map_or(0, |m| m.len() * 32)
        + t.eval_scores
            .as_ref()
            .map_or(0, |m| m.keys().map(|k| json_str_len(k) + 32).sum())
}

/// More than an exported span's OTLP JSON takes besides its text fields:
/// ids in hex, times, attribute keys (a span without text takes about 260).
const SPAN_FRAME_BYTES: usize = 384;

/// About the size of a span's JSON in an export, never less.
pub fn span_json_size(s: &Span) -> usize {
    let text = |s: &Option<String>| s.as_deref().map_or(0, json_str_len);
    SPAN_FRAME_BYTES
        + json_str_len(&s.name)
        + text(&s.input)
        + text(&s.output)
        + text(&s.model)
        + text(&s.error)
        // Exported as attributes, each wrapped in its key and type.
        + 2 * s.metadata.get().len()
}

/// About the size of what an export adds for a trace besides its spans:
/// its own fields, carried by a root span.
pub fn trace_head_json_size(t: &Trace) -> usize {
    json_size(t)
}

/// The length of `s` as a JSON string, quotes included, as serde_json
/// writes it.
pub fn json_str_len(s: &str) -> usize {
    // Byte by byte: a character outside ASCII is written as it is, so it
    // takes its bytes; an escaped one takes what `ESCAPED` adds. Most texts
    // have nothing to escape, which a plain count (that the compiler
    // vectorises) finds first.
    let plain = 2 + s.len();
    if s.bytes()
        .filter(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .count()
        == 0
    {
        return plain;
    }
    plain
        + s.bytes()
            .map(|b| usize::from(ESCAPED[usize::from(b)]))
            .sum::<usize>()
}

/// The bytes JSON's escaping adds to each byte of UTF-8 text: `\"`-style
/// escapes add one, `\u00XX` five.
const ESCAPED: [u8; 256] = {
    let mut added = [0; 256];
    let mut b = 0;
    while b < 0x20 {
        added[b] = 5;
        b += 1;
    }
    added[b'"' as usize] = 1;
    added[b'\\' as usize] = 1;
    added[b'\n' as usize] = 1;
    added[b'\r' as usize] = 1;
    added[b'\t' as usize] = 1;
    added[0x08] = 1;
    added[0x0c] = 1;
    added
};

fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Column `i` as text, cut where its JSON would pass `cap`; the second
/// value says whether it was cut. Only the part kept is copied out of the
/// row, so a value of many megabytes costs its prefix.
pub fn capped_text(row: &Row<'_>, i: usize, cap: usize) -> Result<(Option<String>, bool)> {
    let text = match row.get_ref(i)? {
        ValueRef::Null => return Ok((None, false)),
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(bytes),
        },
        other => {
            return Err(
                rusqlite::Error::InvalidColumnType(i, "text".into(), other.data_type()).into(),
            )
        }
    };
    if json_str_len(&text) <= cap {
        return Ok((Some(text.into_owned()), false));
    }
    let mut size = 2;
    for (at, c) in text.char_indices() {
        size += escaped_len(c);
        if size > cap {
            return Ok((Some(text[..at].to_owned()), true));
        }
    }
    Ok((Some(text.into_owned()), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lengths_are_those_serde_json_writes() {
        for s in [
            "",
            "plain",
            "quote \" and backslash \\",
            "lines\nand\ttabs\r",
            "\u{0}\u{1f}\u{7f}",
            "é ü 中文 🦀",
            "\u{2028} is not escaped",
        ] {
            assert_eq!(
                json_str_len(s),
                serde_json::to_string(s).expect("string").len(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_value_is_cut_at_a_character_boundary_within_its_cap() {
        let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
        let value = "ab\"é\u{1}".repeat(1000);
        let (cut, was_cut) = conn
            .query_row("SELECT ?1", [&value], |r| {
                Ok(capped_text(r, 0, 100).map_err(|_| rusqlite::Error::InvalidQuery))
            })
            .expect("row")
            .expect("text");
        let cut = cut.expect("not null");
        assert!(was_cut);
        assert!(value.starts_with(&cut));
        assert!(json_str_len(&cut) <= 100, "{}", json_str_len(&cut));
        assert!(
            json_str_len(&cut) > 100 - 6,
            "cut no more than one character early"
        );
        let (whole, was_cut) = conn
            .query_row("SELECT 'short'", [], |r| {
                Ok(capped_text(r, 0, 100).map_err(|_| rusqlite::Error::InvalidQuery))
            })
            .expect("row")
            .expect("text");
        assert_eq!((whole.as_deref(), was_cut), (Some("short"), false));
    }
}
