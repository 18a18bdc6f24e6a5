-- Throughput worker: URL MODE N. MODE "core" reads events touching ev.data;
-- "deltas" reads text pieces through sluice.openai. Prints {rate=chunks/s}.
local sluice = require "sluice"
local url, mode, n = arg[1], arg[2], tonumber(arg[3])
local body = { model = "m", stream = true, max_tokens = n,
               messages = { { role = "user", content = "hi" } }, mock = { tokens_per_sec = 0 } }
local t0, count = sluice.now(), 0
if mode == "core" then
  local s = sluice.stream { url = url .. "/v1/chat/completions", json = body }
  local bytes = 0
  for ev in s:events() do
    bytes = bytes + #ev.data
    count = count + 1
  end
else
  local openai = require "sluice.openai"
  local client = openai.client { base_url = url .. "/v1", api_key = "x" }
  for _ in client:chat(body):deltas() do count = count + 1 end
end
local dt = sluice.now() - t0
print(('{"rate":%.1f,"chunks":%d,"seconds":%.6f}'):format(count / dt, count, dt))
