-- HTTP/2 through a real proxy: nghttpx (Debian nghttp2-proxy) as an h2 front
-- with TLS (a CA and a certificate made here) to sluice-mock over HTTP/1.1,
-- the way an h2 gateway fronts an inference server. With http2 = true and a
-- libcurl that sends a stopped stream's RST_STREAM at once (8.15 on) the
-- streams of a script share one connection, a cancelled one is reset and the
-- others go on; with an older one (Debian 12's 7.88: curl issue #17611) each
-- stream has a connection of its own, which a stop closes. Either way the
-- server sees every stop. nghttpx reaches the mock
-- through the suite's faultproxy (no faults), whose log says how nghttpx ended
-- each backend connection; the mock's /stats says what the server saw.
local sluice = require "sluice"
local T = require "testlib"
local procs = require "procs"

local NGHTTPX = "/usr/sbin/nghttpx"
assert(io.open(NGHTTPX), "nghttpx is not installed (scripts/setup installs nghttp2-proxy)")
local FAULTPROXY = assert(os.getenv("SLUICE_FAULTPROXY_BIN"), "run me through tests/run_lua_test.sh")

local dir = procs.tmpdir()
local ca = procs.make_ca(dir, "ca")
procs.make_cert(dir, "server", "ca", "IP:127.0.0.1", 1)

-- The faultproxy in front of the mock, then nghttpx in front of it.
local backend_url_file, backend_log = dir .. "/backend.url", dir .. "/backend.log"
local backend = assert(procs.start({ FAULTPROXY, "--upstream", "127.0.0.1:" .. T.port, "--url-file",
  backend_url_file, "--exit-with-parent" },
  { ready = function() return procs.read(backend_url_file) end, log = backend_log }))
local backend_port = tonumber(procs.read(backend_url_file):match(":(%d+)"))

local function serves(port)
  local res = sluice.fetch { url = ("https://127.0.0.1:%d/stats"):format(port), ca_file = ca, http2 = true,
                             timeouts = { total = 1 } }
  return res and res.status == 200
end
local nghttpx, port = procs.start_on_free_port(function(p)
  return { NGHTTPX, "--conf=/dev/null", "-f127.0.0.1," .. p, "-b127.0.0.1," .. backend_port, "--workers=1",
           "--no-ocsp", "--errorlog-file=" .. dir .. "/error.log", "--accesslog-file=" .. dir .. "/access.log",
           "--accesslog-format=$alpn $http_x_request_id $status",
           dir .. "/server.key", dir .. "/server.pem" }
end, serves)
local url = ("https://127.0.0.1:%d/v1/chat/completions"):format(port)

-- Streams opened before the first has its connection each get their own
-- (curl does not wait to multiplex): a test opens one, reads from it, then
-- the others.
local seq = 0
local function open(mock, body, opts)
  seq = seq + 1
  local id = ("h2-%d-%d"):format(os.time(), seq)
  local o = { url = url, ca_file = ca, http2 = true, json = T.chat(mock, body),
              headers = { ["X-Request-Id"] = id } }
  for k, v in pairs(opts or {}) do o[k] = v end
  return sluice.stream(o), id
end

-- Reads a stream to its end; returns the number of events and the error.
local function drain(s)
  local n = 0
  while true do
    local ev, err = s:next()
    if not ev then return n, err end
    n = n + 1
  end
end

local sent_after = T.sent_after

-- Do streams share a connection with the libcurl sluice loads?
local MUX = sluice._h2_multiplex()
local LIBCURL = procs.sh(("%q --version"):format(os.getenv("SLUICE_BIN"))):match("libcurl (%d+%.%d+%.%d+)")
print(("# libcurl %s: HTTP/2 streams %s"):format(LIBCURL, MUX and "share a connection" or "have a connection each"))
local function same_connection(a, b, what)
  if MUX then
    T.eq(b:metrics().local_port, a:metrics().local_port, what .. ": one connection")
  else
    T.ok(b:metrics().local_port ~= a:metrics().local_port, what .. ": a connection each (libcurl " .. LIBCURL .. ")")
  end
end

-- A token every 40 ms: "at most 2 after the stop" leaves the reset 40 to 80
-- ms to cross sluice, nghttpx and the faultproxy.
local PACE = { tokens_per_sec = 25 }

T.case("h2 through nghttpx: the streams share one connection (a connection each before libcurl 8.15), each has its own backend connection", function()
  local ss, ids = {}, {}
  for i = 1, 3 do
    ss[i], ids[i] = open({ tokens_per_sec = 50 }, { max_tokens = 20 })
    assert(ss[i]:next())
  end
  for i = 1, 3 do
    local n, err = drain(ss[i])
    T.eq(err, nil, "stream " .. i .. " ended cleanly")
    T.ok(n + 1 >= 22, "stream " .. i .. " events")
    T.eq(ss[i]:state(), "done", "state")
  end
  same_connection(ss[1], ss[2], "streams 1 and 2")
  same_connection(ss[1], ss[3], "streams 1 and 3")
  T.contains(ss[1]:headers()["via"] or "", "nghttpx", "through nghttpx")
  local conns = {}
  for i = 1, 3 do
    local rec = T.wait_record(ids[i], function(r) return r.completed end)
    T.ok(not conns[rec.conn], "a backend connection of its own")
    conns[rec.conn] = true
  end
  -- nghttpx logs the protocol the client spoke
  local deadline = sluice.now() + 2
  while not (procs.read(dir .. "/access.log") or ""):find("h2 " .. ids[3] .. " 200", 1, true)
        and sluice.now() < deadline do
    sluice.sleep(0.02)
  end
  T.contains(procs.read(dir .. "/access.log"), "h2 " .. ids[3] .. " 200", "access log: spoken over h2")
end)

T.case("h2: a cancelled stream is reset, the others on the connection go on to the end; nghttpx closes its backend connection", function()
  -- (the reset leaves with the connection's next I/O: here the next frame of
  -- a stream that flows, within a token's time)
  local a, ida = open(PACE, { max_tokens = 40 })
  T.read_tokens(a, 1)
  local b, idb = open(PACE, { max_tokens = 1000 })
  local c, idc = open(PACE, { max_tokens = 40 })
  T.read_tokens(c, 1)
  local seen = T.read_tokens(b, 5)
  same_connection(a, b, "a and b")
  local function count(text)
    local n = 0
    for _ in (procs.read(backend_log) or ""):gmatch(text) do n = n + 1 end
    return n
  end
  local closes = count("the client closed: passing it on to the server")
  local t = sluice.now()
  b:cancel("enough")
  T.eq(b:state(), "cancelled", "state")
  local na, erra = drain(a)
  local nc, errc = drain(c)
  T.ok(erra == nil and errc == nil and a:state() == "done" and c:state() == "done",
       "the other streams went on to the end: " .. tostring(erra or errc))
  T.ok(na > 30 and nc > 30, "their events")
  local rec = T.wait_record(idb, function(r) return r.client_closed end)
  T.ok(rec.aborted and not rec.completed, "the mock aborted the cancelled request")
  T.contains(T.mock_log(), "Aborted request " .. idb, "mock log")
  T.le(sent_after(rec, t), 2, "tokens the mock sent after the stop")
  T.ok(T.record(ida).completed and T.record(idc).completed, "the others completed at the mock")
  print(("# h2 via nghttpx, cancel beside streams that flow: %d token(s) sent after the stop (%d seen); " ..
         "the mock noticed the close %.1f ms after it"):format(sent_after(rec, t), seen, (rec.closed_at - t) * 1000))
  -- how nghttpx ended the backend connection: the faultproxy between them
  -- saw one close (FIN), not a reset; the others' connections went back to
  -- nghttpx's pool, open
  T.eq(count("the client closed: passing it on to the server"), closes + 1,
       "nghttpx closed one backend connection: " .. procs.read(backend_log))
  T.eq(count("the client ECONNRESET"), 0, "with a FIN, not a reset")
end)

T.case("h2: a timeout on a stream beside others that flow: reset, the others go on", function()
  local a, ida = open(PACE, { max_tokens = 30 })
  T.read_tokens(a, 1)
  local b, idb = open(PACE, { max_tokens = 1000 }, { timeouts = { total = 0.4 } })
  local _, err = drain(b)
  same_connection(a, b, "a and b")
  T.eq(err and err.kind, "timeout", "kind")
  local na, erra = drain(a)
  T.ok(erra == nil and na > 20, "the other stream went on: " .. tostring(erra))
  local rec = T.wait_record(idb, function(r) return r.client_closed end)
  T.le(sent_after(rec, b:metrics().ended), 2, "tokens the mock sent after the timeout")
  T.ok(T.record(ida).completed, "the other completed")
end)

-- A stream alone on its connection (or beside silent ones): libcurl 7.88.0
-- to 8.14.x only queues the RST_STREAM and sends it with the connection's
-- next I/O, and a connection with no transfer left is not polled: the server
-- would never be told. sluice does not let such a connection be reused: it
-- is closed, and nghttpx resets what it carried.
T.case("h2: a lone stream cancelled or timed out: the server sees the stop", function()
  local N = 50  -- 0.5 s of tokens at 100/s
  local s, id = open({ tokens_per_sec = 100 }, { max_tokens = N })
  T.read_tokens(s, 5)
  local t = sluice.now()
  s:cancel("enough")
  T.eq(s:state(), "cancelled", "state")
  local rec = T.wait_record(id, function(r) return r.client_closed or r.completed end)
  T.ok(rec.client_closed and not rec.completed, "the mock saw the cancel")
  T.le(sent_after(rec, t), 2, "tokens the mock sent after the cancel")
  print(("# h2 via nghttpx, a lone stream cancelled: the mock noticed %.1f ms after the stop, %d of %d tokens sent")
        :format((rec.closed_at - t) * 1000, rec.tokens_sent, N))
  -- an idle timeout while the server is silent (a stall after 5 tokens)
  local s2, id2 = open({ tokens_per_sec = 100, stall_after = 5 }, { max_tokens = N }, { timeouts = { idle = 0.3 } })
  T.read_tokens(s2, 5)
  local _, err2 = drain(s2)
  T.eq(err2 and err2.kind, "timeout", "timeout kind")
  local rec2 = T.wait_record(id2, function(r) return r.client_closed end)
  T.ok(rec2.client_closed and not rec2.completed, "the mock saw the timeout's close")
  T.le(rec2.closed_at - s2:metrics().ended, 0.5, "seconds from the timeout to the mock seeing it")
end)

nghttpx:stop()
local r = backend:stop()
T.eq(r.code, 0, "backend proxy exit status: " .. r.stderr)
procs.rmdir(dir)
T.done()
