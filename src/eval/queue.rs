//! The evaluation runner: takes due evaluations from the durable queue in
//! the store, runs them (rule evaluations in-process, up to 64 at once; LLM
//! evaluations on the judge, `eval.workers` at once, so slow judge calls do
//! not hold up the rules queued behind them), each attempt within
//! `eval.timeout_s`, and records the outcome. A judge's 429, 5xx or timeout
//! is retried after a growing wait (or what its Retry-After asks), up to
//! `eval.max_attempts`.
//!
//! Beside it, the scheduler looks at each newly stored trace once, runs the
//! matching auto-evaluation rules that are rule evaluators itself, and
//! queues those that need the judge (see [`super::auto`]). Both keep their
//! place in the database, so a restart loses nothing: evaluations cut off
//! while running are run again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::evaluator::{resolve, Evaluator};
use super::experiment::Experiments;
use super::judge::{Judge, JudgeError, JudgeRequest, Role};
use super::keys::OwnKeys;
use super::rules::{Label, SpanSubject, Subject, Verdict};
use crate::config::{Config, EvalConfig};
use crate::store::{now_micros, ClaimedEval, EvalOutcome, EvalTrace, Store};

/// What a failed LLM evaluation says when no judge is configured.
pub const NO_JUDGE: &str = "no judge configured: an LLM evaluation needs [eval.judge] in the \
    server's configuration; nothing was sent anywhere";
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Outcomes recorded in one write, at most.
const FINISH_BATCH: usize = 256;
/// Traces the scheduler looks at per write.
pub(super) const SCHEDULE_BATCH: usize = 512;
/// How often the scheduler looks for new traces.
pub(super) const SCHEDULE_EVERY: Duration = Duration::from_millis(250);
/// How long the runner sleeps with nothing due, unless woken.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Rule evaluations in flight at once, at most.
const IN_FLIGHT: usize = 64;
/// How often the queue's depth is measured for `/health` and `/metrics`.
const MEASURE_EVERY: Duration = Duration::from_millis(500);
/// Before the runner waits, the depth is measured if older than this.
const MEASURE_IDLE: Duration = Duration::from_millis(50);

/// The queue's handle: wakes the runner and holds its figures.
#[derive(Debug, Default)]
pub struct EvalQueue {
    wake: Notify,
    /// Wakes the dataset runs' runner.
    runs: Notify,
    pub stats: QueueStats,
}

/// Running totals, and the queue's depth as last measured.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub pending: AtomicU64,
    pub running: AtomicU64,
    /// Age of the oldest pending evaluation, in milliseconds.
    pub oldest_pending_ms: AtomicU64,
    /// Traces the auto-evaluation rules have yet to look at.
    pub auto_backlog: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    /// Evaluations queued by auto-evaluation rules.
    pub auto_queued: AtomicU64,
    /// Rule evaluations not queued because a monthly cap was reached.
    pub auto_over_quota: AtomicU64,
    pub judge_calls: AtomicU64,
    pub judge_micros: AtomicU64,
    /// Dataset run items scored, failed, and put off to retry.
    pub run_items_completed: AtomicU64,
    pub run_items_failed: AtomicU64,
    pub run_item_retries: AtomicU64,
    /// Dataset run items being worked on now.
    pub run_items_in_flight: AtomicU64,
    /// Requests to the model endpoint for a run's answers, and their time.
    pub model_calls: AtomicU64,
    pub model_micros: AtomicU64,
}

impl EvalQueue {
    /// Something was queued: run it now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A dataset run was scheduled, or room was made in one.
    pub fn wake_runs(&self) {
        self.runs.notify_one();
    }

    pub(super) async fn runs_woken(&self) {
        self.runs.notified().await
    }
}

