// One run of a dataset against a version: its status and progress (live
// while it runs), its results item by item with each score's reasoning, a
// comparison with another run of the same dataset, and the CI gate's
// decision on it. `#/runs/<id>` is also where the gate's `run_url` points.

import { el, icon, ICONS, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { canWrite } from '../state.js';
import { loading, errorBox, empty, textBlock, timeEl, badge, field, select, busy, toast, toastError, confirmModal, table, td, pager, section, copyButton } from '../ui.js';
import { fmtInt, fmtScore, fmtTime } from '../format.js';

/** How often a running run's progress is asked for. */
export const POLL_MS = 1500;
/** Results shown per page. */
const RESULTS_PAGE = 20;
/** Runs offered to compare with, newest first. */
const COMPARE_RUNS = 100;

export function isActive(run) {
  return run?.status === 'pending' || run?.status === 'running';
}

export function runStatusBadge(status) {
  const kind = { completed: 'ok', failed: 'error', running: 'info', cancelled: 'warn' }[status] || 'neutral';
  return badge(status || 'unknown', kind, { 'data-testid': 'run-status' });
}

/** A bar and "done / total" (failed ones counted as done, and named). */
export function runProgress(run) {
  const total = Math.max(0, run.item_count || 0);
  const done = Math.min(total, Math.max(0, run.completed_count || 0));
  const bar = el('div', { class: 'progress-bar' });
  bar.style.width = `${total ? (done / total) * 100 : 0}%`;
  return el('div', { class: 'progress-cell', 'data-testid': 'run-progress', 'data-done': String(done), 'data-total': String(total) },
    el('div', {
      class: ['progress', run.failed_count ? 'has-failed' : null], role: 'progressbar',
      'aria-valuemin': '0', 'aria-valuemax': String(total), 'aria-valuenow': String(done), 'aria-label': 'Items done',
    }, bar),
    el('span', { class: 'small muted nowrap' }, `${fmtInt(done)} / ${fmtInt(total)}`,
      run.failed_count ? `, ${fmtInt(run.failed_count)} failed` : ''));
}

/** The review label of an item: pass, fail, or unlabeled. */
export function reviewLabelBadge(label, attrs = {}) {
  if (label === 'pass') return badge('pass', 'ok', attrs);
  if (label === 'fail') return badge('fail', 'error', attrs);
  return badge('unlabeled', 'neutral', attrs);
}

/** A signed score difference: "+0.25", "−0.50", "0.00". */
export function fmtDelta(delta) {
  if (typeof delta !== 'number' || !Number.isFinite(delta)) return '—';
  if (Math.abs(delta) < 0.005) return '0.00';
  return `${delta > 0 ? '+' : '−'}${Math.abs(delta).toFixed(2)}`;
}

function deltaClass(delta) {
  if (typeof delta !== 'number' || Math.abs(delta) < 0.005) return 'delta';
  return delta > 0 ? 'delta delta-up' : 'delta delta-down';
}

/** How a run is named in a list of runs. */
export function runLabel(run) {
  return `${run.eval_version_name} · ${fmtTime(run.created_at)} · ${run.status}${typeof run.mean_score === 'number' ? ` · mean ${fmtScore(run.mean_score)}` : ''}`;
}

/**
 * Asks for the run every POLL_MS while it is pending or running and calls
 * `onUpdate(run)` with each answer, the last one finished. Stops when the
 * page is left (`signal`), when the run is gone, or when the returned
 * function is called.
 */
export function watchRun(runId, { signal, onUpdate, onError }) {
  let timer = null;
  let stopped = false;
  let failures = 0;
  const stop = () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    timer = null;
  };
  const tick = async () => {
    timer = null;
    if (stopped || signal.aborted) return;
    try {
      const run = await api(`/v1/eval-runs/${encodeURIComponent(runId)}`, { signal });
      if (stopped || signal.aborted) return;
      failures = 0;
      onUpdate(run);
      if (isActive(run) && !stopped) timer = setTimeout(tick, POLL_MS);
    } catch (err) {
      if (isAbort(err) || stopped || signal.aborted) return;
      if (onError) onError(err);
      if (err.status === 404) return;
      // The server may be restarting: keep asking, less often.
      failures += 1;
      timer = setTimeout(tick, Math.min(POLL_MS * 2 ** failures, 15_000));
    }
  };
  timer = setTimeout(tick, POLL_MS);
  signal.addEventListener('abort', stop, { once: true });
  return stop;
}

