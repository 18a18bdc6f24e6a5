-- Agent worker: URL MODE TURNS. MODE "agent" runs sluice.agent for TURNS
-- turns against a mock that answers at once with two tool calls (two instant
-- tools); "floor" sends the same requests with client:chat and appends the
-- same messages by hand, without the loop (no tasks, no events, no
-- transcript). The difference of their CPU is the loop's own. Prints
-- {cpu, turns, wall}.
local sluice = require "sluice"
local openai = require "sluice.openai"
local agent = require "sluice.agent"
local url, mode, turns = arg[1], arg[2], tonumber(arg[3])
local client = openai.client { base_url = url .. "/v1", api_key = "" }
local reply = { mock = { tokens_per_sec = 0, tool_calls = {
  { name = "first", arguments = '{"x": 1}' }, { name = "second", arguments = '{"y": "two"}' } } } }
local function tool(name)
  return { name = name, parameters = { type = "object", properties = {} }, run = function() return name .. " ok" end }
end
local messages = { { role = "user", content = "go" } }
local c0, t0 = os.clock(), sluice.now()
if mode == "agent" then
  local r = agent.run { client = client, model = "m", tools = { tool("first"), tool("second") }, max_turns = turns,
                        messages = messages, body = reply }
  assert(r.turns == turns and #r.tool_calls == 2 * turns,
         ("every turn called both tools: %d turns, %s, %s"):format(r.turns, tostring(r.stop_reason), tostring(r.error)))
else
  local tools_spec = require("sluice.agent.tools").spec { tool("first"), tool("second") }
  for _ = 1, turns do
    local body = { model = "m", messages = messages, tools = tools_spec, mock = reply.mock }
    local res = client:chat(body, { usage = true }):result()
    messages[#messages + 1] = { role = "assistant", content = require("cjson").null, tool_calls = res.tool_calls }
    for _, call in ipairs(res.tool_calls) do
      messages[#messages + 1] = { role = "tool", tool_call_id = call.id, content = call["function"].name .. " ok" }
    end
  end
end
print(require("cjson").encode { cpu = os.clock() - c0, wall = sluice.now() - t0, turns = turns })
