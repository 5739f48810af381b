// One trace: its input, output and error, the span tree with a waterfall,
// events, feedback (with a form) and evaluations (with a run form).

import { el, icon, ICONS, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { canWrite, projectName } from '../state.js';
import { loading, errorBox, empty, textBlock, timeEl, badge, copyButton, field, select, busy, toast, toastError } from '../ui.js';
import { fmtInt, fmtCost, fmtDuration, fmtScore, parseTime } from '../format.js';
import { statusBadge, feedbackBadge } from './traces.js';

/** Rule kinds that run without parameters, offered beside the catalog. */
export const RULE_KINDS = ['not_empty', 'json_valid', 'pii', 'refusal'];

let catalogPromise = null;
/** The evaluator catalog (GET /v1/eval-catalog), fetched once. */
export function catalog() {
  if (!catalogPromise) {
    catalogPromise = api('/v1/eval-catalog')
      .then((d) => (Array.isArray(d?.evaluators) ? d.evaluators : []))
      .catch((err) => { catalogPromise = null; throw err; });
  }
  return catalogPromise;
}

export function render(root, ctx) {
  const id = ctx.id;
  const body = el('div', { class: 'trace-page' });
  add(root, 
    el('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
      el('a', { href: '#/traces', class: 'crumb-back' }, icon(ICONS.back), 'Traces')),
    body);
  replace(body, loading());

  const polls = new Set();
  const load = async () => {
    try {
      const trace = await api(`/v1/traces/${encodeURIComponent(id)}`, { signal: ctx.signal });
      ctx.setTitle(trace.name || 'Trace');
      replace(body, build(trace, ctx, { reload: refreshLists, polls }));
    } catch (err) {
      if (isAbort(err)) return;
      replace(body, errorBox(err, () => { replace(body, loading()); load(); }));
    }
  };

  // Feedback and evaluations refresh in place, keeping the span selection.
  const refreshLists = async () => {
    try {
      const trace = await api(`/v1/traces/${encodeURIComponent(id)}`, { signal: ctx.signal });
      const fb = body.querySelector('[data-testid=feedback-list]');
      const ev = body.querySelector('[data-testid=evals-list]');
      if (fb) fb.replaceWith(feedbackList(trace.feedback));
      if (ev) ev.replaceWith(evalsList(trace.evaluations));
    } catch (err) {
      if (!isAbort(err)) toastError(err);
    }
  };

  load();
  return () => { for (const timer of polls) clearTimeout(timer); polls.clear(); };
}

function build(trace, ctx, { reload, polls }) {
  const spans = Array.isArray(trace.spans) ? trace.spans : [];
  const isError = !!trace.error;
  const header = el('header', { class: 'trace-header' },
    el('div', { class: 'trace-title-row' },
      el('h1', { class: 'page-title', 'data-testid': 'trace-name', tabindex: '-1' }, trace.name || '(unnamed trace)'),
      statusBadge(isError, { 'data-testid': 'trace-status' })),
    el('div', { class: 'trace-id-row' },
      el('code', { class: 'mono', 'data-testid': 'trace-id' }, trace.id),
      copyButton(() => trace.id, { label: 'Copy id' })),
    el('dl', { class: 'facts' },
      fact('Started', timeEl(trace.started_at)),
      fact('Latency', fmtDuration(trace.latency_ms)),
      fact('Tokens', fmtInt(trace.total_token_count)),
      fact('Cost', fmtCost(trace.cost)),
      fact('Model', trace.model || '—', 'mono'),
      fact('Spans', fmtInt(trace.span_count ?? spans.length)),
      fact('Project', projectName(trace.project_id) || trace.project_id || '—'),
      trace.session_id ? fact('Session', el('a', { href: `#/sessions/${encodeURIComponent(trace.session_id)}`, class: 'mono' }, trace.session_id)) : null,
      trace.external_id ? fact('External id', trace.external_id, 'mono') : null),
    canWrite() ? addToDatasetForm(trace.id, ctx) : null);

  const io = el('section', { class: 'panel' },
    el('h2', { class: 'panel-title' }, 'Input & output'),
    el('div', { class: 'io-grid' },
      textBlock(trace.input, { testid: 'trace-input', label: 'Input' }),
      textBlock(trace.output, { testid: 'trace-output', label: 'Output' })),
    trace.error ? el('div', { class: 'error-block' }, textBlock(trace.error, { testid: 'trace-error', label: 'Error' })) : null);

  const tagEntries = tagsOf(trace);
  const meta = el('section', { class: 'panel' },
    el('h2', { class: 'panel-title' }, 'Tags & metadata'),
    el('div', { class: 'tags', 'data-testid': 'trace-tags' },
      tagEntries.length ? tagEntries.map(([k, v]) => el('span', { class: 'tag' }, v === null ? k : `${k}=${v}`)) : el('span', { class: 'muted' }, 'No tags')),
    textBlock(trace.metadata && Object.keys(trace.metadata).length ? trace.metadata : null, { testid: 'trace-metadata', label: 'Metadata', emptyText: 'No metadata' }));

  const detail = el('div', { class: 'span-detail', 'data-testid': 'span-detail', 'aria-live': 'polite' },
    el('p', { class: 'muted' }, spans.length ? 'Select a span to see its input, output and details.' : 'This trace has no spans.'));
  const tree = spanTree(trace, spans, detail);
  const spansPanel = el('section', { class: 'panel' },
    el('h2', { class: 'panel-title' }, `Spans (${spans.length})`),
    el('div', { class: 'spans-layout' }, tree, detail));

  const events = Array.isArray(trace.events) ? trace.events : [];
  const eventsPanel = events.length ? el('section', { class: 'panel' },
    el('h2', { class: 'panel-title' }, `Events (${events.length})`),
    el('ul', { class: 'event-list', 'data-testid': 'events-list' }, events.map((e) => el('li', { class: 'event-item', 'data-testid': 'event-item' },
      timeEl(e.timestamp),
      badge(e.level || 'info', e.level === 'error' ? 'error' : e.level === 'warning' || e.level === 'warn' ? 'warn' : 'neutral'),
      el('span', { class: 'event-message' }, e.message || ''),
      e.span_id ? el('span', { class: 'mono muted small' }, `span ${e.span_id}`) : null)))) : null;

  const feedbackPanel = el('section', { class: 'panel' },
    el('h2', { class: 'panel-title' }, 'Feedback'),
    feedbackList(trace.feedback),
    canWrite() ? feedbackForm(trace.id, reload) : null);

  const evalPanel = el('section', { class: 'panel' },
    el('h2', { class: 'panel-title' }, 'Evaluations'),
    evalsList(trace.evaluations),
    canWrite() ? runEvalForm(trace.id, reload, polls, ctx) : null);

  return el('div', { class: 'stack-lg' }, header, io, spansPanel, eventsPanel, meta,
    el('div', { class: 'two-col' }, feedbackPanel, evalPanel));
}

function fact(label, value, cls) {
  return el('div', { class: 'fact' }, el('dt', {}, label), el('dd', { class: cls }, value));
}

/** Key/value tags (tag_map) or, failing that, the list form. */
function tagsOf(trace) {
  if (trace.tag_map && typeof trace.tag_map === 'object' && Object.keys(trace.tag_map).length) {
    return Object.entries(trace.tag_map).map(([k, v]) => [k, String(v)]);
  }
  if (Array.isArray(trace.tags)) return trace.tags.map((t) => [String(t), null]);
  if (trace.tags && typeof trace.tags === 'object') return Object.entries(trace.tags).map(([k, v]) => [k, String(v)]);
  return [];
}

// -------------------------------------------------------------- span tree --

function spanTimes(span, fallbackStart) {
  const start = parseTime(span.start_time)?.getTime() ?? fallbackStart;
  let end = parseTime(span.end_time)?.getTime();
  if (end === undefined || end === null) end = start + (typeof span.latency_ms === 'number' ? span.latency_ms : 0);
  return { start, end: Math.max(end, start) };
}

/** Spans in tree order with their depth; orphans and cycles become roots. */
export function orderSpans(spans) {
  const byId = new Map(spans.map((s) => [s.id, s]));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    if (s.parent_span_id && byId.has(s.parent_span_id) && s.parent_span_id !== s.id) {
      if (!children.has(s.parent_span_id)) children.set(s.parent_span_id, []);
      children.get(s.parent_span_id).push(s);
    } else {
      roots.push(s);
    }
  }
  const key = (s) => parseTime(s.start_time)?.getTime() ?? Infinity;
  const out = [];
  const seen = new Set();
  const walk = (s, depth) => {
    if (seen.has(s.id)) return;
    seen.add(s.id);
    out.push({ span: s, depth });
    for (const c of (children.get(s.id) || []).slice().sort((a, b) => key(a) - key(b))) walk(c, depth + 1);
  };
  for (const r of roots.slice().sort((a, b) => key(a) - key(b))) walk(r, 0);
  // Spans only reachable through a cycle.
  for (const s of spans) if (!seen.has(s.id)) walk(s, 0);
  return out;
}

