//! The checks after the last kill, against the restarted server: every
//! acknowledged trace is listed, a sample reads back as sent, each batch cut
//! off by the last kill is stored whole or not at all, and the tag and
//! session filters return exactly the stored traces that carry them.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use serde::Deserialize;
use uuid::Uuid;

use super::server::KEY;
use super::traffic::{customer_name, session_name, Sent, CUSTOMERS, SESSIONS};
use super::{Ledger, Plan, Report};

/// The list's largest page.
const PAGE: usize = 200;
/// Ids named in a problem, of however many.
const EXAMPLES: usize = 5;

#[derive(Deserialize)]
struct Page {
    traces: Vec<Listed>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    id: Uuid,
}

#[derive(Deserialize)]
struct Detail {
    id: Uuid,
    name: Option<String>,
    session_id: Option<String>,
    span_count: i64,
    #[serde(default)]
    tag_map: BTreeMap<String, String>,
    #[serde(default)]
    spans: Vec<serde_json::Value>,
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str) -> Result<(u16, bytes::Bytes), String> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok((status, body))
    }

    /// Every id `GET /v1/traces?{query}` lists, following cursors; an id
    /// listed twice is an error.
    async fn list_ids(&self, query: &str, most: usize) -> Result<HashSet<Uuid>, String> {
        let mut ids = HashSet::new();
        let mut cursor: Option<String> = None;
        // Every page but the last holds a trace: more pages than traces
        // stored means the cursor goes round in a circle.
        for _ in 0..=most + 1 {
            let mut path = format!("/v1/traces?limit={PAGE}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.push_str(c);
            }
            let (status, body) = self.get(&path).await?;
            if status != 200 {
                return Err(format!(
                    "GET {path}: {status} {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ));
            }
            let page: Page =
                serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))?;
            for t in page.traces {
                if !ids.insert(t.id) {
                    return Err(format!("GET /v1/traces?{query} listed {} twice", t.id));
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(ids),
            }
        }
        Err(format!("GET /v1/traces?{query}: the cursor never ends"))
    }
}

pub(super) async fn check(
    base: &str,
    ledger: &Ledger,
    plan: &Plan,
    rng: &mut StdRng,
    report: &mut Report,
) {
    let api = Api {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build the HTTP client"),
        base: base.to_owned(),
    };
    // Straight after the restart, before anything else reads the
    // database: the merger waits for a second without ingest before it
    // takes in what the last kill left waiting, so the first filters run
    // over the merged indexes and the rows stored since, as a crash left them.
    let filtering = Instant::now();
    let filters = pick_filters(plan, rng);
    let mut answers = Vec::with_capacity(filters.len());
    for filter in &filters {
        answers.push(api.list_ids(&filter.query, ledger.traces.len()).await);
    }
    report.times.push(("filters", filtering.elapsed()));
    let listing = Instant::now();
    let found = match api.list_ids("", ledger.traces.len()).await {
        Ok(found) => found,
        Err(e) => {
            report.problem(format!("listing every trace: {e}"));
            return;
        }
    };
    report.traces_found = found.len();
    check_stored(ledger, &found, report);
    report
        .times
        .push(("listing every trace", listing.elapsed()));
    let reading = Instant::now();
    check_details(&api, ledger, plan, rng, report).await;
    report.times.push(("reading details", reading.elapsed()));
    for (filter, answer) in filters.iter().zip(answers) {
        check_filter(filter, answer, ledger, &found, report);
    }
}

/// Acknowledged ⊆ found ⊆ sent, and no batch stored in part.
fn check_stored(ledger: &Ledger, found: &HashSet<Uuid>, report: &mut Report) {
    let mut lost: Vec<Uuid> = ledger
        .traces
        .iter()
        .filter(|(id, (_, acked))| *acked && !found.contains(*id))
        .map(|(id, _)| *id)
        .collect();
    lost.sort();
    report.lost = lost.len();
    if !lost.is_empty() {
        report.problem(format!(
            "{} acknowledged traces are not stored, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(EXAMPLES)]
        ));
    }
    let foreign: Vec<&Uuid> = found
        .iter()
        .filter(|id| !ledger.traces.contains_key(*id))
        .take(EXAMPLES)
        .collect();
    if !foreign.is_empty() {
        report.problem(format!("listed traces never sent: {foreign:?}"));
    }
    for batch in &ledger.unacknowledged {
        let stored = batch.iter().filter(|id| found.contains(*id)).count();
        report.stored_unacknowledged += stored;
        if stored != 0 && stored != batch.len() {
            report.problem(format!(
                "an unacknowledged batch is stored in part: {stored} of {} traces, e.g. {}",
                batch.len(),
                batch[0]
            ));
        }
    }
}

