-- Misuse is refused with an argument error naming the function and the
-- option; nothing reaches the wire. Each case is named for a bug that was
-- reproduced on an earlier main: TLS off by accident, header and request
-- injection, any scheme libcurl knows, secrets that hang redaction, huge or
-- NaN times, unknown keys silently ignored.
local sluice = require "sluice"
local T = require "testlib"

-- Calls fn(...) and returns its error message (failing if it did not raise).
local function raises(fn, ...)
  local ok, err = pcall(fn, ...)
  T.ok(not ok, "raised an error")
  return tostring(err)
end

local function requests_seen()
  return #T.stats().requests
end

T.case("TLS off by accident: insecure = 'false' (or 'no', '0', 0) is an argument error", function()
  for _, v in ipairs { "false", "no", "0", 0, 1, "true" } do
    local msg = raises(sluice.fetch, { url = "https://127.0.0.1:1/", insecure = v })
    T.contains(msg, "bad argument #1 to 'sluice.fetch'", "an argument error")
    T.contains(msg, "sluice.fetch: option 'insecure' must be true or false, got " .. type(v), "names the option")
    msg = raises(sluice.stream, { url = "https://127.0.0.1:1/", insecure = v })
    T.contains(msg, "sluice.stream: option 'insecure'", "stream too")
  end
  T.contains(raises(sluice.stream, { url = T.url, http2 = "yes" }), "option 'http2' must be true or false", "http2")
  T.contains(raises(sluice.exec, "echo hi", { shell = 1 }), "sluice.exec: option 'shell' must be true or false",
             "exec's shell")
end)

T.case("header injection: CR, LF or NUL in a header, the method or the URL is refused", function()
  local before = requests_seen()
  local url = T.url .. "/v1/chat/completions"
  local msg = raises(sluice.stream, { url = url, headers = { ["X-A"] = "v\r\nX-Injected: 1" } })
  T.contains(msg, "option 'headers' value of 'X-A' must not contain CR, LF or NUL", "names the header")
  T.ok(not msg:find("Injected", 1, true), "never echoes the value")
  msg = raises(sluice.fetch, { url = url, headers = { Authorization = "Bearer sk-secret\nX: y" } })
  T.ok(not msg:find("sk-secret", 1, true), "a secret value is never echoed")
  T.contains(raises(sluice.stream, { url = url, headers = { ["X-A\r\nX-B"] = "v" } }),
             "has a name that is not a token", "header name")
  T.contains(raises(sluice.stream, { url = url, headers = { ["X A"] = "v" } }), "not a token", "space in a name")
  T.contains(raises(sluice.stream, { url = url, headers = { ["X\0A"] = "v" } }), "not a token", "NUL in a name")
  T.contains(raises(sluice.stream, { url = url, headers = { X = true } }),
             "option 'headers' value of 'X' must be a string, got boolean", "a value that is not a string")
  T.contains(raises(sluice.stream, { url = url, method = "GET / HTTP/1.1\r\nX: y\r\n\r\nGET" }),
             "option 'method' must be a method name", "request splitting through the method")
  T.contains(raises(sluice.stream, { url = url .. "\r\nX: y" }), "option 'url' must not contain control characters",
             "CRLF in the URL")
  T.eq(requests_seen(), before, "the mock saw none of these")
  -- a number is a fine header value
  local res = assert(sluice.fetch { url = T.url .. "/v1/models", headers = { ["X-Seed"] = 42 } })
  T.eq(res.status, 200, "numeric header value")
end)

T.case("any scheme libcurl knows: only http and https are spoken", function()
  for _, u in ipairs { "file:///etc/passwd", "gopher://127.0.0.1:1/", "dict://127.0.0.1:1/",
                       "telnet://127.0.0.1:1", "smtp://127.0.0.1:1", "ftp://127.0.0.1/", "127.0.0.1:1" } do
    local msg = raises(sluice.stream, { url = u, framing = "raw" })
    T.contains(msg, "sluice.stream: option 'url' must be an http:// or https:// URL", u)
  end
  T.contains(raises(sluice.stream, { url = 42 }), "option 'url' must be a string, got number", "url = 42")
  T.contains(raises(sluice.fetch, {}), "sluice.fetch: option 'url' is required", "no url")
  -- a redirect to another scheme is not followed, even when redirects are
  local res = assert(sluice.fetch { url = T.url .. "/v1/chat/completions",
                                    json = T.chat({ status = 302, location = "http://127.0.0.1:1/x" }) })
  T.eq(res.status, 302, "no redirect is followed unless asked")
  local _, err = sluice.fetch { url = T.url .. "/v1/chat/completions", max_redirects = 3,
                                json = T.chat({ status = 302, location = "file:///etc/passwd" }) }
  T.ok(err, "a redirect to file:// fails")
  T.eq(err.kind, "transport", "kind")
  T.ok(not (err.body or ""):find("root:", 1, true), "nothing of the file")
  T.contains(raises(sluice.fetch, { url = T.url, max_redirects = -1 }), "option 'max_redirects' must be at least 0",
             "max_redirects")
end)

