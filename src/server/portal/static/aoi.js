// A map with the project's item footprints and one area of interest: drawn with clicks
// (map.js drawAoi: click the corners, double-click or Enter to close), uploaded or typed
// into a form's geometry field. The processing and analytics pages share it.
import { h } from "./dom.js";
import { areaKm2 } from "./cost.js";

function unionBbox(items) {
  const boxes = items.map((i) => i.bbox).filter((b) => Array.isArray(b) && b.length === 4);
  if (!boxes.length) return null;
  return [
    Math.min(...boxes.map((b) => b[0])),
    Math.min(...boxes.map((b) => b[1])),
    Math.max(...boxes.map((b) => b[2])),
    Math.max(...boxes.map((b) => b[3])),
  ];
}

/**
 * aoiMap(container, ctx, { items, onItemClick, id }) -> { map, current(), set(geometry),
 * getAoi(), draw(), onChange(fn), highlight(itemId), remove() }. The container must be in
 * the document (Leaflet measures it).
 */
export function aoiMap(container, ctx, { items = [], onItemClick, id = "aoi-map" } = {}) {
  const { L } = ctx.map;
  const mapEl = h("div", { class: "map aoi-map", id, "aria-label": "Map of the project's items and the area of interest" });
  const drawButton = h("button", { type: "button", class: "draw-aoi", id: `${id}-draw` }, "Draw AOI");
  // Without a mouse: pan and zoom the map with the keyboard, then take its view.
  const viewButton = h("button", { type: "button", class: "secondary", id: `${id}-view` }, "AOI = map view");
  const clearButton = h("button", { type: "button", class: "secondary", id: `${id}-clear`, disabled: true }, "Clear AOI");
  const summary = h("p", { class: "aoi-summary muted", id: `${id}-summary`, role: "status" },
    "No area of interest yet: draw one (Draw AOI, then click its corners and double-click the last) or upload GeoJSON.");
  container.append(mapEl, h("div", { class: "map-tools" }, drawButton, viewButton, clearButton), summary);

  const map = ctx.map.createMap(mapEl);
  // A click on a footprint picks its item, unless it is a corner of the AOI being drawn.
  const footprints = ctx.map.addFootprints(map, items, (item) => drawing || onItemClick?.(item));
  const bbox = unionBbox(items);
  if (bbox) ctx.map.fitGeometry(map, bbox);

  let geometry = null;
  let layer = null;
  let drawing = null;
  const listeners = [];

  function set(value, { notify = true } = {}) {
    layer?.remove();
    layer = null;
    geometry = value ?? null;
    clearButton.disabled = !geometry;
    if (geometry) {
      try {
        layer = L.geoJSON(geometry, { style: { className: "gp-aoi", color: "#1d4ed8", weight: 2, fillOpacity: 0.15 } }).addTo(map);
        summary.textContent = `Area of interest: ${areaKm2(geometry).toFixed(3)} km²`;
      } catch {
        summary.textContent = "The area of interest is not GeoJSON the map can draw.";
      }
    } else {
      summary.textContent = "No area of interest.";
    }
    if (notify) for (const fn of listeners) fn(geometry);
  }

  async function draw() {
    if (drawing) return drawing;
    drawButton.disabled = true;
    summary.textContent = "Click the map at each corner; double-click the last one (or press Enter) to close; Escape cancels.";
    mapEl.focus();
    drawing = ctx.map
      .drawAoi(map)
      .then((drawn) => set(drawn))
      .catch((err) => {
        if (err?.name !== "AbortError") throw err;
        set(geometry, { notify: false });
      })
      .finally(() => {
        drawing = null;
        drawButton.disabled = false;
      });
    return drawing;
  }

  drawButton.addEventListener("click", () => draw());
  viewButton.addEventListener("click", () => set(ctx.map.viewGeometry(map)));
  clearButton.addEventListener("click", () => set(null));

  return {
    map,
    element: mapEl,
    current: () => geometry,
    set,
    draw,
    /** The AOI for a form's "Use the map's AOI": the drawn one, else draw one now. */
    async getAoi() {
      if (!geometry) await draw();
      return geometry;
    },
    onChange: (fn) => listeners.push(fn),
    highlight(itemId) {
      for (const [key, itemLayer] of footprints.layers ?? []) {
        itemLayer.eachLayer((l) => l.getElement?.()?.classList.toggle("highlight", key === itemId));
      }
    },
    remove: () => map.remove(),
  };
}
