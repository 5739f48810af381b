// One dataset: its items (label filter, cursor paging, an inline label
// toggle, removal, export), its versions (list and a form), and its runs
// (start one against a version, follow its progress, cancel it).

import { el, icon, ICONS, replace, add } from '../dom.js';
import { api, isAbort, errorText, url } from '../api.js';
import { canWrite, projectName } from '../state.js';
import { loading, errorBox, empty, timeEl, badge, field, select, busy, toast, toastError, confirmModal, table, td, pager, section, linkRow, copyButton } from '../ui.js';
import { fmtInt, fmtScore } from '../format.js';
import { isActive, runStatusBadge, runProgress, watchRun, cancelRun } from './run.js';

const ITEMS_PAGE = 50;
const RUNS_PAGE = 20;
const LABELS = [
  { value: 'pass', label: 'Pass' },
  { value: 'fail', label: 'Fail' },
  { value: 'unlabeled', label: 'Unlabeled' },
];

export function render(root, ctx) {
  const id = ctx.id;
  const path = `/v1/datasets/${encodeURIComponent(id)}`;
  const head = el('div', { class: 'detail-head' });
  const itemsBody = el('div', { class: 'list-body' });
  const versionsBody = el('div', {});
  const runsBody = el('div', { class: 'list-body' });
  const writable = canWrite();

  // ------------------------------------------------------------- header --
  const filter = select({ 'data-testid': 'items-filter', 'aria-label': 'Label' },
    [{ value: '', label: 'Every label' }, ...LABELS], '');
  const exportCsv = el('a', { class: 'btn', 'data-testid': 'export-csv', href: '#' }, icon(ICONS.download), el('span', {}, 'CSV'));
  const exportJsonl = el('a', { class: 'btn', 'data-testid': 'export-jsonl', href: '#' }, icon(ICONS.download), el('span', {}, 'JSONL'));
  const paintExport = () => {
    // The export follows the label filter: what is listed is what is saved.
    for (const [link, format] of [[exportCsv, 'csv'], [exportJsonl, 'jsonl']]) {
      link.setAttribute('href', url(`${path}/export`, { format, label: filter.value }));
      link.setAttribute('download', `dataset-${id}${filter.value ? `-${filter.value}` : ''}.${format}`);
      link.title = `Export ${filter.value ? `the ${filter.value} items` : 'every item'} as ${format.toUpperCase()}`;
    }
  };
  paintExport();

  let dataset = null;
  const loadHead = async () => {
    try {
      dataset = await api(path, { signal: ctx.signal });
      ctx.setTitle(dataset.name);
      replace(head, header(dataset, { path, writable }));
    } catch (err) {
      if (isAbort(err)) return;
      // A dataset that is not there has no items, versions or runs to show.
      if (err.status === 404) replace(root, crumbs, errorBox(err));
      else replace(head, errorBox(err, loadHead));
    }
  };

  const crumbs = el('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
    el('a', { href: '#/datasets', class: 'crumb-back' }, icon(ICONS.back), 'Datasets'));
  add(root,
    crumbs,
    head,
    section('Items',
      el('div', { class: 'toolbar filters' }, filter,
        el('span', { class: 'spacer' }),
        el('span', { class: 'muted small' }, 'Export'), exportCsv, exportJsonl),
      itemsBody),
    section('Versions',
      el('p', { class: 'muted small' }, 'A version is the configuration a run is made against; it never changes. Without a model, each item\'s own output is scored; without a judge model, only the project\'s evaluation rules score.'),
      versionsBody),
    section('Runs', runsBody));
  replace(head, loading());

  // -------------------------------------------------------------- items --
  let cursors = [null];
  let itemsGen = 0;
  const loadItems = async () => {
    const mine = ++itemsGen;
    replace(itemsBody, loading());
    try {
      const data = await api(`${path}/items`, {
        signal: ctx.signal,
        query: { limit: ITEMS_PAGE, cursor: cursors[cursors.length - 1], label: filter.value },
      });
      if (mine !== itemsGen) return;
      const items = Array.isArray(data?.items) ? data.items : [];
      const rows = items.map((item) => itemRow(item, { path, writable, removed: () => { loadItems(); loadHead(); } }));
      const built = table({
        testid: 'items-table', caption: 'Items',
        columns: [{ label: 'Added' }, { label: 'Trace' }, { label: 'Input' }, { label: 'Expected output' }, { label: 'Label' }, { label: '' }],
        rows,
      });
      const page = cursors.length;
      replace(itemsBody, built.wrap,
        items.length ? null : (filter.value
          ? empty(`No ${filter.value} items.`, 'Pick another label, or every label.')
          : empty('No items yet.', 'Open a trace and use "Add to dataset" to collect it here.')),
        pager({
          page,
          hasPrev: page > 1,
          hasNext: !!data?.has_more && !!data?.next_cursor,
          onPrev: () => { cursors.pop(); loadItems(); },
          onNext: () => { cursors.push(data.next_cursor); loadItems(); },
        }));
    } catch (err) {
      if (isAbort(err) || mine !== itemsGen) return;
      replace(itemsBody, errorBox(err, loadItems));
    }
  };
  filter.addEventListener('change', () => {
    cursors = [null];
    paintExport();
    loadItems();
  });

  // ----------------------------------------------------------- versions --
  let versions = [];
  const versionsListeners = [];
  let versionsGen = 0;
  const loadVersions = async () => {
    const mine = ++versionsGen;
    if (!versionsBody.firstChild) replace(versionsBody, loading());
    try {
      const data = await api(`${path}/versions`, { signal: ctx.signal });
      if (mine !== versionsGen) return;
      versions = Array.isArray(data?.versions) ? data.versions : [];
      replace(versionsBody, versionsTable(versions), writable ? versionForm(path, loadVersions) : null);
      for (const listener of versionsListeners) listener(versions);
    } catch (err) {
      if (isAbort(err) || mine !== versionsGen) return;
      replace(versionsBody, errorBox(err, loadVersions));
    }
  };

  // --------------------------------------------------------------- runs --
  const runsList = el('div', {});
  let offset = 0;
  let runsGen = 0;
  // Polls of the runs shown that are still going, stopped on a reload.
  let watching = [];
  const stopWatching = () => {
    for (const stop of watching) stop();
    watching = [];
  };
  const loadRuns = async () => {
    const mine = ++runsGen;
    if (!runsList.firstChild) replace(runsList, loading());
    try {
      const data = await api(`${path}/runs`, { signal: ctx.signal, query: { limit: RUNS_PAGE + 1, offset } });
      if (mine !== runsGen) return;
      stopWatching();
      const all = Array.isArray(data?.runs) ? data.runs : [];
      const runs = all.slice(0, RUNS_PAGE);
      const rows = runs.map((run) => {
        const row = runRow(run, { writable });
        if (isActive(run)) {
          watching.push(watchRun(run.id, {
            signal: ctx.signal,
            onUpdate: (next) => {
              const finished = isActive(row.run) && !isActive(next);
              row.update(next);
              if (finished) {
                toast(`The run of ${next.eval_version_name} ${next.status}${typeof next.mean_score === 'number' ? `: mean score ${fmtScore(next.mean_score)}` : ''}`,
                  next.status === 'completed' ? 'success' : 'info');
              }
            },
          }));
        }
        return row.tr;
      });
      const built = table({
        testid: 'runs-table', caption: 'Runs',
        columns: [{ label: 'Scheduled' }, { label: 'Version' }, { label: 'Status' }, { label: 'Progress' }, { label: 'Mean score', class: 'num' }, { label: '' }],
        rows,
      });
      const page = Math.floor(offset / RUNS_PAGE) + 1;
      replace(runsList, built.wrap,
        runs.length ? null : empty('No runs yet.', writable ? 'Create a version above, then run it.' : null),
        pager({
          page,
          hasPrev: offset > 0,
          hasNext: all.length > RUNS_PAGE,
          onPrev: () => { offset = Math.max(0, offset - RUNS_PAGE); loadRuns(); },
          onNext: () => { offset += RUNS_PAGE; loadRuns(); },
        }));
    } catch (err) {
      if (isAbort(err) || mine !== runsGen) return;
      replace(runsList, errorBox(err, loadRuns));
    }
  };
  const started = () => {
    offset = 0;
    loadRuns();
  };
  if (writable) {
    const form = runForm(path, started);
    versionsListeners.push(form.setVersions);
    replace(runsBody, form.node, runsList);
  } else {
    replace(runsBody, runsList);
  }

  loadHead();
  loadItems();
  loadVersions();
  loadRuns();
  return stopWatching;
}

