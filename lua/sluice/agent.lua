-- sluice.agent: agent loops that stream, call tools, and interrupt
-- themselves -- closing the upstream the moment they know better. A turn
-- streams the model's answer; its tool calls (assembled from fragments) run
-- each in its own task, several at once, and their results go back as `tool`
-- messages; the loop goes on until the model answers without a tool call,
-- max_turns is reached, or a policy or on_event stops it. Every stop is real:
-- the turn's connection is closed at once, and the turn's running tools are
-- cancelled (their sluice.exec children killed and reaped, their fetches
-- closed).
--
--   local r = agent.run { client = client, model = "m", messages = {...},
--                         tools = { calculator, agent.tools.exec{...} },
--                         max_turns = 8, on_event = function(ev, ctx) ... end }
--   print(r.text, r.turns, r.stop_reason)
--
-- agent.react{...} takes the same arguments for models without native tool
-- calling (a text protocol: Thought / Action / Action Input / Observation).
local sluice = require "sluice"
local cjson = require "cjson"
local args = require "sluice.args"
local policy = require "sluice.policy"
local tools = require "sluice.agent.tools"
local react = require "sluice.agent.react"
local transcript = require "sluice.agent.transcript"

local decode = require("cjson.safe").decode
local null = cjson.null
local now = sluice.now
local format = string.format

local agent = { tools = { exec = tools.exec, fetch = tools.fetch }, transcript = transcript }

local function tool_list(v)
  if type(v) ~= "table" then return "must be a list of tools, got " .. type(v) end
  local seen = {}
  for i, t in ipairs(v) do
    if type(t) ~= "table" then return format("[%d] must be a tool (a table), got %s", i, type(t)) end
    if type(t.name) ~= "string" or not t.name:match("^[%w_%-]+$") then
      return format("[%d].name must be a name (letters, digits, _ or -)", i)
    end
    if seen[t.name] then return format("[%d].name %q is used twice", i, t.name) end
    seen[t.name] = true
    if type(t.run) ~= "function" then return format("[%d].run must be a function", i) end
    if t.parameters ~= nil and type(t.parameters) ~= "table" then
      return format("[%d].parameters must be a JSON schema (a table)", i)
    end
    if t.early ~= nil and type(t.early) ~= "boolean" then return format("[%d].early must be true or false", i) end
  end
end

local function is_client(v)
  if type(v) ~= "table" or type(v.chat) ~= "function" then return "must be an openai.client" end
end

local spec = {
  client = is_client, model = "string", messages = "table", tools = tool_list, max_turns = "count",
  stop_when = policy.kind, on_event = "function", tool_timeout = "seconds", transcript = "string",
  max_tokens = "count", deadline = "seconds", body = "table",
}

