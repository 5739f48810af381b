// API keys: create (the plaintext shown once), rotate and revoke.

import { el, icon, ICONS, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { state, canWrite, isOwner, projectName, projectOrFirst, refreshProjects, fillProjectSelect } from '../state.js';
import { loading, errorBox, empty, pageHeader, table, td, timeEl, badge, field, select, busy, toast, toastError, confirmModal, copyButton, section } from '../ui.js';
import { fmtRelative, fmtDate, fmtTimeLong, parseTime } from '../format.js';

export function keyStatus(k) {
  if (k.revoked_at) return 'revoked';
  const expires = parseTime(k.expires_at);
  if (expires && expires.getTime() <= Date.now()) return 'expired';
  return 'active';
}

export function render(root, ctx) {
  const secretBox = el('div', { class: 'secret-slot', 'aria-live': 'polite' });
  const body = el('div', { class: 'list-body' });
  const createBox = el('div', {});
  add(root, pageHeader('API keys'),
    el('p', { class: 'muted page-sub' }, 'Keys let SDKs and OpenTelemetry exporters send traces (ingest) and read them (query). The full key is shown only once.'),
    secretBox, createBox, section('Keys', body));

  const showSecret = (key, title) => {
    const dismiss = el('button', { type: 'button', class: 'btn', 'data-testid': 'key-dismiss' }, 'Done, I saved it');
    dismiss.addEventListener('click', () => replace(secretBox));
    replace(secretBox, el('div', { class: 'secret', role: 'status' },
      el('div', { class: 'secret-head' }, icon(ICONS.key), el('strong', {}, title)),
      el('p', { class: 'muted' }, 'Copy this key now: it will not be shown again.'),
      el('div', { class: 'secret-value' },
        el('code', { class: 'mono', 'data-testid': 'key-secret' }, key),
        copyButton(() => key, { testid: 'key-copy' })),
      el('div', {}, dismiss)));
  };

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    if (!body.firstChild) replace(body, loading());
    try {
      const data = await api('/v1/apikeys', { signal: ctx.signal });
      if (mine !== generation) return;
      const list = Array.isArray(data) ? data : [];
      const order = { active: 0, expired: 1, revoked: 2 };
      list.sort((a, b) => order[keyStatus(a)] - order[keyStatus(b)] || String(b.created_at).localeCompare(String(a.created_at)));
      replace(body, keysTable(list, { reload: load, showSecret, clearSecret: () => replace(secretBox) }), list.length ? null : empty('No API keys.', 'Create one to send traces.'));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };

  if (canWrite()) createBox.appendChild(createForm({ reload: load, showSecret }));
  load();
}

function createForm({ reload, showSecret }) {
  const name = el('input', { type: 'text', name: 'name', required: true, maxlength: '200', placeholder: 'e.g. production ingest', autocomplete: 'off' });
  const project = select({ name: 'project' }, state.projects.map((p) => ({ value: p.id, label: p.name })), projectOrFirst());
  // The list may have changed since the page started (another tab, the projects page).
  refreshProjects().then(() => fillProjectSelect(project)).catch(() => {});
  const scope = (value, label) => el('label', { class: 'check' }, el('input', { type: 'checkbox', name: 'scope', value }), label);
  const expires = el('input', { type: 'date', name: 'expires_at' });
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Create key');
  const form = el('form', { class: 'stack form-card', 'data-testid': 'key-create' },
    el('h3', { class: 'form-title' }, 'New key'),
    el('div', { class: 'form-grid' },
      field('Name', name),
      field('Project', project),
      el('fieldset', { class: 'field' }, el('legend', { class: 'field-label' }, 'Scopes'),
        el('div', { class: 'checks' }, scope('ingest', 'ingest (send traces)'), scope('query', 'query (read)')),
        el('span', { class: 'field-hint muted' }, 'None ticked: the key may do both.')),
      field('Expires (optional)', expires, 'At the end of that day, your time.')),
    error,
    el('div', {}, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    if (!name.value.trim()) {
      error.textContent = 'Give the key a name.';
      error.hidden = false;
      return;
    }
    const body = {
      name: name.value.trim(),
      scopes: [...form.querySelectorAll('input[name=scope]:checked')].map((c) => c.value),
    };
    if (project.value) body.project_id = project.value;
    if (expires.value) {
      const end = new Date(`${expires.value}T23:59:59`);
      if (Number.isNaN(end.getTime())) {
        error.textContent = 'The expiry date is not a date.';
        error.hidden = false;
        return;
      }
      body.expires_at = end.toISOString();
    }
    try {
      const created = await busy(submit, () => api('/v1/apikeys', { method: 'POST', body }));
      form.reset();
      project.value = projectOrFirst();
      showSecret(created.key, `Key "${created.name}" created`);
      reload();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });
  return form;
}

function keysTable(list, { reload, showSecret, clearSecret }) {
  const owner = isOwner();
  const rows = list.map((k) => {
    const status = keyStatus(k);
    const actions = el('div', { class: 'row-actions' });
    if (owner && status !== 'revoked') {
      const rotate = el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'key-rotate' }, 'Rotate');
      rotate.addEventListener('click', async () => {
        const yes = await confirmModal({
          title: `Rotate "${k.name}"?`,
          message: 'A new secret replaces the current one at once: clients using the old key stop working until they get the new one.',
          confirmLabel: 'Rotate key',
        });
        if (!yes) return;
        try {
          const rotated = await busy(rotate, () => api(`/v1/apikeys/${encodeURIComponent(k.id)}/rotate`, { method: 'POST' }));
          showSecret(rotated.key, `Key "${rotated.name || k.name}" rotated`);
          reload();
        } catch (err) {
          toastError(err);
        }
      });
      const revoke = el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'key-revoke' }, 'Revoke');
      revoke.addEventListener('click', async () => {
        const yes = await confirmModal({
          title: `Revoke "${k.name}"?`,
          message: 'Clients using this key are refused from now on. This cannot be undone.',
          confirmLabel: 'Revoke key', danger: true,
        });
        if (!yes) return;
        try {
          await busy(revoke, () => api(`/v1/apikeys/${encodeURIComponent(k.id)}`, { method: 'DELETE' }));
          toast(`Key "${k.name}" revoked`, 'success');
          // A secret still on screen may be this key's: it is dead now.
          clearSecret();
          reload();
        } catch (err) {
          toastError(err);
        }
      });
      actions.append(rotate, revoke);
    }
    const scopes = Array.isArray(k.scopes) && k.scopes.length
      ? k.scopes.map((s) => el('span', { class: 'chip' }, s))
      : el('span', { class: 'chip chip-muted' }, 'all');
    return el('tr', { 'data-testid': 'key-row', 'data-key-name': k.name, 'data-key-id': k.id, class: status !== 'active' ? 'is-inactive' : null },
      td(el('span', { class: 'cell-text' }, k.name)),
      td(el('code', { class: 'small' }, `${k.prefix || ''}…`), 'nowrap'),
      td(projectName(k.project_id) || el('span', { class: 'mono small' }, k.project_id || '—')),
      td(el('div', { class: 'chips' }, scopes)),
      td(timeEl(k.created_at), 'nowrap'),
      td(k.last_used_at ? el('time', { datetime: k.last_used_at, title: fmtTimeLong(k.last_used_at) }, fmtRelative(k.last_used_at)) : el('span', { class: 'muted' }, 'never'), 'nowrap'),
      td(k.expires_at ? el('time', { datetime: k.expires_at, title: fmtTimeLong(k.expires_at) }, fmtDate(k.expires_at)) : el('span', { class: 'muted' }, 'never'), 'nowrap'),
      td(badge(status, status === 'active' ? 'ok' : status === 'expired' ? 'warn' : 'neutral', { 'data-testid': 'key-status' })),
      td(actions));
  });
  return table({
    testid: 'keys-table', caption: 'API keys',
    columns: [{ label: 'Name' }, { label: 'Prefix' }, { label: 'Project' }, { label: 'Scopes' }, { label: 'Created' },
      { label: 'Last used' }, { label: 'Expires' }, { label: 'Status' }, { label: '' }],
    rows,
  }).wrap;
}
