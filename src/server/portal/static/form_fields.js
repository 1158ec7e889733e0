// One generated form field per JSON Schema property kind (see schema.js fieldKind). Each
// answers { element, kind, read(errors), write(value), showError(message), focus() };
// read() answers undefined for an empty optional field, so the server's default applies.
import { h } from "./dom.js";
import { fieldKind, labelOf, listItemType, resolveRef } from "./schema.js";

function defaultNote(node) {
  if (node.default === undefined || node.default === null) return "";
  return `default ${typeof node.default === "object" ? JSON.stringify(node.default) : node.default}`;
}

function rangeNote(node) {
  const low = node.minimum ?? node.exclusiveMinimum;
  const high = node.maximum ?? node.exclusiveMaximum;
  const lowText = node.exclusiveMinimum !== undefined ? `> ${low}` : `≥ ${low}`;
  const highText = node.exclusiveMaximum !== undefined ? `< ${high}` : `≤ ${high}`;
  if (low !== undefined && high !== undefined) return `${lowText}, ${highText}`;
  if (low !== undefined) return lowText;
  if (high !== undefined) return highText;
  return "";
}

/** The frame every field shares: label (or legend), help text, error line. */
function frame(spec, context, { group = false } = {}) {
  const id = context.idOf(spec.path);
  const wrapper = h(group ? "fieldset" : "div", { class: "field", "data-path": spec.path });
  const labelText = [h("span", {}, labelOf(spec.name, spec.node))];
  if (spec.required) labelText.push(h("span", { class: "required", "aria-hidden": "true" }, " *"));
  const label = group ? h("legend", {}, ...labelText) : h("label", { for: id }, ...labelText);
  const notes = [spec.node.description, rangeNote(spec.node), defaultNote(spec.node)].filter(Boolean);
  const help = notes.length ? h("small", { class: "help", id: `${id}-help` }, notes.join(" · ")) : null;
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  wrapper.append(label);
  const describedBy = [help && `${id}-help`, `${id}-error`].filter(Boolean).join(" ");
  return {
    id,
    wrapper,
    describedBy,
    finish(control) {
      wrapper.append(control);
      if (help) wrapper.append(help);
      wrapper.append(error);
    },
    showError(message, invalidControl) {
      error.textContent = message;
      error.hidden = false;
      wrapper.classList.add("has-error");
      invalidControl?.setAttribute("aria-invalid", "true");
    },
  };
}

function control(tag, f, spec, attrs = {}) {
  return h(tag, {
    id: f.id,
    name: spec.path,
    "aria-describedby": f.describedBy,
    "aria-required": spec.required ? "true" : undefined,
    ...attrs,
  });
}

function finished(kind, f, main, read, write) {
  return {
    element: f.wrapper,
    kind,
    read,
    write,
    showError: (message) => f.showError(message, main),
    focus: () => main.focus(),
  };
}

// A fractional value in an integer field is sent as typed: the server names the error.
function parseNumber(text) {
  const value = Number(text);
  return text.trim() === "" || !Number.isFinite(value) ? undefined : value;
}

function selectField(spec, f, options) {
  const select = control("select", f, spec);
  const blank = spec.required ? "Choose…" : spec.node.default != null ? `(${defaultNote(spec.node)})` : "(none)";
  select.append(h("option", { value: "" }, blank));
  for (const option of options) select.append(h("option", { value: option.value }, option.label));
  f.finish(select);
  return select;
}

function itemLabh(item) {
  const date = item.datetime ? ` (${String(item.datetime).slice(0, 10)})` : "";
  return `${item.name ?? item.id}${date}`;
}

