// Overview: the headline figures, traces/errors and p95 latency over time,
// and the per-model breakdown, from GET /v1/metrics.

import { el, replace, add } from '../dom.js';
import { api, isAbort } from '../api.js';
import { state, projectName } from '../state.js';
import { loading, errorBox, empty, pageHeader, select, table, td } from '../ui.js';
import { timeChart, fillBuckets } from '../chart.js';
import { fmtInt, fmtCost, fmtDuration, fmtPercent } from '../format.js';

const RANGES = {
  '1h': { ms: 3_600_000, interval: '1m', width: 60_000, label: 'Last hour' },
  '24h': { ms: 86_400_000, interval: '1h', width: 3_600_000, label: 'Last 24 hours' },
  '7d': { ms: 7 * 86_400_000, interval: '1h', width: 3_600_000, label: 'Last 7 days' },
  '30d': { ms: 30 * 86_400_000, interval: '1d', width: 86_400_000, label: 'Last 30 days' },
};
const RANGE_KEY = 'trulayer.overview.range';

function savedRange() {
  try {
    const r = localStorage.getItem(RANGE_KEY);
    return RANGES[r] ? r : '24h';
  } catch {
    return '24h';
  }
}

export function render(root, ctx) {
  let range = savedRange();
  const rangeSelect = select({ 'data-testid': 'range', 'aria-label': 'Time range' },
    Object.entries(RANGES).map(([value, r]) => ({ value, label: r.label })), range);
  const refresh = el('button', { type: 'button', class: 'btn' }, 'Refresh');
  const body = el('div', { class: 'overview' });
  const scope = el('p', { class: 'muted page-sub' });
  add(root, pageHeader('Overview', rangeSelect, refresh), scope, body);

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    const r = RANGES[range];
    const to = Date.now();
    const from = to - r.ms;
    scope.textContent = `${state.projectId ? `Project ${projectName(state.projectId) || state.projectId}` : 'All projects'} · ${r.label.toLowerCase()}`;
    replace(body, loading());
    try {
      const data = await api('/v1/metrics', {
        signal: ctx.signal,
        query: { from: new Date(from).toISOString(), to: new Date(to).toISOString(), interval: r.interval, project_id: state.projectId },
      });
      if (mine !== generation) return;
      replace(body, build(data, r, from, to));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };
  rangeSelect.addEventListener('change', () => {
    range = rangeSelect.value;
    try { localStorage.setItem(RANGE_KEY, range); } catch { /* ignore */ }
    load();
  });
  refresh.addEventListener('click', load);
  load();
}

function card(testid, label, value, sub) {
  return el('div', { class: 'card', 'data-testid': testid },
    el('div', { class: 'card-label' }, label),
    el('div', { class: 'card-value' }, value),
    sub ? el('div', { class: 'card-sub muted' }, sub) : null);
}

function build(data, r, from, to) {
  const m = data || {};
  const cards = el('div', { class: 'cards' },
    card('card-traces', 'Traces', fmtInt(m.total_traces ?? 0), `${fmtInt(m.error_count ?? 0)} with errors`),
    card('card-error-rate', 'Error rate', fmtPercent(m.error_rate ?? (m.total_traces ? 0 : null)),
      m.feedback_good_rate != null ? `${fmtPercent(m.feedback_good_rate)} good feedback` : 'no feedback yet'),
    card('card-p95', 'p95 latency', fmtDuration(m.p95_latency_ms), `p50 ${fmtDuration(m.p50_latency_ms)} · p99 ${fmtDuration(m.p99_latency_ms)}`),
    card('card-cost', 'Cost', fmtCost(m.total_cost ?? 0), m.total_traces ? `${fmtCost((m.total_cost || 0) / m.total_traces)} per trace` : null),
    card('card-tokens', 'Tokens', fmtInt(m.total_tokens ?? 0), m.total_traces ? `${fmtInt((m.total_tokens || 0) / m.total_traces)} per trace` : null));

  const points = new Map();
  for (const b of Array.isArray(m.buckets) ? m.buckets : []) {
    const t = Date.parse(b.start);
    if (Number.isNaN(t)) continue;
    const traces = b.total_traces || 0;
    const errors = b.error_count || 0;
    points.set(t, { ok: Math.max(0, traces - errors), errors, traces, p95: traces ? b.p95_latency_ms ?? null : null, p50: traces ? b.p50_latency_ms ?? null : null });
  }
  const buckets = fillBuckets(points, from, to, r.width, () => ({ ok: 0, errors: 0, traces: 0, p95: null, p50: null }));

  const tracesChart = timeChart({
    testid: 'chart-traces', label: 'Traces and errors per interval', kind: 'bar', widthMs: r.width, buckets,
    series: [{ key: 'ok', label: 'OK', cls: 'series-1' }, { key: 'errors', label: 'Errors', cls: 'series-error' }],
    yFormat: (v) => fmtInt(v),
    extraTip: (b) => [`Total: ${fmtInt(b.values.traces)}`],
  });
  const latencyChart = timeChart({
    testid: 'chart-latency', label: 'p95 latency per interval', kind: 'line', widthMs: r.width, buckets,
    series: [{ key: 'p95', label: 'p95', cls: 'series-2' }, { key: 'p50', label: 'p50', cls: 'series-3' }],
    yFormat: (v) => fmtDuration(v),
  });

  const models = (Array.isArray(m.models) ? m.models : []).slice().sort((a, b) => (b.traces || 0) - (a.traces || 0));
  const modelRows = models.map((row) => el('tr', { 'data-testid': 'model-row' },
    td(row.model ? el('span', { class: 'cell-code' }, row.model) : el('span', { class: 'muted' }, '(no model)'), 'mono'),
    td(fmtInt(row.traces), 'num'),
    td(fmtInt(row.errors), 'num'),
    td(fmtPercent(row.traces ? (row.errors || 0) / row.traces : null), 'num'),
    td(fmtInt(row.tokens), 'num'),
    td(fmtCost(row.cost), 'num')));
  const modelsTable = table({
    testid: 'models-table', caption: 'Usage by model',
    columns: [{ label: 'Model' }, { label: 'Traces', class: 'num' }, { label: 'Errors', class: 'num' }, { label: 'Error rate', class: 'num' }, { label: 'Tokens', class: 'num' }, { label: 'Cost', class: 'num' }],
    rows: modelRows,
  });

  return el('div', { class: 'stack-lg' },
    cards,
    el('div', { class: 'chart-grid' },
      el('section', { class: 'panel' }, el('h2', { class: 'panel-title' }, 'Traces & errors'), tracesChart),
      el('section', { class: 'panel' }, el('h2', { class: 'panel-title' }, 'Latency'), latencyChart)),
    el('section', { class: 'panel' },
      el('h2', { class: 'panel-title' }, 'By model'),
      modelsTable.wrap,
      models.length ? null : empty('No traces in this range.', 'Send traces with an SDK or OpenTelemetry and they show up here.')));
}
