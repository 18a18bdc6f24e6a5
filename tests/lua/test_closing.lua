-- The closing guarantee, end to end: for every way a stream can stop, the
-- mock (the server) sees the disconnect at once and generates at most one
-- token after the script decided to stop; the client holds no socket after.
local sluice = require "sluice"
local T = require "testlib"

-- 100 tokens/s: a token every 10 ms, so "at most one more" is a real bound.
local PACE = { tokens_per_sec = 100 }

T.case("cancel closes the connection before it returns", function()
  local s, id = T.open(PACE, { body = { max_tokens = 1000 } })
  local seen = T.read_tokens(s, 5)
  local port = s:metrics().local_port
  T.ok(port, "local port known")
  T.ok(T.socket_open(port), "socket open while streaming")
  local t = sluice.now()
  s:cancel("enough")
  T.ok(not T.socket_open(port), "socket closed when cancel returns")
  T.eq(T.upstream_sockets(), 0, "sockets to the mock after cancel")
  T.eq(s:state(), "cancelled", "state")
  local ev, err = s:next()
  T.eq(ev, nil, "no event after cancel")
  T.eq(err.kind, "cancelled", "error kind after cancel")
  T.eq(s:metrics().cancel_reason, "enough", "cancel reason")
  s:cancel("again")  -- idempotent
  T.eq(s:metrics().cancel_reason, "enough", "second cancel changes nothing")
  T.assert_stopped(id, seen, t)
end)

T.case("close", function()
  local s, id = T.open(PACE, { body = { max_tokens = 1000 } })
  local seen = T.read_tokens(s, 3)
  local t = sluice.now()
  s:close()
  s:close()
  T.eq(s:state(), "cancelled", "state")
  T.assert_stopped(id, seen, t)
end)

T.case("break out of events()", function()
  local s, id = T.open(PACE, { body = { max_tokens = 1000 } })
  local n, t = 0, nil
  for ev in s:events() do
    if ev.data:find('"content":"[^"]', 1) then n = n + 1 end
    if n == 4 then
      t = sluice.now()
      break
    end
  end
  T.eq(s:state(), "cancelled", "state after break")
  T.eq(s:metrics().cancel_reason, "closed", "reason")
  T.assert_stopped(id, n, t)
end)

T.case("return from inside events()", function()
  local id, t
  local function first_tokens()
    local s
    s, id = T.open(PACE, { body = { max_tokens = 1000 } })
    local n = 0
    for ev in s:events() do
      if ev.data:find('"content":"[^"]', 1) then n = n + 1 end
      if n == 2 then
        t = sluice.now()
        return n, s
      end
    end
  end
  local n, s = first_tokens()
  T.eq(s:state(), "cancelled", "state after return")
  T.assert_stopped(id, n, t)
end)

T.case("error raised inside events()", function()
  local s, id = T.open(PACE, { body = { max_tokens = 1000 } })
  local n, t = 0, nil
  local ok, err = pcall(function()
    for ev in s:events() do
      if ev.data:find('"content":"[^"]', 1) then n = n + 1 end
      if n == 3 then
        t = sluice.now()
        error("policy exploded")
      end
    end
  end)
  T.ok(not ok and tostring(err):find("policy exploded"), "error propagates")
  T.eq(s:state(), "cancelled", "state after error")
  T.assert_stopped(id, n, t)
end)

T.case("<close> variable leaving scope", function()
  local id, n, t
  do
    local s <close>, rid = T.open(PACE, { body = { max_tokens = 1000 } })
    id = rid
    n = T.read_tokens(s, 3)
    t = sluice.now()
  end
  T.assert_stopped(id, n, t)
end)

T.case("idle timeout while the server stalls", function()
  local s, id = T.open({ tokens_per_sec = 100, stall_after = 3 },
                       { body = { max_tokens = 1000 }, timeouts = { idle = 0.3 } })
  local seen = T.read_tokens(s, 3)
  local ev, err = s:next()
  while ev do ev, err = s:next() end  -- drain what was queued before the stall
  T.eq(err and err.kind, "timeout", "error kind")
  T.contains(err.message, "idle", "message")
  T.eq(s:state(), "failed", "state")
  T.assert_stopped(id, seen, s:metrics().ended)
end)

