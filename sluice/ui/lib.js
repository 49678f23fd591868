// Shared pieces: the admin key (session storage only), the API client, DOM and format helpers.

const KEY = "sluice.adminKey";

export const session = {
  get: () => sessionStorage.getItem(KEY),
  set: (k) => sessionStorage.setItem(KEY, k),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

// Calls an admin endpoint with the key as a Bearer header; never puts the key in a URL.
export async function api(method, path, body, key = session.get()) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
    });
  } catch (e) {
    throw new ApiError(0, "the gateway did not answer");
  }
  let data = null;
  const text = await res.text();
  if (text) { try { data = JSON.parse(text); } catch { data = text; } }
  if (!res.ok) {
    const msg = (data && data.error && (data.error.message || data.error)) || res.statusText;
    if (res.status === 401 && key) onUnauthorized();
    throw new ApiError(res.status, typeof msg === "string" ? msg : JSON.stringify(msg));
  }
  return data;
}

// h("td", {class: "num"}, "12") — builds elements with text nodes only (no HTML injection).
export function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "rect", "line", "path", "text", "title", "desc", "circle", "polyline"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

const nf = new Intl.NumberFormat("en-US");
const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
export const fmt = {
  int: (n) => (n === null || n === undefined ? "—" : nf.format(n)),
  compact: (n) => (n === null || n === undefined ? "—" : compact.format(n)),
  usd: (n) => {
    if (n === null || n === undefined) return "—";
    if (n !== 0 && Math.abs(n) < 0.01) return "$" + n.toPrecision(2);
    return "$" + n.toFixed(2);
  },
  cost: (n) => (n === null || n === undefined ? "—" : "$" + n.toFixed(Math.abs(n) < 1 ? 4 : 2)),
  ms: (n) => (n === null || n === undefined ? "—" : n >= 1000 ? (n / 1000).toFixed(2) + " s" : Math.round(n) + " ms"),
  pct: (n) => (n === null || n === undefined || Number.isNaN(n) ? "—" : (100 * n).toFixed(1) + "%"),
  time: (ts) => new Date(ts * 1000).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }),
  shortTime: (ts, bucket) => {
    const d = new Date(ts * 1000);
    if (bucket === "day") return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
    return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  },
};

export function setStatus(text, bad = false) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("bad", bad);
}

// A table body filled from rows: each column {label, value: row => text|Node, num?: bool}.
export function fillTable(tbody, rows, cols, empty = "Nothing yet.") {
  tbody.replaceChildren();
  if (!rows.length) {
    tbody.append(h("tr", {}, h("td", { colspan: cols.length, class: "note" }, empty)));
    return;
  }
  for (const r of rows) tbody.append(h("tr", {}, cols.map((c) => h("td", { class: c.num ? "num" : null }, c.value(r)))));
}
