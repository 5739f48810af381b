// Traces: full-text search and filters over GET /v1/traces, cursor paging,
// and a live tail from GET /v1/traces/live (Server-Sent Events).

import { el, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { state, isOwner, isViewer } from '../state.js';
import { loading, errorBox, empty, pageHeader, select, table, td, timeEl, badge, pager, linkRow, toast, toastError, confirmModal, formDialog, busy } from '../ui.js';
import { fmtInt, fmtCost, fmtDuration, timeZoneName } from '../format.js';

const PAGE_SIZE = 50;
const LIVE_MAX_ROWS = 200;
const TIME_RANGES = [
  { value: 'all', label: 'Any time', ms: 0 },
  { value: '1h', label: 'Last hour', ms: 3_600_000 },
  { value: '24h', label: 'Last 24 hours', ms: 86_400_000 },
  { value: '7d', label: 'Last 7 days', ms: 7 * 86_400_000 },
  { value: '30d', label: 'Last 30 days', ms: 30 * 86_400_000 },
];

// Kept across visits so that going back from a trace restores the list.
const saved = {
  q: '', error: 'any', failure: 'any', model: '', feedback: 'any', range: 'all', tag: '',
  cursors: [null], projectId: null, to: null,
  // Parameters of an applied saved filter that the page has no control for.
  extra: {}, savedId: '',
};

/** The trace list's parameters the page's own controls set. */
const SHOWN_PARAMS = ['q', 'error', 'failure_type', 'model', 'feedback', 'tag_key', 'tag_value'];

/** The failure classes of the `failure_type` filter. */
export const FAILURE_TYPES = [
  { value: 'timeout', label: 'Timeout' },
  { value: 'rate_limit', label: 'Rate limit' },
  { value: 'invalid_response', label: 'Invalid response' },
  { value: 'context_length', label: 'Context length' },
];

/** The list's parameters a link may carry (`#/traces?failure_type=…`). */
const LINK_PARAMS = ['failure_type', 'error', 'from', 'to'];

export const COLUMNS = [
  { label: 'Time' }, { label: 'Name' }, { label: 'Model' }, { label: 'Latency', class: 'num' },
  { label: 'Tokens', class: 'num' }, { label: 'Cost', class: 'num' }, { label: 'Status' }, { label: 'Feedback' }, { label: 'Evals' },
];

/** The label of a trace's feedback, where the API gives one. */
function feedbackOf(t, filterLabel) {
  if (Array.isArray(t.feedback) && t.feedback.length) return t.feedback[t.feedback.length - 1].label;
  if (typeof t.feedback_label === 'string') return t.feedback_label;
  if (t.feedback_summary && typeof t.feedback_summary === 'object') {
    const best = Object.entries(t.feedback_summary).sort((a, b) => b[1] - a[1])[0];
    if (best && best[1] > 0) return best[0];
  }
  return filterLabel && filterLabel !== 'any' ? filterLabel : null;
}

export function statusBadge(error, attrs = {}) {
  return error ? badge('error', 'error', attrs) : badge('ok', 'ok', attrs);
}

/** A trace's mean score per metric (`eval_scores`), a few at most. */
export function evalScores(scores) {
  const entries = scores && typeof scores === 'object' ? Object.entries(scores) : [];
  if (!entries.length) return el('span', { class: 'muted' }, '—');
  const shown = entries.slice(0, 3).map(([metric, score]) => {
    const kind = score >= 0.7 ? 'ok' : score >= 0.4 ? 'neutral' : 'error';
    return badge(`${metric} ${Number(score).toFixed(2)}`, kind, { 'data-testid': 'trace-eval-score' });
  });
  if (entries.length > 3) shown.push(el('span', { class: 'muted small' }, `+${entries.length - 3}`));
  return el('span', { class: 'eval-scores' }, ...shown);
}

export function feedbackBadge(label) {
  if (!label) return el('span', { class: 'muted' }, '—');
  const kind = label === 'good' ? 'ok' : label === 'bad' ? 'error' : 'neutral';
  return badge(label, kind);
}

/** One row of a trace table (also used by the session page). */
export function traceRow(t, { feedbackFilter, live = false } = {}) {
  const href = `#/traces/${encodeURIComponent(t.id)}`;
  const isError = t.status ? t.status === 'error' : !!t.error;
  const tokens = typeof t.total_token_count === 'number' ? t.total_token_count : null;
  const tr = el('tr', { 'data-testid': 'trace-row', 'data-trace-id': t.id, class: live ? 'row-new' : null },
    td(timeEl(t.started_at || t.created_at), 'nowrap'),
    td(el('div', { class: 'cell-name' },
      el('a', { href, tabindex: '-1', class: 'trace-link' }, t.name ? t.name : el('span', { class: 'muted' }, '(unnamed)')),
      el('span', { class: 'mono muted small' }, String(t.id).slice(0, 8)))),
    td(t.model ? el('span', { class: 'cell-code' }, t.model) : el('span', { class: 'muted' }, '—'), 'mono small'),
    td(fmtDuration(t.latency_ms), 'num'),
    td(tokens === null ? '—' : fmtInt(tokens), 'num'),
    td(fmtCost(t.cost), 'num'),
    td(statusBadge(isError, { 'data-testid': 'trace-status' })),
    td(feedbackBadge(feedbackOf(t, feedbackFilter))),
    td(evalScores(t.eval_scores)));
  return linkRow(tr, href);
}

export function render(root, ctx) {
  if (saved.projectId !== state.projectId) {
    saved.cursors = [null];
    saved.to = null;
    saved.projectId = state.projectId;
    saved.extra = {};
    saved.savedId = '';
  }
  // A link from another page (the failures view) sets the filters once:
  // they replace the current ones, and the address goes back to the plain list.
  const linked = LINK_PARAMS.filter((k) => ctx.query && ctx.query.get(k));
  if (linked.length) {
    Object.assign(saved, { q: '', error: 'any', failure: 'any', model: '', feedback: 'any', range: 'all', tag: '', cursors: [null], to: null, extra: {}, savedId: '' });
    const failure = ctx.query.get('failure_type');
    if (FAILURE_TYPES.some((f) => f.value === failure)) saved.failure = failure;
    const error = ctx.query.get('error');
    if (error === 'true' || error === 'false') saved.error = error;
    for (const k of ['from', 'to']) if (ctx.query.get(k)) saved.extra[k] = ctx.query.get(k);
    history.replaceState(null, '', '#/traces');
  }

  const search = el('input', { type: 'search', 'data-testid': 'trace-search', placeholder: 'Search names, inputs, outputs, errors…', 'aria-label': 'Search traces', value: saved.q });
  const go = el('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'trace-search-go' }, 'Search');
  const errorFilter = select({ 'data-testid': 'filter-error', 'aria-label': 'Status' },
    [{ value: 'any', label: 'Any status' }, { value: 'true', label: 'Errors only' }, { value: 'false', label: 'No errors' }], saved.error);
  const failureFilter = select({ 'data-testid': 'filter-failure-type', 'aria-label': 'Failure type' },
    [{ value: 'any', label: 'Any failure type' }, ...FAILURE_TYPES], saved.failure);
  const modelFilter = el('input', { type: 'text', 'data-testid': 'filter-model', placeholder: 'Model', 'aria-label': 'Model', value: saved.model, spellcheck: 'false' });
  const feedbackFilter = select({ 'data-testid': 'filter-feedback', 'aria-label': 'Feedback' },
    [{ value: 'any', label: 'Any feedback' }, { value: 'good', label: 'Good' }, { value: 'bad', label: 'Bad' }, { value: 'neutral', label: 'Neutral' }], saved.feedback);
  const rangeFilter = select({ 'data-testid': 'filter-range', 'aria-label': 'Time range' },
    TIME_RANGES.map((r) => ({ value: r.value, label: r.label })), saved.range);
  const tagFilter = el('input', { type: 'text', 'data-testid': 'filter-tag', placeholder: 'Tag key=value', 'aria-label': 'Tag (key=value)', value: saved.tag, spellcheck: 'false' });
  const live = el('input', { type: 'checkbox', 'data-testid': 'live-toggle', id: 'live-toggle' });
  const liveStatus = el('span', { class: 'live-status muted small', 'aria-live': 'polite' });

  const toolbar = el('div', { class: 'toolbar' },
    el('div', { class: 'search-box' }, search, go),
    el('div', { class: 'filters' }, errorFilter, failureFilter, modelFilter, feedbackFilter, rangeFilter, tagFilter,
      el('label', { class: 'live-label', for: 'live-toggle' }, live, el('span', { class: 'live-dot', 'aria-hidden': 'true' }), 'Live'),
      liveStatus));

  // Saved filters: shared by the organisation, per project.
  const savedSelect = select({ 'data-testid': 'saved-filter-select', 'aria-label': 'Saved filters' }, [{ value: '', label: 'Saved filters…' }], '');
  const saveButton = el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'saved-filter-save' }, 'Save filters…');
  const deleteButton = el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'saved-filter-delete', disabled: true }, 'Delete saved filter');
  const extraNote = el('span', { class: 'muted small', 'data-testid': 'saved-filter-extra' });
  const savedBar = el('div', { class: 'filters saved-filters' }, savedSelect,
    isViewer() ? null : saveButton, isOwner() ? deleteButton : null, extraNote);

  const body = el('div', { class: 'list-body' });
  add(root, pageHeader('Traces'), el('p', { class: 'muted page-sub' }, `Newest first. Times in ${timeZoneName()}.`), toolbar, savedBar, body);

  let tbody = null;
  let source = null;
  // Live events that arrive while a page loads, added once it is shown.
  let pendingLive = [];
  let generation = 0;

  const readFilters = () => {
    saved.q = search.value.trim();
    saved.error = errorFilter.value;
    saved.failure = failureFilter.value;
    saved.model = modelFilter.value.trim();
    saved.feedback = feedbackFilter.value;
    saved.range = rangeFilter.value;
    saved.tag = tagFilter.value.trim();
  };

  const query = () => {
    const q = { limit: PAGE_SIZE, project_id: state.projectId, cursor: saved.cursors[saved.cursors.length - 1] };
    if (saved.q) q.q = saved.q;
    if (saved.error !== 'any') q.error = saved.error;
    if (saved.failure !== 'any') q.failure_type = saved.failure;
    if (saved.model) q.model = saved.model;
    if (saved.feedback !== 'any') q.feedback = saved.feedback;
    const range = TIME_RANGES.find((r) => r.value === saved.range);
    if (range && range.ms) {
      // The window is fixed when the filter is applied, so pages line up.
      const to = saved.to || Date.now();
      q.from = new Date(to - range.ms).toISOString();
    }
    if (saved.tag) {
      const i = saved.tag.indexOf('=');
      if (i > 0) {
        q.tag_key = saved.tag.slice(0, i).trim();
        q.tag_value = saved.tag.slice(i + 1).trim();
      }
    }
    for (const [k, v] of Object.entries(saved.extra)) if (!(k in q)) q[k] = v;
    return q;
  };

  // ------------------------------------------------------- saved filters --

  /** The project saved filters belong to: the picked one, or the first. */
  const filterProject = () => state.projectId || (state.projects[0] && state.projects[0].id) || '';
  let savedList = [];

  /** The filters now applied, as the trace list's parameters. */
  const currentFilters = () => {
    const q = query();
    const filters = {};
    for (const k of [...SHOWN_PARAMS, ...Object.keys(saved.extra)]) {
      if (q[k] !== undefined && q[k] !== null && q[k] !== '') filters[k] = String(q[k]);
    }
    return filters;
  };

  const showExtra = () => {
    const entries = Object.entries(saved.extra);
    extraNote.textContent = entries.length ? `Also filtered by ${entries.map(([k, v]) => `${k}=${v}`).join(', ')}` : '';
  };

  const fillSaved = () => {
    const options = [{ value: '', label: 'Saved filters…' }, ...savedList.map((f) => ({ value: f.id, label: f.name }))];
    savedSelect.replaceChildren(...options.map((o) => el('option', { value: o.value }, o.label)));
    savedSelect.value = savedList.some((f) => f.id === saved.savedId) ? saved.savedId : '';
    deleteButton.disabled = !savedSelect.value;
  };

  const loadSaved = async () => {
    const project = filterProject();
    if (!project) return;
    try {
      const data = await api('/v1/saved-filters', { signal: ctx.signal, query: { project_id: project } });
      savedList = Array.isArray(data?.items) ? data.items : [];
      fillSaved();
    } catch (err) {
      if (!isAbort(err)) toastError(err);
    }
  };

  /** Puts a saved filter's parameters in the controls and lists with them. */
  const applySaved = (f) => {
    const filters = f && f.filters && typeof f.filters === 'object' ? f.filters : {};
    const text = (k) => (filters[k] === undefined || filters[k] === null ? '' : String(filters[k]));
    search.value = text('q');
    errorFilter.value = ['true', 'false'].includes(text('error')) ? text('error') : 'any';
    failureFilter.value = FAILURE_TYPES.some((t) => t.value === text('failure_type')) ? text('failure_type') : 'any';
    modelFilter.value = text('model');
    feedbackFilter.value = ['good', 'bad', 'neutral'].includes(text('feedback')) ? text('feedback') : 'any';
    tagFilter.value = text('tag_key') ? `${text('tag_key')}=${text('tag_value')}` : '';
    saved.extra = {};
    for (const [k, v] of Object.entries(filters)) {
      if (!SHOWN_PARAMS.includes(k) && v !== null && v !== undefined) saved.extra[k] = String(v);
    }
    saved.savedId = f ? f.id : '';
    showExtra();
    apply();
  };

  savedSelect.addEventListener('change', () => {
    const f = savedList.find((x) => x.id === savedSelect.value);
    deleteButton.disabled = !f;
    applySaved(f || null);
  });

  saveButton.addEventListener('click', () => {
    readFilters();
    const name = el('input', { type: 'text', name: 'name', required: true, maxlength: '100', autocomplete: 'off' });
    const filters = currentFilters();
    const shown = Object.entries(filters).map(([k, v]) => `${k}=${v}`).join(', ');
    formDialog({
      testid: 'saved-filter-form',
      errorTestid: 'saved-filter-error',
      title: 'Save these filters',
      intro: shown
        ? `Everyone in the organisation sees it in this project's trace list: ${shown}. The time range is not saved.`
        : 'No filter is set: the saved filter lists every trace.',
      fields: [['Name', name, 'Up to 100 characters.']],
      submitLabel: 'Save',
      submit: async () => {
        const created = await api('/v1/saved-filters', {
          method: 'POST', body: { project_id: filterProject(), name: name.value.trim(), filters },
        });
        saved.savedId = created?.id || '';
        toast(`Saved filter "${created?.name || name.value.trim()}" created`, 'success');
        await loadSaved();
      },
      describe: errorText,
    });
  });

  deleteButton.addEventListener('click', async () => {
    const f = savedList.find((x) => x.id === savedSelect.value);
    if (!f) return;
    const yes = await confirmModal({
      title: `Delete the saved filter "${f.name}"?`,
      message: 'It goes for everyone in the organisation. The traces stay.',
      confirmLabel: 'Delete', danger: true,
    });
    if (!yes) return;
    try {
      await busy(deleteButton, () => api(`/v1/saved-filters/${encodeURIComponent(f.id)}`, { method: 'DELETE' }));
      toast(`Saved filter "${f.name}" deleted`, 'success');
      saved.savedId = '';
      await loadSaved();
    } catch (err) {
      toastError(err);
    }
  });

  const load = async () => {
    const mine = ++generation;
    replace(body, loading());
    tbody = null;
    try {
      const data = await api('/v1/traces', { signal: ctx.signal, query: query() });
      if (mine !== generation) return;
      const list = Array.isArray(data?.traces) ? data.traces : [];
      const rows = list.map((t) => traceRow(t, { feedbackFilter: saved.feedback }));
      const built = table({ testid: 'traces-table', caption: 'Traces', columns: COLUMNS, rows });
      tbody = built.tbody;
      const page = saved.cursors.length;
      replace(body,
        built.wrap,
        list.length ? null : emptyState(),
        pager({
          page,
          hasPrev: page > 1,
          hasNext: !!data?.next_cursor,
          onPrev: () => { saved.cursors.pop(); load(); },
          onNext: () => { saved.cursors.push(data.next_cursor); load(); },
        }));
      const waiting = pendingLive;
      pendingLive = [];
      if (source && page === 1) for (const event of waiting) addLive(event);
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };

  const filtered = () => saved.q || saved.error !== 'any' || saved.failure !== 'any' || saved.model || saved.feedback !== 'any' || saved.range !== 'all' || saved.tag || Object.keys(saved.extra).length;
  const emptyState = () => (filtered()
    ? empty('No traces match these filters.', 'Clear the search or widen the filters.')
    : empty('No traces yet.', 'Send a trace with the SDK, the ingest API or OpenTelemetry, and it appears here.'));

  const apply = () => {
    readFilters();
    saved.cursors = [null];
    saved.to = Date.now();
    load();
  };

  search.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); apply(); } });
  go.addEventListener('click', apply);
  for (const s of [errorFilter, failureFilter, feedbackFilter, rangeFilter]) s.addEventListener('change', apply);
  for (const input of [modelFilter, tagFilter]) {
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); apply(); } });
    input.addEventListener('change', apply);
  }
  // Clearing the search box with its × applies at once.
  search.addEventListener('search', () => { if (!search.value) apply(); });

  // ------------------------------------------------------------ live tail --

  const addLive = (event) => {
    if (!event || !event.trace_id) return;
    if (!tbody || !tbody.isConnected) {
      pendingLive.push(event);
      return;
    }
    const id = String(event.trace_id);
    if ([...tbody.rows].some((r) => r.dataset.traceId === id)) return;
    const row = traceRow({
      id: String(event.trace_id), name: event.name, status: event.status, latency_ms: event.latency_ms,
      started_at: event.created_at, created_at: event.created_at,
    }, { live: true });
    tbody.insertBefore(row, tbody.firstChild);
    const emptyNode = body.querySelector('[data-testid=empty]');
    if (emptyNode) emptyNode.remove();
    while (tbody.rows.length > LIVE_MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
  };

  const stopLive = () => {
    if (source) {
      source.close();
      source = null;
    }
    liveStatus.textContent = '';
    live.closest('label').classList.remove('is-live');
  };

  const startLive = () => {
    stopLive();
    if (typeof EventSource !== 'function') {
      liveStatus.textContent = 'Live tail is not supported by this browser.';
      live.checked = false;
      return;
    }
    // New traces go on top of the first page.
    if (saved.cursors.length > 1) {
      saved.cursors = [null];
      load();
    }
    const qs = state.projectId ? `?project_id=${encodeURIComponent(state.projectId)}` : '';
    source = new EventSource(`/v1/traces/live${qs}`, { withCredentials: true });
    liveStatus.textContent = 'Connecting…';
    live.closest('label').classList.add('is-live');
    source.addEventListener('open', () => { liveStatus.textContent = 'Live: new traces appear at the top'; });
    source.addEventListener('message', (e) => {
      liveStatus.textContent = 'Live: new traces appear at the top';
      try {
        addLive(JSON.parse(e.data));
      } catch {
        // a malformed event is skipped
      }
    });
    source.addEventListener('missed', (e) => {
      let n = '';
      try { n = JSON.parse(e.data).missed; } catch { /* ignore */ }
      toast(`The live tail skipped ${n || 'some'} traces; refresh to see every one.`, 'info');
    });
    source.addEventListener('error', () => {
      if (!source) return;
      if (source.readyState === 2) {
        liveStatus.textContent = 'Live tail disconnected.';
        // A closed stream may mean the session ended: ask, so a 401 signs out.
        api('/v1/auth/me').then(() => {
          if (live.checked && ctx.signal && !ctx.signal.aborted) setTimeout(() => { if (live.checked) startLive(); }, 3000);
        }).catch(() => {});
      } else {
        liveStatus.textContent = 'Reconnecting…';
      }
    });
  };

  live.addEventListener('change', () => { if (live.checked) startLive(); else stopLive(); });

  showExtra();
  loadSaved();
  load();
  return () => stopLive();
}
