-- sluice-mock --replies: a scripted conversation driven with plain
-- sluice.stream and sluice.openai, the way an agent loop drives it: a tool
-- call assembled from fragments, the answer after a tool message that uses
-- its content, parallel calls, a ReAct reply stopped at its made-up
-- Observation (the mock's /stats shows the rest was never generated), a
-- drifting reply interrupted and redirected, and a turn that never ends.
-- Each case starts its own mock with tests/lua/fixtures/replies.json.
local sluice = require "sluice"
local cjson = require "cjson"
local openai = require "sluice.openai"
local policy = require "sluice.policy"
local mock = require "sluice.mock"
local T = require "testlib"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local REPLIES = here .. "fixtures/replies.json"

local function tool(name)
  return { type = "function", ["function"] = {
    name = name, description = "a test tool",
    parameters = { type = "object", properties = { a = { type = "number" }, b = { type = "number" } } },
  } }
end
local TOOLS = { tool "add", tool "slow_a", tool "slow_b" }

-- A mock with the replies file, stopped when the variable holding it goes
-- out of scope (whether the case passes or fails).
local function start()
  local server = mock.start { replies = REPLIES, quiet = true }
  return setmetatable(server, { __close = function() server.stop() end })
end

local next_id = T.request_id

-- One turn through sluice.openai: returns the finished chat's result, the
-- request id and the chat. opts: tools and mock (the body's), stop_when.
local function turn(server, messages, opts)
  opts = opts or {}
  local client = openai.client { base_url = server.url, api_key = "" }
  local id = next_id("turn")
  local chat = client:chat({ model = "mock-model", messages = messages, tools = opts.tools, mock = opts.mock },
                           { headers = { ["X-Request-Id"] = id }, stop_when = opts.stop_when })
  return chat:result(), id, chat
end

-- The server's record of id once the request is over.
local function record(server, id)
  local deadline = sluice.now() + 3
  repeat
    local rec = server.record(id)
    if rec and (rec.completed or rec.client_closed) then return rec end
    sluice.sleep(0.01)
  until sluice.now() > deadline
  error("no finished record of " .. id)
end

local sent_after = T.sent_after

local function copy(list, ...)
  local out = {}
  for _, m in ipairs(list) do out[#out + 1] = m end
  for _, m in ipairs { ... } do out[#out + 1] = m end
  return out
end

T.case("a tool call in fragments, then an answer built from the tool's result", function()
  local server <close> = start()
  local messages = { { role = "user", content = "Please add 2 and 3." } }

  -- the wire: the call's arguments come in several fragments
  local id = next_id("raw")
  local s = sluice.stream { url = server.url .. "/chat/completions",
                            json = { model = "mock-model", stream = true, messages = messages, tools = TOOLS },
                            headers = { ["X-Request-Id"] = id } }
  local name, fragments = nil, {}
  for ev in s:events() do
    if ev.data ~= "[DONE]" then
      local delta = cjson.decode(ev.data).choices[1].delta
      local call = delta.tool_calls and delta.tool_calls[1]
      if call then
        T.eq(call.index, 0, "one call")
        if call["function"].name then name = call["function"].name end
        if call["function"].arguments ~= "" then fragments[#fragments + 1] = call["function"].arguments end
      end
    end
  end
  T.eq(name, "add", "the tool called")
  T.ok(#fragments >= 3, "arguments in several fragments (" .. #fragments .. ")")
  T.eq(table.concat(fragments), '{"a": 2, "b": 3}', "the fragments join up")
  T.eq(record(server, id).rule_name, "add", "the rule that matched")

  -- the agent's way: assembled by sluice.openai, run, answered with a tool message
  local res, id1 = turn(server, messages, { tools = TOOLS })
  T.eq(res.finish_reason, "tool_calls", "finish_reason")
  T.eq(#res.tool_calls, 1, "one call")
  local call = res.tool_calls[1]
  T.eq(call["function"].name, "add", "name")
  local args = cjson.decode(call["function"].arguments)
  local sum = math.tointeger(args.a + args.b)
  local after = copy(messages,
    { role = "assistant", content = cjson.null, tool_calls = res.tool_calls },
    { role = "tool", tool_call_id = call.id, content = tostring(sum) })
  local res2, id2 = turn(server, after, { tools = TOOLS })
  T.eq(res2.text, "The tool says 5, so the answer is 5.", "the answer holds the tool's content")
  T.eq(res2.finish_reason, "stop", "finish_reason")
  T.eq(record(server, id1).rule_name, "add", "turn 1's rule")
  local rec2 = record(server, id2)
  T.eq(rec2.rule_name, "answer", "turn 2's rule")
  T.eq(rec2.rule, 3, "turn 2's rule index")
end)

T.case("two tool calls in one reply", function()
  local server <close> = start()
  local res, id = turn(server, { { role = "user", content = "Run the slow ones." } }, { tools = TOOLS })
  T.eq(#res.tool_calls, 2, "two calls")
  T.eq(res.tool_calls[1]["function"].name, "slow_a", "first")
  T.eq(res.tool_calls[2]["function"].name, "slow_b", "second")
  T.ok(res.tool_calls[1].id ~= res.tool_calls[2].id, "their own ids")
  T.eq(cjson.decode(res.tool_calls[2]["function"].arguments).seconds, 0.1, "the second's arguments")
  T.eq(record(server, id).rule_name, "parallel", "rule")
end)

T.case("ReAct: stopped at the made-up Observation, the rest never generated; then the final answer", function()
  local server <close> = start()
  local messages = {
    { role = "system", content = "Use the tools. Reply with Thought:, Action:, Action Input: lines, then wait." },
    { role = "user", content = "What is 2 + 3?" },
  }
  -- the whole reply, unpaced (the body's own mock wins over the rule's pace)
  local full, full_id = turn(server, messages, { mock = { tokens_per_sec = 0 } })
  local full_rec = record(server, full_id)
  T.ok(full.text:find("Observation: 999 (made up)", 1, true), "the rule's text hallucinates")
  T.eq(full_rec.rule_name, "react", "rule")

  local res, id, chat = turn(server, messages, { stop_when = policy.stop_on { "Observation:", trim = true } })
  local stopped_at = sluice.now()
  T.eq(res.stop_reason, 'stop_on:"Observation:"', "stopped by the policy")
  T.eq(res.text, 'Thought: I should add the numbers.\nAction: add\nAction Input: {"a": 2, "b": 3}\n',
       "text up to the Observation")
  T.eq(chat:state(), "cancelled", "the stream was cancelled")
  local rec = T.ok(record(server, id), "record")
  T.ok(rec.client_closed and not rec.completed, "the mock saw the client leave")
  T.eq(rec.rule_name, "react", "rule")
  T.le(sent_after(rec, stopped_at), 1, "tokens the mock sent after the stop")
  T.ok(rec.tokens_sent + 10 < full_rec.tokens_sent,
       ("the rest never generated: %d of %d tokens"):format(rec.tokens_sent, full_rec.tokens_sent))

  local final, final_id = turn(server, copy(messages,
    { role = "assistant", content = res.text },
    { role = "user", content = "Observation: 5" }))
  T.eq(final.text, "Thought: I know it\nFinal Answer: 5", "the final answer")
  T.eq(record(server, final_id).rule_name, "react-final", "rule")
end)

T.case("a drifting reply is interrupted, and the next turn is back on topic", function()
  local server <close> = start()
  local messages = { { role = "user", content = "Tell me about the old mill." } }
  local client = openai.client { base_url = server.url, api_key = "" }
  local id = next_id("drift")
  local chat = client:chat({ model = "mock-model", messages = messages },
                           { headers = { ["X-Request-Id"] = id } })
  local pieces, stopped_at = 0, nil
  for _ in chat:deltas() do
    pieces = pieces + 1
    if pieces == 6 then
      stopped_at = sluice.now()
      chat:cancel("drifting")
      break
    end
  end
  local partial = chat:text()
  T.ok(partial:find("^A mill grinds grain%."), "the start of the drift: " .. partial)
  local rec = record(server, id)
  T.eq(rec.rule_name, "drift", "rule")
  T.ok(rec.client_closed and not rec.completed, "interrupted")
  T.le(sent_after(rec, stopped_at), 1, "tokens the mock sent after the interruption")

  local res, id2 = turn(server, copy(messages,
    { role = "assistant", content = partial },
    { role = "user", content = "Stay on topic: the mill." }))
  T.eq(res.text, "Back to the mill: its wheel turns the stones.", "redirected")
  T.eq(record(server, id2).rule_name, "back-on-topic", "rule")
end)

T.case("a conversation that never stops calling tools", function()
  local server <close> = start()
  local messages = { { role = "user", content = "Add numbers and never stop." } }
  for i = 1, 4 do
    local res, id = turn(server, messages, { tools = TOOLS })
    T.eq(res.finish_reason, "tool_calls", "turn " .. i .. " calls a tool")
    T.eq(record(server, id).rule_name, "forever", "turn " .. i .. "'s rule")
    messages = copy(messages,
      { role = "assistant", content = cjson.null, tool_calls = res.tool_calls },
      { role = "tool", tool_call_id = res.tool_calls[1].id, content = "2" })
  end
end)

T.done()
