-- A repetition guard: cut a stream that has fallen into a loop -- the same
-- few words over and over, which small models do under greedy decoding -- and
-- free the server at once instead of paying for the rest of max_tokens.
--
--   sluice examples/repetition_guard.lua [--model M]
local cjson = require "cjson"
local policy = require "sluice.policy"
local mock = require "sluice.mock"

local env = mock.setup(arg, {
  about = "Cut a stream that has fallen into a loop.",
})
local id = env.request_id("repetition_guard")

-- a sluice-mock is told to start looping; any other server ignores the header
local looping = "Let me work through this carefully. " ..
                ("I need to check the first step again. "):rep(100)

local chat = env.client:chat({
  model = env.model,
  messages = { { role = "user", content = "Solve: what is 17 * 23? Think step by step." } },
  max_tokens = 1500,
  temperature = 0,
}, {
  -- the same n-gram of up to 20 words, 3 times in a row; or 1500 tokens at most
  stop_when = policy.any { policy.repetition { window = 20, times = 3 }, policy.max_tokens(1500) },
  headers = { ["X-Request-Id"] = id, ["X-Mock"] = cjson.encode { text = looping, tokens_per_sec = 200 } },
})

for piece in chat:deltas() do
  io.write(piece)
  io.stdout:flush()
end
print("\n")

env.report(id, chat:result())
env.finish()
