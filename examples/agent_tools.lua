-- An agent with native tool calls: a calculator and a program (ls, through
-- agent.tools.exec, with a timeout and an output cap the model is told
-- about). Both calls of a turn run at once, each in its own task; the loop
-- goes on until the model answers without a tool call.
--
--   sluice examples/agent_tools.lua [--model M] [--question Q]
local agent = require "sluice.agent"
local mock = require "sluice.mock"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local env = mock.setup(arg, {
  about = "An agent with native tool calls: a calculator and a directory listing.",
  flags = { { "question", "Q", "what to ask (default: 17 * 23, and what is in /)" } },
  mock = { replies = here .. "/data/agent_replies.json" },
})

-- Arithmetic only: digits, + - * / ^ % ( ) and spaces; evaluated by Lua.
local calculator = {
  name = "calculator", description = "Evaluates an arithmetic expression.",
  parameters = { type = "object", properties = { expression = { type = "string" } }, required = { "expression" } },
  run = function(args)
    local e = args.expression
    if type(e) ~= "string" or not e:match("^[%d%s%.%+%-%*/%^%%()]+$") then
      error("only arithmetic: digits and + - * / ^ % ( )", 0)
    end
    local f = assert(load("return " .. e, "expression", "t", {}))
    return tostring(f())
  end,
}
local list_dir = agent.tools.exec { name = "list_dir", description = "Lists a directory (ls -1).",
                                    argv_prefix = { "ls", "-1" }, timeout = 5, max_output = 400 }

local question = env.options.question or "What is 17 * 23? And what is in the directory / ? Use the tools."
local r = agent.run {
  client = env.client, model = env.model, tools = { calculator, list_dir }, max_turns = 5,
  messages = { { role = "user", content = question } },
  on_event = function(ev)
    if ev.type == "tool_start" then print(("-> %s %s"):format(ev.name, ev.arguments))
    elseif ev.type == "tool_end" then print(("<- %s: %s"):format(ev.name, (ev.result:gsub("\n", " | "):sub(1, 60))))
    elseif ev.type == "content" then io.write(ev.text) io.stdout:flush() end
  end,
}
print(("\n\n%d turns, %d tool calls, %s"):format(r.turns, #r.tool_calls,
      r.stop_reason and ("stopped by " .. r.stop_reason) or "the model answered"))
env.finish()