function scalarField(kind, spec, context) {
  const f = frame(spec, context);
  const node = spec.node;
  if (kind === "enum" || (kind === "item" && context.items.length)) {
    const options =
      kind === "enum"
        ? node.enum.map((v) => ({ value: String(v), label: String(v) }))
        : context.items.map((item) => ({ value: item.id, label: itemLabh(item) }));
    const select = selectField(spec, f, options);
    const numeric = node.type === "integer";
    return finished(
      kind,
      f,
      select,
      () => (select.value === "" ? undefined : numeric ? Number(select.value) : select.value),
      (v) => {
        if (v != null && ![...select.options].some((o) => o.value === String(v))) {
          select.append(h("option", { value: String(v) }, String(v)));
        }
        select.value = v == null ? "" : String(v);
      },
    );
  }
  if (kind === "boolean") {
    const box = control("input", f, spec, { type: "checkbox" });
    box.checked = node.default === true;
    f.wrapper.classList.add("field-checkbox");
    f.finish(box);
    return finished(kind, f, box, () => box.checked, (v) => { box.checked = Boolean(v); });
  }
  if (kind === "integer" || kind === "number") {
    const low = node.minimum ?? node.exclusiveMinimum;
    const high = node.maximum ?? node.exclusiveMaximum;
    const input = control("input", f, spec, {
      type: "number",
      inputmode: kind === "integer" ? "numeric" : "decimal",
      step: kind === "integer" ? "1" : "any",
      min: low,
      max: high,
      placeholder: node.default != null ? String(node.default) : undefined,
    });
    f.finish(input);
    const read = (errors) => {
      if (input.validity.badInput) {
        errors.push({ field: spec.path, description: "not a number" });
        return undefined;
      }
      return parseNumber(input.value);
    };
    return finished(kind, f, input, read, (v) => { input.value = v == null ? "" : String(v); });
  }
  const isDate = kind === "datetime";
  const input = control("input", f, spec, {
    type: isDate ? "datetime-local" : "text",
    step: isDate ? "1" : undefined,
    maxlength: node.maxLength,
    placeholder: isDate ? undefined : node.default != null ? String(node.default) : undefined,
    autocomplete: "off",
  });
  if (isDate) f.wrapper.querySelector("label").append(h("span", { class: "unit" }, " (UTC)"));
  f.finish(input);
  const read = () => {
    const text = input.value.trim();
    if (text === "") return undefined;
    if (!isDate) return text;
    return `${text.length === 16 ? `${text}:00` : text}Z`;
  };
  const write = (v) => {
    input.value = v == null ? "" : isDate ? String(v).replace(/Z$|[+-]00:00$/, "").slice(0, 19) : String(v);
  };
  return finished(kind, f, input, read, write);
}

function checkboxGroup(kind, spec, context, options) {
  const f = frame(spec, context, { group: true });
  const list = h("div", { class: "checkbox-group" });
  const boxes = options.map((option, index) => {
    const id = `${f.id}-${index}`;
    const box = h("input", { type: "checkbox", id, value: option.value, name: spec.path });
    list.append(h("span", { class: "checkbox" }, box, h("label", { for: id }, option.label)));
    return box;
  });
  f.finish(list);
  const read = () => {
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    return chosen.length ? chosen : undefined;
  };
  const write = (values) => {
    const wanted = new Set((values ?? []).map(String));
    for (const box of boxes) box.checked = wanted.has(box.value);
  };
  const result = finished(kind, f, boxes[0] ?? list, read, write);
  result.showError = (message) => f.showError(message, list);
  return result;
}

function listField(spec, context) {
  const itemType = listItemType(spec.node, context.root);
  const f = frame(spec, context);
  const numeric = itemType === "number" || itemType === "integer";
  const input = control("input", f, spec, {
    type: "text",
    inputmode: numeric ? "decimal" : undefined,
    placeholder: numeric ? "e.g. 10, 50, 90" : "comma-separated",
    autocomplete: "off",
  });
  f.wrapper.querySelector("label").append(h("span", { class: "unit" }, " (comma-separated)"));
  f.finish(input);
  const read = (errors) => {
    const parts = input.value.split(",").map((p) => p.trim()).filter(Boolean);
    if (!parts.length) return undefined;
    if (!numeric) return parts;
    const numbers = parts.map(Number);
    if (numbers.some((n) => !Number.isFinite(n))) {
      errors.push({ field: spec.path, description: "a comma-separated list of numbers" });
      return undefined;
    }
    return numbers;
  };
  return finished("list", f, input, read, (v) => { input.value = (v ?? []).join(", "); });
}

function tupleField(spec, context) {
  const f = frame(spec, context, { group: true });
  const row = h("div", { class: "tuple" });
  const inputs = spec.node.prefixItems.map((_, index) => {
    const id = `${f.id}-${index}`;
    const input = h("input", { type: "number", step: "any", id, name: `${spec.path}.${index}`, inputmode: "decimal" });
    const names = spec.node.prefixItems.length === 2 ? ["min", "max"] : [];
    row.append(h("label", { for: id, class: "tuple-part" }, names[index] ?? `#${index + 1}`), input);
    return input;
  });
  f.finish(row);
  const read = (errors) => {
    if (inputs.every((i) => i.value.trim() === "" && !i.validity.badInput)) return undefined;
    if (inputs.some((i) => i.validity.badInput)) {
      errors.push({ field: spec.path, description: "not a number" });
      return undefined;
    }
    return inputs.map((i) => (i.value.trim() === "" ? null : Number(i.value)));
  };
  const write = (v) => inputs.forEach((input, i) => { input.value = v?.[i] ?? ""; });
  return finished("tuple", f, inputs[0], read, write);
}

