//! The privacy worker: works through data subject requests (`POST /v1/dsr`)
//! one at a time, oldest first, and deletes export files past their keep
//! time.
//!
//! An erasure walks the traces in windows of [`WINDOW`] rows and deletes
//! the subject's, at most [`BATCH`] per writer job, with their spans,
//! events, feedback, evaluations, search entries, tag and session index
//! entries and metrics contributions (as retention does), and the copies
//! other tables keep (dataset items, run results, webhook deliveries). Each
//! job records its progress, so a request cut off by a stop resumes at the
//! next start where the last job left it. An export reads the same windows
//! on the read connections and writes JSON lines to a file in the data
//! directory, a chunk at a time; cut off, it starts over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::fs::File;
use std::io::{BufWriter, Write};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::store::{metadata_path, now_micros, DsrCounts, DsrOutcome, DsrWork, Store, StoreError};

/// The directory of export files inside the data directory.
pub const EXPORT_DIR: &str = "dsr-exports";
/// Traces looked at per step.
const WINDOW: usize = 1000;
/// Traces erased per writer job, at most.
const BATCH: usize = crate::upkeep::PURGE_BATCH;
/// An export step stops once its lines pass this many bytes.
const EXPORT_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// How often the worker looks for work when nobody woke it.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// How often expired export files are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Attempts at one request before it is marked failed.
const MAX_ATTEMPTS: u32 = 5;
/// Search-index merge steps after an erasure, at most: they drop the
/// erased entries from the index's segments.
const MERGE_STEPS: usize = 64;

/// The file name of a request's export.
pub fn export_file_name(uuid: &str) -> String {
    format!("{uuid}.jsonl")
}

/// The path of an export file, given its stored name.
pub fn export_path(data_dir: &Path, file: &str) -> PathBuf {
    data_dir.join(EXPORT_DIR).join(file)
}

/// Starts the worker; `wake` is notified when a request is created.
pub fn spawn(store: Arc<Store>, config: Arc<Config>, wake: Arc<Notify>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut swept: Option<Instant> = None;
        let mut attempts: (i64, u32) = (0, 0);
        loop {
            if swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
                swept = Some(Instant::now());
                sweep(&store, &config.storage.data_dir).await;
            }
            let work = match store.next_dsr().await {
                Ok(Some(work)) => work,
                Ok(None) => {
                    let _ = tokio::time::timeout(IDLE_POLL, wake.notified()).await;
                    continue;
                }
                Err(StoreError::ShuttingDown) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "looking for data subject requests");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let id = work.id;
            match process(&store, &config, work).await {
                Ok(()) => attempts = (0, 0),
                Err(StoreError::ShuttingDown) => return,
                Err(e) => {
                    attempts = if attempts.0 == id {
                        (id, attempts.1 + 1)
                    } else {
                        (id, 1)
                    };
                    tracing::warn!(error = %e, attempt = attempts.1, "a data subject request failed");
                    if attempts.1 >= MAX_ATTEMPTS {
                        let why = format!("gave up after {MAX_ATTEMPTS} attempts: {e}");
                        if let Err(e) = store.finish_dsr(id, DsrOutcome::Failed(why)).await {
                            tracing::warn!(error = %e, "marking a data subject request failed");
                        }
                    } else {
                        tokio::time::sleep(Duration::from_secs(1 << attempts.1)).await;
                    }
                }
            }
        }
    })
}

