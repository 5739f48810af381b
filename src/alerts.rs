//! The alerts task: every `alerts.interval_ms` it evaluates each enabled
//! failure rule over its trailing window, and the built-in detector looks
//! at each project's latest window against a baseline learned from the
//! windows before it. Both read only the metric rollups (and, for `score`
//! rules, the evaluations' index), never the traces themselves; both keep
//! their episodes in the database, so a restart neither fires an open
//! episode again nor forgets one.
//!
//! The detector's baseline is robust: the median and the median absolute
//! deviation (MAD) of the previous `baseline_windows` windows of the same
//! metric. A window whose robust z-score, (value − median) / (1.4826 × MAD),
//! reaches `sensitivity` is an anomaly. The spread is floored (a share of
//! the median and an absolute amount per metric), so a perfectly steady
//! series does not turn every small wobble into an alarm, and windows with
//! fewer than `min_traces` traces are not judged, so quiet projects stay
//! quiet. An anomaly recovers when the z-score falls below half the
//! sensitivity.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;

use crate::config::AlertsConfig;
use crate::store::{
    anomaly_kind, measure, now_micros, ActiveFailureRule, NewAnomaly, Store, StoreError, Totals,
};

/// Microseconds in a second.
const SECOND: i64 = 1_000_000;

/// Starts the task; it runs until aborted.
pub fn spawn(store: Arc<Store>, config: AlertsConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut detector = Detector::new(config.clone());
        let mut tick = tokio::time::interval(Duration::from_millis(config.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = evaluate_rules(&store).await {
                tracing::warn!(error = %e, "evaluating failure rules");
            }
            if config.detection {
                if let Err(e) = detector.pass(&store).await {
                    tracing::warn!(error = %e, "detecting anomalies");
                }
            }
        }
    })
}

/// Whether `value` meets the rule's condition.
pub fn compare(value: f64, operator: &str, threshold: f64) -> bool {
    match operator {
        "gt" => value > threshold,
        "gte" => value >= threshold,
        "lt" => value < threshold,
        "lte" => value <= threshold,
        _ => false,
    }
}

fn symbol(operator: &str) -> &'static str {
    match operator {
        "gt" => ">",
        "gte" => "≥",
        "lt" => "<",
        _ => "≤",
    }
}

