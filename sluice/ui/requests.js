// Requests tab: the newest usage rows, filtered by status and team, polled with since_id.
import { $, api, fmt, h, setStatus } from "./lib.js";

const POLL_MS = 3000;
const MAX_ROWS = 500;
let lastId = 0;
let oldestId = null;
let timer = null;
let active = false;

function query(extra) {
  const form = $("#requests-form");
  const q = new URLSearchParams({ limit: "50", ...extra });
  if (form.status.value) q.set("status", form.status.value);
  if (form.team.value.trim()) q.set("team", form.team.value.trim());
  return "/admin/requests?" + q;
}

function row(r, isNew) {
  const bad = r.status >= 400;
  return h("tr", { class: isNew ? "new" : null, "data-id": r.id },
    h("td", {}, fmt.time(r.ts)),
    h("td", { class: bad ? "bad" : "good" }, String(r.status)),
    h("td", {}, r.error_code || ""),
    h("td", {}, r.model || "—"),
    h("td", {}, r.provider || "—"),
    h("td", {}, r.team || "—"),
    h("td", {}, r.key_id || "—"),
    h("td", { class: "num" }, `${fmt.int(r.prompt_tokens)} / ${fmt.int(r.completion_tokens)}`),
    h("td", { class: "num" }, fmt.cost(r.cost_usd)),
    h("td", { class: "num" }, fmt.ms(r.latency_ms)),
    h("td", {}, r.cache_hit ? "hit" : "miss"),
    h("td", {}, h("code", {}, r.request_id)));
}

function tbody() { return $("#requests-table tbody"); }

export async function loadRequests() {
  try {
    const data = await api("GET", query({}));
    lastId = data.last_id;
    oldestId = data.data.length ? data.data[data.data.length - 1].id : null;
    const body = tbody();
    body.replaceChildren(...data.data.map((r) => row(r, false)));
    if (!data.data.length) body.append(h("tr", {}, h("td", { colspan: 12, class: "note" }, "No requests match.")));
    $("#requests-more").disabled = data.data.length < 50;
    setStatus(`Requests updated ${new Date().toLocaleTimeString()}.`);
  } catch (e) {
    setStatus("Requests: " + e.message, true);
  }
}

async function poll() {
  if (!active || !$("#r-live").checked || document.hidden) return;
  try {
    const data = await api("GET", query({ since_id: String(lastId), limit: "200" }));
    if (!data.data.length) return;
    lastId = data.last_id;
    const body = tbody();
    const empty = body.querySelector("td.note");
    if (empty) body.replaceChildren();
    for (const old of body.querySelectorAll("tr.new")) old.classList.remove("new");
    body.prepend(...data.data.map((r) => row(r, true)));
    while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
    $("#requests-live").textContent = `${data.data.length} new request${data.data.length > 1 ? "s" : ""}.`;
  } catch (e) {
    setStatus("Live view paused: " + e.message, true);
  }
}

async function older() {
  if (oldestId === null) return;
  try {
    const data = await api("GET", query({ before_id: String(oldestId) }));
    tbody().append(...data.data.map((r) => row(r, false)));
    if (data.data.length) oldestId = data.data[data.data.length - 1].id;
    $("#requests-more").disabled = data.data.length < 50;
  } catch (e) {
    setStatus("Requests: " + e.message, true);
  }
}

export function showRequests(on) {
  active = on;
  if (on && !timer) timer = setInterval(poll, POLL_MS);
  if (!on && timer) { clearInterval(timer); timer = null; }
}

export function initRequests() {
  $("#requests-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadRequests(); });
  $("#requests-more").addEventListener("click", older);
}
