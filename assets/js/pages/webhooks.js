// Webhooks: create (URL, events, secret), send a test ping and show the
// answer, see each webhook's recent deliveries, delete (owners).

import { el, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { canWrite, isOwner } from '../state.js';
import { loading, errorBox, empty, pageHeader, table, td, timeEl, badge, field, busy, toast, toastError, confirmModal, section } from '../ui.js';

const EVENTS = [
  { value: 'eval_run.completed', label: 'eval_run.completed (a dataset run finished)' },
  { value: 'failure.detected', label: 'failure.detected (a failure rule fired)' },
  { value: 'failure.recovered', label: 'failure.recovered (a failure rule\'s condition cleared)' },
  { value: 'anomaly.detected', label: 'anomaly.detected (the detector saw a sudden change)' },
  { value: 'anomaly.recovered', label: 'anomaly.recovered (back near the baseline)' },
];

/** 32 random bytes as hex: a secret for a new webhook. */
function newSecret() {
  const bytes = new Uint8Array(32);
  crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export function render(root, ctx) {
  const body = el('div', { class: 'list-body' });
  const createBox = el('div', {});
  const deliveriesBox = el('div', { 'data-testid': 'webhook-deliveries-box' });
  add(root, pageHeader('Webhooks'),
    el('p', { class: 'muted page-sub' }, 'Events sent to your endpoints, each signed with the webhook\'s secret (X-TruLayer-Signature). Failed deliveries are retried for two days.'),
    createBox, section('Webhooks', body), deliveriesBox);

  let shown = null; // the webhook whose deliveries are shown
  const showDeliveries = async (hook) => {
    shown = hook;
    const list = el('div', {});
    const refresh = el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'webhook-deliveries-refresh' }, 'Refresh');
    refresh.addEventListener('click', () => showDeliveries(hook));
    replace(deliveriesBox, section(`Deliveries to ${hook.url}`, el('div', {}, refresh), list));
    replace(list, loading());
    try {
      const data = await api(`/v1/webhooks/${encodeURIComponent(hook.id)}/deliveries`, { signal: ctx.signal });
      if (shown !== hook) return;
      const rows = (data.deliveries || []).map((d) => el('tr', { 'data-testid': 'delivery-row', 'data-delivery-id': d.id },
        td(el('span', { class: 'mono small' }, d.event_type)),
        td(badge(d.status, d.status === 'delivered' ? 'ok' : d.status === 'failed' ? 'error' : 'warn', { 'data-testid': 'delivery-status' })),
        td(el('span', { 'data-testid': 'delivery-attempts' }, String(d.attempts)), 'nowrap'),
        td(d.response_status == null ? el('span', { class: 'muted' }, '—') : String(d.response_status), 'nowrap'),
        td(d.last_error ? el('span', { class: 'cell-text', 'data-testid': 'delivery-error' }, d.last_error) : el('span', { class: 'muted' }, '—')),
        td(timeEl(d.created_at), 'nowrap'),
        td(d.next_attempt_at ? timeEl(d.next_attempt_at) : el('span', { class: 'muted' }, '—'), 'nowrap')));
      replace(list, rows.length
        ? table({
          testid: 'deliveries-table', caption: 'Recent deliveries',
          columns: [{ label: 'Event' }, { label: 'Status' }, { label: 'Attempts' }, { label: 'HTTP' }, { label: 'Last error' }, { label: 'Created' }, { label: 'Next attempt' }],
          rows,
        }).wrap
        : empty('No deliveries yet.', 'Events this webhook subscribes to appear here. Test pings are not recorded.'));
    } catch (err) {
      if (isAbort(err)) return;
      replace(list, errorBox(err, () => showDeliveries(hook)));
    }
  };

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    if (!body.firstChild) replace(body, loading());
    try {
      const data = await api('/v1/webhooks', { signal: ctx.signal });
      if (mine !== generation) return;
      const list = data.webhooks || [];
      replace(body, list.length ? hooksTable(list, { reload: load, showDeliveries }) : empty('No webhooks.', 'Create one to have events sent to your endpoint.'));
      if (shown && !list.some((h) => h.id === shown.id)) {
        shown = null;
        replace(deliveriesBox);
      }
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };

  if (canWrite()) createBox.appendChild(createForm({ reload: load }));
  load();
}

