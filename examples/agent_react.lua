-- The text protocol (ReAct) for models without native tool calling: the model
-- writes Thought / Action / Action Input, and sluice cuts its stream at
-- "Observation:" -- the upstream is closed on the spot, so the observation a
-- model would make up is never generated; the loop supplies the real one.
--
--   sluice examples/agent_react.lua [--model M] [--question Q]
local agent = require "sluice.agent"
local mock = require "sluice.mock"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local env = mock.setup(arg, {
  about = "ReAct with the Observation: stop: the made-up observation is never generated.",
  flags = { { "question", "Q", "what to ask (default: what is 2 ^ 10)" } },
  mock = { replies = here .. "/data/agent_replies.json" },
})

local calculator = {
  name = "calculator", description = "Evaluates an arithmetic expression.",
  parameters = { type = "object", properties = { expression = { type = "string" } }, required = { "expression" } },
  run = function(args)
    local e = tostring(args.expression)
    if not e:match("^[%d%s%.%+%-%*/%^%%()]+$") then error("only arithmetic", 0) end
    local v = assert(load("return " .. e, "expression", "t", {}))()
    return math.tointeger(v) and tostring(math.tointeger(v)) or tostring(v)
  end,
}

local id = env.request_id("agent_react")
local r = agent.react {
  client = env.client, model = env.model, tools = { calculator }, max_turns = 5,
  messages = { { role = "user", content = env.options.question or "What is 2 ^ 10?" } },
  body = { user = id },
  on_event = function(ev)
    if ev.type == "content" then io.write(ev.text) io.stdout:flush()
    elseif ev.type == "turn_end" and ev.stop_reason then print(("\n[turn %d cut at %s]"):format(ev.turn, ev.stop_reason))
    elseif ev.type == "tool_end" then print(("Observation (real): %s"):format(ev.result)) end
  end,
}
print(("\nFinal Answer: %s (%d turns)"):format(tostring(r.text), r.turns))
if env.server then
  -- the mock's record of the turn that was cut, and the whole reply it had
  -- scripted for it (asked again, not streamed): what the server was spared
  local first = env.server.stats().requests[1]
  local whole = require("sluice").fetch { url = env.server.url .. "/chat/completions",
    json = { model = env.model, stream = false, messages = r.messages[1] and { r.messages[1], r.messages[2] } } }
  local total = whole and require("cjson").decode(whole.body).usage.completion_tokens
  if first and first.rule_name == "react" and total then
    print(("the server generated %d of the turn's %d tokens and saw the disconnect at once: %d tokens spared, "
           .. "the made-up observation among them"):format(first.tokens_sent, total, total - first.tokens_sent))
  end
end
env.finish()
