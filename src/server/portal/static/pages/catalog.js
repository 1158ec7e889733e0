// The catalog: the project's items (items.list) as footprints on the map with their tile
// previews (signed tile templates), a list beside the map, and filters by collection,
// date range and the map's view.

import { h, formatDate } from "../dom.js";

const MAX_ITEMS = 1000;
const MAX_PREVIEWS = 12; // tile layers drawn at once: each asks the server for its own tiles
const DAY_MS = 86_400_000;

export async function render(root, _params, ctx) {
  const { api, map: maps, projectId, signal } = ctx;
  const knownCollections = new Set();

  // ---- filters ----
  const collection = h("select", { id: "filter-collection", name: "collection" }, h("option", { value: "" }, "All collections"));
  const from = h("input", { id: "filter-from", name: "from", type: "date" });
  const to = h("input", { id: "filter-to", name: "to", type: "date" });
  const inView = h("input", { id: "filter-in-view", name: "in_view", type: "checkbox" });
  const previews = h("input", { id: "filter-previews", name: "previews", type: "checkbox", checked: true });
  const form = h(
    "form",
    { class: "catalog-filters", id: "catalog-filters", "aria-label": "Filter items" },
    h(
      "div",
      { class: "field-row" },
      h("div", { class: "field" }, h("label", { for: "filter-collection" }, "Collection"), collection),
      h("div", { class: "field" }, h("label", { for: "filter-from" }, "From (date)"), from),
      h("div", { class: "field" }, h("label", { for: "filter-to" }, "To (date, inclusive)"), to),
      h("div", { class: "field-check" }, inView, h("label", { for: "filter-in-view" }, "Only items in the map view")),
      h("div", { class: "field-check" }, previews, h("label", { for: "filter-previews" }, "Show tile previews")),
      h("button", { type: "submit", id: "filter-apply" }, "Apply filters"),
      h("button", { type: "reset", class: "secondary", id: "filter-reset" }, "Reset"),
    ),
  );

  const count = h("p", { id: "catalog-count", role: "status", "aria-live": "polite" }, "Loading items…");
  const mapEl = h("div", { class: "map", id: "catalog-map", "aria-label": "Map of the project's item footprints", tabindex: "0" });
  const list = h("ul", { class: "item-list", id: "catalog-list", "aria-label": "Items" });
  root.append(
    h("h1", {}, "Catalog ", h("span", { class: "muted" }, `· project ${projectId}`)),
    form,
    count,
    h("div", { class: "catalog-body" }, mapEl, h("div", {}, h("h2", { class: "visually-hidden" }, "Items"), list)),
  );

  const map = maps.createMap(mapEl);
  let footprints = null;
  let tileLayers = [];
  let firstLoad = true;
  let loading = null; // the AbortController of the load in flight

  const clearLayers = () => {
    if (footprints) footprints.remove();
    for (const layer of tileLayers) layer.remove();
    footprints = null;
    tileLayers = [];
  };

  const params = () => {
    const query = { project_id: projectId, page_size: 200 };
    if (collection.value) query.collection_id = collection.value;
    if (from.value) query.datetime_start = `${from.value}T00:00:00Z`;
    if (to.value) query.datetime_end = new Date(Date.parse(`${to.value}T00:00:00Z`) + DAY_MS).toISOString();
    if (inView.checked) {
      const b = map.getBounds();
      query.bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v, i) =>
        Math.max(i % 2 ? -90 : -180, Math.min(i % 2 ? 90 : 180, v)),
      );
    }
    return query;
  };

  const highlight = (id, on) => {
    const layer = footprints && footprints.layers.get(id);
    if (layer) layer.eachLayer((path) => path.getElement() && path.getElement().classList.toggle("highlight", on));
    const entry = list.querySelector(`li[data-item-id="${CSS.escape(id)}"]`);
    if (entry) entry.classList.toggle("highlight", on);
  };

  const showPreviews = async (items, controller) => {
    for (const item of items.slice(0, MAX_PREVIEWS).reverse()) {
      if (controller.signal.aborted || !previews.checked) return;
      try {
        const tilejson = await api.signedTileJson("items", item.id);
        if (controller.signal.aborted) return;
        tileLayers.push(
          maps.addTileLayer(map, tilejson.tiles[0], {
            bounds: tilejson.bounds,
            minZoom: Math.max(0, tilejson.minzoom - 3),
            maxzoom: tilejson.maxzoom,
            className: "gp-preview",
          }),
        );
      } catch (err) {
        // An item the tiler cannot draw keeps its outline; say so once in the list.
        const entry = list.querySelector(`li[data-item-id="${CSS.escape(item.id)}"] .meta`);
        if (entry) entry.append(` · no preview (${err.reason || err.message})`);
      }
    }
    if (footprints) footprints.bringToFront();
  };

  const load = async () => {
    if (loading) loading.abort();
    const controller = new AbortController();
    loading = controller;
    count.textContent = "Loading items…";
    mapEl.dataset.loading = "true";
    try {
      const items = await api.listAll("items.list", params(), "items", { maxItems: MAX_ITEMS, signal: controller.signal });
      if (controller.signal.aborted || signal.aborted) return;
      clearLayers();
      for (const item of items) {
        if (item.collection_id && !knownCollections.has(item.collection_id)) {
          knownCollections.add(item.collection_id);
          collection.append(h("option", { value: item.collection_id }, item.collection_id));
        }
      }
      footprints = maps.addFootprints(map, items, (item) => ctx.navigate(`#/items/${item.id}`));
      mapEl.dataset.footprints = String(footprints.layers.size);
      list.replaceChildren(...items.map((item) => listEntry(item, highlight)));
      count.textContent =
        items.length >= MAX_ITEMS ? `The first ${items.length} items` : `${items.length} item${items.length === 1 ? "" : "s"}`;
      if (firstLoad && items.length) maps.fitGeometry(map, footprints.getBounds().toBBoxString().split(",").map(Number));
      firstLoad = false;
      if (previews.checked) await showPreviews(items, controller);
    } catch (err) {
      if (err.name !== "AbortError") {
        count.textContent = "The items could not be loaded.";
        ctx.handleError(err);
      }
    } finally {
      if (loading === controller) {
        loading = null;
        delete mapEl.dataset.loading;
      }
    }
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  form.addEventListener("reset", () => setTimeout(load));
  previews.addEventListener("change", () => load());
  let moveTimer = 0;
  map.on("moveend", () => {
    if (!inView.checked) return;
    clearTimeout(moveTimer);
    moveTimer = setTimeout(load, 300);
  });

  await load();
  return () => {
    if (loading) loading.abort();
    clearTimeout(moveTimer);
    map.remove();
  };
}

function listEntry(item, highlight) {
  const link = h(
    "a",
    { href: `#/items/${item.id}` },
    h("span", { class: "name" }, item.name || item.id),
    h("span", { class: "meta" }, `${formatDate(item.datetime)} · ${item.collection_id || "no collection"}`),
  );
  const entry = h("li", { dataset: { itemId: item.id } }, link);
  for (const [on, events] of [
    [true, ["mouseenter", "focusin"]],
    [false, ["mouseleave", "focusout"]],
  ]) {
    for (const name of events) entry.addEventListener(name, () => highlight(item.id, on));
  }
  return entry;
}
