// TruLayer admin: start-up, the shell (sidebar, project picker, theme,
// sign-out) and the hash router. Pages live in ./js/pages/.

import { el, icon, ICONS, replace } from './js/dom.js';
import { api, onUnauthorized } from './js/api.js';
import { state, loadProjects, refreshProjects, setProject, applyTheme, toggleTheme, currentTheme, isOwner, canReadAudit } from './js/state.js';
import { loading, errorBox, toast, toastError, clearToasts, formDialog } from './js/ui.js';
import * as login from './js/pages/login.js';
import * as overview from './js/pages/overview.js';
import * as ingestion from './js/pages/ingestion.js';
import * as traces from './js/pages/traces.js';
import * as traceDetail from './js/pages/trace.js';
import * as sessions from './js/pages/sessions.js';
import * as failures from './js/pages/failures.js';
import * as evals from './js/pages/evals.js';
import * as datasets from './js/pages/datasets.js';
import * as datasetDetail from './js/pages/dataset.js';
import * as runDetail from './js/pages/run.js';
import * as projects from './js/pages/projects.js';
import * as keys from './js/pages/keys.js';
import * as users from './js/pages/users.js';
import * as audit from './js/pages/audit.js';
import * as webhooks from './js/pages/webhooks.js';
import * as evalKeys from './js/pages/evalkeys.js';
import * as privacy from './js/pages/privacy.js';
import * as alerts from './js/pages/alerts.js';

applyTheme();

const NAV = [
  { id: 'overview', label: 'Overview', icon: ICONS.overview },
  { id: 'ingestion', label: 'Ingestion', icon: ICONS.refresh },
  { id: 'traces', label: 'Traces', icon: ICONS.traces },
  { id: 'sessions', label: 'Sessions', icon: ICONS.sessions },
  { id: 'failures', label: 'Failures', icon: ICONS.failures },
  { id: 'evals', label: 'Evaluations', icon: ICONS.evals },
  { id: 'datasets', label: 'Datasets', icon: ICONS.datasets },
  { id: 'projects', label: 'Projects', icon: ICONS.projects },
  { id: 'keys', label: 'API keys', icon: ICONS.keys },
  { id: 'users', label: 'Users', icon: ICONS.users, show: isOwner },
  { id: 'audit', label: 'Audit log', icon: ICONS.audit, show: canReadAudit },
  { id: 'alerts', label: 'Alerts', icon: ICONS.alerts },
  { id: 'webhooks', label: 'Webhooks', icon: ICONS.webhooks },
  { id: 'eval-keys', label: 'Judge keys', icon: ICONS.key },
  { id: 'privacy', label: 'Privacy requests', icon: ICONS.privacy, show: isOwner },
];

/** Route name → page module; `project` pages follow the project picker. */
const PAGES = {
  overview: { page: overview, title: 'Overview', project: true },
  ingestion: { page: ingestion, title: 'Ingestion health', project: true },
  traces: { page: traces, title: 'Traces', project: true },
  trace: { page: traceDetail, title: 'Trace', nav: 'traces' },
  sessions: { page: sessions, title: 'Sessions', project: true },
  session: { page: sessions, title: 'Session', nav: 'sessions', detail: true },
  failures: { page: failures, title: 'Failures', project: true },
  evals: { page: evals, title: 'Evaluations', project: true },
  datasets: { page: datasets, title: 'Datasets' },
  dataset: { page: datasetDetail, title: 'Dataset', nav: 'datasets' },
  run: { page: runDetail, title: 'Run', nav: 'datasets' },
  projects: { page: projects, title: 'Projects' },
  keys: { page: keys, title: 'API keys' },
  users: { page: users, title: 'Users' },
  audit: { page: audit, title: 'Audit log' },
  alerts: { page: alerts, title: 'Alerts' },
  webhooks: { page: webhooks, title: 'Webhooks' },
  'eval-keys': { page: evalKeys, title: 'Judge keys' },
  privacy: { page: privacy, title: 'Privacy requests' },
};

const root = document.getElementById('app');
let shell = null; // {frame, content, picker, navLinks, whoami}
let current = null; // {controller, cleanup}
let returnTo = null;
let sessionEnded = false;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, queryString] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  const query = new URLSearchParams(queryString || '');
  const [first, second] = parts;
  if (!first) return { name: '', query };
  if (first === 'traces' && second) return { name: 'trace', id: second, query };
  if (first === 'sessions' && second) return { name: 'session', id: second, query };
  if (first === 'datasets' && second) return { name: 'dataset', id: second, query };
  // `#/runs/<id>` is the address the CI gate answers with (`run_url`).
  if (first === 'runs' && second) return { name: 'run', id: second, query };
  return { name: first, query };
}

