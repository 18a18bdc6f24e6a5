-- sluice.agent against sluice-mock: tool calls assembled from fragments, run
-- at once, errors and timeouts said to the model, early tools cancelled with
-- their turn (their children killed and reaped), the ReAct stop at
-- "Observation:", interrupt and steer, max_turns, and a transcript that is
-- whole after kill -9. Replies come from the `mock` options a request body
-- carries (body = { mock = ... }: the same reply every turn).
local sluice = require "sluice"
local cjson = require "cjson"
local agent = require "sluice.agent"
local openai = require "sluice.openai"
local chunk = require "sluice.openai.chunk"
local T = require "testlib"

local BASE = T.url .. "/v1"
local SLUICE = os.getenv("SLUICE_BIN")

local function client(headers)
  return openai.client { base_url = BASE, api_key = "", headers = headers }
end

local tmp = T.tmpname

local read, gone = T.read_file, T.gone


local ADD = {
  name = "add", description = "Adds two numbers.",
  parameters = { type = "object", properties = { a = { type = "number" }, b = { type = "number" } },
                 required = { "a", "b" } },
  run = function(a) return a.a + a.b end,
}

local function reply_tool_calls(calls, extra)
  local m = { tokens_per_sec = 0, tool_calls = calls }
  for k, v in pairs(extra or {}) do m[k] = v end
  return { mock = m }
end

T.case("tool-call arguments assembled across every split", function()
  local args = '{"a": 12, "b": "x\\"y", "c": [1, 2, {"d": null}]}'
  for cut = 0, #args do
    for cut2 = cut, #args, 7 do
      local st = { calls = {} }
      local pieces = { args:sub(1, cut), args:sub(cut + 1, cut2), args:sub(cut2 + 1) }
      local first = true
      for _, p in ipairs(pieces) do
        local frag = { index = 0, ["function"] = { arguments = p } }
        if first then frag.id, frag["function"].name, first = "call_1", "f", false end
        chunk.add_tools(st, { frag }, function() end)
      end
      chunk.flush_tools(st, nil, function() end)
      T.eq(st.calls[1]["function"].arguments, args, "split at " .. cut .. "," .. cut2)
    end
  end
  -- and through the mock, which splits the arguments into fragments of 5 bytes
  local r = agent.run { client = client(), model = "m", tools = { ADD }, max_turns = 1,
                        messages = { { role = "user", content = "add" } },
                        body = reply_tool_calls { { name = "add", arguments = '{"a": 20, "b": 22}' } } }
  T.eq(r.tool_calls[1].result, "42", "assembled, decoded (integers), run")
  T.eq(r.messages[3].role, "tool", "a tool message")
  T.eq(r.messages[3].content, "42", "with the result")
  T.eq(r.messages[3].tool_call_id, r.messages[2].tool_calls[1].id, "answering the call")
end)

