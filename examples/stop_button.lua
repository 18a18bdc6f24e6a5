-- A stop button: the answer streams to the terminal; press Enter and the
-- generation stops for real -- the connection closes and the server aborts
-- the request. Reading stdin and streaming run as two tasks on one loop.
--
--   sluice examples/stop_button.lua [--model M]     (press Enter to stop)
local sluice = require "sluice"
local mock = require "sluice.mock"

local env = mock.setup(arg, {
  about = "Stream an answer to the terminal; Enter (or the end of stdin) stops it for real.",
})
local id = env.request_id("stop_button")
local max_tokens = 2000

local chat = env.client:chat({
  model = env.model,
  messages = { { role = "user", content = "Write a very long essay about rivers." } },
  max_tokens = max_tokens,
}, {
  -- X-Mock sets a sluice-mock's pace; any other server ignores it
  headers = { ["X-Request-Id"] = id, ["X-Mock"] = '{"tokens_per_sec": 25}' },
})

io.stderr:write("(press Enter to stop)\n")
local button = sluice.spawn(function()
  sluice.read_line()  -- a line, or nil at end of input: either way, stop
  chat:cancel("stop button")
end)

for piece in chat:deltas() do
  io.write(piece)
  io.stdout:flush()
end
print("\n")
button:cancel("the answer ended on its own")  -- nobody needs the button now

local res = chat:result()
local rec = env.report(id, res)  -- against a sluice-mock: what the server saw
if res.stop_reason and rec == nil then  -- another server: what it could at most have been spared
  print(("the server was spared up to %d of max_tokens %d"):format(max_tokens - res.metrics.tokens, max_tokens))
end
env.finish()
