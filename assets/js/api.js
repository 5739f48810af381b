// The one way the page talks to the server: same-origin fetch with the
// session cookie (no Authorization header), JSON in and out, and every
// failure turned into an ApiError carrying the server's `error` text.

export class ApiError extends Error {
  constructor(status, message, code, requestId) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code || null;
    this.requestId = requestId || null;
  }
}

let unauthorizedHandler = null;

/** Called (once per failing request) when the API answers 401. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

/** Builds `/path?a=1&b=2`, leaving out empty values. */
export function url(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') continue;
    params.append(key, String(value));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/**
 * Calls the API. `opts`: method, query, body (JSON), signal, allow401 (do
 * not treat a 401 as an expired session: the login form's own answer),
 * withStatus (resolve to `{status, data}`, for answers whose status says
 * something: 201 made, 200 there already).
 * Resolves to the parsed JSON (null for an empty body).
 */
export async function api(path, opts = {}) {
  const { method = 'GET', query, body, signal, allow401 = false, withStatus = false } = opts;
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', signal };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url(path, query), init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'The server could not be reached. Check your connection and try again.', 'network_error');
  }
  const text = await response.text().catch(() => '');
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message = data && typeof data.error === 'string' && data.error
      ? data.error
      : `${response.status} ${response.statusText || 'request failed'}`.trim();
    const code = data && typeof data.code === 'string' ? data.code : null;
    const requestId = (data && data.request_id) || response.headers.get('x-request-id');
    const error = new ApiError(response.status, message, code, requestId);
    if (response.status === 401 && !allow401 && unauthorizedHandler) unauthorizedHandler(error);
    throw error;
  }
  return withStatus ? { status: response.status, data } : data;
}

/** True for an abort caused by leaving the page (not worth showing). */
export function isAbort(err) {
  return !!err && (err.name === 'AbortError' || (typeof DOMException !== 'undefined' && err instanceof DOMException && err.code === 20));
}

/** The text to show for an error: the server's words, with its code when that adds something. */
export function errorText(err) {
  if (!err) return 'Something went wrong.';
  if (err instanceof ApiError) {
    let text = err.message;
    if (err.status === 401 && /^(invalid_api_key|invalid_session|api_key_expired)$/.test(text)) {
      text = 'Your session has ended. Please sign in again.';
    }
    // Generic codes say nothing the text does not; specific ones help support.
    const generic = ['not_found', 'validation_error', 'bad_request', 'conflict', 'internal_error', 'method_not_allowed'];
    if (err.code && !generic.includes(err.code) && !text.includes(err.code)) text = `${text} (${err.code})`;
    return text;
  }
  return err.message || String(err);
}