async fn process(store: &Store, config: &Config, mut work: DsrWork) -> Result<(), StoreError> {
    let path = metadata_path(&config.privacy.subject_metadata_key);
    if work.kind == "delete" {
        while !store
            .erase_step(&mut work, path.clone(), WINDOW, BATCH)
            .await?
        {}
        for _ in 0..MERGE_STEPS {
            if !store.merge_search_index(256).await? {
                break;
            }
        }
        store.finish_dsr(work.id, DsrOutcome::Erased).await?;
        tracing::info!(
            request = %work.uuid,
            traces = work.counts.traces,
            "data subject erasure completed"
        );
        return Ok(());
    }
    let dir = config.storage.data_dir.join(EXPORT_DIR);
    let name = export_file_name(&work.uuid);
    let partial = dir.join(format!("{name}.partial"));
    let written = write_export(store, config, &work, path, dir.clone(), partial.clone()).await;
    let (bytes, counts) = match written {
        Ok(done) => done,
        Err(e) => {
            let _ = off_thread(move || std::fs::remove_file(partial)).await;
            return Err(e);
        }
    };
    let target = dir.join(&name);
    off_thread(move || std::fs::rename(partial, target)).await?;
    let keep = i64::try_from(config.privacy.export_keep_h).unwrap_or(168) * 3_600_000_000;
    store
        .finish_dsr(
            work.id,
            DsrOutcome::Exported {
                file: name,
                bytes,
                counts,
                expires_at: now_micros() + keep,
            },
        )
        .await?;
    tracing::info!(request = %work.uuid, traces = counts.traces, bytes, "data subject export completed");
    Ok(())
}

/// Writes the export from the start; returns its size and counts.
async fn write_export(
    store: &Store,
    config: &Config,
    work: &DsrWork,
    path: Option<String>,
    dir: PathBuf,
    file: PathBuf,
) -> Result<(i64, DsrCounts), StoreError> {
    let mut out = off_thread(move || {
        std::fs::create_dir_all(&dir)?;
        Ok(BufWriter::new(File::create(file)?))
    })
    .await?;
    let mut matched_on = vec!["external_id".to_owned(), "session_id".to_owned()];
    if path.is_some() {
        matched_on.push(format!("metadata.{}", config.privacy.subject_metadata_key));
    }
    let header = serde_json::json!({
        "type": "export",
        "request_id": work.uuid,
        "subject_id": work.subject_id,
        "matched_on": matched_on,
        "created_at": crate::model::Timestamp(now_micros()),
    });
    let mut bytes = 0i64;
    let line = format!("{header}\n");
    bytes += line.len() as i64;
    out = append(out, line).await?;
    let (mut after, mut counts) = (0i64, DsrCounts::default());
    loop {
        let chunk = store
            .export_step(
                work.tenant_id,
                work.subject_id.clone(),
                path.clone(),
                after,
                WINDOW,
                EXPORT_CHUNK_BYTES,
            )
            .await?;
        bytes += chunk.lines.len() as i64;
        out = append(out, chunk.lines).await?;
        counts.traces += chunk.counts.traces;
        counts.spans += chunk.counts.spans;
        counts.feedback += chunk.counts.feedback;
        counts.evaluations += chunk.counts.evaluations;
        counts.dataset_items += chunk.counts.dataset_items;
        if chunk.done {
            break;
        }
        after = chunk.next_seq;
    }
    off_thread(move || out.into_inner().map_err(|e| e.into_error())?.sync_all()).await?;
    Ok((bytes, counts))
}

/// Writes `text` to the file off the async threads; gives the file back.
async fn append(mut out: BufWriter<File>, text: String) -> Result<BufWriter<File>, StoreError> {
    off_thread(move || {
        out.write_all(text.as_bytes())?;
        Ok(out)
    })
    .await
}

/// File-system work on the blocking pool.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
        .map_err(StoreError::Io)
}

/// Deletes the export files whose keep time is over.
async fn sweep(store: &Store, data_dir: &Path) {
    let expired = match store.expired_dsr_exports(now_micros()).await {
        Ok(expired) => expired,
        Err(e) => {
            tracing::warn!(error = %e, "looking for expired export files");
            return;
        }
    };
    for (id, file) in expired {
        let path = export_path(data_dir, &file);
        match off_thread(move || std::fs::remove_file(path)).await {
            Ok(()) => {}
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, "deleting an expired export file");
                continue;
            }
        }
        if let Err(e) = store.drop_dsr_export(id).await {
            tracing::warn!(error = %e, "forgetting an expired export file");
        }
    }
}
