-- Stop after 200 tokens -- the classic. With the OpenAI Python SDK people
-- count chunks and `break`, and the connection stays open: the server keeps
-- generating into socket buffers until max_tokens. Here the budget is a stop
-- policy, and stopping closes the connection, so the server stops at once.
--
--   sluice examples/stop_after_tokens.lua                 (starts a sluice-mock)
--   OPENAI_BASE_URL=http://host:8000/v1 sluice examples/stop_after_tokens.lua --model M
local policy = require "sluice.policy"
local mock = require "sluice.mock"

local env = mock.setup(arg, {
  about = "Stop after 200 tokens; the server stops generating at once.",
})
local id = env.request_id("stop_after_tokens")

local chat = env.client:chat({
  model = env.model,
  messages = { { role = "user", content = "Tell me a long story about a water mill." } },
  max_tokens = 1000,
}, {
  stop_when = policy.max_tokens(200),
  -- X-Mock sets a sluice-mock's pace; any other server ignores it
  headers = { ["X-Request-Id"] = id, ["X-Mock"] = '{"tokens_per_sec": 200}' },
})

for piece in chat:deltas() do
  io.write(piece)
  io.stdout:flush()
end
print("\n")

env.report(id, chat:result())
env.finish()
