//! `/v1/datasets`: datasets of hard cases, their items (each a trace, or a
//! span of one, with a review label and the text it keeps of it) and the
//! items' export. Versions are in `eval_versions`, runs in `eval_runs`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::download::{csv_field, streamed, Format};
use super::eval_params::{bounded, canonical_uuid, dataset_id};
use super::extract::JsonBody;
use super::principal::actor;
use super::query::{ApiQuery, Cursor, Listing, Page};
use super::{AppState, Principal};
use crate::error::{AppError, ErrorBody};
use crate::store::{Dataset, DatasetItem, ItemAdded, LabelFilter, NewItem};

/// The longest dataset name, in characters.
const MAX_NAME_CHARS: usize = 200;
/// The longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 2_000;
/// The longest span id, in characters.
const MAX_SPAN_ID_CHARS: usize = 128;
/// Items read per step of an export.
const EXPORT_PAGE: usize = 500;

/// A dataset's items, newest first; a position is the internal id of the
/// last item shown.
pub struct DatasetItems;

impl Listing for DatasetItems {
    const DEFAULT_LIMIT: u32 = 50;
    const MAX_LIMIT: u32 = 200;
    const KIND: &'static str = "dataset-items";
    type Position = i64;
}

/// A dataset to create (the reference's `CreateDatasetRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = CreateDatasetRequest)]
pub struct CreateDataset {
    /// 1 to 200 characters, unique in the organisation.
    #[schema(example = "refund questions")]
    name: String,
    #[serde(default)]
    description: Option<String>,
    /// The project whose evaluation rules score the dataset's runs: its id,
    /// slug or name. Default: the API key's project, or the organisation's
    /// first for a session.
    #[serde(default)]
    project_id: Option<String>,
}

/// The organisation's datasets (the reference's `DatasetListResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = DatasetListResponse)]
pub struct DatasetList {
    datasets: Vec<Dataset>,
}

/// An item to add (the reference's `AddDatasetItemRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = AddDatasetItemRequest)]
pub struct AddItem {
    /// The trace whose input and output the item keeps.
    #[schema(format = "uuid")]
    trace_id: String,
    /// A span of the trace whose input and output to keep instead.
    #[serde(default)]
    span_id: Option<String>,
    /// Feedback on the trace; with no `label`, `good` feedback labels the
    /// item `pass` and `bad` feedback `fail`.
    #[serde(default)]
    #[schema(format = "uuid")]
    feedback_id: Option<String>,
    /// `pass`, `fail`, or `unlabeled`/null.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "fail")]
    label: Option<Option<String>>,
}

/// A change to an item (the reference's `PatchDatasetItemRequest`).
#[derive(Deserialize, ToSchema)]
#[schema(as = PatchDatasetItemRequest)]
pub struct PatchItem {
    /// `pass` or `fail`; `unlabeled`, null or left out clears the label.
    #[serde(default)]
    #[schema(example = "pass")]
    label: Option<String>,
}

/// A page of a dataset's items (the reference's `DatasetItemListResponse`).
#[derive(Serialize, ToSchema)]
#[schema(as = DatasetItemListResponse)]
pub struct ItemPage {
    items: Vec<DatasetItem>,
    /// Where the next page starts; null on the last page.
    next_cursor: Option<String>,
    has_more: bool,
}

/// Which items, by review label.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LabelQuery {
    /// `pass`, `fail` or `unlabeled` (never labelled, or cleared); left out:
    /// every item.
    #[param(value_type = Option<String>, example = "fail")]
    label: Option<ListLabel>,
}

/// An export's label filter and format.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// `csv` (the default) or `jsonl`.
    #[param(inline, default = "csv")]
    format: Option<Format>,
    /// `pass`, `fail`, `unlabeled` or `all` (the default).
    #[param(value_type = Option<String>, default = "all")]
    label: Option<ExportLabel>,
}

/// A label filter of the item list.
pub(super) struct ListLabel(LabelFilter);

impl<'de> Deserialize<'de> for ListLabel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match label_filter(&String::deserialize(d)?) {
            Some(LabelFilter::All) | None => {
                Err(serde::de::Error::custom("must be pass, fail or unlabeled"))
            }
            Some(filter) => Ok(ListLabel(filter)),
        }
    }
}

/// A label filter of the export, which takes `all` too.
pub(super) struct ExportLabel(LabelFilter);

impl<'de> Deserialize<'de> for ExportLabel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        label_filter(&String::deserialize(d)?)
            .map(ExportLabel)
            .ok_or_else(|| serde::de::Error::custom("must be pass, fail, unlabeled or all"))
    }
}