T.case("total timeout raises from events()", function()
  local s, id = T.open(PACE, { body = { max_tokens = 1000 }, timeouts = { total = 0.25 } })
  local seen = 0
  local ok, err = pcall(function()
    for ev in s:events() do
      if ev.data:find('"content":"[^"]', 1) then seen = seen + 1 end
    end
  end)
  T.ok(not ok, "events() raised")
  T.eq(err.kind, "timeout", "error kind")
  T.contains(err.message, "total", "message")
  T.assert_stopped(id, seen, s:metrics().ended)
end)

T.case("first_byte timeout", function()
  local s, id = T.open({ ttft = 5 }, { timeouts = { first_byte = 0.2 } })
  local ev, err = s:next()
  T.eq(ev, nil, "no event")
  T.eq(err.kind, "timeout", "kind")
  T.le(s:metrics().ended - s:metrics().started, 1, "fired on time")
  T.wait_record(id, function(r) return r.client_closed end)
end)

T.case("idle timeout is not reset by : ping comments", function()
  local s, id = T.open({ ping_only = true, ping_interval = 0.05 }, { timeouts = { idle = 0.4 } })
  local t0 = sluice.now()
  local ev, err = s:next()
  T.eq(ev, nil, "no data event")
  T.eq(err.kind, "timeout", "kind")
  T.ok(sluice.now() - t0 >= 0.35, "waited the idle time")
  T.ok(s:metrics().bytes > 0, "pings were received")
  T.wait_record(id, function(r) return r.client_closed end)
end)

T.case("connect timeout: the hanging connect is abandoned and its socket closed", function()
  -- a second mock that listens but never accepts: once its backlog is full,
  -- the kernel drops new SYNs and connects hang
  local server = require("sluice.mock").start { no_accept = true }
  local url = server.root
  local port = tonumber(url:match(":(%d+)$"))
  local ss = {}
  for i = 1, 6 do ss[i] = sluice.stream { url = url .. "/v1/models", timeouts = { connect = 0.3, total = 2 } } end
  local t0, connect_timeouts = sluice.now(), 0
  for i = 1, 6 do
    local ev, err = ss[i]:next()
    T.eq(ev, nil, "no event")
    T.eq(err.kind, "timeout", "kind")
    if err.message:find("connect") then connect_timeouts = connect_timeouts + 1 end
  end
  T.ok(connect_timeouts >= 3, "connects that hung timed out as connects: " .. connect_timeouts)
  T.eq(T.upstream_sockets(port), 0, "no socket left to that server")
  T.ok(sluice.now() - t0 < 2.5, "nothing waited longer than its timeouts")
  server.stop()
end)

T.case("a child process started meanwhile does not keep the connection open", function()
  local s, id = T.open(PACE, { body = { max_tokens = 1000 } })
  local seen = T.read_tokens(s, 3)
  -- both inherit whatever this process has open: they must not get the socket
  local pidfile = os.tmpname()
  os.execute(("sleep 3 & echo $! > %q"):format(pidfile))
  local exec_task = sluice.spawn(function() return sluice.exec { "sleep", "3" } end)
  sluice.sleep(0.05)
  local t = sluice.now()
  s:cancel("stop")
  T.assert_stopped(id, seen, t)
  local f = io.open(pidfile)
  os.execute("kill " .. f:read("l"))
  f:close()
  os.remove(pidfile)
  exec_task:cancel()
  exec_task:join()
end)

T.case("the owning task raising an error", function()
  local id, seen, t
  local task = sluice.spawn(function()
    local s
    s, id = T.open(PACE, { body = { max_tokens = 1000 } })
    seen = T.read_tokens(s, 3)
    t = sluice.now()
    error("task gives up")
  end)
  local ok, err = task:join()
  T.ok(not ok, "join reports failure")
  T.contains(tostring(err), "task gives up", "error")
  T.assert_stopped(id, seen, t)
end)

T.case("the owning task being cancelled", function()
  local id, seen, closed_ran = nil, 0, false
  local task = sluice.spawn(function()
    local s
    s, id = T.open(PACE, { body = { max_tokens = 1000 } })
    local guard <close> = setmetatable({}, { __close = function() closed_ran = true end })
    for ev in s:events() do
      if ev.data:find('"content":"[^"]', 1) then seen = seen + 1 end
    end
  end)
  while seen < 3 do sluice.sleep(0.005) end
  local t = sluice.now()
  T.ok(task:cancel("user pressed stop"), "cancel accepted")
  local ok, err = task:join()
  T.ok(not ok, "join fails")
  T.eq(err.kind, "cancelled", "kind")
  T.ok(closed_ran, "the task's <close> variables ran")
  T.assert_stopped(id, seen, t)
end)

