// The try-it console of the API reference: an operation's parameters and
// JSON body, sent from this page with the token the reader types, and the
// answer shown beside the same request as a curl command.
//
// The token lives in this module's memory only: never in localStorage,
// sessionStorage or a cookie, and gone with the page. Requests go out with
// `credentials: 'omit'`, so a signed-in admin page's cookie is never used
// in its place.

import { el, replace } from './dom.js';
import { copyButton, field, busy } from './ui.js';
import { jsonMedia, sample } from './openapi.js';

let token = '';

/** How long a streamed answer (server-sent events) is read before stopping. */
const STREAM_MS = 3000;
/** How much of an answer is shown. */
const MAX_CHARS = 1_000_000;
/** The answer's headers worth showing. */
const SHOWN_HEADERS = /^(x-request-id|retry-after|content-type|.*ratelimit.*)$/i;

function paramInput(p) {
  const schema = p.schema || {};
  const name = `param-${p.in}-${p.name}`;
  const attrs = { name, 'data-testid': 'try-param', 'data-param': p.name, 'aria-required': p.required ? 'true' : null };
  if (Array.isArray(schema.enum) || schema.type === 'boolean') {
    const values = Array.isArray(schema.enum) ? schema.enum : [true, false];
    return el('select', attrs, el('option', { value: '' }, p.required ? 'choose…' : '(not sent)'),
      values.map((v) => el('option', { value: String(v) }, String(v))));
  }
  const hint = schema.default !== undefined ? `default ${schema.default}` : schema.format || schema.type || '';
  return el('input', { ...attrs, type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: String(hint) });
}

