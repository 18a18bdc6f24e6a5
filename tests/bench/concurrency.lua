-- Concurrency worker: URL N CHUNKS RATE. N simultaneous streams of CHUNKS
-- chunks at RATE chunks/s each, one task per stream. Prints wall time, client
-- CPU time, peak RSS and how many completed.
local sluice = require "sluice"
local url, n, chunks, rate = arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4])
local body = { model = "m", stream = true, max_tokens = chunks,
               messages = { { role = "user", content = "hi" } }, mock = { tokens_per_sec = rate } }
local completed, failed, first_err = 0, 0, nil
local t0, c0 = sluice.now(), os.clock()
local tasks = {}
for i = 1, n do
  tasks[i] = sluice.spawn(function()
    local s = sluice.stream { url = url .. "/v1/chat/completions", json = body }
    local events = 0
    for _ in s:events() do events = events + 1 end
    return events
  end)
end
for i = 1, n do
  local ok, ev = tasks[i]:join()
  if ok and ev == chunks + 3 then completed = completed + 1
  else failed = failed + 1; first_err = first_err or tostring(ev) end
end
local wall, cpu = sluice.now() - t0, os.clock() - c0
local f = io.open("/proc/self/status")
local rss = tonumber(f:read("a"):match("VmHWM:%s*(%d+)")) / 1024
f:close()
local note = first_err and ("%d failed, first: %s"):format(failed, first_err) or nil
print(require("cjson").encode { wall = wall, cpu = cpu, peak_rss_mb = rss, completed = completed, note = note })
