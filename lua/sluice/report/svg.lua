-- A report as one static SVG picture, made here in Lua: the totals, a time
-- axis, one row a stream with the same marks as the page (or, past `rows`
-- streams, a band of how many streams were open over time, by outcome).
local model = require "sluice.report.model"
local style = require "sluice.report.style"

local esc, format = style.escape, string.format

local M = {}

local function f1(x) return format("%.1f", x) end

-- render(model, { width = pixels (1200), rows = most rows drawn (200; 0: all),
-- sort = }) -> the SVG text.
function M.render(m, opts)
  opts = opts or {}
  local W = math.max(400, opts.width or 1200)
  local RH, LW = style.ROW, style.LABEL
  local CW = W - LW - 18
  local out = {}
  local function put(s) out[#out + 1] = s end
  local streams = model.sorted(m.streams, opts.sort)
  local limit = opts.rows or 200
  local folded = limit > 0 and #streams > limit
  local v1 = math.max(m.t1 - m.t0, 1e-6)  -- the span drawn (a static picture: no zoom)
  local function x_of(t) return LW + (t - m.t0) / v1 * CW end
  local function clamp(x) return math.max(LW, math.min(LW + CW, x)) end

  local head = {}
  local kind = model.KIND_NAMES[m.kind]
  head[1] = ("sluice report: %s %s"):format(kind, m.source or "")
  for _, l in ipairs(model.totals_lines(m)) do head[#head + 1] = l end
  for _, n in ipairs(m.notes) do head[#head + 1] = "note: " .. n end
  local top = #head * 17 + 10
  local legend_y = top + 4
  local axis_y = legend_y + 22
  local body_y = axis_y + 26
  local H = body_y + (folded and 80 or #streams * RH) + 10

  put(format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" ' ..
             'font-family="system-ui,sans-serif" font-size="12">', W, H, W, H))
  put(format('<rect width="%d" height="%d" fill="#fff"/>', W, H))
  for i, l in ipairs(head) do
    put(format('<text x="10" y="%d"%s>%s</text>', i * 17, i == 1 and ' font-weight="bold" font-size="14"' or
               (l:find("^note") and ' fill="#777"' or ""), esc(l)))
  end

  -- legend
  local x = 10
  for _, item in ipairs { { "start", "request sent" }, { "first", "first token" }, { "stop", "stop decision" },
                          { "close", "socket closed" }, { "confirm", "server stopped" } } do
    local k = item[1]
    put(format('<g transform="translate(0,%d)"><path %s d="%s"/><text x="%g" y="13">%s</text></g>', legend_y,
               style.mark_paint[k],
               style.mark_path(k, x + 5), x + 14, item[2]))
    x = x + 28 + #item[2] * 7 // 1
  end
  for _, o in ipairs(model.OUTCOMES) do
    put(format('<rect x="%g" y="%d" width="10" height="10" fill="%s"/><text x="%g" y="%d">%s</text>', x,
               legend_y + 4, style.colours[o].bar, x + 14, legend_y + 13, o == "open" and "no end" or o))
    x = x + 28 + #o * 7 // 1
  end

  -- axis
  local step = style.axis_step(v1, math.max(2, CW // 110))
  put(format('<g font-size="11" fill="#555"><text x="10" y="%d">%s</text>', axis_y + 11,
             m.relative and "from each start" or "from the first start"))
  local t = 0
  while t <= v1 + step * 1e-9 do
    local ax = f1(LW + t / v1 * CW)
    put(format('<line x1="%s" x2="%s" y1="%d" y2="%d" stroke="#ddd"/><text x="%s" y="%d" text-anchor="middle">%s' ..
               '</text>', ax, ax, axis_y + 14, H - 8, ax, axis_y + 11, style.axis_label(t)))
    t = t + step
  end
  put('</g>')

  if folded then
    -- the band: streams open per bucket, stacked by outcome
    local n, BH = math.max(10, CW // 3), 70
    local bw = v1 / n
    local layers, acc = {}, {}
    for b = 1, n do acc[b] = 0 end
    for _, o in ipairs(model.OUTCOMES) do
      local diff = {}
      for b = 1, n + 1 do diff[b] = 0 end
      for _, s in ipairs(streams) do
        if s.outcome == o then
          local b0 = math.max(1, math.min(n, math.floor((s.start - m.t0) / bw) + 1))
          local b1 = math.max(1, math.min(n, math.floor((s.ends - m.t0) / bw) + 1))
          diff[b0] = diff[b0] + 1
          diff[b1 + 1] = diff[b1 + 1] - 1
        end
      end
      local run, tops = 0, {}
      for b = 1, n do
        run = run + diff[b]
        acc[b] = acc[b] + run
        tops[b] = acc[b]
      end
      layers[#layers + 1] = { o, tops }
    end
    local max = 1
    for b = 1, n do if acc[b] > max then max = acc[b] end end
    local base = body_y + BH
    for i = #layers, 1, -1 do
      local tops, d = layers[i][2], { format("M%d %d", LW, base) }
      for b = 1, n do
        d[#d + 1] = format("V%sH%s", f1(base - tops[b] / max * (BH - 4)), f1(LW + b * CW / n))
      end
      d[#d + 1] = format("V%dZ", base)
      put(format('<path class="layer" data-outcome="%s" fill="%s" d="%s"/>', layers[i][1],
                 style.colours[layers[i][1]].bar, table.concat(d)))
    end
    put(format('<text x="10" y="%d">open streams</text><text x="10" y="%d" fill="#555">at most %s</text>',
               body_y + 20, body_y + 36, model.count(max)))
    put(format('<text x="10" y="%d" fill="#555">%s streams; the rows: sluice report --rows 0</text>', body_y + 52,
               model.count(#streams)))
  else
    for i, s in ipairs(streams) do
      local y = body_y + (i - 1) * RH
      local c = style.colours[s.outcome]
      put(format('<g class="row" data-id="%s" data-outcome="%s" transform="translate(0,%d)">', esc(s.id),
                 s.outcome, y))
      if i % 2 == 0 then put(format('<rect x="0" y="0" width="%d" height="%d" fill="#f7f7f7"/>', W, RH)) end
      put(format('<text x="6" y="13">%s</text>', esc(style.cut(s.label, 26))))
      local first = s.first or s.ends
      if first > s.start then
        put(format('<line x1="%s" x2="%s" y1="9" y2="9" stroke="%s" stroke-dasharray="2 2"/>', f1(clamp(x_of(s.start))),
                   f1(clamp(x_of(first))), c.bar))
      end
      local bx0, bx1 = clamp(x_of(first)), clamp(x_of(s.ends))
      put(format('<rect class="bar" x="%s" y="4" width="%s" height="10" fill="%s" fill-opacity="0.45"/>', f1(bx0),
                 f1(math.max(s.outcome == "failed" and 3 or 1, bx1 - bx0)), c.bar))
      if s.ghost and s.close then
        local g0, g1 = clamp(x_of(s.close)), clamp(x_of(s.ghost))
        if g1 - g0 >= 2 then
          put(format('<rect class="ghost" x="%s" y="5" width="%s" height="8" fill="none" stroke="%s" ' ..
                     'stroke-dasharray="3 2"/>', f1(g0), f1(g1 - g0), c.bar))
        end
      end
      local d = {}
      for k, tk in ipairs(s.ticks) do d[k] = format("M%s 3v12", f1(x_of(tk))) end
      put(format('<path class="ticks" data-n="%d" stroke="%s" d="%s"/>', #d, c.tick, table.concat(d)))
      for _, tool in ipairs(s.tools or {}) do
        local a, b = clamp(x_of(tool.start)), clamp(x_of(tool.stop or s.ends))
        put(format('<rect class="tool" x="%s" y="15" width="%s" height="3" fill="%s"/>', f1(a),
                   f1(math.max(1, b - a)), style.marks.tool))
      end
      local function mark(kind, at)
        if at then
          put(format('<path class="mark %s" %s d="%s"/>', kind, style.mark_paint[kind], style.mark_path(kind, x_of(at))))
        end
      end
      mark("start", s.start)
      mark("first", s.first)
      mark("close", s.close)
      mark("stop", s.stop)
      mark("confirm", s.confirm)
      local why = s.outcome ~= "finished" and (s.reason or (s.outcome == "open" and "no end in the input")) or nil
      local wx = x_of(s.ends) + 8
      if why and wx < LW + CW - 40 then
        why = style.cut(why, 40)
        put(format('<text x="%s" y="13" font-size="11" fill="%s">%s</text>', f1(wx), c.tick, esc(why)))
      end
      put('</g>')
    end
  end
  put('</svg>\n')
  return table.concat(out, "\n")
end

return M