fn label_filter(text: &str) -> Option<LabelFilter> {
    match text {
        "all" => Some(LabelFilter::All),
        "pass" => Some(LabelFilter::Pass),
        "fail" => Some(LabelFilter::Fail),
        "unlabeled" => Some(LabelFilter::Unlabeled),
        _ => None,
    }
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A label as a request gives it: `pass`, `fail`, or none.
fn check_label(label: Option<&str>) -> Result<Option<String>, AppError> {
    match label {
        None | Some("unlabeled") => Ok(None),
        Some(l @ ("pass" | "fail")) => Ok(Some(l.to_owned())),
        Some(_) => Err(AppError::bad_request(
            "label: must be pass, fail, unlabeled or null",
        )),
    }
}

const NO_DATASET: &str = "`not_found`: the caller's organisation has no dataset `id`.";
const BAD_LABEL: &str = "`bad_request`: `label` is not `pass`, `fail`, `unlabeled` or null.";

/// The organisation's datasets, newest first.
#[utoipa::path(
    get,
    path = "/v1/datasets",
    operation_id = "listDatasets",
    tag = "datasets",
    responses((status = 200, description = "The datasets.", body = DatasetList))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<DatasetList>, AppError> {
    let datasets = state.store.list_datasets(principal.tenant_id).await?;
    Ok(Json(DatasetList { datasets }))
}

/// Creates a dataset.
#[utoipa::path(
    post,
    path = "/v1/datasets",
    operation_id = "createDataset",
    tag = "datasets",
    request_body(content = CreateDataset, example = json!({"name": "refund questions", "description": "Answers users marked wrong"})),
    responses(
        (status = 201, description = "The dataset.", body = Dataset),
        (status = 400, description = "`bad_request`: `name` or `description` does not fit (the message names it).", body = ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no project `project_id`.", body = ErrorBody),
        (status = 409, description = "`conflict`: the organisation has a dataset of that name.", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateDataset>,
) -> Result<(StatusCode, Json<Dataset>), AppError> {
    bounded("name", &body.name, MAX_NAME_CHARS)?;
    if let Some(description) = &body.description {
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(AppError::bad_request(format!(
                "description: at most {MAX_DESCRIPTION_CHARS} characters"
            )));
        }
    }
    let project_id = match body.project_id {
        Some(reference) => {
            state
                .store
                .find_project(principal.tenant_id, reference)
                .await?
                .ok_or(AppError::NotFound("project"))?
                .id
        }
        None => principal.project_id,
    };
    let dataset = state
        .store
        .create_dataset(
            principal.tenant_id,
            project_id,
            body.name.trim().to_owned(),
            body.description.filter(|d| !d.trim().is_empty()),
            actor(&principal),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(dataset)))
}

/// A dataset.
#[utoipa::path(
    get,
    path = "/v1/datasets/{id}",
    operation_id = "getDataset",
    tag = "datasets",
    params(("id" = String, Path, format = "uuid", description = "The dataset's id.")),
    responses((status = 200, description = "The dataset.", body = Dataset))
)]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Dataset>, AppError> {
    let dataset = state
        .store
        .get_dataset(principal.tenant_id, dataset_id(&id)?)
        .await?
        .ok_or(AppError::NotFound("dataset"))?;
    Ok(Json(dataset))
}

