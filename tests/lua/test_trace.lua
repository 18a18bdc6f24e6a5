-- Traces as a user makes them: a child `sluice --trace FILE script.lua` (or
-- SLUICE_TRACE=FILE) runs a script against the mock; the test reads the file
-- with its own code and checks it against what the script got and what the
-- mock saw: one JSON line per stream event, in order, on sluice.now()'s clock,
-- no credential anywhere, whole lines after kill -9.
local sluice = require "sluice"
local cjson = require "cjson"
local T = require "testlib"
local procs = require "procs"

local BIN = assert(os.getenv("SLUICE_BIN"), "run me through tests/run_lua_test.sh")
local KEY = "sk-trace-secret-4242"

-- Every line of a trace, decoded; the last may be cut (returned as `torn`).
local function read_trace(path)
  local lines, torn = {}, nil
  local text = assert(procs.read(path), "no trace at " .. path)
  local all = {}
  for line in text:gmatch("[^\n]*\n?") do if line ~= "" then all[#all + 1] = line end end
  for i, line in ipairs(all) do
    local ok, v = pcall(cjson.decode, line)
    if ok and line:sub(-1) == "\n" then
      lines[#lines + 1] = v
    elseif i == #all then
      torn = line
    else
      error(("line %d of %d is not whole JSON: %q"):format(i, #all, line))
    end
  end
  return lines, torn, text
end

-- The lines of one stream, by kind, and all of them in order.
local function stream_lines(lines, s)
  local by, seq = {}, {}
  for _, l in ipairs(lines) do
    if l.s == s then
      by[l.ev] = by[l.ev] or {}
      table.insert(by[l.ev], l)
      seq[#seq + 1] = l
    end
  end
  return by, seq
end

-- The text pieces of a stream's text lines, in order.
local function pieces_of(by)
  local pieces = {}
  for _, l in ipairs(by.text or {}) do
    for _, p in ipairs(l.pieces) do pieces[#pieces + 1] = p end
  end
  return pieces
end

local function run_child(dir, script, args, env)
  local path = dir .. "/child.lua"
  procs.write(path, script)
  local argv = { "env" }
  for k, v in pairs(env or {}) do argv[#argv + 1] = k .. "=" .. v end
  argv[#argv + 1] = BIN
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  argv[#argv + 1] = path
  argv[#argv + 1] = T.url
  local r = assert(sluice.exec(argv))
  T.eq(r.code, 0, "child exit status: " .. r.stderr)
  return cjson.decode(r.stdout:match("[^\n]+"))
end

T.case("sluice --trace FILE: a stream stopped by a policy, event by event", function()
  local dir = procs.tmpdir()
  local trace = dir .. "/t.jsonl"
  local out = run_child(dir, [[
local sluice = require "sluice"
local cjson = require "cjson"
local openai = require "sluice.openai"
local policy = require "sluice.policy"
local base = arg[1]:gsub("^http://", "http://user:hunter2@") .. "/v1"
local client = openai.client { base_url = base, api_key = "]] .. KEY .. [[",
                               headers = { ["X-Request-Id"] = "trace-policy-1" } }
local chat = client:chat({ model = "m", max_tokens = 40, messages = { { role = "user", content = "hi" } },
                           mock = { tokens_per_sec = 200 } }, { stop_when = policy.max_tokens(6), tag = "row-7" })
local text = {}
for d in chat:deltas() do text[#text + 1] = d end
local r = chat:result()
print(cjson.encode { text = table.concat(text), pieces = #text, reason = r.stop_reason, id = chat.s:metrics().id })
]], { "--trace", trace })
  local lines = read_trace(trace)
  local by, seq = stream_lines(lines, out.id)
  -- one of each, in order
  for _, ev in ipairs { "start", "note", "head", "stop", "close", "end" } do
    T.ok(by[ev], "a " .. ev .. " line")
  end
  T.eq(seq[1].ev, "start", "first line")
  T.eq(seq[#seq].ev, "end", "last line")
  for i = 2, #seq do T.le(seq[i - 1].t, seq[i].t, "times in order (line " .. i .. ")") end
  local order = { start = 1, head = 2, stop = 3, close = 4, ["end"] = 5 }
  local last = 0
  for _, l in ipairs(seq) do
    if order[l.ev] then
      T.ok(order[l.ev] >= last, l.ev .. " after what came before it")
      last = order[l.ev]
    end
  end
  -- the request: no credentials in the url, its id and tag
  local start = by.start[1]
  T.eq(start.method, "POST", "method")
  T.eq(start.url, T.url .. "/v1/chat/completions", "url without user:password")
  T.eq(start.request_id, "trace-policy-1", "request id")
  T.eq(start.tag, "row-7", "tag")
  T.eq(by.head[1].status, 200, "status")
  T.eq(by.note[1].max_tokens, 40, "the openai note: max_tokens")
  -- every piece of text the script read, in order, one per token
  local pieces = pieces_of(by)
  T.eq(#pieces, out.pieces, "text pieces: one per delta the script read")
  T.eq(table.concat(pieces), out.text, "the text")
  -- events: a size per event (its data), as many as the end line counts;
  -- with SSE's "data: " and blank line, the bytes read
  local size, events = 0, 0
  for _, l in ipairs(by.data or {}) do
    for _, n in ipairs(l.sizes) do size, events = size + n, events + 1 end
  end
  T.eq(events, by["end"][1].events, "a size per event")
  T.ok(events > out.pieces, "events: " .. events)
  T.eq(size + 8 * events, by["end"][1].bytes, "sizes and framing add up to the bytes read")
  -- the stop: the policy's reason, then the close, then the end
  T.eq(by.stop[1].reason, out.reason, "the stop's reason is the policy's")
  T.contains(out.reason, "max_tokens", "the reason")
  T.eq(by["end"][1].state, "cancelled", "end state")
  -- the mock noticed the close after the trace says it happened: one clock
  local rec = T.wait_record("trace-policy-1", function(r) return r.client_closed end)
  T.le(by.close[1].t, rec.closed_at, "the close line is no later than the mock noticing it")
  T.le(by.stop[1].t, by.close[1].t, "decision, then close")
  -- no credential anywhere
  local text = procs.read(trace)
  T.ok(not text:find(KEY, 1, true), "the api key is not in the trace")
  T.ok(not text:find("hunter2", 1, true), "the url's password is not in the trace")
  procs.rmdir(dir)
end)

T.case("a stream the server finishes: every piece the script read is traced, the last too", function()
  -- the last pieces are read after the transfer ended (they came with the
  -- finish chunk and [DONE]): they still reach the trace, after the end line
  local dir = procs.tmpdir()
  local trace = dir .. "/t.jsonl"
  local out = run_child(dir, [[
local cjson = require "cjson"
local openai = require "sluice.openai"
local client = openai.client { base_url = arg[1] .. "/v1", api_key = "" }
local chat = client:chat { model = "m", max_tokens = 12, messages = { { role = "user", content = "hi" } } }
local text = {}
for d in chat:deltas() do text[#text + 1] = d end
print(cjson.encode { text = table.concat(text), pieces = #text, id = chat.s:metrics().id })
]], { "--trace", trace })
  T.eq(out.pieces, 12, "the script read 12 deltas")
  local by = stream_lines(read_trace(trace), out.id)
  local pieces = pieces_of(by)
  T.eq(#pieces, 12, "pieces in the trace")
  T.eq(table.concat(pieces), out.text, "the text")
  T.eq(by["end"][1].state, "done", "end state")
  procs.rmdir(dir)
end)

T.case("SLUICE_TRACE=FILE: a failed stream's end line has its kind and the error, without the key", function()
  local dir = procs.tmpdir()
  local trace = dir .. "/t.jsonl"
  local out = run_child(dir, [[
local sluice = require "sluice"
local cjson = require "cjson"
local s = sluice.stream { url = arg[1] .. "/v1/chat/completions", headers = { Authorization = "Bearer ]] .. KEY .. [[" },
  json = { model = "m", stream = true, messages = {}, mock = { status = 401,
    error_body = '{"error":{"message":"Incorrect API key provided: ]] .. KEY .. [["}}' } } }
local ev, err = s:next()
print(cjson.encode { id = s:metrics().id, kind = err and err.kind, message = err and err.message })
]], {}, { SLUICE_TRACE = trace })
  T.eq(out.kind, "http", "the script's error")
  local lines = read_trace(trace)
  local by = stream_lines(lines, out.id)
  local e = by["end"][1]
  T.eq(e.state, "failed", "end state")
  T.eq(e.kind, "http", "end kind")
  T.eq(e.error, out.message, "the error, as the script got it")
  T.contains(e.error, "Incorrect API key", "the server's message")
  T.ok(not procs.read(trace):find(KEY, 1, true), "the key is in no line")
  procs.rmdir(dir)
end)

T.case("kill -9 while tracing 20 streams: every line is whole but the last, which readers skip", function()
  local dir = procs.tmpdir()
  local trace = dir .. "/t.jsonl"
  procs.write(dir .. "/child.lua", [[
local sluice = require "sluice"
local openai = require "sluice.openai"
local client = openai.client { base_url = arg[1] .. "/v1", api_key = "" }
for i = 1, 20 do
  sluice.spawn(function()
    while true do
      for _ in client:chat { model = "m", max_tokens = 50, messages = { { role = "user", content = "hi" } },
                             mock = { tokens_per_sec = 500 } }:deltas() do end
    end
  end)
end
sluice.sleep(100)
]])
  local task = sluice.spawn(function()
    return sluice.exec { "sh", "-c", ('echo $$ > %q/pid; exec %q --trace %q %q/child.lua %q')
                         :format(dir, BIN, trace, dir, T.url) }
  end)
  local function size() local t = procs.read(trace); return t and #t or 0 end
  T.wait_until(function() return size() >= 200000 end, 10, 0.02)
  T.ok(size() >= 200000, "the trace grew")
  local pid = assert(tonumber(procs.read(dir .. "/pid")), "pid")
  os.execute("kill -9 " .. pid)
  local _, r = task:join()
  T.eq(r and r.signal, 9, "killed")
  local lines, torn, text = read_trace(trace)  -- errors on a torn line but the last
  T.ok(#lines > 1000, "lines: " .. #lines)
  local kinds = {}
  for _, l in ipairs(lines) do kinds[l.ev] = (kinds[l.ev] or 0) + 1 end
  T.ok(kinds.start and kinds.data and kinds.text and kinds["end"], "every kind of line was written")
  print(("# kill -9 after %d bytes: %d whole lines, last line %s"):format(#text, #lines, torn and "torn" or "whole"))
  -- sluice report reads it, skipping a torn last line
  local rep = assert(sluice.exec { BIN, "report", trace, "--width", "80", "--color", "never" })
  T.eq(rep.code, 0, "sluice report on it: " .. rep.stderr)
  procs.rmdir(dir)
end)

T.done()
