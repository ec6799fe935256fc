// A small line chart in SVG: one series of per-round values, with a y grid and round ticks.
// Drawn in a fixed viewBox and scaled by CSS, so it fits any width without measuring.

import { h, svg } from "./dom.js";
import { formatMetric } from "./format.js";

const WIDTH = 320;
const HEIGHT = 160;
const PAD = { top: 10, right: 10, bottom: 22, left: 44 };
const Y_TICKS = 4;

/** Axis bounds and tick step on round numbers (1, 2 or 5 times a power of ten). */
function niceScale(values) {
  let low = Math.min(...values);
  let high = Math.max(...values);
  if (low === high) {
    const spread = Math.abs(low) * 0.1 || 1;
    low -= spread;
    high += spread;
  }
  const rough = (high - low) / Y_TICKS;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= rough);
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  return {
    low: Math.floor(low / step) * step,
    high: Math.ceil(high / step) * step,
    step,
    label: (value) => value.toFixed(decimals),
  };
}

function roundTicks(first, last) {
  const count = last - first + 1;
  const step = Math.max(1, Math.ceil(count / 6));
  const ticks = [];
  for (let r = first; r <= last; r += step) ticks.push(r);
  if (ticks.at(-1) !== last) ticks.push(last);
  return ticks;
}

/**
 * `points`: [{round, value}] in round order. Returns a <figure> with the title, the latest
 * value, and the chart; each point carries a tooltip with its exact value.
 */
export function lineChart({ title, points, className = "" }) {
  const latest = points.at(-1);
  const caption = h(
    "figcaption",
    {},
    h("span", {}, title),
    latest ? h("span", { class: "latest" }, formatMetric(latest.value)) : null,
  );
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const first = points[0]?.round ?? 0;
  const last = latest?.round ?? 0;
  const scale = niceScale(points.length ? points.map((p) => p.value) : [0, 1]);
  const { low, high } = scale;
  const x = (round) =>
    PAD.left + (last === first ? plotWidth / 2 : ((round - first) / (last - first)) * plotWidth);
  const y = (value) => PAD.top + (1 - (value - low) / (high - low)) * plotHeight;

  const grid = [];
  const ticks = Math.round((high - low) / scale.step);
  for (let i = 0; i <= ticks; i += 1) {
    const value = low + scale.step * i;
    grid.push(
      svg("line", {
        class: "grid-line",
        x1: PAD.left,
        x2: WIDTH - PAD.right,
        y1: y(value),
        y2: y(value),
      }),
      svg(
        "text",
        { class: "axis-label", x: PAD.left - 6, y: y(value) + 3, "text-anchor": "end" },
        scale.label(value),
      ),
    );
  }
  const xLabels = points.length
    ? roundTicks(first, last).map((round) =>
        svg(
          "text",
          { class: "axis-label", x: x(round), y: HEIGHT - 6, "text-anchor": "middle" },
          String(round),
        ),
      )
    : [];
  const line = points.map((p) => `${x(p.round).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
  const baseline = PAD.top + plotHeight;
  const area =
    points.length > 1
      ? `${x(first).toFixed(1)},${baseline} ${line} ${x(last).toFixed(1)},${baseline}`
      : "";

  const chart = svg(
    "svg",
    {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-label": `${title} per round${latest ? `, latest ${formatMetric(latest.value)}` : ""}`,
    },
    grid,
    xLabels,
    area ? svg("polygon", { class: "area", points: area }) : null,
    points.length > 1 ? svg("polyline", { class: "series", points: line }) : null,
    points.map((p) =>
      svg(
        "circle",
        { class: "point", cx: x(p.round), cy: y(p.value), r: 3 },
        svg("title", {}, `Round ${p.round}: ${formatMetric(p.value)}`),
      ),
    ),
  );
  return h("figure", { class: `chart ${className}`.trim() }, caption, chart);
}
