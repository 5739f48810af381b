// The admin page in a real browser (Debian's Chromium driven by
// playwright-core), against a running server: every flow an operator goes
// through, from the first login to the logout, the API reference's console
// on the way (`docs.mjs`). Run by `tests/ui.rs`:
//
//   node tests/ui/e2e.mjs <server-url> <node-dir> <screenshot-dir> <email> <password> <judge-model>
//
// <node-dir> holds playwright-core (installed there by setup.sh);
// <judge-model> is the model the server's judge endpoint answers for (slowly). Prints one
// JSON report on stdout: `error` (the step that failed and why, or null),
// `facts` (what the page showed, for the Rust test to assert on),
// `screenshots`, and what must stay empty: `dialogs`, `page_errors`,
// `console_errors`, `foreign_requests`, `failed_requests`,
// `unexpected_responses`.

import { createRequire } from 'node:module';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { WAIT, check, text, tid, visible, waitUntil } from './helpers.mjs';
import { referenceFlows } from './docs.mjs';

const [serverUrl, nodeDir, shotDir, email, password, judgeModel] = process.argv.slice(2);
if (!judgeModel) {
  console.error('usage: e2e.mjs <server-url> <node-dir> <screenshot-dir> <email> <password> <judge-model>');
  process.exit(2);
}
const require = createRequire(path.join(nodeDir, 'package.json'));
const { chromium } = require('playwright-core');

/** Longest wait for an evaluation's result (queued, run, then shown). */
const EVAL_WAIT = 20_000;
/** Longest wait for a dataset run to finish (scheduled, run, then shown). */
const RUN_WAIT = 30_000;
/** The whole run, after which the script reports and gives up. */
const DEADLINE = 240_000;

const origin = new URL(serverUrl).origin;
const run = randomUUID().slice(0, 8);
const names = {
  project: `ui-e2e-${run}`,
  spare: `ui-e2e-spare-${run}`,
  user: `viewer-${run}@example.com`,
  key: `ui-e2e-key-${run}`,
  session: `ui-e2e-session-${run}`,
  rule: `ui_e2e_not_empty_${run}`,
  // A word nothing else holds, for the full-text search.
  word: `quokkazanzibar${run}`,
  savedFilter: `errors only ${run}`,
  feedback: `ui-e2e feedback ${run}`,
  dataset: `ui-e2e-dataset-${run}`,
  spareDataset: `ui-e2e-dataset-spare-${run}`,
  // The rules that score the dataset's runs: the second one makes the
  // second run score lower, so the comparison has a regression to show.
  runRule: `ui_e2e_run_not_empty_${run}`,
  jsonRule: `ui_e2e_run_json_${run}`,
  firstVersion: 'v1-as-recorded',
  secondVersion: 'v2-json-only',
  judgedVersion: 'v3-judged',
  alertRule: 'quiet week',
  spareAlertRule: 'spare alert',
};
const XSS_INPUT = '<img src=x onerror=alert(1)>';
const XSS_METADATA = '<script>alert(2)</script>';

const report = {
  error: null,
  steps: [],
  names,
  ids: {},
  facts: {},
  screenshots: [],
  dialogs: [],
  page_errors: [],
  console_errors: [],
  foreign_requests: [],
  failed_requests: [],
  unexpected_responses: [],
};
const facts = report.facts;

let current = 'start';
// 401s are what a logged-out page gets; once logged in, none is expected.
let loggedIn = false;
// A path whose next refusal a step expects, and its status (then cleared).
let expectRefusal = null;

async function step(name, body) {
  current = name;
  const started = Date.now();
  await body();
  report.steps.push({ name, ms: Date.now() - started });
}

/** Navigates by the hash router and waits for `selector`. */
async function go(page, hash, selector) {
  await page.goto(`${origin}/#/${hash}`);
  return visible(page, selector);
}

async function shoot(page, name) {
  const file = path.join(shotDir, `${name}.png`);
  // The sidebar is sticky: a capture from the top shows it beside the page.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file, fullPage: true });
  report.screenshots.push(file);
}

/** Selects the first option that satisfies `wanted`, waiting for one to be there. */
async function chooseOption(select, what, wanted) {
  const option = await waitUntil(`an option ${what}`, async () => {
    const options = await select.locator('option').evaluateAll((os) =>
      os.map((o) => ({ value: o.value, label: (o.textContent ?? '').trim() })),
    );
    return options.find(wanted) ?? null;
  });
  await select.selectOption(option.value);
  return option;
}

const byNameOrValue = (name) => (o) => o.value === name || o.label === name || o.label.includes(name);

/** Adds an evaluation rule of `kind` to the UI's project with the evaluations page's form. */
async function createRule(page, metric, kind) {
  await go(page, 'evals', `form${tid('rule-create')}`);
  const form = page.locator(`form${tid('rule-create')}`);
  await form.locator('input[name=metric_name]').fill(metric);
  await chooseOption(form.locator('select[name=evaluator_type]'), 'rule', (o) => o.value === 'rule');
  await chooseOption(form.locator('select[name=rule]'), kind, (o) => o.value === kind);
  await form.locator('input[name=sample_rate]').fill('1');
  await chooseOption(form.locator('select[name=project]'), `naming project ${names.project}`, byNameOrValue(names.project));
  await form.locator('button[type=submit], input[type=submit]').first().click();
  return visible(page, `tr${tid('rule-row')}[data-rule-metric="${metric}"]`);
}

/** Presses Tab until `selector` has the focus; how many presses it took. */
async function tabTo(page, selector, most = 40) {
  for (let presses = 1; presses <= most; presses += 1) {
    await page.keyboard.press('Tab');
    if (await page.evaluate((s) => !!document.activeElement?.matches(s), selector)) return presses;
  }
  throw new Error(`${selector} was not reached in ${most} presses of Tab`);
}

/** Creates a version with the dataset page's form. */
async function createVersion(page, name, prompt, judge = '') {
  const form = page.locator(`form${tid('version-create')}`);
  await form.locator('input[name=name]').fill(name);
  await form.locator('textarea[name=system_prompt]').fill(prompt);
  await form.locator('input[name=judge_model]').fill(judge);
  await form.locator('button[type=submit]').click();
  return visible(page, `tr${tid('version-row')}[data-version-name="${name}"]`);
}

/** Starts a run of `version` from the dataset page; its id and its row. */
async function startRun(page, version, known) {
  const form = page.locator(`form${tid('run-create')}`);
  await chooseOption(form.locator('select[name=eval_version_id]'), version, (o) => o.label === version);
  await form.locator('button[type=submit]').click();
  const id = await waitUntil(`a new run of ${version} listed`, async () => {
    const listed = await page.locator(`tr${tid('run-row')}`).evaluateAll((trs) => trs.map((tr) => tr.dataset.runId));
    return listed.find((r) => !known.includes(r)) ?? null;
  });
  return { id, row: page.locator(`tr${tid('run-row')}[data-run-id="${id}"]`) };
}

/** Starts a run of `version` from the dataset page; waits for it to finish in the list. */
async function runVersion(page, version, known) {
  const { id, row } = await startRun(page, version, known);
  const progress = row.locator(tid('run-progress'));
  // No reload: the page follows the run's progress by itself. What the row
  // shows on the way is kept ("status done/total").
  const seen = [];
  const shown = await waitUntil(`the run of ${version} completed in the list`, async () => {
    const status = await row.getAttribute('data-status');
    const now = `${status} ${await progress.getAttribute('data-done')}/${await progress.getAttribute('data-total')}`;
    if (seen[seen.length - 1] !== now) seen.push(now);
    return status === 'completed' ? text(row) : null;
  }, RUN_WAIT);
  return {
    id,
    seen,
    row: shown,
    done: await progress.getAttribute('data-done'),
    total: await progress.getAttribute('data-total'),
  };
}

/** The API with a key or a cookie, as a client outside the browser. */
async function api(method, route, { key, cookie, body } = {}) {
  const headers = {};
  if (key) headers.authorization = `Bearer ${key}`;
  if (cookie) headers.cookie = cookie;
  if (body) headers['content-type'] = 'application/json';
  const response = await fetch(`${origin}${route}`, {
    method,
    headers,
    body: body ? JSON.stringify(body) : undefined,
  });
  const answer = await response.text();
  let json = null;
  try {
    json = JSON.parse(answer);
  } catch {
    // not JSON: keep the status
  }
  return { status: response.status, json, text: answer };
}

