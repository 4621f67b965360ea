// Talking to the gateway: JSON and multipart requests, the admin key, readable errors, and
// Server-Sent Events read with fetch (EventSource cannot send an Authorization header).

const KEY_STORAGE = "fdl.adminKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const adminKey = {
  get: () => sessionStorage.getItem(KEY_STORAGE) || "",
  set: (value) => {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
    window.dispatchEvent(new CustomEvent("fdl:key-changed"));
  },
};

// Why a key cannot be sent, or null: an HTTP header carries visible ASCII only ('!' to '~', as
// the gateway and the CLI require), and fetch refuses anything else with a TypeError before any
// byte is sent. Names the first such character by code point and position, never the key.
export function keyProblem(key) {
  const chars = [...key];
  const at = chars.findIndex((char) => char < "!" || char > "~");
  if (at < 0) return null;
  const code = chars[at].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
  return `The admin key has a character outside visible ASCII ('!' to '~'), U+${code} at position ${at + 1}: ` +
    "a space, or an invisible character pasted with it? HTTP headers cannot carry it; paste the key again.";
}

function authHeaders(admin) {
  const key = adminKey.get();
  if (admin && !key) {
    throw new ApiError(401, "no_key", "This needs the admin key: set it with the “Admin key” button.");
  }
  const problem = key && keyProblem(key);
  if (problem) throw new ApiError(401, "unsendable_key", problem); // 401: the key dialog opens
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// The request's headers, checked before fetch: a value fetch cannot send (a TypeError, as an
// unreachable gateway's) is reported as what it is, not as the gateway being down.
function sendable(headers) {
  try {
    return new Headers(headers);
  } catch (error) {
    throw new ApiError(0, "unsendable_header", `A request header cannot be sent: ${error.message}`);
  }
}

async function errorFrom(response) {
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON (a proxy's page, say): keep the status line.
  }
  if (response.status === 401) {
    message = `${message}. Check the admin key (“Admin key” button).`;
  }
  return new ApiError(response.status, code, message);
}

// How long a request may take, answer and body, before it is given up with ApiError code
// "timeout" (a hung gateway or proxy otherwise leaves "Submitting…" forever). Every gateway call
// answers within seconds, except an upload, whose body may take up to the gateway's
// FDL_BODY_TIMEOUT_S (60 s) to arrive on a slow link, and a label change, which waits for the
// version to load up to FDL_PROMOTE_TIMEOUT_S (60 s; its callers pass timeoutMs: LONG_REQUEST_MS):
// those get LONG_REQUEST_MS. Event streams
// (followEvents) have their idle limit instead. A page may set `window.FDL_REQUEST_TIMEOUT_MS`
// before it loads to use another limit for ordinary calls, as FDL_STREAM_IDLE_MS.
export const REQUEST_TIMEOUT_MS = 30_000;
export const LONG_REQUEST_MS = 90_000;

function requestTimeoutMs(form) {
  if (form !== undefined) return LONG_REQUEST_MS;
  const wanted = Number(globalThis.FDL_REQUEST_TIMEOUT_MS);
  return Number.isFinite(wanted) && wanted >= 500 ? wanted : REQUEST_TIMEOUT_MS;
}

// `headers`: more request headers (e.g. Idempotency-Key); `onResponse(response)` is called with
// each answer, an error's included, before its body is read (to read its headers); `timeoutMs`:
// another time limit than the call's default (requestTimeoutMs).
export async function request(path, { method = "GET", json, form, admin = false, signal, headers: more, onResponse, timeoutMs } = {}) {
  const headers = { Accept: "application/json", ...more, ...authHeaders(admin) };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const checked = sendable(headers);
  const limit = timeoutMs ?? requestTimeoutMs(form);
  const controller = new AbortController();
  const forward = () => controller.abort();
  if (signal?.aborted) controller.abort();
  signal?.addEventListener("abort", forward, { once: true });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, limit);
  const timeoutError = () =>
    new ApiError(0, "timeout", `The gateway did not answer within ${Math.round(limit / 1000)} s. Is it overloaded or hung? Try again.`);
  try {
    let response;
    try {
      response = await fetch(path, { method, headers: checked, body, signal: controller.signal });
    } catch (error) {
      if (timedOut) throw timeoutError();
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "unreachable", "The gateway cannot be reached. Is `fdl up` running?");
    }
    onResponse?.(response);
    try {
      if (!response.ok) throw await errorFrom(response);
      const type = response.headers.get("content-type") || "";
      if (type.startsWith("application/json")) return await response.json();
      return await response.blob();
    } catch (error) {
      if (timedOut) throw timeoutError();
      throw error;
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", forward);
  }
}

