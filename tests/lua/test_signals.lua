-- Every signal that ends a terminal session or a job goes through the one
-- shutdown walk: SIGHUP (terminal closed, ssh dropped), SIGINT, SIGQUIT,
-- SIGTERM. A child `sluice` holds one of each kind of resource: a running
-- sluice.exec child, an open stream, a task with a <close> variable, a task
-- waiting on stdin. After the signal: exit status 128 + n, the exec child is
-- gone (killed and reaped, not an orphan), the mock saw the stream closed
-- while the process was still alive, and the <close> variable ran.
local sluice = require "sluice"
local T = require "testlib"

local child = [[
local sluice = require "sluice"
local cjson = require "cjson"
local url, id, dir = arg[1], arg[2], arg[3]
-- keeps the process alive 0.3 s after its Lua state starts closing: a close
-- the mock sees well before the exit was made by sluice, not by the kernel
SENTINEL = setmetatable({}, { __gc = function() os.execute("sleep 0.3") end })
local function mark(name, text)
  local f = assert(io.open(dir .. "/" .. name, "w"))
  f:write(text)
  f:close()
end
sluice.spawn(function()
  return sluice.exec { "sh", "-c", "echo $$ > " .. dir .. "/child.pid; exec sleep 100" }
end)
sluice.spawn(function()
  local guard <close> = setmetatable({}, { __close = function() mark("closed", "yes") end })
  sluice.sleep(100)
end)
sluice.spawn(function() return sluice.read_line() end)
local s = sluice.stream { url = url .. "/v1/chat/completions", headers = { ["X-Request-Id"] = id },
  json = { model = "m", stream = true, max_tokens = 1000, messages = { { role = "user", content = "hi" } },
           mock = { tokens_per_sec = 25 } } }
local n = 0
while n < 3 do
  local ev = assert(s:next())
  local c = ev.data ~= "[DONE]" and cjson.decode(ev.data)
  if c and c.choices[1] and (c.choices[1].delta.content or "") ~= "" then n = n + 1 end
end
while not io.open(dir .. "/child.pid") do sluice.sleep(0.01) end
local f = io.open("/proc/self/stat")
mark("ready", f:read("l"):match("^%d+") .. " " .. n)
f:close()
sluice.sleep(100)
]]

local read, gone = T.read_file, T.gone


local SIGNALS = { HUP = 1, INT = 2, QUIT = 3, TERM = 15 }

for _, name in ipairs { "HUP", "INT", "QUIT", "TERM" } do
  T.case("SIG" .. name .. ": exec child killed and reaped, stream closed, <close> ran, exit " ..
         128 + SIGNALS[name], function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local script = dir .. "/child.lua"
    local f = assert(io.open(script, "w"))
    f:write(child)
    f:close()
    local id = ("signal-%s-%d"):format(name, os.time())
    -- stdin is a pipe we hold open: the reader in the child waits on it
    local p = assert(io.popen(("%q %q %q %q %q >%q 2>&1; echo $? >%q"):format(os.getenv("SLUICE_BIN"), script,
                                T.url, id, dir, dir .. "/out", dir .. "/status"), "w"))
    local deadline = sluice.now() + 10
    while not read(dir .. "/ready") and sluice.now() < deadline do sluice.sleep(0.02) end
    local pid, seen = (read(dir .. "/ready") or ""):match("^(%d+) (%d+)")
    T.ok(pid, "child ready: " .. tostring(read(dir .. "/out")))
    local exec_pid = read(dir .. "/child.pid"):match("%d+")
    T.ok(not gone(exec_pid), "the exec child runs")
    local signalled = T.signal(pid, name)
    p:close()  -- waits for the child (the pipe to its stdin closes only now)
    local exited_at = sluice.now()
    T.eq(tonumber(read(dir .. "/status")), 128 + SIGNALS[name], "exit status (" .. read(dir .. "/out") .. ")")
    T.ok(gone(exec_pid), "the exec child is gone, not left running or unreaped")
    T.eq(read(dir .. "/closed"), "yes", "the suspended task's <close> variable ran")
    local rec = T.assert_stopped(id, tonumber(seen), signalled)
    T.le(rec.closed_at, exited_at - 0.2, "the mock saw the close while sluice was alive")
    os.execute("rm -rf " .. dir)
  end)
end

T.done()
