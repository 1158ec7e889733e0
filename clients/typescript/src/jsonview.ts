// The JSON view of messages: what the server's HTTP/JSON projection and its
// MCP server answer for the same call (the Python SDK's `to_json` too).
//
// - proto3 JSON with the .proto field names (`project_id`, not `projectId`);
// - job statuses as the product docs write them: `pending`, `dispatched`,
//   `running`, `succeeded`, `failed`, `cancelled`;
// - an analytics result in the key order of its method's output schema
//   (a `Struct` does not keep key order); keys the schema does not list come
//   after, sorted. JavaScript numbers have no int/float distinction, so
//   `JSON.stringify` already writes an integer count as `1755`.

import {
  toJson,
  type DescField,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type MessageShape,
} from "@bufbuild/protobuf";

import { registry } from "./gen/index.js";
import { JobStatus } from "./gen/geopera/v1/resources_pb.js";

const JOB_STATUS = "geopera.v1.JobStatus";
const EXECUTE_RESULT = "geopera.v1.AnalyticsExecuteResult";

/** `JobStatus.RUNNING` -> `"running"` (the word the HTTP projection answers). */
export function jobStatusWord(status: JobStatus): string {
  const name = JobStatus[status];
  return name === undefined || status === JobStatus.UNSPECIFIED ? String(status) : name.toLowerCase();
}

function toWord(value: JsonValue): JsonValue {
  if (typeof value !== "string" || !value.startsWith("JOB_STATUS_") || value === "JOB_STATUS_UNSPECIFIED") {
    return value;
  }
  return value.slice("JOB_STATUS_".length).toLowerCase();
}

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function reaches(desc: DescMessage, seen: Set<string> = new Set()): boolean {
  if (seen.has(desc.typeName)) return false;
  seen.add(desc.typeName);
  return desc.fields.some((field) => {
    const enumType = field.fieldKind === "enum" || field.fieldKind === "list" || field.fieldKind === "map" ? field.enum : undefined;
    if (enumType?.typeName === JOB_STATUS) return true;
    const message = messageOf(field);
    return message !== undefined && !message.typeName.startsWith("google.") && reaches(message, seen);
  });
}

function messageOf(field: DescField): DescMessage | undefined {
  if (field.fieldKind === "message") return field.message;
  if (field.fieldKind === "list" && field.listKind === "message") return field.message;
  if (field.fieldKind === "map" && field.mapKind === "message") return field.message;
  return undefined;
}

function walk(node: JsonValue | undefined, desc: DescMessage): void {
  if (!isObject(node)) return;
  for (const field of desc.fields) {
    const value = node[field.name];
    if (value === undefined) continue;
    const enumType = field.fieldKind === "enum" || field.fieldKind === "list" || field.fieldKind === "map" ? field.enum : undefined;
    if (enumType?.typeName === JOB_STATUS) {
      if (field.fieldKind === "list" && Array.isArray(value)) node[field.name] = value.map(toWord);
      else if (field.fieldKind === "map" && isObject(value)) for (const key of Object.keys(value)) value[key] = toWord(value[key]);
      else node[field.name] = toWord(value);
      continue;
    }
    const message = messageOf(field);
    if (message === undefined || message.typeName.startsWith("google.") || !reaches(message)) continue;
    if (field.fieldKind === "list" && Array.isArray(value)) value.forEach((entry) => walk(entry, message));
    else if (field.fieldKind === "map" && isObject(value)) Object.values(value).forEach((entry) => walk(entry, message));
    else walk(value, message);
  }
}

export interface JsonViewOptions {
  /** The method's output JSON Schema (`client.analytics.outputSchema(name)`), for an `AnalyticsExecuteResult`. */
  outputSchema?: JsonObject;
}

/**
 * A message as the JSON the HTTP projection and MCP answer for it:
 *
 *     const job = await client.jobs.get(id);
 *     console.log(toJsonView(JobSchema, job).status); // "running"
 */
export function toJsonView<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc>,
  options: JsonViewOptions = {},
): JsonObject {
  const json = toJson(schema, message, { useProtoFieldName: true, registry }) as JsonObject;
  if (reaches(schema)) walk(json, schema);
  if (schema.typeName === EXECUTE_RESULT && options.outputSchema && json["result"] !== undefined) {
    json["result"] = shape(json["result"], options.outputSchema);
  }
  return json;
}

function resolve(schema: JsonValue | undefined, root: JsonObject): JsonObject {
  let current = schema;
  for (let depth = 0; isObject(current) && typeof current["$ref"] === "string" && depth < 32; depth++) {
    let target: JsonValue | undefined = root;
    for (const part of (current["$ref"] as string).replace(/^#\//, "").split("/")) {
      target = isObject(target) ? target[part] : undefined;
    }
    current = target;
  }
  return isObject(current) ? current : {};
}

function types(schema: JsonObject): Set<string> {
  const kind = schema["type"];
  if (typeof kind === "string") return new Set([kind]);
  if (Array.isArray(kind)) return new Set(kind.filter((k): k is string => typeof k === "string"));
  if ("properties" in schema || "additionalProperties" in schema) return new Set(["object"]);
  if ("items" in schema || "prefixItems" in schema) return new Set(["array"]);
  return new Set();
}

function jsonTypes(value: JsonValue): string[] {
  if (value === null) return ["null"];
  if (typeof value === "boolean") return ["boolean"];
  if (typeof value === "number") return Number.isInteger(value) ? ["number", "integer"] : ["number"];
  if (typeof value === "string") return ["string"];
  return Array.isArray(value) ? ["array"] : ["object"];
}

function branch(value: JsonValue, schema: JsonObject, root: JsonObject): JsonObject {
  const branches = schema["anyOf"] ?? schema["oneOf"];
  if (!Array.isArray(branches)) return schema;
  const fits = jsonTypes(value);
  for (const option of branches) {
    const resolved = resolve(option, root);
    const kinds = types(resolved);
    if (fits.some((kind) => kinds.has(kind))) return resolved;
  }
  return {};
}

/**
 * `value` with every object's keys in the order of its JSON Schema
 * (`propertyOrdering`, else `properties`), then the keys the schema does not
 * list, sorted. Nothing is added or dropped.
 */
export function shape(value: JsonValue, schema: JsonObject, root: JsonObject = schema): JsonValue {
  const current = branch(value, resolve(schema, root), root);
  if (Array.isArray(value)) {
    const items = isObject(current["items"]) ? current["items"] : {};
    return value.map((entry) => shape(entry, items, root));
  }
  if (!isObject(value)) return value;
  const properties = isObject(current["properties"]) ? current["properties"] : {};
  const extra = isObject(current["additionalProperties"]) ? current["additionalProperties"] : {};
  const ordering = Array.isArray(current["propertyOrdering"])
    ? current["propertyOrdering"].filter((k): k is string => typeof k === "string")
    : [];
  const names = [...ordering, ...Object.keys(properties).filter((k) => !ordering.includes(k))];
  const shaped: JsonObject = {};
  const done = new Set<string>();
  for (const key of names) {
    if (!Object.hasOwn(value, key) || done.has(key)) continue;
    const sub = Object.hasOwn(properties, key) && isObject(properties[key]) ? (properties[key] as JsonObject) : extra;
    shaped[key] = shape(value[key], sub, root);
    done.add(key);
  }
  for (const key of Object.keys(value).filter((k) => !done.has(k)).sort()) shaped[key] = shape(value[key], extra, root);
  return shaped;
}
