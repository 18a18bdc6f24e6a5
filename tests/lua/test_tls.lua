-- TLS is verified by default: a server with a self-signed certificate is
-- refused unless the script trusts it (ca_file) or says insecure = true.
-- The server is `openssl s_server -www` on a free loopback port.
local sluice = require "sluice"
local T = require "testlib"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 " ..
  "-addext subjectAltName=IP:127.0.0.1 -keyout %q -out %q >/dev/null 2>&1"):format(key, cert)))

-- s_server cannot pick a free port itself: try random ones until it listens
local port, pid
for try = 1, 20 do
  port = 20000 + math.random(0, 20000)
  os.execute(("openssl s_server -quiet -www -accept 127.0.0.1:%d -cert %q -key %q >%q/log 2>&1 & echo $! > %q/pid")
    :format(port, cert, key, dir, dir))
  local f = io.open(dir .. "/pid")
  pid = f:read("l")
  f:close()
  -- wait until it listens (or died: port taken)
  local up = false
  for _ = 1, 50 do
    sluice.sleep(0.02)
    local res = sluice.fetch { url = ("https://127.0.0.1:%d/"):format(port), insecure = true,
                               timeouts = { total = 1 } }
    if res then up = true break end
    if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then break end
  end
  if up then break end
  os.execute("kill " .. pid .. " 2>/dev/null")
  pid = nil
end
assert(pid, "openssl s_server did not start")
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

os.execute("kill " .. pid)
os.execute(("rm -rf %q"):format(dir))
T.done()
