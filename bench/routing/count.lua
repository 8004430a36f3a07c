-- wrk script: POST $BENCH_BODY_FILE with a bearer key from $BENCH_KEY, and count statuses and
-- the `x-atalaya-deployment` that served each request.
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench")

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  served = {}
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local deployment = headers["x-atalaya-deployment"] or "-"
  served[deployment] = (served[deployment] or 0) + 1
end

-- One parseable line: latencies in microseconds, then status=count and served:deployment=count.
function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local line = string.format("BENCH rps=%.1f p50=%d p99=%d requests=%d errors=%d",
    summary.requests / seconds, latency:percentile(50), latency:percentile(99), summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout)
  local all_statuses, all_served = {}, {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("statuses")) do all_statuses[k] = (all_statuses[k] or 0) + v end
    for k, v in pairs(thread:get("served")) do all_served[k] = (all_served[k] or 0) + v end
  end
  for k, v in pairs(all_statuses) do line = line .. string.format(" status%s=%d", k, v) end
  for k, v in pairs(all_served) do line = line .. string.format(" served:%s=%d", k, v) end
  io.write(line .. "\n")
end