// ------------------------------------------------------------------ header --

function header(dataset, { path, writable }) {
  let remove = null;
  if (writable) {
    remove = el('button', { type: 'button', class: 'btn btn-danger-ghost', 'data-testid': 'dataset-delete' }, 'Delete dataset');
    remove.addEventListener('click', async () => {
      if (await confirmDelete(dataset)) {
        try {
          await busy(remove, () => api(path, { method: 'DELETE' }));
          toast(`Dataset ${dataset.name} deleted`, 'success');
          location.hash = '#/datasets';
        } catch (err) {
          toastError(err);
        }
      }
    });
  }
  return el('header', { class: 'trace-header' },
    el('div', { class: 'trace-title-row' },
      el('h1', { class: 'page-title', 'data-testid': 'dataset-name', tabindex: '-1' }, dataset.name),
      el('span', { class: 'spacer' }),
      remove),
    dataset.description ? el('p', { class: 'muted', 'data-testid': 'dataset-description' }, dataset.description) : null,
    el('div', { class: 'trace-id-row' },
      el('code', { class: 'mono' }, dataset.id),
      copyButton(() => dataset.id, { label: 'Copy id' })),
    el('dl', { class: 'facts' },
      el('div', { class: 'fact' }, el('dt', {}, 'Items'), el('dd', { 'data-testid': 'dataset-item-count' }, fmtInt(dataset.item_count))),
      el('div', { class: 'fact' }, el('dt', {}, 'Rules from'), el('dd', {}, projectName(dataset.project_id) || el('span', { class: 'mono small' }, dataset.project_id))),
      el('div', { class: 'fact' }, el('dt', {}, 'Created'), el('dd', {}, timeEl(dataset.created_at))),
      el('div', { class: 'fact' }, el('dt', {}, 'Updated'), el('dd', {}, timeEl(dataset.updated_at)))));
}

