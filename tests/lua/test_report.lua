-- sluice report, looked at as a person would: headless Chromium renders the
-- page of a known trace (tests/lua/fixtures/report_trace.jsonl, made by
-- make_report_trace.lua against sluice-mock), and the marks it drew are
-- checked in its DOM against the trace itself, read here independently of
-- the report's own reader: the rows, the token ticks of each and where they
-- stand, the stop mark left of the close mark, the server's confirmation,
-- the colours by outcome, the totals; sorting, zooming, filtering and the
-- hover text through the page's #hash. A screenshot is kept as
-- build/report-screenshot.png. Then the terminal timeline, --svg, sluice
-- batch output and an agent transcript as inputs, 10,000 streams (the page
-- draws a band and keeps its DOM small), a torn last line, usage errors, and
-- examples/see_the_stop.lua.
local sluice = require "sluice"
local cjson = require "cjson.safe"
local T = require "testlib"
local style = require "sluice.report.style"

local here = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
local FIXTURE = here .. "/fixtures/report_trace.jsonl"
local bin = assert(os.getenv("SLUICE_BIN"), "SLUICE_BIN")
local build_dir = bin:match("^(.*)/[^/]*$") or "."

-- ---------------------------------------------------------------------------
-- Helpers

local procs = require "procs"
local tmpdir, rmdir = procs.tmpdir, procs.rmdir

local function read_file(p) return assert(T.read_file(p), "cannot read " .. p) end

local write_file = T.write_file

