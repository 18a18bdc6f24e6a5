-- Every example, run as a user would run it (a child process pointed at the
-- test's sluice-mock through OPENAI_BASE_URL); the mock's /stats proves each
-- stopped request was stopped upstream: the server saw the client close and
-- generated at most one token after what the script received.
local sluice = require "sluice"
local T = require "testlib"
local mock = require "sluice.mock"

local here = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
local examples = here .. "/../../examples"
local bin = assert(os.getenv("SLUICE_BIN"), "SLUICE_BIN")

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs an example; returns its output, and asserts it exited with status 0.
local function run(name, opts)
  opts = opts or {}
  local env = opts.own_mock and "-u OPENAI_BASE_URL" or ("OPENAI_BASE_URL=%s"):format(q(T.url .. "/v1"))
  local cmd = ("env -u OPENAI_API_KEY -u OPENAI_MODEL %s %s %s/%s.lua %s 2>&1"):format(
    env, q(bin), q(examples), name, opts.args or "")
  if opts.stdin then cmd = "(" .. opts.stdin .. ") | " .. cmd end
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok, how, code = p:close()
  if not ok then error(("%s exited with %s %s:\n%s"):format(name, how, code, out), 2) end
  return out
end

-- The requests an example reported: { id, tokens, how, sent, after } from its
-- "[request ID] ...received N tokens, HOW" lines and the "server: generated
-- SENT tokens, AFTER after the stop" line under each.
local function reported(out)
  local list = {}
  for id, n, how, rest in out:gmatch("%[request (%S+)%] [^\n]-received (%d+) tokens, ([^\n]*)\n?([^\n]*)") do
    local sent, after = rest:match("^  server: generated (%d+) tokens, (%d+) after the stop")
    list[#list + 1] = { id = id, tokens = tonumber(n), how = how, sent = tonumber(sent), after = tonumber(after) }
  end
  return list
end

-- Checks every reported request against the mock; returns them by reason.
-- "After the stop" is the example's own figure: the mock's send times of its
-- last tokens against sluice's close time (one clock), as
-- testlib.assert_stopped counts; what was already on its way is not counted.
local function check_upstream(out, expected)
  local list = reported(out)
  T.eq(#list, expected, "requests reported")
  local reasons = {}
  for _, r in ipairs(list) do
    local stopped = r.how:match("^stopped by (.*)$")
    if stopped then
      local rec = T.wait_record(r.id, function(x) return x.client_closed end)
      T.ok(rec.aborted, r.id .. ": the mock aborted the request")
      T.ok(not rec.completed, r.id .. ": not completed")
      T.eq(r.sent, rec.tokens_sent, r.id .. ": the tokens the example says the server generated")
      T.ok(rec.tokens_sent >= r.tokens, r.id .. ": the server sent what the example received")
      T.le(r.after, 1, r.id .. ": tokens generated after the stop")
      T.contains(T.mock_log(), "Aborted request " .. r.id, "mock log")
      reasons[#reasons + 1] = stopped
    else
      T.contains(r.how, "finished on its own", r.id)
      local rec = T.wait_record(r.id, function(x) return x.completed end)
      T.eq(rec.tokens_sent, r.tokens, r.id .. ": all tokens received")
    end
  end
  return reasons, list
end

T.case("stop_after_tokens", function()
  local out = run("stop_after_tokens")
  local reasons, list = check_upstream(out, 1)
  T.eq(reasons[1], "max_tokens:200", "reason")
  T.eq(list[1].tokens, 200, "tokens received")
  T.contains(out, "after the stop", "the example reports what the server saw")
  -- the one latency figure, said plainly: whose close, whose notice
  T.ok(out:match("disconnect: the server noticed it [%d.]+ [um]s after sluice closed the connection"),
       "the disconnect line:\n" .. out)
end)

T.case("stop_on_keyword", function()
  local out = run("stop_on_keyword")
  local reasons = check_upstream(out, 1)
  T.eq(reasons[1], 'stop_on:"Q.E.D."', "reason")
  T.contains(out, 'spread over 6 chunks', "split across chunks")
end)

T.case("stop_button", function()
  local t0 = sluice.now()
  local out = run("stop_button", { stdin = "sleep 0.5; echo" })
  local reasons, list = check_upstream(out, 1)
  T.eq(reasons[1], "stop button", "reason")
  T.ok(list[1].tokens >= 5 and list[1].tokens < 40, "stopped after about 0.5 s of tokens: " .. list[1].tokens)
  T.le(sluice.now() - t0, 5, "seconds")
end)

T.case("deadlines", function()
  local out = run("deadlines")
  local reasons = check_upstream(out, 2)
  T.eq(reasons[1], "ttft:0.5s", "ttft")
  T.eq(reasons[2], "idle:0.5s", "idle")
end)

T.case("concurrent", function()
  local out = run("concurrent")
  local reasons = check_upstream(out, 5)
  table.sort(reasons)
  T.eq(table.concat(reasons, ","), 'deadline:1s,max_chars:300,max_tokens:50,stop_on:"QED"', "reasons")
  T.contains(out, "finish: length", "the one without a policy finished")
end)

T.case("race", function()
  local out = run("race")
  local reasons, list = check_upstream(out, 2)
  T.eq(reasons[1], "lost the race", "the loser was cancelled")
  T.contains(out, "winner: ", "a winner")
  T.contains(list[2].how, "finished on its own", "the winner finished")
end)

T.case("repetition_guard", function()
  local out = run("repetition_guard")
  local reasons = check_upstream(out, 1)
  T.contains(reasons[1], 'repetition:"I need to check the first step again."', "reason")
end)

-- The accuracy and the stops the bundled questions make on a sluice-mock: it
-- generates each line's mock_reply, else the right final answer, then rambles.
local function expected_on_mock()
  local cjson = require "cjson"
  local total, right, stops = 0, 0, 0
  for line in io.lines(examples .. "/data/questions.jsonl") do
    local q = cjson.decode(line)
    local got = (q.mock_reply or ("Final answer: " .. q.answer .. "\n")):match("Final answer:%s*([^\n]+)\n")
    total = total + 1
    if got then stops = stops + 1 end
    if got == q.answer then right = right + 1 end
  end
  return total, right, stops
end

T.case("batch_eval", function()
  local out = run("batch_eval")
  local total, right, stops = expected_on_mock()
  T.contains(out, ("accuracy: %d/%d ("):format(right, total), "accuracy")
  T.contains(out, ("stopped early: %d of %d requests"):format(stops, total), "stops")
  local tag = T.ok(out:match("custom_ids (%S+)/<id>"), "the run's custom_ids:\n" .. out)
  -- every row against what the mock saw of its request
  local rows, saved = 0, 0
  for id, result, tokens, ended in out:gmatch("\n(q%d+) +(%S+) +(%d+)  (%S[^\n]-)  ") do
    rows = rows + 1
    tokens = tonumber(tokens)
    local cid = tag .. "/" .. id
    if ended:match("^stopped") then
      local rec = T.wait_record(cid, function(x) return x.client_closed end)
      T.ok(rec.aborted and not rec.completed, cid .. ": closed upstream before its end")
      T.ok(rec.tokens_sent >= tokens, cid .. ": the server sent what the example received")
      T.le(rec.tokens_sent, tokens + 1, cid .. ": tokens the server generated past the final answer")
      T.ok(tokens < 200, cid .. ": stopped short of max_tokens")
      saved = saved + 200 - tokens
    else
      T.eq(ended:match("^%S+ %b()"), "finished (length)", cid .. ": the answer without a final line")
      T.eq(result, "unanswered", cid .. ": scored as unanswered")
      local rec = T.wait_record(cid, function(x) return x.completed end)
      T.eq(rec.tokens_sent, tokens, cid .. ": all tokens received")
    end
  end
  T.eq(rows, total, "a row a question")
  T.contains(out, (" %d saved by the stops"):format(saved), "tokens saved")
  T.contains(out, ("server: %d of the %d stopped requests closed by the client"):format(stops, stops), "/stats")
end)

T.case("an example without OPENAI_BASE_URL starts and stops its own mock", function()
  local out = run("stop_after_tokens", { own_mock = true })
  T.contains(out, "stopped by max_tokens:200", "ran")
  -- as everywhere: at most one token after the stop (a loaded machine may let
  -- one through before the mock sees the close)
  local r = reported(out)[1]
  T.ok(r and r.sent, "read its own mock's /stats:\n" .. out)
  T.le(r.after, 1, "tokens generated after the stop")
  T.eq(r.tokens, 200, "tokens the script received")
  T.ok(r.sent >= 200, "the server generated what the script received")
end)

-- Runs an example with args through sluice.exec; returns code, stdout, stderr.
local function run_raw(name, args, base_url)
  local argv = { "env", "-u", "OPENAI_API_KEY", "-u", "OPENAI_MODEL", "-u", "OPENAI_BASE_URL" }
  if base_url then argv[#argv + 1] = "OPENAI_BASE_URL=" .. base_url end
  argv[#argv + 1] = bin
  argv[#argv + 1] = ("%s/%s.lua"):format(examples, name)
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = assert(sluice.exec(argv, { timeout = 30 }))
  return r.code, r.stdout, r.stderr
end

local all = { "stop_after_tokens", "stop_on_keyword", "stop_button", "deadlines", "concurrent", "race",
              "repetition_guard", "batch_eval" }

T.case("every example: --help prints its usage, --frobnicate is a usage error; nothing starts", function()
  -- a mock nobody else talks to: anything an example started against it
  -- would show in its connection count
  local server = mock.start { quiet = true }
  local ok, err = pcall(function()
    for _, name in ipairs(all) do
      local code, out, errout = run_raw(name, { "--help" }, server.url)
      T.eq(code, 0, name .. " --help: exit status (" .. errout .. ")")
      T.contains(out, ("usage: sluice %s/%s.lua "):format(examples, name), name .. " --help")
      T.contains(out, "--model M", name .. " --help lists the flags")
      T.eq(errout, "", name .. " --help: stderr")
      code, out, errout = run_raw(name, { "--frobnicate" }, server.url)
      T.eq(code, 2, name .. " --frobnicate: exit status")
      T.eq(out, "", name .. " --frobnicate: stdout")
      T.ok(errout:match("^[^\n]*unknown option '%-%-frobnicate'; usage: sluice [^\n]*\n$"),
           name .. " --frobnicate: one line of usage error, got " .. errout)
    end
    -- without OPENAI_BASE_URL an example starts its own mock, unless asked for help
    local code, out = run_raw("stop_after_tokens", { "--help" })
    T.eq(code, 0, "--help without a server")
    T.ok(not out:find("[request", 1, true), "ran nothing")
    local code2, _, errout = run_raw("stop_on_keyword", { "--keyword" }, server.url)
    T.eq(code2, 2, "a flag without its value")
    T.contains(errout, "option '--keyword' needs a value", "says which")
    code2, _, errout = run_raw("deadlines", { "--ttft=soon" }, server.url)
    T.eq(code2, 2, "a number flag that is not a number")
    T.contains(errout, "option '--ttft' must be a number", "says which")
    code2, _, errout = run_raw("stop_on_keyword", { "stray" }, server.url)
    T.eq(code2, 2, "a stray argument")
    T.contains(errout, "unexpected argument 'stray'", "says which")
    T.eq(server.stats().connections_total, 1, "connections the mock saw (only this /stats)")
  end)
  server.stop()
  if not ok then error(err, 0) end
end)

T.case("flags reach the example: --keyword and --ttft/--idle", function()
  local code, out = run_raw("stop_on_keyword", { "--keyword", "QED" }, T.url .. "/v1")
  T.eq(code, 0, "exit status")
  T.contains(out, 'stopped by stop_on:"QED"', "the keyword given")
  code, out = run_raw("deadlines", { "--ttft=0.3", "--idle", "0.4" }, T.url .. "/v1")
  T.eq(code, 0, "exit status")
  T.contains(out, "stopped by ttft:0.3s", "ttft")
  T.contains(out, "stopped by idle:0.4s", "idle")
end)

-- stdin at its end: the button stops the answer at once, maybe before the
-- request reached the server. The report says which, never that the
-- example's own mock has no /stats.
for _, own in ipairs { true, false } do
  T.case("stop_button with stdin at its end" .. (own and ", its own mock" or ""), function()
    local out = run("stop_button", { own_mock = own, stdin = "true" })
    T.contains(out, "stopped by stop button", "stopped")
    T.ok(not out:find("no /stats", 1, true), "no false claim about /stats:\n" .. out)
    T.ok(out:find("server: never received the request", 1, true) or out:find("server: generated %d+ tokens"),
         "what the server saw:\n" .. out)
  end)
end

T.case("mock.start and stop", function()
  local server = mock.start { tokens_per_sec = 0, quiet = true }
  T.ok(server.url:match("^http://127%.0%.0%.1:%d+/v1$"), "url " .. server.url)
  local st = server.stats()
  T.eq(#st.requests, 0, "a fresh mock")
  local pid = server.pid
  T.ok(os.execute("kill -0 " .. pid .. " 2>/dev/null"), "running")
  server.stop()
  -- gone, or a zombie waiting for whoever adopted it to reap it
  local function alive()
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then return false end
    local stat = f:read("a")
    f:close()
    return not stat:match("^%d+ %b() Z")
  end
  local gone = false
  for _ = 1, 100 do
    if not alive() then gone = true break end
    sluice.sleep(0.01)
  end
  T.ok(gone, "stopped")
end)

T.done()