function spanTree(trace, spans, detail) {
  if (!spans.length) return el('div', { class: 'span-tree', 'data-testid': 'span-tree' }, empty('No spans recorded for this trace.'));
  const traceStart = parseTime(trace.started_at)?.getTime() ?? Date.now();
  const times = new Map(spans.map((s) => [s.id, spanTimes(s, traceStart)]));
  let t0 = traceStart;
  let t1 = parseTime(trace.ended_at)?.getTime() ?? traceStart + (trace.latency_ms || 0);
  for (const { start, end } of times.values()) {
    t0 = Math.min(t0, start);
    t1 = Math.max(t1, end);
  }
  const total = Math.max(1, t1 - t0);

  const axis = el('div', { class: 'waterfall-axis', 'aria-hidden': 'true' },
    [0, 0.25, 0.5, 0.75, 1].map((f) => {
      const tick = el('span', { class: 'axis-tick' }, fmtDuration(total * f));
      tick.style.left = `${f * 100}%`;
      return tick;
    }));

  let selected = null;
  const rows = orderSpans(spans).map(({ span, depth }) => {
    const { start, end } = times.get(span.id);
    const bar = el('span', { class: `span-bar type-${typeClass(span.type)}${span.error ? ' is-error' : ''}`, 'data-testid': 'span-bar' });
    const left = ((start - t0) / total) * 100;
    const width = Math.max(((end - start) / total) * 100, 0.4);
    bar.style.left = `${Math.min(left, 99.6).toFixed(3)}%`;
    bar.style.width = `${Math.min(width, 100 - Math.min(left, 99.6)).toFixed(3)}%`;
    const name = el('span', { class: 'span-name' },
      el('span', { class: `span-type type-${typeClass(span.type)}` }, span.type || 'other'),
      el('span', { class: 'span-label' }, span.name || '(unnamed span)'),
      span.error ? badge('error', 'error') : null);
    name.style.paddingLeft = `${Math.min(depth, 12) * 16}px`;
    const row = el('button', {
      type: 'button', class: 'span-row', 'data-testid': 'span-row', 'data-span-id': span.id,
      'data-depth': String(depth), 'aria-pressed': 'false', title: `${span.name || ''} · ${fmtDuration(span.latency_ms ?? end - start)}`,
    },
    name,
    el('span', { class: 'span-latency num' }, fmtDuration(span.latency_ms ?? end - start)),
    el('span', { class: 'span-track' }, bar));
    row.addEventListener('click', () => {
      if (selected) { selected.classList.remove('is-selected'); selected.setAttribute('aria-pressed', 'false'); }
      selected = row;
      row.classList.add('is-selected');
      row.setAttribute('aria-pressed', 'true');
      replace(detail, spanDetail(span, start - t0));
    });
    return row;
  });

  return el('div', { class: 'span-tree', 'data-testid': 'span-tree', role: 'group', 'aria-label': 'Span tree' },
    el('div', { class: 'span-tree-head' }, el('span', {}, 'Span'), el('span', { class: 'num' }, 'Duration'), axis),
    rows);
}

