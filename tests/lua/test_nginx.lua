-- sluice behind nginx, as vLLM deployments put it: nginx in front of
-- sluice-mock with `proxy_http_version 1.1` and `proxy_buffering off`. A stop
-- in the script (break, cancel, a timeout, SIGINT of a child sluice) must
-- reach the mock through nginx: /stats shows the request closed with at most
-- 2 tokens after the stop. Then what the settings that break this do:
-- `proxy_ignore_client_abort on` (the mock generates to the end after the
-- client left) and `proxy_buffering on` (tokens come in bursts; the mock has
-- generated far more than the script saw). One nginx (master and one worker,
-- `daemon off`, its own pid file, logs and temp dirs in a temp dir) serves
-- the three settings on three free ports. docs/deployment.md has the figures
-- these cases print (lines starting with "#").
local sluice = require "sluice"
local T = require "testlib"
local procs = require "procs"

local NGINX = "/usr/sbin/nginx"
assert(io.open(NGINX), "nginx is not installed (scripts/setup installs it)")

local dir = procs.tmpdir()
assert(os.execute("mkdir -p " .. dir .. "/tmp"))
-- The master runs as root in CI; its worker then needs `user root` to write
-- its temp files in our temp dir.
local is_root = procs.sh("id -u"):match("^0") ~= nil

-- How vLLM deployments proxy a streaming API. `extra`: the setting a server
-- block changes.
local function location(extra)
  return ([[
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_read_timeout 3600s;
      proxy_cache off;
      %s
    }]]):format(extra)
end

local function config(ports)
  return ([[
daemon off;
master_process on;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log info;
%s
events { worker_connections 512; }
http {
  access_log %s/access.log;
  client_body_temp_path %s/tmp/body;
  proxy_temp_path %s/tmp/proxy;
  fastcgi_temp_path %s/tmp/fastcgi;
  uwsgi_temp_path %s/tmp/uwsgi;
  scgi_temp_path %s/tmp/scgi;
  upstream mock {
    server 127.0.0.1:%d;
    keepalive 16;
  }
  server {  # the vLLM way: streamed through as it comes
    listen 127.0.0.1:%d;
%s
  }
  server {  # ... but the upstream request outlives the client
    listen 127.0.0.1:%d;
%s
  }
  server {  # ... but buffered (nginx's default)
    listen 127.0.0.1:%d;
%s
  }
}
]]):format(dir, dir, is_root and "user root;" or "", dir, dir, dir, dir, dir, dir, T.port,
           ports.good, location("proxy_buffering off;"),
           ports.ignore_abort, location("proxy_buffering off;\n      proxy_ignore_client_abort on;"),
           ports.buffered, location("proxy_buffering on;"))
end

local function serves(port)
  local res = sluice.fetch { url = ("http://127.0.0.1:%d/stats"):format(port), timeouts = { total = 1 } }
  return res and res.status == 200
end

local nginx, ports
local function start_nginx()
  local why
  for _ = 1, 10 do
    local p = { good = procs.free_port(), ignore_abort = procs.free_port(), buffered = procs.free_port() }
    procs.write(dir .. "/nginx.conf", config(p))
    nginx, why = procs.start({ NGINX, "-p", dir, "-e", dir .. "/error.log", "-c", dir .. "/nginx.conf" },
      { ready = function() return serves(p.good) and serves(p.ignore_abort) and serves(p.buffered) end })
    if nginx then
      ports = p
      return
    end
    if not (why .. (procs.read(dir .. "/error.log") or "")):find("in use", 1, true) then break end
  end
  error("nginx did not start: " .. tostring(why) .. (procs.read(dir .. "/error.log") or ""))
end

local function url(which)
  return ("http://127.0.0.1:%d"):format(ports[which])
end

-- A chat stream to the mock through nginx's server `which`.
local function open(which, mock, body, opts)
  local o = opts or {}
  o.url = url(which) .. "/v1/chat/completions"
  o.body = body
  return T.open(mock, o)
end

