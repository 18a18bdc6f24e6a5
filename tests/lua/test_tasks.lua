-- Tasks: spawn/join, errors and cancellation as values, sleep, all, first.
local sluice = require "sluice"
local T = require "testlib"

T.case("spawn and join return the function's results", function()
  local t = sluice.spawn(function(a, b) sluice.sleep(0.01) return a + b, "x" end, 2, 3)
  local ok, sum, x = t:join()
  T.eq(ok, true, "ok")
  T.eq(sum, 5, "result")
  T.eq(x, "x", "second result")
  T.eq(t:status(), "done", "status")
  local ok2, sum2 = t:join()
  T.ok(ok2 and sum2 == 5, "join twice")
end)

T.case("an error in a task is a value for join", function()
  local t = sluice.spawn(function() error({ code = 7 }) end)
  local ok, err = t:join()
  T.eq(ok, false, "ok")
  T.eq(err.code, 7, "error value kept")
  T.eq(t:status(), "failed", "status")
end)

T.case("sleep orders tasks by time and does not block others", function()
  local order = {}
  local t0 = sluice.now()
  local a = sluice.spawn(function() sluice.sleep(0.06) order[#order + 1] = "a" end)
  local b = sluice.spawn(function() sluice.sleep(0.02) order[#order + 1] = "b" end)
  local c = sluice.spawn(function() order[#order + 1] = "c" end)
  sluice.all { a, b, c }
  T.eq(table.concat(order), "cba", "order")
  local dt = sluice.now() - t0
  T.ok(dt >= 0.055 and dt < 0.5, "slept concurrently: " .. dt)
end)

T.case("cancel a sleeping task: <close> runs, join says cancelled", function()
  local closed = false
  local t = sluice.spawn(function()
    local g <close> = setmetatable({}, { __close = function() closed = true end })
    sluice.sleep(10)
  end)
  sluice.sleep(0.01)
  local t0 = sluice.now()
  T.eq(t:cancel("stop"), true, "cancel returns true")
  local ok, err = t:join()
  T.ok(sluice.now() - t0 < 0.5, "cancel is prompt")
  T.eq(ok, false, "ok")
  T.eq(err.kind, "cancelled", "kind")
  T.contains(err.message, "stop", "reason")
  T.ok(closed, "<close> ran")
  T.eq(t:status(), "cancelled", "status")
  T.eq(t:cancel(), false, "cancelling a finished task")
end)

T.case("a task cancelled before it ran never runs", function()
  local ran = false
  local t = sluice.spawn(function() ran = true end)
  t:cancel()
  local ok, err = t:join()
  T.ok(not ok and err.kind == "cancelled", "cancelled")
  T.ok(not ran, "never ran")
end)

T.case("sluice.all", function()
  local ts = {}
  for i = 1, 5 do ts[i] = sluice.spawn(function() sluice.sleep(0.01 * (6 - i)) return i * i end) end
  ts[6] = sluice.spawn(function() error("six") end)
  local r = sluice.all(ts)
  for i = 1, 5 do
    T.ok(r[i][1] == true and r[i][2] == i * i, "result " .. i)
  end
  T.eq(r[6][1], false, "the failure")
  T.eq(r[6].n, 2, "packed")
end)

T.case("sluice.first returns the winner and cancels the others upstream", function()
  local slow_id
  local fast = sluice.spawn(function() sluice.sleep(0.05) return "fast" end)
  local slow = sluice.spawn(function()
    local s
    s, slow_id = T.open({ tokens_per_sec = 50 }, { body = { max_tokens = 1000 } })
    for _ in s:events() do end
    return "slow"
  end)
  local i, ok, v = sluice.first { slow, fast }
  T.eq(i, 2, "index of the winner")
  T.ok(ok and v == "fast", "winner's results")
  local ok2, err = slow:join()
  T.ok(not ok2 and err.kind == "cancelled", "the loser was cancelled")
  T.wait_record(slow_id, function(r) return r.client_closed end)
end)

T.case("two tasks cannot read one stream at once", function()
  local s = T.open({ ttft = 5 }, { body = { max_tokens = 50 } })  -- nothing arrives for 5 s
  local reader = sluice.spawn(function() return s:next() end)
  sluice.sleep(0.01)
  local ok, err = pcall(s.next, s)
  T.ok(not ok and err:find("already being read"), "second reader refused")
  s:close()
  local _, ev, rerr = reader:join()
  T.ok(ev == nil and rerr.kind == "cancelled", "the first reader sees the close")
end)

T.case("a plain coroutine.yield in a task lets others run", function()
  local log = {}
  local a = sluice.spawn(function() for i = 1, 3 do log[#log + 1] = "a" .. i coroutine.yield() end end)
  local b = sluice.spawn(function() for i = 1, 3 do log[#log + 1] = "b" .. i coroutine.yield() end end)
  sluice.all { a, b }
  T.eq(table.concat(log, ","), "a1,b1,a2,b2,a3,b3", "interleaved")
end)

T.case("a generator (coroutine.wrap) can wait on a stream", function()
  local s = T.open({ tokens_per_sec = 200 }, { body = { max_tokens = 12 } })
  local function datas(stream)
    return coroutine.wrap(function()
      for ev in stream:events() do coroutine.yield(ev.data) end
    end)
  end
  local n, other_ran = 0, false
  local other = sluice.spawn(function() sluice.sleep(0.01) other_ran = true end)
  for d in datas(s) do
    T.ok(type(d) == "string", "a data string")
    n = n + 1
  end
  T.eq(n, 15, "every event through the generator (role, 12 tokens, finish, [DONE])")
  other:join()
  T.ok(other_ran, "other tasks ran while the generator waited")
end)

T.case("waits pass through nested coroutines and coroutine.resume", function()
  local inner = coroutine.create(function(x)
    sluice.sleep(0.02)
    local y = coroutine.yield(x + 1)
    sluice.sleep(0.01)
    return y * 2
  end)
  local outer = coroutine.wrap(function()
    local ok1, a = coroutine.resume(inner, 1)
    sluice.sleep(0.005)
    local ok2, b = coroutine.resume(inner, 10)
    return ok1, a, ok2, b
  end)
  local t0 = sluice.now()
  local ok1, a, ok2, b = outer()
  T.ok(ok1 and ok2, "resumes succeeded")
  T.eq(a, 2, "first yield value")
  T.eq(b, 20, "return value")
  T.ok(sluice.now() - t0 >= 0.03, "the sleeps happened")
  local co = coroutine.wrap(function() error("inside") end)
  local ok, err = pcall(co)
  T.ok(not ok and tostring(err):find("inside"), "errors still propagate from wrap")
end)

T.case("cancelling a task that waits inside a generator", function()
  local closed = false
  local t = sluice.spawn(function()
    local gen = coroutine.wrap(function()
      local g <close> = setmetatable({}, { __close = function() closed = true end })
      sluice.sleep(10)
    end)
    gen()
  end)
  sluice.sleep(0.01)
  t:cancel("stop")
  local ok, err = t:join()
  T.ok(not ok and err.kind == "cancelled", "cancelled: " .. tostring(err))
  T.ok(closed, "the generator's <close> ran")
end)

T.case("a task that keeps yielding does not starve I/O, and can be cancelled", function()
  local spins, closed = 0, false
  local spinner = sluice.spawn(function()
    local g <close> = setmetatable({}, { __close = function() closed = true end })
    while true do spins = spins + 1 coroutine.yield() end
  end)
  local t0 = sluice.now()
  sluice.sleep(0.05)
  T.ok(sluice.now() - t0 < 0.5, "a timer still fires")
  local res = assert(sluice.fetch { url = T.url .. "/health" })
  T.eq(res.status, 200, "I/O still happens")
  T.ok(spins > 10, "the spinner ran meanwhile")
  spinner:cancel("enough spinning")
  local ok, err = spinner:join()
  T.ok(not ok and err.kind == "cancelled", "cancelled at its bare yield")
  T.ok(closed, "its <close> variables ran")
end)

T.case("an error object whose __tostring fails is still reported", function()
  local t = sluice.spawn(function()
    error(setmetatable({}, { __tostring = function() error("no string for you") end }))
  end)
  local ok, err = t:join()
  T.ok(not ok and type(err) == "table", "the error value is kept")
end)

T.done()
