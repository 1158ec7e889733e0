// Small DOM helpers the processing, jobs and analytics pages share.

/** el("p", { className: "x", text: "..." }, child...) -> element. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** An AbortSignal that fires when the page is left (the route changes) or ctx.signal fires. */
export function pageSignal(ctx) {
  const controller = new AbortController();
  const leave = () => controller.abort();
  window.addEventListener("hashchange", leave, { once: true });
  ctx?.signal?.addEventListener?.("abort", leave, { once: true });
  return controller.signal;
}

/** A fresh idempotency key (one per form submission: a retry or double click reuses it). */
export function newIdempotencyKey(prefix = "portal") {
  const random = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(16).slice(2)}`;
  return `${prefix}-${random}`;
}

export const TERMINAL_STATUSES = new Set(["succeeded", "failed", "cancelled"]);
export const JOB_STATUSES = ["pending", "dispatched", "running", "succeeded", "failed", "cancelled"];

/** The word for a job status (HTTP gives words; tolerate the enum name too). */
export function statusWord(status) {
  return String(status ?? "").replace(/^JOB_STATUS_/, "").toLowerCase();
}

export function statusBadge(status) {
  const word = statusWord(status);
  return el("span", { className: `status status-${word}`, "data-status": word, text: word });
}

/** A progress bar (0..1) with its percentage as text for screen readers. */
export function progressBar(progress, label) {
  const value = Math.max(0, Math.min(1, Number(progress) || 0));
  return el("progress", { max: "1", value: String(value), "aria-label": label, title: `${Math.round(value * 100)} %` });
}

/** "2026-12-06 18:06:56 UTC" from an RFC 3339 time. */
export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

/** The message an error shows: the server's reason and message, or the error's own. */
export function errorText(error) {
  if (error?.reason) return `${error.message ?? ""} (${error.reason})`.trim();
  return error?.message ?? String(error);
}

/** A status line (role=status) pages write progress and outcomes into. */
export function statusLine(className = "notice") {
  return el("p", { className, role: "status", "aria-live": "polite" });
}
