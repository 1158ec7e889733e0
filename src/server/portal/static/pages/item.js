// An item (items.get): its facts, footprint and tiles on a map, a rendered preview, each
// asset (media type, size, bands with their embedded statistics, download and
// copy-signed-URL through assets.sign) and its lineage (items.lineage) as a small graph.

import { h, formatBytes, formatDate, formatNumber } from "../dom.js";
import { renderLineage } from "../lineage.js";

const STATS = [
  ["minimum", "Min"],
  ["maximum", "Max"],
  ["mean", "Mean"],
  ["stddev", "Std dev"],
  ["valid_percent", "Valid %"],
];

export async function render(root, params, ctx) {
  const { api, map: maps, signal } = ctx;
  const itemId = params.id;
  const { item } = await api.call("items.get", { item_id: itemId }, { signal });
  const cleanups = [];

  root.dataset.itemId = item.id;
  root.append(
    h("p", {}, h("a", { href: "#/catalog" }, "← Catalog")),
    h("h1", { id: "item-title" }, item.name || item.id),
    facts(item),
  );

  // ---- map and preview ----
  const mapEl = h("div", { class: "map small", id: "item-map", "aria-label": `Map of ${item.name}`, tabindex: "0" });
  const preview = h("img", { class: "preview", id: "item-preview", alt: `Rendered preview of ${item.name}` });
  const previewStatus = h("p", { class: "muted", id: "item-preview-status", role: "status" }, "Rendering the preview…");
  root.append(
    h(
      "div",
      { class: "item-layout" },
      h("section", { "aria-labelledby": "map-title" }, h("h2", { id: "map-title" }, "Footprint and tiles"), mapEl),
      h(
        "section",
        { "aria-labelledby": "preview-title" },
        h("h2", { id: "preview-title" }, "Preview"),
        previewStatus,
        preview,
      ),
    ),
  );
  const map = maps.createMap(mapEl);
  cleanups.push(() => map.remove());
  maps.addFootprints(map, [item]);
  if (item.geometry) maps.fitGeometry(map, item.geometry);
  else if (item.bbox) maps.fitGeometry(map, item.bbox);

  // ---- assets ----
  const assets = Object.values(item.assets || {});
  root.append(
    h("h2", { id: "assets-title" }, `Assets (${assets.length})`),
    ...assets.map((asset) => assetSection(item, asset, api, ctx)),
  );

  // ---- lineage ----
  const lineageBox = h("section", { class: "lineage", id: "item-lineage", "aria-labelledby": "lineage-title" },
    h("h2", { id: "lineage-title" }, "Lineage"));  // prettier-ignore
  root.append(lineageBox);

  // The slower parts load side by side; each failure is its own message.
  await Promise.all([
    api
      .signedTileJson("items", item.id)
      .then((tilejson) => {
        if (signal.aborted) return;
        maps.addTileLayer(map, tilejson.tiles[0], {
          bounds: tilejson.bounds,
          minZoom: Math.max(0, tilejson.minzoom - 3),
          maxzoom: tilejson.maxzoom,
          className: "gp-preview",
        });
      })
      .catch((err) => ctx.handleError(err)),
    api
      .imageObjectUrl(`/v1/items/${encodeURIComponent(item.id)}/preview.png?max_size=512`, { signal })
      .then((url) => {
        cleanups.push(() => URL.revokeObjectURL(url));
        preview.addEventListener("load", () => previewStatus.remove(), { once: true });
        preview.src = url;
      })
      .catch((err) => {
        if (err.name === "AbortError") return;
        preview.remove();
        previewStatus.textContent = `No preview: ${err.message}`;
      }),
    api
      .call("items.lineage", { item_id: item.id }, { signal })
      .then((lineage) => lineageBox.append(renderLineage(lineage, item.id)))
      .catch((err) => {
        if (err.name === "AbortError") return;
        lineageBox.append(h("p", { class: "notice error" }, `The lineage could not be read: ${err.message}`));
      }),
  ]);
  return () => cleanups.forEach((fn) => fn());
}

