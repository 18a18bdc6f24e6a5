-- The model a report draws, whatever it was read from (a trace, sluice batch
-- output, an agent transcript): streams with their marks, and the totals.
-- Readers fill streams; model.finish derives outcomes, tokens saved and the
-- totals. The renderers (html, svg, terminal) read nothing else.
--
-- A stream: id, label, start, status, first (first token), ticks
-- (each token's time, in order), pieces (the text of each tick, until the
-- text reaches TEXT_CAP bytes), stop (the decision) and reason, close (the
-- socket's), confirm (when the server stopped) and confirm_how, last (the
-- last time seen), state, error, max_tokens, tools ({name, start, stop, ok}),
-- estimated (token times spread evenly: the input kept no times).
-- After finish: outcome ("finished", "stopped", "failed", "open"), tokens,
-- saved (stopped, with max_tokens known), ghost (when it would have ended at
-- its own pace), ends (where the row ends), text
-- and offsets (text:sub(1, offsets[i]) is what had come by tick i).
local M = {}

M.TEXT_CAP = 4000
M.OUTCOMES = { "finished", "stopped", "failed", "open" }

function M.new(kind, source)
  return { kind = kind, source = source, streams = {}, notes = {}, skipped = 0, torn = false, plain = 0 }
end

-- A new stream of the model, in the order streams are met.
function M.stream(model, fields)
  local s = fields or {}
  s.ticks = s.ticks or {}
  s.pieces = s.pieces or {}
  s.ntext = s.ntext or 0
  model.streams[#model.streams + 1] = s
  return s
end

-- Adds one token (its time and its text, when known) to s.
function M.tick(s, t, piece)
  local ticks = s.ticks
  ticks[#ticks + 1] = t
  if not s.first then s.first = t end
  if piece and s.ntext < M.TEXT_CAP then
    local pieces = s.pieces
    pieces[#ticks] = piece
    s.ntext = s.ntext + #piece
  end
end

function M.note(model, text)
  model.notes[#model.notes + 1] = text
end

local function median(list)
  local n = #list
  if n == 0 then return nil end
  table.sort(list)
  if n % 2 == 1 then return list[(n + 1) // 2] end
  return (list[n // 2] + list[n // 2 + 1]) / 2
end
-- What each kind of input is called on a page.
M.KIND_NAMES = { trace = "trace", batch = "batch output", agent = "agent transcript" }

local function outcome_of(s)
  if s.state == "done" then return "finished"
  elseif s.state == "cancelled" then return "stopped"
  elseif s.state == "failed" then return "failed"
  end
  return "open"
end

-- Derives what the renderers draw; drops plain requests (no events, no text,
-- finished: a sluice.fetch) unless keep_plain. Returns the model.
function M.finish(model, keep_plain)
  local kept = {}
  local t0, t1 = math.huge, -math.huge
  local tot = { streams = 0, finished = 0, stopped = 0, failed = 0, open = 0, tokens = 0, saved = 0,
                saved_known = 0, saved_unknown = 0 }
  local decision_close, close_confirm, decision_confirm = {}, {}, {}
  for _, s in ipairs(model.streams) do
    local plain = s.plain_candidate and s.state == "done" and #s.ticks == 0
    if plain and not keep_plain then
      model.plain = model.plain + 1
    else
      kept[#kept + 1] = s
      s.outcome = s.outcome or outcome_of(s)
      s.tokens = #s.ticks
      local start = s.start or s.first or s.last or 0
      s.start = start
      local ends = s.close or s.last or start
      if s.stop and s.stop > ends then ends = s.stop end
      if s.last and s.last > ends then ends = s.last end
      if #s.ticks > 0 and s.ticks[#s.ticks] > ends then ends = s.ticks[#s.ticks] end
      s.ends = ends
      for _, tool in ipairs(s.tools or {}) do
        if tool.stop and tool.stop > t1 then t1 = tool.stop end
      end
      if start < t0 then t0 = start end
      if ends > t1 then t1 = ends end
      if s.confirm and s.confirm > t1 then t1 = s.confirm end
      if s.confirm and s.confirm < t0 then t0 = s.confirm end

      -- the text, and how much of it had come by each tick
      local parts, offsets, n = {}, {}, 0
      for i = 1, #s.ticks do
        local p = s.pieces[i]
        if p then
          parts[#parts + 1] = p
          n = n + #p
        end
        offsets[i] = n
      end
      s.text = s.text or table.concat(parts)
      s.offsets = s.text_whole and {} or offsets
      s.pieces = nil

      tot.streams = tot.streams + 1
      tot[s.outcome] = tot[s.outcome] + 1
      tot.tokens = tot.tokens + s.tokens
      if s.outcome == "stopped" then
        if s.max_tokens then
          s.saved = math.max(0, s.max_tokens - s.tokens)
          local n = #s.ticks
          if s.saved > 0 and n >= 2 and s.close and not s.estimated then  -- where it would have ended
            s.ghost = s.close + s.saved * (s.ticks[n] - s.ticks[1]) / (n - 1)
          end
          tot.saved = tot.saved + s.saved
          tot.saved_known = tot.saved_known + 1
        else
          tot.saved_unknown = tot.saved_unknown + 1
        end
      end
      if s.stop and s.close then decision_close[#decision_close + 1] = s.close - s.stop end
      if s.confirm and s.close then close_confirm[#close_confirm + 1] = s.confirm - s.close end
      if s.confirm and s.stop then decision_confirm[#decision_confirm + 1] = s.confirm - s.stop end
    end
  end
  tot.decision_close = median(decision_close)
  tot.decision_close_n = #decision_close
  tot.close_confirm = median(close_confirm)
  tot.close_confirm_n = #close_confirm
  tot.decision_confirm = median(decision_confirm)
  tot.decision_confirm_n = #decision_confirm
  if t0 == math.huge then t0, t1 = 0, 0 end
  local t1_ghost = t1
  for _, s in ipairs(kept) do
    if s.ghost and s.ghost > t1_ghost then t1_ghost = s.ghost end
  end
  model.streams, model.totals = kept, tot
  model.t0, model.t1, model.t1_ghost = t0, t1, t1_ghost
  tot.span = t1 - t0
  return model
end

-- The order of rows: by "start" (then id), "duration" or "tokens" (most
-- first). Returns a new list.
function M.sorted(streams, by)
  local list = table.move(streams, 1, #streams, 1, {})
  local key
  if by == "duration" then key = function(s) return -(s.ends - s.start) end
  elseif by == "tokens" then key = function(s) return -s.tokens end
  else key = function(s) return s.start end
  end
  local index = {}
  for i, s in ipairs(list) do index[s] = i end
  table.sort(list, function(a, b)
    local ka, kb = key(a), key(b)
    if ka ~= kb then return ka < kb end
    return index[a] < index[b]
  end)
  return list
end

-- ---------------------------------------------------------------------------
-- Words and numbers the renderers share

-- A duration for people: 340 us, 12.3 ms, 1.25 s, 2 min 5 s; signed.
function M.duration(d)
  if d == nil then return "-" end
  local sign = d < 0 and "-" or ""
  d = math.abs(d)
  if d < 1e-3 then return ("%s%.0f us"):format(sign, d * 1e6)
  elseif d < 1 then return ("%s%.3g ms"):format(sign, d * 1e3)
  elseif d < 120 then return ("%s%.3g s"):format(sign, d)
  end
  return ("%s%d min %d s"):format(sign, d // 60, math.floor(d % 60))
end

-- 12345 -> "12,345".
function M.count(n)
  local s = tostring(math.tointeger(n) or n)
  local int, rest = s:match("^(-?%d+)(.*)$")
  if not int then return s end
  int = int:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^(-?),", "%1")
  return int .. rest
end

-- The totals as lines of text (the terminal's, the SVG's, an example's).
function M.totals_lines(model)
  local t, count, dur = model.totals, M.count, M.duration
  local first = ("%s stream%s: %s finished, %s stopped early, %s failed"):format(
    count(t.streams), t.streams == 1 and "" or "s", count(t.finished), count(t.stopped), count(t.failed))
  if t.open > 0 then first = first .. (", %s with no end"):format(count(t.open)) end
  first = first .. (model.relative and ", the longest %s" or " over %s"):format(dur(t.span))
  local saved
  if t.saved_known > 0 then
    saved = ("%s tokens saved"):format(count(t.saved))
    if t.saved_unknown > 0 then
      saved = saved .. (" (max_tokens known for %s of %s stopped)"):format(count(t.saved_known), count(t.stopped))
    end
  else
    saved = t.stopped == 0 and "0 tokens saved" or "tokens saved unknown (no max_tokens)"
  end
  local second = ("%s tokens received, %s"):format(count(t.tokens), saved)
  if t.close_confirm_n > 0 then
    second = second .. ("; %s stop%s confirmed by the server"):format(count(t.close_confirm_n),
                                                                     t.close_confirm_n == 1 and "" or "s")
  end
  local third = ("median decision->close %s, close->server stopped %s"):format(dur(t.decision_close),
                                                                             dur(t.close_confirm))
  if t.decision_confirm_n > 0 then
    third = third .. (", decision->server stopped %s"):format(dur(t.decision_confirm))
  end
  return { first, second, third }
end

return M
