// Datasets: the organisation's sets of hard cases, a form to create one
// (its project's evaluation rules score its runs), and deletion.

import { el, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { state, canWrite, projectName, projectOrFirst, refreshProjects, fillProjectSelect } from '../state.js';
import { loading, errorBox, empty, pageHeader, table, td, timeEl, field, select, busy, toast, toastError, section, linkRow } from '../ui.js';
import { fmtInt } from '../format.js';
import { confirmDelete } from './dataset.js';

export function render(root, ctx) {
  const body = el('div', { class: 'list-body' });
  const createBox = el('div', {});
  add(root, pageHeader('Datasets'),
    el('p', { class: 'muted page-sub' }, 'Hard cases collected from traces, labelled pass or fail, and run against versions of a prompt or model. Add a trace from its page.'),
    createBox, section('All datasets', body));

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    if (!body.firstChild) replace(body, loading());
    try {
      const data = await api('/v1/datasets', { signal: ctx.signal });
      if (mine !== generation) return;
      const list = Array.isArray(data?.datasets) ? data.datasets : [];
      replace(body, datasetsTable(list, load),
        list.length ? null : empty('No datasets yet.', canWrite() ? 'Create one above, then add traces to it from their pages.' : null));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };

  if (canWrite()) createBox.appendChild(createForm(load));
  load();
}

function createForm(reload) {
  const name = el('input', { type: 'text', name: 'name', required: true, maxlength: '200', placeholder: 'e.g. refund questions', autocomplete: 'off' });
  const description = el('input', { type: 'text', name: 'description', maxlength: '2000', placeholder: 'What the cases have in common (optional)', autocomplete: 'off' });
  const project = select({ name: 'project', required: true }, state.projects.map((p) => ({ value: p.id, label: p.name })), projectOrFirst());
  refreshProjects().then(() => fillProjectSelect(project)).catch(() => {});
  const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Create dataset');
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true });
  const form = el('form', { class: 'stack form-card', 'data-testid': 'dataset-create' },
    el('h3', { class: 'form-title' }, 'New dataset'),
    el('div', { class: 'form-grid' },
      field('Name', name, 'Unique in the organisation.'),
      field('Description', description),
      field('Project', project, 'Its evaluation rules score the dataset\'s runs.')),
    error,
    el('div', {}, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    if (!name.value.trim()) return;
    const body = { name: name.value.trim() };
    if (description.value.trim()) body.description = description.value.trim();
    if (project.value) body.project_id = project.value;
    try {
      const created = await busy(submit, () => api('/v1/datasets', { method: 'POST', body }));
      name.value = '';
      description.value = '';
      toast(`Dataset ${created?.name || body.name} created`, 'success');
      reload();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });
  return form;
}

function datasetsTable(list, reload) {
  const writable = canWrite();
  const rows = list.map((d) => {
    const href = `#/datasets/${encodeURIComponent(d.id)}`;
    let remove = null;
    if (writable) {
      remove = el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'dataset-delete', 'aria-label': `Delete ${d.name}` }, 'Delete');
      remove.addEventListener('click', async () => {
        if (!(await confirmDelete(d))) return;
        try {
          await busy(remove, () => api(`/v1/datasets/${encodeURIComponent(d.id)}`, { method: 'DELETE' }));
          toast(`Dataset ${d.name} deleted`, 'success');
          reload();
        } catch (err) {
          toastError(err);
        }
      });
    }
    const tr = el('tr', { 'data-testid': 'dataset-row', 'data-dataset-id': d.id, 'data-dataset-name': d.name },
      td(el('div', { class: 'cell-name' },
        el('a', { href, tabindex: '-1', class: 'trace-link' }, d.name),
        d.description ? el('span', { class: 'muted small clamp' }, d.description) : null)),
      td(fmtInt(d.item_count), 'num'),
      td(projectName(d.project_id) || el('span', { class: 'mono small' }, d.project_id)),
      td(timeEl(d.updated_at), 'nowrap'),
      td(timeEl(d.created_at), 'nowrap'),
      td(remove ? el('div', { class: 'row-actions' }, remove) : null));
    return linkRow(tr, href);
  });
  return table({
    testid: 'datasets-table', caption: 'Datasets',
    columns: [{ label: 'Name' }, { label: 'Items', class: 'num' }, { label: 'Rules from' }, { label: 'Updated' }, { label: 'Created' }, { label: '' }],
    rows,
  }).wrap;
}
