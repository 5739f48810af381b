// Failures: failing traces grouped by the shape of their error message
// (GET /v1/failures/clusters), the largest groups first, with links to
// their latest traces and to the trace list filtered by their class.

import { el, replace, add } from '../dom.js';
import { api, isAbort } from '../api.js';
import { state } from '../state.js';
import { loading, errorBox, empty, pageHeader, select, table, td, timeEl, badge } from '../ui.js';
import { fmtInt, timeZoneName } from '../format.js';
import { FAILURE_TYPES } from './traces.js';

const RANGES = [
  { value: '1h', label: 'Last hour', ms: 3_600_000 },
  { value: '24h', label: 'Last 24 hours', ms: 86_400_000 },
  { value: '7d', label: 'Last 7 days', ms: 7 * 86_400_000 },
  { value: '30d', label: 'Last 30 days', ms: 30 * 86_400_000 },
];

const saved = { range: '24h' };

function typeLabel(value) {
  return FAILURE_TYPES.find((t) => t.value === value)?.label || null;
}

/** The trace list, filtered to what a cluster's traces have in common. */
function listHref(cluster, from, to) {
  const q = new URLSearchParams({ error: 'true', from, to });
  if (cluster.failure_type) q.set('failure_type', cluster.failure_type);
  return `#/traces?${q}`;
}

export function render(root, ctx) {
  const rangeFilter = select({ 'data-testid': 'failures-range', 'aria-label': 'Time range' },
    RANGES.map((r) => ({ value: r.value, label: r.label })), saved.range);
  const refresh = el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'failures-refresh' }, 'Refresh');
  const scope = el('p', { class: 'muted page-sub', 'data-testid': 'failures-scope' });
  const body = el('div', { class: 'list-body' });
  add(root,
    pageHeader('Failures', rangeFilter, refresh),
    el('p', { class: 'muted page-sub' },
      'Failing traces grouped by their error message, with numbers, ids, quoted values and addresses masked; the largest groups first. ',
      `Times in ${timeZoneName()}.`),
    scope, body);

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    const range = RANGES.find((r) => r.value === saved.range) || RANGES[1];
    const toMs = Date.now();
    const from = new Date(toMs - range.ms).toISOString();
    const to = new Date(toMs).toISOString();
    scope.textContent = `${state.projectId ? 'This project' : 'All projects'} · ${range.label.toLowerCase()}`;
    replace(body, loading());
    try {
      const data = await api('/v1/failures/clusters', {
        signal: ctx.signal,
        query: { from, to, project_id: state.projectId, limit: 100 },
      });
      if (mine !== generation) return;
      const clusters = Array.isArray(data?.clusters) ? data.clusters : [];
      const total = clusters.reduce((s, c) => s + (c.count || 0), 0);
      const rows = clusters.map((c) => {
        const type = typeLabel(c.failure_type);
        const samples = (Array.isArray(c.sample_ids) ? c.sample_ids : []).map((id) =>
          el('a', { href: `#/traces/${encodeURIComponent(id)}`, class: 'mono small', 'data-testid': 'failure-sample', title: id }, String(id).slice(0, 8)));
        return el('tr', { 'data-testid': 'failure-row' },
          td(el('div', { class: 'cell-name' },
            el('span', { class: 'mono cell-text', 'data-testid': 'failure-message' }, c.error_message),
            c.example_message && c.example_message !== c.error_message
              ? el('span', { class: 'muted small cell-text', 'data-testid': 'failure-example' }, `e.g. ${c.example_message}`)
              : null)),
          td(type ? badge(type, 'error', { 'data-testid': 'failure-type' }) : el('span', { class: 'muted' }, '—')),
          td(el('span', { 'data-testid': 'failure-count' }, fmtInt(c.count)), 'num'),
          td(total ? `${Math.round((100 * c.count) / total)}%` : '—', 'num muted'),
          td(timeEl(c.first_seen), 'nowrap'),
          td(timeEl(c.last_seen), 'nowrap'),
          td(el('span', { class: 'sample-links' }, ...samples.flatMap((a, i) => (i ? [' ', a] : [a])))),
          td(el('a', { href: listHref(c, from, to), class: 'btn btn-small', 'data-testid': 'failure-traces-link' },
            type ? `${type} traces` : 'Failing traces')));
      });
      const built = table({
        testid: 'failures-table', caption: 'Failure clusters',
        columns: [{ label: 'Error' }, { label: 'Type' }, { label: 'Traces', class: 'num' }, { label: 'Share', class: 'num' },
          { label: 'First seen' }, { label: 'Last seen' }, { label: 'Latest traces' }, { label: '' }],
        rows,
      });
      replace(body, built.wrap,
        clusters.length ? null : empty('No failures in this window.', 'Traces sent with an error are grouped here by their message.'));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };
  rangeFilter.addEventListener('change', () => { saved.range = rangeFilter.value; load(); });
  refresh.addEventListener('click', load);
  load();
}