/// Starts the runner and the scheduler. Fails when the judge cannot be set
/// up (a missing key variable, an unreadable CA file).
pub fn start(
    store: Arc<Store>,
    config: Arc<Config>,
    queue: Arc<EvalQueue>,
    sealer: Option<Arc<crate::secrets::SecretBox>>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let judge = match &config.eval.judge {
        // The judge's errors name their key (`eval.judge.<key>: …`).
        Some(judge) => Some(Arc::new(Judge::new(judge).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    // A run's version sends items to `[eval.model]`, else to the judge's endpoint.
    let model = match (&config.eval.model, &config.eval.judge) {
        (Some(model), _) => Some(Arc::new(
            Judge::for_role(model, Role::MODEL)
                .map_err(|e| anyhow::anyhow!(e.replacen("eval.judge.", "eval.model.", 1)))?,
        )),
        (None, Some(judge)) => Some(Arc::new(
            Judge::for_role(judge, Role::MODEL_AT_JUDGE).map_err(anyhow::Error::msg)?,
        )),
        (None, None) => None,
    };
    let keys = OwnKeys::new(store.clone(), sealer);
    let experiments = Experiments {
        keys: keys.clone(),
        store: store.clone(),
        config: config.eval.clone(),
        judge: judge.clone(),
        model,
        queue: queue.clone(),
    };
    let runner = Runner {
        keys,
        store: store.clone(),
        config: config.eval.clone(),
        judge,
        queue: queue.clone(),
    };
    Ok(vec![
        tokio::spawn(runner.run()),
        tokio::spawn(experiments.run()),
        tokio::spawn(super::auto::schedule(store, config, queue)),
    ])
}

struct Runner {
    keys: OwnKeys,
    store: Arc<Store>,
    config: EvalConfig,
    judge: Option<Arc<Judge>>,
    queue: Arc<EvalQueue>,
}

impl Runner {
    async fn run(self) {
        match self.store.requeue_running_evals().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(evaluations = n, "resuming evaluations cut off by a stop"),
            Err(e) => tracing::warn!(error = %e, "could not resume interrupted evaluations"),
        }
        let this = Arc::new(self);
        // Two pools: rule evaluations (fast, in-process) and LLM evaluations
        // (one judge call each, `eval.workers` at once), so a slow judge
        // never holds up the rules. Only what a pool can start is claimed,
        // so `running` means running.
        let workers = this.config.workers;
        let pools = [
            ("rule", Arc::new(Semaphore::new(IN_FLIGHT)), IN_FLIGHT),
            ("llm", Arc::new(Semaphore::new(workers)), workers),
        ];
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        // Aborting the runner drops the set, which aborts every evaluation
        // in flight; they stay `running` and are resumed at the next start.
        let mut tasks = JoinSet::new();
        tasks.spawn(record(this.store.clone(), this.queue.clone(), done_rx));
        let mut measured: Option<std::time::Instant> = None;
        loop {
            while tasks.try_join_next().is_some() {}
            if measured.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
                this.measure().await;
                measured = Some(std::time::Instant::now());
            }
            let mut claimed_any = false;
            let mut wait = IDLE_WAIT;
            for (kind, slots, size) in &pools {
                let free = slots.available_permits();
                // Claim in batches: each claim is a write, so while the pool
                // is busy, wait until a quarter of it is free (a finishing
                // evaluation wakes the loop).
                if free == 0 || (free < *size && free < size.div_ceil(4)) {
                    continue;
                }
                // A read says whether anything is due; only then is it
                // claimed, as claiming is a write.
                match this.store.next_eval_due(kind).await {
                    Ok(Some(due)) if due <= now_micros() => {}
                    Ok(Some(due)) => {
                        let until = Duration::from_micros((due - now_micros()).max(1_000) as u64);
                        wait = wait.min(until);
                        continue;
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the evaluation queue failed");
                        wait = wait.min(Duration::from_secs(1));
                        continue;
                    }
                }
                let claimed = match this.store.claim_evals(kind, free).await {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming evaluations failed");
                        wait = wait.min(Duration::from_secs(1));
                        continue;
                    }
                };
                if claimed.is_empty() {
                    continue;
                }
                claimed_any = true;
                for job in claimed {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        break;
                    };
                    let (runner, done) = (this.clone(), done_tx.clone());
                    tasks.spawn(async move {
                        let outcome = runner.attempt(&job).await;
                        let _ = done.send((job.id, outcome));
                        drop(permit);
                        runner.queue.wake();
                    });
                }
            }
            if claimed_any {
                continue;
            }
            // About to wait: let `/health` see the queue as it is now.
            if measured.is_none_or(|at| at.elapsed() >= MEASURE_IDLE) {
                this.measure().await;
                measured = Some(std::time::Instant::now());
            }
            tokio::select! {
                _ = this.queue.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Refreshes the queue's depth for `/health` and `/metrics`.
    async fn measure(&self) {
        if let Ok(depth) = self.store.eval_queue_depth().await {
            let stats = &self.queue.stats;
            stats.pending.store(depth.pending, Ordering::Relaxed);
            stats.running.store(depth.running, Ordering::Relaxed);
            stats
                .auto_backlog
                .store(depth.auto_backlog, Ordering::Relaxed);
            stats
                .oldest_pending_ms
                .store((depth.oldest_pending_s * 1000.0) as u64, Ordering::Relaxed);
        }
    }

    /// One attempt.
    async fn attempt(&self, job: &ClaimedEval) -> EvalOutcome {
        match self.evaluate(job).await {
            Ok(verdict) => verdict,
            Err(JudgeError::Failed(reason)) => EvalOutcome::Failed { reason },
            Err(JudgeError::Retryable {
                reason,
                retry_after,
            }) => self.retry(job, reason, retry_after),
        }
    }

    /// Runs `work` within `eval.timeout_s`; running out is worth a retry.
    async fn limited<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, JudgeError>>,
    ) -> Result<T, JudgeError> {
        within(&self.config, "the evaluation took longer than", work).await
    }

    fn retry(
        &self,
        job: &ClaimedEval,
        reason: String,
        retry_after: Option<Duration>,
    ) -> EvalOutcome {
        match retry_at(&self.config, job.attempts, &reason, retry_after) {
            Ok(run_after) => {
                self.queue.stats.retried.fetch_add(1, Ordering::Relaxed);
                EvalOutcome::Retry { reason, run_after }
            }
            Err(reason) => EvalOutcome::Failed { reason },
        }
    }

    async fn evaluate(&self, job: &ClaimedEval) -> Result<EvalOutcome, JudgeError> {
        let config: Value = serde_json::from_str(&job.config).unwrap_or(Value::Null);
        let evaluator = match resolve(&job.evaluator_type, &job.metric_name, &config) {
            Ok(evaluator) => evaluator,
            Err(reason) => return Err(JudgeError::Failed(reason)),
        };
        let trace = match self.store.eval_trace(job.trace_seq).await {
            Ok(Some(trace)) => trace,
            Ok(None) => return Err(JudgeError::Failed("the trace no longer exists".into())),
            Err(e) => {
                return Err(JudgeError::Retryable {
                    reason: format!("reading the trace failed: {e}"),
                    retry_after: None,
                })
            }
        };
        match evaluator {
            Evaluator::Rule(rule) => {
                // Rules are CPU work (a regex over up to a MiB): off the runtime.
                let verdict = self
                    .limited(async move {
                        tokio::task::spawn_blocking(move || {
                            let spans = span_subjects(&trace);
                            rule.evaluate(&subject(&trace, &spans))
                        })
                        .await
                        .map_err(|e| JudgeError::Failed(format!("the rule evaluator failed: {e}")))
                    })
                    .await?;
                Ok(complete(verdict, None))
            }
            Evaluator::Judge {
                rubric,
                needs_context,
                model,
            } => {
                let Some(judge) = &self.judge else {
                    return Err(JudgeError::Failed(NO_JUDGE.into()));
                };
                let context = needs_context.then(|| retrieved_context(&trace)).flatten();
                if needs_context && context.is_none() {
                    // Judging faithfulness or grounding without the sources
                    // would only measure the judge's own beliefs.
                    return Err(JudgeError::Failed(format!(
                        "{} is judged against retrieved context, and the trace has no \
                         retrieval span with output",
                        job.metric_name
                    )));
                }
                let own = self.keys.key(job.tenant_id, judge.provider()).await?;
                let request = JudgeRequest {
                    metric: &job.metric_name,
                    rubric: &rubric,
                    input: trace.input.as_deref(),
                    output: trace.output.as_deref(),
                    context: context.as_deref(),
                    reference: None,
                    model: model.as_deref(),
                    api_key: own.as_deref(),
                };
                let started = std::time::Instant::now();
                let verdict = self.limited(judge.judge(&request)).await;
                let stats = &self.queue.stats;
                stats.judge_calls.fetch_add(1, Ordering::Relaxed);
                stats
                    .judge_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                let used = model.unwrap_or_else(|| judge.model().to_owned());
                Ok(complete(verdict?, Some(used)))
            }
        }
    }
}

/// Runs `work` within `eval.timeout_s`; running out is worth a retry,
/// saying `what` and the limit.
pub(super) async fn within<T>(
    config: &EvalConfig,
    what: &str,
    work: impl std::future::Future<Output = Result<T, JudgeError>>,
) -> Result<T, JudgeError> {
    let limit = Duration::from_secs(config.timeout_s);
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(JudgeError::Retryable {
            reason: format!("{what} {}s", limit.as_secs()),
            retry_after: None,
        })
    })
}

