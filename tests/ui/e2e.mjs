// The admin page in a real browser (Debian's Chromium driven by
// playwright-core), against a running server: every flow an operator goes
// through, from the first login to the logout, the API reference's console
// on the way (`docs.mjs`). Run by `tests/ui.rs`:
//
//   node tests/ui/e2e.mjs <server-url> <node-dir> <screenshot-dir> <email> <password>
//
// <node-dir> holds playwright-core (installed there by setup.sh). Prints one
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

const [serverUrl, nodeDir, shotDir, email, password] = process.argv.slice(2);
if (!password) {
  console.error('usage: e2e.mjs <server-url> <node-dir> <screenshot-dir> <email> <password>');
  process.exit(2);
}
const require = createRequire(path.join(nodeDir, 'package.json'));
const { chromium } = require('playwright-core');

/** Longest wait for an evaluation's result (queued, run, then shown). */
const EVAL_WAIT = 20_000;
/** The whole run, after which the script reports and gives up. */
const DEADLINE = 150_000;

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
  feedback: `ui-e2e feedback ${run}`,
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
// A path whose next 401 a step expects (then cleared).
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
    // The one refusal a step asks for: a wrong current password.
    if (status === 401 && expectRefusal && new URL(response.url()).pathname === expectRefusal) {
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
      expectRefusal = route;
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
    const form = page.locator(`form${tid('rule-create')}`);
    await form.locator('input[name=metric_name]').fill(names.rule);
    await chooseOption(form.locator('select[name=evaluator_type]'), 'rule', (o) => o.value === 'rule');
    await chooseOption(form.locator('select[name=rule]'), 'not_empty', (o) => o.value === 'not_empty');
    await form.locator('input[name=sample_rate]').fill('1');
    await chooseOption(form.locator('select[name=project]'), `naming project ${names.project}`, byNameOrValue(names.project));
    await form.locator('button[type=submit], input[type=submit]').first().click();
    const row = await visible(page, `tr${tid('rule-row')}[data-rule-metric="${names.rule}"]`);
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

  await step('users', async () => {
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
    await shoot(page, 'users');
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
  });

  await step('changing the password with a wrong current one is refused', async () => {
    await page.locator(`button${tid('change-password')}`).click();
    const form = await visible(page, `form${tid('password-form')}`);
    await form.locator('input[name=current_password]').fill('not-the-password');
    await form.locator('input[name=new_password]').fill('a-new-password-1');
    expectRefusal = '/v1/auth/password';
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
    for (const [hash, selector] of [
      ['overview', tid('card-traces')],
      ['traces', `table${tid('traces-table')}`],
      ['keys', `table${tid('keys-table')}`],
    ]) {
      await go(page, hash, selector);
      facts.narrow_overflow[hash] = await overflow();
      await shoot(page, `${hash}-narrow`);
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