export const api = {
  get: (path, options = {}) => request(path, options),
  post: (path, json, options = {}) => request(path, { ...options, method: "POST", json }),
  del: (path, options = {}) => request(path, { ...options, method: "DELETE" }),
  upload: (path, form, options = {}) => request(path, { ...options, method: "POST", form }),
};

// A stream that sends no byte for this long is taken for dead (a laptop that slept, a proxy that
// dropped the connection without closing it): the gateway sends a keep-alive comment after every
// idle wait of at most 10 s (2.5 s by default), so 30 s of silence is never a quiet job. A test
// may set `window.FDL_STREAM_IDLE_MS` before the page loads to wait less.
export const STREAM_IDLE_MS = 30_000;

function streamIdleMs() {
  const wanted = Number(globalThis.FDL_STREAM_IDLE_MS);
  return Number.isFinite(wanted) && wanted >= 500 ? wanted : STREAM_IDLE_MS;
}

// Follow an SSE stream; calls onEvent(type, data, id) per event and resolves with the last event
// id when the stream ends. Silence past the idle limit, while connecting or reading, aborts it
// with ApiError code "stalled"; the caller reconnects with the last id it was given, after the
// reconnection time the stream gave last in a `retry:` field (onRetry(ms)), as EventSource does.
export async function followEvents(path, { onEvent, onRetry, signal, lastEventId } = {}) {
  const headers = { Accept: "text/event-stream", ...authHeaders(true) };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const checked = sendable(headers);
  const idleMs = streamIdleMs();
  const controller = new AbortController();
  const forward = () => controller.abort();
  if (signal?.aborted) controller.abort();
  signal?.addEventListener("abort", forward, { once: true });
  let stalled = false;
  let timer = null;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      controller.abort();
    }, idleMs);
  };
  const stalledError = () =>
    new ApiError(0, "stalled", `The event stream sent nothing for ${Math.round(idleMs / 1000)} s: reconnecting.`);
  try {
    arm();
    let response;
    try {
      response = await fetch(path, { headers: checked, signal: controller.signal });
    } catch (error) {
      if (stalled) throw stalledError();
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "unreachable", "The gateway cannot be reached. Is `fdl up` running?");
    }
    if (!response.ok) throw await errorFrom(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let last = lastEventId || null;
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (stalled) throw stalledError();
        throw error;
      }
      if (chunk.done) break;
      buffer += chunk.value.replace(/\r\n?/g, "\n");
      let boundary;
      while ((boundary = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary + 2);
        const event = parseBlock(block);
        if (event.id) last = event.id;
        if (event.retry !== null) onRetry?.(event.retry);
        if (event.data !== null) onEvent(event.type, parseData(event.data), event.id);
      }
      // Armed once the chunk's events are handled, so the time they take is not silence.
      arm();
    }
    return last;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", forward);
    // Closes the response (a no-op once it has ended): one left open when onEvent throws would
    // hold one of the gateway's FDL_MAX_EVENT_STREAMS slots for as long as the page lives.
    controller.abort();
  }
}

// An event's data: JSON where it parses, else the text. The gateway sends a NaN or infinite
// number as null; an older one wrote it as Python's json does (NaN, Infinity, -Infinity: no
// JSON), which made a whole progress event text: such a number is read as the string "NaN",
// "Infinity" or "-Infinity" instead.
const NON_JSON_NUMBER = /"(?:[^"\\]|\\.)*"|-?Infinity|NaN/g;

function parseData(text) {
  try {
    return JSON.parse(text);
  } catch {
    try {
      return JSON.parse(text.replace(NON_JSON_NUMBER, (token) => (token[0] === '"' ? token : `"${token}"`)));
    } catch {
      return text; // plain text data stays a string
    }
  }
}

function parseBlock(block) {
  const event = { type: "message", data: null, id: null, retry: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event.type = value;
    else if (field === "data") data.push(value);
    else if (field === "id") event.id = value;
    else if (field === "retry" && /^[0-9]+$/.test(value)) event.retry = Number(value); // as EventSource
  }
  if (data.length) event.data = data.join("\n");
  return event;
}

export function describe(error) {
  if (error instanceof ApiError) return error.message;
  return String(error && error.message ? error.message : error);
}
