-- The benchmark driver (run by scripts/bench): starts sluice-mock pinned to
-- CPU 1, runs each scenario's client pinned to CPU 0 as a separate process,
-- RUNS times, and prints medians and ratios. Workers print one JSON line.
local sluice = require "sluice"
local cjson = require "cjson"

local runs, out_path = tonumber(arg[1]) or 5, arg[2] or "bench.json"
local only = {}
for i = 3, #arg do only[arg[i]] = true end
local function wanted(name) return next(only) == nil or only[name] end

local bindir = sluice.executable:match("^(.*)/[^/]*$")
local SLUICE = bindir .. "/sluice"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  local ok, how, code = p:close()
  return out, ok, code
end

-- the mock, pinned to CPU 1 (a busy-poll one is started for the stop scenario)
local mock = require "sluice.mock"
local server = mock.start { quiet = true, cpu = 1 }
local url = server.root


local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

-- runs a worker (tests/bench/NAME.lua) on CPU 0; returns its decoded JSON line
local function worker_at(env, target, name, ...)
  local args = { ... }
  for i, a in ipairs(args) do args[i] = ("%q"):format(tostring(a)) end
  local out = sh(("%s taskset -c 0 %q %q %q %s 2>&1"):format(env, SLUICE, here .. "/" .. name .. ".lua", target,
                                                             table.concat(args, " ")))
  local line = out:match("(%b{})%s*$")
  assert(line, name .. " failed:\n" .. out)
  return cjson.decode(line)
end
local function worker(name, ...) return worker_at("", url, name, ...) end

