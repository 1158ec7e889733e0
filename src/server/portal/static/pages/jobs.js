// #/jobs: the project's jobs with status and type filters; a job that has not ended is
// followed live over its server-sent events (progress bar, status, failure reason) and
// can be cancelled (processing.jobs.cancel).
import { formatDate, h } from "../dom.js";
import { failureReason, JOB_STATUSES, progressBar, statusBadge, statusWord, TERMINAL_STATUSES } from "../ui.js";

// A browser opens at most 6 HTTP/1.1 connections per host: the event streams followed
// at once stay below that, so calls still get through; the other jobs refresh with the list.
const MAX_STREAMS = 3;
const REFRESH_MS = 5000;
const HEADINGS = ["Job", "Type", "Status", "Progress", "Credits (reserved / charged)", "Created", "Message", ""];

export async function render(root, params, ctx) {
  const { api } = ctx;
  const { job_types: jobTypes = [] } = await api.call("processing.job_types.list", {}, { signal: ctx.signal });

  const statusFilter = h("select", { id: "jobs-status" },
    h("option", { value: "" }, "any status"), JOB_STATUSES.map((s) => h("option", { value: s }, s)));
  const typeFilter = h("select", { id: "jobs-type" },
    h("option", { value: "" }, "any type"), jobTypes.map((t) => h("option", { value: t.job_type_id }, t.job_type_id)));
  const refresh = h("button", { type: "button", class: "secondary", id: "jobs-refresh" }, "Refresh");
  const body = h("tbody", { id: "jobs-body" });
  const info = h("p", { class: "muted", role: "status", id: "jobs-info" });
  root.append(
    h("h1", {}, "Jobs"),
    h("div", { class: "job-filters" },
      h("div", { class: "field" }, h("label", { for: "jobs-status" }, "Status"), statusFilter),
      h("div", { class: "field" }, h("label", { for: "jobs-type" }, "Type"), typeFilter),
      refresh, h("a", { class: "button secondary", href: "#/process" }, "New job")),
    info,
    h("div", { class: "table-wrap" },
      h("table", { id: "jobs-table" },
        h("caption", { class: "visually-hidden" }, "Jobs of the project, newest first"),
        h("thead", {}, h("tr", {},
          HEADINGS.map((c) => h("th", { scope: "col" }, c)))),
        body)),
  );

  const rows = new Map(); // job id -> { row, update(job) }
  const streams = new Map(); // job id -> AbortController

  function follow(jobId) {
    if (streams.has(jobId) || streams.size >= MAX_STREAMS) return;
    const controller = new AbortController();
    ctx.signal.addEventListener("abort", () => controller.abort(), { once: true });
    streams.set(jobId, controller);
    api.jobEvents(jobId, ({ data }) => {
      if (data?.job) rows.get(jobId)?.update(data.job, { live: true });
    }, { signal: controller.signal })
      .catch((err) => err.name === "AbortError" || ctx.handleError(err))
      .finally(() => streams.delete(jobId));
  }

  function jobRow(job) {
    // data-label: the column's name, shown beside each value where rows become cards (phone).
    const cells = {
      status: h("td", { class: "job-status", "data-label": HEADINGS[2] }),
      progress: h("td", { "data-label": HEADINGS[3] }),
      credits: h("td", { class: "num", "data-label": HEADINGS[4] }),
      message: h("td", { class: "job-message", "data-label": HEADINGS[6] }),
      action: h("td", { class: "job-action" }),
    };
    const row = h("tr", { "data-job-id": job.id },
      h("td", { "data-label": HEADINGS[0] }, h("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id)),
      h("td", { "data-label": HEADINGS[1] }, job.job_type_id),
      cells.status, cells.progress, cells.credits,
      h("td", { "data-label": HEADINGS[5] }, formatDate(job.create_time)),
      cells.message, cells.action);
    function update(current, { live = false } = {}) {
      const word = statusWord(current.status);
      row.dataset.status = word;
      if (live) row.dataset.events = String(Number(row.dataset.events ?? 0) + 1); // seen over the stream
      cells.status.replaceChildren(statusBadge(word));
      cells.progress.replaceChildren(progressBar(word === "succeeded" ? 1 : current.progress, `Progress of ${current.id}`));
      cells.credits.textContent = `${current.credits_reserved ?? 0} / ${current.credits_charged ?? 0}`;
      const failure = failureReason(current);
      cells.message.replaceChildren(
        failure && word !== "succeeded"
          ? h("span", { class: "job-failure" }, failure)
          : h("span", { class: "muted" }, current.message ?? ""));
      cells.action.replaceChildren();
      if (!TERMINAL_STATUSES.has(word)) {
        cells.action.append(h("button", {
          type: "button", class: "secondary cancel-job", "aria-label": `Cancel job ${current.id}`,
          onclick: (event) => cancel(current.id, event.currentTarget),
        }, current.cancel_requested ? "Cancelling…" : "Cancel"));
      }
    }
    update(job);
    return { row, update };
  }

  async function cancel(jobId, button) {
    button.disabled = true;
    try {
      const { job } = await api.call("processing.jobs.cancel", { job_id: jobId, reason: "cancelled in the portal" }, { signal: ctx.signal });
      rows.get(jobId)?.update(job);
    } catch (err) {
      button.disabled = false;
      ctx.handleError(err);
    }
  }

  let loads = 0; // a list answered after a newer one was asked for (other filters) is dropped
  async function load() {
    const serial = ++loads;
    const filters = { project_id: ctx.projectId, page_size: 100 };
    if (statusFilter.value) filters.status = statusFilter.value;
    if (typeFilter.value) filters.job_type_id = typeFilter.value;
    const { jobs = [] } = await api.call("processing.jobs.list", filters, { signal: ctx.signal });
    if (serial !== loads) return;
    const seen = new Set();
    for (const job of jobs) {
      seen.add(job.id);
      const existing = rows.get(job.id);
      if (existing) existing.update(job);
      else rows.set(job.id, jobRow(job));
    }
    for (const [id, entry] of rows) {
      if (!seen.has(id)) {
        entry.row.remove();
        rows.delete(id);
        streams.get(id)?.abort();
      }
    }
    body.replaceChildren(...jobs.map((job) => rows.get(job.id).row));
    info.textContent = jobs.length ? `${jobs.length} job${jobs.length === 1 ? "" : "s"}` : "No jobs match.";
    for (const job of jobs) if (!TERMINAL_STATUSES.has(statusWord(job.status))) follow(job.id);
  }

  const applyFilters = () => load().catch(ctx.handleError);
  statusFilter.addEventListener("change", applyFilters);
  typeFilter.addEventListener("change", applyFilters);
  refresh.addEventListener("click", () => load().catch(ctx.handleError));

  await load();
  const timer = setInterval(() => load().catch((err) => err.name === "AbortError" || ctx.handleError(err)), REFRESH_MS);
  return () => clearInterval(timer);
}
