// A form generated from a JSON Schema (an analytics method's or a job type's params), so
// a plugin method or job type gets its form with no portal change; and the server's field
// violations placed next to the fields they name. The server validates (the form is
// `novalidate`): one set of rules and messages, the same the SDKs and agents get.
import { closestField, formPath, orderedProperties, unwrapNullable } from "./schema.js";
import { buildField } from "./form_fields.js";

const forms = new WeakMap(); // form -> { fields: Map(path -> field), root, prefix }

/**
 * createForm(schema, options) -> HTMLFormElement.
 * options: idPrefix (unique per page), pathPrefix (the name the server puts before the
 * params in a violation: "params", "input_params", "" for an operation's own fields),
 * items ([{id, name, datetime}] for item pickers), getAoi (async () => geometry from the
 * map), values (initial values by property name), omit (property names left out, e.g.
 * ones the page fills itself), submitLabel.
 */
export function createForm(schema, options = {}) {
  const form = document.createElement("form");
  form.className = "schema-form";
  form.noValidate = true;
  const idPrefix = options.idPrefix ?? "form";
  form.id = idPrefix;
  const summary = document.createElement("div");
  summary.className = "form-errors";
  summary.setAttribute("role", "alert");
  summary.hidden = true;
  form.append(summary);

  const fields = new Map();
  const context = {
    root: schema,
    items: options.items ?? [],
    getAoi: options.getAoi,
    register: (path, field) => fields.set(path, field),
    idOf: (path) => `${idPrefix}-${path.replace(/[^A-Za-z0-9_-]/g, "-")}`,
  };
  const omit = new Set(options.omit ?? []);
  const root = buildObjectBody(schema, "", context, omit);
  form.append(root.element);
  root.write(options.values ?? {});

  if (options.submitLabel !== null) {
    const actions = document.createElement("div");
    actions.className = "form-actions";
    const submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = options.submitLabel ?? "Submit";
    actions.append(submit);
    form.append(actions);
  }
  forms.set(form, { fields, root, prefix: options.pathPrefix ?? "" });
  return form;
}

/** The properties of an object schema, each as a field; used for the form and nested objects. */
export function buildObjectBody(schema, basePath, context, omit = new Set()) {
  const element = document.createElement("div");
  element.className = "form-fields";
  const children = [];
  for (const { name, node, required } of orderedProperties(schema)) {
    if (omit.has(name)) continue;
    const { node: inner, nullable } = unwrapNullable(context.root, node);
    const path = basePath ? `${basePath}.${name}` : name;
    const field = buildField({ name, path, node: inner, required, nullable }, context, buildObjectBody);
    context.register(path, field);
    children.push({ name, field });
    element.append(field.element);
  }
  return {
    element,
    read(errors) {
      const value = {};
      for (const { name, field } of children) {
        const v = field.read(errors);
        if (v !== undefined) value[name] = v;
      }
      return value;
    },
    write(value) {
      for (const { name, field } of children) if (name in value) field.write(value[name]);
    },
  };
}

/**
 * readForm(form) -> { value, errors }: the params object (empty optional fields left out,
 * so the server's defaults apply) and the fields the browser could not even parse (a
 * number box holding text, JSON that is not JSON), as field violations.
 */
export function readForm(form) {
  const state = forms.get(form);
  const errors = [];
  const value = state.root.read(errors);
  return { value, errors };
}

/** Set one field (by its path, e.g. "geometry" or "histogram.bins"). */
export function setFieldValue(form, path, value) {
  const field = forms.get(form)?.fields.get(path);
  if (!field) return false;
  field.write(value);
  form.dispatchEvent(new Event("input", { bubbles: true }));
  return true;
}

/** The path of every field in the form whose control is of `kind` (e.g. "geometry"). */
export function fieldsOfKind(form, kind) {
  const state = forms.get(form);
  return [...(state?.fields ?? new Map())].filter(([, f]) => f.kind === kind).map(([path]) => path);
}

/** Remove every error shown by showFieldErrors. */
export function clearFieldErrors(form) {
  for (const message of form.querySelectorAll(".field-error")) {
    message.textContent = "";
    message.hidden = true;
  }
  for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
  for (const wrapper of form.querySelectorAll(".field.has-error")) wrapper.classList.remove("has-error");
  const summary = form.querySelector(".form-errors");
  summary.replaceChildren();
  summary.hidden = true;
}

/**
 * showFieldErrors(form, fieldViolations): each violation ({field, description}, as the
 * server's error JSON has them, with dotted paths like `params.geometry` or
 * `params.percentiles[1]`) is written next to the field it names (or the closest
 * enclosing field: `params.geometry.coordinates[0]` goes to Geometry); the ones naming
 * no field of the form go to the summary at the top. The first invalid field gets the
 * focus. Answers how many were placed next to a field.
 */
export function showFieldErrors(form, fieldViolations) {
  const state = forms.get(form);
  clearFieldErrors(form);
  const known = new Set(state.fields.keys());
  const unplaced = [];
  let placed = 0;
  let first = null;
  for (const violation of fieldViolations ?? []) {
    const target = closestField(formPath(violation.field, state.prefix), known);
    if (target === undefined) {
      unplaced.push(violation);
      continue;
    }
    const field = state.fields.get(target);
    field.showError(violation.description ?? "invalid value");
    placed += 1;
    first ??= field;
  }
  if (unplaced.length) {
    const summary = form.querySelector(".form-errors");
    const list = document.createElement("ul");
    for (const violation of unplaced) {
      const entry = document.createElement("li");
      entry.textContent = violation.field ? `${violation.field}: ${violation.description}` : violation.description;
      list.append(entry);
    }
    summary.replaceChildren(list);
    summary.hidden = false;
  }
  first?.focus();
  return placed;
}

/** Show a message in the form's summary (e.g. an error with no field violations). */
export function showFormMessage(form, message) {
  clearFieldErrors(form);
  const summary = form.querySelector(".form-errors");
  summary.textContent = message;
  summary.hidden = false;
}
