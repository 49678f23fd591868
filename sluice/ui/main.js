// Entry point: sign-in with the admin key, tabs (WAI-ARIA tablist), and each tab's loader.
import { $, api, session, setStatus, setUnauthorizedHandler } from "./lib.js";
import { initUsage, loadUsage } from "./usage.js";
import { initRequests, loadRequests, showRequests } from "./requests.js";
import { initKeys, loadKeys } from "./keys.js";
import { loadHealth } from "./health.js";

const LOADERS = { usage: loadUsage, requests: loadRequests, keys: loadKeys, health: loadHealth };
const tabs = () => [...document.querySelectorAll('[role="tab"]')];

function select(tab, focus = false) {
  for (const t of tabs()) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (focus) tab.focus();
  const name = tab.id.replace("tab-", "");
  showRequests(name === "requests");
  LOADERS[name]();
}

function initTabs() {
  for (const t of tabs()) {
    t.addEventListener("click", () => select(t));
    t.addEventListener("keydown", (ev) => {
      const all = tabs();
      const i = all.indexOf(t);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: all.length - 1 }[ev.key];
      if (next === undefined) return;
      ev.preventDefault();
      select(all[(next + all.length) % all.length], true);
    });
  }
}

function signedIn(on) {
  $("#login").hidden = on;
  $("#tabs").hidden = !on;
  $("#signout").hidden = !on;
  if (on) {
    select(tabs().find((t) => t.getAttribute("aria-selected") === "true") || tabs()[0]);
  } else {
    showRequests(false);
    for (const t of tabs()) document.getElementById(t.getAttribute("aria-controls")).hidden = true;
    $("#admin-key").focus();
  }
}

async function login(ev) {
  ev.preventDefault();
  const input = $("#admin-key");
  const key = input.value.trim();
  $("#login-error").textContent = "";
  try {
    await api("GET", "/admin/requests?limit=1", undefined, key);
  } catch (e) {
    // The key is checked before storage is read: only a 401 (or no answer) means "not signed in".
    if (e.status === 401 || e.status === 0) {
      $("#login-error").textContent = e.status === 401 ? "That is not the admin key." : "Sign-in failed: " + e.message;
      input.focus();
      return;
    }
  }
  session.set(key);
  input.value = "";
  setStatus("Signed in.");
  signedIn(true);
}

function logout() {
  session.clear();
  setStatus("Signed out.");
  signedIn(false);
}

document.addEventListener("DOMContentLoaded", () => {
  initTabs();
  initUsage();
  initRequests();
  initKeys();
  $("#login-form").addEventListener("submit", login);
  $("#signout").addEventListener("click", logout);
  setUnauthorizedHandler(() => {
    session.clear();
    signedIn(false);
    setStatus("The admin key was refused; sign in again.", true);
  });
  signedIn(Boolean(session.get()));
});
