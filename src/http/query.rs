//! What the API's query strings share: the extractor that reads a typed
//! query (a 400 naming the parameter that does not fit), a list's page
//! (`limit`, `cursor`), a time window (`from`, `to`), and the one cursor
//! format every list issues: opaque to clients, versioned, and bound to the
//! list that issued it, so a cursor of one list is refused by another.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::IntoParams;

use crate::error::AppError;
use crate::ingest::parse_time;

/// A query string read into `T`. An empty value counts as absent (`?model=`
/// filters nothing); a parameter that does not fit is a 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Reads a query string into `T` as [`ApiQuery`] does.
pub fn parse_query<T: DeserializeOwned>(raw: &str) -> Result<T, AppError> {
    let given: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form_urlencoded::parse(raw.as_bytes()).filter(|(_, v)| !v.is_empty()))
        .finish();
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(given.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // Shared parts (a page, a window) name their parameters themselves.
        if path == "." || path.is_empty() {
            AppError::bad_request(message)
        } else {
            AppError::bad_request(format!("{path}: {message}"))
        }
    })
}

/// A list the API pages through: its page sizes and the position its
/// cursor holds.
pub trait Listing {
    /// Page size when `limit` is not given.
    const DEFAULT_LIMIT: u32;
    /// The largest `limit` accepted.
    const MAX_LIMIT: u32;
    /// Names the list inside its cursors.
    const KIND: &'static str;
    /// Where the next page starts.
    type Position: Position;
}

/// A position in a list, as the integers a cursor carries.
pub trait Position: Sized {
    fn to_numbers(&self) -> Vec<i64>;
    fn from_numbers(numbers: &[i64]) -> Option<Self>;
}

impl Position for i64 {
    fn to_numbers(&self) -> Vec<i64> {
        vec![*self]
    }
    fn from_numbers(numbers: &[i64]) -> Option<Self> {
        match numbers {
            [n] => Some(*n),
            _ => None,
        }
    }
}

impl Position for crate::store::TraceCursor {
    fn to_numbers(&self) -> Vec<i64> {
        vec![self.started_at, self.seq]
    }
    fn from_numbers(numbers: &[i64]) -> Option<Self> {
        match numbers {
            [started_at, seq] => Some(Self {
                started_at: *started_at,
                seq: *seq,
            }),
            _ => None,
        }
    }
}

impl Position for crate::store::ExportCursor {
    fn to_numbers(&self) -> Vec<i64> {
        vec![
            self.started_at,
            self.seq,
            i64::try_from(self.span_offset).unwrap_or(i64::MAX),
        ]
    }
    fn from_numbers(numbers: &[i64]) -> Option<Self> {
        match numbers {
            [started_at, seq, offset] => Some(Self {
                started_at: *started_at,
                seq: *seq,
                span_offset: usize::try_from(*offset).ok()?,
            }),
            _ => None,
        }
    }
}

/// The format of every cursor: `c1` (this version), the list's kind and the
/// position's integers, base64url without padding.
const CURSOR_VERSION: &str = "c1";

/// What a `cursor` that this list did not issue gets.
const NOT_A_CURSOR: &str = "cursor: not a cursor this list issued";

/// An opaque cursor of the list `L`.
pub struct Cursor<L: Listing>(pub L::Position, PhantomData<L>);

impl<L: Listing> Cursor<L> {
    pub fn new(position: L::Position) -> Self {
        Cursor(position, PhantomData)
    }

    /// The cursor's text, as clients see it.
    pub fn encode(position: &L::Position) -> String {
        let mut text = format!("{CURSOR_VERSION}:{}", L::KIND);
        for n in position.to_numbers() {
            text.push(':');
            text.push_str(&n.to_string());
        }
        URL_SAFE_NO_PAD.encode(text)
    }

    /// The position of a `cursor` parameter: a 400 naming it for any text
    /// but a cursor of this list.
    pub fn param(raw: &str) -> Result<L::Position, AppError> {
        Self::decode(raw).ok_or_else(|| AppError::bad_request(NOT_A_CURSOR))
    }

    /// The position a cursor of this list holds; `None` for any other text.
    pub fn decode(raw: &str) -> Option<L::Position> {
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let mut parts = text.split(':');
        if parts.next()? != CURSOR_VERSION || parts.next()? != L::KIND {
            return None;
        }
        let numbers = parts
            .map(|p| p.parse::<i64>().ok())
            .collect::<Option<Vec<_>>>()?;
        L::Position::from_numbers(&numbers)
    }
}

impl<L: Listing> Serialize for Cursor<L> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Self::encode(&self.0))
    }
}

/// A list's page: how many items (`limit`) and where to start (`cursor`).
pub struct Page<L: Listing> {
    /// As given; `None` when the client left it out.
    pub limit: Option<u32>,
    pub cursor: Option<L::Position>,
}

impl<L: Listing> Page<L> {
    /// The page size: as given, or the list's default.
    pub fn size(&self) -> usize {
        self.limit.unwrap_or(L::DEFAULT_LIMIT) as usize
    }
}

impl<'de, L: Listing> Deserialize<'de> for Page<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            limit: Option<String>,
            cursor: Option<String>,
        }
        let raw = Raw::deserialize(d)?;
        let limit = raw
            .limit
            .map(|l| {
                l.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=L::MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        D::Error::custom(format!(
                            "limit: must be an integer from 1 to {}",
                            L::MAX_LIMIT
                        ))
                    })
            })
            .transpose()?;
        let cursor = raw
            .cursor
            .map(|c| Cursor::<L>::decode(&c).ok_or_else(|| D::Error::custom(NOT_A_CURSOR)))
            .transpose()?;
        Ok(Page { limit, cursor })
    }
}