function traces() {
  const now = Date.now();
  const at = (msAgo) => new Date(now - msAgo).toISOString();
  const rag = {
    id: randomUUID(),
    name: 'ui-e2e-rag',
    session_id: names.session,
    input: `Where does the ${names.word} live?`,
    output: 'On Rottnest Island.',
    started_at: at(6000),
    ended_at: at(2000),
    tags: ['e2e', 'rag'],
    metadata: { user_id: 'u-7', attempt: 1 },
    spans: [
      {
        name: 'vector-search',
        type: 'retrieval',
        input: `${names.word} habitat`,
        output: '["Quokkas live on Rottnest Island."]',
        start_time: at(5900),
        end_time: at(5000),
      },
      {
        name: 'openai.chat',
        type: 'llm',
        model: 'gpt-4o-mini',
        prompt_tokens: 42,
        completion_tokens: 7,
        input: `Answer: where does the ${names.word} live?`,
        output: 'On Rottnest Island.',
        start_time: at(4900),
        end_time: at(2100),
      },
    ],
  };
  const xss = {
    id: randomUUID(),
    name: 'ui-e2e-xss',
    session_id: names.session,
    input: XSS_INPUT,
    output: '<b>not bold</b>',
    metadata: { html: XSS_METADATA },
    tags: ['e2e', '<i>tag</i>'],
    started_at: at(9000),
    ended_at: at(8000),
    spans: [
      {
        name: 'render',
        type: 'llm',
        model: 'gpt-4o-mini',
        prompt_tokens: 5,
        completion_tokens: 5,
        input: XSS_INPUT,
        output: '<svg onload=alert(3)>',
        start_time: at(8900),
        end_time: at(8100),
      },
    ],
  };
  const failing = {
    id: randomUUID(),
    name: 'ui-e2e-failing',
    input: 'Divide by zero, please.',
    error: 'ZeroDivisionError: division by zero',
    started_at: at(12000),
    ended_at: at(11500),
    spans: [
      {
        name: 'tool-call',
        type: 'tool',
        error: 'ZeroDivisionError: division by zero',
        start_time: at(11900),
        end_time: at(11600),
      },
    ],
  };
  return { rag, xss, failing };
}

async function main(browser) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 860 },
    colorScheme: 'light',
    // No transitions: a screenshot shows the page as it settled.
    reducedMotion: 'reduce',
  });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  // A blocked load or inline code shows as a console error, like any other.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline code'}`);
    });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);

  page.on('dialog', (dialog) => {
    report.dialogs.push({ step: current, type: dialog.type(), message: dialog.message() });
    dialog.dismiss().catch(() => {});
  });
  page.on('pageerror', (error) => {
    report.page_errors.push({ step: current, message: String(error?.stack ?? error) });
  });
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const body = message.text();
    // The browser logs every HTTP error status of a fetch; those are
    // judged below by what was expected, from the responses themselves.
    if (body.startsWith('Failed to load resource: the server responded with a status of')) return;
    report.console_errors.push({ step: current, message: body, location: message.location()?.url });
  });
  context.on('request', (request) => {
    const url = request.url();
    const scheme = url.split(':', 1)[0];
    if (['data', 'blob', 'about'].includes(scheme)) return;
    if (new URL(url).origin !== origin) report.foreign_requests.push({ step: current, url });
  });
  context.on('requestfailed', (request) => {
    const failure = request.failure()?.errorText ?? '';
    // Navigating away cancels what the page had in flight (the live feed).
    if (failure.includes('ERR_ABORTED')) return;
    report.failed_requests.push({ step: current, url: request.url(), failure });
  });
  context.on('response', (response) => {
    const status = response.status();
    if (status < 400) return;
    if (status === 401 && !loggedIn) return;
    // The refusals steps ask for: a token or current password that is
    // wrong, a run with nothing to score it.
    if (expectRefusal && status === expectRefusal.status && new URL(response.url()).pathname === expectRefusal.path) {
      expectRefusal = null;
      return;
    }
    report.unexpected_responses.push({
      step: current,
      method: response.request().method(),
      url: response.url(),
      status,
    });
  });

  try {
    await flows(page, context);
  } catch (error) {
    report.error = {
      step: current,
      message: String(error?.message ?? error),
      url: page.url(),
      page_text: (await page.locator('body').innerText().catch(() => '')).slice(0, 2000),
    };
    await shoot(page, `failed-${current.replace(/[^a-z0-9]+/gi, '-')}`).catch(() => {});
  }
}