local function copy(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = v end
  return out
end

-- The events the loop reports besides the stream's: turn_start, tool_start,
-- tool_end, turn_end (and interrupt). on_event sees them all.
local function emit(st, ev)
  if st.on_event then st.on_event(ev, st.ctx) end
end

-- A compact line for the transcript of a chat event.
local function event_record(ev, turn)
  return { type = "event", turn = turn, event = ev.type, index = ev.index, text = ev.text, name = ev.name,
           arguments = ev.type == "tool_call" and ev.arguments or nil, id = ev.id,
           finish_reason = ev.finish_reason, error = ev.error and tostring(ev.error) or nil }
end

-- Starts a call of tool; its bookkeeping goes into st.running.
local function start_call(st, tool, call, turn, early)
  local entry = { id = call.id, name = call.name, arguments = call.arguments, turn = turn, early = early,
                  started = now() }
  local ctx = { turn = turn, call_id = call.id, name = call.name, run = st.ctx }
  entry.task = tools.start(tool, call.arguments, ctx, st.tool_timeout)
  st.running[entry] = true
  st.tr:write { type = "tool_start", turn = turn, call_id = call.id, name = call.name,
                arguments = type(call.arguments) == "string" and call.arguments or call.arguments and
                            cjson.encode(call.arguments), early = early or nil }
  emit(st, { type = "tool_start", turn = turn, call_id = call.id, name = call.name, arguments = call.arguments,
             early = early or nil })
  return entry
end

-- Waits for a call; returns its tool message's content.
local function finish_call(st, entry)
  local joined = table.pack(entry.task:join())
  st.running[entry] = nil
  local ok, finished, content, took = joined[1], joined[2], joined[3], joined[4]
  if not ok then  -- the wrapper itself failed: say so to the model
    finished, content, took = false, "error: " .. tostring(finished), now() - entry.started
  end
  entry.ok, entry.result, entry.duration = finished, content, took
  st.tool_calls[#st.tool_calls + 1] = entry
  st.tr:write { type = "tool_end", turn = entry.turn, call_id = entry.id, name = entry.name, ok = finished,
                result = content, duration = took }
  emit(st, { type = "tool_end", turn = entry.turn, call_id = entry.id, name = entry.name, ok = finished,
             result = content, duration = took })
  return content
end

-- Cancels the calls of a turn that are still running (an interrupt, a stop).
local function cancel_calls(st, entries, why)
  for _, entry in pairs(entries) do
    if st.running[entry] then
      entry.task:cancel(why)
      entry.task:join()
      st.running[entry] = nil
      st.tr:write { type = "tool_end", turn = entry.turn, call_id = entry.id, name = entry.name, ok = false,
                    result = "cancelled: " .. why, cancelled = true }
    end
  end
end

-- The run's own budgets as a policy: total tokens, the deadline.
local function budget_policy(st)
  if not st.max_tokens and not st.deadline then return nil end
  return {
    check = function(_, state)
      if st.max_tokens and st.tokens + state.tokens >= st.max_tokens then
        return format("max_tokens:%d", st.max_tokens)
      end
      if st.deadline and state.now >= st.deadline then return format("deadline:%gs", st.deadline_s) end
    end,
    deadline = st.deadline and function() return st.deadline end or nil,
  }
end

-- The caller's stop_when, with a table it returns ({interrupt=...} or
-- {stop=...}) taken as an action: the stream stops, and the loop acts.
local function user_policy(st, turn_state)
  local p = st.stop_when
  if not p then return nil end
  return { start = function()
    -- a function gets to return a table (policy.start would make it a reason)
    local inst = type(p) == "function" and { check = function(_, state) return p(state) end } or policy.start(p)
    return {
      check = function(_, state)
        local r, trim = inst.check(inst, state)
        if type(r) == "table" then
          turn_state.action = r
          return r.stop and tostring(r.stop) or "interrupt"
        end
        return r, trim
      end,
      deadline = inst.deadline and function(_, state) return inst.deadline(inst, state) end or nil,
      trim = inst.trim,
    }
  end }
end

-- Streams one turn. Returns the chat result and the turn's state:
-- { action (an interrupt or stop asked for), early (calls started while it
-- streamed, by call index) }.
local function stream_turn(st, body, turn)
  local ts = { early = {} }
  local list = {}
  list[#list + 1] = user_policy(st, ts)
  list[#list + 1] = budget_policy(st)
  if st.react then list[#list + 1] = policy.stop_on({ react.OBSERVATION }, { trim = true }) end
  local pol = #list == 1 and list[1] or (#list > 1 and policy.any(list) or nil)
  local chat = st.client:chat(body, { stop_when = pol, usage = true })
  local ok, e = pcall(function()
    for ev in chat:events() do
      ev.turn = turn
      if ev.type ~= "tool_call_delta" then st.tr:write(event_record(ev, turn)) end
      -- tools start early for the first choice only (the one whose calls run)
      local tool = ev.index == 0 and (ev.type == "tool_call_delta" or ev.type == "tool_call") and
                   st.by_name[ev.name]
      if tool and tool.early and not ts.early[ev.call_index] and
         (ev.type == "tool_call" or type(decode(ev.arguments)) == "table") then
        ts.early[ev.call_index] = start_call(st, tool, { id = ev.id, name = ev.name, arguments = ev.arguments },
                                             turn, true)
      end
      if ev.type == "tool_call" and ev.index == 0 and ts.early[ev.call_index] then
        ts.early[ev.call_index].call = ev.call  -- the very table result().tool_calls holds
      end
      if st.on_event then
        local act = st.on_event(ev, st.ctx)
        if type(act) == "table" and (act.interrupt or act.stop) then
          ts.action = act
          chat:cancel(act.stop and tostring(act.stop) or "interrupt")
          break
        end
      end
    end
  end)
  if not ok and type(e) == "table" and e.kind == "cancelled" and not chat:result().error then
    cancel_calls(st, ts.early, "the run was cancelled")
    error(e, 0)  -- this run's task is being cancelled
  elseif not ok and not (type(e) == "table" and e.kind) then
    cancel_calls(st, ts.early, "the loop failed")
    error(e, 0)  -- on_event raised: the caller's error
  end
  return chat:result(), ts
end

local function add_usage(st, usage)
  if type(usage) ~= "table" then return end
  for _, k in ipairs { "prompt_tokens", "completion_tokens", "total_tokens" } do
    if math.type(usage[k]) == "integer" then st.usage[k] = st.usage[k] + usage[k] end
  end
end

-- The body of a turn's request.
local function request_body(st)
  local body = {}
  for k, v in pairs(st.body or {}) do body[k] = v end
  body.model = st.model
  body.messages = st.messages
  if not st.react and #st.tools > 0 then body.tools = tools.spec(st.tools) end
  return body
end

-- A tool call of the text protocol: its observation.
local function react_call(st, parsed, turn)
  local tool = st.by_name[parsed.action]
  if not tool then
    local names = {}
    for i, t in ipairs(st.tools) do names[i] = t.name end
    return format("error: there is no tool %q (the tools: %s)", parsed.action, table.concat(names, ", "))
  end
  local entry = start_call(st, tool, { id = format("react_%d", turn), name = tool.name,
                                       arguments = react.arguments(tool, parsed.input) }, turn)
  return finish_call(st, entry)
end

local function run(o, mode)
  local fname = mode == "react" and "agent.react" or "agent.run"
  o = args.options(fname, 1, o, spec, 3)
  if not o.client then args.raise(fname, 1, fname .. ": option 'client' is required", 3) end
  if not o.messages then args.raise(fname, 1, fname .. ": option 'messages' is required", 3) end
  local st = {
    client = o.client, model = o.model or o.client.model, tools = o.tools or {}, by_name = {},
    react = mode == "react", stop_when = o.stop_when, on_event = o.on_event, body = o.body,
    tool_timeout = o.tool_timeout, max_tokens = o.max_tokens, deadline_s = o.deadline,
    turns = 0, tokens = 0, usage = { prompt_tokens = 0, completion_tokens = 0, total_tokens = 0 },
    tool_calls = {}, running = {}, started = now(), tr = transcript.open(o.transcript),
  }
  if o.deadline and o.deadline < math.huge then st.deadline = st.started + o.deadline end
  for _, t in ipairs(st.tools) do st.by_name[t.name] = t end
  st.messages = st.react and react.messages(st.tools, o.messages) or copy(o.messages)
  st.ctx = { messages = st.messages, usage = st.usage, tool_calls = st.tool_calls }
  local max_turns = o.max_turns or 10
  local text, stop_reason, failure
  local finished = false
  local guard <close> = setmetatable({}, { __close = function()  -- cancelled, or an error: nothing left running
    if finished then return end
    cancel_calls(st, st.running, "the run ended")
    st.tr:write { type = "run_end", stop_reason = "cancelled", turns = st.turns }
    st.tr:close()
  end })
  local names = {}
  for i, t in ipairs(st.tools) do names[i] = t.name end
  st.tr:write { type = "run_start", mode = mode, model = st.model, tools = names, max_turns = max_turns }
  local sent = 0  -- messages already written to the transcript

  while true do
    if st.turns >= max_turns then
      stop_reason = format("max_turns:%d", max_turns)
      break
    end
    if st.max_tokens and st.tokens >= st.max_tokens then
      stop_reason = format("max_tokens:%d", st.max_tokens)
      break
    end
    if st.deadline and now() >= st.deadline then
      stop_reason = format("deadline:%gs", o.deadline)
      break
    end
    st.turns = st.turns + 1
    local turn = st.turns
    st.ctx.turn = turn
    emit(st, { type = "turn_start", turn = turn })
    local new = {}
    for i = sent + 1, #st.messages do new[#new + 1] = st.messages[i] end
    sent = #st.messages
    st.tr:write { type = "request", turn = turn, messages = new, count = #st.messages }

    local res, ts = stream_turn(st, request_body(st), turn)
    st.tokens = st.tokens + (res.metrics.tokens or 0)
    add_usage(st, res.usage)
    local action = ts.action
    local turn_stop = res.stop_reason
    st.tr:write { type = "turn_end", turn = turn, finish_reason = res.finish_reason, stop_reason = turn_stop,
                  text = res.text, tokens = res.metrics.tokens, error = res.error and tostring(res.error) or nil }
    emit(st, { type = "turn_end", turn = turn, finish_reason = res.finish_reason, stop_reason = turn_stop,
               text = res.text })

    local observation_stop = st.react and turn_stop == format("stop_on:%s", policy.quote(react.OBSERVATION))
    if action and action.interrupt then
      -- steer: keep what was said, tell the model, go on
      cancel_calls(st, ts.early, "interrupted")
      if res.text ~= "" then st.messages[#st.messages + 1] = { role = "assistant", content = res.text } end
      st.messages[#st.messages + 1] = { role = "user", content = tostring(action.interrupt) }
      st.tr:write { type = "interrupt", turn = turn, note = tostring(action.interrupt) }
      emit(st, { type = "interrupt", turn = turn, note = action.interrupt })
    elseif action and action.stop then
      cancel_calls(st, ts.early, "stopped")
      if res.text ~= "" then st.messages[#st.messages + 1] = { role = "assistant", content = res.text } end
      text, stop_reason = res.text, tostring(action.stop)
      break
    elseif res.error then
      cancel_calls(st, ts.early, "the turn failed")
      text, stop_reason, failure = res.text, "error", res.error
      break
    elseif turn_stop and not observation_stop then
      -- a policy (or the run's budget) stopped it: the run ends here
      cancel_calls(st, ts.early, "stopped")
      if res.text ~= "" then st.messages[#st.messages + 1] = { role = "assistant", content = res.text } end
      text, stop_reason = res.text, turn_stop
      break
    elseif st.react then
      local parsed = react.parse(res.text)
      st.messages[#st.messages + 1] = { role = "assistant", content = res.text }
      if not parsed or parsed.answer then
        text = parsed and parsed.answer or res.text
        break
      end
      local observation = react_call(st, parsed, turn)
      st.messages[#st.messages + 1] = { role = "user", content = react.OBSERVATION .. " " .. observation }
    elseif #res.tool_calls > 0 then
      st.messages[#st.messages + 1] = { role = "assistant", content = res.text ~= "" and res.text or null,
                                        tool_calls = res.tool_calls }
      local entries, early = {}, {}
      for _, e in pairs(ts.early) do if e.call then early[e.call] = e end end
      for i, call in ipairs(res.tool_calls) do
        local entry = early[call]
        if not entry then
          local tool = st.by_name[call["function"].name]
          if tool then
            entry = start_call(st, tool, { id = call.id, name = tool.name, arguments = call["function"].arguments },
                               turn)
          else
            entry = { missing = true, id = call.id, name = call["function"].name }
          end
        end
        entries[i] = entry
      end
      for i, entry in ipairs(entries) do  -- they run at once; results in the calls' order
        local content
        if entry.missing then
          content = format("error: there is no tool %q", tostring(entry.name))
          st.tool_calls[#st.tool_calls + 1] = { id = entry.id, name = entry.name, ok = false, result = content,
                                                turn = turn }
        else
          content = finish_call(st, entry)
        end
        st.messages[#st.messages + 1] = { role = "tool", tool_call_id = res.tool_calls[i].id, content = content }
      end
      cancel_calls(st, ts.early, "not among the turn's calls")  -- started early, never matched
    else
      st.messages[#st.messages + 1] = { role = "assistant", content = res.text }
      text = res.text
      break
    end
  end

  finished = true
  st.tr:write { type = "run_end", stop_reason = stop_reason, turns = st.turns, usage = st.usage, text = text,
                error = failure and tostring(failure) or nil }
  st.tr:close()
  local calls = {}
  for i, e in ipairs(st.tool_calls) do
    calls[i] = { id = e.id, name = e.name, arguments = e.arguments, ok = e.ok, result = e.result,
                 duration = e.duration, turn = e.turn, early = e.early }
  end
  return { messages = st.messages, text = text, turns = st.turns, usage = st.usage, stop_reason = stop_reason,
           tool_calls = calls, error = failure }
end

-- agent.run{ client=, model=, messages=, tools=, max_turns= (10), stop_when=,
-- on_event=, tool_timeout=, transcript=, max_tokens= (over all turns),
-- deadline= (seconds for the run), body= (more fields for every request) }
-- -> { messages, text, turns, usage, stop_reason, tool_calls, error }.
-- stop_reason is nil when the model answered without a tool call.
function agent.run(o)
  local r = run(o, "native")
  return r
end

-- agent.react{...}: the same with the text protocol; text is the Final Answer.
function agent.react(o)
  local r = run(o, "react")
  return r
end

return agent