/** Cancels a run after asking; resolves to the run as cancelled, or null. */
export async function cancelRun(run, button) {
  const yes = await confirmModal({
    title: 'Cancel this run?',
    message: `Items of "${run.eval_version_name}" not started yet will not be run; those in flight finish. A cancelled run cannot be resumed.`,
    confirmLabel: 'Cancel run', cancelLabel: 'Keep running', danger: true,
  });
  if (!yes) return null;
  try {
    const cancelled = await busy(button, () => api(`/v1/eval-runs/${encodeURIComponent(run.id)}/cancel`, { method: 'POST' }));
    toast('Run cancelled', 'success');
    return cancelled;
  } catch (err) {
    toastError(err);
    return null;
  }
}

function fact(label, value, attrs = {}) {
  return el('div', { class: 'fact' }, el('dt', {}, label), el('dd', attrs, value));
}

export function render(root, ctx) {
  const id = ctx.id;
  const back = el('a', { href: '#/datasets', class: 'crumb-back', 'data-testid': 'run-back' }, icon(ICONS.back), 'Datasets');
  const body = el('div', { class: 'stack-lg' });
  add(root, el('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, back), body);
  replace(body, loading());

  const load = async () => {
    let run;
    try {
      run = await api(`/v1/eval-runs/${encodeURIComponent(id)}`, { signal: ctx.signal });
    } catch (err) {
      if (isAbort(err)) return;
      replace(body, errorBox(err, () => { replace(body, loading()); load(); }));
      return;
    }
    ctx.setTitle(`Run of ${run.eval_version_name}`);
    build(body, run, back, ctx);
  };
  load();
}

function build(body, first, back, ctx) {
  let run = first;
  const datasetHref = `#/datasets/${encodeURIComponent(run.dataset_id)}`;
  back.setAttribute('href', datasetHref);
  replace(back, icon(ICONS.back), 'Dataset');
  const datasetLink = el('a', { href: datasetHref, 'data-testid': 'run-dataset' }, 'the dataset');
  api(`/v1/datasets/${encodeURIComponent(run.dataset_id)}`, { signal: ctx.signal }).then((dataset) => {
    datasetLink.textContent = dataset.name;
    replace(back, icon(ICONS.back), dataset.name);
  }).catch(() => {});

  // Parts of the header a poll repaints; the rest (and the focus) stays.
  const statusSlot = el('span', {});
  const progressSlot = el('div', {});
  const meanSlot = el('span', { class: 'score-big', 'data-testid': 'run-mean' });
  const startedSlot = el('span', {});
  const finishedSlot = el('span', {});
  const actionsSlot = el('div', { class: 'page-actions' });
  const errorSlot = el('div', {});
  const liveNote = el('p', { class: 'muted small', 'data-testid': 'run-live', 'aria-live': 'polite' });

  const header = el('header', { class: 'trace-header' },
    el('div', { class: 'trace-title-row' },
      el('h1', { class: 'page-title', 'data-testid': 'run-title', tabindex: '-1' }, `Run of ${run.eval_version_name}`),
      statusSlot,
      el('span', { class: 'spacer' }),
      actionsSlot),
    el('div', { class: 'trace-id-row' },
      el('code', { class: 'mono', 'data-testid': 'run-id' }, run.id),
      copyButton(() => run.id, { label: 'Copy id' })),
    el('dl', { class: 'facts' },
      fact('Dataset', datasetLink),
      fact('Version', run.eval_version_name, { class: 'mono' }),
      fact('Progress', progressSlot),
      fact('Mean score', meanSlot),
      fact('Scheduled', timeEl(run.created_at)),
      fact('Started', startedSlot),
      fact('Finished', finishedSlot)),
    errorSlot,
    liveNote);

  let wasActive = null;
  const paint = () => {
    replace(statusSlot, runStatusBadge(run.status));
    replace(progressSlot, runProgress(run));
    meanSlot.textContent = fmtScore(run.mean_score);
    replace(startedSlot, timeEl(run.started_at));
    replace(finishedSlot, timeEl(run.completed_at));
    replace(errorSlot, run.error_message
      ? el('div', { class: 'error-block' }, textBlock(run.error_message, { testid: 'run-error', label: 'Why items failed' }))
      : null);
    liveNote.textContent = isActive(run) ? 'Running: this page follows its progress.' : '';
    const active = isActive(run);
    if (active === wasActive) return;
    wasActive = active;
    const exportLink = el('a', {
      href: `/v1/eval-runs/${encodeURIComponent(run.id)}/export`, class: 'btn', download: `eval-run-${run.id}.json`, 'data-testid': 'run-export',
    }, icon(ICONS.download), el('span', {}, 'Export JSON'));
    let cancel = null;
    if (active && canWrite()) {
      cancel = el('button', { type: 'button', class: 'btn btn-danger-ghost', 'data-testid': 'run-cancel' }, 'Cancel run');
      cancel.addEventListener('click', async () => {
        const cancelled = await cancelRun(run, cancel);
        if (cancelled) update(cancelled);
      });
    }
    replace(actionsSlot, exportLink, cancel);
  };

  const results = resultsSection(run, ctx);
  const compare = compareSection(run, ctx);
  const gate = gateSection(run, ctx);
  compare.onChoice((baseline, _chosen, others) => gate.setBaseline(baseline, others));

  let stopWatching = null;
  const update = (next) => {
    const finished = isActive(run) && !isActive(next);
    run = next;
    paint();
    gate.setRun(run);
    if (finished) {
      if (stopWatching) stopWatching();
      results.reload();
      compare.reload();
      toast(`The run ${run.status}${typeof run.mean_score === 'number' ? `: mean score ${fmtScore(run.mean_score)}` : ''}`,
        run.status === 'completed' ? 'success' : 'info');
    }
  };
  paint();
  gate.setRun(run);
  if (isActive(run)) {
    stopWatching = watchRun(run.id, {
      signal: ctx.signal,
      onUpdate: update,
      onError: (err) => { liveNote.textContent = `Could not check the run: ${errorText(err)}`; },
    });
  }
  replace(body, header, results.node, compare.node, gate.node);
}

// ---------------------------------------------------------------- results --

function resultsSection(run, ctx) {
  const listBody = el('div', {});
  const node = section('Results', el('p', { class: 'muted small' },
    'Each item\'s answer and its scores; an item\'s score is the mean of its scores.'), listBody);
  let page = 1;
  let data = null;
  let generation = 0;

  const paint = () => {
    const list = Array.isArray(data?.results) ? data.results : [];
    const scores = new Map();
    for (const s of Array.isArray(data?.items) ? data.items : []) {
      const key = s.item_id || `trace:${s.trace_id}`;
      if (!scores.has(key)) scores.set(key, []);
      scores.get(key).push(s);
    }
    if (!list.length) {
      replace(listBody, empty(isActive(run) ? 'No item has finished yet.' : 'This run has no results.',
        isActive(run) ? 'Results are shown when the run finishes.' : null));
      return;
    }
    const pages = Math.max(1, Math.ceil(list.length / RESULTS_PAGE));
    page = Math.min(page, pages);
    const shown = list.slice((page - 1) * RESULTS_PAGE, page * RESULTS_PAGE);
    replace(listBody,
      isActive(run) ? el('p', { class: 'notice' }, 'The run is still going: these are the items finished so far.') : null,
      el('ul', { class: 'item-list', 'data-testid': 'results-list' },
        shown.map((r) => resultItem(r, scores.get(r.item_id || `trace:${r.trace_id}`) || []))),
      pages > 1 ? pager({
        page, hasPrev: page > 1, hasNext: page < pages,
        onPrev: () => { page -= 1; paint(); },
        onNext: () => { page += 1; paint(); },
      }) : null);
  };

  const reload = async () => {
    const mine = ++generation;
    if (!data) replace(listBody, loading());
    try {
      const answer = await api(`/v1/eval-runs/${encodeURIComponent(run.id)}/export`, { signal: ctx.signal });
      if (mine !== generation) return;
      data = answer;
      run = answer.run || run;
      paint();
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(listBody, errorBox(err, reload));
    }
  };
  reload();
  return { node, reload };
}

function itemStatusBadge(status) {
  const kind = status === 'complete' ? 'ok' : status === 'failed' ? 'error' : status === 'running' ? 'info' : 'neutral';
  return badge(status || 'unknown', kind, { 'data-testid': 'result-status' });
}

function scoreLabelBadge(label) {
  if (!label) return null;
  const kind = label === 'pass' ? 'ok' : label === 'fail' ? 'error' : label === 'warn' ? 'warn' : 'neutral';
  return badge(label, kind);
}

function resultItem(r, scores) {
  return el('li', { class: 'item', 'data-testid': 'result-item', 'data-item-id': r.item_id || '', 'data-trace-id': r.trace_id, 'data-status': r.status },
    el('div', { class: 'item-head' },
      itemStatusBadge(r.status),
      el('span', { class: 'labelled' }, el('span', { class: 'muted small' }, 'label'),
        reviewLabelBadge(r.label, { title: 'Review label', 'data-testid': 'result-label' })),
      el('span', { class: 'score', 'data-testid': 'result-score' }, `score ${fmtScore(r.score)}`),
      el('span', { class: 'spacer' }),
      el('a', { href: `#/traces/${encodeURIComponent(r.trace_id)}`, class: 'mono small' }, `trace ${String(r.trace_id).slice(0, 8)}`)),
    el('div', { class: 'io-grid' },
      textBlock(r.input, { testid: 'result-input', label: 'Input' }),
      textBlock(r.output, { testid: 'result-output', label: 'Output' })),
    r.error ? el('div', { class: 'error-block' }, textBlock(r.error, { testid: 'result-error', label: 'Error' })) : null,
    scores.length
      ? el('ul', { class: 'score-list', 'data-testid': 'result-scores' }, scores.map((s) => el('li', { class: 'score-line', 'data-testid': 'result-score-line', 'data-metric': s.metric_name },
        el('div', { class: 'item-head' },
          el('strong', { class: 'mono' }, s.metric_name),
          scoreLabelBadge(s.label),
          el('span', { class: 'score' }, typeof s.score === 'number' ? `score ${fmtScore(s.score)}` : 'not scored'),
          el('span', { class: 'muted small' }, s.evaluator_type === 'llm' ? `judge ${s.judge_model || ''}`.trim() : 'rule')),
        s.reasoning ? el('p', { class: 'item-text', 'data-testid': 'result-reasoning' }, s.reasoning) : null)))
      : el('p', { class: 'muted small' }, 'No scores.'));
}

// ---------------------------------------------------------------- compare --

function compareSection(run, ctx) {
  const choice = el('select', { name: 'baseline', 'data-testid': 'compare-select', 'aria-label': 'Compare with', disabled: true },
    el('option', { value: '' }, 'Loading runs…'));
  const diffBody = el('div', { 'aria-live': 'polite' });
  const node = section('Compare with another run',
    el('p', { class: 'muted small' }, 'Pick a baseline run of the same dataset: items are paired, regressions first.'),
    el('div', { class: 'compare-pick' }, field('Baseline', choice)),
    diffBody);
  const listeners = [];
  let others = [];
  let generation = 0;

  const loadDiff = async () => {
    const baseline = choice.value;
    for (const listener of listeners) listener(baseline, others.find((r) => r.id === baseline));
    // The choice is kept in the address, so the comparison can be shared.
    const hash = `#/runs/${encodeURIComponent(run.id)}${baseline ? `?baseline=${encodeURIComponent(baseline)}` : ''}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
    const mine = ++generation;
    if (!baseline) {
      replace(diffBody);
      return;
    }
    replace(diffBody, loading('Comparing…'));
    try {
      const diff = await api(`/v1/eval-runs/${encodeURIComponent(run.id)}/diff`, { signal: ctx.signal, query: { baseline } });
      if (mine !== generation) return;
      replace(diffBody, diffView(diff, others.find((r) => r.id === baseline)));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(diffBody, errorBox(err, loadDiff));
    }
  };
  choice.addEventListener('change', loadDiff);

  const reload = async () => {
    try {
      const data = await api(`/v1/datasets/${encodeURIComponent(run.dataset_id)}/runs`, { signal: ctx.signal, query: { limit: COMPARE_RUNS } });
      others = (Array.isArray(data?.runs) ? data.runs : []).filter((r) => r.id !== run.id);
      const keep = choice.value || ctx.query?.get('baseline') || '';
      replace(choice,
        el('option', { value: '' }, others.length ? 'Choose a run…' : 'No other run of this dataset'),
        others.map((r) => el('option', { value: r.id }, runLabel(r))));
      choice.disabled = !others.length;
      choice.value = others.some((r) => r.id === keep) ? keep : '';
      for (const listener of listeners) listener(choice.value, others.find((r) => r.id === choice.value), others);
      if (choice.value) loadDiff();
    } catch (err) {
      if (isAbort(err)) return;
      replace(diffBody, errorBox(err, reload));
    }
  };
  reload();
  return { node, reload, onChoice: (listener) => listeners.push(listener) };
}

function diffView(diff, baseline) {
  const s = diff.summary || {};
  const chip = (label, value, testid, cls) => el('span', { class: ['chip', cls], 'data-testid': testid },
    el('span', { class: 'muted' }, `${label} `), el('strong', {}, value));
  const summary = el('div', { class: 'diff-summary', 'data-testid': 'diff-summary' },
    chip('Mean delta', fmtDelta(s.mean_delta), 'diff-mean-delta', deltaClass(s.mean_delta)),
    chip('Regressed', fmtInt(s.regressed_count), 'diff-regressed', s.regressed_count ? 'chip-bad' : null),
    chip('Improved', fmtInt(s.improved_count), 'diff-improved', s.improved_count ? 'chip-good' : null),
    chip('Unchanged', fmtInt(s.unchanged_count), 'diff-unchanged'),
    chip('Unpaired', fmtInt(s.unpaired_count), 'diff-unpaired'));
  const items = Array.isArray(diff.items) ? diff.items : [];
  const changeKind = { regressed: 'error', improved: 'ok', unchanged: 'neutral', unpaired: 'warn' };
  // The two runs side by side: each one's score above its rationale.
  const side = (score, rationale) => el('div', { class: 'diff-side' },
    el('span', { class: 'score' }, fmtScore(score)),
    el('div', { class: 'cell-pre muted' }, rationale || '—'));
  const rows = items.map((i) => el('tr', { 'data-testid': 'diff-row', 'data-change': i.change, 'data-trace-id': i.trace_id, 'data-item-id': i.item_id || '' },
    td(el('div', { class: 'diff-item' },
      el('div', { class: 'item-head' },
        badge(i.change, changeKind[i.change] || 'neutral', { 'data-testid': 'diff-change' }),
        reviewLabelBadge(i.label, { title: 'Review label' }),
        el('a', { href: `#/traces/${encodeURIComponent(i.trace_id)}`, class: 'mono small' }, String(i.trace_id).slice(0, 8))),
      i.input ? el('span', { class: 'clamp', title: i.input }, i.input) : null)),
    td(el('span', { class: deltaClass(i.delta), 'data-testid': 'diff-delta' }, fmtDelta(i.delta)), 'num'),
    td(side(i.baseline_score, i.baseline_rationale)),
    td(side(i.run_score, i.run_rationale))));
  const built = table({
    testid: 'diff-table', caption: 'Items of the two runs side by side', cls: 'diff-table',
    columns: [{ label: 'Item' }, { label: 'Delta', class: 'num' }, { label: 'Baseline: score and rationale' }, { label: 'This run: score and rationale' }],
    rows,
  });
  return el('div', { class: 'stack' },
    baseline ? el('p', { class: 'muted small' }, 'Baseline: ', el('a', { href: `#/runs/${encodeURIComponent(baseline.id)}` }, runLabel(baseline)), '.') : null,
    summary,
    built.wrap,
    items.length ? null : empty('Neither run scored an item.'));
}

