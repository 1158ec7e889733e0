// Job words and widgets the processing, jobs and analytics pages share.
import { h } from "./dom.js";

export const TERMINAL_STATUSES = new Set(["succeeded", "failed", "cancelled"]);
export const JOB_STATUSES = ["pending", "dispatched", "running", "succeeded", "failed", "cancelled"];

/** The word for a job status (HTTP gives words; the enum name is tolerated). */
export function statusWord(status) {
  return String(status ?? "").replace(/^JOB_STATUS_/, "").toLowerCase();
}

export function statusBadge(status) {
  const word = statusWord(status);
  return h("span", { class: `status status-${word}`, "data-status": word }, word);
}

/** A progress bar (0..1), labelled for screen readers. */
export function progressBar(progress, label) {
  const value = Math.max(0, Math.min(1, Number(progress) || 0));
  return h("progress", { max: "1", value: String(value), "aria-label": label, title: `${Math.round(value * 100)} %` });
}

/** Why a job failed or was cancelled: the error's message and reason. */
export function failureReason(job) {
  const error = job?.error;
  if (!error || (!error.message && !error.details)) return "";
  const info = (error.details ?? []).find((d) => d.reason);
  return [error.message, info?.reason && `(${info.reason})`].filter(Boolean).join(" ");
}

/** A live status line pages write progress and outcomes into. */
export function statusLine(className = "notice") {
  return h("p", { class: className, role: "status", "aria-live": "polite" });
}
