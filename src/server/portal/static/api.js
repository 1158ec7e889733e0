// The portal's one way to the server: the HTTP projection of the operation registry
// (`POST /v1/op/{operation}`), the job event stream, tiles and signed URLs, always with
// the signed-in token. Errors become ApiError, built from the server's error JSON
// ({code, reason, message, request_id, details}).

const TOKEN_KEY = "geopera.token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor({ status, code = "", reason = "", message = "", requestId = "", fieldViolations = [], metadata = {}, operation = "" }) {
    super(message || reason || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.reason = reason;
    this.requestId = requestId;
    this.fieldViolations = fieldViolations;
    this.metadata = metadata;
    this.operation = operation;
  }

  // The token is unknown, revoked or expired: the caller must sign in again.
  get unauthenticated() {
    return this.status === 401;
  }

  // The token lacks a scope; metadata.required_scope names it.
  get missingScope() {
    return this.status === 403 && this.reason === "MISSING_SCOPE";
  }
}

function headers(extra = {}) {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}`, ...extra } : { ...extra };
}

async function errorFrom(response, operation = "") {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's page, say): the status says enough.
  }
  const details = body.details || {};
  return new ApiError({
    status: response.status,
    code: body.code,
    reason: body.reason,
    message: body.message || response.statusText,
    requestId: body.request_id || response.headers.get("X-Request-Id") || "",
    fieldViolations: details.field_violations || [],
    metadata: details.metadata || {},
    operation,
  });
}

async function send(url, init, operation = "") {
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError({ status: 0, reason: "NETWORK", message: "The server cannot be reached.", operation });
  }
  if (!response.ok) throw await errorFrom(response, operation);
  return response;
}

// Runs one operation of the registry with its params; answers the result JSON.
export async function call(operation, params = {}, { idempotencyKey, validateOnly, signal } = {}) {
  const extra = { "Content-Type": "application/json" };
  if (idempotencyKey) extra["Idempotency-Key"] = idempotencyKey;
  const query = validateOnly ? "?validate_only=true" : "";
  const response = await send(
    `/v1/op/${encodeURIComponent(operation)}${query}`,
    { method: "POST", headers: headers(extra), body: JSON.stringify(params), signal },
    operation,
  );
  return response.json();
}

// Every page of a list operation: `key` names the result's repeated field.
export async function listAll(operation, params, key, { maxItems = 1000, signal } = {}) {
  const found = [];
  let pageToken = "";
  do {
    const page = await call(operation, { ...params, page_token: pageToken }, { signal });
    found.push(...(page[key] || []));
    pageToken = page.next_page_token || "";
  } while (pageToken && found.length < maxItems);
  return found;
}

// A fresh idempotency key (one per user action: a double click sends the same one).
export function newIdempotencyKey(prefix = "portal") {
  return `${prefix}-${crypto.randomUUID()}`;
}

// Reads a job's server-sent events with fetch (EventSource cannot send the
// Authorization header). Calls onEvent({id, event, data}) for each; resolves when
// the stream ends (also on 204: nothing newer for an ended job).
export async function jobEvents(jobId, onEvent, { signal, afterSequence = 0 } = {}) {
  const query = afterSequence ? `?after_sequence=${afterSequence}` : "";
  const response = await send(
    `/v1/jobs/${encodeURIComponent(jobId)}/events${query}`,
    { headers: headers({ Accept: "text/event-stream" }), signal },
    "jobs.events",
  );
  if (response.status === 204 || !response.body) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const message = parseEvent(block);
      if (message) onEvent(message);
    }
  }
}

function parseEvent(block) {
  const message = { id: "", event: "message", data: "" };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "id") message.id = value;
    else if (field === "event") message.event = value;
  }
  if (!data.length) return null;
  try {
    message.data = JSON.parse(data.join("\n"));
  } catch {
    message.data = data.join("\n");
  }
  return message;
}

// A same-origin path of a URL the server made absolute (its public URL): the page may
// load only this origin's images (Content-Security-Policy), whatever host it was opened on.
export function sameOrigin(url) {
  const parsed = new URL(url, location.href);
  return parsed.pathname + parsed.search;
}

// The TileJSON of an item or artifact (kind "items" or "artifacts") with a signed tile
// template (Leaflet cannot send headers), its tile URLs made same-origin.
export async function signedTileJson(kind, id, query = {}) {
  const params = new URLSearchParams({ ...query, signed: "true" });
  const response = await send(
    `/v1/${kind}/${encodeURIComponent(id)}/tilejson.json?${params}`,
    { headers: headers() },
    "tilejson",
  );
  const tilejson = await response.json();
  // The template's braces must survive: only the scheme, host and port go.
  tilejson.tiles = tilejson.tiles.map((template) => template.replace(/^[a-z]+:\/\/[^/]+/i, ""));
  return tilejson;
}

export async function signedTileTemplate(kind, id, query = {}) {
  return (await signedTileJson(kind, id, query)).tiles[0];
}

// A signed download URL of `items/{id}/assets/{key}` or `artifacts/{id}` (assets.sign).
export async function signUrl(resourceName, ttlSeconds = 3600) {
  const result = await call("assets.sign", { resource_name: resourceName, ttl_seconds: ttlSeconds });
  return { url: result.url, expireTime: result.expire_time };
}

// An authorised GET of an image (a preview, a tile) as an object URL for an <img>.
export async function imageObjectUrl(path, { signal } = {}) {
  const response = await send(path, { headers: headers(), signal }, "image");
  return URL.createObjectURL(await response.blob());
}
