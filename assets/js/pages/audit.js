// The audit log (owners and viewers): administrative actions, newest
// first, cursor-paged, with a check of the hash chain.

import { el, replace, add } from '../dom.js';
import { api, isAbort, errorText } from '../api.js';
import { loading, errorBox, empty, pageHeader, table, td, timeEl, badge, pager, busy, section } from '../ui.js';
import { fmtInt } from '../format.js';
import { state } from '../state.js';

const PAGE_SIZE = 50;

export function render(root, ctx) {
  const cursors = [null];
  const body = el('div', { class: 'list-body' });
  const verifyResult = el('span', { class: 'verify-result', 'data-testid': 'audit-verify-result', 'aria-live': 'polite' });
  const verify = el('button', { type: 'button', class: 'btn', 'data-testid': 'audit-verify' }, 'Verify chain');
  verify.addEventListener('click', async () => {
    verifyResult.textContent = '';
    try {
      // Today's anchor: the head of the organisation's chain as of now,
      // with every entry up to it recomputed.
      const query = { tenant_id: state.user?.org_id, date: new Date().toISOString().slice(0, 10) };
      const v = await busy(verify, () => api('/v1/audit/verify', { signal: ctx.signal, query }));
      replace(verifyResult, v.intact
        ? badge(`Intact · ${fmtInt(v.row_count)} entries`, 'ok')
        : badge(`Broken at entry ${v.broken_at} of ${fmtInt(v.row_count)}`, 'error'));
      verifyResult.title = `Head ${v.head_hash}`;
    } catch (err) {
      if (!isAbort(err)) replace(verifyResult, badge(errorText(err), 'error'));
    }
  });
  add(root, pageHeader('Audit log', verifyResult, verify),
    el('p', { class: 'muted page-sub' }, 'Sign-ins, users, projects and keys: who did what, from where, and when. Entries are hash-chained.'),
    section(null, body));

  let generation = 0;
  const load = async () => {
    const mine = ++generation;
    replace(body, loading());
    try {
      const data = await api('/v1/audit-log', { signal: ctx.signal, query: { limit: PAGE_SIZE, cursor: cursors[cursors.length - 1] } });
      if (mine !== generation) return;
      const list = Array.isArray(data?.entries) ? data.entries : [];
      const rows = list.map((e) => el('tr', { 'data-testid': 'audit-row', 'data-action': e.action },
        td(timeEl(e.at), 'nowrap'),
        td(el('span', { class: 'cell-text' }, e.actor || '—'), 'mono small'),
        td(badge(e.action || '?', /failed|revoke|delete|archive/.test(e.action || '') ? 'warn' : 'neutral')),
        td(el('span', { class: 'cell-text' }, e.target || '—'), 'mono small'),
        td(e.source || '—', 'mono small'),
        td(details(e.details), 'details')));
      const built = table({
        testid: 'audit-table', caption: 'Audit log',
        columns: [{ label: 'Time' }, { label: 'Actor' }, { label: 'Action' }, { label: 'Target' }, { label: 'Source' }, { label: 'Details' }],
        rows,
      });
      const page = cursors.length;
      replace(body, built.wrap, list.length ? null : empty('No audit entries.'),
        pager({
          page, hasPrev: page > 1, hasNext: !!data?.next_cursor,
          onPrev: () => { cursors.pop(); load(); },
          onNext: () => { cursors.push(data.next_cursor); load(); },
        }));
    } catch (err) {
      if (isAbort(err) || mine !== generation) return;
      replace(body, errorBox(err, load));
    }
  };
  load();
}

function details(value) {
  if (value === null || value === undefined) return el('span', { class: 'muted' }, '—');
  if (typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value);
    if (!entries.length) return el('span', { class: 'muted' }, '—');
    return el('span', { class: 'kv' }, entries.map(([k, v]) => el('span', { class: 'chip' },
      el('span', { class: 'muted' }, `${k}: `), typeof v === 'string' ? v : JSON.stringify(v))));
  }
  return el('code', { class: 'small' }, JSON.stringify(value));
}
