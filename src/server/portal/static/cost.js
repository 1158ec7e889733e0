// A job type's cost model applied in the browser, to show a price before the spend when
// the server cannot quote one: credits = ceil(flat + per_km2 * km² + per_asset * assets),
// at least `minimum` (src/raster/cost.py), the km² being the AOI within the source's
// footprint (here: within its bbox) on the sphere. No DOM: node tests it.

const EARTH_RADIUS_M = 6378137; // WGS 84 semi-major axis, as turf's area uses
const RADIANS = Math.PI / 180;

/** Area in m² of a lon/lat ring on the sphere (the spherical-excess sum turf uses). */
function ringArea(ring) {
  let total = 0;
  for (let i = 0; i < ring.length - 1; i += 1) {
    const [lon1, lat1] = ring[i];
    const [lon2, lat2] = ring[i + 1];
    total += (lon2 - lon1) * RADIANS * (2 + Math.sin(lat1 * RADIANS) + Math.sin(lat2 * RADIANS));
  }
  return Math.abs((total * EARTH_RADIUS_M * EARTH_RADIUS_M) / 2);
}

/** The polygons (arrays of rings) of a GeoJSON Polygon, MultiPolygon, Feature or
 * FeatureCollection. */
export function polygonsOf(geojson) {
  if (!geojson || typeof geojson !== "object") return [];
  switch (geojson.type) {
    case "Polygon":
      return [geojson.coordinates];
    case "MultiPolygon":
      return geojson.coordinates;
    case "Feature":
      return polygonsOf(geojson.geometry);
    case "FeatureCollection":
      return (geojson.features ?? []).flatMap(polygonsOf);
    default:
      return [];
  }
}

/** Sutherland-Hodgman: the part of a closed ring inside a bbox [west, south, east, north]. */
export function clipRingToBbox(ring, [west, south, east, north]) {
  const edges = [
    [(p) => p[0] >= west, (a, b) => cut(a, b, 0, west)],
    [(p) => p[0] <= east, (a, b) => cut(a, b, 0, east)],
    [(p) => p[1] >= south, (a, b) => cut(a, b, 1, south)],
    [(p) => p[1] <= north, (a, b) => cut(a, b, 1, north)],
  ];
  let points = ring.slice(0, -1);
  for (const [inside, intersect] of edges) {
    const input = points;
    points = [];
    for (let i = 0; i < input.length; i += 1) {
      const current = input[i];
      const previous = input[(i + input.length - 1) % input.length];
      if (inside(current)) {
        if (!inside(previous)) points.push(intersect(previous, current));
        points.push(current);
      } else if (inside(previous)) {
        points.push(intersect(previous, current));
      }
    }
    if (!points.length) return [];
  }
  return [...points, points[0]];
}

function cut(a, b, axis, value) {
  const t = (value - a[axis]) / (b[axis] - a[axis]);
  return axis === 0 ? [value, a[1] + t * (b[1] - a[1])] : [a[0] + t * (b[0] - a[0]), value];
}

/** km² of a GeoJSON area (holes subtracted), optionally within a bbox. */
export function areaKm2(geojson, bbox) {
  let m2 = 0;
  for (const rings of polygonsOf(geojson)) {
    rings.forEach((ring, index) => {
      const part = bbox ? clipRingToBbox(ring, bbox) : ring;
      const area = part.length >= 4 ? ringArea(part) : 0;
      m2 += index === 0 ? area : -area;
    });
  }
  return Math.max(0, m2) / 1e6;
}

/** Credits by a cost model ({flat, per_km2, per_asset, minimum}; proto JSON may give
 * numbers as strings). */
export function estimateCredits(model, km2, assets) {
  const flat = Number(model?.flat ?? 0);
  const perKm2 = Number(model?.per_km2 ?? 0);
  const perAsset = Number(model?.per_asset ?? 0);
  const minimum = Math.max(1, Number(model?.minimum ?? 1) || 1);
  const raw = flat + perKm2 * km2 + perAsset * assets;
  return Math.max(minimum, Math.ceil(raw - 1e-9));
}

/** The cost model in words: "1 + 0.5 per km² + 1 per asset, at least 1". */
export function describeCostModel(model) {
  const parts = [];
  if (Number(model?.flat)) parts.push(`${Number(model.flat)} per job`);
  if (Number(model?.per_km2)) parts.push(`${Number(model.per_km2)} per km²`);
  if (Number(model?.per_asset)) parts.push(`${Number(model.per_asset)} per asset`);
  const minimum = Math.max(1, Number(model?.minimum ?? 1) || 1);
  return `${parts.join(" + ") || "0"}, at least ${minimum} credit${minimum === 1 ? "" : "s"}`;
}
