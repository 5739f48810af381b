// Sessions (traces sharing a session_id): the list, most recently active
// first, and one session's traces in the order they started.

import { el, icon, ICONS, replace, add } from '../dom.js';
import { api, isAbort } from '../api.js';
import { state } from '../state.js';
import { loading, errorBox, empty, pageHeader, table, td, timeEl, pager, linkRow } from '../ui.js';
import { fmtInt, fmtCost, fmtDuration, parseTime } from '../format.js';
import { traceRow, COLUMNS } from './traces.js';

const PAGE_SIZE = 50;
const saved = { cursors: [null], projectId: null };

export function render(root, ctx) {
  return ctx.detail ? renderDetail(root, ctx) : renderList(root, ctx);
}

function renderList(root, ctx) {
  if (saved.projectId !== state.projectId) {
    saved.cursors = [null];
    saved.projectId = state.projectId;
  }
  const body = el('div', { class: 'list-body' });
  add(root, pageHeader('Sessions'), el('p', { class: 'muted page-sub' }, 'Traces that share a session id, most recently active first.'), body);

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    replace(body, loading());
    try {
      const data = await api('/v1/sessions', {
        signal: ctx.signal,
        query: { limit: PAGE_SIZE, project_id: state.projectId, cursor: saved.cursors[saved.cursors.length - 1] },
      });
      if (mine !== generation) return;
      const list = Array.isArray(data?.sessions) ? data.sessions : [];
      const rows = list.map((s) => {
        const tr = el('tr', { 'data-testid': 'session-row', 'data-session-id': s.session_id },
          td(el('a', { href: `#/sessions/${encodeURIComponent(s.session_id)}`, tabindex: '-1', class: 'mono cell-text' }, s.session_id)),
          td(fmtInt(s.trace_count), 'num'),
          td(s.error_count ? el('span', { class: 'text-error' }, fmtInt(s.error_count)) : '0', 'num'),
          td(fmtInt(s.total_tokens), 'num'),
          td(fmtCost(s.total_cost), 'num'),
          td(timeEl(s.first_at), 'nowrap'),
          td(timeEl(s.last_at), 'nowrap'),
          td(duration(s.first_at, s.last_at), 'num'));
        return linkRow(tr, `#/sessions/${encodeURIComponent(s.session_id)}`);
      });
      const built = table({
        testid: 'sessions-table', caption: 'Sessions',
        columns: [{ label: 'Session' }, { label: 'Traces', class: 'num' }, { label: 'Errors', class: 'num' }, { label: 'Tokens', class: 'num' },
          { label: 'Cost', class: 'num' }, { label: 'First trace' }, { label: 'Last trace' }, { label: 'Duration', class: 'num' }],
        rows,
      });
      const page = saved.cursors.length;
      replace(body, built.wrap,
        list.length ? null : empty('No sessions yet.', 'Traces sent with a session_id are grouped here.'),
        pager({
          page, hasPrev: page > 1, hasNext: !!data?.next_cursor,
          onPrev: () => { saved.cursors.pop(); load(); },
          onNext: () => { saved.cursors.push(data.next_cursor); load(); },
        }));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };
  load();
}

function duration(from, to) {
  const a = parseTime(from);
  const b = parseTime(to);
  return a && b ? fmtDuration(b - a) : '—';
}

function renderDetail(root, ctx) {
  const id = ctx.id;
  const body = el('div', { class: 'stack-lg' });
  add(root, 
    el('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
      el('a', { href: '#/sessions', class: 'crumb-back' }, icon(ICONS.back), 'Sessions')),
    pageHeader('Session'),
    el('p', { class: 'mono session-id', 'data-testid': 'session-id' }, id),
    body);
  ctx.setTitle(`Session ${id}`);
  const load = async () => {
    replace(body, loading());
    try {
      const data = await api(`/v1/sessions/${encodeURIComponent(id)}`, { signal: ctx.signal });
      const traces = Array.isArray(data?.traces) ? data.traces : [];
      const errors = traces.filter((t) => t.error).length;
      const tokens = traces.reduce((s, t) => s + (t.total_token_count || 0), 0);
      const cost = traces.reduce((s, t) => s + (t.cost || 0), 0);
      const first = traces[0]?.started_at;
      const last = traces[traces.length - 1]?.ended_at || traces[traces.length - 1]?.started_at;
      const built = table({ testid: 'traces-table', caption: 'Traces of the session', columns: [{ label: '#', class: 'num' }, ...COLUMNS],
        rows: traces.map((t, i) => {
          const row = traceRow(t);
          row.insertBefore(td(String(i + 1), 'num muted'), row.firstChild);
          return row;
        }) });
      replace(body,
        el('div', { class: 'cards' },
          summary('Traces', fmtInt(traces.length)),
          summary('Errors', fmtInt(errors)),
          summary('Tokens', fmtInt(tokens)),
          summary('Cost', fmtCost(cost)),
          summary('Duration', duration(first, last))),
        el('section', { class: 'panel' }, el('h2', { class: 'panel-title' }, 'Traces, in the order they started'), built.wrap,
          traces.length ? null : empty('This session has no traces.')));
    } catch (err) {
      if (isAbort(err)) return;
      replace(body, errorBox(err, load));
    }
  };
  load();
}

function summary(label, value) {
  return el('div', { class: 'card' }, el('div', { class: 'card-label' }, label), el('div', { class: 'card-value' }, value));
}
