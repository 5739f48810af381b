//! The large texts of traces and spans (input, output, metadata) stored
//! compressed: zstd with a dictionary trained on the organisation's own
//! texts, so that what repeats from trace to trace (a system prompt, the
//! keys of a metadata object, the phrasing of an application's answers)
//! costs a few bytes wherever it recurs.
//!
//! A column holds either TEXT, stored as sent (values shorter than
//! [`MIN_PACKED`] bytes, those compression does not shorten, and
//! everything an organisation stored before its first dictionary), or a
//! BLOB: the dictionary's id and the text's length in bytes as LEB128
//! varints, then a zstd frame without magic number, checksum or dictionary
//! id (the dictionary's row says how the frame was written). SQL reads such
//! a column through `unpack(column)`, a function every connection of the
//! store has, which gives the text either way; so a query, a JSON path or
//! the full-text index sees text as before.
//!
//! Dictionaries are per organisation: one organisation's texts never shape
//! how another's are stored. An organisation gets its first dictionary once
//! it has sent [`TRAIN_AFTER`] traces, and a new one each time its count
//! grows [`RETRAIN_FACTOR`]-fold, trained on its newest traces, so that the
//! dictionary follows what its applications send; values keep the
//! dictionary they were written with.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, Connection};
use zstd_safe::{CCtx, CDict, CParameter, DCtx, DDict, DParameter, FrameFormat};

use super::{now_micros, Result, Store};

/// Values shorter than this are stored as text: a frame's own bytes would
/// eat most of what compressing them saves.
pub(super) const MIN_PACKED: usize = 64;

/// The zstd level values are compressed at. Measured on both bench corpora
/// (BENCHMARKS.md): higher levels shorten a value by a few bytes and cost
/// ingest more than that is worth.
const LEVEL: i32 = 3;

/// Longer than any text a request can carry (`limits.*_body_max_bytes`
/// stop at 1 GiB).
const MAX_TEXT_BYTES: usize = 1 << 30;

/// The largest dictionary trained.
const DICT_BYTES: usize = 64 * 1024;

/// The frame format of a dictionary's values: zstd, magicless frames, no
/// checksum, no dictionary id.
const FORMAT_ZSTD_MAGICLESS: i64 = 1;

/// An organisation's first dictionary is trained once it has sent this many
/// traces.
pub(super) const TRAIN_AFTER: i64 = 1_000;

/// A new dictionary is trained when the organisation's traces have grown
/// this many times since the last one.
const RETRAIN_FACTOR: i64 = 10;

/// The newest traces a dictionary is trained on, with all their spans.
const SAMPLE_TRACES: i64 = 2_000;

/// At most this many bytes of text are given to the trainer.
const SAMPLE_BYTES: usize = 8 * 1024 * 1024;

/// Fewer sample texts than this train no dictionary: too little to learn
/// from, and zstd's trainer refuses a tiny sample.
const MIN_SAMPLES: usize = 100;

/// The dictionaries of a database: every one by id for reading, the newest
/// of each organisation for writing.
#[derive(Default)]
pub struct Codec {
    dicts: RwLock<Dicts>,
    /// Organisations whose last training found too little to learn from,
    /// with their count of traces then: not tried again until it grows by
    /// [`TRAIN_AFTER`].
    refused: std::sync::Mutex<HashMap<i64, i64>>,
}

/// Whether an organisation that has sent `traces` is due a dictionary,
/// given the count its newest was trained at and the count at which
/// training last found too little.
fn due(traces: i64, trained_on: Option<i64>, refused_at: Option<i64>) -> bool {
    let wanted = match trained_on {
        None => traces >= TRAIN_AFTER,
        Some(last) => traces >= last.saturating_mul(RETRAIN_FACTOR),
    };
    wanted && refused_at.is_none_or(|at| traces >= at.saturating_add(TRAIN_AFTER))
}

