// Usage tab: filters → GET /admin/timeseries → totals, four charts, a data table, top-N tables.
import { $, api, fillTable, fmt, h, setStatus } from "./lib.js";
import { barChart, lineChart } from "./charts.js";

const DIMS = [["model", "Model"], ["provider", "Provider"], ["team", "Team"], ["key", "Key"]];

function params() {
  const form = $("#usage-form");
  const q = new URLSearchParams();
  const range = form.range.value;
  const now = Date.now() / 1000;
  if (range === "custom") {
    const from = form.from.value ? new Date(form.from.value).getTime() / 1000 : now - 86400;
    const to = form.to.value ? new Date(form.to.value).getTime() / 1000 : now;
    q.set("from", from.toFixed(0));
    q.set("to", to.toFixed(0));
  } else {
    q.set("from", (now - Number(range)).toFixed(0));
    q.set("to", now.toFixed(0));
  }
  q.set("bucket", form.bucket.value);
  q.set("tz_offset_min", String(-new Date().getTimezoneOffset()));
  for (const [d] of DIMS) if (form[d].value) q.set(d, form[d].value);
  return q;
}

function fillOptions(options) {
  for (const [d] of DIMS) {
    const sel = $("#f-" + d);
    const current = sel.value;
    const values = new Set(options[d] || []);
    if (current) values.add(current);
    sel.replaceChildren(h("option", { value: "" }, "All"), ...[...values].sort().map((v) => h("option", { value: v }, v)));
    sel.value = current;
  }
}

function totals(t) {
  const items = [
    ["Requests", fmt.int(t.requests)],
    ["Errors", `${fmt.int(t.errors)} (${fmt.pct(t.requests ? t.errors / t.requests : null)})`],
    ["Tokens", fmt.compact(t.tokens)],
    ["Spend", fmt.usd(t.spend_usd), t.unpriced ? `+ ${fmt.int(t.unpriced)} requests without a price` : null],
    ["Latency p50", fmt.ms(t.p50_ms)],
    ["Latency p95", fmt.ms(t.p95_ms)],
    ["Cache hits", fmt.int(t.cache_hits)],
  ];
  $("#totals").replaceChildren(...items.map(([k, v, note]) =>
    h("dl", { class: "stat" }, h("dt", {}, k), h("dd", {}, v), note ? h("dd", { class: "sub" }, note) : null)));
}

function charts(data) {
  const s = data.series;
  const labels = s.map((p) => fmt.shortTime(p.ts, data.bucket));
  barChart($("#chart-requests"), {
    titleId: "c-req-t", labels, fmt: fmt.compact, integer: true,
    stacks: [
      { name: "ok", cls: "ok", values: s.map((p) => p.requests - p.errors) },
      { name: "errors", cls: "err", values: s.map((p) => p.errors) },
    ],
  });
  barChart($("#chart-tokens"), {
    titleId: "c-tok-t", labels, fmt: fmt.compact, integer: true,
    stacks: [
      { name: "prompt", cls: "in", values: s.map((p) => p.prompt_tokens) },
      { name: "completion", cls: "out", values: s.map((p) => p.completion_tokens) },
    ],
  });
  barChart($("#chart-spend"), {
    titleId: "c-spend-t", labels, fmt: fmt.usd,
    stacks: [{ name: "spend", cls: "spend", values: s.map((p) => p.spend_usd || 0) }],
  });
  lineChart($("#chart-latency"), {
    titleId: "c-lat-t", labels, fmt: fmt.ms,
    lines: [
      { name: "p50", cls: "p50", dot: "dot50", values: s.map((p) => p.p50_ms) },
      { name: "p95", cls: "p95", dot: "dot95", values: s.map((p) => p.p95_ms) },
    ],
  });
}

const STAT_COLS = [
  { label: "Requests", num: true, value: (r) => fmt.int(r.requests) },
  { label: "Errors", num: true, value: (r) => fmt.int(r.errors) },
  { label: "Tokens", num: true, value: (r) => fmt.compact(r.tokens) },
  { label: "Spend", num: true, value: (r) => fmt.usd(r.spend_usd) },
  { label: "p50", num: true, value: (r) => fmt.ms(r.p50_ms) },
  { label: "p95", num: true, value: (r) => fmt.ms(r.p95_ms) },
];

function table(caption, rows, cols) {
  const t = h("table", {},
    caption ? h("caption", { class: "sr-only" }, caption) : null,
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
    h("tbody"));
  fillTable(t.tBodies[0], rows, cols, "No requests in this range.");
  return t;
}

function seriesTable(data) {
  const cols = [{ label: "Bucket start", value: (r) => fmt.time(r.ts) }, ...STAT_COLS];
  $("#series-table").replaceChildren(table("Per-bucket usage", data.series.filter((p) => p.requests), cols));
}

function tops(top) {
  $("#top").replaceChildren(...DIMS.map(([d, label]) => {
    const cols = [{ label, value: (r) => (r.name === null ? "(none)" : r.name) }, ...STAT_COLS];
    return h("div", { class: "card" }, h("h4", {}, "By " + label.toLowerCase()),
      h("div", { class: "scroll", tabindex: 0, role: "region", "aria-label": "Top by " + label.toLowerCase() },
        table("Top by " + label.toLowerCase(), top[d] || [], cols)));
  }));
}

let last = null;

export async function loadUsage() {
  setStatus("Loading usage…");
  try {
    const data = await api("GET", "/admin/timeseries?" + params());
    last = data;
    fillOptions(data.options);
    totals(data.totals);
    charts(data);
    seriesTable(data);
    tops(data.top);
    setStatus(`Usage updated ${new Date().toLocaleTimeString()}.`);
  } catch (e) {
    setStatus("Usage: " + e.message, true);
  }
}

export function initUsage() {
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => { if (last && !$("#panel-usage").hidden) charts(last); }, 150);
  });
  const form = $("#usage-form");
  form.addEventListener("submit", (ev) => { ev.preventDefault(); loadUsage(); });
  form.range.addEventListener("change", () => {
    const custom = form.range.value === "custom";
    for (const el of form.querySelectorAll(".custom")) el.hidden = !custom;
  });
}