local sent_after = T.sent_after

-- The guarantee through nginx: the mock saw the close, and sent at most 2
-- tokens after the stop (one hop more than without nginx). Prints the
-- figures for docs/deployment.md.
local function assert_stopped_through_nginx(what, id, seen, t)
  local rec = T.wait_record(id, function(r) return r.client_closed end)
  T.ok(rec.aborted and not rec.completed, "the mock aborted the request")
  T.contains(T.mock_log(), "Aborted request " .. id, "mock log")
  local after = sent_after(rec, t)
  T.le(after, 2, "tokens the mock sent after the stop, through nginx")
  print(("# nginx, %s: %d token(s) sent after the stop, %d sent in all, %d seen; the mock noticed the close %.1f ms after the stop")
        :format(what, after, rec.tokens_sent, seen, (rec.closed_at - t) * 1000))
  return rec
end

-- A token every 40 ms: "at most 2 after the stop" leaves nginx 40 to 80 ms to
-- pass the close on, however busy the machine (three processes on the path).
local PACE = { tokens_per_sec = 25 }

start_nginx()

T.case("through nginx: a stream read to the end is the same stream", function()
  local s = open("good", { tokens_per_sec = 0 }, { max_tokens = 20 })
  local n, done = 0, false
  for ev in s:events() do
    if ev.data == "[DONE]" then done = true else n = n + 1 end
  end
  T.ok(done, "[DONE]")
  T.ok(n >= 21, "events")
  T.eq(s:state(), "done", "state")
  T.eq(s:headers()["server"]:match("^nginx") ~= nil, true, "served by nginx")
end)

T.case("through nginx: break out of events()", function()
  local s, id = open("good", PACE, { max_tokens = 1000 })
  local n, t = 0, nil
  for ev in s:events() do
    if ev.data:find('"content":"[^"]') then n = n + 1 end
    if n == 5 then
      t = sluice.now()
      break
    end
  end
  T.eq(s:state(), "cancelled", "state")
  assert_stopped_through_nginx("break", id, n, t)
end)

T.case("through nginx: cancel", function()
  local s, id = open("good", PACE, { max_tokens = 1000 })
  local seen = T.read_tokens(s, 5)
  local t = sluice.now()
  s:cancel("enough")
  T.eq(T.upstream_sockets(ports.good), 0, "no socket to nginx when cancel returns")
  assert_stopped_through_nginx("cancel", id, seen, t)
end)

T.case("through nginx: idle timeout while the server stalls", function()
  local s, id = open("good", { tokens_per_sec = 25, stall_after = 5 }, { max_tokens = 1000 },
                     { timeouts = { idle = 0.3 } })
  local seen = T.read_tokens(s, 5)
  local ev, err = s:next()
  while ev do ev, err = s:next() end
  T.eq(err and err.kind, "timeout", "kind")
  T.contains(err.message, "idle", "message")
  assert_stopped_through_nginx("idle timeout", id, seen, s:metrics().ended)
end)

T.case("through nginx: total timeout while tokens flow", function()
  local s, id = open("good", PACE, { max_tokens = 1000 }, { timeouts = { total = 0.3 } })
  local ev, err = s:next()
  while ev do ev, err = s:next() end
  T.eq(err and err.kind, "timeout", "kind")
  T.contains(err.message, "total", "message")
  assert_stopped_through_nginx("total timeout", id, 0, s:metrics().ended)
end)

-- A child sluice streams through nginx and is interrupted.
local child = [[
local sluice = require "sluice"
local cjson = require "cjson"
local url, id, ready = arg[1], arg[2], arg[3]
local s = sluice.stream { url = url .. "/v1/chat/completions", headers = { ["X-Request-Id"] = id },
  json = { model = "m", stream = true, max_tokens = 1000, messages = { { role = "user", content = "hi" } },
           mock = { tokens_per_sec = 25 } } }
local n = 0
while n < 5 do
  local ev = assert(s:next())
  local c = ev.data ~= "[DONE]" and cjson.decode(ev.data)
  if c and c.choices[1] and (c.choices[1].delta.content or "") ~= "" then n = n + 1 end
end
local stat = assert(io.open("/proc/self/stat"))
local pid = stat:read("l"):match("^%d+")
stat:close()
local f = assert(io.open(ready .. ".tmp", "w"))
f:write(pid, " ", n)
f:close()
os.rename(ready .. ".tmp", ready)
sluice.sleep(100)
]]

