// Areas and prices in words: the km² of a drawn AOI (on the sphere, as the map shows it
// while drawing) and a job type's cost model. The price itself is the server's quote
// (validate_only). No DOM: node tests it.

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

/** km² of a GeoJSON area (holes subtracted). */
export function areaKm2(geojson) {
  let m2 = 0;
  for (const rings of polygonsOf(geojson)) {
    rings.forEach((ring, index) => {
      const area = ring.length >= 4 ? ringArea(ring) : 0;
      m2 += index === 0 ? area : -area;
    });
  }
  return Math.max(0, m2) / 1e6;
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
