-- Deadlines on a slow server: give up when the first token takes too long
-- (ttft), or when a stream that started goes quiet (idle). Time policies fire
-- while the server sends nothing at all -- keep-alive `: ping` comments do not
-- count as progress.
--
--   sluice examples/deadlines.lua [--ttft S] [--idle S] [--model M]
local cjson = require "cjson"
local policy = require "sluice.policy"
local mock = require "sluice.mock"

local env = mock.setup(arg, {
  about = "Time-to-first-token and idle deadlines on a slow server.",
  flags = {
    { "ttft", "S", "give up when the first token takes longer than S seconds\n" ..
                   "(default 0.5 against a sluice-mock, else 10)", number = true },
    { "idle", "S", "give up when the stream is silent for S seconds\n" ..
                   "(default 0.5 against a sluice-mock, else 5)", number = true },
  },
})
local ttft = env.options.ttft or (env.is_mock and 0.5 or 10)
local idle = env.options.idle or (env.is_mock and 0.5 or 5)

-- behaviour asks a sluice-mock to be slow; any other server ignores it
local function run(name, stop_when, behaviour)
  local id = env.request_id(name)
  local chat = env.client:chat({
    model = env.model,
    messages = { { role = "user", content = "Describe a slow river." } },
    max_tokens = 500,
  }, { stop_when = stop_when, headers = { ["X-Request-Id"] = id, ["X-Mock"] = cjson.encode(behaviour) } })
  local n = 0
  for _ in chat:deltas() do n = n + 1 end
  local res = chat:result()
  local m = res.metrics
  print(("%s: %d tokens in %.2f s"):format(name, n, (m.ended or m.started) - m.started))
  env.report(id, res)
  print()
end

-- a server that takes 3 s to start answering
run("deadlines-ttft", policy.any { policy.ttft(ttft), policy.deadline(60) },
    { ttft = 3, tokens_per_sec = 100 })
-- a server that stalls after 20 tokens, sending only pings
run("deadlines-idle", policy.any { policy.idle(idle), policy.deadline(60) },
    { stall_after = 20, ping_interval = 0.1, tokens_per_sec = 100 })
env.finish()