function facts(item) {
  const rows = [
    ["Id", h("code", {}, item.id)],
    ["Collection", item.collection_id || "–"],
    ["Date and time", formatDate(item.datetime)],
    ["Project", item.project_id],
    ["Registered", formatDate(item.create_time)],
    ["Bounding box", item.bbox ? item.bbox.map((v) => v.toFixed(5)).join(", ") : "–"],
  ];
  if (item.job_id) rows.push(["Made by job", h("a", { href: `#/jobs/${item.job_id}` }, item.job_id)]);
  if (item.source_item_ids && item.source_item_ids.length) {
    rows.push([
      "Derived from",
      item.source_item_ids.flatMap((id, i) => [i ? ", " : "", h("a", { href: `#/items/${id}` }, id)]),
    ]);
  }
  for (const [key, value] of Object.entries(item.properties || {})) {
    rows.push([key, typeof value === "object" ? JSON.stringify(value) : String(value)]);
  }
  return h("dl", { class: "facts", id: "item-facts" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function assetSection(item, asset, api, ctx) {
  const key = asset.key;
  const resource = asset.href || `items/${item.id}/assets/${key}`;
  const urlBox = h("input", {
    class: "signed-url",
    id: `signed-url-${key}`,
    type: "text",
    readonly: true,
    hidden: true,
    "aria-label": `Signed URL of asset ${key}`,
  });
  const status = h("span", { class: "muted", role: "status", id: `asset-status-${key}` });

  const download = h("button", { type: "button", id: `download-${key}` }, "Download");
  download.addEventListener("click", async () => {
    try {
      const { url } = await api.signUrl(resource, 300);
      // A plain navigation: the bytes stream to the browser's download, never into memory.
      const link = h("a", { href: url, download: asset.title || key, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (err) {
      ctx.handleError(err);
    }
  });

  const copy = h("button", { type: "button", class: "secondary", id: `copy-url-${key}` }, "Copy signed URL");
  copy.addEventListener("click", async () => {
    status.textContent = "Signing…";
    try {
      const { url, expireTime } = await api.signUrl(resource, 3600);
      urlBox.value = url;
      urlBox.hidden = false;
      urlBox.dataset.expireTime = expireTime || "";
      const until = expireTime ? ` (valid until ${formatDate(expireTime)})` : "";
      status.textContent = (await copyText(url, urlBox)) ? `Copied${until}.` : `Copy the URL below${until}.`;
    } catch (err) {
      status.textContent = "";
      ctx.handleError(err);
    }
  });

  const grid = asset.grid || {};
  const details = [
    ["Media type", asset.media_type || "–"],
    ["Size", asset.size_bytes !== undefined ? `${formatBytes(asset.size_bytes)} (${Number(asset.size_bytes).toLocaleString("en")} bytes)` : "–"],
    ["Roles", (asset.roles || []).join(", ") || "–"],
    ["SHA-256", asset.sha256 ? h("code", {}, asset.sha256) : "–"],
  ];
  if (grid.width) details.push(["Grid", `${grid.width} × ${grid.height} px, ${grid.crs || "no CRS"}${grid.compression ? `, ${grid.compression}` : ""}`]);

  return h(
    "section",
    { class: "asset", dataset: { assetKey: key }, "aria-labelledby": `asset-title-${key}` },
    h("h3", { id: `asset-title-${key}` }, asset.title ? `${key} · ${asset.title}` : key),
    h("dl", { class: "facts" }, details.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { fact: k } }, v)])),
    h("div", { class: "asset-actions" }, download, copy, status),
    urlBox,
    bandsTable(asset),
  );
}

// Writes to the clipboard where the page may; else selects the text for the user.
async function copyText(text, box) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    box.focus();
    box.select();
    return false;
  }
}

function bandsTable(asset) {
  const bands = asset.bands || [];
  if (!bands.length) return h("p", { class: "muted" }, "No band metadata.");
  const head = h(
    "tr",
    {},
    h("th", { scope: "col", class: "num" }, "#"),
    h("th", { scope: "col" }, "Band"),
    h("th", { scope: "col" }, "Type"),
    h("th", { scope: "col", class: "num" }, "Nodata"),
    h("th", { scope: "col", class: "num" }, "Scale / offset"),
    ...STATS.map(([, label]) => h("th", { scope: "col", class: "num" }, label)),
  );
  const rows = bands.map((band, i) => {
    const stats = band.statistics || {};
    const name = [band.name, band.common_name && band.common_name !== band.name ? band.common_name : "", band.sensor_band_id]
      .filter(Boolean)
      .join(" · ");
    return h(
      "tr",
      { dataset: { band: String(i + 1) } },
      h("td", { class: "num" }, String(i + 1)),
      h("th", { scope: "row" }, name || `band ${i + 1}`, band.unit ? h("span", { class: "muted" }, ` (${band.unit})`) : ""),
      h("td", {}, band.data_type || "–"),
      h("td", { class: "num" }, band.nodata === undefined ? "–" : formatNumber(band.nodata)),
      h("td", { class: "num" }, `${formatNumber(band.scale ?? 0)} / ${formatNumber(band.offset ?? 0)}`),
      // Proto3 JSON leaves zeros out: a missing statistic is 0.
      ...STATS.map(([stat]) =>
        h("td", { class: "num", dataset: { stat, value: String(stats[stat] ?? 0) } }, formatNumber(stats[stat] ?? 0)),
      ),
    );
  });
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": `Bands and statistics of asset ${asset.key}` },
    h(
      "table",
      { class: "bands", id: `bands-${asset.key}` },
      h("caption", { class: "visually-hidden" }, `Bands of ${asset.key} with their embedded statistics`),
      h("thead", {}, head),
      h("tbody", {}, rows),
    ),
  );
}