impl<L: Listing> IntoParams for Page<L> {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            query_param(
                "limit",
                &format!(
                    "How many items to return: 1 to {}, {} when left out.",
                    L::MAX_LIMIT,
                    L::DEFAULT_LIMIT
                ),
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(L::MAX_LIMIT))
                    .default(Some(L::DEFAULT_LIMIT.into())),
            ),
            query_param(
                "cursor",
                "The `next_cursor` of the previous page. Opaque; a cursor of another list is refused.",
                ObjectBuilder::new().schema_type(Type::String),
            ),
        ]
    }
}

/// A time window: `from` (inclusive) and `to`, RFC 3339, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeWindow {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl<'de> Deserialize<'de> for TimeWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            from: Option<String>,
            to: Option<String>,
        }
        let raw = Raw::deserialize(d)?;
        let time = |name: &str, value: Option<String>| {
            value
                .map(|v| {
                    parse_time(v.trim()).ok_or_else(|| {
                        D::Error::custom(format!(
                            "{name}: must be an RFC 3339 time such as 2026-01-02T03:04:05Z"
                        ))
                    })
                })
                .transpose()
        };
        let window = TimeWindow {
            from: time("from", raw.from)?,
            to: time("to", raw.to)?,
        };
        if let (Some(from), Some(to)) = (window.from, window.to) {
            if to < from {
                return Err(D::Error::custom("to: must not be before from"));
            }
        }
        Ok(window)
    }
}

impl IntoParams for TimeWindow {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        ["from", "to"]
            .into_iter()
            .map(|name| {
                query_param(
                    name,
                    if name == "from" {
                        "Start of the window (inclusive), RFC 3339."
                    } else {
                        "End of the window, RFC 3339; not before `from`."
                    },
                    ObjectBuilder::new().schema_type(Type::String).format(Some(
                        utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::DateTime,
                        ),
                    )),
                )
            })
            .collect()
    }
}

/// `project_id`: one project of the caller's organisation.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectParam {
    /// Only this project: its id, slug or name.
    pub project_id: Option<String>,
}

impl ProjectParam {
    /// The project's internal id; `None` when none is named, a 404 when
    /// the caller's organisation has no such project.
    pub async fn resolve(
        &self,
        state: &super::AppState,
        principal: &super::Principal,
    ) -> Result<Option<i64>, AppError> {
        let Some(reference) = &self.project_id else {
            return Ok(None);
        };
        let project = state
            .store
            .find_project(principal.tenant_id, reference.clone())
            .await?
            .ok_or(AppError::NotFound("project"))?;
        Ok(Some(project.id))
    }
}

fn query_param(name: &str, description: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// The traces list (`GET /v1/traces`), and the sessions list, whose
/// positions are also a time and a sequence.
pub struct Traces;
impl Listing for Traces {
    const DEFAULT_LIMIT: u32 = 50;
    const MAX_LIMIT: u32 = 200;
    const KIND: &'static str = "traces";
    type Position = crate::store::TraceCursor;
}

pub struct Sessions;
impl Listing for Sessions {
    const DEFAULT_LIMIT: u32 = 50;
    const MAX_LIMIT: u32 = 200;
    const KIND: &'static str = "sessions";
    type Position = crate::store::TraceCursor;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Listed {
        model: Option<String>,
        #[serde(flatten)]
        page: Page<Traces>,
        #[serde(flatten)]
        window: TimeWindow,
    }

    fn parse(raw: &str) -> Result<Listed, String> {
        parse_query::<Listed>(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn a_query_names_the_parameter_that_does_not_fit() {
        let ok = parse("model=gpt&limit=5&from=2026-01-02T00:00:00Z&cursor=").unwrap();
        assert_eq!(ok.model.as_deref(), Some("gpt"));
        assert_eq!(ok.page.size(), 5);
        assert!(ok.page.cursor.is_none());
        assert!(ok.window.from.is_some() && ok.window.to.is_none());
        assert_eq!(parse("").unwrap().page.size(), 50);
        assert_eq!(
            parse("limit=201").err().unwrap(),
            "limit: must be an integer from 1 to 200"
        );
        assert_eq!(
            parse("limit=x").err().unwrap(),
            "limit: must be an integer from 1 to 200"
        );
        assert!(parse("from=yesterday").err().unwrap().starts_with("from: "));
        assert!(parse("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z")
            .err()
            .unwrap()
            .starts_with("to: "));
        assert!(parse("model=a&model=b").err().unwrap().contains("model"));
    }

    #[test]
    fn a_cursor_round_trips_and_only_in_its_own_list() {
        let at = crate::store::TraceCursor {
            started_at: 1_700_000_000_000_000,
            seq: 42,
        };
        let text = Cursor::<Traces>::encode(&at);
        let back = Cursor::<Traces>::decode(&text).unwrap();
        assert_eq!((back.started_at, back.seq), (at.started_at, 42));
        assert!(Cursor::<Sessions>::decode(&text).is_none());
        let page = parse(&format!("cursor={text}")).unwrap().page;
        assert_eq!(page.cursor.map(|c| c.seq), Some(42));
        for garbage in ["", "x", "djE6MToy", &URL_SAFE_NO_PAD.encode("c1:traces:1")] {
            assert!(Cursor::<Traces>::decode(garbage).is_none(), "{garbage}");
        }
        assert_eq!(
            parse("cursor=abc").err().unwrap(),
            "cursor: not a cursor this list issued"
        );
    }
}
