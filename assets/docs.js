// TruLayer API reference: the server's own OpenAPI document
// (`/v1/openapi.json`), drawn as a filterable list of operations and one
// operation at a time, each with a try-it console. Addresses:
// `#/` (the overview) and `#/<operationId>`.

import { el, icon, ICONS, replace } from './js/dom.js';
import { ApiError } from './js/api.js';
import { applyTheme, toggleTheme, currentTheme } from './js/state.js';
import { loading, errorBox, empty, section, textBlock } from './js/ui.js';
import { deref, groupByTag, jsonMedia, operations, prose, schemaView } from './js/openapi.js';
import { tryIt } from './js/console.js';

applyTheme();

const root = document.getElementById('app');
let doc = null;
let ops = [];
let links = new Map(); // operation key → its link in the list
let shell = null;

const opHash = (o) => `#/${encodeURIComponent(o.key)}`;

function methodBadge(method) {
  return el('span', { class: `method method-${method}`, 'data-testid': 'op-method' }, method.toUpperCase());
}

// ------------------------------------------------------------- the list --

function applyFilter(input, count) {
  const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const group of shell.list.children) {
    let any = false;
    for (const li of group.querySelectorAll('li')) {
      const o = li.opRef;
      const match = words.every((w) => o.haystack.includes(w));
      li.hidden = !match;
      if (match) { any = true; shown += 1; }
    }
    group.hidden = !any;
  }
  count.textContent = words.length ? `${shown} of ${ops.length} operations` : `${ops.length} operations`;
}

const visibleLinks = () => [...shell.list.querySelectorAll('li:not([hidden]) a.op-link')]
  .filter((a) => !a.closest('[hidden]'));

function moveFocus(from, step) {
  const all = visibleLinks();
  const next = all[all.indexOf(from) + step];
  if (next) next.focus();
  else if (step < 0) shell.filter.focus();
}

