// What the browser scripts share: finding elements by test id, waiting for
// them, and failing a step with a message that says what was expected.

/** Longest wait for one thing to show up on the page. */
export const WAIT = 10_000;

export const tid = (id) => `[data-testid="${id}"]`;

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Polls `probe` until it returns a truthy value, which it returns. */
export async function waitUntil(what, probe, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function visible(page, selector, timeout = WAIT) {
  const locator = page.locator(selector).first();
  await locator.waitFor({ state: 'visible', timeout });
  return locator;
}

/** What the page shows of `locator`, line breaks included. */
export async function text(locator) {
  return ((await locator.innerText()) ?? '').trim();
}