async function flows(page, context) {
  let secret;
  let rotated;
  const ids = report.ids;

  await step('the page loads and asks for a login', async () => {
    const response = await page.goto(`${origin}/`);
    check(response?.status() === 200, `GET / answered ${response?.status()}`);
    facts.index_content_type = response.headers()['content-type'];
    await visible(page, `form${tid('login-form')}`);
    facts.login_hash = new URL(page.url()).hash;
    await shoot(page, 'login');
  });

  await step('a wrong password shows an error', async () => {
    const form = page.locator(`form${tid('login-form')}`);
    await form.locator('input[name=email]').fill(email);
    await form.locator('input[name=password]').fill(`${password}-wrong`);
    await form.locator('button[type=submit]').click();
    facts.login_error = await text(await visible(page, tid('login-error')));
    facts.nav_after_wrong_password = await page.locator(tid('nav')).count();
  });

  await step('the right password logs in', async () => {
    const form = page.locator(`form${tid('login-form')}`);
    await form.locator('input[name=email]').fill(email);
    await form.locator('input[name=password]').fill(password);
    loggedIn = true;
    await form.locator('button[type=submit]').click();
    await visible(page, `nav${tid('nav')}`);
    facts.whoami = await text(await visible(page, tid('whoami')));
    facts.hash_after_login = new URL(page.url()).hash;
    facts.nav_links = await page
      .locator(`nav${tid('nav')} a[data-testid^="nav-"]`)
      .evaluateAll((links) => links.map((a) => [a.dataset.testid, a.getAttribute('href')]));
  });

  await step('create a project', async () => {
    await go(page, 'projects', `table${tid('projects-table')}`);
    const form = page.locator(`form${tid('project-create')}`);
    await form.locator('input[name=name]').fill(names.project);
    await form.locator('button[type=submit], input[type=submit]').first().click();
    const row = await visible(page, `tr${tid('project-row')}[data-project-name="${names.project}"]`);
    facts.project_row = await text(row);
    facts.project_rows = await page.locator(`tr${tid('project-row')}`).count();

    // A second project, archived and brought back.
    await form.locator('input[name=name]').fill(names.spare);
    await form.locator('button[type=submit], input[type=submit]').first().click();
    const spare = `tr${tid('project-row')}[data-project-name="${names.spare}"]`;
    await (await visible(page, `${spare} ${tid('project-archive')}`)).click();
    await visible(page, `${spare} ${tid('project-unarchive')}`);
    facts.spare_archived = await text(page.locator(spare));
    facts.spare_buttons_archived = await page.locator(`${spare} ${tid('project-archive')}`).count();
    await page.locator(`${spare} ${tid('project-unarchive')}`).click();
    await visible(page, `${spare} ${tid('project-archive')}`);
    facts.spare_unarchived = await text(page.locator(spare));
    facts.spare_buttons_unarchived = await page.locator(`${spare} ${tid('project-unarchive')}`).count();
    await shoot(page, 'projects');
  });

  await step('create an API key for the project', async () => {
    await go(page, 'keys', `table${tid('keys-table')}`);
    const form = page.locator(`form${tid('key-create')}`);
    await form.locator('input[name=name]').fill(names.key);
    facts.key_project_option = await chooseOption(
      form.locator('select[name=project]'),
      `naming project ${names.project}`,
      byNameOrValue(names.project),
    );
    for (const scope of ['ingest', 'query']) {
      await form.locator(`input[name=scope][value=${scope}]`).check();
    }
    await form.locator('button[type=submit], input[type=submit]').first().click();
    const shown = await visible(page, tid('key-secret'));
    secret = await waitUntil('the new key in key-secret', async () => {
      const value = (await shown.evaluate((el) => ('value' in el && el.value) || el.textContent)).trim();
      return value.startsWith('tl_') ? value : null;
    });
    facts.secret_prefix = secret.slice(0, 3);
    await visible(page, `tr${tid('key-row')}[data-key-name="${names.key}"]`);
    const copy = page.locator(`button${tid('key-copy')}`);
    facts.copy_button = await copy.count();
    if (facts.copy_button) {
      await copy.first().click();
      facts.clipboard_holds_key = (await page.evaluate(() => navigator.clipboard.readText())) === secret;
    }
  });

  await step('ingest traces with the new key', async () => {
    const { rag, xss, failing } = traces();
    for (const [name, trace] of Object.entries({ rag, xss, failing })) {
      const answer = await api('POST', '/v1/ingest', { key: secret, body: trace });
      check(answer.status === 201, `ingest ${name} with the UI's key: ${answer.status} ${answer.text}`);
      ids[name] = answer.json.id;
    }
    const listed = await api('GET', `/v1/traces?limit=10`, { key: secret });
    check(listed.status === 200, `listing with the UI's key: ${listed.status} ${listed.text}`);
    facts.traces_listed_with_key = listed.json.traces.map((t) => t.id).sort();
    facts.project_of_ingested = [...new Set(listed.json.traces.map((t) => t.project_id))];
  });

  await referenceFlows({
    page,
    context,
    origin,
    step,
    shoot,
    facts,
    key: secret,
    ids,
    refuse: (route) => {
      expectRefusal = { path: route, status: 401 };
    },
  });

  await step('the overview counts the traces', async () => {
    await go(page, 'overview', tid('card-traces'));
    const picker = page.locator(`select${tid('project-picker')}`);
    facts.picker_option = await chooseOption(picker, `naming project ${names.project}`, byNameOrValue(names.project));
    const card = page.locator(tid('card-traces'));
    facts.card_traces = await waitUntil('3 traces on card-traces', async () => {
      const shown = await text(card);
      return /(^|\s)3(\s|$)/.test(shown) ? shown : null;
    });
    for (const card of ['card-error-rate', 'card-p95', 'card-cost', 'card-tokens']) {
      facts[card.replace(/-/g, '_')] = await text(await visible(page, tid(card)));
    }
    await visible(page, `svg${tid('chart-traces')}`);
    await visible(page, `svg${tid('chart-latency')}`);
    const models = await visible(page, `table${tid('models-table')}`);
    facts.models_table = await waitUntil('gpt-4o-mini in models-table', async () => {
      const shown = await text(models);
      return shown.includes('gpt-4o-mini') ? shown : null;
    });
    facts.range_options = await page
      .locator(`select${tid('range')} option`)
      .evaluateAll((os) => os.map((o) => o.value));
    await shoot(page, 'overview');
  });

  await step('the traces list, its search and filters', async () => {
    await go(page, 'traces', `table${tid('traces-table')}`);
    const rows = page.locator(`tr${tid('trace-row')}`);
    const rowIds = async () => rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.traceId).sort());
    const all = [ids.rag, ids.xss, ids.failing].sort();
    await waitUntil('the three traces listed', async () => JSON.stringify(await rowIds()) === JSON.stringify(all));
    facts.trace_rows = (await rowIds()).length;
    facts.xss_img_in_list = await page.locator('img[src="x"]').count();
    await shoot(page, 'traces');

    await chooseOption(page.locator(`select${tid('filter-error')}`), 'for errors only', (o) =>
      /^(true|yes|errors?|1)$/i.test(o.value),
    );
    await waitUntil('only the failing trace', async () => JSON.stringify(await rowIds()) === JSON.stringify([ids.failing]));
    facts.error_filter_rows = await rowIds();
    await chooseOption(page.locator(`select${tid('filter-error')}`), 'for any status', (o) => /^(any|)$/.test(o.value));
    await waitUntil('the three traces again', async () => (await rowIds()).length === 3);

    const search = page.locator(`input${tid('trace-search')}`);
    await search.fill(names.word);
    await search.press('Enter');
    await waitUntil(`one trace holding ${names.word}`, async () => JSON.stringify(await rowIds()) === JSON.stringify([ids.rag]));
    facts.search_rows = await rowIds();
    facts.hash_after_search = new URL(page.url()).hash;
  });

  await step('saved filters: save, apply and delete', async () => {
    await go(page, 'traces', `table${tid('traces-table')}`);
    const rows = page.locator(`tr${tid('trace-row')}`);
    const rowIds = async () => rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.traceId).sort());
    const search = page.locator(`input${tid('trace-search')}`);
    await search.fill('');
    await page.locator(`button${tid('trace-search-go')}`).click();
    await waitUntil('the three traces listed', async () => (await rowIds()).length === 3);
    const errorFilter = page.locator(`select${tid('filter-error')}`);
    await chooseOption(errorFilter, 'for errors only', (o) => o.value === 'true');
    await waitUntil('only the failing trace', async () => JSON.stringify(await rowIds()) === JSON.stringify([ids.failing]));
    await page.locator(`button${tid('saved-filter-save')}`).click();
    const form = await visible(page, `form${tid('saved-filter-form')}`);
    facts.saved_filter_intro = await text(form);
    await form.locator('input[name=name]').fill(names.savedFilter);
    await form.locator('button[type=submit]').click();
    await page.locator(`form${tid('saved-filter-form')}`).waitFor({ state: 'detached', timeout: WAIT });
    const select = page.locator(`select${tid('saved-filter-select')}`);
    const optionLabels = async () => select.locator('option').evaluateAll((os) => os.map((o) => o.textContent));
    facts.saved_filter_options = await waitUntil('the saved filter listed', async () => {
      const labels = await optionLabels();
      return labels.includes(names.savedFilter) ? labels : null;
    });
    const project = await page.evaluate(() => window.localStorage.getItem('trulayer.project'));
    const cookies = await context.cookies(origin);
    const cookie = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
    facts.saved_filter_api = (await api('GET', `/v1/saved-filters?project_id=${encodeURIComponent(project || 'default')}`, { cookie })).json;

    // Back to every trace, then the saved filter brings the errors back.
    await chooseOption(errorFilter, 'for any status', (o) => o.value === 'any');
    await waitUntil('the three traces again', async () => (await rowIds()).length === 3);
    await chooseOption(select, names.savedFilter, (o) => o.label === names.savedFilter);
    await waitUntil('only the failing trace, from the saved filter', async () => JSON.stringify(await rowIds()) === JSON.stringify([ids.failing]));
    facts.saved_filter_rows = await rowIds();
    facts.saved_filter_error_control = await errorFilter.inputValue();
    await shoot(page, 'traces-saved-filter');

    // The owner deletes it; it leaves the list.
    await page.locator(`button${tid('saved-filter-delete')}`).click();
    await page.locator(`button${tid('confirm-yes')}`).click();
    facts.saved_filter_options_after = await waitUntil('the saved filter gone', async () => {
      const labels = await optionLabels();
      return labels.includes(names.savedFilter) ? null : labels;
    });
    await chooseOption(errorFilter, 'for any status', (o) => o.value === 'any');
    await waitUntil('the three traces again', async () => (await rowIds()).length === 3);
  });

  await step('the live tail shows a new trace', async () => {
    await go(page, 'traces', `table${tid('traces-table')}`);
    const toggle = page.locator(`input${tid('live-toggle')}`);
    // The server subscribes the stream before it answers: once the answer
    // is in, no new trace can slip past.
    const opened = page.waitForResponse((r) => new URL(r.url()).pathname === '/v1/traces/live', {
      timeout: WAIT,
    });
    await toggle.check();
    facts.live_stream_status = (await opened).status();
    const trace = {
      id: randomUUID(),
      name: 'ui-e2e-live',
      input: 'live',
      output: 'tail',
      started_at: new Date(Date.now() - 1000).toISOString(),
      ended_at: new Date().toISOString(),
    };
    const answer = await api('POST', '/v1/ingest', { key: secret, body: trace });
    check(answer.status === 201, `ingest the live trace: ${answer.status} ${answer.text}`);
    ids.live = trace.id;
    await visible(page, `tr${tid('trace-row')}[data-trace-id="${trace.id}"]`);
    facts.live_row_first = (await page.locator(`tr${tid('trace-row')}`).first().getAttribute('data-trace-id')) === trace.id;
    await toggle.uncheck();
  });

  await step('the trace detail shows the span tree', async () => {
    await page.locator(`tr${tid('trace-row')}[data-trace-id="${ids.rag}"]`).click();
    await waitUntil('the detail route', async () => new URL(page.url()).hash.includes(ids.rag));
    facts.detail_hash = new URL(page.url()).hash;
    facts.trace_name = await text(await visible(page, tid('trace-name')));
    facts.trace_input = await text(await visible(page, tid('trace-input')));
    facts.trace_output = await text(await visible(page, tid('trace-output')));
    facts.trace_tags = await text(page.locator(tid('trace-tags')).first());
    const tree = await visible(page, tid('span-tree'));
    const spans = tree.locator(tid('span-row'));
    await waitUntil('two span rows', async () => (await spans.count()) === 2);
    facts.span_rows = await spans.count();
    facts.span_bars = await tree.locator(`${tid('span-row')} ${tid('span-bar')}`).count();
    facts.span_bar_widths = await tree
      .locator(`${tid('span-row')} ${tid('span-bar')}`)
      .evaluateAll((bars) => bars.map((b) => Math.round(b.getBoundingClientRect().width)));
    facts.span_ids = await spans.evaluateAll((rows) => rows.map((r) => r.dataset.spanId));
    await spans.nth(1).click();
    const detail = await visible(page, tid('span-detail'));
    facts.span_detail = await waitUntil('the llm span in span-detail', async () => {
      const shown = await text(detail);
      return shown.includes('openai.chat') ? shown : null;
    });
    await shoot(page, 'trace-detail');
  });

  await step('feedback on the trace', async () => {
    const form = page.locator(`form${tid('feedback-form')}`);
    await form.waitFor({ state: 'visible' });
    facts.feedback_label = await chooseOption(form.locator('select[name=label]'), 'good', (o) => o.value === 'good');
    await form.locator('textarea[name=comment]').fill(names.feedback);
    await form.locator('button[type=submit], input[type=submit]').first().click();
    const item = page.locator(`${tid('feedback-list')} ${tid('feedback-item')}`, { hasText: names.feedback });
    await item.first().waitFor({ state: 'visible' });
    facts.feedback_item = await text(item.first());
  });

  await step('run a not_empty evaluation from the detail', async () => {
    const form = page.locator(`form${tid('run-eval-form')}`);
    await form.waitFor({ state: 'visible' });
    facts.eval_presets = await form
      .locator('select[name=preset] option')
      .evaluateAll((os) => os.map((o) => o.value));
    await chooseOption(form.locator('select[name=preset]'), 'not_empty', (o) => o.value === 'not_empty');
    await form.locator('button[type=submit], input[type=submit]').first().click();
    const item = page.locator(`${tid('evals-list')} ${tid('eval-item')}`, { hasText: 'not_empty' });
    facts.eval_item = await waitUntil(
      'the not_empty evaluation passed',
      async () => {
        const shown = (await item.count()) ? await text(item.first()) : '';
        return /pass/i.test(shown) ? shown : null;
      },
      EVAL_WAIT,
    );
  });

  await step('filters by feedback and by model', async () => {
    await go(page, 'traces', `table${tid('traces-table')}`);
    const rows = page.locator(`tr${tid('trace-row')}`);
    const rowIds = async () => rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.traceId).sort());
    const search = page.locator(`input${tid('trace-search')}`);
    await search.fill('');
    await page.locator(`button${tid('trace-search-go')}`).click();
    await waitUntil('every trace listed again', async () => (await rowIds()).length === 4);
    const feedback = page.locator(`select${tid('filter-feedback')}`);
    await chooseOption(feedback, 'good', (o) => o.value === 'good');
    await waitUntil('only the trace with good feedback', async () => JSON.stringify(await rowIds()) === JSON.stringify([ids.rag]));
    facts.feedback_filter_rows = await rowIds();
    await chooseOption(feedback, 'any feedback', (o) => /^(any|)$/.test(o.value));
    await waitUntil('every trace listed again', async () => (await rowIds()).length === 4);
    const model = page.locator(`input${tid('filter-model')}`);
    await model.fill('gpt-4o-mini');
    await model.press('Enter');
    const withModel = [ids.rag, ids.xss].sort();
    await waitUntil('the traces of gpt-4o-mini', async () => JSON.stringify(await rowIds()) === JSON.stringify(withModel));
    facts.model_filter_rows = await rowIds();
    await model.fill('');
    await model.press('Enter');
    await waitUntil('every trace listed again', async () => (await rowIds()).length === 4);
  });

  await step('the failing trace shows its error', async () => {
    await go(page, `traces/${ids.failing}`, tid('trace-error'));
    facts.failing_error = await text(page.locator(tid('trace-error')).first());
    facts.failing_span_rows = await page.locator(tid('span-row')).count();
  });

  await step('the XSS trace shows its payload as text', async () => {
    await go(page, `traces/${ids.xss}`, tid('trace-input'));
    facts.xss_input = await page.locator(tid('trace-input')).first().textContent();
    facts.xss_metadata = await (await visible(page, tid('trace-metadata'))).textContent();
    facts.xss_output = await page.locator(tid('trace-output')).first().textContent();
    await visible(page, tid('span-row'));
    facts.xss_span_rows = await page.locator(tid('span-row')).count();
    facts.xss_img = await page.locator('img[src="x"]').count();
    facts.xss_script = await page
      .locator('script')
      .evaluateAll((scripts) => scripts.filter((s) => s.textContent.includes('alert')).length);
    facts.xss_svg_onload = await page.locator('svg[onload]').count();
    facts.xss_bold = await page
      .locator('b')
      .evaluateAll((bold) => bold.filter((b) => b.textContent === 'not bold').length);
    await shoot(page, 'trace-detail-xss');
  });

  await step('an evaluation rule: create and toggle', async () => {
    await go(page, 'evals', `table${tid('rules-table')}`);
    await visible(page, `table${tid('evals-table')}`);
    await visible(page, `svg${tid('chart-evals')}`);
    const row = await createRule(page, names.rule, 'not_empty');
    const toggle = row.locator(`input${tid('rule-toggle')}`);
    facts.rule_enabled_before = await toggle.isChecked();
    await toggle.click();
    facts.rule_enabled_after = await waitUntil('the toggle to flip', async () => {
      const now = await page
        .locator(`tr${tid('rule-row')}[data-rule-metric="${names.rule}"] input${tid('rule-toggle')}`)
        .isChecked();
      return now !== facts.rule_enabled_before ? { checked: now } : null;
    }).then((r) => r.checked);
    facts.evals_table = await text(page.locator(`table${tid('evals-table')}`));
    await shoot(page, 'evals');
  });

  await step('datasets: create one, and delete another after asking', async () => {
    await go(page, 'datasets', tid('datasets-table'));
    const form = page.locator(`form${tid('dataset-create')}`);
    for (const name of [names.dataset, names.spareDataset]) {
      await form.locator('input[name=name]').fill(name);
      await form.locator('input[name=description]').fill(`Hard cases of ${run}`);
      await chooseOption(form.locator('select[name=project]'), `naming project ${names.project}`, byNameOrValue(names.project));
      await form.locator('button[type=submit]').click();
      await visible(page, `tr${tid('dataset-row')}[data-dataset-name="${name}"]`);
    }
    const spare = `tr${tid('dataset-row')}[data-dataset-name="${names.spareDataset}"]`;
    // Cancelling the confirmation keeps the dataset; confirming deletes it.
    await page.locator(`${spare} button${tid('dataset-delete')}`).click();
    facts.dataset_delete_question = await text(await visible(page, tid('confirm-modal')));
    await page.locator(`button${tid('confirm-no')}`).click();
    await page.locator(tid('confirm-modal')).waitFor({ state: 'detached' });
    facts.spare_dataset_after_cancel = await page.locator(spare).count();
    await page.locator(`${spare} button${tid('dataset-delete')}`).click();
    await (await visible(page, `button${tid('confirm-yes')}`)).click();
    await page.locator(spare).waitFor({ state: 'detached' });
    facts.spare_dataset_after_delete = await page.locator(spare).count();
    const row = page.locator(`tr${tid('dataset-row')}[data-dataset-name="${names.dataset}"]`);
    ids.dataset = await row.getAttribute('data-dataset-id');
    facts.dataset_row = await text(row);
    await shoot(page, 'datasets');
  });

  await step('add traces to the dataset from their pages', async () => {
    const addFrom = async (traceId, label) => {
      await go(page, `traces/${traceId}`, `form${tid('add-to-dataset')}`);
      const form = page.locator(`form${tid('add-to-dataset')}`);
      await chooseOption(form.locator('select[name=dataset]'), `naming ${names.dataset}`, (o) => o.value === ids.dataset);
      if (label) await chooseOption(form.locator('select[name=label]'), label, (o) => o.value === label);
      const again = async () => {
        await form.locator('button[type=submit]').click();
        const status = form.locator(tid('add-to-dataset-status'));
        return waitUntil('the dataset to answer', async () => {
          const result = await status.getAttribute('data-result');
          return result ? { result, text: await text(status) } : null;
        });
      };
      return { first: await again(), again };
    };
    const rag = await addFrom(ids.rag, null);
    facts.add_rag = rag.first;
    // The same trace again is found there, not added twice.
    facts.add_rag_again = await rag.again();
    facts.add_failing = (await addFrom(ids.failing, 'fail')).first;
    facts.add_xss = (await addFrom(ids.xss, null)).first;
  });

  await step('the dataset: label by keyboard, filter by label, export, remove', async () => {
    await go(page, 'datasets', `tr${tid('dataset-row')}[data-dataset-id="${ids.dataset}"]`);
    await page.locator(`tr${tid('dataset-row')}[data-dataset-id="${ids.dataset}"]`).click();
    await waitUntil('the dataset route', async () => new URL(page.url()).hash === `#/datasets/${ids.dataset}`);
    facts.dataset_name = await text(await visible(page, tid('dataset-name')));
    const rows = page.locator(`tr${tid('item-row')}`);
    const rowIds = async () => rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.traceId).sort());
    const three = [ids.rag, ids.failing, ids.xss].sort();
    await waitUntil('the three traces listed', async () => JSON.stringify(await rowIds()) === JSON.stringify(three));
    facts.dataset_xss_img = await page.locator('img[src="x"]').count();
    const labelOf = (traceId) => page.locator(`tr${tid('item-row')}[data-trace-id="${traceId}"] ${tid('item-label')}`).getAttribute('data-label');
    facts.labels_before = { rag: await labelOf(ids.rag), failing: await labelOf(ids.failing) };

    // By keyboard: from the label filter, Tab reaches the trace's Pass; Space presses it.
    await page.locator(`select${tid('items-filter')}`).focus();
    facts.tabs_to_pass = await tabTo(page, `tr[data-trace-id="${ids.rag}"] button${tid('item-label-pass')}`);
    await page.keyboard.press('Space');
    facts.rag_label_after = await waitUntil('the trace labelled pass', async () => ((await labelOf(ids.rag)) === 'pass' ? 'pass' : null));

    const filter = page.locator(`select${tid('items-filter')}`);
    facts.label_filter_rows = {};
    for (const [label, wanted] of [['pass', [ids.rag]], ['fail', [ids.failing]], ['unlabeled', [ids.xss]]]) {
      await chooseOption(filter, label, (o) => o.value === label);
      await waitUntil(`only the ${label} items`, async () => JSON.stringify(await rowIds()) === JSON.stringify(wanted));
      facts.label_filter_rows[label] = await rowIds();
    }
    // The export follows the filter; the page's links download it.
    await chooseOption(filter, 'pass', (o) => o.value === 'pass');
    const fetchText = (href) => page.evaluate(async (h) => (await fetch(h)).text(), href);
    facts.export_csv_href = await page.locator(tid('export-csv')).getAttribute('href');
    facts.export_csv = await fetchText(facts.export_csv_href);
    await chooseOption(filter, 'every label', (o) => o.value === '');
    await waitUntil('the three traces again', async () => (await rowIds()).length === 3);
    facts.export_jsonl_href = await page.locator(tid('export-jsonl')).getAttribute('href');
    facts.export_jsonl = await fetchText(facts.export_jsonl_href);

    // Removing the XSS trace's item, after asking.
    await page.locator(`tr${tid('item-row')}[data-trace-id="${ids.xss}"] button${tid('item-remove')}`).click();
    await (await visible(page, `button${tid('confirm-yes')}`)).click();
    await waitUntil('the item removed', async () => JSON.stringify(await rowIds()) === JSON.stringify([ids.rag, ids.failing].sort()));
    facts.dataset_item_count = await waitUntil('the count to follow', async () => {
      const shown = await text(page.locator(tid('dataset-item-count')));
      return shown === '2' ? shown : null;
    });
    await shoot(page, 'dataset');
  });

  await step('webhooks: create, test ping, delete another after asking', async () => {
    await go(page, 'webhooks', `form${tid('webhook-create')}`);
    const form = page.locator(`form${tid('webhook-create')}`);
    // The server's own /health answers a POST with 405: a real answer to show.
    for (const hook of [`${origin}/health`, `${origin}/health?spare`]) {
      await form.locator('input[name=url]').fill(hook);
      await form.locator('button[type=submit]').click();
      await visible(page, `tr${tid('webhook-row')}[data-webhook-url="${hook}"]`);
    }
    const row = page.locator(`tr${tid('webhook-row')}[data-webhook-url="${origin}/health"]`);
    ids.webhook = await row.getAttribute('data-webhook-id');
    facts.webhook_row = await text(row);
    await row.locator(`button${tid('webhook-test')}`).click();
    facts.webhook_test_answer = await waitUntil('the test answer', async () =>
      (await text(row.locator(tid('webhook-test-answer')))) || null);
    const spare = `tr${tid('webhook-row')}[data-webhook-url="${origin}/health?spare"]`;
    await page.locator(`${spare} button${tid('webhook-delete')}`).click();
    facts.webhook_delete_question = await text(await visible(page, tid('confirm-modal')));
    await page.locator(`button${tid('confirm-no')}`).click();
    await page.locator(tid('confirm-modal')).waitFor({ state: 'detached' });
    facts.spare_webhook_after_cancel = await page.locator(spare).count();
    await page.locator(`${spare} button${tid('webhook-delete')}`).click();
    await (await visible(page, `button${tid('confirm-yes')}`)).click();
    await page.locator(spare).waitFor({ state: 'detached' });
    facts.spare_webhook_after_delete = await page.locator(spare).count();
    await shoot(page, 'webhooks');
  });

  await step('ingestion health: requests, traces and lag of the ingest so far', async () => {
    await go(page, 'ingestion', tid('health-requests'));
    facts.health_requests = await text(page.locator(tid('health-requests')));
    facts.health_traces = await text(page.locator(tid('health-traces')));
    facts.health_lag = await text(page.locator(tid('health-lag')));
    await page.locator(`select${tid('health-window')}`).selectOption('1h');
    await visible(page, tid('health-requests'));
    facts.health_top_errors = await page.locator(`tr${tid('top-error-row')}`).count();
    await shoot(page, 'ingestion');
  });

  await step('judge keys: set one, see only its hint, revoke it after asking', async () => {
    const secret = 'sk-ui-e2e-own-judge-key-7Q2x';
    await go(page, 'eval-keys', `form${tid('eval-key-form')}`);
    const form = page.locator(`form${tid('eval-key-form')}`);
    await form.locator('select[name=provider]').selectOption('openai');
    await form.locator('input[name=key]').fill(secret);
    await form.locator('button[type=submit]').click();
    const row = page.locator(`tr${tid('eval-key-row')}[data-provider="openai"]`);
    facts.eval_key_hint = await waitUntil('the key to show as set', async () =>
      (await row.locator(tid('eval-key-hint')).count()) ? text(row.locator(tid('eval-key-hint'))) : null);
    facts.eval_key_input_after = await form.locator('input[name=key]').inputValue();
    facts.eval_key_secret_on_page = (await page.content()).includes(secret);
    await shoot(page, 'eval-keys');
    await row.locator(`button${tid('eval-key-revoke')}`).click();
    facts.eval_key_revoke_question = await text(await visible(page, tid('confirm-modal')));
    await (await visible(page, `button${tid('confirm-yes')}`)).click();
    await row.locator(tid('eval-key-hint')).waitFor({ state: 'detached' });
    facts.eval_key_row_after_revoke = await text(row);
  });

  await step('a version, and a run followed to its end', async () => {
    await go(page, `datasets/${ids.dataset}`, `form${tid('version-create')}`);
    await createVersion(page, names.firstVersion, 'Answer in one sentence.');
    // A version without a judge model is scored by the project's rules
    // alone; with no rule enabled, the run is refused saying so.
    const form = page.locator(`form${tid('run-create')}`);
    await chooseOption(form.locator('select[name=eval_version_id]'), names.firstVersion, (o) => o.label === names.firstVersion);
    expectRefusal = { path: `/v1/datasets/${ids.dataset}/runs`, status: 409 };
    await form.locator('button[type=submit]').click();
    const refusal = await visible(page, tid('run-create-error'));
    facts.run_refused = await text(refusal);
    facts.run_refused_link = await refusal.locator('a').getAttribute('href');
    facts.runs_after_refusal = await page.locator(`tr${tid('run-row')}`).count();
    await createRule(page, names.runRule, 'not_empty');
    await go(page, `datasets/${ids.dataset}`, `form${tid('run-create')}`);
    facts.first_run = await runVersion(page, names.firstVersion, []);
    ids.run1 = facts.first_run.id;
  });

  await step('the run page: progress, mean score, results and reasoning', async () => {
    await page.locator(`tr${tid('run-row')}[data-run-id="${ids.run1}"]`).click();
    await waitUntil('the run route', async () => new URL(page.url()).hash === `#/runs/${ids.run1}`);
    // The dataset page's run rows carry the same status and mean until the
    // run page replaces them.
    await waitUntil('the run page', async () => (await page.locator(tid('run-title')).count()) === 1);
    facts.run1_status = await waitUntil('the run completed', async () => {
      const shown = await text(page.locator(tid('run-status')).first());
      return shown === 'completed' ? shown : null;
    });
    facts.run1_title = await text(page.locator(tid('run-title')));
    facts.run1_mean = await text(page.locator(tid('run-mean')));
    const items = page.locator(tid('result-item'));
    await waitUntil('two results', async () => (await items.count()) === 2);
    facts.run1_results = await items.evaluateAll((lis) => lis.map((li) => ({
      trace_id: li.dataset.traceId,
      status: li.dataset.status,
      score: li.querySelector('[data-testid=result-score]')?.textContent ?? '',
      label: li.querySelector('[data-testid=result-label]')?.textContent ?? '',
      output: li.querySelector('[data-testid=result-output]')?.textContent ?? '',
      metrics: [...li.querySelectorAll('[data-testid=result-score-line]')].map((s) => s.dataset.metric),
      reasoning: [...li.querySelectorAll('[data-testid=result-reasoning]')].map((r) => r.textContent),
    })));
    facts.run_light_panel = await page.evaluate(() => getComputedStyle(document.querySelector('.panel')).backgroundColor);
    await shoot(page, 'run');
  });

  await step('a second run, compared with the first', async () => {
    // A second rule the recorded answers fail: the second run scores lower.
    await createRule(page, names.jsonRule, 'json_valid');
    await go(page, `datasets/${ids.dataset}`, `form${tid('version-create')}`);
    await createVersion(page, names.secondVersion, 'Answer in JSON.');
    facts.second_run = await runVersion(page, names.secondVersion, [ids.run1]);
    ids.run2 = facts.second_run.id;
    // By keyboard: the run's row opens with Enter.
    await page.locator(`tr${tid('run-row')}[data-run-id="${ids.run2}"]`).focus();
    await page.keyboard.press('Enter');
    await waitUntil('the second run route', async () => new URL(page.url()).hash === `#/runs/${ids.run2}`);
    await waitUntil('the second run page', async () => (await page.locator(tid('run-title')).count()) === 1);
    await waitUntil('the second run completed', async () => (await text(page.locator(tid('run-status')).first())) === 'completed');
    facts.run2_mean = await text(page.locator(tid('run-mean')));
    await chooseOption(page.locator(`select${tid('compare-select')}`), 'the first run', (o) => o.value === ids.run1);
    const rows = page.locator(`tr${tid('diff-row')}`);
    await waitUntil('two items compared', async () => (await rows.count()) === 2);
    facts.diff_rows = await rows.evaluateAll((trs) => trs.map((tr) => ({
      change: tr.dataset.change,
      trace_id: tr.dataset.traceId,
      cells: [...tr.cells].map((c) => c.textContent),
    })));
    facts.diff_summary = await text(page.locator(tid('diff-summary')));
    facts.diff_regressed = await text(page.locator(tid('diff-regressed')));
    facts.diff_unchanged = await text(page.locator(tid('diff-unchanged')));
    facts.diff_hash = new URL(page.url()).hash;
    await shoot(page, 'run-diff');
  });

  await step('the CI gate decides on the run', async () => {
    const form = page.locator(`form${tid('gate-form')}`);
    // The baseline follows the comparison chosen above.
    facts.gate_baseline = await form.locator(`select${tid('gate-baseline')}`).inputValue();
    const decide = async ({ floor, tolerance, onFail, baseline }) => {
      await form.locator('input[name=score_floor]').fill(floor);
      await form.locator(`select${tid('gate-baseline')}`).selectOption({ value: baseline });
      await form.locator(`select${tid('gate-on-fail')}`).selectOption(onFail);
      const tol = form.locator('input[name=delta_tolerance]');
      await tol.fill(tolerance);
      const answered = page.waitForResponse((r) => new URL(r.url()).pathname === '/v1/ci/gate');
      // By keyboard: Enter in a field submits the form.
      await tol.press('Enter');
      const answer = await (await answered).json();
      const result = page.locator(tid('gate-result'));
      const shown = await waitUntil('the decision shown', async () => {
        const decision = await result.getAttribute('data-decision').catch(() => null);
        return decision === answer.decision ? decision : null;
      });
      return {
        decision: shown,
        badge: await text(result.locator(tid('gate-decision'))),
        reason: await text(result.locator(tid('gate-reason'))),
        run_url: answer.run_url,
      };
    };
    facts.gate_block = await decide({ floor: '0.2', tolerance: '0.1', onFail: 'block', baseline: ids.run1 });
    await shoot(page, 'run-gate');
    facts.gate_warn = await decide({ floor: '0.9', tolerance: '', onFail: 'warn', baseline: '' });
    facts.gate_pass = await decide({ floor: '0.2', tolerance: '', onFail: 'block', baseline: '' });
    // The decision's link opens this run's page.
    await page.goto(facts.gate_block.run_url);
    await waitUntil('the run the link names', async () => (await text(page.locator(tid('run-id')))) === ids.run2);
    facts.gate_link_run = await text(page.locator(tid('run-id')));
    facts.gate_link_hash = new URL(page.url()).hash;
  });

  await step('a run judged by a model, followed live; another cancelled', async () => {
    await go(page, `datasets/${ids.dataset}`, `form${tid('version-create')}`);
    await createVersion(page, names.judgedVersion, 'Answer in one sentence.', judgeModel);
    facts.judged_version_row = await text(page.locator(`tr${tid('version-row')}[data-version-name="${names.judgedVersion}"]`));
    facts.judged_run = await runVersion(page, names.judgedVersion, [ids.run1, ids.run2]);
    ids.run3 = facts.judged_run.id;

    // The same version again, cancelled while its first item is judged.
    const { id, row } = await startRun(page, names.judgedVersion, [ids.run1, ids.run2, ids.run3]);
    ids.cancelled = id;
    await row.locator(`button${tid('run-cancel')}`).click();
    facts.cancel_question = await text(await visible(page, tid('confirm-modal')));
    await page.locator(`button${tid('confirm-yes')}`).click();
    facts.cancelled_row = await waitUntil('the run cancelled in the list', async () =>
      (await row.getAttribute('data-status')) === 'cancelled' ? text(row) : null);
    facts.cancel_buttons_after = await row.locator(tid('run-cancel')).count();

    // The judged run's page: the judge's score and reasoning beside the rules'.
    await go(page, `runs/${ids.run3}`, tid('result-item'));
    await waitUntil('two results', async () => (await page.locator(tid('result-item')).count()) === 2);
    facts.judged_results = await page.locator(tid('result-score-line')).evaluateAll((lines) => lines.map((l) => ({
      metric: l.dataset.metric,
      text: l.textContent,
    })));
    await shoot(page, 'run-judged');
  });

  await step('webhooks: the deliveries of the runs finished since', async () => {
    await go(page, 'webhooks', `tr${tid('webhook-row')}[data-webhook-id="${ids.webhook}"]`);
    await page.locator(`tr${tid('webhook-row')}[data-webhook-id="${ids.webhook}"] button${tid('webhook-show-deliveries')}`).click();
    facts.webhook_deliveries = await waitUntil('deliveries with an attempt', async () => {
      const refresh = page.locator(`button${tid('webhook-deliveries-refresh')}`);
      const rows = await page.locator(`tr${tid('delivery-row')}`).evaluateAll((trs) => trs.map((tr) => tr.textContent));
      if (rows.length >= 3 && rows.every((r) => /HTTP 405/.test(r))) return rows;
      if (await refresh.count()) await refresh.click();
      return null;
    });
    await shoot(page, 'webhook-deliveries');
  });

  await step('privacy requests: export one subject, erase another after asking', async () => {
    // Two traces of two subjects, found by their external ids.
    const subjects = { keep: `ui-e2e-subject-keep-${run}`, gone: `ui-e2e-subject-gone-${run}` };
    for (const [which, subject] of Object.entries(subjects)) {
      const trace = { id: randomUUID(), name: 'ui-e2e-subject', external_id: subject,
        input: `privacy ${which}`, output: 'ok', started_at: new Date().toISOString() };
      const answer = await api('POST', '/v1/ingest', { key: secret, body: trace });
      check(answer.status === 201, `ingest for ${which}: ${answer.status} ${answer.text}`);
      ids[`subject_${which}`] = answer.json.id;
    }
    const form = await go(page, 'privacy', `form${tid('dsr-create')}`);
    const rowOf = (subject) => page.locator(`tr${tid('dsr-row')}`, { hasText: subject });
    const finished = (subject) => waitUntil(`the request for ${subject} completed`, async () =>
      ((await rowOf(subject).getAttribute('data-dsr-status')) === 'completed' ? true : null));

    // An export: its row, its counts and its file.
    await form.locator(tid('dsr-subject')).fill(subjects.keep);
    await form.locator(tid('dsr-type')).selectOption('export');
    await form.locator(`button${tid('dsr-submit')}`).click();
    await visible(page, `tr${tid('dsr-row')}:has-text("${subjects.keep}")`);
    await finished(subjects.keep);
    facts.dsr_export_counts = await text(rowOf(subjects.keep).locator(tid('dsr-counts')));
    const href = await (await visible(page, `tr${tid('dsr-row')}:has-text("${subjects.keep}") ${tid('dsr-download')}`)).getAttribute('href');
    const file = await page.request.get(`${origin}${href}`);
    facts.dsr_download_status = file.status();
    const lines = (await file.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l));
    facts.dsr_download_traces = lines.filter((l) => l.type === 'trace').map((l) => l.trace.id);
    facts.dsr_download_subject = lines[0]?.subject_id ?? null;

    // An erasure asks first; cancelled, nothing is requested.
    await form.locator(tid('dsr-subject')).fill(subjects.gone);
    await form.locator(tid('dsr-type')).selectOption('delete');
    await form.locator(`button${tid('dsr-submit')}`).click();
    facts.dsr_delete_question = await text(await visible(page, tid('confirm-modal')));
    await page.locator(`button${tid('confirm-no')}`).click();
    await page.locator(tid('confirm-modal')).waitFor({ state: 'detached' });
    facts.dsr_rows_after_cancel = await rowOf(subjects.gone).count();
    await form.locator(`button${tid('dsr-submit')}`).click();
    await (await visible(page, `button${tid('confirm-yes')}`)).click();
    await visible(page, `tr${tid('dsr-row')}:has-text("${subjects.gone}")`);
    await finished(subjects.gone);
    facts.dsr_erase_counts = await text(rowOf(subjects.gone).locator(tid('dsr-counts')));
    facts.dsr_erase_downloads = await rowOf(subjects.gone).locator(tid('dsr-download')).count();
    facts.dsr_gone_trace_status = (await api('GET', `/v1/traces/${ids.subject_gone}`, { key: secret })).status;
    facts.dsr_kept_trace_status = (await api('GET', `/v1/traces/${ids.subject_keep}`, { key: secret })).status;
    await shoot(page, 'privacy');
  });

  await step('alerts: a rule fires, is turned off and recovers; another deleted after asking', async () => {
    await go(page, 'alerts', `form${tid('failure-rule-create')}`);
    const form = page.locator(`form${tid('failure-rule-create')}`);
    // A rule that holds whatever the traffic: fewer than a million traces a week.
    for (const [name, operator] of [[names.alertRule, 'lt'], [names.spareAlertRule, 'gt']]) {
      await form.locator('input[name=name]').fill(name);
      await form.locator('select[name=metric]').selectOption('volume');
      await form.locator('select[name=operator]').selectOption(operator);
      await form.locator('input[name=threshold]').fill('1000000');
      await form.locator('input[name=window_secs]').fill('604800');
      await form.locator('select[name=severity]').selectOption('high');
      await form.locator('button[type=submit]').click();
      await visible(page, `tr${tid('failure-rule-row')}[data-rule-name="${name}"]`);
    }
    const rowOf = (name) => page.locator(`tr${tid('failure-rule-row')}[data-rule-name="${name}"]`);
    ids.alertRule = await rowOf(names.alertRule).getAttribute('data-rule-id');
    const refresh = page.locator(`button${tid('alerts-refresh')}`);
    facts.alert_rule_firing = await waitUntil('the rule firing', async () => {
      const state = await text(rowOf(names.alertRule).locator(tid('failure-rule-state')));
      if (state === 'firing') return state;
      await refresh.click();
      return null;
    });
    facts.alert_rule_row = await text(rowOf(names.alertRule));
    facts.alert_anomaly_open = await waitUntil('its anomaly listed, open', async () => {
      const rows = await page.locator(`tr${tid('anomaly-row')}`).evaluateAll((trs) => trs.map((tr) => tr.textContent));
      return rows.length ? rows : null;
    });
    await shoot(page, 'alerts');
    await rowOf(names.alertRule).locator(`input${tid('failure-rule-toggle')}`).click();
    facts.alert_anomaly_after_off = await waitUntil('the anomaly recovered', async () => {
      const rows = await page.locator(`tr${tid('anomaly-row')}`).evaluateAll((trs) => trs.map((tr) => tr.textContent));
      if (rows.length && rows.every((r) => r.includes('recovered'))) return rows;
      await refresh.click();
      return null;
    });
    facts.alert_rule_state_after_off = await text(rowOf(names.alertRule).locator(tid('failure-rule-state')));
    await rowOf(names.spareAlertRule).locator(`button${tid('failure-rule-delete')}`).click();
    facts.alert_delete_question = await text(await visible(page, tid('confirm-modal')));
    await page.locator(`button${tid('confirm-no')}`).click();
    await page.locator(tid('confirm-modal')).waitFor({ state: 'detached' });
    facts.spare_alert_rule_after_cancel = await rowOf(names.spareAlertRule).count();
    await rowOf(names.spareAlertRule).locator(`button${tid('failure-rule-delete')}`).click();
    await (await visible(page, `button${tid('confirm-yes')}`)).click();
    await rowOf(names.spareAlertRule).waitFor({ state: 'detached' });
    facts.spare_alert_rule_after_delete = await rowOf(names.spareAlertRule).count();
  });

  await step('rotate the key', async () => {
    await go(page, 'keys', `tr${tid('key-row')}[data-key-name="${names.key}"]`);
    const row = page.locator(`tr${tid('key-row')}[data-key-name="${names.key}"]`);
    await row.locator(`button${tid('key-rotate')}`).click();
    await (await visible(page, `button${tid('confirm-yes')}`)).click();
    const shown = await visible(page, tid('key-secret'));
    rotated = await waitUntil('a new key in key-secret', async () => {
      const value = (await shown.evaluate((el) => ('value' in el && el.value) || el.textContent)).trim();
      return value.startsWith('tl_') && value !== secret ? value : null;
    });
    facts.old_key_after_rotate = (await api('GET', '/v1/traces?limit=1', { key: secret })).status;
    facts.new_key_after_rotate = (await api('GET', '/v1/traces?limit=1', { key: rotated })).status;
  });

  await step('revoke the key', async () => {
    const row = page.locator(`tr${tid('key-row')}[data-key-name="${names.key}"]`);
    await row.locator(`button${tid('key-revoke')}`).click();
    await (await visible(page, `button${tid('confirm-yes')}`)).click();
    facts.key_status = await waitUntil('the key marked revoked', async () => {
      const shown = await text(
        page.locator(`tr${tid('key-row')}[data-key-name="${names.key}"] ${tid('key-status')}`),
      );
      return /revoked/i.test(shown) ? shown : null;
    });
    facts.rotated_key_after_revoke = (await api('GET', '/v1/traces?limit=1', { key: rotated })).status;
    await page.locator(`button${tid('confirm-yes')}`).waitFor({ state: 'hidden' });
    await shoot(page, 'keys');
  });

  await step('sessions', async () => {
    const table = await go(page, 'sessions', `table${tid('sessions-table')}`);
    facts.sessions_table = await waitUntil(`session ${names.session} listed`, async () => {
      const shown = await text(table);
      return shown.includes(names.session) ? shown : null;
    });
    await shoot(page, 'sessions');
    await table.locator('tr', { hasText: names.session }).first().click();
    await waitUntil('the session route', async () => new URL(page.url()).hash.startsWith('#/sessions/'));
    await visible(page, `table${tid('traces-table')}`);
    facts.session_hash = decodeURIComponent(new URL(page.url()).hash);
    facts.session_trace_rows = await page
      .locator(`tr${tid('trace-row')}`)
      .evaluateAll((trs) => trs.map((tr) => tr.dataset.traceId).sort());
  });

  await step('failures: the clusters, their traces, and the list by failure type', async () => {
    await go(page, 'failures', `table${tid('failures-table')}`);
    facts.failure_rows = await waitUntil('the failing trace clustered', async () => {
      const rows = await page.locator(`tr${tid('failure-row')}`).evaluateAll((trs) => trs.map((tr) => [
        tr.querySelector('[data-testid="failure-message"]')?.textContent ?? '',
        tr.querySelector('[data-testid="failure-count"]')?.textContent ?? '',
      ]));
      return rows.length ? rows : null;
    });
    facts.failure_samples = await page
      .locator(`a${tid('failure-sample')}`)
      .evaluateAll((as) => as.map((a) => a.getAttribute('href')));
    await shoot(page, 'failures');
    // The cluster's traces: the trace list, filtered to failing traces of the window.
    await page.locator(`a${tid('failure-traces-link')}`).first().click();
    await waitUntil('the trace list', async () => new URL(page.url()).hash === '#/traces');
    await visible(page, `table${tid('traces-table')}`);
    facts.failure_list_rows = await waitUntil('the failing traces listed', async () => {
      const rows = await page.locator(`tr${tid('trace-row')}`).evaluateAll((trs) => trs.map((tr) => tr.dataset.traceId));
      return rows.length ? rows : null;
    });
    facts.failure_list_status = await page.locator(`select${tid('filter-error')}`).inputValue();
    facts.failure_list_extra = await text(page.locator(tid('saved-filter-extra')));
    // The failure type control: no trace timed out.
    await page.locator(`select${tid('filter-failure-type')}`).selectOption('timeout');
    await visible(page, tid('empty'));
    facts.timeout_rows = await page.locator(`tr${tid('trace-row')}`).count();
    // The page's filters start afresh for the steps that follow.
    await page.goto(`${origin}/#/overview`);
    await page.reload();
    await visible(page, tid('card-traces'));
  });

  await step('users', async () => {
    // A key the owner makes from the page's session counts as theirs (the
    // page's first key is revoked by now, and revoked keys do not count).
    facts.counted_key_status = await page.evaluate(async (name) => (await fetch('/v1/apikeys', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }),
    })).status, `ui-e2e-counted-${run}`);
    const table = await go(page, 'users', `table${tid('users-table')}`);
    facts.users_table = await waitUntil(`${email} listed`, async () => {
      const shown = await text(table);
      return shown.includes(email) ? shown : null;
    });
    const form = page.locator(`form${tid('user-create')}`);
    await form.locator('input[name=email]').fill(names.user);
    await form.locator('input[name=password]').fill(`${password}-viewer`);
    await chooseOption(form.locator('select[name=role]'), 'viewer', (o) => o.value === 'viewer');
    await form.locator('button[type=submit], input[type=submit]').first().click();
    const row = await visible(page, `table${tid('users-table')} tr:has-text("${names.user}")`);
    facts.new_user_row = await text(row);
    facts.new_user_key_count = await waitUntil('the key count shown', async () => {
      const shown = await text(row.locator(tid('user-key-count')));
      return /^\d+$/.test(shown) ? shown : null;
    });
    const me = page.locator(`table${tid('users-table')} tr:has-text("${email}")`);
    facts.owner_key_count = await waitUntil('the owner key count shown', async () => {
      const shown = await text(me.locator(tid('user-key-count')));
      return /^\d+$/.test(shown) ? shown : null;
    });
    await shoot(page, 'users');
    // The only owner cannot leave: the page says why, and nothing changes.
    expectRefusal = { path: '/v1/members/me', status: 422 };
    await page.locator(`button${tid('leave-org')}`).click();
    await page.locator(`button${tid('confirm-yes')}`).click();
    facts.leave_error = await text(await visible(page, tid('leave-org-error')));
    facts.users_after_refused_leave = await page.locator(`table${tid('users-table')} tr${tid('user-row')}`).count();
    // The owner resets the new user's password: the old one stops working.
    await row.locator(`button${tid('user-reset-password')}`).click();
    const reset = await visible(page, `form${tid('reset-password-form')}`);
    await reset.locator('input[name=password]').fill(`${password}-reset`);
    await reset.locator('button[type=submit]').click();
    await page.locator(`form${tid('reset-password-form')}`).waitFor({ state: 'detached', timeout: WAIT });
    facts.reset_old_login = (await api('POST', '/v1/auth/login', {
      body: { email: names.user, password: `${password}-viewer` },
    })).status;
    facts.reset_new_login = (await api('POST', '/v1/auth/login', {
      body: { email: names.user, password: `${password}-reset` },
    })).status;
  });

  await step('audit log', async () => {
    const table = await go(page, 'audit', `table${tid('audit-table')}`);
    facts.audit_table = await waitUntil('the key rotation in the audit log', async () => {
      const shown = await text(table);
      return /rotate/i.test(shown) ? shown : null;
    });
    await page.locator(`button${tid('audit-verify')}`).click();
    facts.audit_verify = await waitUntil('the chain verified', async () =>
      (await text(page.locator(tid('audit-verify-result')))) || null,
    );
    await shoot(page, 'audit');
  });

  await step('the dark theme', async () => {
    await go(page, 'overview', tid('card-traces'));
    const look = () =>
      page.evaluate(() => ({
        background: getComputedStyle(document.body).backgroundColor,
        theme: document.documentElement.dataset.theme ?? document.documentElement.className,
      }));
    facts.theme_before = await look();
    await page.locator(`button${tid('theme-toggle')}`).click();
    facts.theme_after = await waitUntil('the background to change', async () => {
      const now = await look();
      return now.background !== facts.theme_before.background ? now : null;
    });
    await shoot(page, 'overview-dark');
    await page.reload();
    await visible(page, tid('card-traces'));
    facts.theme_after_reload = await look();
    // The run page in the dark, opened at its comparison's address.
    await go(page, `runs/${ids.run2}?baseline=${ids.run1}`, `table${tid('diff-table')}`);
    facts.run_dark_panel = await page.evaluate(() => getComputedStyle(document.querySelector('.panel')).backgroundColor);
    facts.run_dark_compare = await page.locator(`select${tid('compare-select')}`).inputValue();
    await shoot(page, 'run-dark');
  });

  await step('changing the password with a wrong current one is refused', async () => {
    await page.locator(`button${tid('change-password')}`).click();
    const form = await visible(page, `form${tid('password-form')}`);
    await form.locator('input[name=current_password]').fill('not-the-password');
    await form.locator('input[name=new_password]').fill('a-new-password-1');
    expectRefusal = { path: '/v1/auth/password', status: 401 };
    await form.locator('button[type=submit]').click();
    facts.password_error = await text(await visible(page, tid('password-error')));
    await form.locator('button', { hasText: 'Cancel' }).click();
    await page.locator(`form${tid('password-form')}`).waitFor({ state: 'detached', timeout: WAIT });
  });

  await step('a narrow window', async () => {
    // From 1280 px down to a phone-sized window: nothing is wider than it.
    await page.setViewportSize({ width: 420, height: 900 });
    const overflow = () =>
      page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    facts.narrow_overflow = {};
    for (const [hash, selector, name] of [
      ['overview', tid('card-traces'), 'overview'],
      ['traces', `table${tid('traces-table')}`, 'traces'],
      ['failures', `table${tid('failures-table')}`, 'failures'],
      ['keys', `table${tid('keys-table')}`, 'keys'],
      ['datasets', `table${tid('datasets-table')}`, 'datasets'],
      [`datasets/${ids.dataset}`, `table${tid('runs-table')}`, 'dataset'],
      [`runs/${ids.run2}?baseline=${ids.run1}`, `table${tid('diff-table')}`, 'run'],
    ]) {
      await go(page, hash, selector);
      facts.narrow_overflow[name] = await overflow();
      await shoot(page, `${name}-narrow`);
    }
    await page.setViewportSize({ width: 1280, height: 860 });
  });

  await step('log out', async () => {
    const cookies = await context.cookies(origin);
    const cookie = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
    facts.cookie_names = cookies.map((c) => c.name);
    facts.me_before_logout = (await api('GET', '/v1/auth/me', { cookie })).status;
    loggedIn = false;
    await page.locator(`button${tid('logout')}`).click();
    await visible(page, `form${tid('login-form')}`);
    facts.hash_after_logout = new URL(page.url()).hash;
    await page.reload();
    await visible(page, `form${tid('login-form')}`);
    facts.nav_after_reload = await page.locator(`nav${tid('nav')}`).count();
    facts.me_after_logout = (await api('GET', '/v1/auth/me', { cookie })).status;
    facts.traces_with_old_cookie = (await api('GET', '/v1/traces?limit=1', { cookie })).status;
  });

  await step('a logged-out visit to the traces shows the login', async () => {
    await page.goto(`${origin}/#/traces`);
    await visible(page, `form${tid('login-form')}`);
    facts.traces_table_logged_out = await page.locator(`table${tid('traces-table')}`).count();
    facts.trace_rows_logged_out = await page.locator(tid('trace-row')).count();
  });
}

mkdirSync(shotDir, { recursive: true });
const timer = setTimeout(() => {
  report.error = { step: current, message: `the run took longer than ${DEADLINE} ms` };
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(1);
}, DEADLINE);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
try {
  report.browser = browser.version();
  await main(browser);
} finally {
  await browser.close();
  clearTimeout(timer);
}
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exitCode = report.error ? 1 : 0;
