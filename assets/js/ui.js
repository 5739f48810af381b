// Shared pieces of the interface: loading/empty/error states, toasts, the
// in-page confirmation modal, folded text blocks, tables and pagers.

import { el, icon, ICONS, replace } from './dom.js';
import { errorText } from './api.js';
import { prettyJson, fmtTime, fmtTimeLong } from './format.js';

export function loading(label = 'Loading…') {
  return el('div', { class: 'state state-loading', 'data-testid': 'loading', role: 'status', 'aria-live': 'polite' },
    el('span', { class: 'spinner', 'aria-hidden': 'true' }), label);
}

export function empty(message, hint) {
  return el('div', { class: 'state state-empty', 'data-testid': 'empty' },
    el('p', { class: 'state-title' }, message),
    hint ? el('p', { class: 'muted' }, hint) : null);
}

/** An error box with the server's error text and an optional retry. */
export function errorBox(err, retry) {
  return el('div', { class: 'state state-error', 'data-testid': 'error', role: 'alert' },
    el('p', { class: 'state-title' }, errorText(err)),
    err && err.requestId ? el('p', { class: 'muted small' }, 'Request id: ', el('code', {}, err.requestId)) : null,
    retry ? el('button', { type: 'button', class: 'btn', on: { click: retry } }, 'Try again') : null);
}

// ---------------------------------------------------------------- toasts --

let toastRegion = null;

function region() {
  if (!toastRegion || !toastRegion.isConnected) {
    toastRegion = el('div', { class: 'toasts', 'aria-live': 'polite' });
    document.body.appendChild(toastRegion);
  }
  return toastRegion;
}

/** Clears the messages about what was done on the page being left. */
export function clearToasts() {
  if (!toastRegion) return;
  for (const node of [...toastRegion.children]) {
    if (!node.classList.contains('toast-error')) node.remove();
  }
}

/** Shows a short message; kind: info | success | error. */
export function toast(message, kind = 'info', timeoutMs) {
  const ms = timeoutMs ?? (kind === 'error' ? 12000 : 5000);
  const node = el('div', { class: `toast toast-${kind}`, 'data-testid': 'toast', role: kind === 'error' ? 'alert' : 'status' },
    el('span', { class: 'toast-text' }, message),
    el('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', on: { click: () => node.remove() } }, '×'));
  const list = region();
  list.appendChild(node);
  // Only the latest few stay on screen.
  while (list.children.length > 3) list.firstElementChild.remove();
  setTimeout(() => node.remove(), ms);
  return node;
}

export function toastError(err) {
  return toast(errorText(err), 'error');
}

// ----------------------------------------------------------------- modal --

/**
 * Opens an in-page modal and resolves to true (confirm-yes) or false
 * (confirm-no, Escape, backdrop). Never a browser dialog.
 */
export function confirmModal({ title, message, confirmLabel = 'Confirm', cancelLabel = 'Cancel', danger = false }) {
  return new Promise((resolve) => {
    const previous = document.activeElement;
    let done = false;
    const finish = (answer) => {
      if (done) return;
      done = true;
      if (typeof dialog.close === 'function' && dialog.open) dialog.close();
      dialog.remove();
      if (previous && typeof previous.focus === 'function' && previous.isConnected) previous.focus();
      resolve(answer);
    };
    const yes = el('button', { type: 'button', class: danger ? 'btn btn-danger' : 'btn btn-primary', 'data-testid': 'confirm-yes', on: { click: () => finish(true) } }, confirmLabel);
    const no = el('button', { type: 'button', class: 'btn', 'data-testid': 'confirm-no', on: { click: () => finish(false) } }, cancelLabel);
    const dialog = el('dialog', { class: 'modal', 'data-testid': 'confirm-modal', 'aria-labelledby': 'modal-title' },
      el('h2', { id: 'modal-title', class: 'modal-title' }, title),
      message ? el('p', { class: 'modal-body' }, message) : null,
      el('div', { class: 'modal-actions' }, no, yes));
    dialog.addEventListener('cancel', (e) => { e.preventDefault(); finish(false); });
    dialog.addEventListener('click', (e) => { if (e.target === dialog) finish(false); });
    dialog.addEventListener('keydown', (e) => { if (e.key === 'Escape') { e.preventDefault(); finish(false); } });
    document.body.appendChild(dialog);
    openDialog(dialog);
    no.focus();
  });
}

