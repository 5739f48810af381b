//! One ingest client of a cycle: posts batches until the kill, and says
//! which were acknowledged, which the kill cut off, and what went wrong.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::server;
use super::traffic::{Batch, Generator, Sent};

pub(super) struct ClientJob {
    pub(super) url: String,
    pub(super) cycle: u32,
    pub(super) sizes: RangeInclusive<usize>,
    /// The batch this client had in flight at the last kill.
    pub(super) retry: Option<Batch>,
    pub(super) killed: Arc<AtomicBool>,
    pub(super) acknowledged: Arc<AtomicUsize>,
}

pub(super) struct ClientOut {
    pub(super) acknowledged: Vec<Vec<Sent>>,
    /// Batches answered with something other than an acknowledgement.
    pub(super) refused: Vec<Vec<Sent>>,
    pub(super) cut_off: Option<Batch>,
    pub(super) retry_was_stored: usize,
    pub(super) retry_was_not_stored: usize,
    pub(super) duplicates: usize,
    pub(super) problems: Vec<String>,
    /// Handed back for the client's next cycle.
    pub(super) generator: Generator,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Send {
    New,
    /// Cut off by the last kill: stored whole or not at all.
    Retry,
    /// Acknowledged before: must be a duplicate.
    Again,
}

#[derive(Deserialize)]
struct BatchAnswer {
    ingested: Option<usize>,
    status: Option<String>,
    #[serde(default)]
    ids: Vec<String>,
}

pub(super) async fn client(mut job: ClientJob, generator: Generator) -> ClientOut {
    let mut out = ClientOut {
        acknowledged: Vec::new(),
        refused: Vec::new(),
        cut_off: None,
        retry_was_stored: 0,
        retry_was_not_stored: 0,
        duplicates: 0,
        problems: Vec::new(),
        generator,
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build the HTTP client");
    let mut again: Option<Batch> = None;
    let mut sent_again = false;
    while !job.killed.load(Ordering::SeqCst) {
        let (batch, kind) = if let Some(b) = job.retry.take() {
            (b, Send::Retry)
        } else if let Some(b) = again.take() {
            (b, Send::Again)
        } else {
            (out.generator.batch(job.cycle, &job.sizes), Send::New)
        };
        let answer = async {
            let response = http
                .post(&job.url)
                .bearer_auth(server::KEY)
                .header("content-type", "application/json")
                .body(batch.body.clone())
                .send()
                .await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                if !job.killed.load(Ordering::SeqCst) {
                    out.problems
                        .push(format!("a request failed while the server ran: {e}"));
                }
                if kind != Send::Again {
                    out.cut_off = Some(batch);
                }
                break;
            }
        };
        let parsed: Option<BatchAnswer> = serde_json::from_slice(&body).ok();
        let n = batch.traces.len();
        let names_every_id = parsed.as_ref().is_some_and(|a| {
            a.ids.len() == n
                && a.ids
                    .iter()
                    .zip(&batch.traces)
                    .all(|(id, t)| *id == t.id.to_string())
        });
        let ingested = parsed.as_ref().and_then(|a| a.ingested);
        let duplicate = parsed
            .as_ref()
            .is_some_and(|a| a.status.as_deref() == Some("duplicate"));
        let created = status == 201 && ingested == Some(n) && names_every_id;
        let was_stored = status == 200 && duplicate && ingested == Some(0) && names_every_id;
        let accepted = match kind {
            Send::New => created,
            Send::Retry => {
                out.retry_was_stored += usize::from(was_stored);
                out.retry_was_not_stored += usize::from(created);
                created || was_stored
            }
            Send::Again => {
                out.duplicates += usize::from(was_stored);
                was_stored
            }
        };
        if !accepted {
            let what = match kind {
                Send::New => "a new batch",
                Send::Retry => "a batch cut off by the last kill, sent again",
                Send::Again => "an acknowledged batch, sent again",
            };
            out.problems.push(format!(
                "{what} of {n} traces got {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
            if kind != Send::Again {
                out.refused.push(batch.traces);
            }
            continue;
        }
        if kind == Send::Again {
            continue;
        }
        out.acknowledged.push(batch.traces.clone());
        job.acknowledged.fetch_add(1, Ordering::SeqCst);
        if kind == Send::New && !sent_again {
            sent_again = true;
            again = Some(batch);
        }
    }
    out
}
