-- TLS is verified by default: a server with a self-signed certificate is
-- refused unless the script trusts it (ca_file) or says insecure = true; so
-- are a certificate for another name, an expired one and one from a CA the
-- script does not trust, each with a transport error naming the cause.
-- The servers are `openssl s_server` and `nghttpd` (HTTP/2) on free loopback
-- ports.
local sluice = require "sluice"
local T = require "testlib"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 " ..
  "-addext subjectAltName=IP:127.0.0.1 -keyout %q -out %q >/dev/null 2>&1"):format(key, cert)))

-- The servers cannot pick a free port themselves: try random ones until one
-- listens. kind: "www" (s_server's status page for any path), "files"
-- (s_server -WWW: the files in dir, HTTP/1.0) or "h2" (nghttpd: the same
-- files over HTTP/2).
local commands = {
  www = "exec openssl s_server -quiet -www -accept 127.0.0.1:%d -cert %q -key %q",
  files = "exec openssl s_server -quiet -WWW -accept 127.0.0.1:%d -cert %q -key %q",
  h2 = "exec nghttpd -a 127.0.0.1 -d . %d %q %q",
}
local started = {}  -- every server's pid, stopped at the end even if a case failed
-- with_cert, with_key: another certificate than the self-signed one
local function start_server(kind, with_cert, with_key)
  local cert, key = with_cert or cert, with_key or key
  for try = 1, 20 do
    local port = 20000 + math.random(0, 20000)
    local cmd = kind == "h2" and commands.h2:format(port, key, cert) or commands[kind]:format(port, cert, key)
    os.execute(("(cd %q && %s >%s.log 2>&1) & echo $! > %q"):format(dir, cmd, kind, dir .. "/" .. kind .. ".pid"))
    local f = io.open(dir .. "/" .. kind .. ".pid")
    local pid = f:read("l")
    f:close()
    -- wait until it listens (or died: port taken)
    for _ = 1, 50 do
      sluice.sleep(0.02)
      local res = sluice.fetch { url = ("https://127.0.0.1:%d/"):format(port), insecure = true,
                                 timeouts = { total = 1 }, http2 = kind == "h2" }
      if res then
        started[#started + 1] = pid
        return port, pid
      end
      if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then break end
    end
    os.execute("kill " .. pid .. " 2>/dev/null")
  end
  error(kind .. " server did not start")
end

-- 80,000 JSON lines (16 MB) to stream from the file servers
local LINES = 80000
do
  local f = assert(io.open(dir .. "/big.ndjson", "w"))
  local line = ('{"n":%d,"pad":"' .. ("x"):rep(200) .. '"}\n')
  for i = 1, LINES do f:write(line:format(i)) end
  f:close()
end

local port = start_server("www")
local url = ("https://127.0.0.1:%d/"):format(port)

T.case("a self-signed certificate is refused by default", function()
  local res, err = sluice.fetch { url = url }
  T.eq(res, nil, "no response")
  T.eq(err.kind, "transport", "kind")
  T.ok(err.message:lower():find("certificate"), "the message names the certificate: " .. err.message)
  local s = sluice.stream { url = url }
  local ev, err2 = s:next()
  T.ok(ev == nil and err2.kind == "transport", "streams verify too")
end)

T.case("trusted through ca_file", function()
  local res, err = sluice.fetch { url = url, ca_file = cert }
  T.ok(res, "fetched: " .. tostring(err))
  T.eq(res.status, 200, "status")
end)

T.case("insecure = true skips verification", function()
  local res = assert(sluice.fetch { url = url, insecure = true })
  T.eq(res.status, 200, "status")
end)

T.case("a TLS stream cancelled mid-body: the socket is shut at once, the client goes on", function()
  -- s_server -WWW serves files from its directory (HTTP/1.0): a 16 MB one,
  -- read as lines, cut off after a few. The cancel shuts the socket before
  -- curl's TLS clean-up runs on it; nothing of that may fail or hang.
  local fport = start_server("files")
  local s = sluice.stream { url = ("https://127.0.0.1:%d/big.ndjson"):format(fport), framing = "ndjson",
                            ca_file = cert }
  for i = 1, 5 do
    local ev, err = s:next()
    T.ok(ev, "line " .. i .. ": " .. tostring(err))
    T.contains(ev.data, ('"n":%d,'):format(i), "line " .. i)
  end
  local port = s:metrics().local_port
  s:cancel("enough")
  T.eq(s:state(), "cancelled", "state")
  T.ok(not T.socket_open(port, fport), "socket closed when cancel returns")
  local res, err = sluice.fetch { url = url, ca_file = cert }
  T.ok(res and res.status == 200, "the next request over TLS works: " .. tostring(err))
end)

T.case("HTTP/1.1 unless http2 = true: an HTTP/2-only server is a clear error by default", function()
  local hport = start_server("h2")
  local u = ("https://127.0.0.1:%d/big.ndjson"):format(hport)
  local res, err = sluice.fetch { url = u, ca_file = cert }
  T.eq(res, nil, "no response over HTTP/1.1")
  T.eq(err.kind, "transport", "kind: " .. tostring(err.message))
  res, err = sluice.fetch { url = ("https://127.0.0.1:%d/cert.pem"):format(hport), ca_file = cert, http2 = true }
  T.ok(res and res.status == 200, "over HTTP/2: " .. tostring(err))
end)

T.case("HTTP/2: a cancel ends its own stream, not the others (sharing the connection from libcurl 8.15)", function()
  -- Where libcurl multiplexes, curl resets just the one stream; before 8.15
  -- (curl issue #17611) each stream has its own connection, which sluice
  -- shuts. Two streams of the same file: the first is cancelled, the second
  -- must read to the end.
  local hport = start_server("h2")
  local u = ("https://127.0.0.1:%d/big.ndjson"):format(hport)
  local a = sluice.stream { url = u, framing = "ndjson", ca_file = cert, http2 = true }
  T.ok(a:next(), "first stream started")
  local b = sluice.stream { url = u, framing = "ndjson", ca_file = cert, http2 = true }
  T.ok(b:next(), "second stream started")
  local mux = sluice._h2_multiplex()
  if mux then
    T.eq(b:metrics().local_port, a:metrics().local_port, "both on one connection")
  else
    T.ok(b:metrics().local_port ~= a:metrics().local_port, "a connection each")
  end
  -- the first stream's unread lines reach 1 MiB with their record headers
  -- (~950 KB of body): it is paused, and curl holds what came after (the
  -- sanitizer build checks that none of it leaks)
  local deadline = sluice.now() + 5
  while a:metrics().bytes < 900000 and sluice.now() < deadline do sluice.sleep(0.01) end
  T.ok(a:metrics().bytes >= 900000, "first stream filled its queue: " .. a:metrics().bytes)
  local aport = a:metrics().local_port
  a:cancel("enough")
  T.eq(a:state(), "cancelled", "first stream cancelled")
  if not mux then T.ok(not T.socket_open(aport, hport), "its connection closed when cancel returns") end
  local n = 1
  for ev in b:events() do
    n = n + 1
    if n % 20000 == 0 then T.contains(ev.data, ('"n":%d,'):format(n), "line " .. n) end
  end
  T.eq(n, LINES, "lines of the second stream")
  T.eq(b:state(), "done", "second stream state")
end)

-- A CA made here signs the servers' certificates: one for 127.0.0.1, one for
-- another name only, one expired; another CA, which the script never
-- trusts, signs a fourth.
local procs = require "procs"
local function make_ca(name) return procs.make_ca(dir, name) end
local function make_cert(name, ca, san, days) return procs.make_cert(dir, name, ca, san, days) end
local ca = make_ca("ca")
make_ca("other-ca")
local servers = {}
for name, spec in pairs {
  good = { "ca", "IP:127.0.0.1", 1 },
  wrong_name = { "ca", "DNS:localhost", 1 },
  expired = { "ca", "IP:127.0.0.1", -1 },
  untrusted = { "other-ca", "IP:127.0.0.1", 1 },
} do
  local port = start_server("www", make_cert(name, spec[1], spec[2], spec[3]))
  servers[name] = ("https://127.0.0.1:%d/"):format(port)
end

-- The error a fetch and a stream of url give, which must be the same kind.
local function refused(opts)
  local res, err = sluice.fetch(opts)
  T.eq(res, nil, "no response")
  T.eq(err.kind, "transport", "kind")
  local s = sluice.stream(opts)
  local ev, err2 = s:next()
  T.ok(ev == nil and err2.kind == "transport", "a stream is refused the same way")
  T.eq(err2.message, err.message, "the same message")
  return err.message
end

T.case("a certificate signed by a CA the script names (ca_file) is verified and accepted", function()
  local res, err = sluice.fetch { url = servers.good, ca_file = ca }
  T.ok(res and res.status == 200, "fetched: " .. tostring(err))
  local s = sluice.stream { url = servers.good, ca_file = ca, framing = "raw" }
  local ev, err2 = s:next()
  T.ok(ev, "streamed: " .. tostring(err2))
  s:close()
  -- not trusted by default: the CA is not in the system's store
  local msg = refused { url = servers.good }
  T.contains(msg, "unable to get local issuer certificate", "without ca_file")
end)

T.case("a certificate for another host name: a transport error naming the name", function()
  local msg = refused { url = servers.wrong_name, ca_file = ca }
  T.contains(msg, "no alternative certificate subject name matches target host name '127.0.0.1'", "message")
  -- the same server under the name its certificate has is accepted
  local res, err = sluice.fetch { url = servers.wrong_name:gsub("127%.0%.0%.1", "localhost"), ca_file = ca }
  T.ok(res and res.status == 200, "as localhost: " .. tostring(err))
end)

T.case("an expired certificate: a transport error saying it has expired", function()
  local msg = refused { url = servers.expired, ca_file = ca }
  T.contains(msg, "certificate has expired", "message")
end)

T.case("a certificate from a CA the script does not trust: a transport error saying so", function()
  local msg = refused { url = servers.untrusted, ca_file = ca }
  T.contains(msg, "unable to get local issuer certificate", "message")
end)

T.case("insecure = true, and only it, accepts each of them", function()
  for _, name in ipairs { "wrong_name", "expired", "untrusted" } do
    local res, err = sluice.fetch { url = servers[name], ca_file = ca, insecure = true }
    T.ok(res and res.status == 200, name .. ": " .. tostring(err))
    local s = sluice.stream { url = servers[name], insecure = true, framing = "raw" }
    T.ok(s:next(), name .. ": a stream too")
    s:close()
    local ok, e = pcall(sluice.fetch, { url = servers[name], insecure = 1 })
    T.ok(not ok and tostring(e):find("insecure", 1, true), "insecure must be a boolean: " .. tostring(e))
  end
end)

os.execute("kill " .. table.concat(started, " ") .. " 2>/dev/null")
os.execute(("rm -rf %q"):format(dir))
T.done()