function typeClass(type) {
  return ['llm', 'tool', 'retrieval'].includes(type) ? type : 'other';
}

function spanDetail(span, offsetMs) {
  const tokens = (span.prompt_tokens ?? null) !== null || (span.completion_tokens ?? null) !== null
    ? `${fmtInt(span.prompt_tokens ?? 0)} prompt + ${fmtInt(span.completion_tokens ?? 0)} completion`
    : '—';
  return el('div', { class: 'stack' },
    el('h3', { class: 'span-detail-title' }, span.name || '(unnamed span)'),
    el('dl', { class: 'facts facts-compact' },
      fact('Span id', span.id, 'mono'),
      fact('Type', span.type || 'other'),
      fact('Model', span.model || '—', 'mono'),
      fact('Start', timeEl(span.start_time)),
      fact('Offset', `+${fmtDuration(offsetMs)}`),
      fact('Latency', fmtDuration(span.latency_ms)),
      fact('Tokens', tokens),
      fact('Cost', fmtCost(span.cost)),
      span.parent_span_id ? fact('Parent', span.parent_span_id, 'mono') : null),
    span.error ? el('div', { class: 'error-block' }, textBlock(span.error, { testid: 'span-error', label: 'Error' })) : null,
    textBlock(span.input, { testid: 'span-input', label: 'Input' }),
    textBlock(span.output, { testid: 'span-output', label: 'Output' }),
    textBlock(span.metadata && Object.keys(span.metadata).length ? span.metadata : null, { testid: 'span-metadata', label: 'Metadata', emptyText: 'No metadata' }));
}