/// Deletes a dataset with its items, versions and runs.
///
/// The deletion is recorded in the audit log with how many items and runs
/// went with it.
#[utoipa::path(
    delete,
    path = "/v1/datasets/{id}",
    operation_id = "deleteDataset",
    tag = "datasets",
    params(("id" = String, Path, format = "uuid", description = "The dataset's id.")),
    responses((status = 204, description = "Deleted; no body."))
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    if !state
        .store
        .delete_dataset(principal.tenant_id, dataset_id(&id)?, actor(&principal))
        .await?
    {
        return Err(AppError::NotFound("dataset"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A dataset's items, newest first.
#[utoipa::path(
    get,
    path = "/v1/datasets/{id}/items",
    operation_id = "listDatasetItems",
    tag = "datasets",
    params(("id" = String, Path, format = "uuid", description = "The dataset's id."), LabelQuery, Page<DatasetItems>),
    responses(
        (status = 200, description = "A page of items.", body = ItemPage),
        (status = 404, description = NO_DATASET, body = ErrorBody),
    )
)]
pub async fn list_items(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(LabelQuery { label }): ApiQuery<LabelQuery>,
    ApiQuery(page): ApiQuery<Page<DatasetItems>>,
) -> Result<Json<ItemPage>, AppError> {
    let (rows, has_more) = state
        .store
        .list_dataset_items(
            principal.tenant_id,
            dataset_id(&id)?,
            label.map_or(LabelFilter::All, |l| l.0),
            page.cursor,
            page.size(),
        )
        .await?
        .ok_or(AppError::NotFound("dataset"))?;
    let next_cursor = if has_more {
        rows.last()
            .map(|(key, _)| Cursor::<DatasetItems>::encode(key))
    } else {
        None
    };
    Ok(Json(ItemPage {
        items: rows.into_iter().map(|(_, item)| item).collect(),
        next_cursor,
        has_more,
    }))
}

/// Adds a trace (or one of its spans) to a dataset.
///
/// The item keeps the trace's (or span's) input and output, so it stays
/// useful after retention deletes the trace. Adding the same trace and span
/// again is safe: the answer is the item already there (200), with its
/// label set if the request gives one.
#[utoipa::path(
    post,
    path = "/v1/datasets/{id}/items",
    operation_id = "addDatasetItem",
    tag = "datasets",
    params(("id" = String, Path, format = "uuid", description = "The dataset's id.")),
    request_body(content = AddItem, example = json!({"trace_id": "0190f1c2-7d1e-7a4b-9c3d-2e5f6a7b8c9d", "label": "fail"})),
    responses(
        (status = 201, description = "The item, added.", body = DatasetItem),
        (status = 200, description = "The trace (and span) was in the dataset already: the item.", body = DatasetItem),
        (status = 400, description = "`bad_request`: `label` or `span_id` does not fit.", body = ErrorBody),
        (status = 404, description = "`not_found`: the caller's organisation has no dataset `id`, or no trace, span or feedback of that id on the trace.", body = ErrorBody),
    )
)]
pub async fn add_item(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AddItem>,
) -> Result<(StatusCode, Json<DatasetItem>), AppError> {
    let dataset = dataset_id(&id)?;
    let label = match &body.label {
        Some(label) => Some(check_label(label.as_deref())?),
        None => None,
    };
    if let Some(span_id) = &body.span_id {
        bounded("span_id", span_id, MAX_SPAN_ID_CHARS)?;
    }
    let trace_id = canonical_uuid(&body.trace_id).ok_or(AppError::NotFound("trace"))?;
    let feedback_id = match &body.feedback_id {
        Some(raw) => Some(canonical_uuid(raw).ok_or(AppError::NotFound("feedback"))?),
        None => None,
    };
    let added = state
        .store
        .add_dataset_item(
            principal.tenant_id,
            dataset,
            NewItem {
                trace_id,
                span_id: body.span_id,
                feedback_id,
                label,
            },
        )
        .await?;
    match added {
        ItemAdded::Created(item) => Ok((StatusCode::CREATED, Json(item))),
        ItemAdded::Existing(item) => Ok((StatusCode::OK, Json(item))),
        ItemAdded::NoDataset => Err(AppError::NotFound("dataset")),
        ItemAdded::NoTrace => Err(AppError::NotFound("trace")),
        ItemAdded::NoSpan => Err(AppError::NotFound("span")),
        ItemAdded::NoFeedback => Err(AppError::NotFound("feedback")),
    }
}

/// Sets or clears an item's review label.
#[utoipa::path(
    patch,
    path = "/v1/datasets/{id}/items/{itemId}",
    operation_id = "patchDatasetItem",
    tag = "datasets",
    params(
        ("id" = String, Path, format = "uuid", description = "The dataset's id."),
        ("itemId" = String, Path, format = "uuid", description = "The item's id."),
    ),
    request_body(content = PatchItem, example = json!({"label": "pass"})),
    responses(
        (status = 200, description = "The item as changed.", body = DatasetItem),
        (status = 400, description = BAD_LABEL, body = ErrorBody),
    )
)]
pub async fn patch_item(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, item_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<PatchItem>,
) -> Result<Json<DatasetItem>, AppError> {
    let dataset = dataset_id(&id)?;
    let label = check_label(body.label.as_deref())?;
    let item_id = canonical_uuid(&item_id).ok_or(AppError::NotFound("dataset item"))?;
    let item = state
        .store
        .label_dataset_item(principal.tenant_id, dataset, item_id, label)
        .await?
        .ok_or(AppError::NotFound("dataset item"))?;
    Ok(Json(item))
}

