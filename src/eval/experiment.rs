//! Dataset runs: the items of a run, taken from their durable queue in the
//! store (`run_items`) within `eval.run_concurrency` per run and
//! `eval.tenant_run_concurrency` per organisation.
//!
//! For each item: when the run's version names a model, the item's input is
//! sent with the version's system prompt to the model endpoint
//! (`[eval.model]`, else the judge's) and the answer is kept at once, so a
//! retry does not ask again; otherwise the item's own output is scored. The
//! version's judge model then scores the answer (`correctness`, against the
//! item's own output when the answer is fresh), and so does every enabled
//! evaluation rule of the dataset's project. Each call is limited to
//! `eval.timeout_s`; a 429, 5xx or timeout is retried after a growing wait
//! up to `eval.max_attempts`, then the item fails saying why. A model or
//! version judge that cannot be used fails the item; a project evaluator
//! that cannot judge a dataset item records its reason on its own score.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::evaluator::{resolve, Evaluator};
use super::judge::{Judge, JudgeError, JudgeRequest};
use super::queue::{label, retry_at, within, EvalQueue, NO_JUDGE};
use super::rules::{Subject, Verdict};
use crate::config::EvalConfig;
use crate::store::{now_micros, ClaimedRunItem, NewRunScore, RunItemOutcome, RunWork, Store};

/// What a failed item says when its version names a model and no endpoint
/// is configured.
pub const NO_MODEL: &str = "no model endpoint configured: a version that names a model needs \
    [eval.model] (or [eval.judge]) in the server's configuration; nothing was sent anywhere";
/// The metric the version's judge model scores.
pub const JUDGED_METRIC: &str = "correctness";
const WITH_REFERENCE: &str = "Score whether the output answers the input correctly and \
    completely. The reference output is an answer known to be good: an output that agrees \
    with it in substance scores high, whatever its wording; one that contradicts it, leaves \
    out what it says, or adds claims it does not support scores low.";
const WITHOUT_REFERENCE: &str = "Score whether the output answers the input correctly, \
    completely and helpfully, without claims it cannot support.";
/// Items in flight at once, all runs together, at most.
const IN_FLIGHT: usize = 64;
/// Outcomes recorded in one write, at most.
const FINISH_BATCH: usize = 256;
/// How long the runner sleeps with nothing due, unless woken.
const IDLE_WAIT: Duration = Duration::from_secs(1);

pub(super) struct Experiments {
    /// Organisations' own keys, sent instead of the configured ones.
    pub keys: super::keys::OwnKeys,
    pub store: Arc<Store>,
    pub config: EvalConfig,
    pub judge: Option<Arc<Judge>>,
    pub model: Option<Arc<Judge>>,
    pub queue: Arc<EvalQueue>,
}

