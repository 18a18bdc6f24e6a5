-- sluice batch's input: the OpenAI Batch file format (one JSON object a line:
-- custom_id, method, url, body), or a file of prompts (one a line, quick
-- mode), read as a stream. A first pass checks the whole input (duplicate
-- custom_ids are refused before anything is sent) keeping only a 64-bit hash
-- per line; the second pass hands out one request at a time, so memory grows
-- with the concurrency, not with the file.
local sluice = require "sluice"
local cjson = require "cjson"

local decode = require("cjson.safe").decode
local null = cjson.null
local format, byte, sub, find = string.format, string.byte, string.sub, string.find

local M = {}

-- FNV-1a, 64 bits, over the bytes of s (as a Lua integer: the bits of the
-- unsigned value). In C (sluice.hash64); this is what it computes:
--   h = 0xcbf29ce484222325; for each byte b: h = (h XOR b) * 0x100000001b3 mod 2^64
local fnv1a = sluice.hash64
M.hash = fnv1a

-- The shard of custom_id among n: FNV-1a 64 of its bytes, taken as an
-- unsigned number, modulo n. Stable across machines and runs.
function M.shard_of(custom_id, n)
  local h = fnv1a(custom_id)
  local hi, lo = (h >> 32) & 0xffffffff, h & 0xffffffff
  return ((hi % n) * ((1 << 32) % n) + lo % n) % n
end

-- A set of custom_ids (their hashes), 8 bytes each: sluice.idset.
M.idset = sluice.idset

-- The custom_id of a line that starts {"custom_id":"...", without decoding
-- the rest (generated batch files put it first); nil otherwise.
local function quick_id(text)
  return text:match('^{%s*"custom_id"%s*:%s*"([^"\\]+)"')
end

local ENDPOINTS = { ["/v1/chat/completions"] = "/chat/completions", ["/v1/completions"] = "/completions",
                    ["/chat/completions"] = "/chat/completions", ["/completions"] = "/completions" }

-- One line of a batch file: a request { line, custom_id, path, body }, or
-- nil, what is wrong (with custom_id when it could be read).
local function parse_batch_line(text, lineno)
  local doc = decode(text)
  if type(doc) ~= "table" then return nil, "line " .. lineno .. " is not valid JSON" end
  local cid = doc.custom_id
  if type(cid) ~= "string" or cid == "" then
    return nil, "line " .. lineno .. " has no custom_id (a non-empty string)"
  end
  if type(doc.body) ~= "table" then return nil, "line " .. lineno .. " has no body (an object)", cid end
  local url = doc.url
  if url == nil or url == null then url = "/v1/chat/completions" end
  local path = type(url) == "string" and ENDPOINTS[url]
  if not path then
    return nil, format("line %d: url must be /v1/chat/completions or /v1/completions", lineno), cid
  end
  local method = doc.method
  if method ~= nil and method ~= null and method ~= "POST" then
    return nil, format("line %d: method must be POST", lineno), cid
  end
  return { line = lineno, custom_id = cid, path = path, body = doc.body }
end

-- A prompt of quick mode: line n is the prompt, custom_id n.
local function prompt_line(text, lineno, model)
  return { line = lineno, custom_id = tostring(lineno), path = "/chat/completions",
           body = { model = model, messages = { { role = "user", content = text } } } }
end

-- An input: { path ("-": stdin), prompts = true for quick mode, model,
-- shard = {k, n} }. open() returns a reader or nil, err.
local Reader = {}
Reader.__index = Reader

function M.open(o)
  local self = setmetatable({ path = o.path, prompts = o.prompts, model = o.model, shard = o.shard }, Reader)
  if o.path == "-" then
    -- stdin is read once: spool it, so the check and the run see the same lines
    local tmp = os.tmpname()
    local f = assert(io.open(tmp, "wb"))
    for chunk in function() return io.stdin:read(65536) end do f:write(chunk) end
    f:close()
    self.file, self.spooled = tmp, tmp
  else
    local f = io.open(o.path, "rb")
    if not f then return nil, "cannot read " .. o.path end
    f:close()
    self.file = o.path
  end
  return self
end

function Reader:close()
  if self.spooled then os.remove(self.spooled) end
  self.spooled = nil
end

-- What line text (number lineno) is: a request, or nil, problem, custom_id.
-- (Whose shard it is, id_of says: the same id in both passes.)
function Reader:parse(text, lineno)
  if self.prompts then return prompt_line(text, lineno, self.model) end
  return parse_batch_line(text, lineno)
end

-- Every line of the file with its number, blank lines left out.
function Reader:lines()
  local f = assert(io.open(self.file, "rb"))
  local n = 0
  return function()
    while f do
      local text = f:read("L")
      if not text then
        f:close()
        f = nil
        return nil
      end
      n = n + 1
      local last = byte(text, -1)
      if last == 10 then
        text = byte(text, -2) == 13 and sub(text, 1, -3) or sub(text, 1, -2)
      end
      if (byte(text, 1) or 0) > 32 or find(text, "%S") then return n, text end
    end
  end
end

-- The custom_id of a line (nil when it has none, or is no JSON), and whether
-- the line belongs to another shard.
function Reader:id_of(text, lineno)
  local id
  if self.prompts then
    id = tostring(lineno)
  else
    id = quick_id(text)
    if not id then
      local doc = decode(text)
      id = type(doc) == "table" and type(doc.custom_id) == "string" and doc.custom_id ~= "" and doc.custom_id or nil
    end
  end
  if self.shard and M.shard_of(id or ("line " .. lineno), self.shard[2]) ~= self.shard[1] then return id, true end
  return id, false
end

-- The first pass: counts this shard's lines, and those done(custom_id,
-- lineno) knows; refuses duplicate custom_ids. Returns count, done, or nil,
-- the first duplicate's message.
function Reader:check(done)
  local ids, count, skipped = M.idset(), 0, 0
  for lineno, text in self:lines() do
    local id, skip = self:id_of(text, lineno)
    if not skip then
      count = count + 1
      if id then ids:add(id) end
      if done(id, lineno) then skipped = skipped + 1 end
    end
  end
  local twice = ids:duplicate()
  if twice then  -- which lines: a second look, only now
    local first
    for lineno, text in self:lines() do
      local id, skip = self:id_of(text, lineno)
      if not skip and id and fnv1a(id) == twice then
        if first then return nil, format("custom_id %q is used twice (lines %d and %d)", id, first, lineno) end
        first = lineno
      end
    end
  end
  return count, skipped
end

-- The second pass: an iterator over this shard's lines whose custom_id (or,
-- for a line without one, line number) done(custom_id, lineno) does not
-- know. Each call returns a request, or false, problem, custom_id, lineno for
-- a line that is no request; nil at the end. It never waits: the tasks of a
-- run share it.
function Reader:requests(done)
  local lines = self:lines()
  return function()
    while true do
      local lineno, text = lines()
      if not lineno then return nil end
      local id, skip = self:id_of(text, lineno)
      if not skip and not done(id, lineno) then
        local req, problem, cid = self:parse(text, lineno)
        if req then return req end
        -- the id the first pass and done() know it by (a line that is no
        -- JSON may still start with its custom_id)
        return false, problem, cid or id, lineno
      end
    end
  end
end

return M
