-- Reads a sluice.agent transcript (run_start, request, event, tool_start,
-- tool_end, interrupt, turn_end, run_end records, each with its time t) into
-- a report model: one row a turn, from its request to its turn_end, its
-- content (and reasoning) events as tokens, its tools as spans. The
-- transcript has no line for a stop's decision: a stopped turn's decision is
-- drawn at its last event, its close at its turn_end.
local model = require "sluice.report.model"

local M = {}

function M.reader(m)
  local runs, turns, tools = 0, nil, nil
  local rows = {}  -- { stream, run }

  local function turn_of(r)
    local s = turns and turns[r.turn]
    if not s and r.turn ~= nil then  -- a transcript that began mid-run
      s = model.stream(m, { start = r.t, turn = r.turn })
      turns = turns or {}
      turns[r.turn] = s
      rows[#rows + 1] = { s, runs }
    end
    return s
  end

  local handlers = {}

  function handlers.run_start(r)
    runs = runs + 1
    turns, tools = {}, {}
    m.model_name = r.model
  end

  function handlers.request(r)
    turns = turns or {}
    local s = model.stream(m, { start = r.t, turn = r.turn, last = r.t })
    turns[r.turn] = s
    rows[#rows + 1] = { s, runs }
  end

  function handlers.event(r)
    local s = turn_of(r)
    if not s then return end
    if (r.event == "content" or r.event == "reasoning") and type(r.text) == "string" then
      model.tick(s, r.t, r.event == "content" and r.text or "")
    elseif r.event == "error" then
      s.error = r.error
    end
    s.last_event = r.t
    s.last = r.t
  end

  function handlers.tool_start(r)
    local s = turn_of(r)
    if not s then return end
    s.tools = s.tools or {}
    local tool = { name = r.name, start = r.t, early = r.early }
    s.tools[#s.tools + 1] = tool
    tools = tools or {}
    if r.call_id then tools[r.call_id] = tool end
  end

  function handlers.tool_end(r)
    local tool = tools and r.call_id and tools[r.call_id]
    if tool then tool.stop, tool.ok = r.t, r.ok == true end
  end

  function handlers.turn_end(r)
    local s = turn_of(r)
    if not s then return end
    s.close, s.last = r.t, r.t
    if type(r.error) == "string" then
      s.state, s.error, s.reason = "failed", r.error, r.error
    elseif type(r.stop_reason) == "string" then
      s.state, s.reason, s.stop = "cancelled", r.stop_reason, s.last_event or r.t
    else
      s.state = "done"
    end
  end

  function handlers.interrupt(r)
    local s = turn_of(r)
    if not s then return end
    s.state = "cancelled"
    s.stop = s.stop or s.last_event or r.t
    s.reason = "interrupt: " .. tostring(r.note)
  end

  function handlers.run_end() end

  local function feed(r)
    local h = type(r.type) == "string" and handlers[r.type]
    if not h or type(r.t) ~= "number" then return end
    h(r)
  end

  local function done()
    for _, row in ipairs(rows) do
      local s, run = row[1], row[2]
      s.turn = math.tointeger(s.turn) or s.turn
      s.id = runs > 1 and ("%d.%s"):format(run, tostring(s.turn)) or tostring(s.turn)
      s.label = runs > 1 and ("run %d turn %s"):format(run, tostring(s.turn)) or ("turn " .. tostring(s.turn))
      s.last_event = nil
    end
    if #rows > 0 then
      model.note(m, "an agent transcript has no line for a stop's decision: it is drawn at the turn's last event")
    end
  end

  return { feed = feed, done = done }
end

return M
