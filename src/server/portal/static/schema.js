// Reading a JSON Schema (draft 2020-12, as pydantic and job types publish them) for a
// generated form: which control a property gets, in what order, under what label.
// No DOM here, so node can test it (tests/browser/js/schema.test.mjs).

const GEOMETRY_TYPES = ["Polygon", "MultiPolygon", "Feature", "FeatureCollection"];
// A property holding item ids, by the names the registry's schemas use (item_id,
// source_item_id, before_item_id, item_ids): the schemas carry no item annotation yet, so
// the name is the convention; a schema may also say `"format": "item-id"` explicitly.
const ITEM_ID_NAME = /(^|_)item_id$/;
const ITEM_IDS_NAME = /(^|_)item_ids$/;

/** The node a `$ref` (`#/$defs/Name`, `#/definitions/Name`) points at within `root`. */
export function resolveRef(root, node) {
  let current = node;
  for (let hops = 0; current && typeof current.$ref === "string" && hops < 16; hops += 1) {
    const path = current.$ref.replace(/^#\/?/, "").split("/").filter(Boolean);
    let target = root;
    for (const part of path) target = target?.[decodeURIComponent(part.replace(/~1/g, "/").replace(/~0/g, "~"))];
    if (!target) return {};
    const { $ref: _ref, ...rest } = current;
    current = { ...target, ...rest };
  }
  return current ?? {};
}

/** `anyOf`/`oneOf` with a `{"type": "null"}` branch is an optional value of the other
 * branch (pydantic's `X | None`). Answers the branch and whether null was allowed; a
 * union of several non-null branches stays as it is (a JSON field). */
export function unwrapNullable(root, node) {
  const resolved = resolveRef(root, node);
  const union = resolved.anyOf ?? resolved.oneOf;
  if (!Array.isArray(union)) return { node: resolved, nullable: resolved.type === "null" };
  const branches = union.map((branch) => resolveRef(root, branch));
  const nonNull = branches.filter((branch) => branch.type !== "null");
  const nullable = nonNull.length < branches.length;
  if (nonNull.length !== 1) return { node: resolved, nullable };
  const { anyOf: _a, oneOf: _o, ...outer } = resolved; // title, description, default live outside
  return { node: { ...nonNull[0], ...outer }, nullable };
}

function typeOf(node) {
  if (Array.isArray(node.type)) return node.type.find((t) => t !== "null");
  if (node.type) return node.type;
  if (node.properties) return "object";
  if (node.items || node.prefixItems) return "array";
  if (Array.isArray(node.enum)) return "enum";
  return undefined;
}

/** Whether a property is a GeoJSON area (filled from the map's AOI or a file). */
export function isGeometry(name, node) {
  if (typeOf(node) !== "object" && node.type !== undefined) return false;
  const typeEnum = node.properties?.type?.enum;
  if (Array.isArray(typeEnum) && typeEnum.some((t) => GEOMETRY_TYPES.includes(t))) return true;
  return /(^|_)(geometry|aoi)$/.test(name) || /geojson/i.test(node.description ?? "");
}

/**
 * The control a property gets:
 * geometry, item, items, enum, enum-list, boolean, integer, number, datetime, string,
 * list (comma-separated numbers or strings), tuple (fixed positions), object (nested
 * fieldset), json (anything else, typed as JSON).
 */
export function fieldKind(name, node, root) {
  const type = typeOf(node);
  if (node.format === "item-id" || (type === "string" && ITEM_ID_NAME.test(name))) return "item";
  if (isGeometry(name, node)) return "geometry";
  if (Array.isArray(node.enum) && (type === "string" || type === "enum" || type === "integer")) return "enum";
  if (type === "boolean") return "boolean";
  if (type === "integer") return "integer";
  if (type === "number") return "number";
  if (type === "string") return node.format === "date-time" ? "datetime" : "string";
  if (type === "array") {
    if (Array.isArray(node.prefixItems)) {
      const positions = node.prefixItems.map((p) => typeOf(resolveRef(root, p)));
      if (positions.every((t) => t === "number" || t === "integer")) return "tuple";
      return "json";
    }
    const items = resolveRef(root, node.items ?? {});
    if (items.format === "item-id" || ITEM_IDS_NAME.test(name)) return "items";
    if (Array.isArray(items.enum)) return "enum-list";
    const itemType = typeOf(items);
    if (itemType === "number" || itemType === "integer" || itemType === "string") return "list";
    return "json";
  }
  if (type === "object" && node.properties && !node.additionalProperties) return "object";
  return "json";
}

/** The element type of a `list` array: number, integer or string. */
export function listItemType(node, root) {
  return typeOf(resolveRef(root, node.items ?? {})) ?? "string";
}

/** Properties in a stable order: the required ones as `required` lists them, then the
 * rest as the schema has them (the wire does not keep a Struct's key order, so the order
 * of `properties` is not the author's; `propertyOrdering` is, where a schema gives it). */
export function orderedProperties(schema) {
  const properties = schema.properties ?? {};
  const required = (schema.required ?? []).filter((name) => name in properties);
  const declared = Array.isArray(schema.propertyOrdering) ? schema.propertyOrdering : Object.keys(properties);
  const rest = declared.filter((name) => name in properties && !required.includes(name));
  const unlisted = Object.keys(properties).filter((name) => !required.includes(name) && !rest.includes(name));
  return [...required, ...rest, ...unlisted].map((name) => ({
    name,
    node: properties[name],
    required: required.includes(name),
  }));
}

/** A property's label: the schema's title, else its name in words ("source_item_id" ->
 * "Source item id"). */
export function labelOf(name, node) {
  if (typeof node.title === "string" && node.title.trim() && !/^[A-Z][a-zA-Z]*Params$/.test(node.title)) {
    return node.title.trim();
  }
  const words = name.replace(/_/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** A violation's field path in the form's own terms: without the operation's prefix
 * (`params`, `input_params`), indexes as segments: `params.percentiles[1]` ->
 * `percentiles.1`. */
export function formPath(field, prefix) {
  let path = String(field ?? "").trim();
  if (prefix) {
    if (path === prefix) return "";
    if (path.startsWith(`${prefix}.`)) path = path.slice(prefix.length + 1);
    else if (path.startsWith(`${prefix}[`)) path = path.slice(prefix.length);
  }
  return path.replace(/\[(\d+)\]/g, ".$1").replace(/^\./, "");
}

/** The longest registered path that `path` falls under (`geometry.coordinates.0` ->
 * `geometry`), or undefined. */
export function closestField(path, knownPaths) {
  const parts = path.split(".").filter(Boolean);
  for (let length = parts.length; length > 0; length -= 1) {
    const candidate = parts.slice(0, length).join(".");
    if (knownPaths.has(candidate)) return candidate;
  }
  return undefined;
}