T.case("a short secret hangs redaction: keys of 1, 2 and 10,000 bytes, in the marker, with pattern characters", function()
  local keys = { "e", "ed", "[redacted]", "red", "%", ".", "[", "%d+", string.rep("k", 10000) }
  for _, key in ipairs(keys) do
    local text = "bad key " .. key .. ", again: " .. key .. key .. " #7"
    local t0 = os.clock()
    local out = sluice.redact(text, key)
    T.le(os.clock() - t0, 0.5, "redaction time (CPU s) for a key of " .. #key)
    T.ok(not out:gsub("%[redacted%]", ""):find(key, 1, true), "no trace of the key " .. key:sub(1, 12))
    T.contains(out, "[redacted]", "marked")
    T.contains(out, " #7", "the rest kept")
  end
  T.eq(sluice.redact("aXbXc", { "X", "aXb" }), "[redacted][redacted]c", "leftmost, then longest")
  T.eq(sluice.redact("aXbXc", { "Xb", "X" }), "a[redacted][redacted]c", "at one place, the longer")
  T.eq(sluice.redact("plain", {}), "plain", "no secrets")
  -- through a stream: the server echoes the key in its error body
  for _, key in ipairs(keys) do
    local s = sluice.stream { url = T.url .. "/v1/chat/completions", headers = { Authorization = "Bearer " .. key },
                              json = T.chat({ status = 401, error_body = '{"error":{"message":"bad key ' .. key .. '"}}' }) }
    local ev, err = s:next()
    T.eq(ev, nil, "no event")
    T.eq(err.status, 401, "the http error")
    T.ok(not err.body:gsub("%[redacted%]", ""):find(key, 1, true), "body redacted for a key of " .. #key)
  end
end)

T.case("huge times mean no limit: timeouts of 1e17 do not spin, and a signal still ends the process", function()
  local s = sluice.stream { url = T.url .. "/v1/chat/completions", timeouts = { total = 1e17, idle = 1e300, connect = 1e308,
                                                                               first_byte = math.huge },
                            json = T.chat({ tokens_per_sec = 50 }, { max_tokens = 10 }) }
  local cpu0, n = os.clock(), 0
  for _ in s:events() do n = n + 1 end
  T.eq(s:state(), "done", "the stream ends normally")
  T.le(os.clock() - cpu0, 0.1, "CPU seconds over a 0.2 s stream (spinning would take it all)")
  -- in a child, the first SIGTERM ends it
  local code = [[local s = require "sluice"
    local st = s.stream { url = os.getenv("U") .. "/v1/chat/completions", timeouts = { total = 1e17 },
      json = { model = "m", stream = true, max_tokens = 100000, messages = { { role = "user", content = "x" } },
               mock = { tokens_per_sec = 20 } } }
    assert(st:next())
    io.write(io.open("/proc/self/stat"):read("l"):match("^%d+"), "\n"); io.flush()
    for _ in st:events() do end]]
  local p = assert(io.popen(("U=%q %q -e %q; echo status=$?"):format(T.url, os.getenv("SLUICE_BIN"), code)))
  local pid = p:read("l")
  T.ok(tonumber(pid), "child streaming: " .. tostring(pid))
  os.execute("kill -TERM " .. pid)
  local rest = p:read("a")
  p:close()
  T.contains(rest, "status=143", "the first SIGTERM ended it")
end)

T.case("sleep(math.huge) and next(math.huge) wait; NaN and negative times are argument errors", function()
  for _, v in ipairs { math.huge, 1e17 } do
    local t = sluice.spawn(sluice.sleep, v)
    sluice.sleep(0.05)
    T.eq(t:status(), "running", "sleep(" .. tostring(v) .. ") still sleeping")
    t:cancel()
    T.eq(select(2, t:join()).kind, "cancelled", "then cancelled")
  end
  local s = sluice.stream { url = T.url .. "/v1/chat/completions", json = T.chat({ ttft = 0.1 }, { max_tokens = 2 }) }
  local ev, err = s:next(math.huge)
  T.ok(ev, "next(math.huge) waited for the event: " .. tostring(err))
  ev, err = s:next(1e300)
  T.ok(ev, "next(1e300) too")
  s:close()
  for _, v in ipairs { 0 / 0, -1, -math.huge } do
    T.contains(raises(sluice.sleep, v), "bad argument #1 to 'sluice.sleep' (sluice.sleep: seconds must", "sleep " .. tostring(v))
    T.contains(raises(s.next, s, v), "stream:next: seconds must", "next " .. tostring(v))
    T.contains(raises(sluice.stream, { url = T.url, timeouts = { idle = v } }),
               "sluice.stream: option 'timeouts.idle' must", "timeouts.idle " .. tostring(v))
    T.contains(raises(sluice.exec, { "true" }, { timeout = v }), "sluice.exec: option 'timeout' must", "exec timeout")
  end
  T.contains(raises(sluice.sleep, "1"), "seconds must be a number", "a string is not a time")
end)

T.case("unknown options at any depth are refused, naming the function and the option", function()
  local cases = {
    { sluice.stream, { url = T.url, timeouts = { frist_byte = 1 } }, "sluice.stream: unknown option 'timeouts.frist_byte'" },
    { sluice.stream, { url = T.url, timeout = 1 }, "sluice.stream: unknown option 'timeout'" },
    { sluice.fetch, { url = T.url, framing = "raw" }, "sluice.fetch: option 'framing' is not an option of sluice.fetch" },
    { sluice.fetch, { url = T.url, [1] = "x" }, "sluice.fetch: option names are strings, got a number key" },
    { sluice.stream, { url = T.url, max_event_bytes = -1 }, "sluice.stream: option 'max_event_bytes' must be at least 1" },
    { sluice.stream, { url = T.url, max_event_bytes = 1.5 }, "option 'max_event_bytes' must be an integer, got a fraction" },
    { sluice.stream, { url = T.url, timeouts = 5 }, "option 'timeouts' must be a table, got number" },
    { sluice.stream, { url = T.url, framing = "xml" }, "option 'framing' must be \"sse\", \"ndjson\" or \"raw\"" },
    { sluice.exec, { "true" }, { timout = 1 }, "sluice.exec: unknown option 'timout'" },
    { sluice.exec, { "true" }, { env = { A = 1 } }, "sluice.exec: option 'env' must map names to values, both strings" },
    { sluice.exec, { "true" }, { max_output = -5 }, "sluice.exec: option 'max_output' must be at least 0" },
    { sluice.exec, { "true", 5 }, nil, "sluice.exec: argv[2] is not a string" },
    { sluice.exec, { "true" }, { stdout = "file" }, "sluice.exec: option 'stdout' must be \"pipe\" or \"inherit\"" },
    { sluice.spawn, 42, nil, "bad argument #1 to 'sluice.spawn' (sluice.spawn: function expected, got number)" },
  }
  for _, c in ipairs(cases) do
    local fn, a, b, want = c[1], c[2], c[3], c[4]
    if want == nil then want, b = b, nil end
    T.contains(raises(fn, a, b), want, want)
  end
  -- a callable table is a function for spawn
  local callable = setmetatable({}, { __call = function(_, x) return x * 2 end })
  T.eq(select(2, sluice.spawn(callable, 21):join()), 42, "spawn(callable)")
end)

T.case("census: what is alive, by kind", function()
  local c0 = sluice._census()
  local s = sluice.stream { url = T.url .. "/v1/chat/completions", json = T.chat({ tokens_per_sec = 20 }, { max_tokens = 100 }) }
  assert(s:next())
  local c1 = sluice._census()
  T.eq(c1.streams, c0.streams + 1, "a stream")
  T.ok(c1.connections >= 1 and c1.fds >= c1.connections, "its connection is counted")
  s:close()
  T.eq(sluice._census().streams, c0.streams, "closed: gone")
  local t = sluice.spawn(function() return sluice.exec { "sleep", "5" } end)
  local sleeper = sluice.spawn(sluice.sleep, 5)
  sluice.sleep(0.05)
  local c2 = sluice._census()
  T.eq(c2.children, c0.children + 1, "a child")
  T.ok(c2.fds >= c0.fds + 2, "its pipes")
  T.eq(c2.tasks, c0.tasks + 2, "two more tasks")
  T.eq(c2.timers, c0.timers + 2, "the sleeper's timer, and this task's own")
  t:cancel()
  sleeper:cancel()
  t:join()
  sleeper:join()
  T.eq(sluice._census().tasks, c0.tasks, "tasks gone")
  T.eq(sluice._census().timers, c0.timers + 1, "the sleeper's timer gone (this task's stays until it ends)")
  -- the killed child is reaped a moment later; the harness then checks the rest
end)

T.done()
