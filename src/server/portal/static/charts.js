// Small SVG charts for analytics results: a histogram (bin edges + counts), a line chart
// (a time series) and a colour-ramp legend. No library: a chart is a few dozen elements.
// Each chart is an <svg role="img"> with a <title> and <desc> saying what it shows, and
// scales with its container (viewBox).
import { svg } from "./dom.js";

let gradientSerial = 0;

function text(x, y, content, attrs = {}) {
  const node = svg("text", { x, y, ...attrs });
  node.textContent = content;
  return node;
}

/** Rounded "nice" tick values covering [low, high] (about `count` of them). */
export function niceTicks(low, high, count = 5) {
  if (!Number.isFinite(low) || !Number.isFinite(high)) return [];
  if (low === high) return [low];
  const span = high - low;
  const raw = span / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => span / s <= count) ?? 10 * magnitude;
  const first = Math.ceil(low / step - 1e-9) * step;
  const ticks = [];
  for (let v = first; v <= high + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/** A number for an axis label: 4 significant digits, no trailing zeros, short exponents. */
export function axisNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e9) return value.toLocaleString("en-US");
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e9)) return value.toExponential(3);
  return String(Number(value.toPrecision(4)));
}

const MARGIN = { top: 16, right: 16, bottom: 40, left: 56 };

function frame(width, height, title, description) {
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width: "100%",
    role: "img",
    class: "chart",
    preserveAspectRatio: "xMidYMid meet",
  });
  root.append(svg("title", {}, title), svg("desc", {}, description));
  return root;
}

function axes(root, box, xTicks, yTicks, xLabel, yLabel) {
  const { left, top, right, bottom } = box;
  const axis = svg("g", { class: "axis" });
  axis.append(svg("line", { x1: left, y1: bottom, x2: right, y2: bottom }));
  axis.append(svg("line", { x1: left, y1: top, x2: left, y2: bottom }));
  for (const { position, label } of xTicks) {
    axis.append(svg("line", { x1: position, y1: bottom, x2: position, y2: bottom + 4 }));
    axis.append(text(position, bottom + 16, label, { "text-anchor": "middle" }));
  }
  for (const { position, label } of yTicks) {
    axis.append(svg("line", { x1: left - 4, y1: position, x2: left, y2: position }));
    axis.append(svg("line", { class: "grid", x1: left, y1: position, x2: right, y2: position }));
    axis.append(text(left - 6, position + 4, label, { "text-anchor": "end" }));
  }
  if (xLabel) axis.append(text((left + right) / 2, bottom + 34, xLabel, { "text-anchor": "middle", class: "axis-label" }));
  if (yLabel) {
    axis.append(text(12, (top + bottom) / 2, yLabel, {
      "text-anchor": "middle", class: "axis-label", transform: `rotate(-90 12 ${(top + bottom) / 2})`,
    }));
  }
  root.append(axis);
}

/**
 * histogramChart({ edges, counts, title, xLabel }) -> <svg>: one bar per bin (bins + 1
 * edges). Each bar carries data-low, data-high and data-count, and a <title> tooltip.
 */
export function histogramChart({ edges, counts, title = "Histogram", xLabel = "value", width = 520, height = 240 }) {
  const total = counts.reduce((sum, c) => sum + c, 0);
  const description = `${counts.length} bins from ${axisNumber(edges[0])} to ${axisNumber(edges.at(-1))}, ${axisNumber(total)} pixels`;
  const root = frame(width, height, title, description);
  const box = { left: MARGIN.left, top: MARGIN.top, right: width - MARGIN.right, bottom: height - MARGIN.bottom };
  const low = edges[0];
  const high = edges.at(-1);
  const maxCount = Math.max(...counts, 0) || 1;
  const x = (v) => box.left + ((v - low) / (high - low || 1)) * (box.right - box.left);
  const y = (c) => box.bottom - (c / maxCount) * (box.bottom - box.top);
  const bars = svg("g", { class: "bars" });
  counts.forEach((count, i) => {
    const x0 = x(edges[i]);
    const x1 = x(edges[i + 1]);
    const bar = svg("rect", {
      x: x0 + 0.5,
      y: y(count),
      width: Math.max(0.5, x1 - x0 - 1),
      height: box.bottom - y(count),
      class: "bar",
      "data-low": edges[i],
      "data-high": edges[i + 1],
      "data-count": count,
    });
    bar.append(svg("title", {}, `${axisNumber(edges[i])} to ${axisNumber(edges[i + 1])}: ${axisNumber(count)}`));
    bars.append(bar);
  });
  root.append(bars);
  const xTicks = niceTicks(low, high, 5).map((v) => ({ position: x(v), label: axisNumber(v) }));
  const yTicks = niceTicks(0, maxCount, 4).map((v) => ({ position: y(v), label: axisNumber(v) }));
  axes(root, box, xTicks, yTicks, xLabel, "pixels");
  return root;
}

function dateLabel(ms, spanMs) {
  const iso = new Date(ms).toISOString();
  return spanMs > 400 * 86400e3 ? iso.slice(0, 7) : iso.slice(0, 10);
}

