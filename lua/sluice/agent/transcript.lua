-- sluice.agent's transcript: one JSON object a line, written as the run goes
-- (each line whole in one write, so the file is readable while the run goes
-- on, and after a kill -9 every line is whole but possibly the last, which a
-- reader skips). Times are on sluice.now()'s clock.
local sluice = require "sluice"
local cjson = require "cjson"

local encode = cjson.encode
local decode_safe = require("cjson.safe").decode
local now = sluice.now

local M = {}

local Writer = {}
Writer.__index = Writer

-- A writer to path, or a writer that keeps nothing when path is nil.
function M.open(path)
  if not path then return setmetatable({}, Writer) end
  local f, err = io.open(path, "w")
  if not f then error("cannot write the transcript " .. path .. ": " .. tostring(err), 0) end
  f:setvbuf("no")
  return setmetatable({ f = f }, Writer)
end

-- Writes record (a table; t, the time, is added) as one line.
function Writer:write(record)
  if not self.f then return end
  record.t = now()
  local ok, line = pcall(encode, record)
  if not ok then line = encode { t = record.t, type = record.type, note = "not encodable: " .. tostring(line) } end
  self.f:write(line, "\n")
end

function Writer:close()
  if self.f then self.f:close() end
  self.f = nil
end

-- Reads a transcript: its records, the torn last line (if any) skipped.
function M.read(path)
  local out = {}
  local f = io.open(path, "rb")
  if not f then return out end
  for line in f:lines() do
    local rec = decode_safe(line)
    if type(rec) == "table" then out[#out + 1] = rec end
  end
  f:close()
  return out
end

return M
