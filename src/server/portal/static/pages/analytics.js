// #/analytics: the methods analytics.operations.list publishes, each with a form
// generated from its params JSON Schema (so a plugin method gets one with no portal
// change), the AOI from the map, and the result as tables, charts and map overlays.
import { aoiMap } from "../aoi.js";
import { h } from "../dom.js";
import { createForm, fieldsOfKind, readForm, setFieldValue, showFieldErrors, showFormMessage } from "../forms.js";
import { renderResult } from "../results.js";

const METHOD_KEY = "geopera.analytics.method";

export async function render(root, params, ctx) {
  const { api } = ctx;
  const signal = ctx.signal;
  const [{ operations: methods = [] }, items] = await Promise.all([
    api.call("analytics.operations.list", {}, { signal }),
    api.listAll("items.list", { project_id: ctx.projectId }, "items", { signal }),
  ]);

  const methodList = h("ul", { class: "method-list", id: "analytics-methods", "aria-label": "Methods" });
  const description = h("p", { class: "muted method-description", id: "method-description" });
  const formSlot = h("div", { class: "form-slot" });
  const status = h("p", { class: "muted", role: "status", id: "analytics-status" });
  const resultSlot = h("section", { class: "result-section", id: "analytics-result", "aria-live": "polite", hidden: true });
  const mapColumn = h("div", { class: "analytics-map" });
  root.append(
    h("h1", {}, "Analytics"),
    methodList,
    h("div", { class: "work-layout" }, mapColumn, h("div", { class: "work-panel" }, description, formSlot, status)),
    resultSlot,
  );

  let form = null;
  let method = null;
  let pendingKey = null;
  let busy = false;
  let layers = [];
  const aoi = aoiMap(mapColumn, ctx, {
    items,
    id: "analytics-map",
    onItemClick: (item) => {
      if (!form) return;
      const { value } = readForm(form);
      const paths = fieldsOfKind(form, "item");
      const target = paths.find((p) => !value[p]) ?? paths[0];
      if (target) setFieldValue(form, target, item.id);
    },
  });
  aoi.onChange((geometry) => {
    if (!form) return;
    for (const path of fieldsOfKind(form, "geometry")) setFieldValue(form, path, geometry);
  });

  function choose(name) {
    method = methods.find((m) => m.name === name) ?? methods[0];
    if (!method) {
      formSlot.replaceChildren(h("p", { class: "notice" }, "No analytics method is registered."));
      return;
    }
    sessionStorage.setItem(METHOD_KEY, method.name);
    for (const button of methodList.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.method === method.name));
    }
    description.textContent = method.description ?? "";
    form = createForm(method.input_schema ?? { type: "object" }, {
      idPrefix: `method-${method.name}`,
      pathPrefix: "params",
      items,
      getAoi: () => aoi.getAoi(),
      submitLabel: `Run ${method.name}`,
    });
    if (aoi.current()) for (const path of fieldsOfKind(form, "geometry")) setFieldValue(form, path, aoi.current());
    form.dataset.method = method.name;
    form.addEventListener("input", () => {
      pendingKey = null;
      const path = fieldsOfKind(form, "geometry")[0];
      const typed = path ? readForm(form).value[path] : undefined;
      if (typed && JSON.stringify(typed) !== JSON.stringify(aoi.current())) aoi.set(typed, { notify: false });
    });
    form.addEventListener("change", () => { pendingKey = null; });
    form.addEventListener("submit", run);
    formSlot.replaceChildren(form);
    status.textContent = "";
  }

  async function run(event) {
    event.preventDefault();
    if (busy) return;
    const { value, errors } = readForm(form);
    if (errors.length) {
      showFieldErrors(form, errors);
      return;
    }
    pendingKey ??= api.newIdempotencyKey("analytics");
    busy = true;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    status.textContent = `Running ${method.name}…`;
    try {
      const response = await api.call("analytics.execute", { operation: method.name, params: value }, { idempotencyKey: pendingKey, signal });
      showFieldErrors(form, []);
      pendingKey = null;
      for (const layer of layers) layer.remove();
      resultSlot.hidden = false;
      layers = await renderResult(resultSlot, response, ctx, aoi.map);
      status.textContent = `${method.name} done.`;
      resultSlot.dataset.operation = response.operation;
      resultSlot.scrollIntoView({ block: "start" });
    } catch (err) {
      if (err.name === "AbortError") return;
      status.textContent = "";
      if (err.fieldViolations?.length) showFieldErrors(form, err.fieldViolations);
      else if (err.unauthenticated || err.missingScope) ctx.handleError(err);
      else showFormMessage(form, `${err.message}${err.reason ? ` (${err.reason})` : ""}`);
    } finally {
      busy = false;
      button.disabled = false;
    }
  }

  for (const m of methods) {
    methodList.append(h("li", {}, h("button", {
      type: "button", class: "secondary", "data-method": m.name, "aria-pressed": "false", onclick: () => choose(m.name),
    }, m.name)));
  }
  choose(sessionStorage.getItem(METHOD_KEY) ?? methods[0]?.name);
  return () => aoi.remove();
}