// ------------------------------------------------------------------- gate --

function gateSection(first, ctx) {
  let run = first;
  const floor = el('input', { type: 'number', name: 'score_floor', min: '0', max: '1', step: '0.01', placeholder: 'none', 'data-testid': 'gate-floor' });
  const tolerance = el('input', { type: 'number', name: 'delta_tolerance', min: '0', max: '1', step: '0.01', placeholder: '0', 'data-testid': 'gate-tolerance' });
  const onFail = select({ name: 'on_fail', 'data-testid': 'gate-on-fail' },
    [{ value: 'block', label: 'Block the release' }, { value: 'warn', label: 'Warn only' }], 'block');
  const baseline = el('select', { name: 'baseline_run_id', 'data-testid': 'gate-baseline' }, el('option', { value: '' }, 'No baseline'));
  const submit = el('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'gate-submit' }, 'Decide');
  const hint = el('p', { class: 'muted small', 'data-testid': 'gate-hint' });
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true, 'data-testid': 'gate-error' });
  const result = el('div', { 'aria-live': 'polite' });
  const form = el('form', { class: 'stack form-card', 'data-testid': 'gate-form' },
    el('div', { class: 'form-grid' },
      field('Score floor', floor, 'The lowest mean score that passes, 0 to 1.'),
      field('Delta tolerance', tolerance, 'How far below the baseline\'s mean it may fall, 0 to 1.'),
      field('Baseline', baseline, 'A run of the same dataset to compare with.'),
      field('When the policy fails', onFail)),
    hint, error, el('div', {}, submit));
  const node = section('CI gate',
    el('p', { class: 'muted small' }, 'The decision POST /v1/ci/gate gives a pipeline for this run: pass, or the policy\'s warn or block, with the reason.'),
    form, result);

  const paintHint = () => {
    const active = isActive(run);
    submit.disabled = active;
    hint.textContent = active ? 'The run is still going; the gate decides once it has finished.' : '';
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const fail = (text) => { error.textContent = text; error.hidden = false; };
    const policy = { on_fail: onFail.value };
    for (const [input, key, name] of [[floor, 'score_floor', 'Score floor'], [tolerance, 'delta_tolerance', 'Delta tolerance']]) {
      if (input.value.trim() === '') continue;
      const value = Number(input.value);
      if (!Number.isFinite(value) || value < 0 || value > 1) return fail(`${name} must be a number from 0 to 1.`);
      policy[key] = value;
    }
    const body = { dataset_id: run.dataset_id, run_id: run.id, policy };
    if (baseline.value) body.baseline_run_id = baseline.value;
    try {
      const decision = await busy(submit, () => api('/v1/ci/gate', { method: 'POST', body }));
      replace(result, gateResult(decision, body));
    } catch (err) {
      fail(errorText(err));
    }
    return undefined;
  });

  paintHint();
  return {
    node,
    setRun: (next) => { run = next; paintHint(); },
    /** Follows the comparison's choice; `others` (when given) fills the list. */
    setBaseline: (value, others) => {
      if (others) {
        const keep = baseline.value;
        replace(baseline, el('option', { value: '' }, 'No baseline'), others.map((r) => el('option', { value: r.id }, runLabel(r))));
        baseline.value = keep;
      }
      if (value !== undefined && [...baseline.options].some((o) => o.value === value)) baseline.value = value;
    },
  };
}