/** Opens a <dialog> modally, or as a plain open element where unsupported. */
export function openDialog(dialog) {
  if (typeof dialog.showModal === 'function') {
    try {
      dialog.showModal();
      return;
    } catch {
      // fall through
    }
  }
  dialog.setAttribute('open', '');
  dialog.classList.add('modal-fallback');
}

/**
 * A modal form: `fields` ([label, input, hint?]) under a title and an
 * intro, Cancel and a submit button. `submit` runs on submit; the dialog
 * closes when it resolves, and shows `describe(err)` when it throws.
 */
export function formDialog({ testid, errorTestid, title, intro, fields, submitLabel, submit, describe }) {
  const errorLine = el('p', { class: 'form-error', 'data-testid': errorTestid, hidden: true, role: 'alert' });
  const ok = el('button', { type: 'submit', class: 'btn btn-primary' }, submitLabel);
  const cancel = el('button', { type: 'button', class: 'btn' }, 'Cancel');
  const form = el('form', { class: 'stack', 'data-testid': testid },
    el('h2', { class: 'modal-title' }, title),
    el('p', { class: 'muted' }, intro),
    fields.map(([label, input, hint]) => field(label, input, hint)),
    errorLine,
    el('div', { class: 'modal-actions' }, cancel, ok));
  const dialog = el('dialog', { class: 'modal' }, form);
  const close = () => { if (dialog.open && typeof dialog.close === 'function') dialog.close(); dialog.remove(); };
  cancel.addEventListener('click', close);
  dialog.addEventListener('cancel', (e) => { e.preventDefault(); close(); });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    errorLine.hidden = true;
    try {
      await busy(ok, submit);
      close();
    } catch (err) {
      errorLine.textContent = describe(err);
      errorLine.hidden = false;
    }
  });
  document.body.appendChild(dialog);
  openDialog(dialog);
  if (fields.length) fields[0][1].focus();
}

// ----------------------------------------------------------- text blocks --

const FOLD_CHARS = 600;
const FOLD_LINES = 12;

/**
 * A block of text from the API: JSON pretty-printed when it parses, long
 * text folded behind "Show more". Always rendered as text.
 */
export function textBlock(value, { testid, emptyText = '—', label } = {}) {
  // The label stays outside the test id's element, which holds only the value.
  const body = el('div', { class: 'textblock-body', 'data-testid': testid });
  const wrap = el('div', { class: 'textblock' },
    label ? el('div', { class: 'textblock-label' }, label) : null,
    body);
  if (value === null || value === undefined || value === '') {
    body.appendChild(el('div', { class: 'textblock-empty muted' }, emptyText));
    return wrap;
  }
  const pretty = prettyJson(value);
  const text = pretty ?? (typeof value === 'string' ? value : String(value));
  const pre = el('pre', { class: pretty ? 'code json' : 'code' }, text);
  body.appendChild(pre);
  const lines = text.split('\n').length;
  if (text.length > FOLD_CHARS || lines > FOLD_LINES) {
    pre.classList.add('folded');
    const more = `Show more (${text.length.toLocaleString('en-US')} characters)`;
    const toggle = el('button', { type: 'button', class: 'btn btn-link btn-small', 'data-testid': 'show-more', 'aria-expanded': 'false' }, more);
    toggle.addEventListener('click', () => {
      const folded = pre.classList.toggle('folded');
      toggle.setAttribute('aria-expanded', String(!folded));
      toggle.textContent = folded ? more : 'Show less';
    });
    body.appendChild(toggle);
  }
  return wrap;
}

// ---------------------------------------------------------------- tables --

/**
 * A table inside a horizontally scrolling wrapper with a sticky header.
 * `columns`: [{label, class}], `rows`: <tr> elements.
 */
export function table({ testid, columns, rows, caption, cls }) {
  const thead = el('thead', {}, el('tr', {}, columns.map((c) => el('th', { scope: 'col', class: c.class }, c.label))));
  const tbody = el('tbody', {}, rows);
  const t = el('table', { class: ['table', cls], 'data-testid': testid },
    caption ? el('caption', { class: 'sr-only' }, caption) : null, thead, tbody);
  return { wrap: el('div', { class: 'table-wrap' }, t), table: t, tbody };
}

