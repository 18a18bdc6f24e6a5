-- The `sluice` host: arguments as the stock lua sets them, -e, - (stdin),
-- --help, --version, exit statuses, and error reports with a traceback.
local T = require "testlib"

local SLUICE = os.getenv("SLUICE_BIN")

local function run(args, stdin)
  local cmd = ("%q %s 2>&1"):format(SLUICE, args)
  if stdin then cmd = ("printf '%%s' %q | %s"):format(stdin, cmd) end
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

local function script(src)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  return path
end

T.case("-e runs code", function()
  local out, code = run([[-e 'print(1 + 1)']])
  T.eq(out, "2\n", "output")
  T.eq(code, 0, "status")
end)

T.case("a script gets arg and ... like the stock lua", function()
  local path = script([[print(arg[0] == (...) and "" or "", #arg, arg[1], arg[2], select("#", ...), ...)]])
  local out, code = run(("%q one two"):format(path))
  T.eq(out, "\t2\tone\ttwo\t2\tone\ttwo\n", "arg table and varargs")
  T.eq(code, 0, "status")
  local out2 = run(("%q"):format(script([[print(arg[0], arg[-1] ~= nil)]])))
  T.contains(out2, "true", "arg[-1] is the interpreter")
  os.remove(path)
end)

T.case("-e CODE script.lua runs both, the code first, in one task (stock lua does)", function()
  local path = script([[print("script", FROM_E, ...)]])
  local out, code = run(("-e 'FROM_E = 41 + 1' -e 'io.write(\"second \")' %q a b"):format(path))
  T.eq(out, "second script\t42\ta\tb\n", "both ran, in order, the script with its arguments")
  T.eq(code, 0, "status")
  out, code = run(("-e 'error(\"early\")' %q"):format(path))
  T.contains(out, "early", "an error in -e stops the run")
  T.eq(code, 1, "status")
  os.remove(path)
end)

T.case("sluice help lists the subcommands; sluice NAME runs lua/sluice/cli/NAME.lua", function()
  local out, code = run("help")
  T.eq(code, 0, "help status")
  T.contains(out, "commands:", "a list")
  T.contains(out, "mock ", "mock is one")
  T.ok(not out:find("cannot open", 1, true), "not taken for a script")
  out, code = run("help mock")
  T.contains(out, "usage: sluice-mock", "help NAME is NAME --help")
  out, code = run("mock --help")
  T.contains(out, "--url-file", "sluice mock passes its arguments on")
  T.eq(code, 0, "status")
  out, code = run("nosuchcommand")
  T.contains(out, "'nosuchcommand' is neither a file nor a command", "a clear error")
  T.eq(code, 1, "status")
end)

T.case("a script named like a command is reachable as ./NAME, and as NAME when the file is there", function()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. dir))
  local f = assert(io.open(dir .. "/mock", "w"))
  f:write('print("my own script named mock")')
  f:close()
  local p = assert(io.popen(("cd %q && %q ./mock && %q mock 2>&1"):format(dir, SLUICE, SLUICE)))
  local out = p:read("a")
  p:close()
  T.eq(out, "my own script named mock\nmy own script named mock\n", "the file wins over the command")
  os.execute("rm -rf " .. dir)
end)

T.case("sluice mock serves until a signal ends sluice, and the mock goes with it", function()
  local urlfile = os.tmpname()
  os.remove(urlfile)
  local p = assert(io.popen(("echo $$; exec %q mock --url-file %q 2>/dev/null"):format(SLUICE, urlfile)))
  local pid = p:read("l")
  local url
  for _ = 1, 300 do
    local uf = io.open(urlfile)
    url = uf and uf:read("l")
    if uf then uf:close() end
    if url then break end
    require("sluice").sleep(0.01)
  end
  T.ok(url, "the mock wrote its URL")
  T.contains(p:read("l"), "listening on " .. url, "and said where it listens")
  local res = assert(require("sluice").fetch { url = url .. "/v1/models" })
  T.eq(res.status, 200, "it serves")
  os.execute("kill -TERM " .. pid)
  p:close()
  local port = tonumber(url:match(":(%d+)$"))
  local _, err = require("sluice").fetch { url = url .. "/v1/models", timeouts = { total = 2 } }
  T.ok(err, "the mock is gone once sluice is: " .. tostring(port))
  os.remove(urlfile)
end)

T.case("- reads the script from stdin", function()
  local out, code = run("- x", [[print("from stdin", arg[1], require("sluice").now() > 0)]])
  T.eq(out, "from stdin\tx\ttrue\n", "output")
  T.eq(code, 0, "status")
end)

T.case("--help and --version", function()
  local out, code = run("--help")
  T.contains(out, "usage:", "help")
  T.eq(code, 0, "help status")
  out, code = run("--version")
  T.contains(out, "sluice ", "version")
  T.contains(out, "libcurl", "version names libcurl")
  T.eq(code, 0, "version status")
end)

T.case("bad usage exits 1 with the usage", function()
  local out, code = run("--frobnicate")
  T.contains(out, "unrecognized option", "message")
  T.contains(out, "usage:", "usage shown")
  T.eq(code, 1, "status")
  out, code = run("")
  T.eq(code, 1, "no script")
end)

T.case("a syntax error or a missing file exits 1 with the message", function()
  local out, code = run(("%q"):format(script("local = 1")))
  T.contains(out, "expected near '='", "syntax error")
  T.eq(code, 1, "status")
  out, code = run("/nonexistent/script.lua")
  T.contains(out, "cannot open", "missing file")
  T.eq(code, 1, "status")
end)

T.case("an uncaught error: message, traceback, status 1", function()
  local out, code = run(("%q"):format(script([[
local function inner() error("deep trouble") end
local function outer() inner() end
outer()]])))
  T.contains(out, "deep trouble", "message")
  T.contains(out, "stack traceback", "traceback")
  T.contains(out, "in upvalue 'inner'", "the frame that raised")
  T.ok(not out:find("never joined"), "reported once, not again as an unjoined task")
  T.eq(code, 1, "status")
  local out2, code2 = run([[-e 'error(require("sluice").error("http", "http status 503", 503))']])
  T.contains(out2, "sluice: http status 503", "an error value prints with its __tostring, once")
  T.ok(not out2:find("http: http", 1, true), "not twice")
  T.eq(code2, 1, "status")
end)

T.case("unjoined failed task: reported, and the exit status is 1", function()
  local out, code = run([[-e 'local s = require "sluice"; s.spawn(function() error("lonely failure") end); s.sleep(0.01)']])
  T.contains(out, "lonely failure", "reported on stderr")
  T.contains(out, "never joined", "says nobody joined it")
  T.eq(code, 1, "a failure nobody looked at makes the run fail")
  -- joined (and handled) or cancelled: not a failure of the run
  out, code = run([[-e 'local s = require "sluice"; local t = s.spawn(function() error("seen") end); assert(not t:join())']])
  T.eq(code, 0, "a joined failure is the script's business")
  out, code = run([[-e 'local s = require "sluice"; local t = s.spawn(s.sleep, 10); s.sleep(0.01); t:cancel()']])
  T.eq(code, 0, "a cancelled task is no failure")
end)

T.done()
