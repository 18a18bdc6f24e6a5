-- sluice report: draw a trace, batch output or agent transcript as a timeline (--help: options)
-- A thin wrapper over require("sluice.report"): reads FILE once, then writes
-- the page (-o), the picture (--svg), or the timeline to the terminal.
-- Exit status: 0, 1 when an output cannot be written, 2 for usage errors and
-- inputs that cannot be read.
local sluice = require "sluice"
local report = require "sluice.report"

local USAGE = [[
usage: sluice report FILE [-o page.html] [--svg picture.svg] [options]

Draws what FILE says of each stream: when the request went out, its first
token and every token, the stop decision, the socket's close and the
server's own stop, finished, stopped and failed streams each in a colour,
with the totals (streams, stopped early, tokens received and saved, median
decision->close and close->server stopped). FILE is a trace (sluice --trace
FILE, $SLUICE_TRACE, sluice batch --trace), sluice batch output, or an agent
transcript (agent.run{transcript = FILE}): its lines tell which. A torn last
line (the run was killed) is skipped. Without -o or --svg, the timeline goes
to the terminal, one line a stream.

  -o, --output FILE   a self-contained HTML page (no network): zoom by
                      dragging over a time range, sort, hover for the text
                      received so far; - writes it to stdout
      --svg FILE      the picture alone, as a static SVG
      --sort KEY      order the rows by start (default), duration or tokens
      --rows N        past N streams, a band of how many streams were open
                      stands for the rows (the page can still show them all;
                      default 200; 0: always the rows)
      --width N       terminal columns (default: $COLUMNS, else tput cols,
                      else 100)
      --color WHEN    auto (colour when stdout is a terminal), always, never
      --all           keep plain requests (no events, such as sluice.fetch)
      --title TEXT    the page's title
  -h, --help          this text

Exit status: 0; 1 when an output cannot be written; 2 for usage errors and
for a FILE that cannot be read or is none of the three kinds.
]]

local cl = require("sluice.cmdline").new("sluice report", arg, USAGE)
local function usage_error(msg) cl:error(msg) end

local o = { rows = nil, colour = "auto" }
local input
for a in cl:each() do
  if a == "-o" or a == "--output" then o.output = cl:value(a)
  elseif a == "--svg" then o.svg = cl:value(a)
  elseif a == "--sort" then o.sort = cl:choice(a, { "start", "duration", "tokens" })
  elseif a == "--rows" then o.rows = cl:integer(a, 0)
  elseif a == "--width" then
    o.width = cl:integer(a, 0)
    if o.width < 40 then usage_error("--width needs at least 40 columns") end
  elseif a == "--color" or a == "--colour" then o.colour = cl:choice(a, { "auto", "always", "never" })
  elseif a == "--all" then o.plain = true
  elseif a == "--title" then o.title = cl:value(a)
  elseif a:sub(1, 1) == "-" and a ~= "-" then
    usage_error("unknown option " .. a)
  elseif input then
    usage_error("one FILE at a time (got " .. input .. " and " .. a .. ")")
  else
    input = a
  end
end
if not input then usage_error("which FILE? give a trace, batch output or agent transcript") end
if input == "-" then input = "/dev/stdin" end

local m, err = report.read(input, { plain = o.plain })
if not m then usage_error(err) end

local function fail(msg)
  io.stderr:write("sluice report: ", msg, "\n")
  os.exit(1)
end

local opts = { rows = o.rows, sort = o.sort, title = o.title }
if o.output or o.svg then
  if o.output == "-" then
    io.write(report.html(m, opts))
  elseif o.output then
    local ok, werr = report.write_html(m, o.output, opts)
    if not ok then fail(werr) end
  end
  if o.svg then
    local ok, werr = report.write_svg(m, o.svg, opts)
    if not ok then fail(werr) end
  end
  if o.output ~= "-" then
    local t = m.totals
    local wrote = {}
    for _, f in ipairs { o.output or false, o.svg or false } do if f then wrote[#wrote + 1] = f end end
    io.write(("wrote %s: %d stream%s, %d stopped early, %d failed, %d tokens received\n"):format(
      table.concat(wrote, " and "), t.streams, t.streams == 1 and "" or "s", t.stopped, t.failed, t.tokens))
  end
  os.exit(0)
end

-- The terminal's width: --width, $COLUMNS, tput cols, else 100.
local width = o.width or math.tointeger(tonumber(os.getenv("COLUMNS") or ""))
if not width and sluice.isatty(1) then
  local p = io.popen("tput cols 2>/dev/null")
  if p then
    width = math.tointeger(tonumber(p:read("l") or ""))
    p:close()
  end
end
local colour = o.colour == "always" or (o.colour == "auto" and sluice.isatty(1))
opts.width, opts.colour = width or 100, colour
io.write(report.text(m, opts))
os.exit(0)