function jsonField(kind, spec, context) {
  const f = frame(spec, context);
  const area = control("textarea", f, spec, {
    rows: kind === "geometry" ? 4 : 2,
    spellcheck: "false",
    placeholder: kind === "geometry" ? '{"type": "Polygon", "coordinates": [...]}' : "JSON",
  });
  const read = (errors) => {
    const text = area.value.trim();
    if (text === "") return undefined;
    try {
      return JSON.parse(text);
    } catch {
      errors.push({ field: spec.path, description: "not valid JSON" });
      return undefined;
    }
  };
  const write = (v) => { area.value = v == null ? "" : JSON.stringify(v); };
  if (kind !== "geometry") {
    f.finish(area);
    return finished(kind, f, area, read, write);
  }
  // A GeoJSON area: from the map's drawn AOI, from a file, or typed.
  const tools = h("div", { class: "geometry-tools" });
  if (context.getAoi) {
    const fromMap = h("button", { type: "button", class: "use-aoi" }, "Use the map's AOI");
    fromMap.addEventListener("click", async () => {
      const geometry = await context.getAoi();
      if (geometry) {
        write(geometry);
        area.dispatchEvent(new Event("input", { bubbles: true }));
      }
    });
    tools.append(fromMap);
  }
  const fileId = `${f.id}-file`;
  const file = h("input", { type: "file", id: fileId, accept: ".geojson,.json,application/geo+json,application/json" });
  file.addEventListener("change", async () => {
    const chosen = file.files?.[0];
    if (!chosen) return;
    try {
      write(JSON.parse(await chosen.text()));
      area.dispatchEvent(new Event("input", { bubbles: true }));
    } catch {
      f.showError(`${chosen.name} is not GeoJSON (not valid JSON)`, area);
    }
  });
  tools.append(h("label", { for: fileId, class: "file-label" }, "Upload GeoJSON"), file);
  const body = h("div", { class: "geometry-field" }, area, tools);
  f.finish(body);
  return finished(kind, f, area, read, write);
}

function objectField(spec, context, buildObjectBody) {
  const f = frame(spec, context, { group: true });
  const body = buildObjectBody(spec.node, spec.path, context);
  const optional = !spec.required;
  let include = null;
  if (optional) {
    const id = `${f.id}-include`;
    include = h("input", { type: "checkbox", id, class: "include-object" });
    const toggle = h("span", { class: "checkbox" }, include, h("label", { for: id }, `Include ${labelOf(spec.name, spec.node).toLowerCase()}`));
    const sync = () => {
      body.element.hidden = !include.checked;
      for (const c of body.element.querySelectorAll("input, select, textarea, button")) c.disabled = !include.checked;
    };
    include.addEventListener("change", sync);
    f.wrapper.append(toggle);
    sync();
  }
  f.finish(body.element);
  const read = (errors) => (include && !include.checked ? undefined : body.read(errors));
  const write = (v) => {
    if (include) {
      include.checked = v != null;
      include.dispatchEvent(new Event("change"));
    }
    if (v != null) body.write(v);
  };
  return finished("object", f, include ?? body.element, read, write);
}

/** The field for one property: spec = { name, path, node, required, nullable }. */
export function buildField(spec, context, buildObjectBody) {
  const kind = fieldKind(spec.name, spec.node, context.root);
  let field;
  if (kind === "object") field = objectField(spec, context, buildObjectBody);
  else if (kind === "geometry" || kind === "json") field = jsonField(kind, spec, context);
  else if (kind === "tuple") field = tupleField(spec, context);
  else if (kind === "list") field = listField(spec, context);
  else if (kind === "enum-list") {
    const values = resolveRef(context.root, spec.node.items ?? {}).enum ?? [];
    field = checkboxGroup(kind, spec, context, values.map((v) => ({ value: String(v), label: String(v) })));
  } else if (kind === "items" && context.items.length) {
    field = checkboxGroup(kind, spec, context, context.items.map((i) => ({ value: i.id, label: itemLabh(i) })));
  } else if (kind === "items") field = listField(spec, context);
  else field = scalarField(kind, spec, context);
  field.element.dataset.kind = kind;
  return field;
}
