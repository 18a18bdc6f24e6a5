-- Reads sluice batch output (one record a line: custom_id, error, response,
-- and the "sluice" object with stop_reason and metrics) into a report model.
-- A record keeps durations (ttft, tpot, e2e), not clock times: each row is
-- drawn from its own request's start, its tokens spread evenly by TPOT. A
-- custom_id met again (a request redone) keeps its latest record.
local cjson = require "cjson"
local model = require "sluice.report.model"

local null = cjson.null

local M = {}

local function num(v) return type(v) == "number" and v or nil end

-- The text of a completion body: the first choice's content (or text).
local function text_of(response)
  local body = type(response) == "table" and response.body
  local c = type(body) == "table" and type(body.choices) == "table" and body.choices[1]
  if type(c) ~= "table" then return "" end
  local msg = c.message
  local t = type(msg) == "table" and msg.content or c.text
  return type(t) == "string" and t or ""
end

function M.reader(m)
  local by_id = {}
  model.note(m, "batch output keeps each request's durations, not when it started: every row starts at 0, " ..
                "and token ticks are spread evenly by TPOT (sluice batch --trace FILE records the real times)")
  m.relative = true

  local function feed(r)
    if r.custom_id == nil and type(r.sluice) ~= "table" then return end
    local cid = r.custom_id ~= null and r.custom_id or nil
    local sl = type(r.sluice) == "table" and r.sluice or {}
    local mt = type(sl.metrics) == "table" and sl.metrics or {}
    local s = cid and by_id[cid]
    if s then  -- redone: start the row again
      for k in pairs(s) do s[k] = nil end
      s.ticks, s.pieces, s.ntext = {}, {}, 0
    else
      s = model.stream(m)
      if cid then by_id[cid] = s end
    end
    s.id = cid or ("line " .. tostring(sl.line or #m.streams))
    s.label = tostring(s.id)
    s.start, s.estimated, s.text_whole = 0, true, true
    local e2e = num(mt.e2e) or 0
    local ttft, tpot = num(mt.ttft), num(mt.tpot)
    local n = math.tointeger(mt.output_tokens) or 0
    if ttft and n > 0 then
      if not tpot then tpot = n > 1 and (e2e - ttft) / (n - 1) or 0 end
      for i = 0, n - 1 do model.tick(s, ttft + i * tpot) end
    end
    s.close, s.last = e2e, e2e
    local err = r.error ~= null and type(r.error) == "table" and r.error or nil
    local response = r.response ~= null and r.response or nil
    s.status = type(response) == "table" and response.status_code or nil
    if err then
      s.state, s.error = "failed", tostring(err.message or err.code)
      s.reason = s.error
    elseif type(sl.stop_reason) == "string" then
      s.state, s.reason = "cancelled", sl.stop_reason
    else
      s.state = "done"
    end
    s.text = text_of(response)
  end

  return { feed = feed, done = function() end }
end

return M
