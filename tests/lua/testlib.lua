-- A small test library for Lua tests run by the sluice host against sluice-mock.
-- Each case runs in its own task. After each, the runtime's census (streams,
-- fetches, children, timers, stdin watches, tasks, the descriptors it holds)
-- and the process's open descriptors (/proc/self/fd) must be back to what
-- they were before the case: nothing left behind (as luv's tests walk the
-- loop after each case).
local sluice = require "sluice"
local cjson = require "cjson"

local T = { url = assert(os.getenv("SLUICE_MOCK_URL"), "run me through tests/run_lua_test.sh") }
T.port = tonumber(T.url:match(":(%d+)$"))
local passed, failed = 0, 0

local function fail(msg, level)
  error(msg, (level or 1) + 1)
end

function T.eq(a, b, what)
  if a ~= b then
    fail(("%s: expected %s, got %s"):format(what or "value", tostring(b), tostring(a)), 2)
  end
end

function T.ok(v, what)
  if not v then fail((what or "assertion") .. " failed", 2) end
  return v
end

function T.le(a, b, what)
  if not (a and b and a <= b) then
    fail(("%s: expected <= %s, got %s"):format(what or "value", tostring(b), tostring(a)), 2)
  end
end

function T.contains(s, needle, what)
  if type(s) ~= "string" or not s:find(needle, 1, true) then
    fail(("%s: %q does not contain %q"):format(what or "string", tostring(s), needle), 2)
  end
end

-- A file's contents, or nil when it cannot be read.
function T.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function T.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Has process pid exited and been reaped?
function T.gone(pid) return T.read_file("/proc/" .. pid .. "/stat") == nil end

-- A fresh temporary path (nothing there).
function T.tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

-- Tokens the mock sent after `t` (sluice.now()'s clock), from the send times
-- of its last four (rec.recent_token_at).
function T.sent_after(rec, t)
  local n = 0
  for _, at in ipairs(rec.recent_token_at) do if at > t then n = n + 1 end end
  return n
end

-- A chat completion request body for the mock; mock = per-request behaviour.
function T.chat(mock, extra)
  local body = { model = "mock-model", stream = true,
                 messages = { { role = "user", content = "hello" } } }
  for k, v in pairs(extra or {}) do body[k] = v end
  body.mock = mock
  return body
end

local request_seq = 0
-- A fresh request id: name-<time>-<n>, unique in this process.
function T.request_id(name)
  request_seq = request_seq + 1
  return ("%s-%d-%d"):format(name, os.time(), request_seq)
end

-- Opens a streaming chat request to the mock with a fresh X-Request-Id.
function T.open(mock, opts)
  request_seq = request_seq + 1
  local id = ("t%d-%d"):format(os.time(), request_seq)
  local o = { url = T.url .. "/v1/chat/completions", json = T.chat(mock, opts and opts.body),
              headers = { ["X-Request-Id"] = id } }
  for k, v in pairs(opts or {}) do if k ~= "body" then o[k] = v end end
  return sluice.stream(o), id
end

function T.stats()
  local res = assert(sluice.fetch { url = T.url .. "/stats" })
  assert(res.status == 200, "stats status " .. tostring(res.status))
  return cjson.decode(res.body)
end

function T.record(id)
  for _, r in ipairs(T.stats().requests) do
    if r.id == id then return r end
  end
end

-- Polls /stats until pred(record) holds (at most `timeout` seconds).
-- The first truthy value of pred(), polled every step seconds (0.01) for at
-- most timeout seconds; nil if it never came.
function T.wait_until(pred, timeout, step)
  local deadline = sluice.now() + timeout
  repeat
    local v = pred()
    if v then return v end
    sluice.sleep(step or 0.01)
  until sluice.now() > deadline
end

function T.wait_record(id, pred, timeout)
  local rec
  local found = T.wait_until(function()
    rec = T.record(id)
    return rec and (not pred or pred(rec)) and rec
  end, timeout or 3)
  if found then return found end
  fail(("request %s: condition not reached; last record: %s"):format(
    id, rec and cjson.encode(rec) or "none"), 2)
end

-- The mock's log (stderr).
function T.mock_log()
  local f = assert(io.open(os.getenv("SLUICE_MOCK_LOG")))
  local s = f:read("a")
  f:close()
  return s
end

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("l")
  f:close()
  return s:match("^(%d+)")
end

-- Sockets of this process connected to `port` (default: the mock's), from
-- /proc: our fds' socket inodes matched against /proc/net/tcp{,6} entries.
function T.upstream_sockets(port)
  port = port or T.port
  local inodes = {}
  local p = io.popen("ls -l /proc/" .. pid() .. "/fd 2>/dev/null")
  for line in p:lines() do
    local ino = line:match("socket:%[(%d+)%]")
    if ino then inodes[ino] = true end
  end
  p:close()
  local n = 0
  for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    local f = io.open(file)
    if f then
      for line in f:lines() do
        local rport, inode = line:match("^%s*%d+: %x+:%x+ %x+:(%x+) %x+ %x+:%x+ %x+:%x+ %x+%s+%d+%s+%d+%s+(%d+)")
        if rport and tonumber(rport, 16) == port and inodes[inode] then n = n + 1 end
      end
      f:close()
    end
  end
  return n
end

-- Is the connection a stream used (identified by its local port) still open
-- here? remote_port: the server's (default: the mock's).
function T.socket_open(local_port, remote_port)
  local inodes = {}
  local p = io.popen("ls -l /proc/" .. pid() .. "/fd 2>/dev/null")
  for line in p:lines() do
    local ino = line:match("socket:%[(%d+)%]")
    if ino then inodes[ino] = true end
  end
  p:close()
  for _, file in ipairs { "/proc/net/tcp", "/proc/net/tcp6" } do
    local f = io.open(file)
    if f then
      for line in f:lines() do
        local lport, rport, inode = line:match("^%s*%d+: %x+:(%x+) %x+:(%x+) %x+ %x+:%x+ %x+:%x+ %x+%s+%d+%s+%d+%s+(%d+)")
        if lport and tonumber(lport, 16) == local_port and tonumber(rport, 16) == (remote_port or T.port)
           and inodes[inode] then
          f:close()
          return true
        end
      end
      f:close()
    end
  end
  return false
end

-- Reads events of a chat stream until n content tokens were seen; returns
-- how many were seen (fewer if the stream ended).
function T.read_tokens(s, n)
  local seen = 0
  while seen < n do
    local ev, err = s:next()
    if not ev then
      if err then error(err) end
      break
    end
    if ev.data ~= "[DONE]" then
      local chunk = cjson.decode(ev.data)
      local c = chunk.choices and chunk.choices[1]
      local content = c and c.delta and c.delta.content
      if type(content) == "string" and content ~= "" then seen = seen + 1 end
    end
  end
  return seen
end

-- Sends signal (a name: "INT", "TERM") to pid; returns when it was sent, as
-- a stop time for T.assert_stopped: the moment kill(1) returned. The time
-- before it would count the shell's start (tens of ms from an ASan build on
-- a busy machine), while the child, not yet signalled, rightly streams on.
function T.signal(pid, name)
  os.execute("kill -" .. name .. " " .. pid)
  return sluice.now()
