-- wrk script for ferry's bench/: prints one JSON summary line (exact percentiles from wrk's
-- histogram) and, when WRK_PATHS names a file of request paths, walks them round-robin
-- (each thread from its own offset). Without WRK_PATHS the request is static (cheapest).
local nthreads = 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

local list = os.getenv("WRK_PATHS")
if list and list ~= "" then
  local paths = {}
  for line in io.lines(list) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  local i = 0
  local started = false
  request = function()
    if not started then
      i = ((tid or 0) * 7919) % #paths
      started = true
    end
    i = i + 1
    if i > #paths then i = 1 end
    return wrk.format(nil, paths[i])
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
