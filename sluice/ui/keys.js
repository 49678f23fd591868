// Keys tab: team keys (create, shown once; rotate; revoke; limits and models) and teams.
// Controls whose endpoint answers 404 are hidden or disabled with a note.
import { $, api, fillTable, fmt, h, setStatus } from "./lib.js";

let keys = [];
let editing = null;

const list = (d, name) => (Array.isArray(d) ? d : (d && (d[name] || d.data)) || []);
const when = (v) => (v === null || v === undefined ? "—" : fmt.time(typeof v === "number" ? v : Date.parse(v) / 1000));

function normKey(k) {
  return {
    id: k.id ?? k.keyId ?? k.key_id,
    teamId: k.teamId ?? k.team_id ?? k.team,
    name: k.name ?? "",
    prefix: k.prefix ?? k.keyPrefix ?? "",
    createdAt: k.createdAt ?? k.created_at,
    revoked: Boolean(k.revokedAt ?? k.revoked_at ?? k.revoked) || k.active === false,
    allowedModels: k.allowedModels ?? k.allowed_models ?? null,
    limits: k.limits ?? null,
  };
}

function limitsText(l) {
  if (!l) return "—";
  const text = (k, v) => (k === "budget_usd" ? `budget ${fmt.usd(v)}` : k === "budget_period" ? `per ${v}` : `${k} ${fmt.int(v)}`);
  return Object.entries(l).filter(([, v]) => v !== null).map(([k, v]) => text(k, v)).join(", ") || "—";
}

function actions(k) {
  if (k.revoked) return "";
  const label = (what) => `${what} key ${k.name || k.id}`;
  return h("div", { class: "row" },
    h("button", { type: "button", class: "secondary small", "aria-label": label("Rotate"), onclick: () => rotate(k) }, "Rotate"),
    h("button", { type: "button", class: "secondary small", "aria-label": label("Edit limits of"), onclick: () => editLimits(k) }, "Limits"),
    h("button", { type: "button", class: "secondary small", "aria-label": label("Show the live state of"), onclick: () => showState(k) }, "Live"),
    h("button", { type: "button", class: "danger small", "aria-label": label("Revoke"), onclick: () => revoke(k) }, "Revoke"));
}

function renderKeys() {
  const tbody = $("#keys-table tbody");
  fillTable(tbody, keys, [
    { value: (k) => k.name },
    { value: (k) => h("code", {}, k.id) },
    { value: (k) => k.teamId },
    { value: (k) => h("code", {}, k.prefix + "…") },
    { value: (k) => when(k.createdAt) },
    { value: (k) => (k.revoked ? "revoked" : "active") },
    { value: (k) => (k.allowedModels ? k.allowedModels.join(", ") : "any") },
    { value: (k) => limitsText(k.limits) },
    { value: actions },
  ], "No keys yet.");
  keys.forEach((k, i) => { if (k.revoked) tbody.rows[i].classList.add("revoked"); });
}

// Live limits and budgets of one key, peeked (GET /admin/limits?key=): nothing is reserved.
async function showState(k) {
  try {
    const st = await api("GET", `/admin/limits?key=${encodeURIComponent(k.id)}`);
    $("#key-state-title").textContent = `Live limits of “${k.name}”`;
    const secs = (s) => (s === null || s === undefined ? "—" : `${Math.ceil(s)} s`);
    fillTable($("#key-state-limits tbody"), st.limits, [
      { value: (l) => l.scope },
      { value: (l) => l.kind },
      { num: true, value: (l) => fmt.int(l.limit) },
      { num: true, value: (l) => fmt.int(l.remaining) },
      { value: (l) => secs(l.reset_s) },
    ], "No rate limits apply to this key.");
    fillTable($("#key-state-budgets tbody"), st.budgets, [
      { value: (b) => b.scope },
      { value: (b) => b.per ?? b.period },
      { num: true, value: (b) => fmt.usd(b.usd) },
      { num: true, value: (b) => fmt.usd(b.spent_usd) },
      { num: true, value: (b) => fmt.usd(b.remaining_usd) },
      { value: (b) => when(b.resets_at) },
    ], "No budgets apply to this key.");
    $("#key-state").hidden = false;
    setStatus(`Live limits of “${k.name}” updated ${new Date().toLocaleTimeString()}.`);
  } catch (e) {
    setStatus("Live limits: " + e.message, true);
  }
}

function unavailable(sel, text) {
  const el = $(sel);
  el.textContent = text;
  el.hidden = false;
}

export async function loadKeys() {
  try {
    keys = list(await api("GET", "/admin/keys"), "keys").map(normKey);
    $("#keys-unavailable").hidden = true;
    $("#create-key").querySelector("button").disabled = false;
    renderKeys();
    setStatus(`Keys updated ${new Date().toLocaleTimeString()}.`);
  } catch (e) {
    keys = [];
    renderKeys();
    if (e.status === 404) {
      setStatus(`Keys updated ${new Date().toLocaleTimeString()}: team keys are not available.`);
      unavailable("#keys-unavailable", "Team keys are not available on this gateway (GET /admin/keys answered 404).");
      $("#create-key").querySelector("button").disabled = true;
    } else setStatus("Keys: " + e.message, true);
  }
  await loadTeams();
}

