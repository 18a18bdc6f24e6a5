-- Slow-consumer worker: URL TOKENS. Streams TOKENS chunks (~170 bytes each)
-- as fast as the mock sends into a reader that pauses 1 ms every 2,000
-- events. Prints MB streamed and peak RSS.
local sluice = require "sluice"
local url, n = arg[1], tonumber(arg[2])
local s = sluice.stream { url = url .. "/v1/chat/completions",
  json = { model = "m", stream = true, max_tokens = n, messages = { { role = "user", content = "hi" } },
           mock = { tokens_per_sec = 0 } } }
local t0, events = sluice.now(), 0
for _ in s:events() do
  events = events + 1
  if events % 2000 == 0 then sluice.sleep(0.001) end
end
local f = io.open("/proc/self/status")
local rss = tonumber(f:read("a"):match("VmHWM:%s*(%d+)")) / 1024
f:close()
print(require("cjson").encode { mb = s:metrics().bytes / 1e6, events = events,
                                seconds = sluice.now() - t0, peak_rss_mb = rss })