local results = { runs = runs, machine = { cores = tonumber(sh("nproc"):match("%d+")) } }
local function fmt(v, d) return v and ("%." .. (d or 0) .. "f"):format(v) or "n/a" end
local function table_md(title, header, rows)
  print("\n### " .. title .. "\n")
  print("| " .. table.concat(header, " | ") .. " |")
  print("|" .. string.rep(" --- |", #header))
  for _, r in ipairs(rows) do print("| " .. table.concat(r, " | ") .. " |") end
end

-- 1. throughput -----------------------------------------------------------------
if wanted("throughput") then
  local N = 200000
  local body = cjson.encode { model = "m", stream = true, max_tokens = N,
    messages = { { role = "user", content = "hi" } }, mock = { tokens_per_sec = 0 } }
  local bodyf = os.tmpname()
  local f = assert(io.open(bodyf, "w")); f:write(body); f:close()
  local curl, core, deltas = {}, {}, {}
  -- a run lasts under 0.1 s, so one busy moment of the VM moves it a lot:
  -- three times as many runs, interleaved, for the medians
  for _ = 1, 3 * runs do
    local t = sh(("taskset -c 0 curl -sN -o /dev/null -w '%%{time_total}' -H 'Content-Type: application/json' --data-binary @%q %s/v1/chat/completions"):format(bodyf, url))
    curl[#curl + 1] = (N + 3) / tonumber(t)
    core[#core + 1] = worker("throughput", "core", N).rate
    deltas[#deltas + 1] = worker("throughput", "deltas", N).rate
  end
  os.remove(bodyf)
  local c, k, d = median(curl), median(core), median(deltas)
  results.throughput = { chunks = N, curl = curl, core = core, deltas = deltas,
                         median = { curl = c, core = k, deltas = d } }
  table_md(("Throughput: %d chat.completion.chunk events, as fast as the socket takes them (chunks/s, median of %d)"):format(N, 3 * runs),
    { "client", "chunks/s", "ratio to curl -N", "target" },
    { { "curl -N > /dev/null (transport floor)", fmt(c), "1.00", "" },
      { "sluice core: `for ev in s:events()` touching ev.data", fmt(k), fmt(k / c, 2), ">= 2,000,000" },
      { "sluice openai: `client:chat(...):deltas()`", fmt(d), fmt(d / c, 2), ">= 1,000,000" } })
end

-- 2. stop latency ------------------------------------------------------------------
if wanted("stop") then
  local function measure(env, target)
    local lat, after = {}, {}
    for _ = 1, runs do
      local r = worker_at(env, target, "stop_latency", 5)
      for _, v in ipairs(r.latency_us) do lat[#lat + 1] = v end
      for _, v in ipairs(r.after) do after[#after + 1] = v end
    end
    local max_after = 0
    for _, v in ipairs(after) do max_after = math.max(max_after, v) end
    return { latency_us = lat, chunks_after_keyword = after, median_us = median(lat), max_after = max_after }
  end
  -- The same stops by a bare C client (tests/bench/floor_stop.c: epoll, read,
  -- memmem, close): what any client pays on this machine for the round trip.
  local function measure_c(target, mode)
    local ids = cjson.decode(sh(("taskset -c 0 %q %q %d %s"):format(bindir .. "/floor_stop", target,
                                                                      5 * runs, mode)):match("%b{}")).ids
    local want, lat, after, max_after = {}, {}, {}, 0
    for _, id in ipairs(ids) do want[id] = true end
    local res = assert(sluice.fetch { url = target .. "/stats" })
    for _, r in ipairs(cjson.decode(res.body).requests) do
      if want[r.id] and r.client_closed and r.stop_latency_us ~= cjson.null then
        lat[#lat + 1] = r.stop_latency_us
        after[#after + 1] = r.tokens_sent - 101
        max_after = math.max(max_after, r.tokens_sent - 101)
      end
    end
    assert(#lat == #ids, "the C client's stops were not all recorded")
    return { latency_us = lat, chunks_after_keyword = after, median_us = median(lat), max_after = max_after }
  end
  local default = measure("", url)
  local default_c = measure_c(url, "sleep")
  -- Both processes spinning instead of sleeping in poll: what is left is
  -- sluice's own work plus the kernel's, without two wake-ups of idle CPUs.
  local busy_server = mock.start { quiet = true, cpu = 1, busy_poll = true }
  local busy = measure("SLUICE_BUSY_POLL=1", busy_server.root)
  local busy_c = measure_c(busy_server.root, "spin")
  -- Only the client sleeping: the mock's own wake-up is out of the figure.
  local client_sleeps = measure("", busy_server.root)
  local client_sleeps_c = measure_c(busy_server.root, "sleep")
  busy_server.stop()
  -- the machine's floor for a round trip between two pinned processes
  local floor = cjson.decode(sh(("%q"):format(bindir .. "/pingpong")):match("%b{}"))
  results.stop = { default = default, busy_poll = busy, c_client = default_c, c_client_spinning = busy_c,
                   client_sleeps = client_sleeps, c_client_sleeps = client_sleeps_c, floor = floor }
  local function row(name, r, c)
    return { name, fmt(r.median_us), c and fmt(r.median_us / c.median_us, 2) or "",
             fmt(math.min(table.unpack(r.latency_us))), fmt(math.max(table.unpack(r.latency_us))),
             fmt(r.max_after), c and "<= 50 us, 0 chunks" or "" }
  end
  table_md(("Stop latency: 5,000 chunks at one per 2 ms, keyword in chunk 100, policy.stop_on (%d stops each); keyword written -> mock sees the close, us"):format(#default.latency_us),
    { "client", "median", "ratio to the C client", "min", "max", "chunks after the keyword (max)", "target" },
    { row("sluice, default (client and mock sleep in epoll)", default, default_c),
      row("floor: bare C client (epoll, read, memmem, close), same mock", default_c),
      row("sluice, default (sleeps in epoll), sluice-mock --busy-poll", client_sleeps, client_sleeps_c),
      row("floor: bare C client sleeping, sluice-mock --busy-poll", client_sleeps_c),
      row("sluice, SLUICE_BUSY_POLL=1, sluice-mock --busy-poll", busy, busy_c),
      row("floor: bare C client spinning, sluice-mock --busy-poll", busy_c),
      { "floor: a C ping-pong over loopback, sleeping / spinning (round trip)",
        fmt(floor.sleeping_rtt_us) .. " / " .. fmt(floor.spinning_rtt_us), "", "", "", "", "" } })
end

-- 3. concurrency ---------------------------------------------------------------------
-- Next to sluice, two C clients of the same streams (tests/bench/floor_streams.c):
-- plain sockets with epoll (the kernel's share), and libcurl's multi interface
-- driven by sluice's own bridge (src/loop.c) with the data dropped: sluice's
-- transport without Lua.
if wanted("concurrency") then
  local rows, res = {}, {}
  local function c_floor(mode, n)
    local out = sh(("taskset -c 0 %q %s %q %d 200 50"):format(bindir .. "/floor_streams", mode, url, n))
    return cjson.decode((assert(out:match("%b{}"), "floor_streams failed: " .. out)))
  end
  for _, n in ipairs { 1000, 10000 } do
    local r = {}
    local function add(key, fn)
      local walls, rss, cpu, ok, note = {}, {}, {}, true, nil
      for _ = 1, (n == 1000 and runs or math.min(runs, 3)) do
        local x = fn()
        walls[#walls + 1], rss[#rss + 1], cpu[#cpu + 1] = x.wall, x.peak_rss_mb, x.cpu
        ok = ok and x.completed == n
        note = note or x.note
      end
      r[key] = { wall = walls, peak_rss_mb = rss, cpu = cpu, all_completed = ok, note = note,
                 median = { wall = median(walls), peak_rss_mb = median(rss), cpu = median(cpu) } }
    end
    add("sluice", function() return worker("concurrency", n, 200, 50) end)
    add("curl_uv", function() return c_floor("curl", n) end)
    add("epoll", function() return c_floor("epoll", n) end)
    res[tostring(n)] = r
    local function row(name, x, target)
      return { tostring(n), name, x.all_completed and "yes" or "NO", fmt(x.median.wall, 2),
               fmt(x.median.peak_rss_mb, 1), fmt(x.median.cpu, 2), target or "" }
    end
    rows[#rows + 1] = row("sluice (one task per stream, `for _ in s:events()`)", r.sluice,
      n == 1000 and "<= 4.1 s, <= 40 MB, <= 1 CPU s" or "<= 200 MB, <= 10 CPU s")
    rows[#rows + 1] = row("floor: sluice's curl bridge (src/loop.c) in C, no Lua, data dropped", r.curl_uv)
    rows[#rows + 1] = row("floor: plain sockets + epoll in C", r.epoll)
  end
  results.concurrency = res
  table_md("Concurrency: streams of 200 chunks at 50 chunks/s each (4 s per stream), medians",
    { "streams", "client", "all completed", "wall (s)", "peak RSS (MB)", "client CPU (s)", "target" }, rows)
end

-- 4. slow consumer ------------------------------------------------------------------
if wanted("slow") then
  local r = worker("slow_consumer", 3000000)
  results.slow = r
  table_md("Slow consumer: a script reading slower than the server sends",
    { "streamed (MB)", "events", "seconds", "peak RSS (MB)", "target" },
    { { fmt(r.mb), fmt(r.events), fmt(r.seconds, 1), fmt(r.peak_rss_mb, 1), "<= 64 MB" } })
end

-- 5. start-up --------------------------------------------------------------------------
if wanted("startup") then
  local jf = os.tmpname()
  sh(("taskset -c 0 hyperfine -N --warmup 10 --runs 200 --export-json %q %q >/dev/null 2>&1"):format(
    jf, SLUICE .. " -e ''"))
  local f = assert(io.open(jf))
  local h = cjson.decode(f:read("a")).results[1]
  f:close()
  os.remove(jf)
  local ms = {}
  for i, t in ipairs(h.times) do ms[i] = t * 1000 end
  results.startup = { ms = ms, median_ms = h.median * 1000 }
  table_md("Start-up: `sluice -e ''`, fork+exec to exit (hyperfine -N, 200 runs)",
    { "median (ms)", "min (ms)", "max (ms)", "target" },
    { { fmt(h.median * 1000, 2), fmt(h.min * 1000, 2), fmt(h.max * 1000, 2), "<= 5 ms" } })
end

server.stop()
local f = assert(io.open(out_path, "w"))
f:write(cjson.encode(results), "\n")
f:close()
print("\nraw figures: " .. out_path)
