// items.lineage as a small left-to-right SVG graph: sources, the jobs that made items
// from them, and derived items; every node links to its item or job page.

import { h, svg } from "./dom.js";

const BOX_W = 190;
const BOX_H = 40;
const GAP_X = 70;
const GAP_Y = 18;
const PAD = 12;
const MAX_LABEL = 24;

// Directed links source -> job -> output (or source -> output without a job).
function links(edges) {
  const found = [];
  for (const edge of edges || []) {
    if (edge.relation === "generated_by" && edge.job_id) {
      found.push([`job:${edge.job_id}`, `item:${edge.output_item_id}`]);
    } else if (edge.relation === "derived_from" && edge.source_item_id) {
      const target = edge.job_id ? `job:${edge.job_id}` : `item:${edge.output_item_id}`;
      found.push([`item:${edge.source_item_id}`, target]);
    }
  }
  const unique = new Map(found.map(([a, b]) => [`${a}>${b}`, [a, b]]));
  return [...unique.values()];
}

// A column per step from the start item: upstream to the left, downstream to the right.
function columns(nodes, arrows, startKey) {
  const level = new Map([[startKey, 0]]);
  for (let changed = true, rounds = 0; changed && rounds < 64; rounds += 1) {
    changed = false;
    for (const [a, b] of arrows) {
      if (level.has(a) && !level.has(b)) {
        level.set(b, level.get(a) + 1);
        changed = true;
      } else if (level.has(b) && !level.has(a)) {
        level.set(a, level.get(b) - 1);
        changed = true;
      }
    }
  }
  for (const node of nodes) if (!level.has(node.key)) level.set(node.key, 0);
  return level;
}

export function renderLineage(lineage, itemId) {
  // One box per item or job, however often the walk reached it.
  const unique = new Map((lineage.nodes || []).map((n) => [`${n.kind}:${n.id}`, { ...n, key: `${n.kind}:${n.id}` }]));
  const nodes = [...unique.values()];
  const startKey = `item:${itemId}`;
  const arrows = links(lineage.edges).filter(([a, b]) => nodes.some((n) => n.key === a) && nodes.some((n) => n.key === b));
  const level = columns(nodes, arrows, startKey);
  const minLevel = Math.min(...level.values());
  const byColumn = new Map();
  for (const node of nodes) {
    const column = level.get(node.key) - minLevel;
    if (!byColumn.has(column)) byColumn.set(column, []);
    byColumn.get(column).push(node);
  }
  const place = new Map();
  let rowsMax = 1;
  for (const [column, members] of byColumn) {
    rowsMax = Math.max(rowsMax, members.length);
    members.forEach((node, row) => place.set(node.key, { x: PAD + column * (BOX_W + GAP_X), y: PAD + row * (BOX_H + GAP_Y) }));
  }
  const width = PAD * 2 + byColumn.size * BOX_W + (byColumn.size - 1) * GAP_X;
  const height = PAD * 2 + rowsMax * BOX_H + (rowsMax - 1) * GAP_Y;

  const graph = svg(
    "svg",
    {
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "group",
      "aria-label": `Lineage: ${nodes.length} items and jobs, ${arrows.length} links`,
      "data-nodes": nodes.length,
      "data-edges": arrows.length,
    },
    svg("defs", {}, svg("marker", { id: "lineage-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }))),  // prettier-ignore
    ...arrows.map(([a, b]) => {
      const from = place.get(a);
      const to = place.get(b);
      const x1 = from.x + BOX_W;
      const y1 = from.y + BOX_H / 2;
      const x2 = to.x;
      const y2 = to.y + BOX_H / 2;
      const mid = (x1 + x2) / 2;
      return svg("path", { class: "edge", d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`, "marker-end": "url(#lineage-arrow)", "data-from": a, "data-to": b });
    }),
    ...nodes.map((node) => nodeBox(node, place.get(node.key), node.key === startKey)),
  );
  const legend =
    nodes.length > 1
      ? "Sources on the left, derived items on the right; jobs in orange. Each box opens its page."
      : "No sources, jobs or derived items: this item was registered directly.";
  return h("div", { class: "lineage-graph" }, h("p", { class: "muted" }, legend), h("div", { class: "table-wrap" }, graph));
}

function nodeBox(node, at, current) {
  const label = node.label || node.id;
  const short = label.length > MAX_LABEL ? `${label.slice(0, MAX_LABEL - 1)}…` : label;
  const kind = node.kind === "job" ? "job" : "item";
  const href = kind === "job" ? `#/jobs/${node.id}` : `#/items/${node.id}`;
  const box = svg(
    "g",
    { class: `node ${kind}${current ? " current" : ""}`, transform: `translate(${at.x} ${at.y})`, "data-kind": kind, "data-id": node.id },
    svg("title", {}, `${kind === "job" ? "Job" : "Item"} ${label} (${node.id})`),
    svg("rect", { width: BOX_W, height: BOX_H, rx: 6 }),
    svg("text", { x: 10, y: 17 }, short),
    svg("text", { x: 10, y: 32, class: "kind" }, kind === "job" ? `job · ${node.id.slice(0, 16)}` : current ? "this item" : "item"),
  );
  if (current) return box;
  return svg("a", { href, "aria-label": `${kind === "job" ? "Job" : "Item"} ${label}` }, box);
}
