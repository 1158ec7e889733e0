// #/jobs/{id}: one job with its facts, failure reason, input, outputs (links to the
// output items) and its events, replayed from the first and followed live.
import { formatDate, h } from "../dom.js";
import { failureReason, progressBar, statusBadge, statusWord, TERMINAL_STATUSES } from "../ui.js";

function itemLinks(ids) {
  if (!ids?.length) return h("span", { class: "muted" }, "none");
  return h("ul", { class: "output-items" }, ids.map((id) => h("li", {}, h("a", { href: `#/items/${id}`, class: "mono" }, id))));
}

export async function render(root, params, ctx) {
  const { api } = ctx;
  const { job } = await api.call("processing.jobs.get", { job_id: params.id }, { signal: ctx.signal });

  const facts = h("dl", { class: "facts", id: "job-facts" });
  const failure = h("p", { class: "notice error job-failure", id: "job-failure", hidden: true });
  const outputs = h("div", { id: "job-outputs" });
  const events = h("ol", { class: "events", id: "job-events", "aria-live": "polite" });
  const cancel = h("button", { type: "button", class: "secondary", id: "job-cancel" }, "Cancel job");
  root.append(
    h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")),
    h("h1", {}, "Job ", h("span", { class: "mono" }, job.id)),
    facts, failure, cancel,
    h("h2", {}, "Outputs"), outputs,
    h("h2", {}, "Input"), h("pre", { class: "job-input mono" }, JSON.stringify(job.input_params ?? {}, null, 2)),
    h("h2", {}, "Events"), events,
  );

  function show(current) {
    const word = statusWord(current.status);
    root.dataset.status = word;
    const rows = [
      ["Status", statusBadge(word)],
      ["Progress", progressBar(word === "succeeded" ? 1 : current.progress, "Progress")],
      ["Type", current.job_type_id],
      ["Credits held", String(current.credits_reserved ?? 0)],
      ["Credits charged", String(current.credits_charged ?? 0)],
      ["Attempt", `${current.attempt ?? 0} of ${current.max_attempts ?? "?"}`],
      ["Created", formatDate(current.create_time)],
      ["Started", formatDate(current.start_time)],
      ["Ended", formatDate(current.end_time)],
      ["Message", current.message ?? ""],
      ["Sources", itemLinks(current.source_item_ids)],
    ];
    facts.replaceChildren(...rows.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
    const reason = failureReason(current);
    failure.hidden = !reason || word === "succeeded";
    failure.textContent = reason ? `${word === "cancelled" ? "Cancelled" : "Failed"}: ${reason}` : "";
    outputs.replaceChildren(itemLinks(current.output_item_ids));
    cancel.hidden = TERMINAL_STATUSES.has(word);
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const result = await api.call("processing.jobs.cancel", { job_id: job.id, reason: "cancelled in the portal" }, { signal: ctx.signal });
      show(result.job);
    } catch (err) {
      ctx.handleError(err);
    } finally {
      cancel.disabled = false;
    }
  });

  const addEvent = (sequence, event, time, current) => events.append(
    h("li", { "data-event": event, "data-sequence": sequence },
      h("strong", {}, event), " ", h("span", { class: "muted" }, formatDate(time)), " ",
      statusBadge(current.status), current.message ? ` ${current.message}` : ""));

  show(job);
  // Event 1 is the creation; after it the stream replays every later event, then
  // follows the job live until it ends.
  addEvent("1", "created", job.create_time, { status: "pending" });
  api.jobEvents(job.id, ({ id, event, data }) => {
    if (!data?.job) return;
    show(data.job);
    addEvent(id, event, data.event_time, data.job);
  }, { signal: ctx.signal, afterSequence: 1 }).catch((err) => err.name === "AbortError" || ctx.handleError(err));
}