/// A sample of acknowledged traces read back through `GET /v1/traces/{id}`.
async fn check_details(
    api: &Api,
    ledger: &Ledger,
    plan: &Plan,
    rng: &mut StdRng,
    report: &mut Report,
) {
    let mut acked: Vec<&Sent> = ledger
        .traces
        .values()
        .filter(|(_, acked)| *acked)
        .map(|(t, _)| t)
        .collect();
    acked.sort_by_key(|t| t.id);
    for sent in acked.choose_multiple(rng, plan.detail_sample) {
        report.details_checked += 1;
        let path = format!("/v1/traces/{}", sent.id);
        let detail = match api.get(&path).await {
            Ok((200, body)) => serde_json::from_slice::<Detail>(&body)
                .map_err(|e| format!("GET {path}: {e}: {}", String::from_utf8_lossy(&body))),
            Ok((status, body)) => Err(format!(
                "GET {path}: {status} {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )),
            Err(e) => Err(e),
        };
        let differences = match detail {
            Ok(d) => differences(sent, &d),
            Err(e) => vec![e],
        };
        if !differences.is_empty() {
            report.problem(format!(
                "acknowledged trace {} reads back wrong: {}",
                sent.id,
                differences.join("; ")
            ));
        }
    }
}

fn differences(sent: &Sent, got: &Detail) -> Vec<String> {
    let mut out = Vec::new();
    let spans = i64::from(sent.spans);
    if got.id != sent.id {
        out.push(format!("id {}", got.id));
    }
    if got.name.as_deref() != Some(sent.name()) {
        out.push(format!("name {:?}, sent {:?}", got.name, sent.name()));
    }
    if got.session_id != sent.session_id() {
        out.push(format!(
            "session_id {:?}, sent {:?}",
            got.session_id,
            sent.session_id()
        ));
    }
    if got.span_count != spans || got.spans.len() as i64 != spans {
        out.push(format!(
            "span_count {} with {} spans, sent {spans}",
            got.span_count,
            got.spans.len()
        ));
    }
    if got.tag_map != sent.tag_map() {
        out.push(format!("tags {:?}, sent {:?}", got.tag_map, sent.tag_map()));
    }
    out
}

/// A filter of the list, and which sent traces carry its value.
struct Filter {
    query: String,
    carries: Box<dyn Fn(&Sent) -> bool>,
}

/// `filter_checks` values of the `cycle` tag (and always the last cycle's,
/// whose batches the last kill cut off), of the `customer` tag and of
/// `session_id`.
fn pick_filters(plan: &Plan, rng: &mut StdRng) -> Vec<Filter> {
    let mut pick = |values: Vec<u32>| -> Vec<u32> {
        let mut picked: Vec<u32> = values
            .choose_multiple(rng, plan.filter_checks)
            .copied()
            .collect();
        picked.sort_unstable();
        picked
    };
    let mut cycles = pick((0..plan.kills as u32).collect());
    if let Some(last) = (plan.kills as u32).checked_sub(1) {
        if !cycles.contains(&last) {
            cycles.push(last);
        }
    }
    let customers = pick((0..CUSTOMERS).collect());
    let sessions = pick((0..SESSIONS).collect());
    let mut filters = Vec::new();
    for c in cycles {
        filters.push(Filter {
            query: format!("tag_key=cycle&tag_value={c}"),
            carries: Box::new(move |t: &Sent| t.tagged && t.cycle == c),
        });
    }
    for c in customers {
        filters.push(Filter {
            query: format!("tag_key=customer&tag_value={}", customer_name(c)),
            carries: Box::new(move |t: &Sent| t.tagged && t.customer == c),
        });
    }
    for s in sessions {
        filters.push(Filter {
            query: format!("session_id={}", session_name(s)),
            carries: Box::new(move |t: &Sent| t.session == Some(s)),
        });
    }
    filters
}

/// A filter must list exactly the stored traces that carry its value: the
/// acknowledged ones, and those of the last kill's cut-off batches that
/// were stored.
fn check_filter(
    filter: &Filter,
    answer: Result<HashSet<Uuid>, String>,
    ledger: &Ledger,
    found: &HashSet<Uuid>,
    report: &mut Report,
) {
    report.filter_queries += 1;
    let got = match answer {
        Ok(got) => got,
        Err(e) => {
            report.problem(e);
            return;
        }
    };
    let expected: HashSet<Uuid> = found
        .iter()
        .filter(|id| {
            ledger
                .traces
                .get(*id)
                .is_some_and(|(t, _)| (filter.carries)(t))
        })
        .copied()
        .collect();
    let missing: Vec<&Uuid> = expected.difference(&got).take(EXAMPLES).collect();
    let extra: Vec<&Uuid> = got.difference(&expected).take(EXAMPLES).collect();
    if !missing.is_empty() || !extra.is_empty() {
        report.problem(format!(
            "GET /v1/traces?{}: {} traces, expected {}; missing e.g. {missing:?}, \
             not expected e.g. {extra:?}",
            filter.query,
            got.len(),
            expected.len()
        ));
    }
}
