-- Reads a sluice trace (src/trace.h: one JSON line per stream event) into a
-- report model, one line at a time. Tokens are the text pieces the script
-- read (sluice.openai traces them); a stream with no text and no layer above
-- the core (a raw or NDJSON stream) counts its events instead. Several runs
-- may share a file, so a start line for an id already started opens a new
-- stream. A confirm line (the server's own word on when it stopped) carries
-- server_stopped_at on the same clock.
local model = require "sluice.report.model"

local M = {}

local tick = model.tick

-- A reader: line(text) reads a line itself or returns false, feed(record)
-- takes a decoded line, done() when the file ended. (The batch and agent
-- readers have feed and done.)
function M.reader(m)
  local current = {}  -- stream id -> the stream of the latest start line

  local function open(id, t)
    local s = model.stream(m, { id = id, start = t, plain_candidate = true, data_ticks = {} })
    current[id] = s
    return s
  end

  local handlers = {}

  function handlers.start(s, r, t)
    if s.started then s = open(s.id, t) end  -- s.id: an integer, as the first one
    s.started, s.start = true, t
    s.method, s.request_id, s.tag = r.method, r.request_id, r.tag
    local url = type(r.url) == "string" and r.url or ""
    s.path = url:match("^%a+://[^/]*(/[^?#]*)") or url
    s.label = r.tag or r.request_id or ((r.method or "") .. " " .. s.path)
    return s
  end

  function handlers.note(s, r)
    if r.layer then
      s.layer, s.plain_candidate, s.data_ticks = r.layer, false, nil
    end
    local max = type(r.max_tokens) == "number" and math.tointeger(r.max_tokens)
    if max then s.max_tokens = max end
    if type(r.model) == "string" then s.model = r.model end
    if type(r.policy) == "string" then s.policy = r.policy:gsub("^policy ", "") end
  end

  function handlers.head(s, r, t)
    s.head, s.status = t, r.status
  end

  function handlers.data(s, r, t)
    s.plain_candidate = false
    local d = s.data_ticks
    if d and type(r.sizes) == "table" then
      for _ = 1, #r.sizes do d[#d + 1] = t end
    end
  end

  function handlers.text(s, r, t)
    s.plain_candidate, s.data_ticks = false, nil
    if type(r.pieces) == "table" then
      for _, p in ipairs(r.pieces) do tick(s, t, type(p) == "string" and p or nil) end
    end
  end

  function handlers.stop(s, r, t)
    if not s.stop then s.stop, s.reason = t, r.reason end
  end

  function handlers.close(s, _, t)
    if not s.close then s.close = t end
  end

  handlers["end"] = function(s, r, t)
    s.ended, s.state, s.events, s.bytes = t, r.state, r.events, r.bytes
    if r.error then s.error = r.error end
    if r.kind then s.error_kind = r.kind end
  end

  function handlers.confirm(s, r)
    if type(r.server_stopped_at) == "number" then
      s.confirm, s.confirm_how = r.server_stopped_at, r.how
    end
  end

  local function feed(r)
    local t, id, h = r.t, r.s, handlers[r.ev]
    if type(t) ~= "number" or id == nil or not h then return end
    id = math.tointeger(id) or id
    local s = current[id]
    if not s then s = open(id, t) end
    s = h(s, r, t) or s
    -- the last sign of life (a confirm line is written when the answer came)
    if h ~= handlers.confirm and h ~= handlers.note and (not s.last or t > s.last) then s.last = t end
  end

  -- The lines that make most of a trace, read without building a table
  -- (twice as fast): data (the sizes counted) and text of one piece with no
  -- escapes. A torn line never matches (it would end in "]}"). Returns false
  -- for any other line: the caller decodes it.
  local match, gmatch, tonumber = string.match, string.gmatch, tonumber
  local function line(l)
    local t, ev, id, rest = match(l, '^{"t":([%d.]+),"ev":"(%l+)","s":(%d+),(.*)}$')
    if not t then return false end
    if ev == "text" then  -- one piece, no escapes (else: decoded)
      local piece = match(rest, '^"pieces":%["([^"\\]*)"%]$')
      if not piece then return false end
      t, id = tonumber(t), tonumber(id)
      local s = current[id] or open(id, t)
      s.plain_candidate, s.data_ticks = false, nil
      tick(s, t, piece)
      if not s.last or t > s.last then s.last = t end
      return true
    elseif ev == "data" then
      local sizes = match(rest, '^"sizes":%[([%d,]*)%]$')
      if not sizes then return false end
      t, id = tonumber(t), tonumber(id)
      local s = current[id] or open(id, t)
      s.plain_candidate = false
      local d = s.data_ticks
      if d and sizes ~= "" then
        for _ in gmatch(sizes, "%d+") do d[#d + 1] = t end
      end
      if not s.last or t > s.last then s.last = t end
      return true
    end
    return false
  end

  local function done()
    for _, s in ipairs(m.streams) do
      local d = s.data_ticks
      if d then  -- no text came: the events are the tokens
        for i = 1, #d do tick(s, d[i]) end
        s.data_ticks = nil
      end
      if not s.label then s.label = "stream " .. tostring(s.id) end
      if s.error then s.reason = s.reason or s.error end
    end
  end

  return { feed = feed, line = line, done = done }
end

return M
