-- wrk script: POST $BENCH_BODY with $BENCH_HEADERS ("Name: value" lines); print the
-- summary and wrk's own latency histogram as one JSON line (read by bench/loadgen.py).
-- With $BENCH_UNIQUE set, every request's body differs: "@N@" in the body becomes
-- $BENCH_UNIQUE + a counter (cache misses on a gateway with its cache on).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

local unique = os.getenv("BENCH_UNIQUE")
if unique and unique ~= "" then
  local n = 0
  local template = wrk.body
  function request()
    n = n + 1
    return wrk.format(nil, nil, nil, (string.gsub(template, "@N@", unique .. n)))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
