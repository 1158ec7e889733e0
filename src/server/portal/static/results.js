// An analytics result drawn by its shape, not by its method (a plugin's result gets the
// same treatment): tables of its numbers, a histogram chart for every {edges, counts},
// a line chart for rows with a datetime and a value, a quantile curve for zones that
// carry percentiles but no histogram, and every GeoTIFF output over the map with a
// legend (for a difference: a diverging ramp and the increase / decrease areas).
import { histogramChart, lineChart, rampLegend, RDBU } from "./charts.js";
import { formatNumber, h } from "./dom.js";

const isScalar = (v) => v === null || ["number", "string", "boolean"].includes(typeof v);
const isHistogram = (v) => v && Array.isArray(v.edges) && Array.isArray(v.counts) && v.edges.length === v.counts.length + 1;
// [{percentile: 10, value: 0.6}, ...]: a list of labelled values, shown as columns.
const isPairList = (v) => Array.isArray(v) && v.length > 0 && v.every((e) => e && typeof e === "object" && !Array.isArray(e)
  && Object.keys(e).length === 2 && Object.values(e).every(isScalar));
const isRowList = (v) => Array.isArray(v) && v.length > 0 && v.every((e) => e && typeof e === "object" && !Array.isArray(e)) && !isPairList(v);

/** The scalar cells of a value: [{ path, label, value }], nested keys joined with dots. */
export function flatten(value, path = "", label = "", out = []) {
  if (isScalar(value)) out.push({ path, label, value });
  else if (Array.isArray(value) && value.every(isScalar)) out.push({ path, label, value });
  else if (isPairList(value)) {
    value.forEach((entry, i) => {
      const [first, second] = Object.keys(entry);
      out.push({ path: `${path}.${i}.${second}`, label: `${label} ${formatNumber(entry[first])}`, value: entry[second] });
    });
  } else if (value && typeof value === "object" && !Array.isArray(value) && !isHistogram(value)) {
    for (const [key, inner] of Object.entries(value)) {
      flatten(inner, path ? `${path}.${key}` : key, label ? `${label}.${key}` : key, out);
    }
  }
  return out;
}

function cell({ path, value }) {
  const text = Array.isArray(value) ? value.join(", ") : typeof value === "number" ? formatNumber(value) : value === null ? "–" : String(value);
  return h("td", { class: typeof value === "number" ? "num" : "", "data-path": path, "data-value": JSON.stringify(value) }, text);
}

function table(caption, head, rows, id) {
  return h("div", { class: "table-wrap" }, h("table", { class: "result-table", id },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows)));
}

function summaryTable(cells) {
  return table("Result", ["Name", "Value"], cells.map((c) => h("tr", {}, h("th", { scope: "row" }, c.label), cell(c))), "result-summary");
}

function rowTable(key, rows) {
  const flat = rows.map((row, i) => flatten(row, `${key}.${i}`));
  const labels = [...new Set(flat.flatMap((cells) => cells.map((c) => c.label)))];
  const body = flat.map((cells) => h("tr", {}, labels.map((label) => {
    const found = cells.find((c) => c.label === label);
    return found ? cell(found) : h("td", {}, "");
  })));
  return table(key, labels, body, `result-${key}`);
}

function groupTable(names, result) {
  const keys = Object.keys(result[names[0]]);
  const body = names.map((name) => h("tr", {}, h("th", { scope: "row" }, name),
    keys.map((k) => cell({ path: `${name}.${k}`, value: result[name][k] }))));
  return table(names.join(", "), ["", ...keys], body, `result-${names.join("-")}`);
}

/** Tables of a result: its scalars (and lone objects) as one table, objects sharing
 * their keys side by side, lists of rows (zones, steps) one row each. */
function tables(result) {
  const summary = [];
  const groups = new Map();
  const sections = [];
  for (const [key, value] of Object.entries(result)) {
    if (isRowList(value)) sections.push(rowTable(key, value));
    else if (value && typeof value === "object" && !Array.isArray(value) && Object.values(value).every(isScalar) && Object.keys(value).length) {
      const signature = Object.keys(value).join(",");
      groups.set(signature, [...(groups.get(signature) ?? []), key]);
    } else flatten(value, key, key, summary);
  }
  for (const names of groups.values()) {
    if (names.length > 1) sections.unshift(groupTable(names, result));
    else flatten(result[names[0]], names[0], names[0], summary);
  }
  return [summaryTable(summary), ...sections];
}