/// Removes an item from a dataset.
///
/// Runs made before keep its results, under its trace id.
#[utoipa::path(
    delete,
    path = "/v1/datasets/{id}/items/{itemId}",
    operation_id = "deleteDatasetItem",
    tag = "datasets",
    params(
        ("id" = String, Path, format = "uuid", description = "The dataset's id."),
        ("itemId" = String, Path, format = "uuid", description = "The item's id."),
    ),
    responses((status = 204, description = "Removed; no body."))
)]
pub async fn remove_item(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, item_id)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let dataset = dataset_id(&id)?;
    let item_id = canonical_uuid(&item_id).ok_or(AppError::NotFound("dataset item"))?;
    if !state
        .store
        .remove_dataset_item(principal.tenant_id, dataset, item_id)
        .await?
    {
        return Err(AppError::NotFound("dataset item"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Columns of the CSV export, in order: the reference's, then the text the
/// item keeps.
const COLUMNS: [&str; 7] = [
    "id",
    "trace_id",
    "span_id",
    "label",
    "created_at",
    "input",
    "expected_output",
];

/// One line of a JSONL export.
#[derive(Serialize)]
struct ExportRow<'a> {
    id: &'a str,
    trace_id: &'a str,
    span_id: Option<&'a str>,
    label: Option<&'a str>,
    created_at: String,
    input: Option<&'a str>,
    expected_output: Option<&'a str>,
}

fn write_item(out: &mut String, item: &DatasetItem, format: Format) {
    match format {
        Format::Jsonl => {
            let row = ExportRow {
                id: &item.id,
                trace_id: &item.trace_id,
                span_id: item.span_id.as_deref(),
                label: item.label.as_deref(),
                created_at: item.created_at.to_rfc3339(),
                input: item.input.as_deref(),
                expected_output: item.expected_output.as_deref(),
            };
            if let Ok(line) = serde_json::to_string(&row) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        Format::Csv => {
            let created_at = item.created_at.to_rfc3339();
            let fields = [
                item.id.as_str(),
                &item.trace_id,
                item.span_id.as_deref().unwrap_or_default(),
                item.label.as_deref().unwrap_or("unlabeled"),
                &created_at,
                item.input.as_deref().unwrap_or_default(),
                item.expected_output.as_deref().unwrap_or_default(),
            ];
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                csv_field(out, field);
            }
            out.push('\n');
        }
    }
}

/// Streams a dataset's items as CSV or JSONL.
///
/// Newest first, written to the response as they are read, never buffered,
/// capped per plan (`X-TruLayer-Truncated: true` when the cap cut it).
/// CSV columns (in order): `id, trace_id, span_id, label, created_at,
/// input, expected_output`; an item without a label shows `unlabeled` in
/// CSV and null in JSONL. Each row carries the item's input and output, so
/// the file is useful on its own.
#[utoipa::path(
    get,
    path = "/v1/datasets/{id}/export",
    operation_id = "exportDatasetItems",
    tag = "datasets",
    params(("id" = String, Path, format = "uuid", description = "The dataset's id."), ExportQuery),
    responses(
        (
            status = 200,
            description = "The items as CSV (`text/csv; charset=utf-8`) or JSON lines (`application/x-ndjson`), streamed.",
            headers(
                ("X-TruLayer-Truncated" = bool, description = "Present and `true` when the plan's row cap cut the export and more rows exist."),
                ("Content-Disposition" = String, description = "A file name of `dataset-{id}-YYYY-MM-DD.csv` or `.jsonl`."),
            ),
            content(
                (String = "text/csv", example = "id,trace_id,span_id,label,created_at,input,expected_output\n"),
                (String = "application/x-ndjson"),
            ),
        ),
        (status = 404, description = NO_DATASET, body = ErrorBody),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<axum::response::Response, AppError> {
    let dataset = dataset_id(&id)?;
    let format = query.format.unwrap_or_default();
    let label = query.label.map_or(LabelFilter::All, |l| l.0);
    let cap = state.config.plans.limits(principal.plan).export_max_rows;
    let count = state
        .store
        .count_dataset_items(principal.tenant_id, dataset.clone(), label)
        .await?
        .ok_or(AppError::NotFound("dataset"))?;
    // The header goes out before the rows.
    let truncated = cap > 0 && count > cap;
    let limit = if cap > 0 { cap } else { u64::MAX };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let store = state.store.clone();
    let tenant_id = principal.tenant_id;
    tokio::spawn(async move {
        if format == Format::Csv {
            let _ = tx
                .send(Bytes::from(format!("{}\n", COLUMNS.join(","))))
                .await;
        }
        let (mut sent, mut before) = (0u64, None);
        while sent < limit {
            let take = EXPORT_PAGE.min((limit - sent) as usize);
            let (rows, more) = match store
                .list_dataset_items(tenant_id, dataset.clone(), label, before, take)
                .await
            {
                Ok(Some(page)) => page,
                Ok(None) => return,
                Err(e) => {
                    // The status is sent; ending the body early is all that is left.
                    tracing::error!(error = %e, "dataset export failed");
                    return;
                }
            };
            let mut chunk = String::new();
            for (_, item) in &rows {
                write_item(&mut chunk, item, format);
            }
            sent += rows.len() as u64;
            before = rows.last().map(|(key, _)| *key);
            // A client that went away ends the export.
            if tx.send(Bytes::from(chunk)).await.is_err() || !more {
                return;
            }
        }
    });
    Ok(streamed(rx, format, &format!("dataset-{id}"), truncated))
}
