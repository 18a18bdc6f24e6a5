-- TLS is verified by default: a server with a self-signed certificate is
-- refused unless the script trusts it (ca_file) or says insecure = true.
-- The servers are `openssl s_server -www` (a status page) and `-WWW` (files)
-- on free loopback ports.
local sluice = require "sluice"
local T = require "testlib"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 " ..
  "-addext subjectAltName=IP:127.0.0.1 -keyout %q -out %q >/dev/null 2>&1"):format(key, cert)))

-- s_server cannot pick a free port itself: try random ones until it listens.
-- mode: "-www" (a status page for any path) or "-WWW" (files from dir).
local function start_server(mode)
  local name = mode == "-www" and "www" or "files"
  for try = 1, 20 do
    local port = 20000 + math.random(0, 20000)
    os.execute(("(cd %q && exec openssl s_server -quiet %s -accept 127.0.0.1:%d -cert %q -key %q >%s.log 2>&1) & echo $! > %q")
      :format(dir, mode, port, cert, key, name, dir .. "/" .. name .. ".pid"))
    local f = io.open(dir .. "/" .. name .. ".pid")
    local pid = f:read("l")
    f:close()
    -- wait until it listens (or died: port taken)
    for _ = 1, 50 do
      sluice.sleep(0.02)
      local res = sluice.fetch { url = ("https://127.0.0.1:%d/"):format(port), insecure = true,
                                 timeouts = { total = 1 } }
      if res then return port, pid end
      if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then break end
    end
    os.execute("kill " .. pid .. " 2>/dev/null")
  end
  error("openssl s_server did not start")
end
local port, pid = start_server("-www")
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
  local f = assert(io.open(dir .. "/big.ndjson", "w"))
  local line = ('{"n":%d,"pad":"' .. ("x"):rep(200) .. '"}\n')
  for i = 1, 80000 do f:write(line:format(i)) end
  f:close()
  local fport, fpid = start_server("-WWW")
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
  os.execute("kill " .. fpid)
end)

os.execute("kill " .. pid)
os.execute(("rm -rf %q"):format(dir))
T.done()