T.case("parallel tool calls run at once, each in its own task", function()
  local spans = {}
  local function slow(name)
    return { name = name, parameters = { type = "object", properties = {} },
             run = function()
               local t0 = sluice.now()
               sluice.sleep(0.3)
               spans[name] = { t0, sluice.now() }
               return name .. " done"
             end }
  end
  local r = agent.run { client = client(), model = "m", tools = { slow("slow_a"), slow("slow_b") }, max_turns = 1,
                        messages = { { role = "user", content = "both" } },
                        body = reply_tool_calls { { name = "slow_a", arguments = "{}" },
                                                  { name = "slow_b", arguments = "{}" } } }
  T.eq(#r.tool_calls, 2, "two calls")
  local a, b = spans.slow_a, spans.slow_b
  T.ok(b[1] < a[2] and a[1] < b[2], "each started before the other ended: they ran at once")
  T.eq(r.messages[3].content, "slow_a done", "results in the calls' order")
  T.eq(r.messages[4].content, "slow_b done", "results in the calls' order")
end)

T.case("a tool that raises, times out or gets bad arguments is a tool message; the loop goes on", function()
  local boom = { name = "boom", run = function() error("kaput", 0) end }
  local sleepy = { name = "sleepy", run = function() sluice.sleep(10) return "late" end }
  local r = agent.run { client = client(), model = "m", tools = { ADD, boom, sleepy }, max_turns = 2, tool_timeout = 0.2,
                        messages = { { role = "user", content = "go" } },
                        body = reply_tool_calls { { name = "boom", arguments = "{}" },
                                                  { name = "sleepy", arguments = "{}" },
                                                  { name = "add", arguments = '{"a": 1' },
                                                  { name = "add", arguments = '{"a": 1}' },
                                                  { name = "nope", arguments = "{}" } } }
  T.eq(r.turns, 2, "the loop went on to its second turn")
  T.eq(r.stop_reason, "max_turns:2", "and ended on max_turns")
  local by = {}
  for i = 3, 7 do by[#by + 1] = r.messages[i].content end
  T.contains(by[1], "error: kaput", "a tool that raised")
  T.contains(by[2], "ran out of time", "a tool that timed out")
  T.contains(by[3], "not valid JSON", "arguments that are not JSON")
  T.contains(by[4], 'missing the required argument "b"', "a required argument missing")
  T.contains(by[5], 'no tool "nope"', "a tool that does not exist")
end)

T.case("an early tool starts while the turn streams; an interrupted turn cancels it and kills its child", function()
  local pidfile = tmp()
  local started_at, call_done_at
  local early = {
    name = "build", early = true, parameters = { type = "object", properties = { target = { type = "string" } },
                                                 required = { "target" } },
    run = function()
      started_at = sluice.now()
      local r = sluice.exec({ "sh", "-c", "echo $$ > " .. pidfile .. "; exec sleep 100" })
      return r and "built" or "failed"
    end,
  }
  local id = "early-" .. os.time()
  local r = agent.run {
    client = client { ["X-Request-Id"] = id }, model = "m", tools = { early }, max_turns = 1,
    messages = { { role = "user", content = "build it" } },
    -- the first call's arguments come complete early; a long second call keeps the turn streaming
    body = reply_tool_calls({ { name = "build", arguments = '{"target": "all"}' },
                              { name = "build", arguments = '{"target": "' .. string.rep("z", 300) .. '"}' } },
                            { tokens_per_sec = 20 }),
    on_event = function(ev)
      if ev.type == "tool_call" then call_done_at = sluice.now() end
      if ev.type == "tool_start" then
        -- wait for the child to exist, then interrupt the turn
        T.wait_until(function() return read(pidfile) end, 5)
      end
    end,
    stop_when = function(state)
      if read(pidfile) then return { stop = "changed my mind" } end
    end,
  }
  T.ok(started_at, "the early tool started")
  T.ok(not call_done_at or started_at <= call_done_at, "before the call was even complete in the stream")
  T.eq(r.stop_reason, "changed my mind", "stopped")
  local pid = read(pidfile):match("%d+")
  T.wait_until(function() return gone(pid) end, 3)
  T.ok(gone(pid), "the tool's child process is gone: killed and reaped, no zombie")
  T.wait_record(id, function(rec) return rec.client_closed end)
  os.remove(pidfile)
end)

T.case("ReAct: the stream is cut at Observation:, the made-up observation never generated", function()
  local id = "react-" .. os.time()
  local text = 'Thought: I should add them.\nAction: add\nAction Input: {"a": 2, "b": 3}\n' ..
               'Observation: 999 (made up)\nThought: and now a long made-up story follows ' ..
               string.rep("blah ", 40)
  local tr = tmp()
  local r = agent.react { client = client { ["X-Request-Id"] = id }, model = "m", tools = { ADD }, max_turns = 1,
                          transcript = tr, messages = { { role = "user", content = "What is 2 + 3?" } },
                          body = { mock = { text = text, tokens_per_sec = 50 } } }
  T.eq(#r.tool_calls, 1, "the action ran")
  T.eq(r.tool_calls[1].result, "5", "with the real result")
  T.contains(r.messages[1].content, "Action Input:", "the system prompt tells the format")
  local said = r.messages[3].content
  T.ok(not said:find("999", 1, true) and not said:find("Observation", 1, true), "no made-up observation: " .. said)
  T.eq(r.messages[4].content, "Observation: 5", "the real one, from the loop")
  for _, l in ipairs(agent.transcript.read(tr)) do
    local said = (l.text or "") .. (l.result or "")
    T.ok(not said:find("999", 1, true) and not said:find("made-up story", 1, true),
         "nothing after it in the transcript: " .. said)
  end
  local rec = T.wait_record(id, function(m) return m.client_closed end)
  T.ok(not rec.completed, "the mock did not finish the turn")
  local turn_tokens
  for _, l in ipairs(agent.transcript.read(tr)) do if l.type == "turn_end" then turn_tokens = l.tokens end end
  T.le(rec.tokens_sent - turn_tokens, 1, "at most one token after the stop sequence")
  os.remove(tr)
end)

T.case("interrupt and steer: the turn closed upstream, the next request carries the partial answer and the note", function()
  local id = "steer-" .. os.time()
  local tr = tmp()
  local seen = 0
  local r = agent.run {
    client = client { ["X-Request-Id"] = id }, model = "m", max_turns = 2, transcript = tr,
    messages = { { role = "user", content = "Tell me about rivers." } },
    body = { mock = { tokens_per_sec = 50, max_tokens = 30 } },
    on_event = function(ev)
      if ev.type == "content" and ev.turn == 1 then
        seen = seen + 1
        if seen == 5 then return { interrupt = "Stay on topic: rivers only." } end
      end
    end,
  }
  T.eq(r.turns, 2, "two turns")
  local requests = {}
  for _, l in ipairs(agent.transcript.read(tr)) do
    if l.type == "request" then requests[#requests + 1] = l end
  end
  local second = requests[2].messages
  T.eq(second[1].role, "assistant", "the partial answer, kept")
  T.ok(#second[1].content > 0, "with the text received")
  T.eq(second[2].role, "user", "then the note")
  T.eq(second[2].content, "Stay on topic: rivers only.", "as given")
  local recs = {}
  for _, rec in ipairs(T.stats().requests) do if rec.id == id then recs[#recs + 1] = rec end end
  T.eq(#recs, 2, "two requests")
  T.ok(recs[1].client_closed and not recs[1].completed, "the first closed upstream")
  T.ok(recs[2].completed, "the second ran to its end")
  os.remove(tr)
end)

T.case("max_turns ends a loop that never stops calling tools", function()
  local r = agent.run { client = client(), model = "m", tools = { ADD }, max_turns = 4,
                        messages = { { role = "user", content = "add forever" } },
                        body = reply_tool_calls { { name = "add", arguments = '{"a": 1, "b": 1}' } } }
  T.eq(r.turns, 4, "four turns")
  T.eq(r.stop_reason, "max_turns:4", "stop_reason")
  T.eq(#r.tool_calls, 4, "a call a turn")
end)

T.case("the run's token budget and deadline end it with their stop_reason", function()
  local r = agent.run { client = client(), model = "m", max_tokens = 12, messages = { { role = "user", content = "x" } },
                        body = { mock = { tokens_per_sec = 200, max_tokens = 100 } } }
  T.eq(r.stop_reason, "max_tokens:12", "token budget")
  local r2 = agent.run { client = client(), model = "m", deadline = 0.2, messages = { { role = "user", content = "x" } },
                         body = { mock = { tokens_per_sec = 20, max_tokens = 100 } } }
  T.eq(r2.stop_reason, "deadline:0.2s", "deadline")
end)

T.case("the transcript is valid JSONL after kill -9 mid-run", function()
  local tr = tmp()
  local script = tmp() .. ".lua"
  local f = assert(io.open(script, "w"))
  f:write(([[
    local sluice, agent, openai = require "sluice", require "sluice.agent", require "sluice.openai"
    local slow = { name = "slow", run = function() sluice.sleep(0.05) return string.rep("x", 2000) end }
    io.write(io.open("/proc/self/stat"):read("l"):match("^%%d+"), "\n") io.flush()
    agent.run { client = openai.client { base_url = %q, api_key = "" }, model = "m", tools = { slow },
                max_turns = 1000, transcript = %q, messages = { { role = "user", content = "go" } },
                body = { mock = { tokens_per_sec = 500, text = "some words to stream ",
                                  tool_calls = { { name = "slow", arguments = "{}" } } } } }
  ]]):format(BASE, tr))
  f:close()
  local p = assert(io.popen(("%q %q"):format(SLUICE, script)))
  local pid = p:read("l")
  T.wait_until(function() return #(read(tr) or "") >= 20000 end, 10, 0.02)
  os.execute("kill -9 " .. pid)
  p:close()
  local text = read(tr)
  T.ok(#text >= 20000, "it wrote while it ran")
  local lines, bad = 0, 0
  for line in text:gmatch("[^\n]*\n?") do
    if line ~= "" then
      lines = lines + 1
      local ok = pcall(cjson.decode, line)
      if not ok then bad = bad + 1 end
    end
  end
  T.ok(bad == 0 or (bad == 1 and not text:match("\n$")), "every line whole but possibly the last")
  T.ok(#agent.transcript.read(tr) >= lines - 1, "a reader gets every whole line")
  os.remove(tr)
  os.remove(script)
end)

T.case("misuse raises naming agent.run and the option", function()
  local ok, err = pcall(agent.run, { client = client(), messages = {}, max_turn = 3 })
  T.ok(not ok, "raised")
  T.contains(tostring(err), "agent.run: unknown option 'max_turn'", "the option")
  ok, err = pcall(agent.run, { client = client(), messages = {}, tools = { { name = "x" } } })
  T.contains(tostring(err), "option 'tools' [1].run must be a function", "a tool without run")
  ok, err = pcall(agent.tools.exec, { name = "sh", timout = 1 })
  T.contains(tostring(err), "agent.tools.exec: unknown option 'timout'", "a tool helper")
end)

T.case("agent.tools.exec and agent.tools.fetch: output capped, and the model is told", function()
  local echo = agent.tools.exec { name = "echo", argv_prefix = { "sh", "-c", 'printf "%s" "$0"' }, max_output = 10 }
  local out = echo.run({ args = { string.rep("y", 50) } })
  T.contains(out, "exit status 0", "the status")
  T.contains(out, "[truncated: ", "cut, and says so")
  local shell = agent.tools.exec { name = "sh", shell = true, timeout = 5 }
  T.contains(shell.run({ command = "echo hi; exit 3" }), "exit status 3\nhi", "a command line")
  local web = agent.tools.fetch { name = "web", base_url = T.url, max_output = 20 }
  local page = web.run({ path = "/v1/models" })
  T.contains(page, "status 200", "the status")
  T.contains(page, "[truncated: ", "capped")
end)

-- Conversations scripted by the mock's --replies rules (tests/lua/fixtures/replies.json).
local REPLIES = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or ".") .. "/fixtures/replies.json"

local function with_replies(fn)
  local server = require("sluice.mock").start { replies = REPLIES }
  local ok, err = pcall(fn, openai.client { base_url = server.url, api_key = "" }, server)
  server.stop()
  if not ok then error(err, 0) end
end

T.case("a conversation: a tool call, then an answer that uses the tool's result", function()
  with_replies(function(c, server)
    local r = agent.run { client = c, model = "m", tools = { ADD }, messages = { { role = "user", content = "add 2 and 3" } } }
    T.eq(r.stop_reason, nil, "the model answered by itself")
    T.eq(r.turns, 2, "two turns")
    T.eq(r.text, "The tool says 5, so the answer is 5.", "the answer uses the tool's result")
    T.eq(#r.tool_calls, 1, "one call")
    local rules = {}
    for _, rec in ipairs(server.stats().requests) do rules[#rules + 1] = rec.rule_name end
    T.eq(table.concat(rules, ","), "add,answer", "the conversation took the expected path")
  end)
end)

T.case("ReAct to the end: the real observation, then Final Answer", function()
  with_replies(function(c, server)
    local r = agent.react { client = c, model = "m", tools = { ADD }, messages = { { role = "user", content = "What is 2 + 3?" } } }
    T.eq(r.text, "5", "the final answer")
    T.eq(r.turns, 2, "two turns")
    T.eq(r.messages[4].content, "Observation: 5", "the loop's observation")
    local recs = server.stats().requests
    T.eq(recs[1].rule_name, "react", "first the action")
    T.ok(recs[1].client_closed and not recs[1].completed, "cut at Observation:")
    T.eq(recs[2].rule_name, "react-final", "then the answer")
  end)
end)

T.done()
