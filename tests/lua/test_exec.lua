-- sluice.exec: programs run without blocking other tasks; output, exit code,
-- signal; no shell unless asked; a timeout or the task's cancellation kills the
-- whole process group, and nothing is left running.
local sluice = require "sluice"
local T = require "testlib"

-- running processes whose command line holds `marker` (each test sleeps for
-- a distinctive time, so the marker finds only its own program)
local function children_of_exec(marker)
  local p = io.popen("ps -eo pid,args")
  local n = 0
  for line in p:lines() do
    if line:find(marker, 1, true) and not line:find("ps -eo", 1, true) then n = n + 1 end
  end
  p:close()
  return n
end

T.case("output and exit code", function()
  local r = assert(sluice.exec { "echo", "hello", "world" })
  T.eq(r.code, 0, "code")
  T.eq(r.stdout, "hello world\n", "stdout")
  T.eq(r.stderr, "", "stderr")
  local r2 = assert(sluice.exec { "sh", "-c", "echo oops >&2; exit 3" })
  T.eq(r2.code, 3, "code")
  T.eq(r2.stderr, "oops\n", "stderr")
end)

T.case("stdin, env, cwd", function()
  local r = assert(sluice.exec({ "cat" }, { stdin = "fed through stdin" }))
  T.eq(r.stdout, "fed through stdin", "stdin")
  local r2 = assert(sluice.exec({ "sh", "-c", "echo $FOO; pwd" }, { env = { FOO = "bar" }, cwd = "/tmp" }))
  T.eq(r2.stdout, "bar\n/tmp\n", "env and cwd")
end)

T.case("no shell unless asked", function()
  local r = assert(sluice.exec { "echo", "$HOME;", "`id`" })
  T.eq(r.stdout, "$HOME; `id`\n", "arguments are not interpreted")
  local r2 = assert(sluice.exec("echo $((1 + 2))", { shell = true }))
  T.eq(r2.stdout, "3\n", "a command line with shell = true")
  T.ok(not pcall(sluice.exec, "echo hi"), "a string without shell = true is refused")
end)

T.case("a program that cannot run is an error value", function()
  local r, err = sluice.exec { "/nonexistent/program" }
  T.eq(r, nil, "no result")
  T.eq(err.kind, "exec", "kind")
  T.contains(err.message, "/nonexistent/program", "message names it")
end)

T.case("killed by a signal", function()
  local r = assert(sluice.exec { "sh", "-c", "kill -TERM $$" })
  T.eq(r.signal, 15, "signal")
  T.eq(r.code, nil, "no exit code")
end)

T.case("other tasks run while a program runs", function()
  local ticks = 0
  local ticker = sluice.spawn(function() for _ = 1, 5 do sluice.sleep(0.02) ticks = ticks + 1 end end)
  local r = assert(sluice.exec { "sleep", "0.3" })
  T.eq(r.code, 0, "code")
  ticker:join()
  T.eq(ticks, 5, "the other task ran meanwhile")
end)

-- Runs a shell command that outlives its timeout: exec must give up promptly
-- with a timeout error, and nothing matching marker may be left running.
local function times_out(command, timeout, marker, left_what)
  local t0 = sluice.now()
  local r, err = sluice.exec(command, { shell = true, timeout = timeout })
  T.eq(r, nil, "no result")
  T.eq(err.kind, "timeout", "kind")
  T.ok(sluice.now() - t0 < 2, "returned promptly")
  sluice.sleep(0.05)
  T.eq(children_of_exec(marker), 0, left_what)
end

T.case("a timeout kills the whole process group", function()
  times_out("sleep 7.31; echo never", 0.2, "sleep 7.31", "neither the shell nor its child is left running")
end)

T.case("a timeout also kills a grandchild that keeps the pipes open", function()
  -- the shell exits at once; its background child holds stdout open
  times_out("sleep 7.39 & exit 0", 0.3, "sleep 7.39", "the grandchild was killed")
end)

T.case("cancelling the task kills the program at once", function()
  local marker = "sleep 7.32"
  local task = sluice.spawn(function() return sluice.exec { "sleep", "7.32" } end)
  sluice.sleep(0.1)
  T.eq(children_of_exec(marker), 1, "it runs")
  local t0 = sluice.now()
  task:cancel("no more")
  local ok, err = task:join()
  T.ok(not ok and err.kind == "cancelled", "cancelled")
  T.ok(sluice.now() - t0 < 1, "promptly")
  sluice.sleep(0.05)
  T.eq(children_of_exec(marker), 0, "the program was killed")
end)

T.case("output beyond max_output is cut and the program stopped", function()
  local r = assert(sluice.exec({ "sh", "-c", "yes sluice" }, { max_output = 1000 }))
  T.eq(#r.stdout, 1000, "kept up to the cap")
  T.ok(r.truncated, "says so")
end)

T.case("the host kills what is still running when the script exits", function()
  for i, exit in ipairs { "os.exit(0, true)", "os.exit(0)", "error('boom')" } do
    local marker = "sleep 7.3" .. (i + 2)
    local cmd = ("%q -e %q 2>&1"):format(os.getenv("SLUICE_BIN"), ([[
      local sluice = require "sluice"
      sluice.spawn(function() sluice.exec { "sleep", "MARK" } end)
      sluice.sleep(0.1)
      EXIT]]):gsub("MARK", marker:match("[%d.]+$")):gsub("EXIT", exit))
    local t0 = sluice.now()
    local p = io.popen(cmd)
    p:read("a")
    p:close()
    T.ok(sluice.now() - t0 < 3, exit .. ": did not wait for the program")
    sluice.sleep(0.1)
    T.eq(children_of_exec(marker), 0, exit .. ": no orphan left behind")
  end
end)

T.done()