#[derive(Default)]
struct Dicts {
    readers: HashMap<i64, Arc<DDict<'static>>>,
    writers: HashMap<i64, Arc<Encoder>>,
}

/// The newest dictionary of an organisation, ready to compress with.
struct Encoder {
    id: i64,
    dict: CDict<'static>,
}

/// Why a stored value could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("a packed value's header is cut short")]
    Header,
    #[error("a packed value names dictionary {0}, which this database does not hold")]
    UnknownDictionary(i64),
    #[error("a packed value does not decompress: {0}")]
    Frame(&'static str),
    #[error("a packed value decompressed to {found} bytes, not the {expected} its header says")]
    Length { expected: usize, found: usize },
    #[error("a packed value is not UTF-8")]
    Utf8,
}

impl Codec {
    /// Reads every dictionary of the database.
    pub(super) fn load(&self, conn: &Connection) -> Result<()> {
        let rows: Vec<(i64, i64, Vec<u8>)> = conn
            .prepare("SELECT id, tenant_id, dict FROM text_dicts ORDER BY id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, tenant_id, dict) in rows {
            self.add(id, tenant_id, &dict);
        }
        Ok(())
    }

    /// Makes dictionary `id` readable, and the one `tenant_id`'s values are
    /// written with from now on.
    /// zstd refuses only when it cannot allocate: the values of such a
    /// dictionary then fail to read (an error, not a crash) and new ones
    /// keep the organisation's previous dictionary.
    fn add(&self, id: i64, tenant_id: i64, dict: &[u8]) {
        let reader = DDict::try_create(dict).map(Arc::new);
        let writer = CDict::try_create(dict, LEVEL).map(|dict| Arc::new(Encoder { id, dict }));
        let mut dicts = self.dicts.write().unwrap_or_else(|e| e.into_inner());
        if let Some(reader) = reader {
            dicts.readers.insert(id, reader);
            if let Some(writer) = writer {
                dicts.writers.insert(tenant_id, writer);
            }
        } else {
            tracing::error!(id, "a compression dictionary could not be loaded");
        }
    }

    /// How many dictionaries the database holds.
    pub(super) fn dictionaries(&self) -> usize {
        self.dicts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .readers
            .len()
    }

    /// A packer of `tenant_id`'s values, with its newest dictionary (if it
    /// has one yet).
    pub(super) fn packer(&self, tenant_id: i64) -> Packer {
        let encoder = self
            .dicts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .writers
            .get(&tenant_id)
            .cloned();
        Packer {
            context: None,
            encoder,
        }
    }

    fn reader(&self, id: i64) -> Option<Arc<DDict<'static>>> {
        self.dicts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .readers
            .get(&id)
            .cloned()
    }

    /// The text a packed value holds.
    fn unpack(&self, dctx: &mut DCtx<'static>, packed: &[u8]) -> Result<String, UnpackError> {
        let (id, rest) = varint(packed).ok_or(UnpackError::Header)?;
        let (len, frame) = varint(rest).ok_or(UnpackError::Header)?;
        let id = i64::try_from(id).map_err(|_| UnpackError::UnknownDictionary(-1))?;
        let dict = self.reader(id).ok_or(UnpackError::UnknownDictionary(id))?;
        // No request carries a text this long; a header saying more is
        // damaged, and must not make the read allocate it.
        let expected = usize::try_from(len)
            .ok()
            .filter(|n| *n <= MAX_TEXT_BYTES)
            .ok_or(UnpackError::Header)?;
        let mut out: Vec<u8> = Vec::with_capacity(expected);
        let found = dctx
            .decompress_using_ddict(&mut out, frame, &dict)
            .map_err(|code| UnpackError::Frame(zstd_safe::get_error_name(code)))?;
        if found != expected {
            return Err(UnpackError::Length { expected, found });
        }
        String::from_utf8(out).map_err(|_| UnpackError::Utf8)
    }

    /// Gives `conn` the SQL function `unpack(value)`: the text of a value
    /// stored by this codec, packed or not.
    pub(super) fn register(self: &Arc<Self>, conn: &Connection) -> rusqlite::Result<()> {
        let codec = self.clone();
        let dctx = RefCell::new(decompressor());
        conn.create_scalar_function(
            "unpack",
            1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            move |ctx| {
                Ok(match ctx.get_raw(0) {
                    ValueRef::Blob(packed) => {
                        let text = match dctx.try_borrow_mut() {
                            Ok(mut dctx) => codec.unpack(&mut dctx, packed),
                            Err(_) => codec.unpack(&mut decompressor(), packed),
                        };
                        let text =
                            text.map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?;
                        ToSqlOutput::Owned(Value::Text(text))
                    }
                    ValueRef::Text(text) => {
                        ToSqlOutput::Owned(Value::Text(match std::str::from_utf8(text) {
                            Ok(text) => text.to_owned(),
                            Err(_) => String::from_utf8_lossy(text).into_owned(),
                        }))
                    }
                    ValueRef::Null => ToSqlOutput::Owned(Value::Null),
                    ValueRef::Integer(n) => ToSqlOutput::Owned(Value::Integer(n)),
                    ValueRef::Real(x) => ToSqlOutput::Owned(Value::Real(x)),
                })
            },
        )
    }
}

