// Unit tests of the browser-side cost estimate (node --test).
import assert from "node:assert/strict";
import test from "node:test";

import { areaKm2, clipRingToBbox, describeCostModel, estimateCredits } from "../../../src/server/portal/static/cost.js";

const SQUARE = { type: "Polygon", coordinates: [[[14.0, 45.0], [15.0, 45.0], [15.0, 46.0], [14.0, 46.0], [14.0, 45.0]]] };

test("the area of a lon/lat polygon is the server's geodesic area within 0.1 %", () => {
  // 8686.38 km² is what the server measures (raster.geo parse_aoi(...).area_km2).
  assert.ok(Math.abs(areaKm2(SQUARE) - 8686.38) / 8686.38 < 0.001, String(areaKm2(SQUARE)));
  assert.equal(areaKm2({ type: "Feature", geometry: SQUARE }), areaKm2(SQUARE));
  assert.equal(areaKm2({ type: "Point", coordinates: [0, 0] }), 0);
});

test("an AOI is measured within the source's bbox", () => {
  const half = areaKm2(SQUARE, [14.5, 44, 16, 47]);
  assert.ok(Math.abs(half - areaKm2(SQUARE) / 2) / half < 0.01, String(half));
  assert.equal(areaKm2(SQUARE, [20, 20, 21, 21]), 0);
  assert.deepEqual(clipRingToBbox(SQUARE.coordinates[0], [10, 40, 20, 50]).length, 5);
});

test("credits follow the cost model: ceil(flat + per_km2 * km² + per_asset * assets), at least minimum", () => {
  const clip = { flat: 1, per_km2: 0.5, per_asset: 1, minimum: "1" };
  assert.equal(estimateCredits(clip, 0.55, 1), 3);
  assert.equal(estimateCredits(clip, 2, 1), 3);
  assert.equal(estimateCredits(clip, 2.1, 1), 4);
  assert.equal(estimateCredits({ flat: 0, minimum: "5" }, 0, 0), 5);
  assert.equal(describeCostModel(clip), "1 per job + 0.5 per km² + 1 per asset, at least 1 credit");
});
