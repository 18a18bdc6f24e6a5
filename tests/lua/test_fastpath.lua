-- The C fast path for OpenAI chunks (s:next_text, used by sluice.openai) must
-- agree with full cjson decoding: every text it accepts equals the decoded
-- delta.content (or text), and it refuses every chunk that says more than
-- its text. Differential test over randomly generated chunks.
local sluice = require "sluice"
local cjson = require "cjson"
local T = require "testlib"

math.randomseed(20261124)
local null = cjson.null

local alphabet = { "a", "b", " ", "\"", "\\", "/", "\n", "\t", "\r", "\b", "\f", "\0", "\1", "\31",
                   "\127", "é", "€", "😀", "中", "{", "}", "[", "]", ",", ":" }
local function random_text()
  local n, parts = math.random(0, 12), {}
  for i = 1, n do parts[i] = alphabet[math.random(#alphabet)] end
  return table.concat(parts)
end

-- A chunk as real servers send them, with random extras; returns the chunk
-- and the text the fast path may report (nil when it must refuse).
local function random_chunk()
  local text = random_text()
  local completion = math.random() < 0.2
  local choice = { index = 0 }
  local simple = true
  if completion then choice.text = text else choice.delta = { content = text } end
  local r = math.random()
  if r < 0.15 then choice.finish_reason = "stop"; simple = false
  elseif r < 0.3 then choice.finish_reason = null end
  if math.random() < 0.2 then choice.logprobs = null end
  if not completion then
    r = math.random()
    if r < 0.1 then choice.delta.role = "assistant"; simple = false
    elseif r < 0.2 then choice.delta.tool_calls = { { index = 0, ["function"] = { arguments = "{" } } }; simple = false
    elseif r < 0.3 then choice.delta.reasoning_content = "hm"; simple = false
    elseif r < 0.4 then choice.delta.reasoning_content = null end
  end
  if math.random() < 0.05 then choice.index = 1; simple = false end
  local chunk = { id = "chatcmpl-" .. math.random(1e6), object = "chat.completion.chunk",
                  created = 1700000000, model = "m", choices = { choice } }
  r = math.random()
  if r < 0.1 then chunk.usage = { prompt_tokens = 1, completion_tokens = 2, total_tokens = 3 }; simple = false
  elseif r < 0.2 then chunk.usage = null
  elseif r < 0.25 then chunk.error = { message = "boom" }; simple = false end
  if math.random() < 0.05 then chunk.choices[2] = { index = 1, delta = { content = "x" } }; simple = false end
  if math.random() < 0.05 then chunk.choices = {}; simple = false end
  return cjson.encode(chunk), simple and text or nil
end

T.case("the fast path agrees with cjson on 20,000 random chunks", function()
  local accepted, refused = 0, 0
  for i = 1, 20000 do
    local json, expect = random_chunk()
    local got = sluice._chunk_text(json)
    if expect and got == nil then
      -- refusing is always safe (the slow path decodes it); but the common
      -- shape must take the fast path
      error(("simple chunk refused: %s"):format(json))
    end
    if got ~= nil then
      T.eq(got, expect, "text of " .. json)
      -- and it is what full decoding says
      local c = cjson.decode(json).choices[1]
      T.eq(got, c.text or c.delta.content, "cjson agrees for " .. json)
      accepted = accepted + 1
    else
      refused = refused + 1
    end
  end
  print(("# %d accepted, %d refused"):format(accepted, refused))
  T.ok(accepted > 5000 and refused > 5000, "both paths exercised")
end)

T.case("mutated chunks never crash it, and what it accepts is valid", function()
  local json = cjson.encode { id = "x", choices = { { index = 0, delta = { content = "héllo \"q\" \\ /" } } } }
  for _ = 1, 20000 do
    local b = { json:byte(1, -1) }
    for _ = 1, math.random(1, 3) do
      local op, pos = math.random(3), math.random(#b)
      if op == 1 then b[pos] = math.random(0, 255)
      elseif op == 2 then table.insert(b, pos, math.random(0, 255))
      elseif #b > 1 then table.remove(b, pos) end
    end
    local m = string.char(table.unpack(b))
    local got = sluice._chunk_text(m)
    if got ~= nil then
      -- accepted input must be JSON whose decoding gives the same text
      local ok, doc = pcall(cjson.decode, m)
      T.ok(ok, "accepted input is valid JSON: " .. m)
      local c = doc.choices[1]
      T.eq(got, c.text or c.delta.content, "text of mutated " .. m)
    end
  end
end)

T.done()