/// When to try again after `attempts` attempts failed for `reason`
/// (microseconds): after what `retry_after` asks, or a growing wait; or,
/// with `eval.max_attempts` spent, the reason to give up.
pub(super) fn retry_at(
    config: &EvalConfig,
    attempts: u32,
    reason: &str,
    retry_after: Option<Duration>,
) -> Result<i64, String> {
    if attempts >= config.max_attempts {
        return Err(format!("gave up after {attempts} attempts: {reason}"));
    }
    let wait = retry_after.unwrap_or_else(|| backoff(config.retry_base_ms, attempts));
    Ok(now_micros() + wait.min(MAX_BACKOFF).as_micros() as i64)
}

/// `base`, doubled for each attempt after the first, with up to a quarter
/// more at random so that retries of many evaluations spread out.
fn backoff(base_ms: u64, attempts: u32) -> Duration {
    let doubled = base_ms.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
    let jitter = rand::random_range(0..=doubled / 4);
    Duration::from_millis(doubled.saturating_add(jitter)).min(MAX_BACKOFF)
}

/// A label as stored.
pub(super) fn label(label: Label) -> &'static str {
    match label {
        Label::Pass => "pass",
        Label::Fail => "fail",
        Label::Warn => "warn",
    }
}

fn complete(verdict: Verdict, judge_model: Option<String>) -> EvalOutcome {
    EvalOutcome::Complete {
        score: verdict.score,
        label: label(verdict.label).into(),
        reasoning: verdict.reasoning,
        judge_model,
    }
}