T.case("through nginx: SIGINT to a sluice streaming through it", function()
  local script, ready = dir .. "/child.lua", dir .. "/ready"
  procs.write(script, child)
  local id = ("nginx-sigint-%d"):format(os.time())
  local task = sluice.spawn(function()
    return sluice.exec({ os.getenv("SLUICE_BIN"), script, url("good"), id, ready }, { timeout = 20 })
  end)
  local deadline = sluice.now() + 10
  while not procs.read(ready) and sluice.now() < deadline and task:status() == "running" do
    sluice.sleep(0.01)
  end
  local pid, seen = (procs.read(ready) or ""):match("^(%d+) (%d+)$")
  T.ok(pid, "the child read its tokens")
  seen = tonumber(seen)
  local t = T.signal(pid, "INT")
  local ok, r = task:join()
  T.ok(ok, "exec: " .. tostring(r))
  T.eq(r.code, 130, "exit status after SIGINT (" .. tostring(r.stderr) .. ")")
  assert_stopped_through_nginx("SIGINT", id, seen, t)
  os.remove(ready)
  os.remove(script)
end)

-- The mock's record once `pred` holds, or nil after `seconds`.
local function record_within(id, seconds, pred)
  local deadline = sluice.now() + seconds
  repeat
    local rec = T.record(id)
    if rec and pred(rec) then return rec end
    sluice.sleep(0.01)
  until sluice.now() > deadline
end

T.case("through nginx: a stop while the server is silent (before its first token)", function()
  -- a long prefill or a queue: the mock's first token comes after 1.5 s
  local s, id = open("good", { tokens_per_sec = 25, ttft = 1.5 }, { max_tokens = 1000 })
  sluice.sleep(0.2)
  local t = sluice.now()
  s:cancel("enough")
  local rec = assert_stopped_through_nginx("stop before the first token", id, 0, t)
  T.eq(rec.tokens_sent, 0, "the mock never generated a token")
end)

T.case("proxy_ignore_client_abort on: nginx passes the stop on only when the server next writes", function()
  -- 1. tokens flowing: nginx finds the client gone when a write to it fails,
  --    the second write after the stop
  local s, id = open("ignore_abort", PACE, { max_tokens = 1000 })
  local seen = T.read_tokens(s, 5)
  local t = sluice.now()
  s:cancel("enough")
  T.eq(T.upstream_sockets(ports.ignore_abort), 0, "sluice closed its socket to nginx")
  local rec = T.wait_record(id, function(r) return r.client_closed end)
  local after = sent_after(rec, t)
  print(("# nginx, proxy_ignore_client_abort on, tokens flowing: %d token(s) sent after the stop; the mock " ..
         "noticed the close %.1f ms after it"):format(after, (rec.closed_at - t) * 1000))
  T.ok(after >= 1, "the mock generated after the client closed: " .. after)
  -- 2. a silent server (a long prefill, a queue): the stop is not passed on
  --    until its first token, 1.5 s later
  local s2, id2 = open("ignore_abort", { tokens_per_sec = 25, ttft = 1.5 }, { max_tokens = 1000 })
  sluice.sleep(0.2)
  local t2 = sluice.now()
  s2:cancel("enough")
  sluice.sleep(0.5)
  T.ok(not T.record(id2).client_closed, "0.5 s after the stop the mock still holds the request")
  local rec2 = T.wait_record(id2, function(r) return r.client_closed end, 5)
  T.ok(rec2.tokens_sent >= 1 and rec2.closed_at >= rec2.first_token_at,
       "closed only after the mock started generating")
  print(("# nginx, proxy_ignore_client_abort on, stop 0.2 s into a 1.5 s time to first token: the mock " ..
         "noticed the close %.0f ms after the stop, having generated %d token(s)"):format(
         (rec2.closed_at - t2) * 1000, rec2.tokens_sent))
  -- the closing-guarantee check itself fails behind this setting
  local held, err = pcall(T.assert_stopped, id2, 0, t2)
  T.ok(not held, "T.assert_stopped fails here")
  T.contains(tostring(err), "tokens the mock sent after the stop", "it fails on the tokens sent after the stop")
  -- 3. a server that goes silent mid-stream: never passed on while it is
  local s3, id3 = open("ignore_abort", { tokens_per_sec = 25, stall_after = 5 }, { max_tokens = 1000 })
  T.read_tokens(s3, 5)
  s3:cancel("enough")
  T.eq(record_within(id3, 1, function(r) return r.client_closed end), nil,
       "1 s after the stop, the silent request is still open upstream")
  print("# nginx, proxy_ignore_client_abort on, server silent mid-stream: not closed 1 s after the stop")
end)

