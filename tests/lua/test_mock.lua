-- sluice.mock's mock.start: the mock is a direct child started with
-- --exit-with-parent, found through its --url-file; stop() reaps it and
-- removes its files, and a sluice killed with -9 takes its mock with it.
local sluice = require "sluice"
local T = require "testlib"
local mock = require "sluice.mock"

local bin = assert(os.getenv("SLUICE_BIN"), "SLUICE_BIN")

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local read_file = T.read_file

local function exists(path) return read_file(path) ~= nil end

-- State letter and parent pid of a process, or nil when there is none.
local function proc_stat(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return nil end
  local state, ppid = stat:match("^%d+ %b() (%S) (%d+)")
  return state, tonumber(ppid)
end

-- kill -0 succeeds on a zombie, and an orphan's zombie waits for init to reap
-- it (which this machine's init may never do): exited means gone or a zombie.
local function exited(pid)
  if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then return true end
  local state = proc_stat(pid)
  return state == nil or state == "Z" or state == "X"
end

local function wait_until(pred, seconds)
  local deadline = sluice.now() + seconds
  repeat
    if pred() then return true end
    sluice.sleep(0.02)
  until sluice.now() > deadline
  return pred()
end

local self_pid = tonumber(read_file("/proc/self/stat"):match("^(%d+)"))

T.case("mock.start: a direct child, stopped and reaped, its files removed", function()
  local server = mock.start { tokens_per_sec = 0, quiet = true }
  T.ok(server.root:match("^http://127%.0%.0%.1:%d+$"), "root " .. server.root)
  T.eq(server.url, server.root .. "/v1", "url")
  local state, ppid = proc_stat(server.pid)
  T.ok(state and state ~= "Z", "running")
  T.eq(ppid, self_pid, "the mock's parent is this sluice")
  T.ok(server.stats(), "answers /stats")
  local base = server.log_file:gsub("%.log$", "")
  T.ok(exists(base .. ".url"), "the url file exists while it runs")
  server.stop()
  T.eq(proc_stat(server.pid), nil, "gone and reaped (no zombie)")
  for _, f in ipairs { base, base .. ".url", server.log_file } do
    T.ok(not exists(f), "removed " .. f)
  end
  server.stop()  -- twice is harmless
end)

T.case("mock.start: a bad flag fails at once with the mock's message", function()
  local ok, err = pcall(mock.start, { no_such_flag = true })
  T.ok(not ok, "raised")
  T.contains(err, "unknown option --no-such-flag", "the mock's own error")
end)

T.case("a sluice killed with -9 leaves no mock running", function()
  local base = os.tmpname()
  local script, info, pidfile = base .. ".lua", base .. ".info", base .. ".pid"
  local f = assert(io.open(script, "w"))
  f:write [[
    local s = require("sluice.mock").start { tokens_per_sec = 5 }
    local f = assert(io.open(arg[1], "w"))
    f:write(s.pid, " ", s.log_file, "\n")
    f:close()
    require("sluice").sleep(60)
  ]]
  f:close()
  T.ok(os.execute(("%s %s %s </dev/null >/dev/null 2>&1 & echo $! >%s"):format(
    q(bin), q(script), q(info), q(pidfile))), "started a sluice")
  local sluice_pid = tonumber(read_file(pidfile))
  local line
  T.ok(wait_until(function()
    line = read_file(info)
    return line and line:find("\n")
  end, 10), "the child sluice started its mock")
  local mock_pid, log_file = line:match("^(%d+) (%S+)")
  T.ok(not exited(mock_pid), "its mock runs")
  T.eq(select(2, proc_stat(mock_pid)), sluice_pid, "the mock is that sluice's child")

  os.execute("kill -9 " .. sluice_pid)
  T.ok(wait_until(function() return exited(mock_pid) end, 5), "the mock exited with its parent")
  -- it shut down as on SIGTERM, cleanly (nothing a sanitizer would report)
  local log = read_file(log_file) or ""
  T.contains(log, "SIGTERM, shutting down", "mock log")
  T.ok(not log:find("Sanitizer") and not log:find("runtime error"), "clean exit: " .. log)
  -- kill -9 skips stop(): remove what it would have
  local mock_base = log_file:gsub("%.log$", "")
  for _, file in ipairs { base, script, info, pidfile, mock_base, mock_base .. ".url", log_file } do
    os.remove(file)
  end
end)

T.done()
