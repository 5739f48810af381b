// Ingestion health: how the organisation's (or the picked project's)
// ingest went over a window, from GET /v1/ingestion-health: requests
// accepted and refused by code, trace error rate and texts, ingest lag,
// the last span, and the work waiting behind ingest.

import { el, replace, add } from '../dom.js';
import { api, isAbort } from '../api.js';
import { state, projectName } from '../state.js';
import { loading, errorBox, empty, pageHeader, select, table, td, timeEl } from '../ui.js';
import { fmtInt, fmtDuration, fmtPercent } from '../format.js';

const WINDOWS = [
  { value: '1h', label: 'Last hour' },
  { value: '24h', label: 'Last 24 hours' },
  { value: '7d', label: 'Last 7 days' },
];

export function render(root, ctx) {
  let window = '24h';
  const windowSelect = select({ 'data-testid': 'health-window', 'aria-label': 'Window' }, WINDOWS, window);
  const refresh = el('button', { type: 'button', class: 'btn' }, 'Refresh');
  const body = el('div', {});
  const scope = el('p', { class: 'muted page-sub' });
  add(root, pageHeader('Ingestion health', windowSelect, refresh), scope, body);

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    scope.textContent = `${state.projectId ? `Project ${projectName(state.projectId) || state.projectId}` : 'All projects'} · ${WINDOWS.find((w) => w.value === window).label.toLowerCase()}`;
    if (!body.firstChild) replace(body, loading());
    try {
      const data = await api('/v1/ingestion-health', { signal: ctx.signal, query: { window, project_id: state.projectId } });
      if (mine !== generation) return;
      replace(body, build(data));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };
  windowSelect.addEventListener('change', () => { window = windowSelect.value; load(); });
  refresh.addEventListener('click', load);
  load();
}

function card(testid, label, value, sub) {
  return el('div', { class: 'card', 'data-testid': testid },
    el('div', { class: 'card-label' }, label),
    el('div', { class: 'card-value' }, value),
    sub ? el('div', { class: 'card-sub muted' }, sub) : null);
}

function build(h) {
  const req = h.requests || {};
  const lag = h.ingest_lag_ms || {};
  const cards = el('div', { class: 'cards' },
    card('health-requests', 'Ingest requests', fmtPercent(req.success_rate), `${fmtInt(req.accepted ?? 0)} accepted · ${fmtInt(req.refused ?? 0)} refused`),
    card('health-traces', 'Traces stored', fmtInt(h.traces_received ?? 0), `${fmtInt(h.spans_received ?? 0)} spans · ${fmtPercent(h.error_rate)} with errors`),
    card('health-lag', 'Ingest lag p95', fmtDuration(lag.p95), `p50 ${fmtDuration(lag.p50)} · p99 ${fmtDuration(lag.p99)} after a trace ended`),
    card('health-last-span', 'Last span', h.last_successful_span_at ? timeEl(h.last_successful_span_at) : 'none in this window', null),
    card('health-backlog', 'Waiting', `${fmtInt(h.backlog?.evals ?? 0)} evaluations`, `${fmtInt(h.backlog?.search_index ?? 0)} traces to index · ${fmtInt(h.dlq_depth?.evals ?? 0)} evaluations gave up`));

  const refusals = (req.refused_by_code || []).map((r) => el('tr', { 'data-testid': 'refusal-row' },
    td(el('span', { class: 'cell-code' }, r.code), 'mono'), td(fmtInt(r.count), 'num')));
  const errors = (h.top_errors || []).map((e) => el('tr', { 'data-testid': 'top-error-row' },
    td(el('span', { class: 'cell-text' }, e.category)), td(fmtInt(e.count), 'num')));
  return el('div', { class: 'stack-lg' },
    cards,
    el('div', { class: 'chart-grid' },
      el('section', { class: 'panel' }, el('h2', { class: 'panel-title' }, 'Refused requests'),
        refusals.length
          ? table({ testid: 'refusals-table', caption: 'Refused ingest requests by error code', columns: [{ label: 'Code' }, { label: 'Requests', class: 'num' }], rows: refusals }).wrap
          : empty('No refused requests.', 'Requests refused for their content, size, rate or quota are counted here by code.')),
      el('section', { class: 'panel' }, el('h2', { class: 'panel-title' }, 'Top trace errors'),
        errors.length
          ? table({ testid: 'top-errors-table', caption: 'Most frequent trace errors', columns: [{ label: 'Error' }, { label: 'Traces', class: 'num' }], rows: errors }).wrap
          : empty('No trace errors.', 'Traces that failed in this window show here, grouped by their error text.'))));
}