/**
 * lineChart({ points: [{ x: Date|ISO string|number, y: number|null }], title, yLabel,
 * xType: "time"|"number", xLabel }) -> <svg>: a line through the points in x order,
 * broken where y is null (a step with no valid pixel), a dot per point (data-x, data-y).
 */
export function lineChart({ points, title = "Time series", yLabel = "value", xType = "time", xLabel, width = 520, height = 240 }) {
  const time = xType === "time";
  const xText = (v, span) => (time ? dateLabel(v, span) : axisNumber(v));
  const parsed = points
    .map((p) => ({ x: p.x instanceof Date ? p.x.getTime() : typeof p.x === "string" ? Date.parse(p.x) : p.x, y: p.y, raw: p }))
    .sort((a, b) => a.x - b.x);
  const valid = parsed.filter((p) => p.y !== null && p.y !== undefined && Number.isFinite(p.y));
  const description = `${parsed.length} steps, ${valid.length} with a value`;
  const root = frame(width, height, title, description);
  const box = { left: MARGIN.left, top: MARGIN.top, right: width - MARGIN.right, bottom: height - MARGIN.bottom };
  if (!parsed.length) return root;
  const xLow = parsed[0].x;
  const xHigh = parsed.at(-1).x;
  const ys = valid.map((p) => p.y);
  let yLow = ys.length ? Math.min(...ys) : 0;
  let yHigh = ys.length ? Math.max(...ys) : 1;
  if (yLow === yHigh) { yLow -= 0.5; yHigh += 0.5; }
  const pad = (yHigh - yLow) * 0.05;
  yLow -= pad;
  yHigh += pad;
  const x = (v) => (xHigh === xLow ? (box.left + box.right) / 2 : box.left + ((v - xLow) / (xHigh - xLow)) * (box.right - box.left));
  const y = (v) => box.bottom - ((v - yLow) / (yHigh - yLow)) * (box.bottom - box.top);
  let d = "";
  let pen = "M";
  for (const p of parsed) {
    if (!valid.includes(p)) { pen = "M"; continue; }
    d += `${pen}${x(p.x).toFixed(2)},${y(p.y).toFixed(2)} `;
    pen = "L";
  }
  root.append(svg("path", { d: d.trim(), class: "line", fill: "none" }));
  const dots = svg("g", { class: "dots" });
  for (const p of valid) {
    const xValue = time ? new Date(p.x).toISOString() : p.x;
    const dot = svg("circle", { cx: x(p.x), cy: y(p.y), r: 3, class: "dot", "data-x": xValue, "data-y": p.y });
    dot.append(svg("title", {}, `${time ? xValue.slice(0, 10) : axisNumber(p.x)}: ${axisNumber(p.y)}`));
    dots.append(dot);
  }
  root.append(dots);
  const span = xHigh - xLow;
  const xCount = Math.min(5, parsed.length);
  const xValues = time
    ? Array.from({ length: xCount }, (_, i) => xLow + (xCount === 1 ? 0 : (i * span) / (xCount - 1)))
    : niceTicks(xLow, xHigh, 5);
  const xTicks = xValues.map((v) => ({ position: x(v), label: xText(v, span) }));
  const yTicks = niceTicks(yLow, yHigh, 4).map((v) => ({ position: y(v), label: axisNumber(v) }));
  axes(root, box, xTicks, yTicks, xLabel ?? (time ? "date" : "x"), yLabel);
  return root;
}

// ColorBrewer RdBu (what rio-tiler's "rdbu" map is): red low, white zero, blue high.
export const RDBU = ["#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7", "#d1e5f0", "#92c5de", "#4393c3", "#2166ac", "#053061"];

/**
 * rampLegend({ colors, min, max, title, marks: [{ value, label }] }) -> <svg>: a colour
 * bar from min to max with its end values and marks (e.g. ± the change threshold).
 */
export function rampLegend({ colors = RDBU, min, max, title = "", marks = [], width = 320, height = 64 }) {
  const root = frame(width, height, title || "Legend", `colours from ${axisNumber(min)} to ${axisNumber(max)}`);
  root.setAttribute("class", "chart legend");
  gradientSerial += 1;
  const id = `ramp-${gradientSerial}`;
  const gradient = svg("linearGradient", { id, x1: "0", x2: "1", y1: "0", y2: "0" });
  colors.forEach((color, i) => gradient.append(svg("stop", { offset: i / (colors.length - 1), "stop-color": color })));
  root.append(svg("defs", {}, gradient));
  const left = 12;
  const right = width - 12;
  const x = (v) => left + ((v - min) / (max - min || 1)) * (right - left);
  if (title) root.append(text(left, 12, title, { class: "legend-title" }));
  root.append(svg("rect", { x: left, y: 18, width: right - left, height: 14, fill: `url(#${id})`, class: "ramp" }));
  root.append(text(left, 48, axisNumber(min), { "text-anchor": "start" }));
  root.append(text(right, 48, axisNumber(max), { "text-anchor": "end" }));
  for (const mark of marks) {
    if (!(mark.value > min && mark.value < max)) continue;
    root.append(svg("line", { x1: x(mark.value), x2: x(mark.value), y1: 16, y2: 34, class: "mark" }));
    root.append(text(x(mark.value), 60, mark.label ?? axisNumber(mark.value), { "text-anchor": "middle" }));
  }
  return root;
}