function buildShell() {
  const filter = el('input', {
    type: 'search', class: 'docs-filter', 'data-testid': 'docs-filter', 'aria-label': 'Find an operation',
    placeholder: 'Find: path, method, summary…', autocomplete: 'off', spellcheck: 'false',
  });
  const count = el('p', { class: 'muted small', 'data-testid': 'docs-count', 'aria-live': 'polite' });
  const list = el('div', { class: 'op-groups' }, groupByTag(doc, ops).map((g) =>
    el('section', { class: 'op-group', 'data-testid': 'docs-group', 'aria-label': g.name },
      el('h2', { class: 'op-group-title' }, g.name),
      el('ul', { class: 'op-list' }, g.ops.map((o) => {
        const a = el('a', {
          href: opHash(o), class: 'op-link', 'data-testid': 'op-link',
          dataset: { method: o.method, path: o.path, key: o.key },
        }, methodBadge(o.method), el('span', { class: 'op-link-path' }, o.path),
        o.op.summary ? el('span', { class: 'op-link-summary' }, String(o.op.summary).replace(/`/g, '')) : null);
        links.set(o.key, a);
        const li = el('li', {}, a);
        li.opRef = o;
        return li;
      })))));
  filter.addEventListener('input', () => applyFilter(filter, count));
  filter.addEventListener('keydown', (e) => {
    const first = visibleLinks()[0];
    if (e.key === 'Enter' && first) { e.preventDefault(); location.hash = first.getAttribute('href'); }
    if (e.key === 'ArrowDown' && first) { e.preventDefault(); first.focus(); }
  });
  list.addEventListener('keydown', (e) => {
    if (!e.target.classList.contains('op-link')) return;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      moveFocus(e.target, e.key === 'ArrowDown' ? 1 : -1);
    }
  });

  const themeButton = el('button', { type: 'button', class: 'btn btn-ghost btn-small', 'data-testid': 'theme-toggle' });
  const paintTheme = () => {
    const dark = currentTheme() === 'dark';
    replace(themeButton, icon(dark ? ICONS.sun : ICONS.moon), el('span', {}, dark ? 'Light' : 'Dark'));
    themeButton.setAttribute('aria-pressed', String(dark));
  };
  themeButton.addEventListener('click', () => { toggleTheme(); paintTheme(); });
  paintTheme();

  const menuButton = el('button', { type: 'button', class: 'btn btn-ghost nav-toggle', 'aria-label': 'Operations', 'aria-expanded': 'false' }, icon(ICONS.menu));
  const content = el('main', { class: 'content docs-content', id: 'content', tabindex: '-1' });
  const frame = el('div', { class: 'frame docs-frame' },
    el('a', { href: '#content', class: 'skip-link', on: { click: (e) => { e.preventDefault(); content.focus(); } } }, 'Skip to content'),
    el('nav', { class: 'sidebar docs-sidebar', 'aria-label': 'Operations' },
      el('div', { class: 'sidebar-top' },
        el('a', { href: '#/', class: 'brand' },
          el('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'T'),
          el('span', { class: 'brand-name' }, 'API reference')),
        menuButton),
      el('div', { class: 'sidebar-body' },
        el('div', { class: 'docs-search' }, filter, count), list,
        el('div', { class: 'sidebar-footer docs-footer' },
          el('a', { href: '/', class: 'btn btn-ghost btn-small', 'data-testid': 'admin-link' }, icon(ICONS.back), el('span', {}, 'Admin page')),
          themeButton))),
    content);
  menuButton.addEventListener('click', () => {
    const open = frame.classList.toggle('nav-open');
    menuButton.setAttribute('aria-expanded', String(open));
  });
  // "/" finds an operation from anywhere but a text field.
  document.addEventListener('keydown', (e) => {
    if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target.closest && e.target.closest('input, textarea, select, [contenteditable]')) return;
    e.preventDefault();
    frame.classList.add('nav-open');
    filter.focus();
  });
  replace(root, frame);
  shell = { frame, content, filter, list, menuButton };
  applyFilter(filter, count);
}

// ------------------------------------------------------ one operation --

const AUTH_WORDS = {
  public: 'none: anyone may call it',
  api_key_or_session: 'an API key or a signed-in session',
  session: 'a signed-in session only (API keys are refused)',
};
const SCOPE_WORDS = {
  query: 'query (reads), or a key without scopes',
  ingest: 'ingest (sends), or a key without scopes',
  unscoped: 'only a key without scopes',
};

/** ["viewer", "member", "owner"] as "viewers, members and owners". */
function roleWords(roles) {
  if (!Array.isArray(roles)) return roles === undefined || roles === null ? null : String(roles);
  const names = roles.map((r) => `${r}s`);
  return names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}` : names[0] || 'none';
}

/** Who may call it: the server's x-trulayer-access, else the security list. */
function accessView(o) {
  const x = o.op['x-trulayer-access'];
  const security = Array.isArray(o.op.security) ? o.op.security : doc.security;
  const facts = [];
  if (x && typeof x === 'object') {
    facts.push(['Credential', AUTH_WORDS[x.auth] ?? String(x.auth)]);
    // A public operation asks nothing of keys or roles.
    if (x.auth !== 'public') {
      facts.push(['API key scope', x.key_scope ? SCOPE_WORDS[x.key_scope] ?? String(x.key_scope) : 'keys may not call it']);
      facts.push(['Session roles', roleWords(x.roles)]);
    }
    if (x.rate_family) facts.push(['Rate limit', `counted with the organisation's ${x.rate_family} requests`]);
  } else if (Array.isArray(security)) {
    const schemes = security.flatMap((s) => Object.keys(s || {}));
    facts.push(['Credential', !schemes.length ? 'none: anyone may call it' : schemes.join(' or ')]);
  }
  return el('dl', { class: 'facts facts-compact', 'data-testid': 'op-access' },
    facts.filter(([, v]) => v).map(([k, v]) => el('div', { class: 'fact' }, el('dt', {}, k), el('dd', {}, v))));
}

function paramsView(o) {
  const rows = o.parameters.map((p) => {
    const s = p.schema || {};
    const type = [Array.isArray(s.type) ? s.type.join(' | ') : s.type, s.format && `(${s.format})`].filter(Boolean).join(' ');
    return el('tr', {},
      el('td', {}, el('code', {}, p.name), p.required ? el('span', { class: 'badge badge-warn param-required' }, 'required') : null),
      el('td', { class: 'muted' }, p.in),
      el('td', { class: 'mono' }, type || '—'),
      el('td', {}, p.description ? prose(p.description) : null,
        Array.isArray(s.enum) ? el('div', { class: 'chips' }, s.enum.map((v) => el('code', { class: 'chip' }, String(v)))) : null,
        s.default !== undefined ? el('div', { class: 'muted small' }, `default ${JSON.stringify(s.default)}`) : null));
  });
  return el('div', { class: 'table-wrap' }, el('table', { class: 'table', 'data-testid': 'op-params' },
    el('thead', {}, el('tr', {}, ['Name', 'In', 'Type', 'Description'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows)));
}

/** Examples, and the error codes named in them. */
function examplesOf(content) {
  const out = [];
  for (const media of Object.values(content || {})) {
    if (!media || typeof media !== 'object') continue;
    if (media.example !== undefined) out.push(media.example);
    for (const ex of Object.values(media.examples || {})) if (ex && ex.value !== undefined) out.push(ex.value);
  }
  return out;
}

function responsesView(o) {
  const entries = Object.entries(o.op.responses || {}).sort(([a], [b]) => a.localeCompare(b));
  return el('div', { class: 'responses', 'data-testid': 'op-responses' }, entries.map(([status, raw]) => {
    const r = deref(doc, raw);
    const media = jsonMedia(r.content);
    const examples = examplesOf(r.content);
    const codes = [...new Set(examples.map((e) => e && e.code).filter((c) => typeof c === 'string'))];
    const kind = /^2/.test(status) ? 'ok' : /^5/.test(status) ? 'error' : /^4/.test(status) ? 'warn' : 'neutral';
    const schema = media && media.schema ? schemaView(doc, media.schema) : null;
    const others = Object.keys(r.content || {}).filter((t) => !media || t !== media.type);
    return el('div', { class: 'response', 'data-testid': 'op-response', 'data-status': status },
      el('div', { class: 'response-head' },
        el('span', { class: `badge badge-${kind}` }, status),
        r.description ? prose(r.description, 'prose response-desc') : null,
        codes.map((c) => el('code', { class: 'chip', title: 'error code' }, c)),
        others.map((t) => el('span', { class: 'chip chip-muted' }, t))),
      schema && /^2/.test(status) ? schema : null,
      schema && !/^2/.test(status) ? el('details', { class: 'schema-fold' }, el('summary', { class: 'muted small' }, 'Body'), schema) : null,
      examples.map((ex) => textBlock(ex, { label: 'Example' })));
  }));
}

function bodyView(o) {
  const body = deref(doc, o.op.requestBody);
  const media = jsonMedia(body.content);
  const types = Object.keys(body.content || {});
  return section('Request body',
    el('p', { class: 'muted small' }, types.join(', ') || 'any', body.required ? ' · required' : ' · optional'),
    body.description ? prose(body.description) : null,
    media && media.schema ? schemaView(doc, media.schema, 'op-body') : null,
    examplesOf(body.content).map((ex) => textBlock(ex, { label: 'Example' })));
}

function renderOperation(o) {
  const op = o.op;
  document.title = `${o.method.toUpperCase()} ${o.path} · TruLayer API`;
  const beyond = op['x-trulayer-beyond-reference'];
  replace(shell.content,
    el('header', { class: 'op-header' },
      el('h1', { class: 'page-title op-title', tabindex: '-1', 'data-testid': 'op-title' },
        methodBadge(o.method), el('span', { class: 'op-path' }, o.path)),
      op.summary ? prose(op.summary, 'prose op-summary') : null,
      el('div', { class: 'op-meta muted small' },
        op.operationId ? el('code', {}, op.operationId) : null,
        op.deprecated ? el('span', { class: 'badge badge-warn' }, 'deprecated') : null,
        el('a', { href: '#try', class: 'btn btn-small', on: { click: (e) => { e.preventDefault(); focusConsole(); } } }, 'Try it'))),
    beyond ? el('aside', { class: 'notice op-beyond', 'data-testid': 'op-beyond' },
      el('strong', {}, 'Beyond the hosted reference: '), String(beyond)) : null,
    section('Access', accessView(o)),
    op.description ? section(null, prose(op.description)) : null,
    o.parameters.length ? section('Parameters', paramsView(o)) : null,
    op.requestBody ? bodyView(o) : null,
    section('Responses', responsesView(o)),
    tryIt(doc, o));
  for (const [key, a] of links) {
    if (key === o.key) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function focusConsole() {
  const first = shell.content.querySelector('#try input, #try textarea');
  shell.content.querySelector('#try')?.scrollIntoView({ block: 'start' });
  if (first) first.focus();
}

function renderOverview() {
  const info = doc.info || {};
  document.title = 'API reference · TruLayer';
  replace(shell.content,
    el('header', { class: 'page-header' }, el('h1', { class: 'page-title', tabindex: '-1' }, info.title || 'API reference')),
    el('p', { class: 'muted page-sub' }, `Version ${info.version ?? '—'} · ${ops.length} operations · `,
      el('a', { href: '/v1/openapi.json' }, 'the OpenAPI document')),
    info.description ? section(null, prose(info.description)) : null,
    section('Finding your way',
      prose('Pick an operation on the left, or press `/` and type part of its path, method or summary. ' +
        'Each operation has a console that sends it from this page with a token you type in.')));
}

function route() {
  let key = location.hash.replace(/^#\/?/, '');
  try {
    key = decodeURIComponent(key);
  } catch {
    // a malformed address: looked up as written
  }
  links.forEach((a) => a.removeAttribute('aria-current'));
  if (key === 'content' || key === 'try') return;
  shell.frame.classList.remove('nav-open');
  shell.menuButton.setAttribute('aria-expanded', 'false');
  window.scrollTo(0, 0);
  if (!key) {
    renderOverview();
    return;
  }
  const o = ops.find((x) => x.key === key);
  if (!o) {
    replace(shell.content, empty(`There is no operation ${key}.`, 'Find it in the list on the left.'));
    return;
  }
  renderOperation(o);
  shell.content.querySelector('h1')?.focus({ preventScroll: true });
}

async function start() {
  replace(root, loading('Loading the API reference…'));
  try {
    const response = await fetch('/v1/openapi.json', { credentials: 'omit', headers: { Accept: 'application/json' } });
    if (!response.ok) throw new ApiError(response.status, `The API document could not be loaded (${response.status}).`);
    doc = await response.json();
    if (!doc || typeof doc !== 'object' || typeof doc.paths !== 'object') throw new Error('The API document has no paths.');
  } catch (err) {
    replace(root, el('div', { class: 'boot-error' }, errorBox(err, start)));
    return;
  }
  ops = operations(doc);
  links = new Map();
  buildShell();
  route();
  window.addEventListener('hashchange', route);
}

start();