T.case("proxy_buffering on: each token still comes as it is generated, and a stop reaches the mock at once", function()
  -- nginx 1.22 sends on what each read from the upstream brought: at an
  -- inference server's pace, no bursts (a buffered one would come ~20
  -- tokens at a time: a 4 KB buffer of ~200-byte chunks)
  local s, id = open("buffered", PACE, { max_tokens = 1000 })
  local times = {}
  while #times < 25 do
    local ev = assert(s:next())
    if ev.data:find('"content":"[^"]') then times[#times + 1] = sluice.now() end
  end
  local t = sluice.now()
  s:cancel("enough")
  local largest, run = 1, 1
  for i = 2, #times do
    run = times[i] - times[i - 1] < 0.005 and run + 1 or 1
    largest = math.max(largest, run)
  end
  print(("# nginx, proxy_buffering on, 25 tokens/s: the largest burst was %d token(s)"):format(largest))
  T.le(largest, 3, "tokens one by one (largest burst)")
  assert_stopped_through_nginx("proxy_buffering on, cancel", id, #times, t)
end)

T.case("proxy_buffering on: a reader that pauses lets the server run to the end into nginx's buffers", function()
  -- A fast server (tokens as fast as the socket takes) and a script that
  -- reads 5 tokens, then holds the stream without reading. Streamed through,
  -- the server is held back once the socket buffers on the way are full;
  -- buffered, nginx reads everything into memory and a temp file.
  local N = 150000
  local function held(which)
    local s, id = open(which, { tokens_per_sec = 0 }, { max_tokens = N })
    T.read_tokens(s, 5)
    -- wait until the mock is done or has not sent anything for 0.3 s
    local last, since = -1, sluice.now()
    local rec
    repeat
      sluice.sleep(0.05)
      rec = T.record(id)
      if rec.tokens_sent ~= last then last, since = rec.tokens_sent, sluice.now() end
    until rec.completed or sluice.now() - since > 0.3
    s:cancel("enough")
    return T.wait_record(id, function(r) return r.completed or r.client_closed end)
  end
  local streamed = held("good")
  local buffered = held("buffered")
  print(("# nginx, a reader holding the stream, a fast server, max_tokens %d: proxy_buffering off: the server " ..
         "held back at %d tokens, then saw the stop; on: it generated all %d, completed %s, saw the stop %s")
        :format(N, streamed.tokens_sent, buffered.tokens_sent, tostring(buffered.completed),
                tostring(buffered.client_closed)))
  T.ok(streamed.client_closed and streamed.tokens_sent < N, "streamed through: held back, then stopped")
  T.ok(buffered.completed and not buffered.client_closed, "buffered: the server ran to the end")
  T.eq(buffered.tokens_sent, N, "buffered: every token generated")
end)

nginx:stop()
T.eq(nginx.result.code, 0, "nginx exit status")
procs.rmdir(dir)
T.done()
