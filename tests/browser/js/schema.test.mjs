// Unit tests of the portal's schema reading and chart scales (node --test; no DOM needed).
import assert from "node:assert/strict";
import test from "node:test";

import { axisNumber, niceTicks } from "../../../src/server/portal/static/charts.js";
import {
  closestField,
  fieldKind,
  formPath,
  labelOf,
  orderedProperties,
  unwrapNullable,
} from "../../../src/server/portal/static/schema.js";

// Shaped like the published zonal_stats params schema (pydantic, draft 2020-12).
const ZONAL = {
  $defs: {
    HistogramParams: {
      title: "HistogramParams",
      type: "object",
      properties: {
        bins: { type: "integer", minimum: 1, maximum: 1000, default: 10 },
        range: { anyOf: [{ type: "array", prefixItems: [{ type: "number" }, { type: "number" }] }, { type: "null" }] },
      },
    },
  },
  type: "object",
  required: ["item_id", "geometry"],
  properties: {
    percentiles: { type: "array", items: { type: "number", minimum: 0, maximum: 100 } },
    stats: { type: "array", items: { type: "string", enum: ["count", "mean"] } },
    geometry: { type: "object", properties: { type: { enum: ["Polygon", "MultiPolygon"] } }, required: ["type"] },
    histogram: { default: null, anyOf: [{ $ref: "#/$defs/HistogramParams" }, { type: "null" }] },
    index_name: { default: null, anyOf: [{ type: "string", enum: ["NDVI", "NDWI"] }, { type: "null" }], title: "Index Name" },
    band_mapping: { anyOf: [{ type: "object", additionalProperties: { anyOf: [{ type: "integer" }, { type: "string" }] } }, { type: "null" }] },
    all_touched: { type: "boolean", default: false },
    item_id: { type: "string", minLength: 1 },
    item_ids: { anyOf: [{ type: "array", items: { type: "string" } }, { type: "null" }] },
    start: { anyOf: [{ type: "string", format: "date-time" }, { type: "null" }] },
    aoi_geometry: { anyOf: [{ type: "object", additionalProperties: true }, { type: "null" }] },
    band: { anyOf: [{ type: "integer", minimum: 1 }, { type: "null" }] },
  },
};

function kindOf(name) {
  return fieldKind(name, unwrapNullable(ZONAL, ZONAL.properties[name]).node, ZONAL);
}

test("each property gets the control its schema calls for", () => {
  assert.equal(kindOf("percentiles"), "list");
  assert.equal(kindOf("stats"), "enum-list");
  assert.equal(kindOf("geometry"), "geometry");
  assert.equal(kindOf("aoi_geometry"), "geometry");
  assert.equal(kindOf("histogram"), "object");
  assert.equal(kindOf("index_name"), "enum");
  assert.equal(kindOf("band_mapping"), "json");
  assert.equal(kindOf("all_touched"), "boolean");
  assert.equal(kindOf("item_id"), "item");
  assert.equal(kindOf("item_ids"), "items");
  assert.equal(kindOf("start"), "datetime");
  assert.equal(kindOf("band"), "integer");
  const range = unwrapNullable(ZONAL, ZONAL.$defs.HistogramParams.properties.range).node;
  assert.equal(fieldKind("range", range, ZONAL), "tuple");
});

test("an optional value unwraps to its non-null branch, keeping the outer title and default", () => {
  const { node, nullable } = unwrapNullable(ZONAL, ZONAL.properties.index_name);
  assert.equal(nullable, true);
  assert.deepEqual(node.enum, ["NDVI", "NDWI"]);
  assert.equal(node.title, "Index Name");
  assert.equal(unwrapNullable(ZONAL, ZONAL.properties.histogram).node.properties.bins.maximum, 1000);
  assert.equal(unwrapNullable(ZONAL, ZONAL.properties.item_id).nullable, false);
});

test("required properties come first, in the order required lists them", () => {
  const names = orderedProperties(ZONAL).map((p) => p.name);
  assert.deepEqual(names.slice(0, 2), ["item_id", "geometry"]);
  assert.equal(names.length, Object.keys(ZONAL.properties).length);
  assert.deepEqual(orderedProperties({ properties: { a: {}, b: {} }, propertyOrdering: ["b", "a"] }).map((p) => p.name), ["b", "a"]);
});

test("labels come from titles, else from the name; a model's class name is not a label", () => {
  assert.equal(labelOf("index_name", { title: "Index Name" }), "Index Name");
  assert.equal(labelOf("source_item_id", {}), "Source item id");
  assert.equal(labelOf("histogram", { title: "HistogramParams" }), "Histogram");
});

test("a violation's dotted path finds the closest field of the form", () => {
  const known = new Set(["geometry", "percentiles", "histogram", "histogram.bins"]);
  assert.equal(closestField(formPath("params.geometry.coordinates[0]", "params"), known), "geometry");
  assert.equal(closestField(formPath("params.percentiles[1]", "params"), known), "percentiles");
  assert.equal(closestField(formPath("params.histogram.bins", "params"), known), "histogram.bins");
  assert.equal(closestField(formPath("input_params.m0", "input_params"), new Set(["m0"])), "m0");
  assert.equal(closestField(formPath("aoi_geometry", ""), new Set(["aoi_geometry"])), "aoi_geometry");
  assert.equal(closestField(formPath("params", "params"), known), undefined);
  assert.equal(closestField(formPath("project_id", "params"), known), undefined);
});

test("axis ticks are round numbers inside the range; numbers print short", () => {
  assert.deepEqual(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0.37, 0.82, 4), [0.4, 0.6, 0.8]);
  assert.deepEqual(niceTicks(0, 1258, 4), [0, 500, 1000]);
  assert.equal(axisNumber(0.712658347314938), "0.7127");
  assert.equal(axisNumber(2232), "2,232");
  assert.equal(axisNumber(null), "–");
  assert.equal(axisNumber(0.00001234), "1.234e-5");
});
