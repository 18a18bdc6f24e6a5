-- The agent examples run as a user runs them: with no arguments, against the
-- sluice-mock each starts with the replies of examples/data/agent_replies.json;
-- --help and an unknown flag behave as in every example.
local T = require "testlib"

local SLUICE = os.getenv("SLUICE_BIN")
local here = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
local EXAMPLES = here .. "/../../examples/"

local function run(name, args)
  local p = assert(io.popen(("env -u OPENAI_BASE_URL %q %q %s 2>&1"):format(SLUICE, EXAMPLES .. name, args or "")))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

T.case("agent_tools: two tools at once, then the answer", function()
  local out, code = run("agent_tools.lua")
  T.eq(code, 0, "status: " .. out)
  T.contains(out, "-> calculator", "the calculator ran")
  T.contains(out, "-> list_dir", "the program ran")
  T.contains(out, "<- calculator: 391", "with its result")
  T.contains(out, "2 turns, 2 tool calls, the model answered", "the loop ended on the answer")
end)

T.case("agent_react: cut at Observation:, the real one supplied, tokens spared", function()
  local out, code = run("agent_react.lua")
  T.eq(code, 0, "status: " .. out)
  T.contains(out, '[turn 1 cut at stop_on:"Observation:"]', "the stop")
  T.ok(not out:find("made up", 1, true), "the made-up observation never arrived")
  T.contains(out, "Observation (real): 1024", "the real observation")
  T.contains(out, "Final Answer: 1024 (2 turns)", "the answer")
  local spared = tonumber(out:match("(%d+) tokens spared"))
  T.ok(spared and spared > 20, "tokens spared: " .. tostring(spared))
end)

T.case("agent_steer: interrupted off topic, redirected", function()
  local out, code = run("agent_steer.lua")
  T.eq(code, 0, "status: " .. out)
  T.contains(out, "[off topic at", "interrupted")
  T.contains(out, "-- turn 2", "asked again")
  T.contains(out, "the final answer: Back to the mill", "back on topic")
  T.ok(not out:find("bees", 1, true), "what came after the interrupt was never generated into the answer")
end)

T.case("--help and an unknown flag", function()
  for _, name in ipairs { "agent_tools.lua", "agent_react.lua", "agent_steer.lua" } do
    local out, code = run(name, "--help")
    T.eq(code, 0, name .. " --help")
    T.contains(out, "usage: ", name .. " usage")
    out, code = run(name, "--frobnicate")
    T.eq(code, 2, name .. " --frobnicate")
    T.contains(out, "unknown option '--frobnicate'", name)
  end
end)

T.done()