function charts(result) {
  const found = [];
  for (const [key, rows] of Object.entries(result)) {
    if (!isRowList(rows)) continue;
    rows.forEach((row, i) => {
      const where = rows.length > 1 ? ` (${key} ${i})` : "";
      for (const [name, value] of Object.entries(row)) {
        if (isHistogram(value)) found.push(histogramChart({ edges: value.edges, counts: value.counts, title: `Histogram${where}`, xLabel: result.index_name ?? "value" }));
      }
      // No histogram asked for: the distribution as a quantile curve (min, percentiles, max).
      if (!Object.values(row).some(isHistogram) && isPairList(row.percentiles) && row.stats) {
        const points = [{ x: 0, y: row.stats.min }, ...row.percentiles.map((p) => ({ x: p.percentile, y: p.value })), { x: 100, y: row.stats.max }]
          .filter((p) => typeof p.y === "number");
        if (points.length >= 2) found.push(lineChart({ points, xType: "number", xLabel: "percentile", yLabel: result.index_name ?? "value", title: `Quantiles${where}` }));
      }
    });
    const series = rows.filter((r) => typeof r.datetime === "string" && "value" in r);
    if (series.length === rows.length && series.length) {
      found.push(lineChart({ points: series.map((r) => ({ x: r.datetime, y: r.value })), title: `${result.reducer ?? "value"} over time`, yLabel: result.index_name ?? result.unit ?? "value" }));
    }
  }
  return found;
}

async function overlay(output, result, ctx, map, legendSlot) {
  const spread = Math.max(Math.abs(result.difference?.min ?? NaN), Math.abs(result.difference?.max ?? NaN));
  const diverging = Number.isFinite(spread) && spread > 0;
  const query = diverging ? { rescale: `${-spread},${spread}`, colormap: "rdbu" } : {};
  const tilejson = await ctx.api.signedTileJson("artifacts", output.id, query);
  const layer = ctx.map.addTileLayer(map, tilejson.tiles[0], {
    bounds: tilejson.bounds, minzoom: tilejson.minzoom, maxzoom: tilejson.maxzoom, opacity: 0.85,
    className: "gp-result-overlay", zIndex: 20,
  });
  if (tilejson.bounds) ctx.map.fitGeometry(map, tilejson.bounds);
  if (!diverging) return layer;
  const threshold = Number(result.change_threshold);
  const marks = Number.isFinite(threshold) ? [{ value: -threshold, label: `-${formatNumber(threshold)}` }, { value: threshold, label: `+${formatNumber(threshold)}` }] : [];
  const areas = [["increase", "Increase"], ["decrease", "Decrease"]].filter(([k]) => result[k]).map(([k, word]) =>
    h("li", { "data-class": k }, h("span", { class: `swatch ${k}`, "aria-hidden": "true" }),
      `${word}: ${formatNumber(result[k].area_ha)} ha (${formatNumber(100 * (result[k].fraction ?? 0))} % of the compared pixels)`));
  legendSlot.append(h("div", { class: "result-legend", id: "result-legend" },
    rampLegend({ colors: RDBU, min: -spread, max: spread, title: output.title ?? "difference", marks }),
    h("ul", { class: "change-areas" }, areas)));
  return layer;
}

function outputList(outputs, ctx) {
  return h("ul", { class: "result-outputs" }, outputs.map((output) => {
    const link = h("button", { type: "button", class: "secondary" }, "Download link");
    link.addEventListener("click", async () => {
      try {
        const { url } = await ctx.api.signUrl(output.href);
        link.replaceWith(h("a", { href: url, download: "" }, "Download"));
      } catch (err) {
        ctx.handleError(err);
      }
    });
    return h("li", { "data-output": output.key }, h("strong", {}, output.title ?? output.key), ` ${output.media_type ?? ""} `, link);
  }));
}

/**
 * renderResult(container, response, ctx, map): an analytics.execute answer ({operation,
 * result, outputs}) as tables and charts; GeoTIFF outputs go over `map`. Answers the map
 * layers it added (the page removes them before the next result).
 */
export async function renderResult(container, response, ctx, map) {
  const result = response.result ?? {};
  const outputs = response.outputs ?? [];
  const legendSlot = h("div", { class: "legend-slot" });
  const chartList = charts(result);
  const parts = [
    h("h2", {}, `Result of ${response.operation}`),
    legendSlot,
    chartList.length ? h("div", { class: "result-charts" }, chartList) : null,
    ...tables(result),
    outputs.length ? h("h3", {}, "Outputs") : null,
    outputs.length ? outputList(outputs, ctx) : null,
  ];
  container.replaceChildren(...parts.filter(Boolean));
  const rasters = outputs.filter((o) => /geotiff/i.test(o.media_type ?? ""));
  return Promise.all(rasters.map((o) => overlay(o, result, ctx, map, legendSlot)));
}
