-- Reads a file for a report in one pass: tells from its first record which
-- kind it is (a trace line has "ev" and "s"; a batch record "custom_id"; an
-- agent transcript record a "type" such as run_start), then hands every
-- record to that kind's reader. A line that is not JSON is skipped: the last
-- one is torn (a kill -9 mid-write), any other is counted.
local cjson = require "cjson.safe"
local model = require "sluice.report.model"

local M = {}

local AGENT_TYPES = { run_start = true, request = true, event = true, tool_start = true, tool_end = true,
                      interrupt = true, turn_end = true, run_end = true }

-- The kind of a decoded record, or nil.
function M.kind(r)
  if type(r) ~= "table" then return nil end
  if r.ev ~= nil and r.s ~= nil then return "trace" end
  if type(r.type) == "string" and AGENT_TYPES[r.type] then return "agent" end
  if r.custom_id ~= nil or type(r.sluice) == "table" then return "batch" end
end

local READERS = { trace = "sluice.report.trace", batch = "sluice.report.batch", agent = "sluice.report.agent" }

-- read(path, opts) -> model | nil, message. opts.plain keeps plain requests
-- (no events: sluice.fetch) that a trace's report leaves out.
function M.read(path, opts)
  opts = opts or {}
  local f, err = io.open(path, "rb")
  if not f then return nil, "cannot read " .. path .. ": " .. tostring(err):gsub("^[^:]*: ", "") end
  local decode = cjson.decode
  local m, reader, fast
  local bad, last_bad, lines = 0, false, 0
  for line in f:lines() do
    if line ~= "" then
      lines = lines + 1
      if fast and fast(line) then
        last_bad = false
      else
        local r = decode(line)
        if type(r) ~= "table" then
          bad, last_bad = bad + 1, true
        else
          last_bad = false
          if not reader then
            local kind = M.kind(r)
            if not kind then
              f:close()
              return nil, ("%s: line %d is not a sluice trace, batch output or agent transcript record"):format(
                path, lines)
            end
            m = model.new(kind, path)
            reader = require(READERS[kind]).reader(m)
            fast = reader.line
          end
          reader.feed(r)
        end
      end
    end
  end
  f:close()
  if not reader then
    if bad > 0 then return nil, ("%s: no JSON record in it"):format(path) end
    m = model.new("trace", path)
    model.note(m, "the file is empty")
    reader = require(READERS.trace).reader(m)
  end
  reader.done()
  if last_bad then
    m.torn = true
    bad = bad - 1
    model.note(m, "the last line was cut short (the run was killed?): skipped")
  end
  if bad > 0 then
    m.skipped = bad
    model.note(m, ("%d line%s not JSON: skipped"):format(bad, bad == 1 and " was" or "s were"))
  end
  return model.finish(m, opts.plain)
end

return M
