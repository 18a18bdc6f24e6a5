-- What the report's pictures share: the colours of outcomes and marks, the
-- row geometry, escaping. The page's script draws with the same numbers
-- (handed to it in its data), the static SVG with these functions.
local M = {}

-- bar: an outcome's colour; tick: its tokens'.
M.colours = {
  finished = { bar = "#4c78a8", tick = "#1d3f66" },
  stopped = { bar = "#f58518", tick = "#8a4300" },
  failed = { bar = "#e45756", tick = "#8b1a1a" },
  open = { bar = "#9d9d9d", tick = "#555555" },
}
M.marks = { start = "#555555", first = "#111111", stop = "#6a3d9a", close = "#111111", confirm = "#2ca02c",
            tool = "#8e44ad" }

M.ROW = 18        -- row height
M.LABEL = 170     -- the label column's width

-- Marks as SVG path data after "M<x> ": the first point is (x, y) with x
-- the mark's time (the page's test reads it back). The page's script draws
-- with the same data (handed to it as D.paths), and each mark's paint.
M.MARK_D = { start = "3v12", first = "4l4 5-4 5-4-5z", stop = "9l-4.5-8h9z", close = "0v18",
             confirm = "9m-4 0a4 4 0 1 0 8 0a4 4 0 1 0-8 0" }
function M.mark_path(kind, x) return ("M%.1f %s"):format(x, M.MARK_D[kind]) end
M.mark_paint = {
  start = ('stroke="%s"'):format(M.marks.start),
  first = ('fill="#fff" stroke="%s"'):format(M.marks.first),
  stop = ('fill="%s"'):format(M.marks.stop),
  close = ('stroke="%s" stroke-width="2.5"'):format(M.marks.close),
  confirm = ('fill="%s" fill-opacity="0.8"'):format(M.marks.confirm),
}

-- s cut to at most n characters (UTF-8 aware), "…" at the cut.
function M.cut(s, n)
  s = tostring(s)
  local len = utf8.len(s)
  if not len then return #s > n and s:sub(1, n - 1) .. "…" or s end
  if len <= n then return s end
  return s:sub(1, utf8.offset(s, n) - 1) .. "…"
end

function M.escape(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                                         ["'"] = "&#39;" }))
end

-- The ticks of an axis over [a, b]: a step of 1, 2 or 5 times a power of
-- ten, about n of them. Returns the step.
function M.axis_step(span, n)
  if span <= 0 then return 1 end
  local raw = span / (n or 8)
  local p = 10 ^ math.floor(math.log(raw, 10))
  for _, k in ipairs { 1, 2, 5, 10 } do
    if k * p >= raw then return k * p end
  end
  return 10 * p
end

-- An axis label: 0, 250 us, 1.5 ms, 2 s.
function M.axis_label(t)
  local a = math.abs(t)
  if a == 0 then return "0" end
  if a < 1e-3 then return ("%g us"):format(tonumber(("%.3g"):format(t * 1e6)))
  elseif a < 1 then return ("%g ms"):format(tonumber(("%.3g"):format(t * 1e3)))
  end
  return ("%g s"):format(tonumber(("%.4g"):format(t)))
end

return M
