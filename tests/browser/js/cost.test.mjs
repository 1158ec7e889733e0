// Unit tests of the AOI area and the cost model in words (node --test).
import assert from "node:assert/strict";
import test from "node:test";

import { areaKm2, describeCostModel } from "../../../src/server/portal/static/cost.js";

const SQUARE = { type: "Polygon", coordinates: [[[14.0, 45.0], [15.0, 45.0], [15.0, 46.0], [14.0, 46.0], [14.0, 45.0]]] };

test("the area of a lon/lat polygon is the server's geodesic area within 0.1 %", () => {
  // 8686.38 km² is what the server measures (raster.geo parse_aoi(...).area_km2).
  assert.ok(Math.abs(areaKm2(SQUARE) - 8686.38) / 8686.38 < 0.001, String(areaKm2(SQUARE)));
  assert.equal(areaKm2({ type: "Feature", geometry: SQUARE }), areaKm2(SQUARE));
  assert.equal(areaKm2({ type: "Point", coordinates: [0, 0] }), 0);
});

test("a cost model reads as its coefficients", () => {
  assert.equal(describeCostModel({ flat: 1, per_km2: 0.5, per_asset: 1, minimum: "1" }), "1 per job + 0.5 per km² + 1 per asset, at least 1 credit");
  assert.equal(describeCostModel({ flat: 2, per_km2: 1, minimum: "5" }), "2 per job + 1 per km², at least 5 credits");
});