/** Asks before a dataset goes, saying what goes with it. */
export function confirmDelete(dataset) {
  return confirmModal({
    title: `Delete the dataset "${dataset.name}"?`,
    message: `Its ${fmtInt(dataset.item_count)} items, its versions and every run of it are deleted with it. The traces stay.`,
    confirmLabel: 'Delete dataset', danger: true,
  });
}

// ------------------------------------------------------------------- items --

function itemRow(item, { path, writable, removed }) {
  const itemPath = `${path}/items/${encodeURIComponent(item.id)}`;
  const short = String(item.trace_id).slice(0, 8);
  const group = el('div', { class: 'seg', role: 'group', 'aria-label': `Label of the item from trace ${short}`, 'data-testid': 'item-label', 'data-label': item.label || 'unlabeled' });
  const buttons = LABELS.map((l) => el('button', {
    type: 'button', class: `seg-btn seg-${l.value}`, 'data-testid': `item-label-${l.value}`, 'data-value': l.value,
    'aria-pressed': String((item.label || 'unlabeled') === l.value), disabled: !writable,
  }, l.label));
  const paint = () => {
    const current = item.label || 'unlabeled';
    group.dataset.label = current;
    for (const b of buttons) b.setAttribute('aria-pressed', String(b.dataset.value === current));
  };
  // Busy without disabling: a disabled button would drop the keyboard's focus.
  let pending = false;
  for (const button of buttons) {
    button.addEventListener('click', async () => {
      const value = button.dataset.value;
      if (pending || (item.label || 'unlabeled') === value) return;
      pending = true;
      group.setAttribute('aria-busy', 'true');
      try {
        const changed = await api(itemPath, { method: 'PATCH', body: { label: value === 'unlabeled' ? null : value } });
        item.label = changed?.label ?? null;
        paint();
      } catch (err) {
        toastError(err);
      } finally {
        pending = false;
        group.removeAttribute('aria-busy');
      }
    });
  }
  add(group, buttons);

  let remove = null;
  if (writable) {
    remove = el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'item-remove', 'aria-label': `Remove the item from trace ${short}` }, 'Remove');
    remove.addEventListener('click', async () => {
      const yes = await confirmModal({
        title: 'Remove this item?',
        message: 'The trace stays, and runs made before keep its results. It can be added again from its trace.',
        confirmLabel: 'Remove item', danger: true,
      });
      if (!yes) return;
      try {
        await busy(remove, () => api(itemPath, { method: 'DELETE' }));
        toast('Item removed', 'success');
        removed();
      } catch (err) {
        toastError(err);
      }
    });
  }
  const clip = (text) => (text ? el('span', { class: 'clamp cell-clip', title: text.length > 600 ? `${text.slice(0, 600)}…` : text }, text) : el('span', { class: 'muted' }, '—'));
  return el('tr', { 'data-testid': 'item-row', 'data-item-id': item.id, 'data-trace-id': item.trace_id },
    td(timeEl(item.created_at), 'nowrap'),
    td(el('div', { class: 'cell-name' },
      el('a', { href: `#/traces/${encodeURIComponent(item.trace_id)}`, class: 'mono small' }, short),
      item.span_id ? el('span', { class: 'mono muted small' }, `span ${item.span_id}`) : null)),
    td(clip(item.input)),
    td(clip(item.expected_output)),
    td(group),
    td(remove));
}

