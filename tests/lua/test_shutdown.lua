-- Closing paths that end the process: end of script, os.exit, an uncaught
-- error, SIGINT and SIGTERM. A child `sluice` streams from the mock; a
-- sentinel's __gc keeps the child alive 0.3 s after its Lua state starts
-- closing, so a close the mock sees well before the child exits was made by
-- sluice itself, not by the kernel tearing the process down.
local sluice = require "sluice"
local T = require "testlib"

local child = [[
local sluice = require "sluice"
local cjson = require "cjson"
local url, id, mode = arg[1], arg[2], arg[3]
SENTINEL = setmetatable({}, { __gc = function() os.execute("sleep 0.3") end })
local s = sluice.stream { url = url .. "/v1/chat/completions", headers = { ["X-Request-Id"] = id },
  json = { model = "m", stream = true, max_tokens = 1000, messages = { { role = "user", content = "hi" } },
           mock = { tokens_per_sec = 25 } } }
local n = 0
for ev in s:events() do
  local c = ev.data ~= "[DONE]" and cjson.decode(ev.data)
  if c and c.choices[1] and (c.choices[1].delta.content or "") ~= "" then n = n + 1 end
  if n == 3 then break end
end
local f = io.open("/proc/self/stat"); local pid = f:read("l"):match("^%d+"); f:close()
-- keep a second stream open: this is the one the shutdown path must close
KEEP = sluice.stream { url = url .. "/v1/chat/completions", headers = { ["X-Request-Id"] = id .. "-open" },
  json = { model = "m", stream = true, max_tokens = 1000, messages = { { role = "user", content = "hi" } },
           mock = { tokens_per_sec = 25 } } }
local m = 0
while m < 3 do
  local ev = assert(KEEP:next())
  local c = ev.data ~= "[DONE]" and cjson.decode(ev.data)
  if c and c.choices[1] and (c.choices[1].delta.content or "") ~= "" then m = m + 1 end
end
io.write(pid, " ", m, "\n")
io.flush()
if mode == "end" then return
elseif mode == "exit" then os.exit(0, true)
elseif mode == "exit-noclose" then os.exit(3)
elseif mode == "error" then error("uncaught on purpose")
elseif mode == "busy" then while true do end  -- never waits: only a hook can stop it
else sluice.sleep(60) end
]]

local path = os.tmpname()
local f = assert(io.open(path, "w"))
f:write(child)
f:close()

local function run(mode, signal)
  local id = ("shutdown-%s-%d"):format(mode, os.time())
  local cmd = ("%q %q %q %q %q 2>&1"):format(os.getenv("SLUICE_BIN"), path, T.url, id, mode)
  local p = assert(io.popen(cmd))
  local line = p:read("l")
  local pid, seen = (line or ""):match("^(%d+) (%d+)")
  T.ok(pid, "child started: " .. tostring(line))
  -- the stop: the signal, or the script going on to its end once it printed
  -- (which it did before this read); order, not milliseconds
  local stopped_at = sluice.now()
  if signal then stopped_at = T.signal(pid, signal) end
  local rest = p:read("a")
  local _, how, code = p:close()
  local exited_at = sluice.now()
  local rec = T.assert_stopped(id .. "-open", tonumber(seen), stopped_at)
  return how, code, rest, rec, exited_at
end

local function closed_before_exit(rec, exited_at, slack)
  T.le(rec.closed_at, exited_at - (slack or 0.2), "mock saw the close before the child exited")
end

T.case("end of script closes open streams", function()
  local how, code, out, rec, exited_at = run("end")
  T.eq(code, 0, "exit status (" .. out .. ")")
  closed_before_exit(rec, exited_at)
end)

T.case("os.exit closes open streams first", function()
  local how, code, out, rec, exited_at = run("exit")
  T.eq(code, 0, "exit status (" .. out .. ")")
  closed_before_exit(rec, exited_at)
  local _, code3 = run("exit-noclose")
  T.eq(code3, 3, "os.exit status")
end)

T.case("an uncaught error: traceback, exit 1, streams closed", function()
  local how, code, out, rec, exited_at = run("error")
  T.eq(code, 1, "exit status")
  T.contains(out, "uncaught on purpose", "message")
  T.contains(out, "stack traceback", "traceback")
  closed_before_exit(rec, exited_at)
end)

T.case("SIGINT: streams closed, exit 130", function()
  local how, code, out, rec, exited_at = run("signal", "INT")
  T.eq(code, 130, "exit status (" .. out .. ")")
  closed_before_exit(rec, exited_at)
end)

T.case("SIGTERM: streams closed, exit 143", function()
  local how, code, out, rec, exited_at = run("signal", "TERM")
  T.eq(code, 143, "exit status (" .. out .. ")")
  closed_before_exit(rec, exited_at)
end)

T.case("SIGINT stops a script busy in a loop that never waits", function()
  local how, code, out, rec, exited_at = run("busy", "INT")
  T.eq(code, 130, "exit status (" .. out .. ")")
  T.contains(out, "interrupted", "says why")
  closed_before_exit(rec, exited_at)
end)

os.remove(path)
T.done()
