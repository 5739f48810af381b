//! Datasets, their items and their versions (the configurations runs are
//! made against). An item copies what a run needs from its trace (the input,
//! the output, a label) when it is added, so it outlives retention; adding
//! the same trace (and span) to a dataset again finds the item already
//! there. Runs are in `eval_runs`.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::value::RawValue;

use super::audit::{self, Actor};
use super::page::PAGE_MAX_BYTES;
use super::tenancy::new_uuid;
use super::{now_micros, Result, Store, StoreError};
use crate::model::Timestamp;

/// A dataset (the reference's `Dataset`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Dataset {
    #[schema(format = "uuid")]
    pub id: String,
    /// The organisation's id.
    #[schema(format = "uuid")]
    pub tenant_id: String,
    /// The project whose evaluators score its runs.
    #[schema(format = "uuid")]
    pub project_id: String,
    #[schema(example = "refund questions")]
    pub name: String,
    pub description: Option<String>,
    /// Items in the dataset.
    pub item_count: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// An item of a dataset (the reference's `DatasetItem`), with the text it
/// keeps of its trace.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DatasetItem {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = "uuid")]
    pub dataset_id: String,
    #[schema(format = "uuid")]
    pub tenant_id: String,
    /// The trace it came from; the item outlives it.
    #[schema(format = "uuid")]
    pub trace_id: String,
    pub span_id: Option<String>,
    #[schema(format = "uuid")]
    pub feedback_id: Option<String>,
    /// `pass`, `fail`, or null: not labelled yet.
    #[schema(example = "fail")]
    pub label: Option<String>,
    /// The trace's (or span's) input when the item was added.
    pub input: Option<String>,
    /// Its output then: what a run without a model judges, and the
    /// reference a fresh answer is compared with.
    pub expected_output: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// A named, immutable configuration of a dataset's runs (the reference's
/// `EvalVersion`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EvalVersion {
    #[schema(format = "uuid")]
    pub id: String,
    #[schema(format = "uuid")]
    pub tenant_id: String,
    #[schema(format = "uuid")]
    pub dataset_id: String,
    #[schema(example = "v2-shorter-prompt")]
    pub name: String,
    /// Sent as the system message with each item's input.
    pub system_prompt: Option<String>,
    /// The model that answers each item; null: the items' own outputs are scored.
    pub model: Option<String>,
    /// The judge model that scores each answer; null: only the project's evaluators score.
    pub judge_model: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Box<RawValue>>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// An item to add.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub trace_id: String,
    pub span_id: Option<String>,
    pub feedback_id: Option<String>,
    /// `Some(None)`: unlabelled, said so; `None`: not said.
    pub label: Option<Option<String>>,
}

/// What adding an item came to.
#[derive(Debug, Clone)]
pub enum ItemAdded {
    Created(DatasetItem),
    /// The trace (and span) was in the dataset already: the item, with the
    /// label the request gave, if it gave one.
    Existing(DatasetItem),
    NoDataset,
    NoTrace,
    NoSpan,
    NoFeedback,
}

/// A version to create.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub name: String,
    pub system_prompt: Option<String>,
    pub model: Option<String>,
    pub judge_model: Option<String>,
    /// JSON object text.
    pub metadata: Option<String>,
}

/// Which items by label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelFilter {
    All,
    Pass,
    Fail,
    Unlabeled,
}

const DATASET_COLUMNS: &str = "d.uuid, ten.uuid, p.uuid, d.name, d.description, \
    (SELECT count(*) FROM dataset_items i WHERE i.dataset_id = d.id), d.created_at, d.updated_at";
const DATASET_FROM: &str =
    "datasets d JOIN tenants ten ON ten.id = d.tenant_id JOIN projects p ON p.id = d.project_id";

fn dataset_from_row(r: &Row<'_>) -> rusqlite::Result<Dataset> {
    Ok(Dataset {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        project_id: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        item_count: r.get(5)?,
        created_at: Timestamp(r.get(6)?),
        updated_at: Timestamp(r.get(7)?),
    })
}