/// A number as people read it: up to four significant digits.
fn shown(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let digits = (3 - value.abs().log10().floor() as i32).clamp(0, 8) as usize;
    let text = format!("{value:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// One pass over the enabled rules: each fires when its condition holds
/// and it has no open episode, and recovers when the condition clears.
pub async fn evaluate_rules(store: &Store) -> Result<(), StoreError> {
    let rules = store.active_failure_rules().await?;
    if rules.is_empty() {
        return Ok(());
    }
    let now = now_micros();
    // Rules over the same traffic and window share one read.
    let mut traffic: HashMap<(i64, Option<i64>, i64), Totals> = HashMap::new();
    for rule in rules {
        let from = now - rule.window_secs * SECOND;
        let observed = if rule.metric == "score" {
            store
                .observe_metric(
                    rule.tenant_id,
                    rule.project_id,
                    rule.metric.clone(),
                    rule.score_metric.clone(),
                    from,
                    now,
                )
                .await?
        } else {
            let key = (rule.tenant_id, rule.project_id, rule.window_secs);
            let totals = match traffic.entry(key) {
                Entry::Occupied(seen) => seen.into_mut(),
                Entry::Vacant(slot) => slot.insert(
                    store
                        .traffic(rule.tenant_id, rule.project_id, rule.window_secs * SECOND)
                        .await?,
                ),
            };
            measure(totals, &rule.metric)
        };
        let enough = rule.metric == "volume" || observed.samples >= rule.min_samples;
        let holds = enough
            && observed
                .value
                .is_some_and(|v| compare(v, &rule.operator, rule.threshold));
        match (holds, rule.open_anomaly_id) {
            (true, None) => {
                let value = observed.value.unwrap_or_default();
                let anomaly = rule_anomaly(&rule, value, observed.samples);
                if store
                    .fire_failure_rule(rule.clone(), anomaly)
                    .await?
                    .is_some()
                {
                    tracing::info!(rule = %rule.uuid, value, "failure rule fired");
                }
            }
            (false, Some(open)) => {
                let recovered = store
                    .recover_failure_rule(rule.clone(), open, observed.value, observed.samples)
                    .await?;
                if recovered {
                    tracing::info!(rule = %rule.uuid, "failure rule recovered");
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn rule_anomaly(rule: &ActiveFailureRule, value: f64, samples: i64) -> NewAnomaly {
    NewAnomaly {
        tenant_id: rule.tenant_id,
        project_id: rule.project_id,
        kind: anomaly_kind(&rule.metric).to_owned(),
        severity: rule.severity.clone(),
        description: format!(
            "{} {} {} {} over the last {} s (rule {:?})",
            rule.metric,
            shown(value),
            symbol(&rule.operator),
            shown(rule.threshold),
            rule.window_secs,
            rule.name
        ),
        metric: rule.metric.clone(),
        value,
        threshold: Some(rule.threshold),
        baseline: None,
        metadata: json!({
            "window_secs": rule.window_secs,
            "samples": samples,
            "operator": rule.operator,
            "score_metric": rule.score_metric,
        }),
    }
}

/// A baseline's centre and spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    /// The median absolute deviation from the median.
    pub mad: f64,
    /// Windows it was learned from.
    pub windows: usize,
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The median and MAD of `values`; `None` when there are none.
pub fn stats(values: &[f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let m = median(&sorted);
    let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - m).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    Some(Stats {
        median: m,
        mad: median(&deviations),
        windows: values.len(),
    })
}

/// What one of the detector's metrics is and how it is judged.
#[derive(Debug, Clone, Copy)]
pub struct Signal {
    /// The anomaly type it raises.
    pub kind: &'static str,
    /// The metric, as `measure` names it.
    pub metric: &'static str,
    /// Drops count as well as rises.
    pub both_ways: bool,
    /// The spread is at least this share of the median…
    pub relative_floor: f64,
    /// …and at least this much.
    pub absolute_floor: f64,
}

/// The detector's metrics. Floors: an error rate must move by more than
/// 2 points per deviation, latency and cost by a quarter of their median,
/// volume by 15% of its median (so that a fall of 75% or more is
/// a drop at the default sensitivity).
pub const SIGNALS: [Signal; 4] = [
    Signal {
        kind: "error_rate_spike",
        metric: "error_rate",
        both_ways: false,
        relative_floor: 0.25,
        absolute_floor: 0.02,
    },
    Signal {
        kind: "latency_spike",
        metric: "latency_p95",
        both_ways: false,
        relative_floor: 0.25,
        absolute_floor: 10.0,
    },
    Signal {
        kind: "cost_spike",
        metric: "cost",
        both_ways: false,
        relative_floor: 0.25,
        absolute_floor: 0.0001,
    },
    Signal {
        kind: "volume_anomaly",
        metric: "volume",
        both_ways: true,
        relative_floor: 0.15,
        absolute_floor: 1.0,
    },
];

/// The robust z-score of `value` against `baseline`: its distance from
/// the median in units of 1.4826 × MAD (a normal series' standard
/// deviation), the unit floored as `signal` says.
pub fn robust_z(signal: &Signal, baseline: &Stats, value: f64) -> f64 {
    let scale = (1.4826 * baseline.mad)
        .max(signal.relative_floor * baseline.median.abs())
        .max(signal.absolute_floor);
    (value - baseline.median) / scale
}

/// What the detector makes of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Not enough traffic, now or in the baseline, to judge.
    Unjudged,
    Normal {
        z: f64,
    },
    Anomalous {
        z: f64,
    },
}

/// The detector's settings, as the verdict needs them.
#[derive(Debug, Clone, Copy)]
pub struct Judging {
    pub sensitivity: f64,
    pub min_traces: u64,
    pub min_baseline_windows: u64,
}

/// A baseline series for `signal` from windows of traffic: every window
/// for volume (quiet ones count as zero), else only those with at least
/// `min_traces` traces.
pub fn series(signal: &Signal, windows: &[Totals], min_traces: u64) -> Vec<f64> {
    windows
        .iter()
        .filter(|t| signal.metric == "volume" || t.traces >= min_traces as i64)
        .filter_map(|t| measure(t, signal.metric).value)
        .collect()
}

/// Judges the current window against the baseline.
pub fn judge(
    signal: &Signal,
    baseline: Option<&Stats>,
    busy_windows: usize,
    current: &Totals,
    j: Judging,
) -> Verdict {
    let Some(baseline) = baseline else {
        return Verdict::Unjudged;
    };
    let windows = if signal.metric == "volume" {
        busy_windows
    } else {
        baseline.windows
    };
    if (windows as u64) < j.min_baseline_windows {
        return Verdict::Unjudged;
    }
    let Some(value) = measure(current, signal.metric).value else {
        return Verdict::Unjudged;
    };
    let floor = j.min_traces as f64;
    let enough = if signal.metric == "volume" {
        value.max(baseline.median) >= floor
    } else {
        current.traces as f64 >= floor
    };
    if !enough {
        return Verdict::Unjudged;
    }
    let z = robust_z(signal, baseline, value);
    let far = if signal.both_ways { z.abs() } else { z };
    if far >= j.sensitivity {
        Verdict::Anomalous { z }
    } else {
        Verdict::Normal { z }
    }
}

/// A project's learned baselines, valid until the window moves on.
struct Baseline {
    /// The end (exclusive, microseconds) of the last baseline window.
    end: i64,
    stats: [Option<Stats>; 4],
    /// Baseline windows with any traffic.
    busy: usize,
}

/// The built-in detector, with each project's baseline cached until the
/// next window starts.
pub struct Detector {
    config: AlertsConfig,
    baselines: HashMap<(i64, i64), Baseline>,
}

impl Detector {
    pub fn new(config: AlertsConfig) -> Detector {
        Detector {
            config,
            baselines: HashMap::new(),
        }
    }

    fn judging(&self) -> Judging {
        Judging {
            sensitivity: self.config.sensitivity,
            min_traces: self.config.min_traces,
            min_baseline_windows: self.config.min_baseline_windows,
        }
    }

    /// One pass over every project.
    pub async fn pass(&mut self, store: &Store) -> Result<(), StoreError> {
        let width = i64::try_from(self.config.detect_window_s).unwrap_or(300) * SECOND;
        let count = i64::try_from(self.config.baseline_windows).unwrap_or(288);
        let now = now_micros();
        let end = (now - width).div_euclid(width) * width;
        let projects = store.detection_projects().await?;
        let mut open: HashMap<(i64, i64, String), i64> = store
            .open_builtin_anomalies()
            .await?
            .into_iter()
            .map(|a| ((a.tenant_id, a.project_id, a.kind), a.id))
            .collect();
        self.baselines
            .retain(|key, _| projects.binary_search_by_key(&key.1, |p| p.1).is_ok());
        for (tenant_id, project_id) in projects {
            // A baseline too thin to judge by is read again each pass (a
            // project without history costs an empty range read), so that
            // backfilled traffic counts at once; a full one is kept until
            // the window moves on.
            let min_busy = self.config.min_baseline_windows as usize;
            let fresh = self
                .baselines
                .get(&(tenant_id, project_id))
                .is_some_and(|b| b.end == end && b.busy >= min_busy);
            if !fresh {
                let buckets = store
                    .traffic_series(tenant_id, project_id, end - count * width, end - 1, width)
                    .await?;
                let windows: Vec<Totals> = (0..count)
                    .map(|i| {
                        buckets
                            .get(&(end - (count - i) * width))
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                let busy = windows.iter().filter(|t| t.traces > 0).count();
                let stats = SIGNALS.map(|s| stats(&series(&s, &windows, self.config.min_traces)));
                self.baselines
                    .insert((tenant_id, project_id), Baseline { end, stats, busy });
            }
            let Some(baseline) = self.baselines.get(&(tenant_id, project_id)) else {
                continue;
            };
            let has_open = SIGNALS
                .iter()
                .any(|s| open.contains_key(&(tenant_id, project_id, s.kind.to_owned())));
            if baseline.busy < self.config.min_baseline_windows as usize && !has_open {
                continue;
            }
            let current = store.traffic(tenant_id, Some(project_id), width).await?;
            for (i, signal) in SIGNALS.iter().enumerate() {
                let verdict = judge(
                    signal,
                    baseline.stats[i].as_ref(),
                    baseline.busy,
                    &current,
                    self.judging(),
                );
                let value = measure(&current, signal.metric).value;
                let key = (tenant_id, project_id, signal.kind.to_owned());
                match (verdict, open.remove(&key)) {
                    (Verdict::Anomalous { z }, None) => {
                        let Some(stats) = baseline.stats[i] else {
                            continue;
                        };
                        let anomaly = builtin_anomaly(
                            signal,
                            &stats,
                            tenant_id,
                            project_id,
                            value.unwrap_or_default(),
                            z,
                            current.traces,
                            self.config.detect_window_s,
                            self.config.sensitivity,
                        );
                        store.raise_builtin_anomaly(anomaly).await?;
                    }
                    (Verdict::Normal { z }, Some(id))
                        if z.abs() < self.config.sensitivity / 2.0 =>
                    {
                        store.recover_builtin_anomaly(id, value).await?;
                    }
                    (Verdict::Unjudged, Some(id)) => {
                        store.recover_builtin_anomaly(id, value).await?;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin_anomaly(
    signal: &Signal,
    stats: &Stats,
    tenant_id: i64,
    project_id: i64,
    value: f64,
    z: f64,
    traces: i64,
    window_s: u64,
    sensitivity: f64,
) -> NewAnomaly {
    let far = z.abs();
    let severity = if far >= 4.0 * sensitivity {
        "critical"
    } else if far >= 2.0 * sensitivity {
        "high"
    } else {
        "medium"
    };
    let direction = if z < 0.0 { "dropped to" } else { "rose to" };
    NewAnomaly {
        tenant_id,
        project_id: Some(project_id),
        kind: signal.kind.to_owned(),
        severity: severity.to_owned(),
        description: format!(
            "{} {direction} {} in the last {window_s} s against a baseline median of {} \
             (robust z {})",
            signal.metric,
            shown(value),
            shown(stats.median),
            shown(z)
        ),
        metric: signal.metric.to_owned(),
        value,
        threshold: None,
        baseline: Some(stats.median),
        metadata: json!({
            "window_secs": window_s,
            "samples": traces,
            "baseline_median": stats.median,
            "baseline_mad": stats.mad,
            "baseline_windows": stats.windows,
            "robust_z": z,
            "sensitivity": sensitivity,
            "method": "median_mad",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::Sketch;

    const J: Judging = Judging {
        sensitivity: 5.0,
        min_traces: 20,
        min_baseline_windows: 12,
    };

    fn window(traces: i64, errors: i64, latency_ms: i64) -> Totals {
        let mut latency = Sketch::default();
        for _ in 0..traces {
            latency.add(latency_ms);
        }
        Totals {
            traces,
            errors,
            cost: traces as f64 * 0.001,
            tokens: traces * 100,
            latency,
        }
    }

    /// A steady series with noise: 100 ± 10 traces, 1–3 errors, 800–1,000 ms.
    fn noisy_baseline() -> Vec<Totals> {
        (0..288)
            .map(|i| {
                let wobble = (i * 37 % 21) as i64 - 10;
                window(
                    100 + wobble,
                    1 + (i % 3) as i64,
                    800 + (i * 53 % 200) as i64,
                )
            })
            .collect()
    }

    fn verdict(signal: &Signal, baseline: &[Totals], current: &Totals) -> Verdict {
        let s = stats(&series(signal, baseline, J.min_traces));
        let busy = baseline.iter().filter(|t| t.traces > 0).count();
        judge(signal, s.as_ref(), busy, current, J)
    }

    fn signal(kind: &str) -> Signal {
        *SIGNALS.iter().find(|s| s.kind == kind).expect("signal")
    }

    #[test]
    fn median_and_mad_of_a_series() {
        let s = stats(&[1.0, 2.0, 3.0, 4.0, 100.0]).expect("stats");
        assert_eq!(s.median, 3.0);
        assert_eq!(s.mad, 1.0);
        assert_eq!(stats(&[]), None);
    }

    #[test]
    fn spikes_fire() {
        let base = noisy_baseline();
        for (kind, current) in [
            ("error_rate_spike", window(100, 40, 900)),
            ("latency_spike", window(100, 2, 5_000)),
            ("cost_spike", window(1_000, 10, 900)),
            ("volume_anomaly", window(1_000, 10, 900)),
            ("volume_anomaly", window(0, 0, 0)),
        ] {
            assert!(
                matches!(
                    verdict(&signal(kind), &base, &current),
                    Verdict::Anomalous { .. }
                ),
                "{kind}: {:?}",
                verdict(&signal(kind), &base, &current)
            );
        }
    }

    #[test]
    fn steady_noise_does_not_fire() {
        let base = noisy_baseline();
        for (i, current) in base.iter().enumerate().step_by(7) {
            for s in &SIGNALS {
                assert!(
                    !matches!(verdict(s, &base, current), Verdict::Anomalous { .. }),
                    "{} fired on window {i}",
                    s.kind
                );
            }
        }
        // A perfectly flat series: the floor keeps a small move quiet.
        let flat: Vec<Totals> = (0..288).map(|_| window(100, 1, 900)).collect();
        for current in [window(110, 3, 1_000), window(90, 2, 950)] {
            for s in &SIGNALS {
                assert!(
                    !matches!(verdict(s, &flat, &current), Verdict::Anomalous { .. }),
                    "{} fired on a flat series",
                    s.kind
                );
            }
        }
    }

    #[test]
    fn low_volume_does_not_fire() {
        // A quiet project: a few traces per window, then a window of errors.
        let quiet: Vec<Totals> = (0..288).map(|i| window(i % 4, 0, 500)).collect();
        let burst = window(5, 5, 20_000);
        for s in &SIGNALS {
            assert_eq!(verdict(s, &quiet, &burst), Verdict::Unjudged, "{}", s.kind);
        }
        // A busy baseline, but the current window too small to judge.
        let base = noisy_baseline();
        let small = window(3, 3, 20_000);
        assert_eq!(
            verdict(&signal("error_rate_spike"), &base, &small),
            Verdict::Unjudged
        );
        // Too little history: a new project's first traffic is not a spike.
        let young: Vec<Totals> = (0..288)
            .map(|i| {
                if i > 280 {
                    window(100, 1, 900)
                } else {
                    window(0, 0, 0)
                }
            })
            .collect();
        assert_eq!(
            verdict(&signal("volume_anomaly"), &young, &window(1_000, 1, 900)),
            Verdict::Unjudged
        );
    }

    #[test]
    fn rules_compare_as_their_operator_says() {
        assert!(compare(0.5, "gt", 0.4));
        assert!(!compare(0.4, "gt", 0.4));
        assert!(compare(0.4, "gte", 0.4));
        assert!(compare(0.3, "lt", 0.4));
        assert!(compare(0.4, "lte", 0.4));
        assert!(!compare(0.4, "nonsense", 0.0));
        assert_eq!(shown(0.123456), "0.1235");
        assert_eq!(shown(1234.6), "1235");
        assert_eq!(shown(0.5), "0.5");
    }
}
