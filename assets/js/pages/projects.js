// Projects: create, rename, retention override, archive and unarchive.

import { el, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { canWrite, isOwner } from '../state.js';
import { loading, errorBox, empty, pageHeader, table, td, timeEl, badge, field, busy, toast, section } from '../ui.js';

function projectsChanged() {
  window.dispatchEvent(new CustomEvent('trulayer:projects-changed'));
}

export function render(root, ctx) {
  const body = el('div', { class: 'list-body' });
  // Errors of actions (rename, archive…) in the page, beside the toast.
  const actionError = el('div', { class: 'action-error' });
  const createBox = el('div', {});
  add(root, pageHeader('Projects'),
    el('p', { class: 'muted page-sub' }, 'Traces, keys and rules belong to a project. An archived project refuses new traces; the last active project cannot be archived.'),
    actionError, createBox, section('All projects', body));

  const showError = (err) => {
    const text = errorText(err);
    replace(actionError, el('div', { class: 'state state-error', 'data-testid': 'error', role: 'alert' },
      el('p', { class: 'state-title' }, text),
      el('button', { type: 'button', class: 'btn btn-small', on: { click: () => replace(actionError) } }, 'Dismiss')));
    toast(text, 'error');
  };
  const clearError = () => replace(actionError);

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    if (!body.firstChild) replace(body, loading());
    try {
      const data = await api('/v1/projects', { signal: ctx.signal, query: { include_archived: 'true' } });
      if (mine !== generation) return;
      const list = Array.isArray(data?.projects) ? data.projects : [];
      list.sort((a, b) => Number(a.archived) - Number(b.archived) || String(a.name).localeCompare(String(b.name)));
      replace(body, projectsTable(list, { reload: load, showError, clearError }),
        list.length ? null : empty('No projects yet.'));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };

  if (canWrite()) {
    const name = el('input', { type: 'text', name: 'name', required: true, maxlength: '200', placeholder: 'e.g. rag-app', autocomplete: 'off' });
    const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Create project');
    const form = el('form', { class: 'inline-form form-card', 'data-testid': 'project-create' }, field('New project', name), submit);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!name.value.trim()) return;
      try {
        const created = await busy(submit, () => api('/v1/projects', { method: 'POST', body: { name: name.value.trim() } }));
        name.value = '';
        clearError();
        toast(`Project ${created?.name || ''} created`, 'success');
        projectsChanged();
        load();
      } catch (err) {
        showError(err);
      }
    });
    createBox.appendChild(form);
  }
  load();
}

function projectsTable(list, { reload, showError, clearError }) {
  const writable = canWrite();
  const owner = isOwner();
  const rows = list.map((p) => {
    const nameCell = td(el('span', { class: 'project-name cell-text', 'data-testid': 'project-name' }, p.name));
    const act = async (button, task, message) => {
      try {
        await busy(button, task);
        clearError();
        toast(message, 'success');
        projectsChanged();
        reload();
      } catch (err) {
        showError(err);
      }
    };

    const rename = el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'project-rename', disabled: !writable }, 'Rename');
    rename.addEventListener('click', () => {
      const input = el('input', { type: 'text', name: 'name', value: p.name, maxlength: '200', 'aria-label': 'Project name', 'data-testid': 'project-rename-input' });
      const save = el('button', { type: 'submit', class: 'btn btn-small btn-primary', 'data-testid': 'project-rename-save' }, 'Save');
      const cancel = el('button', { type: 'button', class: 'btn btn-small', on: { click: () => reload() } }, 'Cancel');
      const form = el('form', { class: 'inline-edit', 'data-testid': 'project-rename-form' }, input, save, cancel);
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        const value = input.value.trim();
        if (!value || value === p.name) { reload(); return; }
        act(save, () => api(`/v1/projects/${encodeURIComponent(p.id)}`, { method: 'PATCH', body: { name: value } }), `Renamed to ${value}`);
      });
      form.addEventListener('keydown', (e) => { if (e.key === 'Escape') reload(); });
      replace(nameCell, form);
      input.focus();
      input.select();
    });

    const retention = el('input', {
      type: 'number', name: 'retention_days', min: '1', max: '3650', step: '1', placeholder: 'default',
      value: p.retention_days_override ?? '', 'data-testid': 'project-retention', 'aria-label': `Retention days for ${p.name}`, disabled: !writable,
    });
    const saveRetention = el('button', { type: 'submit', class: 'btn btn-small', 'data-testid': 'project-retention-save', disabled: !writable }, 'Set');
    const retentionForm = el('form', { class: 'inline-edit' }, retention, saveRetention);
    retentionForm.addEventListener('submit', (e) => {
      e.preventDefault();
      const raw = retention.value.trim();
      const days = raw === '' ? null : Number(raw);
      if (days !== null && (!Number.isInteger(days) || days < 1 || days > 3650)) {
        showError(new Error('Retention must be a whole number of days from 1 to 3650, or empty for the plan default.'));
        return;
      }
      act(saveRetention, () => api(`/v1/projects/${encodeURIComponent(p.id)}`, { method: 'PATCH', body: { retention_days_override: days } }),
        days === null ? `${p.name} keeps traces for the plan's default` : `${p.name} keeps traces for ${days} days`);
    });

    const archiveButton = p.archived
      ? el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'project-unarchive', disabled: !owner, title: owner ? null : 'Only owners can unarchive' }, 'Unarchive')
      : el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'project-archive', disabled: !owner, title: owner ? null : 'Only owners can archive' }, 'Archive');
    archiveButton.addEventListener('click', () => {
      const verb = p.archived ? 'unarchive' : 'archive';
      act(archiveButton, () => api(`/v1/projects/${encodeURIComponent(p.id)}/${verb}`, { method: 'POST' }),
        `${p.name} ${p.archived ? 'is active again' : 'archived'}`);
    });

    return el('tr', { 'data-testid': 'project-row', 'data-project-name': p.name, 'data-project-id': p.id, class: p.archived ? 'is-archived' : null },
      nameCell,
      td(p.slug || '—', 'mono small'),
      td(p.archived ? badge('archived', 'neutral', { 'data-testid': 'project-status' }) : badge('active', 'ok', { 'data-testid': 'project-status' })),
      td(retentionForm),
      td(timeEl(p.created_at), 'nowrap'),
      td(el('code', { class: 'small' }, p.id)),
      td(writable ? el('div', { class: 'row-actions' }, rename, archiveButton) : el('span', { class: 'muted small' }, 'read-only')));
  });
  return table({
    testid: 'projects-table', caption: 'Projects',
    columns: [{ label: 'Name' }, { label: 'Slug' }, { label: 'Status' }, { label: 'Retention (days)' }, { label: 'Created' }, { label: 'Id' }, { label: '' }],
    rows,
  }).wrap;
}