pub(super) const ITEM_COLUMNS: &str =
    "i.id, i.uuid, d.uuid, ten.uuid, i.trace_id, i.span_id, i.feedback_id, \
    i.label, i.input, i.expected_output, i.created_at, i.updated_at";
pub(super) const ITEM_FROM: &str =
    "dataset_items i JOIN datasets d ON d.id = i.dataset_id JOIN tenants ten ON ten.id = i.tenant_id";

pub(super) fn item_from_row(r: &Row<'_>) -> rusqlite::Result<(i64, DatasetItem)> {
    Ok((
        r.get(0)?,
        DatasetItem {
            id: r.get(1)?,
            dataset_id: r.get(2)?,
            tenant_id: r.get(3)?,
            trace_id: r.get(4)?,
            span_id: r.get(5)?,
            feedback_id: r.get(6)?,
            label: r.get(7)?,
            input: r.get(8)?,
            expected_output: r.get(9)?,
            created_at: Timestamp(r.get(10)?),
            updated_at: Timestamp(r.get(11)?),
        },
    ))
}

const VERSION_COLUMNS: &str = "v.uuid, ten.uuid, d.uuid, v.name, v.system_prompt, v.model, \
    v.judge_model, v.metadata, v.created_at";
const VERSION_FROM: &str =
    "eval_versions v JOIN datasets d ON d.id = v.dataset_id JOIN tenants ten ON ten.id = v.tenant_id";

pub(super) fn version_from_row(r: &Row<'_>) -> rusqlite::Result<EvalVersion> {
    Ok(EvalVersion {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        dataset_id: r.get(2)?,
        name: r.get(3)?,
        system_prompt: r.get(4)?,
        model: r.get(5)?,
        judge_model: r.get(6)?,
        metadata: r
            .get::<_, Option<String>>(7)?
            .and_then(|m| RawValue::from_string(m).ok()),
        created_at: Timestamp(r.get(8)?),
    })
}

/// The internal id of the tenant's dataset `uuid`.
pub(super) fn dataset_key(conn: &Connection, tenant_id: i64, uuid: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM datasets WHERE tenant_id = ?1 AND uuid = ?2")?
        .query_row(params![tenant_id, uuid], |r| r.get(0))
        .optional()?)
}

fn dataset_by_key(conn: &Connection, id: i64) -> Result<Option<Dataset>> {
    let sql = format!("SELECT {DATASET_COLUMNS} FROM {DATASET_FROM} WHERE d.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], dataset_from_row)
        .optional()?)
}

fn item_by_key(conn: &Connection, id: i64) -> Result<Option<DatasetItem>> {
    let sql = format!("SELECT {ITEM_COLUMNS} FROM {ITEM_FROM} WHERE i.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], item_from_row)
        .optional()?
        .map(|(_, item)| item))
}

fn version_by_key(conn: &Connection, id: i64) -> Result<Option<EvalVersion>> {
    let sql = format!("SELECT {VERSION_COLUMNS} FROM {VERSION_FROM} WHERE v.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], version_from_row)
        .optional()?)
}

fn touch(conn: &Connection, dataset_id: i64, now: i64) -> Result<()> {
    conn.prepare_cached("UPDATE datasets SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![dataset_id, now])?;
    Ok(())
}

fn label_clause(label: LabelFilter) -> &'static str {
    match label {
        LabelFilter::All => "",
        LabelFilter::Pass => " AND i.label = 'pass'",
        LabelFilter::Fail => " AND i.label = 'fail'",
        LabelFilter::Unlabeled => " AND i.label IS NULL",
    }
}

/// A stored label: `unlabeled` and null are both no label.
fn stored_label(label: Option<&str>) -> Option<&str> {
    label.filter(|l| *l != "unlabeled")
}

