-- sluice batch's output: one JSON line per request, appended whole by one
-- write each, so a crash (kill -9 included) leaves at most a torn last line,
-- which the next run cuts off before it appends. A run first scans what is
-- there: the custom_ids already done are skipped. --redo-failed writes a new
-- file and renames it over the old one, so a crash leaves one or the other
-- whole.
local sluice = require "sluice"
local cjson = require "cjson"
local input = require "sluice.batch.input"

local decode = require("cjson.safe").decode
local find, sub = string.find, string.sub

local M = {}

-- The start of every line we write: {"id":"...","custom_id":<string|null>,
-- "error":<null|{...}>, ... (keys in this order, so a scan needs no full
-- decoding).
local function head(line)
  local a, b = find(line, '^{"id":"[^"\\]*","custom_id":')
  if not a then return nil end
  local pos, cid = b + 1, nil
  if sub(line, pos, pos + 3) == "null" then
    pos = pos + 4
  else
    if sub(line, pos, pos) ~= '"' then return nil end
    local q = pos + 1
    while true do  -- the end of the JSON string
      local c = find(line, '["\\]', q)
      if not c then return nil end
      if sub(line, c, c) == '"' then
        cid = decode(sub(line, pos, c))
        pos = c + 1
        break
      end
      q = c + 2
    end
    if type(cid) ~= "string" then return nil end
  end
  if sub(line, pos, pos + 8) ~= ',"error":' then return nil end
  return cid, sub(line, pos + 9, pos + 12) ~= "null"
end

-- What a record line says: custom_id (nil when the line had none), failed,
-- and the line number of a line that was no request (sluice.line).
local function read_record(line)
  local cid, failed = head(line)
  if cid ~= nil or failed ~= nil then
    local bad = cid == nil and tonumber(line:match('"sluice":{.-"line":(%d+)'))
    return cid, failed, bad
  end
  local doc = decode(line)  -- written by another tool, or by hand
  if type(doc) ~= "table" then return nil end
  local err = doc.error
  local failed2 = err ~= nil and err ~= cjson.null
  local sl = type(doc.sluice) == "table" and doc.sluice or {}
  return type(doc.custom_id) == "string" and doc.custom_id or nil, failed2, tonumber(sl.line)
end

-- Cuts path's torn last line (a crash in the middle of a write), if any.
-- Returns how many bytes were dropped.
local function repair(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local size = f:seek("end")
  if size == 0 then
    f:close()
    return 0
  end
  f:seek("set", size - 1)
  if f:read(1) == "\n" then
    f:close()
    return 0
  end
  -- find the last newline, reading backwards in blocks
  local pos, keep = size, 0
  while pos > 0 do
    local from = math.max(0, pos - 65536)
    f:seek("set", from)
    local block = f:read(pos - from)
    local nl = block:match(".*()\n")
    if nl then
      keep = from + nl
      break
    end
    pos = from
  end
  f:close()
  local r, err = sluice.exec { "truncate", "-s", tostring(keep), path }
  if not r or r.code ~= 0 then
    error(("cannot repair the torn last line of %s: %s"):format(path, r and r.stderr or tostring(err)), 0)
  end
  return size - keep
end

-- Scans the output at path (missing: nothing done). Returns
-- { done = idset of custom_ids, failed = idset of those whose record holds
--   an error, bad_lines = {n -> true} }, after cutting a torn last line.
function M.scan(path)
  local st = { done = input.idset(), bad_lines = {}, failed = input.idset() }
  repair(path)
  local f = io.open(path, "rb")
  if not f then return st end
  for line in f:lines() do
    local cid, failed, bad = read_record(line)
    if cid then
      st.done:add(cid)
      if failed then st.failed:add(cid) end
    elseif bad then
      st.bad_lines[bad] = true
    end
  end
  f:close()
  return st
end

-- Appends lines to a file, each whole with one write.
local Writer = {}
Writer.__index = Writer

function M.open(path, mode)
  local f, err = io.open(path, mode or "ab")
  if not f then return nil, err end
  f:setvbuf("no")  -- one write(2) per line: a crash cannot tear two
  return setmetatable({ f = f, path = path }, Writer)
end

function Writer:write(line)
  local ok, err = self.f:write(line, "\n")
  if not ok then error("cannot write " .. self.path .. ": " .. tostring(err), 0) end
end

function Writer:close()
  if self.f then self.f:close() end
  self.f = nil
end

-- --redo-failed: the records of path that hold no error, copied to a new
-- file (path .. ".redo"); the run appends the redone ones, and finish()
-- renames it over path, after adding the old failed records that were not
-- redone (an interrupted run loses nothing). Returns the writer; path was
-- scanned (and its torn line cut) first.
function M.redo(path)
  local tmp = path .. ".redo"
  local w = assert(M.open(tmp, "wb"))
  local f = io.open(path, "rb")
  if f then
    for line in f:lines() do
      local cid, failed = read_record(line)
      if not (cid and failed) then w:write(line) end
    end
    f:close()
  end
  function w.finish(redone)
    local old = io.open(path, "rb")
    if old then
      for line in old:lines() do
        local cid, failed = read_record(line)
        if cid and failed and not redone:has(cid) then w:write(line) end
      end
      old:close()
    end
    w:close()
    assert(os.rename(tmp, path))
  end
  return w
end

return M
