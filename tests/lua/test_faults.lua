-- The network between sluice and the server misbehaving: the suite's own
-- fault-injecting TCP proxy (tests/tools/faultproxy.c) sits between them on
-- 127.0.0.1 and adds latency, stalls, resets, half-closes and trickles bytes.
-- For each: what the script sees (the error kind, or every event complete and
-- in order), that timeouts fire while the connection is stalled, that the
-- mock saw the close where it should (through the proxy), and, as after every
-- case, that no socket, timer, task or child is left behind. Each case starts
-- its own proxy and stops it with SIGTERM; its exit status must be 0 (under
-- the sanitizer build: no leak, no error in the proxy either).
local sluice = require "sluice"
local cjson = require "cjson"
local T = require "testlib"
local procs = require "procs"

local BIN = os.getenv("SLUICE_FAULTPROXY_BIN")
assert(BIN and BIN ~= "", "SLUICE_FAULTPROXY_BIN: run me through tests/run_lua_test.sh")

-- Starts a proxy to the mock with the given faults ({ "--latency", 100, ... }).
-- Returns the proc (a <close> value: stops it and checks its exit) and the
-- proxy's base URL and port.
local function faultproxy(flags)
  local dir = procs.tmpdir()
  local url_file = dir .. "/url"
  local argv = { BIN, "--upstream", "127.0.0.1:" .. T.port, "--url-file", url_file, "--exit-with-parent" }
  for _, f in ipairs(flags or {}) do argv[#argv + 1] = tostring(f) end
  local p = assert(procs.start(argv, { ready = function() return procs.read(url_file) end }))
  local url = procs.read(url_file):match("^(%S+)")
  procs.rmdir(dir)
  local stop = p.stop
  function p.stop(self)
    local first = not self.result
    local r = stop(self)
    if first then
      self.log = r.stderr
      T.eq(r.code, 0, "faultproxy exit status (" .. tostring(r.stderr) .. ")")
    end
    return r
  end
  return p, url, tonumber(url:match(":(%d+)$"))
end

-- A chat stream to the mock through `url` (the proxy), with a fresh
-- X-Request-Id besides opts.headers.
local seq = 0
local function open(url, mock, opts)
  seq = seq + 1
  local id = ("faults-%d-%d"):format(os.time(), seq)
  local o = { url = url .. "/v1/chat/completions", json = T.chat(mock, opts and opts.body),
              headers = { ["X-Request-Id"] = id } }
  for k, v in pairs(opts or {}) do
    if k == "headers" then
      for name, value in pairs(v) do o.headers[name] = value end
    elseif k ~= "body" then
      o[k] = v
    end
  end
  return sluice.stream(o), id
end

-- Every event of a stream, in order: { data strings }, and how it ended.
local function read_all(s)
  local events = {}
  while true do
    local ev, err = s:next()
    if not ev then return events, err end
    events[#events + 1] = ev.data
  end
end

-- The content tokens of chat chunks, in order (each chunk decoded whole:
-- an event cut or glued to another fails here).
local function tokens_of(events)
  local out = {}
  for i, data in ipairs(events) do
    if data == "[DONE]" then
      T.eq(i, #events, "[DONE] is the last event")
    else
      local c = cjson.decode(data)
      T.eq(c.object, "chat.completion.chunk", "event " .. i .. " is a whole chunk")
      local d = c.choices[1] and c.choices[1].delta
      if d and type(d.content) == "string" and d.content ~= "" then out[#out + 1] = d.content end
    end
  end
  return out
end

-- What the same request gives without the proxy: the reference.
local function direct(mock, body)
  local s = T.open(mock, { body = body })
  local events, err = read_all(s)
  assert(err == nil and s:state() == "done", "direct stream: " .. tostring(err))
  return events
end

local function same_tokens(got, want, what)
  T.eq(#got, #want, what .. ": tokens")
  for i = 1, #want do T.eq(got[i], want[i], what .. ": token " .. i) end
end

local FAST = { tokens_per_sec = 0 }
-- Where a case checks the tokens sent after a stop: 40 ms a token, so a
-- loaded machine has a token's time to pass the close through the proxy
-- (at 100 tokens/s, with the whole suite running two at a time, a close
-- once took ~30 ms to reach the mock and 3 tokens went out after it).
local SLOW = 25

T.case("latency both ways: every event arrives whole and in order, late by the latency", function()
  local fp <close>, url = faultproxy { "--latency", 150 }
  local want = tokens_of(direct(FAST, { max_tokens = 20 }))
  local s = open(url, FAST, { body = { max_tokens = 20 } })
  local events, err = read_all(s)
  T.eq(err, nil, "a clean end")
  T.eq(s:state(), "done", "state")
  same_tokens(tokens_of(events), want, "through the proxy")
  T.eq(events[#events], "[DONE]", "last event")
  local m = s:metrics()
  -- the request goes out and the response comes back: two latencies at least
  T.ok(m.first_byte - m.started >= 0.29, ("first byte after 2 x 150 ms: %.3f s"):format(m.first_byte - m.started))
end)

T.case("latency: a cancel closes our socket at once; the close reaches the mock one latency later", function()
  local fp <close>, url, port = faultproxy { "--latency", 100 }
  -- a token every 100 ms: in the 100 ms the close travels, one more at most
  local s, id = open(url, { tokens_per_sec = 10 }, { body = { max_tokens = 1000 } })
  local seen = T.read_tokens(s, 3)
  local lport = s:metrics().local_port
  local t = sluice.now()
  s:cancel("enough")
  T.ok(not T.socket_open(lport, port), "our socket closed when cancel returns")
  local rec = T.wait_record(id, function(r) return r.client_closed end)
  T.ok(rec.aborted and not rec.completed, "the mock aborted the request")
  T.ok(rec.closed_at - t >= 0.09, ("the close travelled with the latency: %.3f s"):format(rec.closed_at - t))
  local after = 0
  for _, at in ipairs(rec.recent_token_at) do if at > t then after = after + 1 end end
  T.le(after, 2, "tokens the mock sent after the stop (one latency of them, and one in hand)")
  T.ok(rec.tokens_sent >= seen, "tokens sent")
end)

T.case("bytes trickled one at a time: every event whole and in order, the same bytes", function()
  local fp <close>, url = faultproxy { "--trickle", 0 }
  local ref = direct(FAST, { max_tokens = 30 })
  local s = open(url, FAST, { body = { max_tokens = 30 } })
  local events, err = read_all(s)
  T.eq(err, nil, "a clean end")
  same_tokens(tokens_of(events), tokens_of(ref), "trickled")
  T.eq(#events, #ref, "events")
  -- byte for byte the same events, but for the request's id and time
  local function plain(data) return (data:gsub('"id":"[^"]*"', ""):gsub('"created":%d+', "")) end
  for i = 1, #ref do T.eq(plain(events[i]), plain(ref[i]), "event " .. i) end
end)

T.case("trickled in odd pieces with pauses: whole events; idle counts events, not bytes", function()
  -- 7 bytes every 10 ms: an event (~250 bytes) takes ~360 ms to come in whole
  local fp <close>, url = faultproxy { "--trickle", 10, "--trickle-bytes", 7 }
  local s = open(url, FAST, { body = { max_tokens = 4 }, timeouts = { idle = 1 } })
  local events, err = read_all(s)
  T.eq(err, nil, "idle 1 s: a clean end")
  T.eq(#tokens_of(events), 4, "tokens")
  -- the same bytes, but idle shorter than one event's arrival: bytes keep
  -- coming, yet no event completes in time
  local s2, id2 = open(url, FAST, { body = { max_tokens = 200 }, timeouts = { idle = 0.08 } })
  local _, err2 = read_all(s2)
  T.eq(err2 and err2.kind, "timeout", "idle timeout while bytes trickle: " .. tostring(err2))
  T.contains(err2.message, "idle", "message")
  T.ok(s2:metrics().bytes > 0, "bytes were arriving")
  T.wait_record(id2, function(r) return r.client_closed or r.completed end)
end)

T.case("a stall of 1 s mid-stream: the stream waits, then goes on to the end", function()
  local fp <close>, url = faultproxy { "--stall-after", 1500, "--stall-for", 1 }
  local want = tokens_of(direct(FAST, { max_tokens = 20 }))
  local s = open(url, FAST, { body = { max_tokens = 20 }, timeouts = { idle = 5 } })
  local times, events = {}, {}
  while true do
    local ev, err = s:next()
    if not ev then
      T.eq(err, nil, "a clean end")
      break
    end
    events[#events + 1] = ev.data
    times[#times + 1] = sluice.now()
  end
  same_tokens(tokens_of(events), want, "after the stall")
  local gap = 0
  for i = 2, #times do gap = math.max(gap, times[i] - times[i - 1]) end
  T.ok(gap >= 0.9, ("a 1 s gap between two events: %.3f s"):format(gap))
end)

T.case("idle timeout fires while the connection is stalled; the close reaches the mock through it", function()
  local fp <close>, url = faultproxy { "--stall-after", 1500 }
  local s, id = open(url, { tokens_per_sec = SLOW }, { body = { max_tokens = 1000 }, timeouts = { idle = 0.3 } })
  local events, err = read_all(s)
  T.eq(err and err.kind, "timeout", "error kind: " .. tostring(err))
  T.contains(err.message, "idle", "message")
  T.eq(s:state(), "failed", "state")
  local m = s:metrics()
  T.ok(m.ended - m.last_event >= 0.29, "fired after 0.3 s without an event")
  T.ok(#events > 0, "events before the stall")
  -- the mock kept generating into the stalled connection; once sluice closed,
  -- at most one more
  local rec = T.assert_stopped(id, 0, m.ended)
  T.ok(rec.tokens_sent > #tokens_of(events), "the mock generated during the stall")
end)

T.case("total and first_byte timeouts fire while stalled", function()
  local fp <close>, url = faultproxy { "--stall-after", 1500 }
  local s, id = open(url, { tokens_per_sec = SLOW }, { body = { max_tokens = 1000 }, timeouts = { total = 0.5 } })
  local _, err = read_all(s)
  T.eq(err and err.kind, "timeout", "total: kind")
  T.contains(err.message, "total", "total: message")
  T.assert_stopped(id, 0, s:metrics().ended)
  -- nothing at all gets through: not even the response head
  local fp2 <close>, url2 = faultproxy { "--stall-after", 0 }
  local s2, id2 = open(url2, { tokens_per_sec = SLOW }, { body = { max_tokens = 1000 },
                                                          timeouts = { first_byte = 0.3 } })
  local ev, err2 = s2:next()
  T.eq(ev, nil, "no event")
  T.eq(err2.kind, "timeout", "first_byte: kind")
  T.contains(err2.message, "first byte", "first_byte: message")
  T.eq(s2:status(), nil, "no status: the head never came")
  T.assert_stopped(id2, 0, s2:metrics().ended)
end)

T.case("a reset after N bytes: the events before it, then a transport error; the mock sees the close", function()
  local fp <close>, url, port = faultproxy { "--reset-after", 2000 }
  local s, id = open(url, { tokens_per_sec = 200 }, { body = { max_tokens = 1000 } })
  local events, err = read_all(s)
  T.eq(err and err.kind, "transport", "error kind: " .. tostring(err))
  T.ok(err.message:lower():find("reset", 1, true), "the message says reset: " .. err.message)
  T.eq(s:state(), "failed", "state")
  T.ok(#events >= 3, "events before the reset: " .. #events)
  tokens_of(events)  -- each one whole
  T.ok(s:metrics().bytes < 2000, "no more than the bytes let through")
  local rec = T.wait_record(id, function(r) return r.client_closed end)
  T.ok(not rec.completed, "the mock saw the request cut off")
  T.eq(T.upstream_sockets(port), 0, "no socket to the proxy")
  -- events() raises the same error
  local s2 = open(url, { tokens_per_sec = 200 }, { body = { max_tokens = 1000 } })
  local ok, e = pcall(function() for _ in s2:events() do end end)
  T.ok(not ok and e.kind == "transport", "events() raises it: " .. tostring(e))
end)

T.case("a reset or a FIN before the response: a transport error, no status", function()
  local fp <close>, url = faultproxy { "--reset-after", 0 }
  local s, id = open(url, FAST, { body = { max_tokens = 5 } })
  local ev, err = s:next()
  T.eq(ev, nil, "no event")
  T.eq(err and err.kind, "transport", "kind: " .. tostring(err))
  T.eq(s:status(), nil, "no status")
  -- the mock got the request and generated; the reset cut it off (or it had
  -- finished the five tokens first)
  T.wait_record(id, function(r) return r.client_closed or r.completed end)
  -- a FIN instead, before any byte of the response
  local fp2 <close>, url2 = faultproxy { "--half-close-after", 0 }
  local s2 = open(url2, FAST, { body = { max_tokens = 5 } })
  local ev2, err2 = s2:next()
  T.eq(ev2, nil, "no event")
  T.eq(err2 and err2.kind, "transport", "kind: " .. tostring(err2))
  T.contains(err2.message, "Empty reply", "message")
end)

T.case("a half-close mid-stream (FIN from the network): a transport error, never a clean end", function()
  local fp <close>, url, port = faultproxy { "--half-close-after", 2000 }
  local s, id = open(url, { tokens_per_sec = SLOW }, { body = { max_tokens = 1000 } })
  local events, err = read_all(s)
  T.ok(err ~= nil, "not a clean end: the chunked body was cut short")
  T.eq(err.kind, "transport", "kind: " .. tostring(err))
  T.eq(s:state(), "failed", "state")
  T.ok(#events >= 3, "events before the FIN")
  tokens_of(events)
  T.eq(T.upstream_sockets(port), 0, "sluice closed its socket after the error")
  -- the proxy passes sluice's close on: the mock stops, having generated only
  -- what was in flight (the proxy drops what comes after the FIN)
  local rec = T.assert_stopped(id, 0, s:metrics().ended)
  T.ok(not rec.completed, "not completed")
  fp:stop()
  T.contains(fp.log, "half-close after 2000 bytes", "the proxy's log")
  T.contains(fp.log, "the client closed: passing it on to the server", "the proxy's log")
end)

T.case("per request: an X-Fault header resets one request on a kept-alive connection", function()
  local fp <close>, url = faultproxy {}
  local s1, id1 = open(url, FAST, { body = { max_tokens = 5 } })
  local _, err1 = read_all(s1)
  T.eq(err1, nil, "the first request ends cleanly")
  local s2, id2 = open(url, { tokens_per_sec = 100 },
                       { body = { max_tokens = 1000 }, headers = { ["X-Fault"] = "reset-after=1500" } })
  local _, err2 = read_all(s2)
  T.eq(err2 and err2.kind, "transport", "the second is reset: " .. tostring(err2))
  local s3, id3 = open(url, FAST, { body = { max_tokens = 5 } })
  local _, err3 = read_all(s3)
  T.eq(err3, nil, "the third ends cleanly")
  local r1, r2, r3 = T.record(id1), T.wait_record(id2, function(r) return r.client_closed end), T.record(id3)
  T.eq(r2.conn, r1.conn, "the faulty request reused the first one's connection")
  T.ok(r1.completed and r3.completed and not r2.completed, "only the faulty request was cut")
  T.ok(r3.conn ~= r2.conn, "the reset connection was not reused")
end)

T.done()
