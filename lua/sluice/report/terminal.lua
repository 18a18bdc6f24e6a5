-- A report as text: the totals, then one line a stream on a time axis scaled
-- to the terminal's width, coloured by outcome when asked. Past `rows`
-- streams, a band of how many streams were open (and tokens a second) over
-- time stands for the rest.
local model = require "sluice.report.model"

local M = {}

local COLOUR = { finished = "\27[34m", stopped = "\27[33m", failed = "\27[31m", open = "\27[90m" }
local BOLD, DIM, GREEN, RESET = "\27[1m", "\27[2m", "\27[32m", "\27[0m"
local SPARK = { " ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█" }

-- s cut or padded to n characters (UTF-8 aware).
local function fit(s, n, right)
  s = tostring(s):gsub("[%c]", " ")
  local len = utf8.len(s) or #s
  if len > n then
    if n <= 1 then return ("…"):rep(n) end
    local cut = utf8.offset(s, n) or n
    return s:sub(1, cut - 1) .. "…"
  end
  local pad = (" "):rep(n - len)
  return right and pad .. s or s .. pad
end

-- Puts text in lines of at most width characters, broken between words
-- (or between items, with sep = "  ").
local function wrap(text, width, put, sep)
  sep = sep or " "
  local line = ""
  local pattern = sep == " " and "%S+" or "(.-)" .. sep
  for word in (sep == " " and text or text .. sep):gmatch(pattern) do
    if line ~= "" and (utf8.len(line) or #line) + #sep + (utf8.len(word) or #word) > width then
      put(fit(line, width))
      line = "  " .. word
    else
      line = line == "" and word or line .. sep .. word
    end
  end
  if line ~= "" then put(fit(line, width)) end
end

-- The cell (1..cells) a time falls in.
local function cell_of(cells, t0, dt)
  return function(t) return math.max(1, math.min(cells, math.floor((t - t0) / dt) + 1)) end
end

-- The cells of one stream's bar: a list of glyphs, and which are marks.
local function bar(s, cells, t0, dt)
  local out, mark = {}, {}
  local cell = cell_of(cells, t0, dt)
  local a, z = cell(s.start), cell(s.ends)
  local first = s.first and cell(s.first) or z + 1
  for c = 1, cells do
    if c < a or c > z then out[c] = " "
    elseif c < first then out[c] = "·"
    else out[c] = "─"
    end
  end
  for _, t in ipairs(s.ticks) do out[cell(t)] = "━" end
  if s.stop then
    out[cell(s.stop)], mark[cell(s.stop)] = "◆", true
  end
  local endglyph = s.outcome == "stopped" and "✕" or s.outcome == "failed" and "✗" or
                   s.outcome == "finished" and "┃" or "…"
  out[z], mark[z] = endglyph, true
  if s.confirm then
    local c = cell(s.confirm)
    if c ~= z then out[c], mark[c] = "✓", "confirm" end
  end
  return out, mark
end

-- The band: for each cell, the streams open in it, and the tokens in it.
local function band(streams, cells, t0, dt)
  local open, tokens = {}, {}
  for c = 1, cells + 1 do open[c], tokens[c] = 0, 0 end
  local cell = cell_of(cells, t0, dt)
  for _, s in ipairs(streams) do
    open[cell(s.start)] = open[cell(s.start)] + 1
    open[cell(s.ends) + 1] = open[cell(s.ends) + 1] - 1
    for _, t in ipairs(s.ticks) do
      local c = cell(t)
      tokens[c] = tokens[c] + 1
    end
  end
  local run = 0
  for c = 1, cells do
    run = run + open[c]
    open[c] = run
  end
  open[cells + 1] = nil
  tokens[cells + 1] = nil
  return open, tokens
end

local function spark(values)
  local max = 0
  for _, v in ipairs(values) do if v > max then max = v end end
  local out = {}
  for i, v in ipairs(values) do
    out[i] = max == 0 and " " or SPARK[v == 0 and 1 or math.max(2, math.ceil(v / max * 8) + 1)]
  end
  return table.concat(out), max
end

-- render(model, { width = columns, colour = bool, rows = max rows (0: all),
-- sort = "start" | "duration" | "tokens" }) -> text.
function M.render(m, o)
  o = o or {}
  local width = math.max(40, o.width or 100)
  local colour = o.colour
  local function paint(code, s) return colour and code .. s .. RESET or s end
  local lines = {}
  local function put(s) lines[#lines + 1] = s end

  local kind = model.KIND_NAMES[m.kind]
  put(paint(BOLD, fit(("sluice report: %s %s"):format(kind, m.source or ""), width)))
  for _, l in ipairs(model.totals_lines(m)) do wrap(l, width, put) end
  if m.plain > 0 then
    wrap(("(%d plain request%s with no events, such as sluice.fetch, left out)"):format(m.plain,
         m.plain == 1 and "" or "s"), width, put)
  end
  for _, n in ipairs(m.notes) do wrap("note: " .. n, width, function(l) put(paint(DIM, l)) end) end
  local streams = model.sorted(m.streams, o.sort)
  local function text()
    for i, l in ipairs(lines) do lines[i] = l:gsub(" +$", "") end
    return table.concat(lines, "\n") .. "\n"
  end
  if #streams == 0 then return text() end

  local label_w = 6
  for _, s in ipairs(streams) do label_w = math.max(label_w, utf8.len(s.label) or #s.label) end
  label_w = math.min(label_w, 18)
  local info_w = math.min(64, math.max(24, width * 2 // 5))
  local cells = math.max(10, width - label_w - info_w - 3)
  local t0, span = m.t0, math.max(m.t1 - m.t0, 1e-6)
  local dt = span / cells

  -- the axis: 0, the middle, the end
  local axis = {}
  for c = 1, cells do axis[c] = " " end
  local left, mid, right = "0", model.duration(span / 2), model.duration(span)
  local function place(text, at)
    for k = 1, #text do if axis[at + k - 1] then axis[at + k - 1] = text:sub(k, k) end end
  end
  place(left, 1)
  place(mid, math.max(#left + 2, cells // 2 - #mid // 2))
  place(right, cells - #right + 1)
  put(fit("", label_w) .. " " .. table.concat(axis) .. " " .. (m.relative and "(from each request's start)" or ""))

  local limit = o.rows or 200
  if limit > 0 and #streams > limit then
    local open, tokens = band(streams, cells, t0, dt)
    local s_open, max_open = spark(open)
    local s_tok, max_tok = spark(tokens)
    put(fit("open", label_w) .. " " .. s_open .. " " .. ("at most %s streams"):format(model.count(max_open)))
    put(fit("tokens", label_w) .. " " .. s_tok .. " " ..
        ("at most %s tokens/s"):format(model.count(math.floor(max_tok / dt + 0.5))))
  end

  local shown = limit > 0 and math.min(limit, #streams) or #streams
  for i = 1, shown do
    local s = streams[i]
    local glyphs, marks = bar(s, cells, t0, dt)
    local drawn = table.concat(glyphs)
    if colour then  -- the bar in its outcome's colour, marks bold, the server's stop green
      local c = COLOUR[s.outcome]
      for k, g in ipairs(glyphs) do
        if marks[k] == "confirm" then glyphs[k] = GREEN .. g .. c
        elseif marks[k] then glyphs[k] = BOLD .. g .. RESET .. c end
      end
      drawn = c .. table.concat(glyphs) .. RESET
    end
    local word = s.outcome == "finished" and "done" or s.outcome == "stopped" and "stop" or
                 s.outcome == "failed" and "fail" or "open"
    local info = ("%4s tok %8s %s"):format(model.count(s.tokens), model.duration(s.ends - s.start), word)
    if s.reason and s.outcome ~= "finished" then info = info .. " " .. s.reason end
    if s.confirm then info = info .. " ✓" end
    put(fit(s.label, label_w) .. " " .. drawn .. " " .. fit(info, info_w))
  end
  if shown < #streams then
    put(("… %s more streams (--rows 0 lists them all)"):format(model.count(#streams - shown)))
  end
  wrap("· waiting  ━ tokens  ◆ stop decision  ✕ stopped, closed  ┃ finished  ✗ failed  " ..
       "✓ server confirmed", width, function(l) put(paint(DIM, l)) end, "  ")
  return text()
end

return M
