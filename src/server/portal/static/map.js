// Map helpers over the vendored Leaflet (static/vendor/leaflet, see vendor/README.md).
// No base map: nothing may load from another origin, so the map shows the project's own
// footprints and tiles over a plain background.

import * as L from "./vendor/leaflet/leaflet-src.esm.js";

export { L };

const DEFAULT_VIEW = { center: [46.0, 14.5], zoom: 8 };

export function createMap(el, { zoom = true } = {}) {
  const map = L.map(el, { zoomControl: zoom, attributionControl: true, keyboard: true, worldCopyJump: true });
  map.attributionControl.setPrefix("Leaflet");
  map.setView(DEFAULT_VIEW.center, DEFAULT_VIEW.zoom);
  L.control.scale({ imperial: false }).addTo(map);
  // The map's container is keyboard reachable (arrows pan, +/- zoom): say what it is.
  el.setAttribute("role", "region");
  el.gpMap = map; // for the browser tests (set a view); nothing else reads it
  if (!el.getAttribute("aria-label")) el.setAttribute("aria-label", "Map");
  return map;
}

// A GeoJSON geometry of a bbox [west, south, east, north].
export function bboxGeometry([west, south, east, north]) {
  return {
    type: "Polygon",
    coordinates: [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
  };
}

// The map's current view as a GeoJSON polygon (for an `intersects` filter).
export function viewGeometry(map) {
  const b = map.getBounds();
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  return bboxGeometry([
    clamp(b.getWest(), -180, 180),
    clamp(b.getSouth(), -90, 90),
    clamp(b.getEast(), -180, 180),
    clamp(b.getNorth(), -90, 90),
  ]);
}

// One outlined footprint per item (its geometry, else its bbox); `onClick(item)` on a
// click. Answers the layer group; each footprint's layer is `layers.get(item.id)`.
export function addFootprints(map, items, onClick) {
  const group = L.featureGroup().addTo(map);
  group.layers = new Map();
  for (const item of items) {
    const geometry = item.geometry || (item.bbox && item.bbox.length === 4 ? bboxGeometry(item.bbox) : null);
    if (!geometry) continue;
    const layer = L.geoJSON(geometry, {
      // No fill tint: footprints overlap (the tiles show through); the fill still takes the clicks.
      style: { className: "gp-footprint", color: "#c2410c", weight: 2, fillOpacity: 0 },
    });
    layer.bindTooltip(item.name || item.id, { sticky: true });
    if (onClick) layer.on("click", () => onClick(item));
    layer.addTo(group);
    group.layers.set(item.id, layer);
  }
  return group;
}

// An XYZ tile layer from a (signed) template: drawn only inside `bounds`
// ([west, south, east, north], no requests outside them), upscaled past `maxzoom`.
export function addTileLayer(map, template, { bounds, minzoom = 0, maxzoom = 22, opacity = 1, ...opts } = {}) {
  const options = { maxNativeZoom: maxzoom, minNativeZoom: minzoom, maxZoom: 24, opacity, ...opts };
  if (bounds) options.bounds = L.latLngBounds([bounds[1], bounds[0]], [bounds[3], bounds[2]]);
  return L.tileLayer(template, options).addTo(map);
}

// Fits the view to a GeoJSON geometry (or a bbox array).
export function fitGeometry(map, geometry, { maxZoom = 16 } = {}) {
  const shape = Array.isArray(geometry) ? bboxGeometry(geometry) : geometry;
  const bounds = L.geoJSON(shape).getBounds();
  if (bounds.isValid()) map.fitBounds(bounds, { padding: [16, 16], maxZoom });
}

// Lets the user draw a polygon: click each vertex, double-click (or Enter) to close,
// Escape to cancel. Resolves with the GeoJSON Polygon; rejects with an AbortError on cancel.
export function drawAoi(map, { minVertices = 3 } = {}) {
  return new Promise((resolve, reject) => {
    const vertices = [];
    const line = L.polyline([], { className: "gp-aoi-draft", color: "#1d4ed8", dashArray: "4 4" }).addTo(map);
    const container = map.getContainer();
    const hadDoubleClickZoom = map.doubleClickZoom.enabled();
    map.doubleClickZoom.disable();
    container.classList.add("gp-drawing");

    const finish = (geometry, error) => {
      map.off("click", onClick);
      map.off("dblclick", onDoubleClick);
      container.removeEventListener("keydown", onKey);
      container.classList.remove("gp-drawing");
      line.remove();
      if (hadDoubleClickZoom) map.doubleClickZoom.enable();
      if (error) reject(error);
      else resolve(geometry);
    };
    const close = () => {
      if (vertices.length < minVertices) return;
      const ring = vertices.map((p) => [p.lng, p.lat]);
      ring.push(ring[0]);
      finish({ type: "Polygon", coordinates: [ring] });
    };
    const onClick = (event) => {
      vertices.push(event.latlng);
      line.setLatLngs(vertices);
    };
    const onDoubleClick = (event) => {
      // The double click's second click added the last vertex already.
      L.DomEvent.stop(event);
      close();
    };
    const onKey = (event) => {
      if (event.key === "Enter") close();
      if (event.key === "Escape") finish(null, new DOMException("drawing cancelled", "AbortError"));
    };
    map.on("click", onClick);
    map.on("dblclick", onDoubleClick);
    container.addEventListener("keydown", onKey);
  });
}
