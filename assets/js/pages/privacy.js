// Privacy requests (owners): erase or export everything stored of one
// person, found by the traces' external id, session id or metadata user
// key. Erasure asks for confirmation. The list shows each request's
// status and what it erased or exported, with the export's download link,
// and refreshes itself while a request is being worked on.

import { el, replace, add, icon, ICONS } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { loading, errorBox, empty, pageHeader, table, td, timeEl, badge, field, select, busy, toast, confirmModal, section } from '../ui.js';
import { fmtInt } from '../format.js';

/** How often the list is read again while a request is open, in ms. */
const POLL_MS = 1500;

const COUNTS = [
  ['traces', 'trace', 'traces'],
  ['spans', 'span', 'spans'],
  ['feedback', 'feedback', 'feedback'],
  ['evaluations', 'evaluation', 'evaluations'],
  ['dataset_items', 'dataset item', 'dataset items'],
  ['run_items', 'run result', 'run results'],
  ['webhook_deliveries', 'webhook delivery', 'webhook deliveries'],
];

/** "3 traces · 3 spans · 1 feedback", the non-zero counts only. */
function countsText(counts) {
  const parts = COUNTS
    .filter(([key]) => Number(counts?.[key]) > 0)
    .map(([key, one, many]) => `${fmtInt(counts[key])} ${Number(counts[key]) === 1 ? one : many}`);
  return parts.length ? parts.join(' · ') : 'nothing found';
}

function statusBadge(status) {
  const kind = status === 'completed' ? 'ok' : status === 'failed' ? 'error' : 'warn';
  return badge(status, kind, { 'data-testid': 'dsr-status' });
}

export function render(root, ctx) {
  const body = el('div', { class: 'list-body' });
  add(root, pageHeader('Privacy requests'),
    el('p', { class: 'muted page-sub' },
      'Erase or export everything stored of one person: the traces whose external id, session id or metadata user key is theirs, with their spans, feedback, evaluations and the dataset items made of them. Requests are carried out in the background and recorded in the audit log.'),
    createForm(() => load()), section('Requests', body));

  let generation = 0;
  let timer = null;
  let cursor = null;
  let shown = [];
  const later = () => {
    clearTimeout(timer);
    if (ctx.signal.aborted) return;
    timer = setTimeout(() => load(), POLL_MS);
  };
  ctx.signal.addEventListener('abort', () => clearTimeout(timer));

  const load = async ({ more = false } = {}) => {
    const mine = ++generation;
    if (!body.firstChild) replace(body, loading());
    try {
      const limit = more ? 50 : Math.max(50, shown.length);
      const query = more && cursor ? `?limit=50&cursor=${encodeURIComponent(cursor)}` : `?limit=${Math.min(limit, 200)}`;
      const data = await api(`/v1/dsr${query}`, { signal: ctx.signal });
      if (mine !== generation) return;
      const page = Array.isArray(data?.requests) ? data.requests : [];
      shown = more ? shown.concat(page) : page;
      cursor = data?.next_cursor || null;
      const moreButton = cursor
        ? el('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'dsr-more', on: { click: () => load({ more: true }) } }, 'Show more')
        : null;
      replace(body, shown.length ? requestsTable(shown) : empty('No requests yet.', 'Requests made above appear here with their status.'), moreButton);
      if (shown.some((r) => r.status === 'pending' || r.status === 'processing')) later();
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, () => load()));
    }
  };
  load();
}

function createForm(reload) {
  const subject = el('input', { type: 'text', name: 'subject_id', required: true, maxlength: '256', placeholder: 'e.g. customer-4711', autocomplete: 'off', 'data-testid': 'dsr-subject' });
  const kind = select({ name: 'type', 'data-testid': 'dsr-type' }, [
    { value: 'export', label: 'Export (download everything of them)' },
    { value: 'delete', label: 'Erase (delete everything of them)' },
  ], 'export');
  const error = el('p', { class: 'form-error', role: 'alert', hidden: true, 'data-testid': 'dsr-create-error' });
  const submit = el('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'dsr-submit' }, 'Submit request');
  const form = el('form', { class: 'stack form-card', 'data-testid': 'dsr-create' },
    el('h3', { class: 'form-title' }, 'New request'),
    el('div', { class: 'form-grid' },
      field('Subject id', subject, 'As your traces carry it: their external id, session id or metadata user key.'),
      field('Request', kind)),
    error,
    el('div', {}, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.hidden = true;
    const id = subject.value.trim();
    const type = kind.value;
    if (!id) {
      error.textContent = 'Give the subject\'s id.';
      error.hidden = false;
      return;
    }
    if (type === 'delete') {
      const yes = await confirmModal({
        title: 'Erase everything of this subject?',
        message: `Every trace of “${id}” in every project is deleted, with its spans, feedback, evaluations, the dataset items made of it and their run results. This cannot be undone.`,
        confirmLabel: 'Erase', danger: true,
      });
      if (!yes) return;
    }
    try {
      await busy(submit, () => api('/v1/dsr', { method: 'POST', body: { subject_id: id, type } }));
      form.reset();
      toast(type === 'delete' ? 'Erasure requested' : 'Export requested', 'success');
      reload();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
  });
  return form;
}

function requestsTable(list) {
  const rows = list.map((r) => {
    let result;
    if (r.status === 'failed') {
      result = el('span', { class: 'cell-text', 'data-testid': 'dsr-error' }, r.error_msg || 'failed');
    } else {
      result = el('span', { 'data-testid': 'dsr-counts' }, r.status === 'pending' ? '—' : countsText(r.counts));
    }
    let download = el('span', { class: 'muted' }, '—');
    if (r.export_url) {
      download = el('a', { class: 'btn btn-small', href: r.export_url, download: '', 'data-testid': 'dsr-download' }, icon(ICONS.download), el('span', {}, 'Download'));
    } else if (r.type === 'export' && r.status === 'completed') {
      download = el('span', { class: 'muted small' }, 'expired');
    }
    return el('tr', { 'data-testid': 'dsr-row', 'data-dsr-id': r.id, 'data-dsr-status': r.status },
      td(el('span', { class: 'cell-text mono small', 'data-testid': 'dsr-subject-cell' }, r.subject_id)),
      td(r.type === 'delete' ? 'Erase' : 'Export', 'nowrap'),
      td(statusBadge(r.status)),
      td(result),
      td(timeEl(r.created_at), 'nowrap'),
      td(r.completed_at ? timeEl(r.completed_at) : el('span', { class: 'muted' }, '—'), 'nowrap'),
      td(download));
  });
  return table({
    testid: 'dsr-table', caption: 'Privacy requests',
    columns: [{ label: 'Subject' }, { label: 'Request' }, { label: 'Status' }, { label: 'Erased or exported' }, { label: 'Requested' }, { label: 'Finished' }, { label: '' }],
    rows,
  }).wrap;
}