impl Experiments {
    pub(super) async fn run(self) {
        match self.store.requeue_running_run_items().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(items = n, "resuming dataset runs cut off by a stop"),
            Err(e) => tracing::warn!(error = %e, "could not resume interrupted dataset runs"),
        }
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        // Aborting the runner drops the set and so every item in flight;
        // they stay `running` and are resumed at the next start.
        let mut tasks = JoinSet::new();
        tasks.spawn(record(this.store.clone(), this.queue.clone(), done_rx));
        loop {
            while tasks.try_join_next().is_some() {}
            let mut wait = IDLE_WAIT;
            let mut claimed_any = false;
            let free = slots.available_permits();
            if free > 0 {
                match this.store.next_run_item_due().await {
                    Ok(Some(due)) if due <= now_micros() => {
                        match this
                            .store
                            .claim_run_items(
                                this.config.run_concurrency,
                                this.config.tenant_run_concurrency,
                                free,
                            )
                            .await
                        {
                            Ok(claimed) => {
                                for job in claimed {
                                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                                        break;
                                    };
                                    claimed_any = true;
                                    let (runner, done) = (this.clone(), done_tx.clone());
                                    let stats = &this.queue.stats;
                                    stats.run_items_in_flight.fetch_add(1, Ordering::Relaxed);
                                    tasks.spawn(async move {
                                        let outcome = runner.attempt(&job).await;
                                        runner.count(&outcome);
                                        let _ = done.send((job.id, outcome));
                                        drop(permit);
                                    });
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "claiming dataset run items failed");
                            }
                        }
                    }
                    Ok(Some(due)) => {
                        wait = Duration::from_micros((due - now_micros()).max(1_000) as u64)
                            .min(IDLE_WAIT);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "reading the dataset run queue failed"),
                }
            }
            if claimed_any {
                continue;
            }
            tokio::select! {
                _ = this.queue.runs_woken() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Counts an attempt's outcome for `/metrics`.
    fn count(&self, outcome: &RunItemOutcome) {
        let stats = &self.queue.stats;
        stats.run_items_in_flight.fetch_sub(1, Ordering::Relaxed);
        let counter = match outcome {
            RunItemOutcome::Complete { .. } => &stats.run_items_completed,
            RunItemOutcome::Failed { .. } => &stats.run_items_failed,
            RunItemOutcome::Retry { .. } => &stats.run_item_retries,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one call to an endpoint within `eval.timeout_s`, counting it
    /// and its time in `calls` and `micros`.
    async fn call<T>(
        &self,
        (calls, micros): (&AtomicU64, &AtomicU64),
        work: impl std::future::Future<Output = Result<T, JudgeError>>,
    ) -> Result<T, JudgeError> {
        let started = Instant::now();
        let result = within(&self.config, "no answer within", work).await;
        calls.fetch_add(1, Ordering::Relaxed);
        micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        result
    }

    fn judge_figures(&self) -> (&AtomicU64, &AtomicU64) {
        let stats = &self.queue.stats;
        (&stats.judge_calls, &stats.judge_micros)
    }

    /// One attempt at an item.
    async fn attempt(&self, job: &ClaimedRunItem) -> RunItemOutcome {
        let work = match self.store.run_work(job.id).await {
            Ok(Some(work)) => work,
            Ok(None) => return failed(None, "the run was deleted".into(), Vec::new()),
            Err(e) => return self.retry(job, format!("reading the item failed: {e}"), None),
        };
        if work.removed {
            return failed(
                None,
                "the item was removed from its dataset before it was run".into(),
                Vec::new(),
            );
        }
        let (output, fresh) = match &work.model {
            None => (work.expected_output.clone(), false),
            Some(_) if work.output.is_some() => (work.output.clone(), true),
            Some(model) => match self.answer(job, &work, model).await {
                Ok(answer) => (Some(answer), true),
                Err(outcome) => return outcome,
            },
        };
        let kept = fresh.then(|| output.clone()).flatten();
        let mut scores = Vec::new();
        if let Some(judge_model) = &work.judge_model {
            let reference = if fresh {
                work.expected_output.as_deref()
            } else {
                None
            };
            let request = JudgeRequest {
                metric: JUDGED_METRIC,
                rubric: if reference.is_some() {
                    WITH_REFERENCE
                } else {
                    WITHOUT_REFERENCE
                },
                input: work.input.as_deref(),
                output: output.as_deref(),
                context: None,
                reference,
                model: Some(judge_model),
                api_key: None,
            };
            let Some(judge) = &self.judge else {
                return failed(kept, NO_JUDGE.into(), scores);
            };
            let judged = match self.keys.key(work.tenant_id, judge.provider()).await {
                Ok(own) => {
                    let request = JudgeRequest {
                        api_key: own.as_deref(),
                        ..request
                    };
                    self.call(self.judge_figures(), judge.judge(&request)).await
                }
                Err(e) => Err(e),
            };
            match judged {
                Ok(verdict) => scores.push(scored(
                    JUDGED_METRIC,
                    "llm",
                    verdict,
                    Some(judge_model.clone()),
                )),
                Err(JudgeError::Retryable {
                    reason,
                    retry_after,
                }) => return self.retry(job, format!("the judge: {reason}"), retry_after),
                Err(JudgeError::Failed(reason)) => {
                    return failed(kept, format!("the judge: {reason}"), scores)
                }
            }
        }
        for (metric, evaluator_type, config) in &work.evaluators {
            match self
                .project_score(metric, evaluator_type, config, &work, output.as_deref())
                .await
            {
                Ok(score) => scores.push(score),
                Err((reason, retry_after)) => return self.retry(job, reason, retry_after),
            }
        }
        RunItemOutcome::Complete {
            output: kept,
            scores,
        }
    }

    /// The model's answer to the item, kept at once; or how the attempt ends.
    async fn answer(
        &self,
        job: &ClaimedRunItem,
        work: &RunWork,
        model: &str,
    ) -> Result<String, RunItemOutcome> {
        let Some(client) = &self.model else {
            return Err(failed(None, NO_MODEL.into(), Vec::new()));
        };
        let input = work.input.as_deref().unwrap_or_default();
        let stats = &self.queue.stats;
        let answer = match self.keys.key(work.tenant_id, client.provider()).await {
            Ok(own) => {
                self.call(
                    (&stats.model_calls, &stats.model_micros),
                    client.answer(
                        own.as_deref(),
                        Some(model),
                        work.system_prompt.as_deref(),
                        input,
                    ),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(answer) => {
                if let Err(e) = self.store.keep_run_output(job.id, answer.clone()).await {
                    tracing::warn!(error = %e, "keeping a model's answer failed");
                }
                Ok(answer)
            }
            Err(JudgeError::Retryable {
                reason,
                retry_after,
            }) => Err(self.retry(job, format!("the model: {reason}"), retry_after)),
            Err(JudgeError::Failed(reason)) => {
                Err(failed(None, format!("the model: {reason}"), Vec::new()))
            }
        }
    }

    /// One of the project's evaluators on the item: its score, or a failed
    /// score saying why; `Err` when the judge asks to be tried again.
    async fn project_score(
        &self,
        metric: &str,
        evaluator_type: &str,
        config: &str,
        work: &RunWork,
        output: Option<&str>,
    ) -> Result<NewRunScore, (String, Option<Duration>)> {
        let config: Value = serde_json::from_str(config).unwrap_or(Value::Null);
        let unscored = |reason: String| NewRunScore {
            metric_name: metric.to_owned(),
            evaluator_type: evaluator_type.to_owned(),
            score: None,
            label: None,
            reasoning: reason,
            judge_model: None,
        };
        match resolve(evaluator_type, metric, &config) {
            Err(reason) => Ok(unscored(reason)),
            Ok(Evaluator::Rule(rule)) => {
                let (input, output) = (work.input.clone(), output.map(str::to_owned));
                let verdict = tokio::task::spawn_blocking(move || {
                    rule.evaluate(&Subject {
                        input: input.as_deref(),
                        output: output.as_deref(),
                        error: None,
                        latency_ms: None,
                        cost: None,
                        total_tokens: None,
                        metadata: &Value::Null,
                        spans: &[],
                    })
                })
                .await;
                Ok(match verdict {
                    Ok(verdict) => scored(metric, evaluator_type, verdict, None),
                    Err(e) => unscored(format!("the rule evaluator failed: {e}")),
                })
            }
            Ok(Evaluator::Judge {
                rubric,
                needs_context,
                model,
            }) => {
                if needs_context {
                    return Ok(unscored(format!(
                        "{metric} is judged against retrieved context, which a dataset item \
                         does not keep"
                    )));
                }
                let Some(judge) = &self.judge else {
                    return Ok(unscored(NO_JUDGE.into()));
                };
                let judged = match self.keys.key(work.tenant_id, judge.provider()).await {
                    Ok(own) => {
                        let request = JudgeRequest {
                            metric,
                            rubric: &rubric,
                            input: work.input.as_deref(),
                            output,
                            context: None,
                            reference: None,
                            model: model.as_deref(),
                            api_key: own.as_deref(),
                        };
                        self.call(self.judge_figures(), judge.judge(&request)).await
                    }
                    Err(e) => Err(e),
                };
                match judged {
                    Ok(verdict) => {
                        let used = model.unwrap_or_else(|| judge.model().to_owned());
                        Ok(scored(metric, evaluator_type, verdict, Some(used)))
                    }
                    Err(JudgeError::Failed(reason)) => Ok(unscored(reason)),
                    Err(JudgeError::Retryable {
                        reason,
                        retry_after,
                    }) => Err((format!("the judge of {metric}: {reason}"), retry_after)),
                }
            }
        }
    }

    fn retry(
        &self,
        job: &ClaimedRunItem,
        reason: String,
        retry_after: Option<Duration>,
    ) -> RunItemOutcome {
        match retry_at(&self.config, job.attempts, &reason, retry_after) {
            Ok(run_after) => RunItemOutcome::Retry { reason, run_after },
            Err(reason) => failed(None, reason, Vec::new()),
        }
    }
}

fn failed(output: Option<String>, reason: String, scores: Vec<NewRunScore>) -> RunItemOutcome {
    RunItemOutcome::Failed {
        output,
        reason,
        scores,
    }
}

fn scored(
    metric: &str,
    evaluator_type: &str,
    verdict: Verdict,
    judge_model: Option<String>,
) -> NewRunScore {
    NewRunScore {
        metric_name: metric.to_owned(),
        evaluator_type: evaluator_type.to_owned(),
        score: Some(verdict.score),
        label: Some(label(verdict.label).to_owned()),
        reasoning: verdict.reasoning,
        judge_model,
    }
}

/// Writes outcomes as they come, many to a transaction, and wakes the
/// runner: a finished item frees room in its run.
async fn record(
    store: Arc<Store>,
    queue: Arc<EvalQueue>,
    mut done: mpsc::UnboundedReceiver<(i64, RunItemOutcome)>,
) {
    while let Some(first) = done.recv().await {
        let mut batch = vec![first];
        while batch.len() < FINISH_BATCH {
            match done.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if let Err(e) = store.finish_run_items(batch).await {
            // They stay `running` and are run again at the next start.
            tracing::warn!(error = %e, "recording dataset run results failed");
        }
        queue.wake_runs();
    }
}
