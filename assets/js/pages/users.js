// Users of the organisation: create, change role, reset password, delete
// (owners); the API keys each created; leaving the organisation (anyone but
// its only owner). One's own password is changed from the sidebar.

import { el, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { state, isOwner } from '../state.js';
import { loading, errorBox, empty, pageHeader, table, td, timeEl, badge, field, select, busy, toast, toastError, confirmModal, section, formDialog } from '../ui.js';

const ROLES = [
  { value: 'owner', label: 'Owner' },
  { value: 'member', label: 'Member' },
  { value: 'viewer', label: 'Viewer' },
];

export function render(root, ctx) {
  const owner = isOwner();
  const body = el('div', { class: 'list-body' });
  const createBox = el('div', {});
  add(root, pageHeader('Users'),
    el('p', { class: 'muted page-sub' }, 'Owners manage users, keys and projects; members send and label data; viewers only read (and may read the audit log).'),
    owner ? null : el('p', { class: 'notice' }, 'Only owners can change users.'),
    createBox, section('Members of the organisation', body), leaveSection());

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    if (!body.firstChild) replace(body, loading());
    try {
      const data = await api('/v1/users', { signal: ctx.signal });
      if (mine !== generation) return;
      const list = Array.isArray(data?.users) ? data.users : [];
      list.sort((a, b) => String(a.email).localeCompare(String(b.email)));
      replace(body, usersTable(list, load), list.length ? null : empty('No users.'));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };
  if (owner) createBox.appendChild(createForm(load));
  load();
}

function createForm(reload) {
  const email = el('input', { type: 'email', name: 'email', required: true, autocomplete: 'off', placeholder: 'name@example.com' });
  const password = el('input', { type: 'password', name: 'password', required: true, minlength: '8', autocomplete: 'new-password' });
  const role = select({ name: 'role' }, ROLES, 'member');
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Add user');
  const form = el('form', { class: 'stack form-card', 'data-testid': 'user-create' },
    el('h3', { class: 'form-title' }, 'New user'),
    el('div', { class: 'form-grid' },
      field('Email', email),
      field('Initial password', password, 'At least 8 characters; share it safely.'),
      field('Role', role)),
    error,
    el('div', {}, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    try {
      const created = await busy(submit, () => api('/v1/users', {
        method: 'POST', body: { email: email.value.trim(), password: password.value, role: role.value },
      }));
      form.reset();
      role.value = 'member';
      toast(`${created?.email || 'User'} added`, 'success');
      reload();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });
  return form;
}

function usersTable(list, reload) {
  const owner = isOwner();
  const rows = list.map((u) => {
    const self = state.user && u.id === state.user.id;
    let roleCell;
    if (owner) {
      const roleSelect = select({ name: 'role', 'data-testid': 'user-role', 'aria-label': `Role of ${u.email}` }, ROLES, u.role);
      roleSelect.addEventListener('change', async () => {
        const next = roleSelect.value;
        roleSelect.disabled = true;
        try {
          const updated = await api(`/v1/users/${encodeURIComponent(u.id)}`, { method: 'PATCH', body: { role: next } });
          u.role = updated?.role || next;
          toast(`${u.email} is now ${u.role}`, 'success');
          if (self && u.role !== 'owner') {
            toast('You are no longer an owner; the page reloads with your new role.', 'info');
            setTimeout(() => window.location.reload(), 1200);
          }
        } catch (err) {
          roleSelect.value = u.role;
          toastError(err);
        } finally {
          roleSelect.disabled = false;
        }
      });
      roleCell = roleSelect;
    } else {
      roleCell = badge(u.role, 'neutral');
    }
    const actions = el('div', { class: 'row-actions' });
    if (owner && !self) {
      const del = el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'user-delete' }, 'Delete');
      del.addEventListener('click', async () => {
        const keys = await keyCount(u.id).catch(() => null);
        const keyLine = keys ? ` The ${keys === 1 ? 'API key' : `${keys} API keys`} they created keep working.` : '';
        const yes = await confirmModal({
          title: `Delete ${u.email}?`,
          message: `They are signed out and can no longer sign in. Their past actions stay in the audit log.${keyLine}`,
          confirmLabel: 'Delete user', danger: true,
        });
        if (!yes) return;
        try {
          await busy(del, () => api(`/v1/users/${encodeURIComponent(u.id)}`, { method: 'DELETE' }));
          toast(`${u.email} deleted`, 'success');
          reload();
        } catch (err) {
          toastError(err);
        }
      });
      const reset = el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'user-reset-password' }, 'Reset password');
      reset.addEventListener('click', () => resetPasswordDialog(u));
      actions.append(reset, del);
    }
    const keys = el('span', { class: 'muted', 'data-testid': 'user-key-count' }, '…');
    keyCount(u.id).then((n) => { keys.textContent = String(n); keys.classList.remove('muted'); })
      .catch(() => { keys.textContent = '—'; });
    return el('tr', { 'data-testid': 'user-row', 'data-user-email': u.email, 'data-user-id': u.id },
      td(el('span', { class: 'cell-text' }, u.email, self ? el('span', { class: 'muted small' }, ' (you)') : null)),
      td(roleCell),
      td(keys, 'num'),
      td(timeEl(u.created_at), 'nowrap'),
      td(el('code', { class: 'small' }, u.id)),
      td(actions));
  });
  return table({
    testid: 'users-table', caption: 'Users',
    columns: [{ label: 'Email' }, { label: 'Role' }, { label: 'API keys', class: 'num' }, { label: 'Created' }, { label: 'Id' }, { label: '' }],
    rows,
  }).wrap;
}

/** An owner sets a new password for `u`; their sessions end. */
function resetPasswordDialog(u) {
  const next = el('input', { type: 'password', name: 'password', autocomplete: 'new-password', required: true, minlength: '8' });
  formDialog({
    testid: 'reset-password-form',
    errorTestid: 'reset-password-error',
    title: `New password for ${u.email}`,
    intro: 'They are signed out everywhere and sign in with this password. Share it safely.',
    fields: [['New password', next, 'At least 8 characters.']],
    submitLabel: 'Set password',
    submit: async () => {
      await api(`/v1/users/${encodeURIComponent(u.id)}`, { method: 'PATCH', body: { password: next.value } });
      toast(`Password of ${u.email} reset`, 'success');
    },
    describe: errorText,
  });
}

/** How many unrevoked API keys the user created. */
async function keyCount(id) {
  const data = await api(`/v1/members/${encodeURIComponent(id)}/key-count`);
  return typeof data?.active_key_count === 'number' ? data.active_key_count : 0;
}

/** Leaving the organisation: one's account ends; the only owner may not. */
function leaveSection() {
  const leave = el('button', { type: 'button', class: 'btn btn-danger-ghost', 'data-testid': 'leave-org' }, 'Leave the organisation');
  const error = el('p', { class: 'form-error', role: 'alert', 'data-testid': 'leave-org-error', hidden: true });
  leave.addEventListener('click', async () => {
    error.hidden = true;
    const yes = await confirmModal({
      title: `Leave ${state.user?.org_name || 'the organisation'}?`,
      message: 'Your account and sessions end and you cannot sign in again. The API keys you created keep working.',
      confirmLabel: 'Leave', danger: true,
    });
    if (!yes) return;
    try {
      await busy(leave, () => api('/v1/members/me', { method: 'DELETE' }));
      window.location.hash = '#/login';
      window.location.reload();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });
  return section('Leaving', el('p', { class: 'muted' }, 'An organisation keeps at least one owner: its only owner makes someone else an owner before leaving.'), error, el('div', {}, leave));
}