function gateResult(decision, request) {
  const kind = { pass: 'ok', warn: 'warn', block: 'error' }[decision.decision] || 'neutral';
  return el('div', { class: `gate-result gate-${kind}`, 'data-testid': 'gate-result', 'data-decision': decision.decision },
    el('div', { class: 'item-head' },
      badge(decision.decision, kind, { 'data-testid': 'gate-decision' }),
      el('span', { class: 'score' }, `mean score ${fmtScore(decision.mean_score)}`),
      typeof decision.mean_delta === 'number'
        ? el('span', { class: deltaClass(decision.mean_delta) }, `delta ${fmtDelta(decision.mean_delta)}`) : null),
    el('p', { class: 'item-text', 'data-testid': 'gate-reason' }, decision.reason || ''),
    el('details', { class: 'advanced' },
      el('summary', {}, 'The same request from a pipeline'),
      el('div', { class: 'stack' },
        el('pre', { class: 'code', 'data-testid': 'gate-request' }, `POST /v1/ci/gate\n${JSON.stringify(request, null, 2)}`),
        el('div', {}, copyButton(() => JSON.stringify(request), { label: 'Copy body' })),
        decision.run_url ? el('p', { class: 'muted small' }, 'It answers with this page\'s address: ', el('code', { 'data-testid': 'gate-run-url' }, decision.run_url)) : null)));
}