fn decompressor() -> DCtx<'static> {
    let mut dctx = DCtx::create();
    // Only fails on a parameter this zstd does not know; it knows it.
    let _ = dctx.set_parameter(DParameter::Format(FrameFormat::Magicless));
    dctx
}

/// Compresses one organisation's values, with a context reused from value
/// to value.
pub(super) struct Packer {
    // Declared first, dropped first: it refers to `encoder`'s dictionary.
    context: Option<CCtx<'static>>,
    encoder: Option<Arc<Encoder>>,
}

impl Packer {
    /// `text` as stored: `None` when it stays text, or else its packed
    /// form.
    pub(super) fn pack(&mut self, text: &str) -> Option<Vec<u8>> {
        let encoder = self.encoder.as_ref()?;
        if !(MIN_PACKED..=MAX_TEXT_BYTES).contains(&text.len()) {
            return None;
        }
        if self.context.is_none() {
            let mut cctx = CCtx::try_create()?;
            let configured = cctx.ref_cdict(&encoder.dict).is_ok()
                && [
                    CParameter::Format(FrameFormat::Magicless),
                    CParameter::ChecksumFlag(false),
                    CParameter::DictIdFlag(false),
                    CParameter::ContentSizeFlag(false),
                ]
                .into_iter()
                .all(|p| cctx.set_parameter(p).is_ok());
            if !configured {
                return None;
            }
            self.context = Some(cctx);
        }
        let cctx = self.context.as_mut()?;
        let mut packed = Vec::with_capacity(20);
        put_varint(&mut packed, encoder.id as u64);
        put_varint(&mut packed, text.len() as u64);
        let header = packed.len();
        // The frame goes straight after the header, and must end up shorter
        // than the text with it.
        packed.resize(text.len(), 0);
        let written = cctx
            .compress2(packed.get_mut(header..)?, text.as_bytes())
            .ok()?;
        packed.truncate(header + written);
        Some(packed)
    }
}

/// A text column's value as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Column<'a> {
    Text(Option<&'a str>),
    Packed(&'a [u8]),
}

impl rusqlite::ToSql for Column<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Column::Text(None) => ToSqlOutput::Owned(Value::Null),
            Column::Text(Some(t)) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Column::Packed(p) => ToSqlOutput::Borrowed(ValueRef::Blob(p)),
        })
    }
}

/// The input, output and metadata of a trace or span, packed before the
/// writer takes them (`None`: stored as sent).
#[derive(Default)]
pub(super) struct PackedTexts {
    pub input: Option<Vec<u8>>,
    pub output: Option<Vec<u8>>,
    pub metadata: Option<Vec<u8>>,
}