// ---------------------------------------------------------------- versions --

function versionsTable(versions) {
  const rows = versions.map((v) => el('tr', { 'data-testid': 'version-row', 'data-version-id': v.id, 'data-version-name': v.name },
    td(el('span', { class: 'cell-text' }, v.name)),
    td(v.model ? el('span', { class: 'cell-code' }, v.model) : el('span', { class: 'muted' }, 'the item\'s own output'), 'mono small'),
    td(v.judge_model ? el('span', { class: 'cell-code' }, v.judge_model) : el('span', { class: 'muted' }, 'rules only'), 'mono small'),
    td(v.system_prompt ? el('span', { class: 'clamp', title: v.system_prompt }, v.system_prompt) : el('span', { class: 'muted' }, '—')),
    td(timeEl(v.created_at), 'nowrap')));
  const built = table({
    testid: 'versions-table', caption: 'Versions',
    columns: [{ label: 'Name' }, { label: 'Model' }, { label: 'Judge model' }, { label: 'System prompt' }, { label: 'Created' }],
    rows,
  });
  return el('div', {}, built.wrap, versions.length ? null : empty('No versions yet.', canWrite() ? 'Create one below to run the dataset.' : null));
}

function versionForm(path, reload) {
  const name = el('input', { type: 'text', name: 'name', required: true, maxlength: '200', placeholder: 'e.g. v2-shorter-prompt', autocomplete: 'off' });
  const model = el('input', { type: 'text', name: 'model', maxlength: '200', placeholder: 'none: score each item\'s own output', spellcheck: 'false', autocomplete: 'off' });
  const judge = el('input', { type: 'text', name: 'judge_model', maxlength: '200', placeholder: 'none: the project\'s rules only', spellcheck: 'false', autocomplete: 'off' });
  const prompt = el('textarea', { name: 'system_prompt', rows: '3', placeholder: 'Sent before each item\'s input when the version names a model (optional)' });
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Create version');
  const form = el('form', { class: 'stack form-card', 'data-testid': 'version-create' },
    el('h3', { class: 'form-title' }, 'New version'),
    el('div', { class: 'form-grid' },
      field('Name', name, 'Unique in the dataset.'),
      field('Model', model, 'Answers each item on the model endpoint.'),
      field('Judge model', judge, 'Scores each answer on the judge endpoint.')),
    field('System prompt', prompt),
    error,
    el('div', {}, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    if (!name.value.trim()) return;
    const body = { name: name.value.trim() };
    if (prompt.value.trim()) body.system_prompt = prompt.value;
    if (model.value.trim()) body.model = model.value.trim();
    if (judge.value.trim()) body.judge_model = judge.value.trim();
    try {
      const created = await busy(submit, () => api(`${path}/versions`, { method: 'POST', body }));
      toast(`Version ${created?.name || body.name} created`, 'success');
      reload();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });
  return form;
}

// -------------------------------------------------------------------- runs --

function runForm(path, started) {
  const version = el('select', { name: 'eval_version_id', required: true, 'aria-label': 'Version', disabled: true },
    el('option', { value: '' }, 'Loading versions…'));
  const submit = el('button', { type: 'submit', class: 'btn btn-primary', disabled: true }, icon(ICONS.play), el('span', {}, 'Run'));
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true, 'data-testid': 'run-create-error' });
  const form = el('form', { class: 'inline-form form-card', 'data-testid': 'run-create' },
    field('Version to run', version), submit,
    el('p', { class: 'muted small form-note' }, 'Every item is run and scored; each counts as one evaluation of the plan.'));
  const node = el('div', {}, form, error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    if (!version.value) return;
    try {
      const run = await busy(submit, () => api(`${path}/runs`, { method: 'POST', body: { eval_version_id: version.value } }));
      toast(`Run of ${run?.eval_version_name || 'the version'} started`, 'success');
      started(run);
    } catch (err) {
      replace(error, errorText(err),
        err.code === 'nothing_to_score' ? [' ', el('a', { href: '#/evals' }, 'Add a rule on the Evaluations page.')] : null);
      error.hidden = false;
    }
  });
  const setVersions = (versions) => {
    const keep = version.value;
    if (!versions.length) {
      replace(version, el('option', { value: '' }, 'No version yet'));
      version.disabled = true;
      submit.disabled = true;
      return;
    }
    replace(version, versions.map((v) => el('option', { value: v.id }, v.name)));
    // The newest version (listed first) unless one was picked.
    version.value = versions.some((v) => v.id === keep) ? keep : versions[0].id;
    version.disabled = false;
    submit.disabled = false;
  };
  return { node, setVersions };
}

