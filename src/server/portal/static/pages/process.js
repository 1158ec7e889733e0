// #/process: create a job of any registered job type from a form generated from its
// params schema (processing.job_types.list); a clip goes through clip.create_from_item.
// The AOI comes from the map (drawn) or a GeoJSON file; the price is quoted by the server
// before the spend (validate_only); every submission carries one idempotency key, so a
// double click pays once.
import { aoiMap } from "../aoi.js";
import { describeCostModel } from "../cost.js";
import { formatNumber, h } from "../dom.js";
import { createForm, fieldsOfKind, readForm, setFieldValue, showFieldErrors, showFormMessage } from "../forms.js";
import { progressBar, statusBadge, statusWord, TERMINAL_STATUSES } from "../ui.js";

const CLIP = "clip";

/** The operation a job type is created with, and the prefix its violations carry. */
function creation(jobTypeId, projectId, value) {
  if (jobTypeId === CLIP) {
    return { operation: "clip.create_from_item", body: { project_id: projectId, ...value }, prefix: "" };
  }
  return {
    operation: "processing.create_and_dispatch",
    body: { project_id: projectId, job_type_id: jobTypeId, input_params: value },
    prefix: "input_params",
  };
}

export async function render(root, params, ctx) {
  const { api } = ctx;
  const signal = ctx.signal;
  const [{ job_types: jobTypes = [] }, items] = await Promise.all([
    api.call("processing.job_types.list", {}, { signal }),
    api.listAll("items.list", { project_id: ctx.projectId, view: "ITEM_VIEW_BASIC" }, "items", { signal }),
  ]);

  const typeSelect = h("select", { id: "job-type" },
    jobTypes.map((t) => h("option", { value: t.job_type_id }, t.job_type_id)));
  typeSelect.value = jobTypes.some((t) => t.job_type_id === CLIP) ? CLIP : jobTypes[0]?.job_type_id ?? "";
  const description = h("p", { class: "muted job-type-description" });
  const cost = h("div", { class: "cost", id: "process-cost", "aria-live": "polite" });
  const formSlot = h("div", { class: "form-slot" });
  const outcome = h("div", { class: "job-outcome", id: "process-outcome", "aria-live": "polite" });
  const mapColumn = h("div", { class: "process-map" });
  root.append(
    h("h1", {}, "Process"),
    h("div", { class: "work-layout" },
      mapColumn,
      h("div", { class: "work-panel" },
        h("div", { class: "field" }, h("label", { for: "job-type" }, "Job type"), typeSelect),
        description, cost, formSlot, outcome)),
  );

  let form = null;
  let jobType = null;
  let pendingKey = null; // one per submission: a retry of the same submission replays it
  let busy = false;
  const itemField = () => (form ? fieldsOfKind(form, "item")[0] : undefined);
  const aoi = aoiMap(mapColumn, ctx, {
    items,
    id: "process-map",
    onItemClick: (item) => {
      const path = itemField();
      if (path) setFieldValue(form, path, item.id);
    },
  });
  aoi.onChange((geometry) => {
    if (!form) return;
    for (const path of fieldsOfKind(form, "geometry")) setFieldValue(form, path, geometry);
  });

  // The price before the spend: the same call with validate_only (AIP-163) runs every
  // check and answers the estimate the real call would hold; nothing is reserved.
  let quoteSerial = 0;
  let quoteTimer = null;
  let quoting = null; // the AbortController of the quote in flight
  signal.addEventListener("abort", () => quoting?.abort(), { once: true });
  function showCost() {
    clearTimeout(quoteTimer);
    quoteTimer = setTimeout(quote, 250);
  }

  async function quote() {
    if (!form || !jobType) return;
    const serial = ++quoteSerial;
    const model = h("p", { class: "muted" }, `Cost model of ${jobType.job_type_id}: ${describeCostModel(jobType.cost_model ?? {})}.`);
    const { value, errors } = readForm(form);
    // Asked only once the form could be priced: no request per keystroke of an empty form.
    const missing = (jobType.input_schema?.required ?? []).filter((name) => value[name] === undefined);
    let line;
    if (errors.length || missing.length) {
      line = h("p", { class: "estimate", "data-credits": "" }, "Fill in ",
        errors.length ? errors[0].field : missing.join(", "), " to see the price.");
    } else {
      const { operation, body } = creation(jobType.job_type_id, ctx.projectId, value);
      try {
        quoting?.abort();
        quoting = new AbortController();
        const { estimate } = await api.call(operation, body, { validateOnly: true, signal: quoting.signal });
        if (serial !== quoteSerial) return;
        const total = Number(estimate.total_credits);
        line = h("p", { class: "estimate", "data-credits": String(total) },
          h("strong", {}, `${total} credit${total === 1 ? "" : "s"}`),
          ` for ${formatNumber(estimate.area_km2 ?? 0)} km² and ${estimate.asset_count ?? 0} asset(s); `,
          `${estimate.balance_after} would stay available. Validated by the server, nothing reserved.`);
      } catch (err) {
        if (err.name === "AbortError" || serial !== quoteSerial) return;
        if (err.unauthenticated) return ctx.handleError(err);
        const first = err.fieldViolations?.[0];
        line = h("p", { class: "estimate", "data-credits": "", "data-reason": err.reason ?? "" }, "Not priced yet: ",
          first ? `${first.field}: ${first.description}` : err.message);
      }
    }
    cost.replaceChildren(h("h2", {}, "Cost before you pay"), line, model);
  }

  function buildForm() {
    jobType = jobTypes.find((t) => t.job_type_id === typeSelect.value) ?? null;
    description.textContent = jobType?.description ?? "";
    if (!jobType) {
      formSlot.replaceChildren(h("p", { class: "notice" }, "No job type is registered."));
      return;
    }
    const { prefix } = creation(jobType.job_type_id, ctx.projectId, {});
    form = createForm(jobType.input_schema ?? { type: "object" }, {
      idPrefix: "job",
      pathPrefix: prefix,
      items,
      getAoi: () => aoi.getAoi(),
      submitLabel: jobType.job_type_id === CLIP ? "Clip" : `Create ${jobType.job_type_id} job`,
    });
    if (aoi.current()) for (const path of fieldsOfKind(form, "geometry")) setFieldValue(form, path, aoi.current());
    form.addEventListener("input", () => {
      pendingKey = null; // other params: another submission
      const geometryPath = fieldsOfKind(form, "geometry")[0];
      const { value } = readForm(form);
      const drawn = geometryPath ? value[geometryPath] : undefined;
      if (drawn && JSON.stringify(drawn) !== JSON.stringify(aoi.current())) {
        aoi.set(drawn, { notify: false });
      }
      const itemPath = itemField();
      if (itemPath) aoi.highlight(value[itemPath]);
      showCost();
    });
    form.addEventListener("change", () => form.dispatchEvent(new Event("input")));
    form.addEventListener("submit", submit);
    formSlot.replaceChildren(form);
    showCost();
  }

  async function submit(event) {
    event.preventDefault();
    if (busy) return; // the second click of a double click
    const { value, errors } = readForm(form);
    if (errors.length) {
      showFieldErrors(form, errors);
      return;
    }
    const { operation, body } = creation(jobType.job_type_id, ctx.projectId, value);
    clearTimeout(quoteTimer); // the quote of what is being bought is shown already
    quoteSerial += 1;
    quoting?.abort();
    pendingKey ??= api.newIdempotencyKey(jobType.job_type_id);
    busy = true;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    outcome.replaceChildren(h("p", { class: "notice" }, "Creating the job…"));
    try {
      const result = await api.call(operation, body, { idempotencyKey: pendingKey, signal });
      showFieldErrors(form, []);
      pendingKey = null;
      followJob(result.job);
    } catch (err) {
      if (err.name === "AbortError") return;
      outcome.replaceChildren();
      if (err.unauthenticated || err.missingScope) ctx.handleError(err);
      else if (err.fieldViolations?.length) showFieldErrors(form, err.fieldViolations);
      else showFormMessage(form, `${err.message}${err.reason ? ` (${err.reason})` : ""}`);
    } finally {
      busy = false;
      button.disabled = false;
    }
  }

  function followJob(job) {
    const badge = h("span", { class: "job-status" }, statusBadge(job.status));
    const bar = progressBar(job.progress, `Progress of ${job.id}`);
    const message = h("p", { class: "muted job-message" }, job.message ?? "");
    outcome.replaceChildren(
      h("p", { class: "notice job-created", "data-job-id": job.id },
        "Job ", h("a", { href: `#/jobs/${job.id}` }, job.id), " created: ",
        h("strong", { class: "credits-held" }, `${job.credits_reserved} credits held`), ". ", badge),
      bar, message,
    );
    if (TERMINAL_STATUSES.has(statusWord(job.status))) return;
    api.jobEvents(job.id, ({ data }) => {
      const current = data?.job;
      if (!current) return;
      badge.replaceChildren(statusBadge(current.status));
      bar.value = Number(current.progress) || 0;
      message.textContent = current.message ?? "";
    }, { signal }).catch((err) => err.name === "AbortError" || ctx.handleError(err));
  }

  typeSelect.addEventListener("change", buildForm);
  buildForm();
  return () => aoi.remove();
}