impl Store {
    /// Creates a dataset; a name the organisation uses already is a conflict.
    pub async fn create_dataset(
        &self,
        tenant_id: i64,
        project_id: i64,
        name: String,
        description: Option<String>,
        by: Actor,
    ) -> Result<Dataset> {
        self.write_data(move |conn| {
            let now = now_micros();
            let uuid = new_uuid();
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO datasets (uuid, tenant_id, project_id, name, description, \
                     created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
                     ON CONFLICT (tenant_id, name) DO NOTHING",
                )?
                .execute(params![uuid, tenant_id, project_id, name, description, now])?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "a dataset named {name:?} exists already"
                )));
            }
            let dataset = dataset_by_key(conn, conn.last_insert_rowid())?
                .ok_or_else(|| StoreError::Corrupt("a created dataset vanished".into()))?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "dataset.create",
                Some(&dataset.id),
                serde_json::json!({"name": dataset.name, "project_id": dataset.project_id}),
            )?;
            Ok(dataset)
        })
        .await
    }

    /// The organisation's datasets, newest first.
    pub async fn list_datasets(&self, tenant_id: i64) -> Result<Vec<Dataset>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {DATASET_COLUMNS} FROM {DATASET_FROM} WHERE d.tenant_id = ?1 ORDER BY d.id DESC"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([tenant_id], dataset_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub async fn get_dataset(&self, tenant_id: i64, uuid: String) -> Result<Option<Dataset>> {
        self.read(move |conn| match dataset_key(conn, tenant_id, &uuid)? {
            Some(id) => dataset_by_key(conn, id),
            None => Ok(None),
        })
        .await
    }

    /// Deletes a dataset with its items, versions and runs; returns whether
    /// it existed.
    pub async fn delete_dataset(&self, tenant_id: i64, uuid: String, by: Actor) -> Result<bool> {
        self.write(move |conn| {
            let Some(id) = dataset_key(conn, tenant_id, &uuid)? else {
                return Ok(false);
            };
            let (name, items, runs): (String, i64, i64) = conn
                .prepare_cached(
                    "SELECT name, (SELECT count(*) FROM dataset_items WHERE dataset_id = ?1), \
                     (SELECT count(*) FROM eval_runs WHERE dataset_id = ?1) \
                     FROM datasets WHERE id = ?1",
                )?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            // Runs first: their items point at the dataset's items.
            conn.prepare_cached("DELETE FROM eval_runs WHERE dataset_id = ?1")?
                .execute([id])?;
            conn.prepare_cached("DELETE FROM datasets WHERE id = ?1")?
                .execute([id])?;
            audit::record(
                conn,
                tenant_id,
                &by,
                "dataset.delete",
                Some(&uuid),
                serde_json::json!({"name": name, "items": items, "runs": runs}),
            )?;
            Ok(true)
        })
        .await
    }

    /// Adds the tenant's trace (or one of its spans) to a dataset, copying
    /// its input and output; the same trace and span again finds the item
    /// there and sets its label if the request gave one.
    pub async fn add_dataset_item(
        &self,
        tenant_id: i64,
        dataset_uuid: String,
        item: NewItem,
    ) -> Result<ItemAdded> {
        self.write_data(move |conn| add_item(conn, tenant_id, &dataset_uuid, &item))
            .await
    }

    /// A page of a dataset's items, newest first, below the internal id
    /// `before`: at most `limit`, fewer when their text passes
    /// [`PAGE_MAX_BYTES`] (never none while items remain), and whether more
    /// follow. `None` when the tenant has no such dataset.
    pub async fn list_dataset_items(
        &self,
        tenant_id: i64,
        dataset_uuid: String,
        label: LabelFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Option<(Vec<(i64, DatasetItem)>, bool)>> {
        self.read(move |conn| {
            let Some(dataset_id) = dataset_key(conn, tenant_id, &dataset_uuid)? else {
                return Ok(None);
            };
            let mut sql = format!("SELECT {ITEM_COLUMNS} FROM {ITEM_FROM} WHERE i.dataset_id = ?");
            let mut args: Vec<SqlValue> = vec![dataset_id.into()];
            sql.push_str(label_clause(label));
            if let Some(before) = before {
                sql.push_str(" AND i.id < ?");
                args.push(before.into());
            }
            sql.push_str(" ORDER BY i.id DESC LIMIT ?");
            args.push((limit as i64 + 1).into());
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params_from_iter(args))?;
            let (mut items, mut bytes) = (Vec::new(), 0usize);
            while let Some(row) = rows.next()? {
                if items.len() == limit {
                    return Ok(Some((items, true)));
                }
                let (key, item) = item_from_row(row)?;
                let size = item.input.as_ref().map_or(0, String::len)
                    + item.expected_output.as_ref().map_or(0, String::len);
                if !items.is_empty() && bytes + size > PAGE_MAX_BYTES {
                    return Ok(Some((items, true)));
                }
                bytes += size;
                items.push((key, item));
            }
            Ok(Some((items, false)))
        })
        .await
    }

    /// How many of a dataset's items `label` selects; `None` when the
    /// tenant has no such dataset.
    pub async fn count_dataset_items(
        &self,
        tenant_id: i64,
        dataset_uuid: String,
        label: LabelFilter,
    ) -> Result<Option<u64>> {
        self.read(move |conn| {
            let Some(dataset_id) = dataset_key(conn, tenant_id, &dataset_uuid)? else {
                return Ok(None);
            };
            let sql = format!(
                "SELECT count(*) FROM dataset_items i WHERE i.dataset_id = ?1{}",
                label_clause(label)
            );
            let count: i64 = conn
                .prepare_cached(&sql)?
                .query_row([dataset_id], |r| r.get(0))?;
            Ok(Some(count.max(0) as u64))
        })
        .await
    }

    /// Sets (or with `None` clears) an item's label; `None` when the tenant
    /// has no such dataset or item.
    pub async fn label_dataset_item(
        &self,
        tenant_id: i64,
        dataset_uuid: String,
        item_uuid: String,
        label: Option<String>,
    ) -> Result<Option<DatasetItem>> {
        self.write(move |conn| {
            let Some(dataset_id) = dataset_key(conn, tenant_id, &dataset_uuid)? else {
                return Ok(None);
            };
            let now = now_micros();
            let id: Option<i64> = conn
                .prepare_cached(
                    "UPDATE dataset_items SET label = ?3, updated_at = ?4 \
                     WHERE dataset_id = ?1 AND uuid = ?2 RETURNING id",
                )?
                .query_row(
                    params![dataset_id, item_uuid, stored_label(label.as_deref()), now],
                    |r| r.get(0),
                )
                .optional()?;
            match id {
                Some(id) => {
                    touch(conn, dataset_id, now)?;
                    item_by_key(conn, id)
                }
                None => Ok(None),
            }
        })
        .await
    }

    /// Removes an item from a dataset (past runs keep their results under
    /// its trace id); returns whether it was there.
    pub async fn remove_dataset_item(
        &self,
        tenant_id: i64,
        dataset_uuid: String,
        item_uuid: String,
    ) -> Result<bool> {
        self.write(move |conn| {
            let Some(dataset_id) = dataset_key(conn, tenant_id, &dataset_uuid)? else {
                return Ok(false);
            };
            let removed = conn
                .prepare_cached("DELETE FROM dataset_items WHERE dataset_id = ?1 AND uuid = ?2")?
                .execute(params![dataset_id, item_uuid])?;
            if removed > 0 {
                touch(conn, dataset_id, now_micros())?;
            }
            Ok(removed > 0)
        })
        .await
    }

    /// Creates a version of a dataset; `None` when the tenant has no such
    /// dataset. A name the dataset uses already is a conflict.
    pub async fn create_eval_version(
        &self,
        tenant_id: i64,
        dataset_uuid: String,
        version: NewVersion,
    ) -> Result<Option<EvalVersion>> {
        self.write_data(move |conn| {
            let Some(dataset_id) = dataset_key(conn, tenant_id, &dataset_uuid)? else {
                return Ok(None);
            };
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO eval_versions (uuid, dataset_id, tenant_id, name, system_prompt, \
                     model, judge_model, metadata, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (dataset_id, name) DO NOTHING",
                )?
                .execute(params![
                    new_uuid(),
                    dataset_id,
                    tenant_id,
                    version.name,
                    version.system_prompt,
                    version.model,
                    version.judge_model,
                    version.metadata,
                    now_micros()
                ])?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "the dataset has a version named {:?} already; versions do not change, \
                     so give the new one another name",
                    version.name
                )));
            }
            version_by_key(conn, conn.last_insert_rowid())
        })
        .await
    }

    /// A dataset's versions, newest first; `None` when the tenant has no
    /// such dataset.
    pub async fn list_eval_versions(
        &self,
        tenant_id: i64,
        dataset_uuid: String,
    ) -> Result<Option<Vec<EvalVersion>>> {
        self.read(move |conn| {
            let Some(dataset_id) = dataset_key(conn, tenant_id, &dataset_uuid)? else {
                return Ok(None);
            };
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM {VERSION_FROM} WHERE v.dataset_id = ?1 ORDER BY v.id DESC"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([dataset_id], version_from_row)?;
            Ok(Some(rows.collect::<rusqlite::Result<Vec<_>>>()?))
        })
        .await
    }
}

