-- Servers a test starts between sluice and the mock (nginx, nghttpx, the
-- suite's faultproxy): each runs under sluice.exec in a task of its own, so
-- the runtime owns it (the census counts it; a failed run's shutdown walk
-- kills its process group), and a shell writes its pid before exec'ing it,
-- so it can be stopped with SIGTERM and its exit status checked. Nothing is
-- ever killed by name.
local sluice = require "sluice"

local P = {}

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
P.read = read

function P.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- A new empty directory; P.rmdir removes it.
function P.tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  return dir
end

function P.rmdir(dir)
  os.execute(("rm -rf %q"):format(dir))
end

-- Ports bound on this machine (any state), from /proc/net/tcp{,6}.
local function ports_in_use()
  local used = {}
  for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    local f = io.open(file)
    if f then
      for line in f:lines() do
        local port = line:match("^%s*%d+: %x+:(%x+) ")
        if port then used[tonumber(port, 16)] = true end
      end
      f:close()
    end
  end
  return used
end

-- A port nothing uses now, for a server that cannot pick its own (nginx,
-- nghttpx). Another process may take it first: P.start_on_free_port retries.
function P.free_port()
  local used = ports_in_use()
  for _ = 1, 100 do
    local port = math.random(20000, 60000)
    if not used[port] then return port end
  end
  error("no free port found")
end

local proc = {}
proc.__index = proc

-- Runs argv (no shell) as a server. opts.ready() -> true once it serves
-- (polled every 20 ms, for at most opts.wait seconds, default 5); opts.log: a
-- file its stderr goes to (else it is collected for proc:stop()). Returns the
-- proc, or nil and what it printed when it exited first or never got ready.
-- proc.pid; proc:stop() -> the exec result (code, signal, stdout, stderr);
-- a <close> variable stops it too.
function P.start(argv, opts)
  opts = opts or {}
  local pidfile = os.tmpname()
  local cmd = { "sh", "-c", 'echo $$ > "$0"; exec "$@"', pidfile }
  if opts.log then  -- its stderr appended to a file, readable while it runs
    cmd = { "sh", "-c", 'echo $$ > "$0"; log=$1; shift; exec "$@" 2>>"$log"', pidfile, opts.log }
  end
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local task = sluice.spawn(function()
    return sluice.exec(cmd, { max_output = 1 << 20, cwd = opts.cwd })
  end)
  local self = setmetatable({ task = task, name = argv[1]:match("[^/]*$") }, proc)
  local deadline = sluice.now() + (opts.wait or 5)
  while sluice.now() < deadline do
    if task:status() ~= "running" then break end
    self.pid = self.pid or tonumber((read(pidfile) or ""):match("^(%d+)\n"))
    if self.pid and (not opts.ready or opts.ready()) then
      os.remove(pidfile)
      return self
    end
    sluice.sleep(0.02)
  end
  os.remove(pidfile)
  local r = self:stop()
  return nil, ("%s did not start (code %s): %s%s"):format(self.name, tostring(r and r.code),
    r and r.stdout or "", r and r.stderr or "")
end

-- SIGTERM, then its exit within 5 s, or SIGKILL to its process group.
-- Returns the exec result once it has been reaped.
function proc:stop()
  if self.result then return self.result end
  if self.pid and self.task:status() == "running" then
    os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
  end
  local deadline = sluice.now() + 5
  while self.task:status() == "running" and sluice.now() < deadline do sluice.sleep(0.01) end
  if self.task:status() == "running" then self.task:cancel("did not stop on SIGTERM") end
  local ok, r = self.task:join()
  self.result = ok and r or { code = nil, stdout = "", stderr = tostring(r) }
  return self.result
end
proc.__close = proc.stop

-- Starts a server on a free port: argv_for(port) -> argv, ready(port) ->
-- true once it serves. Tries other ports when one turns out taken.
function P.start_on_free_port(argv_for, ready, opts)
  local why
  for _ = 1, 10 do
    local port = P.free_port()
    local p
    p, why = P.start(argv_for(port), { ready = function() return ready(port) end, cwd = opts and opts.cwd })
    if p then return p, port end
    if not why:lower():find("in use", 1, true) then break end
  end
  error(why, 2)
end

-- Runs a shell command line and fails loudly, with its output.
function P.sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1")
  local out = p:read("a")
  local ok = p:close()
  if not ok then error("command failed: " .. cmd .. "\n" .. out, 2) end
  return out
end

-- Test certificates in dir: make_ca(dir, name) -> dir/name.pem (and .key);
-- make_cert(dir, name, ca, san, days) -> dir/name.pem, dir/name.key, a
-- server certificate for san ("IP:127.0.0.1", "DNS:x") signed by CA ca,
-- valid for days (negative: expired).
local function openssl(dir, args)
  local cmd = "cd " .. dir .. " && openssl " .. args .. " >>openssl.log 2>&1"
  assert(os.execute(cmd), cmd)
end

function P.make_ca(dir, name)
  openssl(dir, ("req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=%s -keyout %s.key -out %s.pem")
    :format(name, name, name))
  return dir .. "/" .. name .. ".pem"
end

function P.make_cert(dir, name, ca, san, days)
  local f = assert(io.open(dir .. "/" .. name .. ".ext", "w"))
  f:write("subjectAltName=", san, "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
  f:close()
  openssl(dir, ("req -newkey rsa:2048 -nodes -subj /CN=%s -keyout %s.key -out %s.csr"):format(name, name, name))
  openssl(dir, ("x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -days %d -extfile %s.ext -out %s.pem")
    :format(name, ca, ca, days, name, name))
  return dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".key"
end

return P
