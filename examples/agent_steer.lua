-- Interrupt and steer: when the answer drifts off topic, the turn is
-- interrupted -- its stream closed upstream at once -- the partial answer is
-- kept, a note is added ("Stay on topic"), and the loop asks again.
--
--   sluice examples/agent_steer.lua [--model M] [--topic T]
local agent = require "sluice.agent"
local mock = require "sluice.mock"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local env = mock.setup(arg, {
  about = "Interrupt a turn that drifts off topic and redirect it.",
  flags = { { "topic", "T", "what to talk about (default: how a water mill works)" } },
  mock = { replies = here .. "/data/agent_replies.json" },
})

-- Off topic: any of these words in the answer.
local OFF = { "bread", "bakery", "bees", "Lyon" }
local seen = ""
local r = agent.run {
  client = env.client, model = env.model, max_turns = 3,
  messages = { { role = "user", content = "Explain " .. (env.options.topic or "how a water mill works") .. "." } },
  on_event = function(ev)
    if ev.type == "turn_start" then seen = "" print(("-- turn %d"):format(ev.turn))
    elseif ev.type == "content" then
      io.write(ev.text) io.stdout:flush()
      seen = seen .. ev.text
      for _, w in ipairs(OFF) do
        if seen:find(w, 1, true) then
          print(("\n[off topic at %q: interrupted]"):format(w))
          return { interrupt = "Stay on topic: only the mill, please." }
        end
      end
    end
  end,
}
print(("\n\n%d turns; the final answer: %s"):format(r.turns, tostring(r.text)))
env.finish()