function runRow(first, { writable }) {
  const href = `#/runs/${encodeURIComponent(first.id)}`;
  const statusCell = td(null);
  const progressCell = td(null);
  const meanCell = td(null, 'num');
  const actionsCell = td(null);
  const tr = el('tr', { 'data-testid': 'run-row', 'data-run-id': first.id },
    td(timeEl(first.created_at), 'nowrap'),
    td(el('a', { href, tabindex: '-1', class: 'cell-text' }, first.eval_version_name)),
    statusCell, progressCell, meanCell, actionsCell);
  const row = { tr, run: first };
  let wasActive = null;
  row.update = (run) => {
    row.run = run;
    tr.dataset.status = run.status;
    replace(statusCell, runStatusBadge(run.status));
    replace(progressCell, runProgress(run));
    replace(meanCell, el('span', { 'data-testid': 'run-mean' }, fmtScore(run.mean_score)));
    const active = isActive(run);
    if (active === wasActive) return;
    wasActive = active;
    if (active && writable) {
      const cancel = el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'run-cancel' }, 'Cancel');
      cancel.addEventListener('click', async () => {
        const cancelled = await cancelRun(row.run, cancel);
        if (cancelled) row.update(cancelled);
      });
      replace(actionsCell, el('div', { class: 'row-actions' }, cancel));
    } else {
      replace(actionsCell, run.error_message ? badge('items failed', 'error', { title: run.error_message }) : null);
    }
  };
  row.update(first);
  linkRow(tr, href);
  return row;
}
