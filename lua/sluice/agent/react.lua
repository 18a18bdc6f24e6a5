-- sluice.agent's text protocol (ReAct), for models without native tool
-- calling: the tools are told in the system prompt, and the model writes
--   Thought: ...
--   Action: <tool name>
--   Action Input: <JSON or text>
-- then stops -- on the client side: the turn's stream is cut at
-- "Observation:" and its upstream closed on the spot, so a made-up
-- observation is never generated; the loop supplies the real one. The run
-- ends at "Final Answer:".
local cjson = require "cjson"

local decode = require("cjson.safe").decode
local encode = cjson.encode
local format = string.format

local M = {}

M.OBSERVATION = "Observation:"

-- The system prompt that tells the model the tools and the format.
function M.system_prompt(tools)
  local lines = { "Answer the question as well as you can. You can use these tools:" }
  for _, t in ipairs(tools) do
    lines[#lines + 1] = format("- %s: %s Arguments (JSON): %s", t.name, t.description or "",
                               encode(t.parameters or { type = "object" }))
  end
  local names = {}
  for i, t in ipairs(tools) do names[i] = t.name end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Use this format:"
  lines[#lines + 1] = "Thought: what to do next"
  lines[#lines + 1] = "Action: the tool to use, one of [" .. table.concat(names, ", ") .. "]"
  lines[#lines + 1] = "Action Input: the tool's arguments, as JSON"
  lines[#lines + 1] = "Observation: the tool's result (given to you; do not write it)"
  lines[#lines + 1] = "... (Thought/Action/Action Input/Observation may repeat)"
  lines[#lines + 1] = "Thought: I now know the final answer"
  lines[#lines + 1] = "Final Answer: the answer"
  return table.concat(lines, "\n")
end

-- The messages of the first request: ours as the system prompt (before a
-- system message the caller gave, if any), then theirs.
function M.messages(tools, messages)
  local out = {}
  local prompt = M.system_prompt(tools)
  local first = messages[1]
  if first and first.role == "system" then
    out[1] = { role = "system", content = tostring(first.content or "") .. "\n\n" .. prompt }
    for i = 2, #messages do out[#out + 1] = messages[i] end
  else
    out[1] = { role = "system", content = prompt }
    for i = 1, #messages do out[#out + 1] = messages[i] end
  end
  return out
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- Where plain text needle last occurs in text, or nil.
local function last(text, needle)
  local at, from = nil, 1
  while true do
    local i = text:find(needle, from, true)
    if not i then return at end
    at, from = i, i + 1
  end
end

-- What a turn's text (cut before "Observation:") says: { answer = text } at
-- a "Final Answer:" after the last action, or { action = name, input = text,
-- thought = text } (the input: everything after "Action Input:"), or nil
-- when it says neither.
function M.parse(text)
  local fa, act = last(text, "Final Answer:"), last(text, "Action:")
  if fa and (not act or fa > act) then return { answer = trim(text:sub(fa + #"Final Answer:")) } end
  if not act then return nil end
  local name = text:match("^[ \t]*([^\n]*)", act + #"Action:")
  local input = text:match("Action Input:(.*)$", act) or ""
  local thought = text:sub(1, act - 1):match(".*Thought:%s*(.-)%s*$")
  return { action = trim(name), input = trim(input), thought = thought }
end

-- The arguments of an action for tool: its input as JSON; else, as text,
-- given to the tool's one required parameter (or to `input`).
function M.arguments(tool, input)
  local doc = decode(input)
  if type(doc) == "table" then return doc end
  local params = tool.parameters
  local req = type(params) == "table" and type(params.required) == "table" and params.required
  local key = (req and #req == 1) and req[1] or "input"
  return { [key] = input:gsub('^"(.*)"$', "%1") }
end

return M
