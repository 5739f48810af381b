// Judge keys: the organisation's own keys for the judge and model
// endpoints, one per provider. Owners set, replace and revoke them; a key
// is never shown again, only its last four characters.

import { el, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { isOwner } from '../state.js';
import { loading, errorBox, pageHeader, table, td, timeEl, badge, field, select, busy, toast, toastError, confirmModal, section } from '../ui.js';

const PROVIDERS = [
  { value: 'openai', label: 'OpenAI-compatible' },
  { value: 'anthropic', label: 'Anthropic' },
];

export function render(root, ctx) {
  const body = el('div', { class: 'list-body' });
  const formBox = el('div', {});
  add(root, pageHeader('Judge keys'),
    el('p', { class: 'muted page-sub' }, 'Your organisation\'s own keys for the judge and model endpoints the server is configured with. When one is set, your evaluations and dataset runs send it instead of the server\'s key for that provider. Keys are sealed at rest and never shown again.'),
    formBox, section('Keys', body));

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    if (!body.firstChild) replace(body, loading());
    try {
      const data = await api('/v1/settings/eval-keys', { signal: ctx.signal });
      if (mine !== generation) return;
      replace(body, keysTable(data.items || [], load));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };
  if (isOwner()) formBox.appendChild(setForm(load));
  load();
}

function setForm(reload) {
  const provider = select({ name: 'provider' }, PROVIDERS, 'openai');
  const key = el('input', { type: 'password', name: 'key', required: true, maxlength: '1024', autocomplete: 'off', spellcheck: 'false', class: 'mono' });
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true, 'data-testid': 'eval-key-error' });
  const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Save key');
  const form = el('form', { class: 'stack form-card', 'data-testid': 'eval-key-form' },
    el('h3', { class: 'form-title' }, 'Set a key'),
    el('div', { class: 'form-grid' },
      field('Provider', provider),
      field('API key', key, 'Replaces the provider\'s current key, if any.')),
    error,
    el('div', {}, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    if (!key.value.trim()) {
      error.textContent = 'Paste the provider\'s API key.';
      error.hidden = false;
      return;
    }
    try {
      const saved = await busy(submit, () => api('/v1/settings/eval-keys', { method: 'POST', body: { provider: provider.value, key: key.value.trim() } }));
      key.value = '';
      toast(`Key for ${saved.provider} saved`, 'success');
      reload();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });
  return form;
}

function keysTable(items, reload) {
  const owner = isOwner();
  const rows = PROVIDERS.map((p) => {
    const k = items.find((i) => i.provider === p.value);
    const actions = el('div', { class: 'row-actions' });
    if (k && owner) {
      const revoke = el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'eval-key-revoke' }, 'Revoke');
      revoke.addEventListener('click', async () => {
        const yes = await confirmModal({
          title: `Revoke the ${p.label} key?`,
          message: 'Evaluations and runs go back to the server\'s configured key for this provider. The key is erased.',
          confirmLabel: 'Revoke key', danger: true,
        });
        if (!yes) return;
        try {
          await busy(revoke, () => api(`/v1/settings/eval-keys/${encodeURIComponent(p.value)}`, { method: 'DELETE' }));
          toast('Key revoked', 'success');
          reload();
        } catch (err) {
          toastError(err);
        }
      });
      actions.append(revoke);
    }
    return el('tr', { 'data-testid': 'eval-key-row', 'data-provider': p.value },
      td(p.label),
      td(k ? el('span', { class: 'mono', 'data-testid': 'eval-key-hint' }, k.hint || '…') : el('span', { class: 'muted' }, 'none: the server\'s key is used')),
      td(k ? badge('set', 'ok') : badge('not set', 'neutral')),
      td(k ? timeEl(k.created_at) : el('span', { class: 'muted' }, '—'), 'nowrap'),
      td(actions));
  });
  return table({
    testid: 'eval-keys-table', caption: 'Judge keys by provider',
    columns: [{ label: 'Provider' }, { label: 'Key' }, { label: 'State' }, { label: 'Set' }, { label: '' }],
    rows,
  }).wrap;
}
