-- wrk script for bench/fairuse-sim.py: GETs WRK_PATH with Accept WRK_ACCEPT and
-- Authorization WRK_AUTH, each request from the next of WRK_ADDRS client addresses per thread
-- (X-Forwarded-For 10.<100+thread>.x.y, at most 65,536), and prints one JSON summary line like
-- wrk-json.lua.
local nthreads = 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

local path = os.getenv("WRK_PATH") or "/v2/"
local auth = os.getenv("WRK_AUTH") or ""
local accept = os.getenv("WRK_ACCEPT") or "*/*"
local addrs = tonumber(os.getenv("WRK_ADDRS") or "65536")
local n = 0

request = function()
  n = n + 1
  local a = n % addrs
  local headers = {
    ["Accept"] = accept,
    ["Authorization"] = auth,
    ["User-Agent"] = "ferry-bench-wrk",
    ["X-Forwarded-For"] = string.format("10.%d.%d.%d", 100 + (tid or 0), math.floor(a / 256), a % 256),
  }
  return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