function createForm({ reload }) {
  const url = el('input', { type: 'url', name: 'url', required: true, maxlength: '2048', placeholder: 'https://alerts.internal.example/trulayer', autocomplete: 'off' });
  const secret = el('input', { type: 'text', name: 'secret', required: true, minlength: '16', maxlength: '256', autocomplete: 'off', class: 'mono', value: newSecret() });
  const regenerate = el('button', { type: 'button', class: 'btn btn-small' }, 'New secret');
  regenerate.addEventListener('click', () => { secret.value = newSecret(); });
  const event = (e) => el('label', { class: 'check' }, el('input', { type: 'checkbox', name: 'event', value: e.value, checked: true }), e.label);
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true, 'data-testid': 'webhook-create-error' });
  const submit = el('button', { type: 'submit', class: 'btn btn-primary' }, 'Create webhook');
  const form = el('form', { class: 'stack form-card', 'data-testid': 'webhook-create' },
    el('h3', { class: 'form-title' }, 'New webhook'),
    el('div', { class: 'form-grid' },
      field('Endpoint URL', url, 'http or https; link-local and cloud metadata addresses are refused.'),
      field('Secret', el('div', { class: 'row-actions' }, secret, regenerate), 'Keep a copy: it is never shown again. Your endpoint verifies each delivery with it.'),
      el('fieldset', { class: 'field' }, el('legend', { class: 'field-label' }, 'Events'),
        el('div', { class: 'checks' }, EVENTS.map(event)))),
    error,
    el('div', {}, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const events = [...form.querySelectorAll('input[name=event]:checked')].map((c) => c.value);
    if (!url.value.trim() || !events.length) {
      error.textContent = url.value.trim() ? 'Pick at least one event.' : 'Give the endpoint\'s URL.';
      error.hidden = false;
      return;
    }
    try {
      const created = await busy(submit, () => api('/v1/webhooks', { method: 'POST', body: { url: url.value.trim(), secret: secret.value, events } }));
      form.reset();
      for (const box of form.querySelectorAll('input[name=event]')) box.checked = true;
      secret.value = newSecret();
      toast(`Webhook to ${created.url} created`, 'success');
      reload();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });
  return form;
}

function hooksTable(list, { reload, showDeliveries }) {
  const write = canWrite();
  const owner = isOwner();
  const rows = list.map((h) => {
    const answer = el('div', { class: 'muted small', 'aria-live': 'polite', 'data-testid': 'webhook-test-answer' });
    const actions = el('div', { class: 'row-actions' });
    if (write) {
      const test = el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'webhook-test' }, 'Send test');
      test.addEventListener('click', async () => {
        replace(answer);
        try {
          const got = await busy(test, () => api(`/v1/webhooks/${encodeURIComponent(h.id)}/test`, { method: 'POST' }));
          const body = String(got.body || '').slice(0, 300);
          answer.textContent = got.status ? `HTTP ${got.status}${body ? `: ${body}` : ''}` : `Not reached: ${body}`;
        } catch (err) {
          answer.textContent = errorText(err);
        }
      });
      actions.append(test);
    }
    const view = el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'webhook-show-deliveries' }, 'Deliveries');
    view.addEventListener('click', () => showDeliveries(h));
    actions.append(view);
    if (owner) {
      const del = el('button', { type: 'button', class: 'btn btn-small btn-danger-ghost', 'data-testid': 'webhook-delete' }, 'Delete');
      del.addEventListener('click', async () => {
        const yes = await confirmModal({
          title: 'Delete this webhook?',
          message: `Nothing more is sent to ${h.url}, and its pending deliveries are dropped. This cannot be undone.`,
          confirmLabel: 'Delete webhook', danger: true,
        });
        if (!yes) return;
        try {
          await busy(del, () => api(`/v1/webhooks/${encodeURIComponent(h.id)}`, { method: 'DELETE' }));
          toast('Webhook deleted', 'success');
          reload();
        } catch (err) {
          toastError(err);
        }
      });
      actions.append(del);
    }
    return el('tr', { 'data-testid': 'webhook-row', 'data-webhook-id': h.id, 'data-webhook-url': h.url },
      td(el('div', {}, el('span', { class: 'cell-text mono small' }, h.url), answer)),
      td(el('div', { class: 'chips' }, (h.events || []).map((e) => el('span', { class: 'chip' }, e)))),
      td(badge(h.enabled ? 'enabled' : 'disabled', h.enabled ? 'ok' : 'neutral')),
      td(timeEl(h.created_at), 'nowrap'),
      td(actions));
  });
  return table({
    testid: 'webhooks-table', caption: 'Webhooks',
    columns: [{ label: 'Endpoint' }, { label: 'Events' }, { label: 'State' }, { label: 'Created' }, { label: '' }],
    rows,
  }).wrap;
}
