// Health tab: each provider's availability (GET /health) with its last hour from usage rows.
import { $, api, fillTable, fmt, h, setStatus } from "./lib.js";

export async function loadHealth() {
  try {
    const now = Date.now() / 1000;
    const [health, usage] = await Promise.all([
      api("GET", "/health"),
      api("GET", `/admin/timeseries?bucket=hour&top=100&from=${(now - 3600).toFixed(0)}&to=${now.toFixed(0)}`),
    ]);
    const stats = Object.fromEntries((usage.top.provider || []).map((p) => [p.name, p]));
    $("#health-version").textContent = `gateway ${health.version} · ${health.status}`;
    const rows = Object.entries(health.providers || {}).map(([name, p]) => ({ name, ...p, s: stats[name] }));
    fillTable($("#health-table tbody"), rows, [
      { value: (r) => r.name },
      { value: (r) => r.kind },
      { value: (r) => h("span", { class: r.available ? "good" : "bad" }, r.available ? "yes" : r.configured ? "no" : "no (not configured)") },
      { num: true, value: (r) => fmt.int(r.s ? r.s.requests : 0) },
      { num: true, value: (r) => (r.s ? fmt.pct(r.s.errors / r.s.requests) : "—") },
      { num: true, value: (r) => fmt.ms(r.s?.p50_ms) },
      { num: true, value: (r) => fmt.ms(r.s?.p95_ms) },
    ], "No providers configured.");
    setStatus(`Health updated ${new Date().toLocaleTimeString()}.`);
  } catch (e) {
    setStatus("Health: " + e.message, true);
  }
}
