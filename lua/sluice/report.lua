-- sluice.report: draws what a trace (sluice --trace FILE), sluice batch
-- output or an agent transcript says of each stream -- when the request
-- went out, each token, the stop decision, the socket's close, the server's
-- own stop -- as a self-contained HTML page, a static SVG, or text.
--
--   local report = require "sluice.report"
--   local m = assert(report.read("trace.jsonl"))
--   report.write_html(m, "timeline.html")
--   io.write(report.text(m, { width = 100 }))
local input = require "sluice.report.input"
local model = require "sluice.report.model"

local report = {}

-- report.read(path, { plain = keep plain requests }) -> model | nil, message
report.read = input.read
report.totals_lines = model.totals_lines

-- The page: a string of HTML with everything inline.
function report.html(m, opts) return require("sluice.report.html").render(m, opts) end

-- The picture alone: a string of SVG.
function report.svg(m, opts) return require("sluice.report.svg").render(m, opts) end

-- The text timeline: opts.width (columns), colour, rows (0: all), sort.
function report.text(m, opts) return require("sluice.report.terminal").render(m, opts) end

local function write(path, text)
  local f, err = io.open(path, "wb")
  if not f then return nil, "cannot write " .. path .. ": " .. tostring(err):gsub("^[^:]*: ", "") end
  local ok, werr = f:write(text)
  f:close()
  if not ok then return nil, "cannot write " .. path .. ": " .. tostring(werr) end
  return path
end

-- report.write_html / write_svg(model or input path, out path, opts) ->
-- out path | nil, message
local function writer(draw)
  return function(m, path, opts)
    if type(m) == "string" then
      local err
      m, err = input.read(m, opts)
      if not m then return nil, err end
    end
    return write(path, draw(m, opts))
  end
end
report.write_html = writer(function(m, opts) return report.html(m, opts) end)
report.write_svg = writer(function(m, opts) return report.svg(m, opts) end)

return report