-- sluice report ARGS with COLUMNS=columns: code, stdout, stderr.
local function report(args, columns)
  local argv = { "env", "COLUMNS=" .. tostring(columns or 100), bin, "report" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = assert(sluice.exec(argv, { timeout = 60 }))
  return r.code, r.stdout, r.stderr
end

-- Chromium, headless, on url; what = "--dump-dom" or "--screenshot=FILE".
-- Returns stdout (the DOM after the page's script ran).
local function chromium(url, what, size)
  local profile = tmpdir()
  local r, err = sluice.exec({ "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", "--user-data-dir=" .. profile,
                               "--window-size=" .. (size or "1200,800"), what, url }, { timeout = 90 })
  rmdir(profile)
  T.ok(r, "chromium ran (scripts/setup installs it): " .. tostring(err))
  T.eq(r.code, 0, "chromium's exit status (stderr: " .. r.stderr:sub(-400) .. ")")
  return r.stdout
end

local function dom(path, hash)
  local out = chromium("file://" .. path .. (hash and ("#" .. hash) or ""), "--dump-dom")
  T.contains(out, 'data-ready="1"', "the page's script ran to its end")
  return out
end

-- The drawn rows of a DOM: { id, outcome, tokens, ticks = {x...}, n (data-n),
-- marks = { kind = x }, bar = fill colour }, in drawing order; and the rows
-- SVG's frame { x0, w, v0, v1 }.
local function rows_of(html)
  html = html:match('<svg id="rows".-</svg>') or html:match("^<svg.*") or ""  -- not the script's text
  local svg = html:match('<svg id="rows"[^>]*>')
  local frame
  if svg then
    frame = { x0 = tonumber(svg:match('data%-x0="([^"]+)"')), w = tonumber(svg:match('data%-w="([^"]+)"')),
              v0 = tonumber(svg:match('data%-v0="([^"]+)"')), v1 = tonumber(svg:match('data%-v1="([^"]+)"')) }
  end
  local rows = {}
  for attrs, body in html:gmatch('<g class="row"([^>]*)>(.-)</g>') do
    local r = { id = attrs:match('data%-id="([^"]*)"'), outcome = attrs:match('data%-outcome="([^"]*)"'),
                tokens = tonumber(attrs:match('data%-tokens="([^"]*)"')), ticks = {}, marks = {} }
    local tick_attrs = body:match('<path class="ticks"([^>]*)>')
    r.n = tonumber(tick_attrs:match('data%-n="(%d+)"'))
    for x in (tick_attrs:match(' d="([^"]*)"') or ""):gmatch("M([%d.%-]+) ") do r.ticks[#r.ticks + 1] = tonumber(x) end
    for kind, x in body:gmatch('<path class="mark (%a+)"[^>]- d="M([%d.%-]+) ') do r.marks[kind] = tonumber(x) end
    r.bar = body:match('<rect class="bar" fill="([^"]+)"')
    rows[#rows + 1] = r
  end
  return rows, frame
end

-- The trace as this test reads it, on its own: the streams a report draws
-- (not the plain GETs of /stats, which carry no events), in start order.
local function tally(path)
  local by_id, order = {}, {}
  for line in io.lines(path) do
    local r = cjson.decode(line)
    if type(r) == "table" then
      local id = math.tointeger(r.s)
      local s = by_id[id]
      if r.ev == "start" then
        s = { id = id, start = r.t, tag = r.tag, method = r.method, ticks = {}, pieces = {} }
        by_id[id] = s
        order[#order + 1] = s
      elseif r.ev == "note" then s.max_tokens = math.tointeger(r.max_tokens)
      elseif r.ev == "text" then
        for _, p in ipairs(r.pieces) do
          s.ticks[#s.ticks + 1] = r.t
          s.pieces[#s.pieces + 1] = p
        end
      elseif r.ev == "stop" then s.stop, s.reason = r.t, r.reason
      elseif r.ev == "close" then s.close = r.t
      elseif r.ev == "end" then s.state, s.events = r.state, r.events
      elseif r.ev == "confirm" then s.confirm = r.server_stopped_at
      end
    end
  end
  local drawn, t0 = {}, math.huge
  local totals = { streams = 0, finished = 0, stopped = 0, failed = 0, tokens = 0, saved = 0, confirmed = 0 }
  for _, s in ipairs(order) do
    if not (s.method == "GET" and s.events == 0) then
      drawn[#drawn + 1] = s
      s.outcome = ({ done = "finished", cancelled = "stopped", failed = "failed" })[s.state]
      t0 = math.min(t0, s.start)
      totals.streams = totals.streams + 1
      totals[s.outcome] = totals[s.outcome] + 1
      totals.tokens = totals.tokens + #s.ticks
      if s.outcome == "stopped" then totals.saved = totals.saved + s.max_tokens - #s.ticks end
      if s.confirm then totals.confirmed = totals.confirmed + 1 end
    end
  end
  return drawn, t0, totals
end

local function near(a, b, what, tol)
  T.ok(a and b and math.abs(a - b) <= (tol or 0.2), ("%s: %s is not near %s"):format(what, tostring(a), tostring(b)))
end

local function total_of(html, key)
  return html:match('data%-total="' .. key .. '"><b>([^<]*)</b>')
end

-- ---------------------------------------------------------------------------
-- The page of a known trace

local streams, T0, TOT = tally(FIXTURE)

T.case("the fixture is what the other cases assume", function()
  T.eq(TOT.streams, 8, "streams")
  T.eq(TOT.finished, 3, "finished")
  T.eq(TOT.stopped, 4, "stopped")
  T.eq(TOT.failed, 1, "failed")
  T.ok(TOT.confirmed >= 4, "confirm lines")
end)

T.case("page: one row per stream, every token a tick where the trace puts it, marks and colours", function()
  local dir = tmpdir()
  local page = dir .. "/timeline.html"
  local code, out = report({ FIXTURE, "-o", page })
  T.eq(code, 0, "exit status")
  T.contains(out, "wrote " .. page, "says what it wrote")
  local html = read_file(page)
  T.ok(not html:find("https?://[%w.]+/[^\"]*%.js") and not html:find("<link", 1, true) and
       not html:find(' src="', 1, true), "nothing is loaded from anywhere")
  local d = dom(page)
  local rows, frame = rows_of(d)
  T.eq(#rows, #streams, "rows drawn")
  T.ok(frame and frame.w > 500, "the rows' frame")
  local function x_of(t) return frame.x0 + (t - T0 - frame.v0) / (frame.v1 - frame.v0) * frame.w end
  local colours = {}
  for i, s in ipairs(streams) do
    local r = rows[i]
    local what = "row " .. s.tag
    T.eq(r.id, tostring(s.id), what .. ": in start order")
    T.eq(r.outcome, s.outcome, what .. ": outcome")
    T.eq(r.n, #s.ticks, what .. ": token ticks")
    T.eq(#r.ticks, #s.ticks, what .. ": ticks in the path")
    for k, t in ipairs(s.ticks) do near(r.ticks[k], x_of(t), what .. " tick " .. k) end
    near(r.marks.start, x_of(s.start), what .. ": request start")
    if s.ticks[1] then near(r.marks.first, x_of(s.ticks[1]), what .. ": first token") end
    T.eq(r.marks.first ~= nil, #s.ticks > 0, what .. ": a first-token mark when a token came")
    near(r.marks.close, x_of(s.close), what .. ": socket close")
    if s.outcome == "stopped" then
      near(r.marks.stop, x_of(s.stop), what .. ": stop decision")
      T.le(r.marks.stop, r.marks.close, what .. ": the stop mark is not right of the close mark")
      T.ok(#r.ticks == 0 or r.marks.stop >= r.ticks[#r.ticks] - 0.2, what .. ": decided after the last token")
    else
      T.eq(r.marks.stop, nil, what .. ": no stop mark")
    end
    if s.confirm then near(r.marks.confirm, x_of(s.confirm), what .. ": server stopped") end
    T.eq(r.marks.confirm ~= nil, s.confirm ~= nil, what .. ": a confirmation mark when the trace has one")
    T.eq(r.bar, style.colours[s.outcome].bar, what .. ": colour of its outcome")
    colours[s.outcome] = r.bar
  end
  T.ok(colours.finished ~= colours.stopped and colours.stopped ~= colours.failed and
       colours.finished ~= colours.failed, "three outcomes, three colours")
  -- the totals in the header
  T.eq(total_of(d, "streams"), tostring(TOT.streams), "total streams")
  T.eq(total_of(d, "stopped"), tostring(TOT.stopped), "total stopped early")
  T.eq(total_of(d, "failed"), tostring(TOT.failed), "total failed")
  T.eq(total_of(d, "tokens"), tostring(TOT.tokens), "total tokens received")
  T.eq(total_of(d, "saved"), tostring(TOT.saved), "total tokens saved")
  T.ok(total_of(d, "decision_close"):match("^[%d.]+ [um]s$"), "median decision->close")
  T.ok(total_of(d, "close_confirm"):match("^%-?[%d.]+ [um]s$"), "median close->server stopped")
  rmdir(dir)
end)

T.case("page: a zoom on one stop puts the decision left of the close; ticks outside the range are not drawn",
       function()
  local dir = tmpdir()
  local page = dir .. "/timeline.html"
  T.eq(report({ FIXTURE, "-o", page }), 0, "exit status")
  local s
  for _, x in ipairs(streams) do if x.tag == "max-tokens" then s = x end end
  local a, b = s.stop - T0 - 0.002, s.close - T0 + 0.0005
  local rows, frame = rows_of(dom(page, ("zoom=%.6f,%.6f"):format(a, b)))
  near(frame.v0, a, "view from", 1e-6)
  near(frame.v1, b, "view to", 1e-6)
  local function x_of(t) return frame.x0 + (t - T0 - frame.v0) / (frame.v1 - frame.v0) * frame.w end
  for i, x in ipairs(streams) do
    local inside = 0
    for _, t in ipairs(x.ticks) do if t - T0 >= a and t - T0 <= b then inside = inside + 1 end end
    T.eq(rows[i].n, inside, x.tag .. ": ticks in the range")
  end
  local r = rows[4]
  T.eq(r.id, tostring(s.id), "the max-tokens row")
  near(r.marks.stop, x_of(s.stop), "stop decision")
  near(r.marks.close, x_of(s.close), "close")
  T.ok(r.marks.close - r.marks.stop > 20, ("the stop (%s) well left of the close (%s)"):format(r.marks.stop,
                                                                                             r.marks.close))
  rmdir(dir)
end)

T.case("page: sort by tokens and duration, filter by outcome, hover shows the text so far", function()
  local dir = tmpdir()
  local page = dir .. "/timeline.html"
  T.eq(report({ FIXTURE, "-o", page }), 0, "exit status")
  local rows = rows_of(dom(page, "sort=tokens"))
  T.eq(#rows, #streams, "rows")
  for i = 2, #rows do T.le(rows[i].tokens, rows[i - 1].tokens, "tokens, most first") end
  T.ok(rows[1].tokens > rows[#rows].tokens, "an order that shows")
  local by_id = {}
  for _, s in ipairs(streams) do by_id[tostring(s.id)] = s end
  rows = rows_of(dom(page, "sort=duration"))
  local function lasted(id) local s = by_id[id] return s.close - s.start end
  for i = 2, #rows do T.le(lasted(rows[i].id), lasted(rows[i - 1].id) + 1e-4, "duration, longest first") end
  rows = rows_of(dom(page, "show=stopped"))
  T.eq(#rows, TOT.stopped, "only the stopped rows")
  for _, r in ipairs(rows) do T.eq(r.outcome, "stopped", "outcome") end
  -- the keyword stream's tip at its 5th token: its first 5 pieces, not the 6th
  local s
  for _, x in ipairs(streams) do if x.tag == "keyword" then s = x end end
  local d = dom(page, ("hover=%d,%.6f"):format(s.id, s.ticks[5] - T0 + 1e-5))
  local tip = d:match('<div id="tip"[^>]*>(.-)</div>%s*<script')
  T.ok(tip, "the tip is shown")
  T.contains(tip, "keyword", "the tip names the stream")
  T.contains(tip, s.reason, "the tip gives the reason")
  local text = tip:match('<div class="text">(.-)</div>')
  T.eq(text, table.concat(s.pieces, "", 1, 5) .. "…", "the text received by then")
  rmdir(dir)
end)

T.case("page: a screenshot (build/report-screenshot.png)", function()
  local dir = tmpdir()
  local page = dir .. "/timeline.html"
  T.eq(report({ FIXTURE, "-o", page }), 0, "exit status")
  local png = build_dir .. "/report-screenshot.png"
  os.remove(png)
  chromium("file://" .. page, "--screenshot=" .. png, "1200,800")
  local data = read_file(png)
  T.eq(data:sub(1, 8), "\137PNG\r\n\26\n", "a PNG")
  local w, h = string.unpack(">I4I4", data, 17)
  T.eq(w, 1200, "width")
  T.eq(h, 800, "height")
  T.ok(#data > 20000, "a picture with something in it (" .. #data .. " bytes)")
  rmdir(dir)
end)

-- ---------------------------------------------------------------------------
-- Terminal and SVG

T.case("terminal: a line per stream, scaled to the width, the same totals", function()
  local code, out, err = report({ FIXTURE }, 100)
  T.eq(code, 0, "exit status: " .. err)
  local lines = {}
  for l in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  T.eq(#lines, 7 + #streams, "lines: title, 3 totals, the plain requests' note, axis, rows, legend")
  for _, l in ipairs(lines) do T.le(utf8.len(l), 100, "columns of: " .. l) end
  T.ok(not out:find("\27[", 1, true), "no colour into a pipe")
  T.contains(lines[2], ("%d streams: %d finished, %d stopped early, %d failed"):format(TOT.streams, TOT.finished,
                                                                                       TOT.stopped, TOT.failed))
  T.contains(lines[3], ("%d tokens received, %d tokens saved; %d stops confirmed by the server"):format(
    TOT.tokens, TOT.saved, TOT.confirmed))
  T.contains(lines[4], "median decision->close")
  for i, s in ipairs(streams) do
    local l = lines[6 + i]
    T.eq(l:sub(1, #s.tag), s.tag, "row " .. i .. " in start order")
    T.ok(l:find(("%d tok"):format(#s.ticks), 1, true), s.tag .. ": its tokens, in " .. l)
    local mark = ({ finished = "┃", stopped = "✕", failed = "✗" })[s.outcome]
    T.contains(l, mark, s.tag .. ": its end mark")
  end
  -- narrower, and in colour
  code, out = report({ FIXTURE, "--color", "always" }, 60)
  T.eq(code, 0, "exit status")
  for l in out:gmatch("([^\n]*)\n") do T.le(utf8.len((l:gsub("\27%[[%d;]*m", ""))), 60, "columns of: " .. l) end
  T.contains(out, "\27[33m", "stopped streams in yellow")
  T.contains(out, "\27[31m", "failed in red")
end)

T.case("--svg: the picture alone, with the rows and ticks of the trace", function()
  local dir = tmpdir()
  local svg = dir .. "/t.svg"
  local code, out = report({ FIXTURE, "--svg", svg })
  T.eq(code, 0, "exit status")
  T.contains(out, "wrote " .. svg, "says what it wrote")
  local text = read_file(svg)
  T.eq(text:sub(1, 40), '<svg xmlns="http://www.w3.org/2000/svg" ', "an SVG document")
  local rows = rows_of(text)
  T.eq(#rows, #streams, "rows")
  for i, s in ipairs(streams) do
    T.eq(rows[i].n, #s.ticks, s.tag .. ": ticks")
    T.eq(#rows[i].ticks, #s.ticks, s.tag .. ": ticks in the path")
    T.eq(rows[i].marks.stop ~= nil, s.outcome == "stopped", s.tag .. ": a stop mark when stopped")
  end
  -- well-formed: Chromium shows it rather than an XML error
  local d = chromium("file://" .. svg, "--dump-dom")
  T.ok(not d:find("error on line", 1, true), "parses as XML")
  rmdir(dir)
end)

-- ---------------------------------------------------------------------------
-- Other inputs

T.case("sluice batch output: one row per record, told apart from a trace", function()
  local dir = tmpdir()
  local lines = {}
  for i, mt in ipairs { 10, 40, 40 } do
    lines[i] = cjson.encode { custom_id = "q" .. i, url = "/v1/chat/completions",
                              body = { model = "m", max_tokens = mt, mock = { tokens_per_sec = 200 },
                                       messages = { { role = "user", content = "Hi" } } } }
  end
  lines[4] = cjson.encode { custom_id = "q4", url = "/v1/chat/completions",
                            body = { model = "m", mock = { status = 503 }, messages = { { role = "user",
                                                                                             content = "Hi" } } } }
  write_file(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
  local r = assert(sluice.exec({ bin, "batch", "-i", dir .. "/in.jsonl", "-o", dir .. "/out.jsonl", "--base-url",
                                 T.url .. "/v1", "--max-output", "15", "--retries", "0", "-q" }, { timeout = 60 }))
  T.eq(r.code, 0, "sluice batch: " .. r.stderr)
  local want = {}
  for line in io.lines(dir .. "/out.jsonl") do
    local rec = cjson.decode(line)
    want[rec.custom_id] = math.tointeger(rec.sluice.metrics.output_tokens)
  end
  local code, out = report({ dir .. "/out.jsonl" }, 100)
  T.eq(code, 0, "exit status")
  T.contains(out, "sluice report: batch output", "told it is batch output")
  T.contains(out, "4 streams: 1 finished, 2 stopped early, 1 failed", "totals")
  for id, n in pairs(want) do
    T.ok(out:find("\n" .. id .. " [^\n]* " .. n .. " tok", 1), id .. ": its tokens in\n" .. out)
  end
  T.eq(report({ dir .. "/out.jsonl", "-o", dir .. "/b.html" }), 0, "the page")
  local rows = rows_of(dom(dir .. "/b.html"))
  T.eq(#rows, 4, "rows")
  for _, row in ipairs(rows) do
    T.eq(row.n, want[row.id], row.id .. ": ticks")
    T.eq(row.outcome, row.id == "q4" and "failed" or row.id == "q1" and "finished" or "stopped", row.id)
  end
  rmdir(dir)
end)

T.case("agent transcript: a row per turn, an interrupted turn stopped", function()
  local dir = tmpdir()
  local path = dir .. "/run.jsonl"
  local agent = require "sluice.agent"
  local client = require("sluice.openai").client { base_url = T.url .. "/v1", api_key = "" }
  local seen = 0
  local res = agent.run {
    client = client, model = "m", transcript = path, max_turns = 2,
    messages = { { role = "user", content = "Tell me about the mill." } },
    body = { max_tokens = 12, mock = { tokens_per_sec = 200 } },
    on_event = function(ev)
      if ev.type == "content" and ev.turn == 1 then
        seen = seen + 1
        if seen == 4 then return { interrupt = "shorter, please" } end
      end
    end,
  }
  T.eq(res.turns, 2, "two turns")
  local content = {}
  for line in io.lines(path) do
    local rec = cjson.decode(line)
    if rec.type == "event" and rec.event == "content" then
      content[rec.turn] = (content[rec.turn] or 0) + 1
    end
  end
  local code, out = report({ path }, 140)
  T.eq(code, 0, "exit status")
  T.contains(out, "sluice report: agent transcript", "told it is a transcript")
  T.contains(out, "2 streams: 1 finished, 1 stopped early, 0 failed", "totals")
  T.ok(out:find("\nturn 1 [^\n]* " .. content[1] .. " tok [^\n]*interrupt: shorter, please"), "turn 1:\n" .. out)
  T.ok(out:find("\nturn 2 [^\n]* " .. content[2] .. " tok [^\n]*done"), "turn 2:\n" .. out)
  T.eq(report({ path, "-o", dir .. "/a.html" }), 0, "the page")
  local rows = rows_of(dom(dir .. "/a.html"))
  T.eq(#rows, 2, "rows")
  T.eq(rows[1].outcome, "stopped", "turn 1")
  T.eq(rows[1].n, content[1], "turn 1 ticks")
  T.ok(rows[1].marks.stop and rows[1].marks.stop <= rows[1].marks.close, "turn 1: stop, then close")
  T.eq(rows[2].outcome, "finished", "turn 2")
  T.eq(rows[2].n, content[2], "turn 2 ticks")
  rmdir(dir)
end)

T.case("a torn last line is skipped; a run killed mid-way shows streams with no end", function()
  local dir = tmpdir()
  local whole = read_file(FIXTURE)
  write_file(dir .. "/torn.jsonl", whole .. '{"t":1.5,"ev":"data","s":3,"si')
  local code, out, err = report({ dir .. "/torn.jsonl" }, 100)
  T.eq(code, 0, "exit status: " .. err)
  T.contains(out, "the last line was cut short", "says so")
  T.contains(out, ("%d streams: %d finished, %d stopped early, %d failed"):format(TOT.streams, TOT.finished,
                                                                                  TOT.stopped, TOT.failed))
  T.contains(out, ("%d tokens received"):format(TOT.tokens), "the same tokens")
  -- killed: the first 120 lines, the 121st cut in half
  local lines = {}
  for l in whole:gmatch("[^\n]+") do lines[#lines + 1] = l end
  write_file(dir .. "/killed.jsonl", table.concat(lines, "\n", 1, 120) .. "\n" .. lines[121]:sub(1, 20))
  code, out = report({ dir .. "/killed.jsonl" }, 100)
  T.eq(code, 0, "exit status")
  T.contains(out, "the last line was cut short", "says so")
  T.ok(out:find("%d+ with no end"), "streams with no end:\n" .. out)
  T.ok(out:find("\n[^\n]* open"), "a row with no end:\n" .. out)
  rmdir(dir)
end)

-- ---------------------------------------------------------------------------
-- 10,000 streams

-- n streams of `tokens` tokens, 50 at a time, every third stopped halfway.
local function big_trace(path, n, tokens)
  local f = assert(io.open(path, "w"))
  local fmt, t = string.format, 100.0
  for g = 0, n // 50 - 1 do
    local base = g * 50
    for i = 1, 50 do
      f:write(fmt('{"t":%.6f,"ev":"start","s":%d,"method":"POST","url":"http://127.0.0.1:1/v1/chat/completions",' ..
                  '"tag":"r%d"}\n{"t":%.6f,"ev":"note","s":%d,"layer":"openai","max_tokens":40}\n',
                  t, base + i, base + i, t, base + i))
    end
    for k = 1, tokens do
      t = t + 0.01
      for i = 1, 50 do
        local id = base + i
        if id % 3 ~= 0 or k <= tokens // 2 then
          f:write(fmt('{"t":%.6f,"ev":"data","s":%d,"sizes":[173]}\n{"t":%.6f,"ev":"text","s":%d,"pieces":["w%d "]}\n',
                      t, id, t, id, k))
        end
      end
    end
    for i = 1, 50 do
      local id = base + i
      if id % 3 == 0 then
        f:write(fmt('{"t":%.6f,"ev":"stop","s":%d,"reason":"max_tokens:%d"}\n', t, id, tokens // 2))
      end
      f:write(fmt('{"t":%.6f,"ev":"close","s":%d}\n{"t":%.6f,"ev":"end","s":%d,"state":"%s","events":9,"bytes":9}\n',
                  t, id, t, id, id % 3 == 0 and "cancelled" or "done"))
    end
    t = t - tokens * 0.01 + 0.05
  end
  f:close()
end

local function elements(html)
  local n = 0
  for _ in html:gmatch("<%a[%w-]*") do n = n + 1 end
  return n
end

T.case("10,000 streams: a band instead of rows, a small DOM, rows on demand as many as in sight", function()
  local dir = tmpdir()
  local trace = dir .. "/big.jsonl"
  big_trace(trace, 10000, 20)
  local code, out, err = report({ trace, "-o", dir .. "/big.html" })
  T.eq(code, 0, "exit status: " .. err)
  T.contains(out, "10000 streams, 3333 stopped early", "read whole")
  local d = dom(dir .. "/big.html")
  local body = d:gsub('<script type="application/json" id="data">.-</script>', "")
  T.ok(elements(body) < 400, "elements in the page: " .. elements(body))
  T.eq(#rows_of(d), 0, "no rows")
  local layers = {}
  for o in d:gmatch('<path class="layer" data%-outcome="(%a+)"') do layers[#layers + 1] = o end
  T.eq(#layers, 4, "a layer per outcome in the band")
  T.ok(d:find('data%-open%-max="%d+"'), "the band's scale")
  T.contains(d, "show all 10,000 rows", "a way to expand")
  -- expanded: only the rows in sight (and a few more) are in the DOM
  d = dom(dir .. "/big.html", "expand")
  body = d:gsub('<script type="application/json" id="data">.-</script>', "")
  local rows = rows_of(d)
  T.ok(#rows > 10 and #rows < 80, "rows drawn: " .. #rows)
  T.ok(elements(body) < 2000, "elements in the page: " .. elements(body))
  for i, r in ipairs(rows) do
    T.eq(r.id, tostring(i), "the first rows by start")
    T.eq(r.n, (i % 3 == 0) and 10 or 20, "row " .. i .. " ticks")
  end
  -- the terminal: the band and the first rows
  code, out = report({ trace }, 100)
  T.eq(code, 0, "exit status")
  T.ok(out:find("\nopen +[▁▂▃▄▅▆▇█ ]+ at most %d+ streams"), "the band in the terminal")
  T.contains(out, "… 9,800 more streams", "the rest counted")
  T.contains(out, "10,000 streams: 6,667 finished, 3,333 stopped early, 0 failed", "totals")
  rmdir(dir)
end)

-- ---------------------------------------------------------------------------
-- Usage

T.case("usage: --help, and errors in one line with exit status 2", function()
  local code, out = report({ "--help" })
  T.eq(code, 0, "--help exits 0")
  for _, opt in ipairs { "-o, --output FILE", "--svg FILE", "--sort KEY", "--rows N", "--width N", "--color" } do
    T.contains(out, opt, "--help")
  end
  local dir = tmpdir()
  write_file(dir .. "/other.jsonl", '{"hello":"world"}\n')
  for _, case in ipairs {
    { {}, "which FILE" },
    { { FIXTURE, "--bogus" }, "unknown option --bogus" },
    { { FIXTURE, "--sort", "size" }, "--sort needs start, duration or tokens" },
    { { FIXTURE, "-o" }, "-o needs a value" },
    { { FIXTURE, "--rows", "-3" }, "--rows needs a whole number" },
    { { FIXTURE, FIXTURE }, "one FILE at a time" },
    { { dir .. "/none.jsonl" }, "cannot read" },
    { { dir .. "/other.jsonl" }, dir .. "/other.jsonl: line 1 is not a sluice trace, batch output or agent" },
  } do
    local c, o, e = report(case[1])
    T.eq(c, 2, "exit status for " .. table.concat(case[1], " "))
    T.eq(o, "", "nothing on stdout")
    T.eq(select(2, e:gsub("\n", "")), 1, "one line: " .. e)
    T.contains(e, "sluice report: " .. case[2], "the message")
  end
  rmdir(dir)
end)

-- ---------------------------------------------------------------------------
-- The example

T.case("examples/see_the_stop.lua: a dozen streams traced and drawn", function()
  local dir = tmpdir()
  local r = assert(sluice.exec({ "env", "-u", "OPENAI_BASE_URL", "-u", "OPENAI_API_KEY", "-u", "OPENAI_MODEL", bin,
                                 here .. "/../../examples/see_the_stop.lua", "--out", dir .. "/see" },
                               { timeout = 60 }))
  T.eq(r.code, 0, "exit status: " .. r.stderr)
  T.contains(r.stdout, "report: " .. dir .. "/see.html", "says where the page is")
  local drawn, _, tot = tally(dir .. "/see.trace.jsonl")
  T.eq(#drawn, 12, "a dozen streams")
  T.eq(tot.failed, 1, "one failure")
  T.ok(tot.stopped >= 7 and tot.finished >= 2, ("stopped %d, finished %d"):format(tot.stopped, tot.finished))
  T.ok(tot.confirmed >= tot.stopped, "the mock confirmed every stop")
  local reasons = {}
  for _, s in ipairs(drawn) do if s.reason then reasons[s.reason:match("^([%a_]+)")] = true end end
  for _, p in ipairs { "max_tokens", "stop_on", "deadline", "ttft" } do T.ok(reasons[p], "a stop by " .. p) end
  T.contains(r.stdout, ("%d streams: %d finished, %d stopped early, %d failed"):format(12, tot.finished, tot.stopped,
                                                                                       tot.failed), "totals")
  local rows = rows_of(dom(dir .. "/see.html"))
  T.eq(#rows, 12, "rows in the page")
  rmdir(dir)
end)

T.done()