// ---------------------------------------------------------------- datasets --

/** The dataset last added to, offered first on the next trace. */
let lastDataset = '';

/** Adds the trace to a dataset (with a label, or none) in one action. */
function addToDatasetForm(traceId, ctx) {
  const dataset = el('select', { name: 'dataset', required: true, 'aria-label': 'Dataset', disabled: true },
    el('option', { value: '' }, 'Loading datasets…'));
  const label = select({ name: 'label', 'aria-label': 'Label' },
    [{ value: '', label: 'No label' }, { value: 'pass', label: 'Label pass' }, { value: 'fail', label: 'Label fail' }], '');
  const submit = el('button', { type: 'submit', class: 'btn', disabled: true }, icon(ICONS.datasets), el('span', {}, 'Add to dataset'));
  const status = el('p', { class: 'small muted add-status', 'data-testid': 'add-to-dataset-status', 'aria-live': 'polite' });
  const form = el('form', { class: 'add-to-dataset', 'data-testid': 'add-to-dataset' }, dataset, label, submit, status);

  api('/v1/datasets', { signal: ctx.signal }).then((data) => {
    const list = Array.isArray(data?.datasets) ? data.datasets : [];
    if (!list.length) {
      for (const control of [dataset, label, submit]) control.hidden = true;
      replace(status, 'No datasets yet: ', el('a', { href: '#/datasets' }, 'create one'), ' to collect traces like this one.');
      return;
    }
    replace(dataset, list.map((d) => el('option', { value: d.id }, d.name)));
    if (list.some((d) => d.id === lastDataset)) dataset.value = lastDataset;
    dataset.disabled = false;
    submit.disabled = false;
  }).catch((err) => {
    if (!isAbort(err)) status.textContent = `The datasets could not be loaded: ${errorText(err)}`;
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const id = dataset.value;
    if (!id) return;
    delete status.dataset.result;
    replace(status);
    const name = dataset.selectedOptions[0]?.textContent || 'the dataset';
    const body = { trace_id: traceId };
    if (label.value) body.label = label.value;
    try {
      const { status: code, data: item } = await busy(submit, () => api(`/v1/datasets/${encodeURIComponent(id)}/items`, { method: 'POST', body, withStatus: true }));
      lastDataset = id;
      const link = el('a', { href: `#/datasets/${encodeURIComponent(id)}` }, name);
      const labelled = item?.label ? `labelled ${item.label}` : 'unlabeled';
      const added = code === 201;
      status.dataset.result = added ? 'added' : 'existing';
      replace(status, added
        ? ['Added to ', link, ` (${labelled}).`]
        : ['Already in ', link, ` (${labelled}); nothing was added.`]);
      toast(added ? `Added to ${name}` : `Already in ${name}`, added ? 'success' : 'info');
    } catch (err) {
      status.dataset.result = 'error';
      replace(status, el('span', { class: 'text-error' }, errorText(err)));
    }
  });
  return form;
}