async function loadTeams() {
  let teams;
  try {
    teams = list(await api("GET", "/admin/teams"), "teams");
  } catch (e) {
    if (e.status === 404) unavailable("#teams-unavailable", "Teams are not available on this gateway (GET /admin/teams answered 404).");
    else setStatus("Teams: " + e.message, true);
    teams = [...new Set(keys.map((k) => k.teamId))].map((id) => ({ id }));
  }
  const count = (id) => keys.filter((k) => k.teamId === id && !k.revoked).length;
  fillTable($("#teams-table tbody"), teams, [
    { value: (t) => t.id ?? t.teamId },
    { value: (t) => t.name ?? "—" },
    { value: (t) => when(t.createdAt ?? t.created_at) },
    { num: true, value: (t) => String(t.active_keys ?? t.activeKeys ?? count(t.id ?? t.teamId)) },
  ], "No teams yet.");
  $("#team-ids").replaceChildren(...teams.map((t) => h("option", { value: t.id ?? t.teamId })));
}

function showSecret(secret, what) {
  $("#new-key").hidden = false;
  $("#new-key-value").value = secret;
  $("#copy-status").textContent = "";
  $("#new-key-value").focus();
  $("#new-key-value").select();
  setStatus(`${what}. Copy the key now: it is shown only once.`);
}

async function create(ev) {
  ev.preventDefault();
  const form = ev.target;
  try {
    const made = await api("POST", "/tokens", { teamId: form.teamId.value.trim(), name: form.name.value.trim() });
    showSecret(made.apiKey, `Key “${made.name}” created for team ${made.teamId}`);
    form.name.value = "";
    await loadKeys();
  } catch (e) {
    setStatus("Create key: " + (e.status === 404 ? "not available on this gateway" : e.message), true);
  }
}

let rotating = null;

function rotate(k) {
  rotating = k;
  $("#rotate-title").textContent = `Rotate key “${k.name}”`;
  $("#rotate-prefix").textContent = k.prefix || k.id;
  $("#rotate-error").textContent = "";
  $("#rotate-dialog").showModal();
}

// Rotation by id (POST /admin/keys/{id}/rotate): admins never hold the secret.
async function doRotate(ev) {
  if (ev.submitter?.value !== "rotate" || !rotating) return;
  ev.preventDefault();
  try {
    const made = await api("POST", `/admin/keys/${encodeURIComponent(rotating.id)}/rotate`, {});
    $("#rotate-dialog").close();
    showSecret(made.apiKey, `Key “${rotating.name}” rotated`);
    await loadKeys();
  } catch (e) {
    $("#rotate-error").textContent = e.status === 404 ? "This key is no longer active." : e.message;
  }
}

async function revoke(k) {
  if (!confirm(`Revoke key “${k.name}”? This cannot be undone.`)) return;
  try {
    await api("DELETE", `/admin/keys/${encodeURIComponent(k.id)}`);
    setStatus(`Key “${k.name}” revoked.`);
    await loadKeys();
  } catch (e) {
    setStatus("Revoke: " + e.message, true);
  }
}

function editLimits(k) {
  editing = k;
  const f = $("#limits-form");
  f.models.value = (k.allowedModels || []).join(", ");
  for (const name of ["rpm", "tpm", "concurrent", "budget_usd", "budget_period"]) f[name].value = k.limits?.[name] ?? "";
  $("#limits-title").textContent = `Limits of “${k.name}”`;
  $("#limits-error").textContent = "";
  $("#limits-dialog").showModal();
}

async function saveLimits(ev) {
  const f = ev.target;
  if (ev.submitter?.value !== "save" || !editing) return;
  ev.preventDefault();
  const models = f.models.value.split(",").map((s) => s.trim()).filter(Boolean);
  const limits = {};
  for (const name of ["rpm", "tpm", "concurrent", "budget_usd"]) if (f[name].value !== "") limits[name] = Number(f[name].value);
  if (f.budget_period.value) limits.budget_period = f.budget_period.value;
  try {
    const saved = normKey(await api("PATCH", `/admin/keys/${encodeURIComponent(editing.id)}`, { allowedModels: models.length ? models : null, limits }));
    $("#limits-dialog").close();
    // Show what the gateway stored (the key list may not carry limits).
    keys = keys.map((k) => (k.id === saved.id ? { ...k, allowedModels: saved.allowedModels, limits: saved.limits } : k));
    renderKeys();
    setStatus(`Limits of “${editing.name}” saved.`);
  } catch (e) {
    $("#limits-error").textContent = e.status === 404 || e.status === 405 ? "Setting limits is not available on this gateway." : e.message;
  }
}

async function copy() {
  const input = $("#new-key-value");
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand("copy");
  }
  $("#copy-status").textContent = "Copied to the clipboard.";
}

export function initKeys() {
  $("#create-key").addEventListener("submit", create);
  $("#copy-key").addEventListener("click", copy);
  $("#limits-form").addEventListener("submit", saveLimits);
  $("#rotate-form").addEventListener("submit", doRotate);
}
