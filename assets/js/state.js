// What the whole page shares: who is signed in, the organisation's
// projects, the project picked in the sidebar, and the theme.

import { api } from './api.js';

const PROJECT_KEY = 'trulayer.project';
const THEME_KEY = 'trulayer.theme';

function storageGet(key) {
  try {
    return window.localStorage.getItem(key);
  } catch {
    return null;
  }
}

function storageSet(key, value) {
  try {
    if (value === null || value === undefined || value === '') window.localStorage.removeItem(key);
    else window.localStorage.setItem(key, value);
  } catch {
    // private mode: the choice lasts for this page only
  }
}

export const state = {
  /** {id, email, role, org_id, org_name} or null. */
  user: null,
  /** Active projects, as the API lists them. */
  projects: [],
  /** The picked project's id, or '' for all projects. */
  projectId: storageGet(PROJECT_KEY) || '',
};

export function isOwner() {
  return state.user?.role === 'owner';
}

export function isViewer() {
  return state.user?.role === 'viewer';
}

/** Members and owners may change things; viewers only read. */
export function canWrite() {
  return !!state.user && state.user.role !== 'viewer';
}

/** Owners and viewers read the audit log. */
export function canReadAudit() {
  return state.user?.role === 'owner' || state.user?.role === 'viewer';
}

export async function loadProjects() {
  const data = await api('/v1/projects');
  state.projects = Array.isArray(data?.projects) ? data.projects.filter((p) => !p.archived) : [];
  if (state.projectId && !state.projects.some((p) => p.id === state.projectId)) setProject('');
  return state.projects;
}

/** Reloads the projects and tells the shell (the picker) and pages. */
export async function refreshProjects() {
  const list = await loadProjects();
  window.dispatchEvent(new CustomEvent('trulayer:projects-loaded'));
  return list;
}

/** Fills a project <select> from the loaded projects, keeping its choice. */
export function fillProjectSelect(select, preferred) {
  const keep = select.value || preferred || projectOrFirst();
  while (select.firstChild) select.removeChild(select.firstChild);
  for (const p of state.projects) {
    const option = document.createElement('option');
    option.value = p.id;
    option.textContent = p.name;
    select.appendChild(option);
  }
  select.value = keep;
  if (select.value !== keep && select.options.length) select.value = select.options[0].value;
}

export function setProject(id) {
  state.projectId = id || '';
  storageSet(PROJECT_KEY, state.projectId);
}

export function projectName(id) {
  if (!id) return null;
  const p = state.projects.find((x) => x.id === id);
  return p ? p.name : null;
}

/** The picked project, or the first one (for views that need a project). */
export function projectOrFirst() {
  return state.projectId || state.projects[0]?.id || '';
}

// ----------------------------------------------------------------- theme --

export function currentTheme() {
  const stored = storageGet(THEME_KEY);
  if (stored === 'light' || stored === 'dark') return stored;
  const dark = typeof window.matchMedia === 'function' && window.matchMedia('(prefers-color-scheme: dark)').matches;
  return dark ? 'dark' : 'light';
}

export function applyTheme(theme = currentTheme()) {
  document.documentElement.dataset.theme = theme;
  return theme;
}

export function toggleTheme() {
  const next = currentTheme() === 'dark' ? 'light' : 'dark';
  storageSet(THEME_KEY, next);
  return applyTheme(next);
}