T.case("garbage collection", function()
  local id, seen
  do
    local s
    s, id = T.open(PACE, { body = { max_tokens = 1000 } })
    seen = T.read_tokens(s, 2)
  end
  local t = sluice.now()
  collectgarbage()
  collectgarbage()
  T.assert_stopped(id, seen, t)
end)

T.case("garbage collection without asking: old dropped streams are closed as new ones open", function()
  -- Streams kept a while (old, for the generational collector), then
  -- dropped while open: the Lua heap alone may not bring the major
  -- collection that closes them for minutes (a soak came to hold 14,000).
  -- The script never calls collectgarbage here.
  local N, held, ids = 300, {}, {}
  for i = 1, N do
    local s, id = T.open({ tokens_per_sec = 20 }, { body = { max_tokens = 1000 } })
    held[i], ids[i] = s, id
  end
  for i = 1, N // 10 do held[i]:next() end  -- some traffic: minor collections run meanwhile
  held = nil  -- dropped, every one still streaming
  local more = {}
  for i = 1, 2 * N do more[i] = T.open({ tokens_per_sec = 20 }, { body = { max_tokens = 1000 } }) end
  T.le(sluice._census().streams, 2 * N + N // 2, "live streams, the dropped ones collected")
  for _, s in ipairs(more) do s:close() end
  local rec = T.wait_record(ids[1], function(r) return r.client_closed end)
  T.ok(rec.client_closed, "the mock saw a dropped stream closed")
end)

T.case("a cancelled connection is never reused; a completed one may be", function()
  local s1, id1 = T.open({ tokens_per_sec = 0 }, { body = { max_tokens = 5 } })
  for _ in s1:events() do end
  T.eq(s1:state(), "done", "first stream completed")
  local s2, id2 = T.open(PACE, { body = { max_tokens = 1000 } })
  T.read_tokens(s2, 2)
  s2:cancel()
  local s3, id3 = T.open({ tokens_per_sec = 0 }, { body = { max_tokens = 5 } })
  for _ in s3:events() do end
  local r1, r2, r3 = T.record(id1), T.record(id2), T.record(id3)
  T.ok(r1.completed and r3.completed, "completed")
  T.ok(r3.conn ~= r2.conn, "the cancelled connection was not reused")
  T.eq(r2.conn, r1.conn, "the completed connection was reused")
end)

T.case("a cancel closes its own connection only, on new and reused connections alike", function()
  -- Rounds of streams over kept-alive connections, every other one cancelled
  -- mid-stream: the socket a cancel shuts must be its own, never one that
  -- curl has since closed and the kernel handed to another stream.
  local done_conns, reused = {}, 0
  for round = 1, 3 do
    local tasks = {}
    for i = 1, 12 do
      tasks[i] = sluice.spawn(function()
        local s, id = T.open({ tokens_per_sec = 200 }, { body = { max_tokens = 10 } })
        if i % 2 == 1 then
          T.read_tokens(s, 2)
          s:cancel("half")
          return id, s:state(), 2
        end
        return id, s:state(), T.read_tokens(s, 1000), s
      end)
    end
    local conns = {}
    for i = 1, 12 do
      local ok, id, _, seen, s = tasks[i]:join()
      T.ok(ok, "task " .. i .. " ran: " .. tostring(id))
      local rec = T.wait_record(id, function(r) return r.completed or r.client_closed end)
      if i % 2 == 1 then
        T.ok(rec.aborted and not rec.completed, ("round %d: stream %d cancelled"):format(round, i))
      else
        T.eq(s:state(), "done", ("round %d: stream %d state"):format(round, i))
        T.eq(seen, 10, ("round %d: stream %d tokens"):format(round, i))
        T.ok(rec.completed, ("round %d: stream %d completed"):format(round, i))
        conns[#conns + 1] = rec.conn
      end
      if done_conns[rec.conn] then reused = reused + 1 end
    end
    for _, c in ipairs(conns) do done_conns[c] = true end
  end
  T.ok(reused > 0, "later rounds ran on kept-alive connections")
end)

T.done()