end

-- The closing guarantee as the server sees it: the mock noticed the client
-- close, and sent at most one token after `stopped_at` (sluice.now() when the
-- script decided to stop, or any time after; the mock's clock is the same;
-- its record keeps the send times of its last four tokens). Order, not
-- milliseconds: a loaded machine may be slow, never out of order. Without
-- stopped_at: at most one token beyond the `seen` the script had.
function T.assert_stopped(id, seen, stopped_at)
  local rec = T.wait_record(id, function(r) return r.client_closed end)
  T.ok(rec.aborted, "mock logged the abort")
  T.ok(not rec.completed, "response not completed")
  T.ok(rec.closed_at, "closed_at recorded")
  if stopped_at then
    T.le(T.sent_after(rec, stopped_at), 1, "tokens the mock sent after the stop (of its last " .. #rec.recent_token_at .. ")")
  else
    T.le(rec.tokens_sent - seen, 1, "tokens generated after the stop")
  end
  T.contains(T.mock_log(), "Aborted request " .. id, "mock log")
  return rec
end

-- The runtime's census with the connections kept alive for reuse closed
-- first (a case starts from none).
local function census()
  sluice._drop_connections()
  return sluice._census()
end

-- What differs between two censuses, or nil.
local function census_diff(a, b)
  local keys, out = {}, {}
  for k in pairs(a) do keys[#keys + 1] = k end
  for k in pairs(b) do if a[k] == nil then keys[#keys + 1] = k end end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if a[k] ~= b[k] then out[#out + 1] = ("%s %s -> %s"):format(k, tostring(a[k]), tostring(b[k])) end
  end
  if #out > 0 then return table.concat(out, ", ") end
end
T.census, T.census_diff = census, census_diff

-- After a case: back to the baseline. A killed child takes a moment to be
-- reaped, a finished stream to be collected: wait for it, up to 3 s.
local function left_behind(before)
  local deadline, diff = sluice.now() + 3, nil
  repeat
    collectgarbage()
    collectgarbage()
    diff = census_diff(before, census())
    if not diff then return nil end
    sluice.sleep(0.01)
  until sluice.now() > deadline
  return diff
end

local first_case = true

function T.case(name, fn)
  if first_case then
    -- Warm-up: what exists once for the whole process is there before the
    -- first baseline: the main task's own timer, and the /dev/null libuv
    -- opens at its first spawn.
    first_case = false
    sluice.sleep(0)
    assert(sluice.exec { "true" })
  end
  local before, fds_before = census(), sluice._fds()
  local task = sluice.spawn(function()
    local ok, e = xpcall(fn, function(e) return debug.traceback(tostring(e), 2) end)
    if not ok then error(e, 0) end
  end)
  local ok, err = task:join()
  task = nil
  local leak = left_behind(before)
  if ok and leak then
    ok, err = false, "left behind: " .. leak
    local now = sluice._fds()
    for fd, what in pairs(fds_before) do
      if now[fd] ~= what then err = err .. ("; fd %d was %s, now %s"):format(fd, what, tostring(now[fd])) end
    end
    for fd, what in pairs(now) do
      if not fds_before[fd] then err = err .. ("; fd %d is new: %s"):format(fd, what) end
    end
  end
  if ok then
    passed = passed + 1
    print("ok - " .. name)
  else
    failed = failed + 1
    print("not ok - " .. name .. ": " .. tostring(err))
  end
end

function T.done()
  print(("%d passed, %d failed"):format(passed, failed))
  os.exit(failed == 0 and 0 or 1)
end

return T