/** Makes a row open `href` on click or Enter (rows are Tab stops). */
export function linkRow(tr, href) {
  tr.tabIndex = 0;
  tr.classList.add('row-link');
  const go = () => { location.hash = href; };
  tr.addEventListener('click', (e) => {
    if (e.target.closest('a, button, input, select, textarea, label')) return;
    go();
  });
  tr.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && e.target === tr) {
      e.preventDefault();
      go();
    }
  });
  return tr;
}

export function td(content, cls) {
  return el('td', { class: cls }, content);
}

/** A <time> element in the viewer's zone, with the full date as a tooltip. */
export function timeEl(value) {
  if (!value) return el('span', { class: 'muted' }, '—');
  return el('time', { datetime: value, title: fmtTimeLong(value) }, fmtTime(value));
}

export function badge(text, kind = 'neutral', attrs = {}) {
  return el('span', { ...attrs, class: `badge badge-${kind}` }, text);
}

/** Previous/next buttons; state: {hasPrev, hasNext, page}. */
export function pager({ hasPrev, hasNext, page, onPrev, onNext }) {
  return el('div', { class: 'pager' },
    el('button', { type: 'button', class: 'btn', 'data-testid': 'prev-page', disabled: !hasPrev, on: { click: onPrev } }, '← Previous'),
    el('span', { class: 'muted pager-label' }, `Page ${page}`),
    el('button', { type: 'button', class: 'btn', 'data-testid': 'next-page', disabled: !hasNext, on: { click: onNext } }, 'Next →'));
}

export function pageHeader(title, ...actions) {
  return el('header', { class: 'page-header' },
    el('h1', { class: 'page-title', tabindex: '-1' }, title),
    actions.length ? el('div', { class: 'page-actions' }, actions) : null);
}

export function section(title, ...children) {
  return el('section', { class: 'panel' },
    title ? el('h2', { class: 'panel-title' }, title) : null,
    children);
}

/** A labelled form field. */
export function field(label, control, hint) {
  return el('label', { class: 'field' },
    el('span', { class: 'field-label' }, label),
    control,
    hint ? el('span', { class: 'field-hint muted' }, hint) : null);
}

export function select(attrs, options, selected) {
  return el('select', attrs, options.map((o) => {
    const opt = typeof o === 'string' ? { value: o, label: o } : o;
    return el('option', { value: opt.value, selected: String(opt.value) === String(selected ?? '') }, opt.label);
  }));
}

/** A copy-to-clipboard button for `getText()`; works without the Clipboard API. */
export function copyButton(getText, { testid, label = 'Copy' } = {}) {
  const button = el('button', { type: 'button', class: 'btn btn-small', 'data-testid': testid, title: 'Copy to clipboard' },
    icon(ICONS.copy), el('span', {}, label));
  button.addEventListener('click', async () => {
    const text = getText();
    const ok = await copyText(text);
    toast(ok ? 'Copied to clipboard' : 'Copying is not available here: select the text and copy it by hand', ok ? 'success' : 'info');
  });
  return button;
}

async function copyText(text) {
  try {
    if (navigator.clipboard && typeof navigator.clipboard.writeText === 'function') {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // fall back below
  }
  try {
    const area = el('textarea', { class: 'offscreen', readonly: 'true', 'aria-hidden': 'true' });
    area.value = text;
    document.body.appendChild(area);
    area.select();
    const ok = typeof document.execCommand === 'function' && document.execCommand('copy');
    area.remove();
    return !!ok;
  } catch {
    return false;
  }
}

/** Sets a busy state on a button while `task` runs. */
export async function busy(button, task) {
  const was = button.disabled;
  button.disabled = true;
  button.classList.add('is-busy');
  try {
    return await task();
  } finally {
    button.disabled = was;
    button.classList.remove('is-busy');
  }
}

/** Replaces `node`'s content with a loading state, then with `build()` or an error. */
export async function loadInto(node, load, build, { signal } = {}) {
  replace(node, loading());
  try {
    const data = await load();
    if (signal && signal.aborted) return;
    replace(node, build(data));
  } catch (err) {
    if ((signal && signal.aborted) || (err && err.name === 'AbortError')) return;
    replace(node, errorBox(err, () => loadInto(node, load, build, { signal })));
  }
}