impl PackedTexts {
    pub(super) fn of(
        packer: &mut Packer,
        input: Option<&str>,
        output: Option<&str>,
        metadata: Option<&str>,
    ) -> Self {
        PackedTexts {
            input: input.and_then(|t| packer.pack(t)),
            output: output.and_then(|t| packer.pack(t)),
            metadata: metadata.and_then(|t| packer.pack(t)),
        }
    }
}

/// A text column's value: `packed` when there is one, else `text`.
pub(super) fn stored<'a>(text: Option<&'a str>, packed: &'a Option<Vec<u8>>) -> Column<'a> {
    match packed {
        Some(p) => Column::Packed(p),
        None => Column::Text(text),
    }
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A LEB128 varint at the start of `bytes`, and the bytes after it.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

/// A dictionary trained on `samples`, or `None` when they are too few or
/// too alike for zstd's trainer.
pub(super) fn train(samples: &[String]) -> Option<Vec<u8>> {
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    let sizes: Vec<usize> = samples.iter().map(String::len).collect();
    let mut joined = Vec::with_capacity(sizes.iter().sum());
    for s in samples {
        joined.extend_from_slice(s.as_bytes());
    }
    let mut dict = Vec::with_capacity(DICT_BYTES);
    zstd_safe::train_from_buffer(&mut dict, &joined, &sizes).ok()?;
    Some(dict)
}

/// An organisation whose next dictionary is due.
struct Due {
    tenant_id: i64,
    traces: i64,
}

impl Store {
    /// Trains a dictionary for each organisation that is due one (see the
    /// module's text); returns how many were trained.
    pub async fn train_dictionaries(&self) -> Result<usize> {
        let refused = self
            .codec
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let due: Vec<Due> = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT u.tenant_id, sum(u.traces) AS n, \
                     (SELECT max(d.trained_on) FROM text_dicts d WHERE d.tenant_id = u.tenant_id) \
                     FROM usage u GROUP BY u.tenant_id",
                )?
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                })?
                .filter_map(|row| match row {
                    Ok((tenant_id, traces, last)) => {
                        due(traces, last, refused.get(&tenant_id).copied())
                            .then_some(Ok(Due { tenant_id, traces }))
                    }
                    Err(e) => Some(Err(e)),
                })
                .collect::<rusqlite::Result<_>>()
                .map_err(Into::into)
            })
            .await?;
        let mut trained = 0;
        for Due { tenant_id, traces } in due {
            let samples = self.read(move |conn| samples(conn, tenant_id)).await?;
            let Ok(Some(dict)) = tokio::task::spawn_blocking(move || train(&samples)).await else {
                // Too few texts long enough to pack, or too alike for
                // zstd's trainer: reading and training again at every tick
                // would find the same.
                self.codec
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(tenant_id, traces);
                continue;
            };
            let stored = dict.clone();
            let id = self
                .write(move |conn| {
                    conn.prepare_cached(
                        "INSERT INTO text_dicts (tenant_id, format, level, dict, trained_on, \
                         created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        tenant_id,
                        FORMAT_ZSTD_MAGICLESS,
                        LEVEL,
                        stored,
                        traces,
                        now_micros()
                    ])?;
                    Ok(conn.last_insert_rowid())
                })
                .await?;
            self.codec.add(id, tenant_id, &dict);
            tracing::info!(
                tenant_id,
                id,
                bytes = dict.len(),
                traces,
                "trained a dictionary"
            );
            trained += 1;
        }
        Ok(trained)
    }

    /// How many compression dictionaries the database holds.
    pub fn dictionaries(&self) -> usize {
        self.codec.dictionaries()
    }
}

