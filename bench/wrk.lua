-- Closed-loop PATCH /orders/{id}/status load for wrk (driven by bench/wrk.py).
-- The orders file holds "T <token>" lines, then "O <token number> <order id>" lines.
-- mode "fresh": each request the next unused pending order, moved to accepted at version 1, so
--   every request is an applied change (thread k takes orders k, k + threads, ...).
-- mode "hot": every request one of the (few) orders, the next status of the walk with the
--   version this thread last saw for it: under contention most are stale (409).
-- done() prints one line "WRK_JSON {...}": latency percentiles in microseconds, counts per status.

local threads = {}
local WALK = { pending = "accepted", accepted = "preparing", preparing = "ready", ready = "completed" }

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads - 1)
end

local tokens, orders, owner = {}, {}, {}
local known = {}
local next_index, statuses = 0, {}

function init(args)
  mode, path, thread_count = args[1], args[2], tonumber(args[3])
  for line in io.lines(path) do
    local kind, a, b = line:match("^(%S+) (%S+) ?(%S*)$")
    if kind == "T" then
      table.insert(tokens, a)
    else
      table.insert(orders, b)
      owner[b] = tonumber(a)
    end
  end
  next_index = thread_number
  status_counts = statuses
end

local function patch(order, status, version)
  local headers = {
    ["Authorization"] = "Bearer " .. tokens[owner[order]],
    ["Content-Type"] = "application/json",
  }
  local body = string.format('{"status":"%s","expected_version":%d}', status, version)
  return wrk.format("PATCH", "/orders/" .. order .. "/status", headers, body)
end

function request()
  if mode == "fresh" then
    local order = orders[(next_index % #orders) + 1]
    next_index = next_index + thread_count
    return patch(order, "accepted", 1)
  end
  local order = orders[math.random(#orders)]
  local state = known[order] or { status = "pending", version = 1 }
  return patch(order, WALK[state.status] or "completed", state.version)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if mode == "hot" and body then
    local order = body:match('"order_id":"([%x-]+)"') or body:match("/orders/([%x-]+)/status")
    local version = body:match('"version":(%d+)') or body:match('"current_version":(%d+)')
    local current = body:match('"status":"(%a+)"') or body:match('"current_status":"(%a+)"')
    if order and version and current then
      known[order] = { status = current, version = tonumber(version) }
    end
  end
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("status_counts") or {}) do
      counts[#counts + 1] = string.format("[%d,%d]", status, count)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d},"statuses":[%s]}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(counts, ",")))
end