// --------------------------------------------------------------- feedback --

function feedbackList(items) {
  const list = Array.isArray(items) ? items : [];
  if (!list.length) {
    return el('div', { class: 'feedback-list', 'data-testid': 'feedback-list' }, el('p', { class: 'muted' }, 'No feedback on this trace yet.'));
  }
  return el('ul', { class: 'feedback-list item-list', 'data-testid': 'feedback-list' },
    list.slice().reverse().map((f) => el('li', { class: 'item', 'data-testid': 'feedback-item', 'data-feedback-id': f.id },
      el('div', { class: 'item-head' },
        feedbackBadge(f.label),
        typeof f.score === 'number' ? el('span', { class: 'muted small' }, `score ${fmtScore(f.score)}`) : null,
        el('span', { class: 'spacer' }),
        timeEl(f.created_at)),
      f.comment ? el('p', { class: 'item-text', 'data-testid': 'feedback-comment' }, f.comment) : null,
      f.metadata && typeof f.metadata === 'object' && Object.keys(f.metadata).length
        ? textBlock(f.metadata, { label: 'Metadata' }) : null)));
}

function feedbackForm(traceId, reload) {
  const label = select({ name: 'label', required: true },
    [{ value: 'good', label: 'Good' }, { value: 'bad', label: 'Bad' }, { value: 'neutral', label: 'Neutral' }], 'good');
  const comment = el('textarea', { name: 'comment', rows: '3', maxlength: '10000', placeholder: 'What was right or wrong? (optional)' });
  const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Add feedback');
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true });
  const form = el('form', { class: 'stack form-card', 'data-testid': 'feedback-form' },
    el('div', { class: 'form-row' }, field('Label', label), field('Comment', comment)),
    error,
    el('div', {}, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const body = { trace_id: traceId, label: label.value };
    if (comment.value.trim()) body.comment = comment.value;
    try {
      await busy(submit, () => api('/v1/feedback', { method: 'POST', body }));
      comment.value = '';
      toast('Feedback added', 'success');
      await reload();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });
  return form;
}

// ------------------------------------------------------------ evaluations --

export function evalStatusBadge(status) {
  const kind = status === 'complete' ? 'ok' : status === 'failed' ? 'error' : status === 'running' ? 'info' : 'neutral';
  return badge(status || 'unknown', kind, { 'data-testid': 'eval-status' });
}

export function evalLabelBadge(label) {
  if (!label) return null;
  const kind = label === 'pass' ? 'ok' : label === 'fail' ? 'error' : label === 'warn' ? 'warn' : 'neutral';
  return badge(label, kind, { 'data-testid': 'eval-label' });
}

