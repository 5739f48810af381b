// The API reference at /docs, in the same browser run as the admin page:
// reached by the admin page's link, operations found with the filter, and
// requests sent through an operation's console with a key typed into the
// page, which keeps it nowhere but in memory.

import { check, text, tid, visible, waitUntil } from './helpers.mjs';

const link = (method, path) => `a${tid('op-link')}[data-method="${method}"][data-path="${path}"]`;

/** Finds `method path` by typing into the filter, opens it, and returns what the filter left listed. */
async function openOperation(page, method, path) {
  const filter = page.locator(`input${tid('docs-filter')}`);
  await filter.fill(`${method.toUpperCase()} ${path}`);
  await visible(page, link(method, path));
  const listed = await page
    .locator(`a${tid('op-link')}:visible`)
    .evaluateAll((as) => as.map((a) => `${a.dataset.method} ${a.dataset.path}`));
  await page.locator(link(method, path)).click();
  await waitUntil(`the page of ${method} ${path}`, async () =>
    (await text(page.locator(tid('op-title')))).endsWith(path),
  );
  return listed;
}

/** Sends the console's request and waits for its status to show. */
async function send(page, status) {
  await page.locator(`button${tid('try-send')}`).click();
  return waitUntil(`the console to show ${status}`, async () => {
    const shown = page.locator(tid('try-status'));
    const now = (await shown.count()) ? await text(shown.first()) : '';
    return now.startsWith(String(status)) ? now : null;
  });
}

const background = (page) => page.evaluate(() => getComputedStyle(document.body).backgroundColor);

/**
 * `env`: page, context, origin, step, shoot, facts, key (an API key of the
 * project the traces in `ids` were sent to), ids, and refuse(path): the
 * next 401 from `path` is expected.
 */
export async function referenceFlows({ page, context, origin, step, shoot, facts, key, ids, refuse }) {
  await step('the admin page links to the API reference', async () => {
    await page.locator(`a${tid('docs-link')}`).click();
    await page.waitForURL(`${origin}/docs`);
    await visible(page, `input${tid('docs-filter')}`);
    facts.docs_path = new URL(page.url()).pathname;
    const response = await fetch(`${origin}/docs`);
    facts.docs_content_type = response.headers.get('content-type');
    facts.docs_csp = response.headers.get('content-security-policy');
    facts.docs_operations = await page.locator(`a${tid('op-link')}`).count();
    facts.docs_groups = await page.locator(tid('docs-group')).count();
    await shoot(page, 'docs');
  });

  await step('"/" and the filter find an operation', async () => {
    await page.evaluate(() => document.activeElement?.blur());
    await page.keyboard.press('/');
    facts.docs_slash_focuses_filter = await page
      .locator(`input${tid('docs-filter')}`)
      .evaluate((input) => input === document.activeElement);
    facts.docs_filtered = await openOperation(page, 'get', '/v1/traces');
    facts.docs_count = await text(page.locator(tid('docs-count')));
    facts.docs_op_title = await text(page.locator(tid('op-title')));
    facts.docs_op_access = await text(page.locator(tid('op-access')));
    facts.docs_op_statuses = await page
      .locator(tid('op-response'))
      .evaluateAll((rs) => rs.map((r) => r.dataset.status));
  });

  await step('the console never sends the admin session', async () => {
    const cookies = await context.cookies(origin);
    facts.docs_session_cookie_present = cookies.length > 0;
    refuse('/v1/traces');
    facts.docs_status_without_token = await send(page, 401);
  });

  await step('the console sends a request with a typed key', async () => {
    await page.locator(`input${tid('try-token')}`).fill(key);
    facts.docs_status_with_key = await send(page, 200);
    facts.docs_response = await page.locator(tid('try-response')).textContent();
    // The traces hold markup; the console shows it as text.
    facts.docs_response_markup = await page.locator(`${tid('try-response')} img, ${tid('try-response')} b`).count();
    facts.docs_response_headers = await text(page.locator(tid('try-headers')));
    facts.docs_curl = await page.locator(tid('try-curl')).textContent();
    facts.docs_curl_shows_key = facts.docs_curl.includes(key);
    await shoot(page, 'docs-operation');
  });

  await step('a path parameter, with the key still in memory', async () => {
    const path = await page
      .locator(`a${tid('op-link')}[data-method="get"]`)
      .evaluateAll((as) => as.map((a) => a.dataset.path).find((p) => /^\/v1\/traces\/\{[^}]+\}$/.test(p)));
    check(path, 'no GET /v1/traces/{…} in the reference');
    await openOperation(page, 'get', path);
    facts.docs_token_kept = (await page.locator(`input${tid('try-token')}`).inputValue()) === key;
    await page.locator(`input${tid('try-param')}[name^="param-path-"]`).fill(ids.rag);
    facts.docs_detail_status = await send(page, 200);
    facts.docs_detail_response = await page.locator(tid('try-response')).textContent();
    facts.docs_detail_curl = await page.locator(tid('try-curl')).textContent();
  });

  await step('the key is kept nowhere but in the page', async () => {
    const kept = await page.evaluate((secret) => ({
      local_storage: JSON.stringify({ ...localStorage }).includes(secret),
      session_storage: JSON.stringify({ ...sessionStorage }).includes(secret),
      document_cookie: document.cookie.includes(secret),
      markup: document.documentElement.outerHTML.includes(secret),
    }), key);
    kept.cookies = (await context.cookies()).some((c) => c.value.includes(key));
    facts.docs_key_kept_in = kept;
    await page.reload();
    await visible(page, `input${tid('try-token')}`);
    facts.docs_token_after_reload = await page.locator(`input${tid('try-token')}`).inputValue();
  });

  await step('the reference in the dark and in a narrow window', async () => {
    facts.docs_background_light = await background(page);
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.reload();
    await visible(page, tid('op-title'));
    facts.docs_background_dark = await background(page);
    await shoot(page, 'docs-dark');
    await page.emulateMedia({ colorScheme: 'light' });
    await page.setViewportSize({ width: 420, height: 900 });
    await page.reload();
    await visible(page, tid('op-title'));
    facts.docs_narrow_overflow = await page.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    await shoot(page, 'docs-narrow');
    await page.setViewportSize({ width: 1280, height: 860 });
  });
}
