-- sluice.openai's chunks: decoding one streamed chunk (the one place that
-- knows their JSON shape), and assembling tool calls whose name and
-- arguments arrive in fragments over any number of chunks.
local cjson = require "cjson"

local decode = require("cjson.safe").decode
local null = cjson.null
local type, concat = type, table.concat
local tointeger = math.tointeger

local M = {}

-- The decoded chunk c, or nil, doc when the chunk reports an error (doc is
-- the decoded document), or nil, false when it is not JSON at all.
function M.decode(data)
  local c = decode(data)
  if type(c) ~= "table" then return nil, false end
  local e = c.error
  if (e ~= nil and e ~= null) or c.object == "error" then return nil, c end
  return c
end

-- What a choice entry of a chunk says, each nil when absent (or null):
-- content, reasoning, tool_calls (fragments), finish_reason, logprobs.
-- Chat chunks carry a delta; /completions chunks a text.
function M.choice(ch)
  local content, reasoning, tools
  local d = ch.delta
  if type(d) == "table" then
    content = d.content
    reasoning = d.reasoning_content
    if type(reasoning) ~= "string" then reasoning = d.reasoning end
    tools = d.tool_calls
  else
    content = ch.text
  end
  local finish, lp = ch.finish_reason, ch.logprobs
  if type(content) ~= "string" or content == "" then content = nil end
  if type(reasoning) ~= "string" or reasoning == "" then reasoning = nil end
  if type(tools) ~= "table" then tools = nil end
  if type(finish) ~= "string" then finish = nil end
  if type(lp) ~= "table" then lp = nil end
  return content, reasoning, tools, finish, lp
end

-- The choice's index (0 when the server leaves it out), as an integer.
function M.index(ch, position)
  local i = tointeger(ch.index)
  if i and i >= 0 then return i end
  return position - 1
end

-- Appends a chunk's logprobs to acc (nil: a new one), in the shape the
-- non-streaming API returns: chat { content = { {token, logprob, ...}, ... } },
-- completions { tokens, token_logprobs, top_logprobs, text_offset }.
function M.add_logprobs(acc, lp)
  acc = acc or {}
  for k, v in pairs(lp) do
    if type(v) == "table" then
      local list = acc[k]
      if not list then
        list = {}
        acc[k] = list
      end
      for i = 1, #v do list[#list + 1] = v[i] end
    end
  end
  return acc
end

-- ---------------------------------------------------------------------------
-- Tool calls. st holds a choice's calls: st.tools (by call index), st.tool_order,
-- st.calls (the finished ones, shaped as in a chat.completion message).
-- done(st, call_index, call) is called once per finished call.

-- Finishes the calls with an index below `below` (servers stream one call
-- after the other), or all of them.
function M.flush_tools(st, below, done)
  local tools = st.tools
  if not tools then return end
  for _, idx in ipairs(st.tool_order) do
    local tc = tools[idx]
    if not tc.done and (not below or idx < below) then
      tc.done = true
      local call = { id = tc.id, type = tc.type or "function",
                     ["function"] = { name = tc.name or "", arguments = concat(tc.args) } }
      st.calls[#st.calls + 1] = call
      done(st, idx, call)
    end
  end
end

-- Adds a chunk's tool-call fragments; delta(st, call_index, tc), when given,
-- is called for each call a fragment added to (tc.args: the pieces so far).
function M.add_tools(st, list, done, delta)
  local tools = st.tools
  if not tools then
    tools = {}
    st.tools, st.tool_order = tools, {}
  end
  for i = 1, #list do
    local f = list[i]
    if type(f) == "table" then
      local idx = tointeger(f.index) or (i - 1)
      local tc = tools[idx]
      if not tc then
        M.flush_tools(st, idx, done)
        tc = { args = {}, done = false }
        tools[idx] = tc
        st.tool_order[#st.tool_order + 1] = idx
      end
      if type(f.id) == "string" and f.id ~= "" then tc.id = f.id end
      if type(f.type) == "string" then tc.type = f.type end
      local fn = f["function"]
      if type(fn) == "table" then
        local name = fn.name
        if type(name) == "string" and name ~= "" then
          if not tc.name or tc.name == "" then tc.name = name
          elseif name ~= tc.name then tc.name = tc.name .. name end
        end
        local a = fn.arguments
        if type(a) == "string" and a ~= "" then tc.args[#tc.args + 1] = a end
      end
      if delta then delta(st, idx, tc) end
    end
  end
end

return M