function evalsList(items) {
  const list = Array.isArray(items) ? items : [];
  if (!list.length) {
    return el('div', { class: 'evals-list', 'data-testid': 'evals-list' }, el('p', { class: 'muted' }, 'No evaluations of this trace yet.'));
  }
  return el('ul', { class: 'evals-list item-list', 'data-testid': 'evals-list' },
    list.slice().reverse().map((e) => el('li', { class: 'item', 'data-testid': 'eval-item', 'data-eval-id': e.id, 'data-metric': e.metric_name },
      el('div', { class: 'item-head' },
        el('strong', { class: 'mono', 'data-testid': 'eval-metric' }, e.metric_name),
        evalStatusBadge(e.status),
        evalLabelBadge(e.label),
        el('span', { class: 'score', 'data-testid': 'eval-score' }, typeof e.score === 'number' ? `score ${fmtScore(e.score)}` : ''),
        el('span', { class: 'spacer' }),
        el('span', { class: 'muted small' }, e.evaluator_type || ''),
        timeEl(e.completed_at || e.created_at)),
      e.reasoning ? el('p', { class: 'item-text', 'data-testid': 'eval-reasoning' }, e.reasoning) : null,
      e.last_error && e.status !== 'complete' ? el('p', { class: 'item-text text-error' }, `Last attempt: ${e.last_error}`) : null,
      e.judge_model ? el('p', { class: 'muted small' }, `Judge: ${e.judge_model}`) : null)));
}

function runEvalForm(traceId, reload, polls, ctx) {
  const preset = el('select', { name: 'preset', required: true }, el('option', { value: '' }, 'Loading evaluators…'));
  preset.disabled = true;
  const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Run evaluation');
  const status = el('p', { class: 'muted small', 'aria-live': 'polite', 'data-testid': 'run-eval-status' });
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true });
  const form = el('form', { class: 'stack form-card', 'data-testid': 'run-eval-form' },
    field('Evaluator', preset, 'Catalog entries run on the configured LLM judge; rules run in the server.'),
    error, status, el('div', {}, submit));
  let presets = [];
  catalog().then((list) => {
    presets = list.map((p) => p.name);
    replace(preset,
      el('optgroup', { label: 'Rules (in-process)' }, RULE_KINDS.map((k) => el('option', { value: k }, k))),
      el('optgroup', { label: 'Catalog (LLM judge)' }, list.map((p) => el('option', { value: p.name, title: p.description || '' }, p.name))));
    preset.disabled = false;
  }).catch((err) => {
    replace(preset, RULE_KINDS.map((k) => el('option', { value: k }, k)));
    preset.disabled = false;
    status.textContent = `The catalog could not be loaded (${errorText(err)}); rules only.`;
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const name = preset.value;
    if (!name) return;
    const isPreset = presets.includes(name) && !RULE_KINDS.includes(name);
    const body = isPreset
      ? { trace_id: traceId, evaluator_type: 'llm', metric_name: name, config: { preset: name } }
      : { trace_id: traceId, evaluator_type: 'rule', metric_name: name, config: { rule: name } };
    try {
      const queued = await busy(submit, () => api('/v1/eval', { method: 'POST', body }));
      status.textContent = `Queued ${name}; waiting for the result…`;
      await reload();
      poll(queued.eval_id, name, 0);
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });

  const poll = (evalId, name, attempt) => {
    if (!evalId || ctx.signal.aborted) return;
    const delay = Math.min(500 * 1.5 ** attempt, 5000);
    const timer = setTimeout(async () => {
      polls.delete(timer);
      try {
        const ev = await api(`/v1/eval/${encodeURIComponent(evalId)}`, { signal: ctx.signal });
        if (ev.status === 'complete' || ev.status === 'failed') {
          status.textContent = ev.status === 'complete'
            ? `${name}: ${ev.label || 'done'}${typeof ev.score === 'number' ? ` (score ${fmtScore(ev.score)})` : ''}`
            : `${name} failed${ev.reasoning ? `: ${ev.reasoning}` : ''}`;
          await reload();
          return;
        }
        if (ev.status === 'running') status.textContent = `${name} is running…`;
        if (attempt < 60) poll(evalId, name, attempt + 1);
        else {
          status.textContent = `${name} is still ${ev.status}; it will appear here when it finishes.`;
          await reload();
        }
      } catch (err) {
        if (!isAbort(err)) status.textContent = `Could not check the evaluation: ${errorText(err)}`;
      }
    }, delay);
    polls.add(timer);
  };
  return form;
}