/** A parameter's description, short enough for a hint under its field. */
function firstSentence(text) {
  if (!text) return null;
  const flat = String(text).replace(/\s+/g, ' ').replace(/`/g, '').trim();
  const end = flat.search(/[.!?](\s+[A-Z]|$)/);
  return end > 0 ? flat.slice(0, end + 1) : flat;
}

/** `'…'` for a POSIX shell. */
const quote = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

/** The same request for a terminal, the token left to the environment. */
function curl(request, needsToken) {
  const lines = ['curl -sS'];
  if (request.method !== 'GET') lines.push(`-X ${request.method}`);
  lines.push(quote(`${location.origin}${request.url}`));
  if (needsToken) lines.push('-H "Authorization: Bearer $TRULAYER_API_KEY"');
  for (const [name, value] of Object.entries(request.headers)) lines.push(`-H ${quote(`${name}: ${value}`)}`);
  if (request.body !== undefined) lines.push("-H 'Content-Type: application/json'", `--data-binary ${quote(request.body)}`);
  return lines.join(' \\\n  ');
}

/** Reads an answer's body, stopping a stream after a moment and a huge body at MAX_CHARS. */
async function readBody(response) {
  if (!response.body) return { text: await response.text(), cut: null };
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  let cut = null;
  const streaming = /event-stream/i.test(response.headers.get('content-type') || '');
  const timer = streaming && setTimeout(() => {
    cut = `The stream was stopped after ${STREAM_MS / 1000} s.`;
    reader.cancel().catch(() => {});
  }, STREAM_MS);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      if (text.length > MAX_CHARS) {
        cut = `Only the first ${MAX_CHARS.toLocaleString('en-US')} characters are shown.`;
        await reader.cancel();
        break;
      }
    }
  } finally {
    clearTimeout(timer);
  }
  return { text, cut };
}

function statusKind(status) {
  if (status >= 500) return 'error';
  if (status >= 400) return 'warn';
  return 'ok';
}

function answerView(response, { text, cut }, ms) {
  let pretty = text;
  try {
    pretty = JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    // not JSON: shown as it came
  }
  const headers = [...response.headers].filter(([name]) => SHOWN_HEADERS.test(name));
  return [
    el('div', { class: 'try-status-line' },
      el('span', { class: `badge badge-${statusKind(response.status)}`, 'data-testid': 'try-status' },
        `${response.status} ${response.statusText}`.trim()),
      el('span', { class: 'muted small' }, `in ${Math.round(ms)} ms`)),
    headers.length ? el('dl', { class: 'try-headers', 'data-testid': 'try-headers' },
      headers.map(([name, value]) => el('div', {}, el('dt', {}, name), el('dd', {}, value)))) : null,
    cut ? el('p', { class: 'muted small' }, cut) : null,
    el('pre', { class: 'code try-response', 'data-testid': 'try-response' }, pretty || '(no body)'),
  ];
}

/** The console for one operation ({method, path, op, parameters}) of `doc`. */
export function tryIt(doc, operation) {
  const method = operation.method.toUpperCase();
  const needsToken = !(Array.isArray(operation.op.security) && operation.op.security.length === 0);
  const params = operation.parameters
    .filter((p) => ['path', 'query', 'header'].includes(p.in) && !/^authorization$/i.test(p.name))
    .sort((a, b) => ['path', 'query', 'header'].indexOf(a.in) - ['path', 'query', 'header'].indexOf(b.in));
  const inputs = params.map((p) => [p, paramInput(p)]);

  const content = operation.op.requestBody && (operation.op.requestBody.content || {});
  const media = content ? jsonMedia(content) : null;
  let bodyInput = null;
  if (media) {
    const start = media.example !== undefined ? media.example : sample(doc, media.schema);
    bodyInput = el('textarea', { name: 'body', class: 'mono try-body', rows: '10', spellcheck: 'false', 'data-testid': 'try-body' });
    bodyInput.value = JSON.stringify(start ?? {}, null, 2);
  }

  const tokenInput = el('input', {
    type: 'password', name: 'token', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'tl_… API key or tls_… session token', 'data-testid': 'try-token', value: token,
  });
  tokenInput.addEventListener('input', () => { token = tokenInput.value.trim(); });

  const problems = el('p', { class: 'form-error', role: 'alert', 'data-testid': 'try-error', hidden: true });
  const answer = el('div', { class: 'try-answer', 'aria-live': 'polite' });
  const curlText = el('pre', { class: 'code try-curl', 'data-testid': 'try-curl' });
  const send = el('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'try-send' }, `Send ${method}`);
  const cancel = el('button', { type: 'button', class: 'btn', hidden: true }, 'Cancel');
  let controller = null;
  cancel.addEventListener('click', () => controller && controller.abort());

  const request = () => {
    const missing = [];
    let path = operation.path;
    const query = new URLSearchParams();
    const headers = {};
    for (const [p, input] of inputs) {
      const value = input.value.trim();
      if (!value) {
        if (p.required) missing.push(p.name);
        continue;
      }
      if (p.in === 'path') path = path.split(`{${p.name}}`).join(encodeURIComponent(value));
      else if (p.in === 'query') query.append(p.name, value);
      else headers[p.name] = value;
    }
    const body = bodyInput && bodyInput.value.trim() ? bodyInput.value : undefined;
    const qs = query.toString();
    return { method, url: qs ? `${path}?${qs}` : path, headers, body, missing };
  };
  const paintCurl = () => { curlText.textContent = curl(request(), needsToken); };

  const run = async () => {
    const req = request();
    const errors = req.missing.map((name) => `${name} is required.`);
    if (req.body !== undefined) {
      try {
        JSON.parse(req.body);
      } catch (err) {
        errors.push(`The body is not valid JSON: ${err.message}`);
      }
    } else if (operation.op.requestBody?.required && bodyInput) {
      errors.push('This operation needs a body.');
    }
    problems.textContent = errors.join(' ');
    problems.hidden = !errors.length;
    if (errors.length) return;
    const headers = { Accept: 'application/json', ...req.headers };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (req.body !== undefined) headers['Content-Type'] = 'application/json';
    controller = new AbortController();
    cancel.hidden = false;
    const started = performance.now();
    try {
      const response = await fetch(req.url, {
        method, headers, body: req.body, credentials: 'omit', cache: 'no-store', signal: controller.signal,
      });
      const read = await readBody(response);
      replace(answer, answerView(response, read, performance.now() - started));
    } catch (err) {
      const message = err && err.name === 'AbortError' ? 'Cancelled.'
        : err instanceof TypeError && /header/i.test(err.message) ? 'The token holds characters a header cannot carry.'
          : `The request failed: ${err && err.message ? err.message : err}`;
      replace(answer, el('p', { class: 'form-error', role: 'alert', 'data-testid': 'try-failed' }, message));
    } finally {
      controller = null;
      cancel.hidden = true;
    }
  };

  const form = el('form', { class: 'stack try-form', 'data-testid': 'try-form', novalidate: true },
    field('Token', tokenInput,
      'An API key (tl_…) or a session token (tls_…, from POST /v1/auth/login), sent as Authorization: Bearer. It stays in this page’s memory only: it is not saved in the browser nor kept by the server, and it is gone when you leave or reload the page.'),
    inputs.length ? el('div', { class: 'form-grid' },
      inputs.map(([p, input]) => field(`${p.name}${p.required ? ' *' : ''} (${p.in})`, input, firstSentence(p.description)))) : null,
    bodyInput ? field('Body (JSON)', bodyInput, media.example !== undefined ? 'Filled in from the example.' : 'Filled in with the required fields.') : null,
    content && !media ? el('p', { class: 'muted small' }, 'This console sends JSON bodies only; use curl for the other types.') : null,
    problems,
    el('div', { class: 'try-actions' }, send, cancel));
  form.addEventListener('input', paintCurl);
  form.addEventListener('change', paintCurl);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(send, run);
  });
  paintCurl();

  return el('section', { class: 'panel try', id: 'try', 'aria-labelledby': 'try-title' },
    el('h2', { class: 'panel-title', id: 'try-title' }, 'Try it'),
    form,
    answer,
    el('div', { class: 'try-curl-head' }, el('span', { class: 'field-label' }, 'The same request with curl'),
      copyButton(() => curlText.textContent, { testid: 'try-copy-curl', label: 'Copy curl' })),
    curlText);
}
