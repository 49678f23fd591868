// Charts drawn as inline SVG: stacked bars and lines over time buckets. No library.
import { h } from "./lib.js";

// The drawing is sized in CSS pixels to its container, so labels keep their size on phones.
const H = 230, L = 58, R = 12, T = 12, B = 30;
let W = 640;

// A top of the y axis whose quarters are round numbers; whole quarters for counts.
function niceMax(v, integer) {
  if (!(v > 0)) return integer ? 4 : 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  let max = 10 * p;
  for (const m of [1, 1.2, 1.6, 2, 3, 4, 6, 8, 10]) if (m * p >= v) { max = m * p; break; }
  return integer ? Math.max(4, Math.ceil(max / 4) * 4) : max;
}

function frame(el, titleId, desc, max, fmtY, labels) {
  W = Math.max(300, Math.round(el.clientWidth || 640));
  const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-labelledby": titleId });
  svg.append(h("desc", {}, desc));
  const plotH = H - T - B;
  for (let i = 0; i <= 4; i++) {
    const y = T + plotH - (plotH * i) / 4;
    svg.append(h("line", { class: i ? "grid" : "axis", x1: L, x2: W - R, y1: y, y2: y }));
    svg.append(h("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, fmtY((max * i) / 4)));
  }
  const n = labels.length;
  const step = Math.max(1, Math.ceil(n / Math.max(2, Math.floor((W - L) / 80))));
  const bw = (W - L - R) / Math.max(n, 1);
  for (let i = 0; i < n; i += step) {
    svg.append(h("text", { x: L + bw * (i + 0.5), y: H - 10, "text-anchor": "middle" }, labels[i]));
  }
  return { svg, plotH, bw };
}

function emptyNote(svg) {
  svg.append(h("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "No requests in this range"));
}

// stacks: [{name, cls, values}] drawn bottom-up; fmt formats a value for axis and tooltips.
export function barChart(el, { titleId, labels, stacks, fmt, integer = false }) {
  const totals = labels.map((_, i) => stacks.reduce((s, st) => s + (st.values[i] || 0), 0));
  const max = niceMax(Math.max(0, ...totals), integer);
  const sum = totals.reduce((a, b) => a + b, 0);
  const peak = totals.indexOf(Math.max(...totals));
  const desc = sum
    ? `Total ${fmt(sum)}; highest ${fmt(totals[peak])} at ${labels[peak]}.`
    : "No data in this range.";
  const { svg, plotH, bw } = frame(el, titleId, desc, max, fmt, labels);
  if (!sum) emptyNote(svg);
  const gap = bw > 6 ? Math.min(4, bw * 0.2) : 0;
  labels.forEach((label, i) => {
    if (!totals[i]) return;
    const g = h("g", {});
    let y = T + plotH;
    for (const st of stacks) {
      const v = st.values[i] || 0;
      if (!v) continue;
      const hgt = (plotH * v) / max;
      y -= hgt;
      g.append(h("rect", { class: st.cls, x: L + bw * i + gap / 2, y, width: Math.max(bw - gap, 1), height: Math.max(hgt, 0.5) }));
    }
    g.append(h("title", {}, `${label}: ` + stacks.map((st) => `${st.name} ${fmt(st.values[i] || 0)}`).join(", ")));
    svg.append(g);
  });
  el.replaceChildren(svg);
}

// lines: [{name, cls, dot, values}] where a null value leaves a gap.
export function lineChart(el, { titleId, labels, lines, fmt }) {
  const all = lines.flatMap((l) => l.values.filter((v) => v !== null && v !== undefined));
  const max = niceMax(Math.max(0, ...all), false);
  const desc = all.length
    ? lines.map((l) => `${l.name} up to ${fmt(Math.max(...l.values.filter((v) => v !== null)))}`).join("; ") + "."
    : "No data in this range.";
  const { svg, plotH, bw } = frame(el, titleId, desc, max, fmt, labels);
  if (!all.length) emptyNote(svg);
  for (const l of lines) {
    let d = "";
    let pen = false;
    l.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      const x = L + bw * (i + 0.5), y = T + plotH - (plotH * v) / max;
      d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      pen = true;
      svg.append(h("circle", { class: l.dot, cx: x, cy: y, r: 3 }, h("title", {}, `${labels[i]}: ${l.name} ${fmt(v)}`)));
    });
    if (d) svg.insertBefore(h("path", { class: l.cls, d }), svg.querySelector("circle"));
  }
  el.replaceChildren(svg);
}
