-- TLS is verified by default: a server with a self-signed certificate is
-- refused unless the script trusts it (ca_file) or says insecure = true.
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
local function start_server(kind)
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
                                 timeouts = { total = 1 } }
      if res then return port, pid end
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

local port, pid = start_server("www")
local url = ("https://127.0.0.1:%d/"):format(port)

T.case("one h2 stream cancelled", function()
  local hport, hpid = start_server("h2")
  local u = ("https://127.0.0.1:%d/big.ndjson"):format(hport)
  local a = sluice.stream { url = u, framing = "ndjson", ca_file = cert }
  T.ok(a:next(), "started")
  sluice.sleep(0.2)
  a:cancel("x")
  os.execute("kill " .. hpid)
end)
os.execute("kill " .. pid)
os.execute(("rm -rf %q"):format(dir))
T.done()