fn add_item(
    conn: &Connection,
    tenant_id: i64,
    dataset_uuid: &str,
    item: &NewItem,
) -> Result<ItemAdded> {
    let Some(dataset_id) = dataset_key(conn, tenant_id, dataset_uuid)? else {
        return Ok(ItemAdded::NoDataset);
    };
    let now = now_micros();
    let existing: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM dataset_items WHERE dataset_id = ?1 AND trace_id = ?2 \
             AND coalesce(span_id, '') = coalesce(?3, '')",
        )?
        .query_row(params![dataset_id, item.trace_id, item.span_id], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(id) = existing {
        if let Some(label) = &item.label {
            conn.prepare_cached(
                "UPDATE dataset_items SET label = ?2, updated_at = ?3 \
                 WHERE id = ?1 AND label IS NOT ?2",
            )?
            .execute(params![id, stored_label(label.as_deref()), now])?;
        }
        return Ok(match item_by_key(conn, id)? {
            Some(found) => ItemAdded::Existing(found),
            None => ItemAdded::NoDataset,
        });
    }
    let trace: Option<(i64, Option<String>, Option<String>)> = conn
        .prepare_cached("SELECT seq, unpack(input), unpack(output) FROM traces WHERE tenant_id = ?1 AND id = ?2")?
        .query_row(params![tenant_id, item.trace_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((seq, mut input, mut output)) = trace else {
        return Ok(ItemAdded::NoTrace);
    };
    if let Some(span_id) = &item.span_id {
        let span: Option<(Option<String>, Option<String>)> = conn
            .prepare_cached(
                "SELECT unpack(input), unpack(output) FROM spans WHERE trace_seq = ?1 AND id = ?2",
            )?
            .query_row(params![seq, span_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((span_input, span_output)) = span else {
            return Ok(ItemAdded::NoSpan);
        };
        (input, output) = (span_input, span_output);
    }
    // Feedback given on the trace labels the item unless the request does.
    let mut label = item
        .label
        .clone()
        .map(|l| stored_label(l.as_deref()).map(str::to_owned));
    if let Some(feedback_id) = &item.feedback_id {
        let feedback: Option<String> = conn
            .prepare_cached("SELECT label FROM feedback WHERE uuid = ?1 AND trace_seq = ?2")?
            .query_row(params![feedback_id, seq], |r| r.get(0))
            .optional()?;
        let Some(feedback) = feedback else {
            return Ok(ItemAdded::NoFeedback);
        };
        if label.is_none() {
            label = Some(match feedback.as_str() {
                "good" => Some("pass".to_owned()),
                "bad" => Some("fail".to_owned()),
                _ => None,
            });
        }
    }
    conn.prepare_cached(
        "INSERT INTO dataset_items (uuid, dataset_id, tenant_id, trace_id, span_id, feedback_id, \
         label, input, expected_output, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )?
    .execute(params![
        new_uuid(),
        dataset_id,
        tenant_id,
        item.trace_id,
        item.span_id,
        item.feedback_id,
        label.flatten(),
        input,
        output,
        now
    ])?;
    let id = conn.last_insert_rowid();
    touch(conn, dataset_id, now)?;
    Ok(match item_by_key(conn, id)? {
        Some(created) => ItemAdded::Created(created),
        None => ItemAdded::NoDataset,
    })
}