/// The texts of `tenant_id`'s newest traces and their spans that would be
/// packed, up to [`SAMPLE_BYTES`].
fn samples(conn: &Connection, tenant_id: i64) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut bytes = 0;
    let mut take = |text: Option<String>, bytes: &mut usize| {
        if let Some(t) = text.filter(|t| t.len() >= MIN_PACKED) {
            *bytes += t.len();
            out.push(t);
        }
    };
    let traces: Vec<(i64, [Option<String>; 3])> = conn
        .prepare_cached(
            "SELECT seq, unpack(input), unpack(output), unpack(metadata) FROM traces \
             WHERE tenant_id = ?1 ORDER BY started_at DESC, seq DESC LIMIT ?2",
        )?
        .query_map(params![tenant_id, SAMPLE_TRACES], |r| {
            Ok((r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?]))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut spans = conn.prepare_cached(
        "SELECT unpack(input), unpack(output), unpack(metadata) FROM spans WHERE trace_seq = ?1",
    )?;
    for (seq, texts) in traces {
        for text in texts {
            take(text, &mut bytes);
        }
        let mut rows = spans.query([seq])?;
        while let Some(r) = rows.next()? {
            for i in 0..3 {
                take(r.get(i)?, &mut bytes);
            }
        }
        if bytes >= SAMPLE_BYTES {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "You are a careful assistant for the billing team of a mid-sized \
        retailer. Answer in the customer's language, cite the invoice number, never promise \
        a refund before the policy check, and keep answers under one hundred words. ";

    /// Texts as an application sends them: one system prompt before a
    /// varying question.
    fn corpus(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "{PROMPT}Customer {i} asks about invoice INV-{:05}.",
                    i * 7919 % 100_000
                )
            })
            .collect()
    }

    /// A test database whose organisation 1 has a dictionary trained on
    /// [`corpus`], with `unpack` on its connection.
    fn database_with_dictionary() -> (tempfile::TempDir, Connection, Arc<Codec>) {
        let (dir, conn) = crate::store::test_database();
        let codec = Arc::new(Codec::default());
        codec.register(&conn).expect("unpack");
        let dict = train(&corpus(500)).expect("trained");
        conn.execute(
            "INSERT INTO text_dicts (id, tenant_id, format, level, dict, trained_on, created_at) \
             VALUES (7, 1, 1, 3, ?1, 1000, 0)",
            [&dict],
        )
        .expect("dictionary");
        codec.load(&conn).expect("load");
        (dir, conn, codec)
    }

    fn add_trace(conn: &Connection, id: &str, input: Column<'_>, metadata: Column<'_>) {
        conn.execute(
            "INSERT INTO traces (tenant_id, project_id, id, input, metadata, started_at, \
             created_at, content_hash) VALUES (1, 1, ?1, ?2, ?3, 0, 0, x'00')",
            rusqlite::params![id, input, metadata],
        )
        .expect("trace");
    }

    fn read(conn: &Connection, sql: &str) -> rusqlite::Result<Option<String>> {
        conn.query_row(sql, [], |r| r.get(0))
    }

    #[test]
    fn a_packed_text_reads_back_whole_through_unpack_and_takes_a_fraction_of_its_size() {
        let (_dir, conn, codec) = database_with_dictionary();
        let mut packer = codec.packer(1);
        let text = format!("{PROMPT}Customer 123456 asks about invoice INV-99999, in French.");
        let metadata = r#"{"user_id":"u-42","channel":"email","locale":"fr-FR","plan":"pro"}"#;
        let packed = packer.pack(&text).expect("packed");
        // The prompt is in the dictionary: what is left is the question.
        assert!(
            packed.len() * 4 < text.len(),
            "{} of {}",
            packed.len(),
            text.len()
        );
        let packed_metadata = packer.pack(metadata);
        add_trace(
            &conn,
            "a",
            Column::Packed(&packed),
            stored(Some(metadata), &packed_metadata),
        );
        assert_eq!(
            read(&conn, "SELECT typeof(input) FROM traces")
                .expect("type")
                .as_deref(),
            Some("blob")
        );
        assert_eq!(
            read(&conn, "SELECT unpack(input) FROM traces").expect("unpack"),
            Some(text)
        );
        // JSON paths see the object, packed or not.
        assert_eq!(
            read(
                &conn,
                "SELECT json_extract(unpack(metadata), '$.user_id') FROM traces"
            )
            .expect("path")
            .as_deref(),
            Some("u-42")
        );
        // Short values and NULL stay as they are.
        assert_eq!(packer.pack("hello"), None);
        assert_eq!(read(&conn, "SELECT unpack(NULL)").expect("null"), None);
        assert_eq!(
            read(&conn, "SELECT unpack('as sent')")
                .expect("text")
                .as_deref(),
            Some("as sent")
        );
    }

    #[test]
    fn an_organisation_without_a_dictionary_stores_text_as_sent() {
        let (_dir, _conn, codec) = database_with_dictionary();
        let text = format!("{PROMPT}Customer 1 asks.");
        assert_eq!(codec.packer(2).pack(&text), None);
        assert!(codec.packer(1).pack(&text).is_some());
    }

    #[test]
    fn a_value_that_cannot_be_read_is_an_error_not_a_wrong_text() {
        let (_dir, conn, codec) = database_with_dictionary();
        let text = format!("{PROMPT}Customer 5 asks about invoice INV-00005.");
        let packed = codec.packer(1).pack(&text).expect("packed");
        let mut unknown = Vec::new();
        put_varint(&mut unknown, 99);
        unknown.extend_from_slice(&packed[1..]);
        let mut cut = packed.clone();
        cut.truncate(packed.len() - 3);
        let mut wrong_length = Vec::new();
        put_varint(&mut wrong_length, 7);
        put_varint(&mut wrong_length, text.len() as u64 + 1);
        wrong_length.extend_from_slice(&packed[3..]);
        // A damaged length must not make the read allocate a terabyte.
        let mut huge = Vec::new();
        put_varint(&mut huge, 7);
        put_varint(&mut huge, 1 << 40);
        huge.extend_from_slice(&packed[3..]);
        for (id, bad) in [
            ("unknown", unknown),
            ("cut", cut),
            ("length", wrong_length),
            ("huge", huge),
        ] {
            add_trace(&conn, id, Column::Packed(&bad), Column::Text(Some("{}")));
            let result = conn.query_row(
                "SELECT unpack(input) FROM traces WHERE id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            );
            assert!(result.is_err(), "{id}: {result:?}");
        }
        assert!(
            matches!(
                codec.unpack(&mut decompressor(), &[0x80]),
                Err(UnpackError::Header)
            ),
            "a header cut in its varint"
        );
    }

    #[test]
    fn too_few_samples_train_nothing() {
        assert_eq!(train(&corpus(MIN_SAMPLES - 1)), None);
        let dict = train(&corpus(MIN_SAMPLES * 3)).expect("trained");
        assert!(dict.len() <= DICT_BYTES);
    }

    #[test]
    fn an_organisation_is_due_at_its_first_thousand_then_tenfold_and_waits_after_a_refusal() {
        assert!(!due(999, None, None));
        assert!(due(1_000, None, None));
        assert!(!due(9_999, Some(1_000), None));
        assert!(due(10_000, Some(1_000), None));
        // Training found too little at 1,200 traces: not again every tick.
        assert!(!due(1_200, None, Some(1_200)));
        assert!(!due(2_199, None, Some(1_200)));
        assert!(due(2_200, None, Some(1_200)));
        assert!(!due(10_500, Some(1_000), Some(10_000)));
        assert!(due(11_000, Some(1_000), Some(10_000)));
    }

    #[test]
    fn varints_round_trip() {
        for n in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            out.push(0xAA);
            assert_eq!(varint(&out), Some((n, &[0xAA][..])), "{n}");
        }
        assert_eq!(varint(&[0x80, 0x80]), None);
    }
}