function stopPage() {
  if (!current) return;
  current.controller.abort();
  try {
    if (typeof current.cleanup === 'function') current.cleanup();
  } catch (err) {
    console.error(err);
  }
  current = null;
}

async function route() {
  const r = parseHash();
  if (!state.user) {
    if (r.name !== 'login') {
      returnTo = location.hash && r.name ? location.hash : null;
      location.replace('#/login');
      return;
    }
    renderLogin();
    return;
  }
  if (r.name === '' || r.name === 'login') {
    location.replace('#/overview');
    return;
  }
  const def = PAGES[r.name];
  stopPage();
  clearToasts();
  ensureShell();
  const navId = def ? (def.nav || r.name) : null;
  for (const [id, link] of Object.entries(shell.navLinks)) {
    if (id === navId) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  shell.frame.classList.remove('nav-open');
  shell.frame.querySelector('.nav-toggle')?.setAttribute('aria-expanded', 'false');
  const content = shell.content;
  replace(content);
  content.scrollTop = 0;
  window.scrollTo(0, 0);
  if (!def) {
    document.title = 'Not found · TruLayer';
    content.appendChild(el('div', { class: 'state state-empty', 'data-testid': 'empty' },
      el('p', { class: 'state-title' }, 'There is no page here.'),
      el('a', { href: '#/overview', class: 'btn' }, 'Go to the overview')));
    return;
  }
  document.title = `${def.title} · TruLayer`;
  const controller = new AbortController();
  current = { controller, cleanup: null };
  const ctx = {
    signal: controller.signal,
    id: r.id,
    query: r.query,
    detail: !!def.detail,
    projectId: state.projectId,
    setTitle: (t) => { document.title = `${t} · TruLayer`; },
  };
  try {
    const cleanup = def.page.render(content, ctx);
    current.cleanup = cleanup;
  } catch (err) {
    console.error(err);
    replace(content, errorBox(err));
  }
}

// ----------------------------------------------------------------- login --

function renderLogin() {
  stopPage();
  shell = null;
  document.title = 'Sign in · TruLayer';
  const message = sessionEnded ? 'Your session has ended. Please sign in again.' : null;
  sessionEnded = false;
  replace(root, login.render({
    message,
    onLoggedIn: async (user) => {
      state.user = user;
      try {
        await loadProjects();
      } catch (err) {
        toastError(err);
      }
      const target = returnTo && !returnTo.startsWith('#/login') ? returnTo : '#/overview';
      returnTo = null;
      if (location.hash === target) route();
      else location.hash = target;
    },
  }));
}

onUnauthorized(() => {
  if (!state.user) return;
  state.user = null;
  sessionEnded = true;
  stopPage();
  const r = parseHash();
  returnTo = r.name && r.name !== 'login' ? location.hash : null;
  if (location.hash === '#/login') renderLogin();
  else location.hash = '#/login';
});

// ----------------------------------------------------------------- shell --

function ensureShell() {
  if (shell && shell.frame.isConnected) {
    refreshPicker();
    return;
  }
  const navLinks = {};
  const links = NAV.filter((n) => !n.show || n.show()).map((n) => {
    const a = el('a', { href: `#/${n.id}`, class: 'nav-link', 'data-testid': `nav-${n.id}` }, icon(n.icon), el('span', {}, n.label));
    navLinks[n.id] = a;
    return el('li', {}, a);
  });

  const picker = el('select', { 'data-testid': 'project-picker', class: 'project-picker', 'aria-label': 'Project' });
  picker.addEventListener('change', () => {
    setProject(picker.value);
    const r = parseHash();
    if (PAGES[r.name]?.project) route();
  });

  const themeButton = el('button', { type: 'button', class: 'btn btn-ghost theme-toggle', 'data-testid': 'theme-toggle' });
  const paintTheme = () => {
    const dark = currentTheme() === 'dark';
    replace(themeButton, icon(dark ? ICONS.sun : ICONS.moon), el('span', {}, dark ? 'Light mode' : 'Dark mode'));
    themeButton.setAttribute('aria-pressed', String(dark));
    themeButton.title = dark ? 'Switch to the light theme' : 'Switch to the dark theme';
  };
  paintTheme();
  themeButton.addEventListener('click', () => { toggleTheme(); paintTheme(); });

  const logout = el('button', { type: 'button', class: 'btn btn-ghost', 'data-testid': 'logout' }, icon(ICONS.logout), el('span', {}, 'Sign out'));
  logout.addEventListener('click', async () => {
    logout.disabled = true;
    try {
      await api('/v1/auth/logout', { method: 'POST', allow401: true });
    } catch {
      // the session is gone either way
    }
    state.user = null;
    stopPage();
    // Start afresh: nothing of this user's (filters, searches, pages) is
    // left in memory for whoever logs in next.
    location.hash = '#/login';
    location.reload();
  });

  const passwordButton = el('button', { type: 'button', class: 'btn btn-link btn-small', 'data-testid': 'change-password' }, 'Change password');
  passwordButton.addEventListener('click', openPasswordDialog);

  const menuButton = el('button', { type: 'button', class: 'btn btn-ghost nav-toggle', 'aria-label': 'Menu', 'aria-expanded': 'false' }, icon(ICONS.menu));

  const nav = el('nav', { class: 'sidebar', 'data-testid': 'nav', 'aria-label': 'Main' },
    el('div', { class: 'sidebar-top' },
      el('a', { href: '#/overview', class: 'brand', 'aria-label': 'TruLayer home' },
        el('span', { class: 'brand-mark', 'aria-hidden': 'true' }, 'T'),
        el('span', { class: 'brand-name' }, 'TruLayer')),
      menuButton),
    el('div', { class: 'sidebar-body' },
      el('label', { class: 'picker-label' }, el('span', { class: 'field-label' }, 'Project'), picker),
      el('ul', { class: 'nav-list' }, links),
      el('div', { class: 'sidebar-footer' },
        el('div', { class: 'who' },
          el('span', { class: 'who-email', 'data-testid': 'whoami', title: state.user.email }, state.user.email),
          el('span', { class: `badge badge-role badge-${state.user.role}` }, state.user.role),
          state.user.org_name ? el('span', { class: 'muted small who-org' }, state.user.org_name) : null),
        el('a', { href: '/docs', class: 'btn btn-ghost', 'data-testid': 'docs-link' }, icon(ICONS.book), el('span', {}, 'API reference')),
        passwordButton,
        themeButton,
        logout)));

  const content = el('main', { class: 'content', id: 'content', tabindex: '-1' });
  const frame = el('div', { class: 'frame' },
    el('a', { href: '#content', class: 'skip-link', on: { click: (e) => { e.preventDefault(); content.focus(); } } }, 'Skip to content'),
    nav, content);
  menuButton.addEventListener('click', () => {
    const open = frame.classList.toggle('nav-open');
    menuButton.setAttribute('aria-expanded', String(open));
  });
  replace(root, frame);
  shell = { frame, content, picker, navLinks };
  refreshPicker();
}

function refreshPicker() {
  if (!shell) return;
  const { picker } = shell;
  replace(picker,
    el('option', { value: '' }, 'All projects'),
    state.projects.map((p) => el('option', { value: p.id }, p.name)));
  picker.value = state.projectId;
  if (picker.value !== state.projectId) {
    setProject('');
    picker.value = '';
  }
}

// Pages announce project changes (`trulayer:projects-changed`); whoever
// reloads the projects announces it (`trulayer:projects-loaded`).
window.addEventListener('trulayer:projects-changed', () => {
  refreshProjects().catch(toastError);
});
window.addEventListener('trulayer:projects-loaded', () => refreshPicker());

function openPasswordDialog() {
  const current = el('input', { type: 'password', name: 'current_password', autocomplete: 'current-password', required: true });
  const next = el('input', { type: 'password', name: 'new_password', autocomplete: 'new-password', required: true, minlength: '8' });
  formDialog({
    testid: 'password-form',
    errorTestid: 'password-error',
    title: 'Change your password',
    intro: 'Changing it signs you out everywhere, including here.',
    fields: [['Current password', current], ['New password', next, 'At least 8 characters.']],
    submitLabel: 'Change password',
    submit: async () => {
      await api('/v1/auth/password', {
        method: 'POST', allow401: true, body: { current_password: current.value, new_password: next.value },
      });
      state.user = null;
      stopPage();
      toast('Password changed. Sign in with the new one.', 'success');
      location.hash = '#/login';
    },
    describe: (err) => (err.status === 401 ? 'The current password is not right.' : err.message),
  });
}

// ----------------------------------------------------------------- start --

async function start() {
  booted = false;
  replace(root, loading('Starting…'));
  try {
    state.user = await api('/v1/auth/me', { allow401: true });
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) {
      replace(root, el('div', { class: 'boot-error' }, errorBox(err, () => { start().finally(() => { booted = true; }); })));
      return;
    }
    state.user = null;
  }
  if (state.user) {
    try {
      await loadProjects();
    } catch (err) {
      toastError(err);
    }
  }
  route();
}

window.addEventListener('hashchange', () => { if (booted) route(); });
let booted = false;
start().finally(() => { booted = true; });