pub(super) fn span_subjects(trace: &EvalTrace) -> Vec<SpanSubject<'_>> {
    trace
        .spans
        .iter()
        .map(|s| SpanSubject {
            name: &s.name,
            span_type: &s.span_type,
            input: s.input.as_deref(),
            output: s.output.as_deref(),
            error: s.error.as_deref(),
        })
        .collect()
}

pub(super) fn subject<'a>(trace: &'a EvalTrace, spans: &'a [SpanSubject<'a>]) -> Subject<'a> {
    Subject {
        input: trace.input.as_deref(),
        output: trace.output.as_deref(),
        error: trace.error.as_deref(),
        latency_ms: trace.latency_ms,
        cost: trace.cost,
        total_tokens: trace.total_tokens,
        metadata: &trace.metadata,
        spans,
    }
}

/// What the trace's retrieval spans returned, numbered, for judges that
/// check an answer against its sources.
fn retrieved_context(trace: &EvalTrace) -> Option<String> {
    let parts: Vec<String> = trace
        .spans
        .iter()
        .filter(|s| s.span_type == "retrieval")
        .filter_map(|s| s.output.as_deref().filter(|o| !o.trim().is_empty()))
        .enumerate()
        .map(|(i, text)| format!("[{}] {text}", i + 1))
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// Writes outcomes as they come, many to a transaction.
async fn record(
    store: Arc<Store>,
    queue: Arc<EvalQueue>,
    mut done: mpsc::UnboundedReceiver<(i64, EvalOutcome)>,
) {
    while let Some(first) = done.recv().await {
        let mut batch = vec![first];
        while batch.len() < FINISH_BATCH {
            match done.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let stats = &queue.stats;
        for (_, outcome) in &batch {
            match outcome {
                EvalOutcome::Complete { .. } => stats.completed.fetch_add(1, Ordering::Relaxed),
                EvalOutcome::Failed { .. } => stats.failed.fetch_add(1, Ordering::Relaxed),
                EvalOutcome::Retry { .. } => 0,
            };
        }
        let retries = batch
            .iter()
            .any(|(_, o)| matches!(o, EvalOutcome::Retry { .. }));
        if let Err(e) = store.finish_evals(batch).await {
            // They stay `running` and are run again at the next start.
            tracing::warn!(error = %e, "recording evaluation results failed");
        }
        if retries {
            queue.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..=4u32 {
            let wait = backoff(1000, attempt).as_millis() as u64;
            let base = 1000 << (attempt - 1);
            assert!(
                (base..=base + base / 4).contains(&wait),
                "attempt {attempt}: {wait} ms"
            );
        }
        assert_eq!(backoff(1000, 30), MAX_BACKOFF);
    }

    #[test]
    fn retrieved_context_numbers_the_retrieval_spans_outputs() {
        let span = |t: &str, out: Option<&str>| crate::store::EvalSpan {
            name: "s".into(),
            span_type: t.into(),
            input: None,
            output: out.map(str::to_owned),
            error: None,
        };
        let trace = EvalTrace {
            input: None,
            output: None,
            error: None,
            latency_ms: None,
            cost: None,
            total_tokens: None,
            metadata: Value::Null,
            spans: vec![
                span("retrieval", Some("Paris is in France.")),
                span("llm", Some("not context")),
                span("retrieval", Some("  ")),
                span("retrieval", Some("The Seine flows through Paris.")),
            ],
        };
        assert_eq!(
            retrieved_context(&trace).as_deref(),
            Some("[1] Paris is in France.\n\n[2] The Seine flows through Paris.")
        );
        let none = EvalTrace {
            spans: vec![span("llm", Some("x"))],
            ..trace
        };
        assert_eq!(retrieved_context(&none), None);
    }
}
