-- The benchmark driver (run by scripts/bench): starts sluice-mock pinned to
-- CPU 1, runs each scenario's client pinned to CPU 0 as a separate process,
-- RUNS times, and prints medians and ratios. Workers print one JSON line.
-- Each scenario's tables and figures, with the command, date and machine of
-- the run, replace that scenario's entry in bench/results.json, and
-- bench/README.md is rendered from that file: a partial run keeps the other
-- scenarios' last figures.
--   sluice driver.lua RUNS RAW.json [SCENARIO...]
local sluice = require "sluice"
local cjson = require "cjson"

local SCENARIOS = { "throughput", "stop", "concurrency", "slow", "startup", "batch", "agent" }

local runs, out_path = tonumber(arg[1]) or 5, arg[2] or "bench.json"
local only, asked = {}, {}
for i = 3, #arg do
  local known = false
  for _, name in ipairs(SCENARIOS) do known = known or name == arg[i] end
  if not known then
    io.stderr:write(("bench: unknown scenario '%s'; usage: RUNS=N ./scripts/bench [%s]...\n"):format(
      arg[i], table.concat(SCENARIOS, "|")))
    os.exit(2)
  end
  only[arg[i]] = true
  asked[#asked + 1] = arg[i]
end
local function wanted(name) return next(only) == nil or only[name] end

local bindir = sluice.executable:match("^(.*)/[^/]*$")
local SLUICE = bindir .. "/sluice"
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local root = here .. "/../.."

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

-- the value below which a fraction q of t lies (nearest rank)
local function percentile(t, q)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  if #s == 0 then return nil end
  return s[math.max(1, math.min(#s, math.ceil(q * #s)))]
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

-- What every scenario of this run records beside its figures.
local run_info = {
  command = ("RUNS=%d ./scripts/bench%s"):format(runs, #asked > 0 and " " .. table.concat(asked, " ") or ""),
  date = os.date("!%Y-%m-%d %H:%M UTC"),
  machine = { cores = tonumber(sh("nproc"):match("%d+")),
              cpu = sh("grep -m1 '^model name' /proc/cpuinfo"):match(":%s*(.-)%s*$") or "unknown CPU" },
  commit = sh(("git -C %q rev-parse --short HEAD 2>/dev/null"):format(root)):match("%x+"),
}
-- changes outside bench/ (the page and its figures are written by this run)
if run_info.commit and sh(("git -C %q status --porcelain --untracked-files=no -- . ':(exclude)bench'"):format(root))
                         :match("%S") then
  run_info.commit = run_info.commit .. " with local changes"
end
local results = { runs = runs, machine = run_info.machine }
local tables = {}  -- scenario name -> the tables it printed
local current
local function fmt(v, d) return v and ("%." .. (d or 0) .. "f"):format(v) or "n/a" end
local function md(title, header, rows)
  local out = { "#### " .. title, "", "| " .. table.concat(header, " | ") .. " |",
                "|" .. string.rep(" --- |", #header) }
  for _, r in ipairs(rows) do out[#out + 1] = "| " .. table.concat(r, " | ") .. " |" end
  return table.concat(out, "\n")
end
local function table_md(title, header, rows)
  print("\n" .. md(title, header, rows))
  local list = tables[current] or {}
  list[#list + 1] = { title = title, header = header, rows = rows }
  tables[current] = list
end

-- 1. throughput -----------------------------------------------------------------
if wanted("throughput") then
  current = "throughput"
  local N = 200000
  local body = cjson.encode { model = "m", stream = true, max_tokens = N,
    messages = { { role = "user", content = "hi" } }, mock = { tokens_per_sec = 0 } }
  local bodyf = os.tmpname()
  local f = assert(io.open(bodyf, "w")); f:write(body); f:close()
  local curl, core, deltas, core_t, deltas_t = {}, {}, {}, {}, {}
  -- the same runs with a trace (sluice --trace): what writing it costs
  local trace = os.tmpname()
  local function traced(mode)
    os.remove(trace)
    local r = worker_at(("SLUICE_TRACE=%q"):format(trace), url, "throughput", mode, N).rate
    os.remove(trace)
    return r
  end
  -- a run lasts under 0.1 s, so one busy moment of the VM moves it a lot:
  -- three times as many runs, interleaved, for the medians
  for _ = 1, 3 * runs do
    local t = sh(("taskset -c 0 curl -sN -o /dev/null -w '%%{time_total}' -H 'Content-Type: application/json' --data-binary @%q %s/v1/chat/completions"):format(bodyf, url))
    curl[#curl + 1] = (N + 3) / tonumber(t)
    core[#core + 1] = worker("throughput", "core", N).rate
    core_t[#core_t + 1] = traced("core")
    deltas[#deltas + 1] = worker("throughput", "deltas", N).rate
    deltas_t[#deltas_t + 1] = traced("deltas")
  end
  os.remove(bodyf)
  local c, k, d, kt, dt = median(curl), median(core), median(deltas), median(core_t), median(deltas_t)
  results.throughput = { chunks = N, curl = curl, core = core, deltas = deltas, core_traced = core_t,
                         deltas_traced = deltas_t,
                         median = { curl = c, core = k, deltas = d, core_traced = kt, deltas_traced = dt } }
  table_md(("Throughput: %d chat.completion.chunk events, as fast as the socket takes them (chunks/s, median of %d)"):format(N, 3 * runs),
    { "client", "chunks/s", "ratio to curl -N", "target" },
    { { "curl -N > /dev/null (transport floor)", fmt(c), "1.00", "" },
      { "sluice core: `for ev in s:events()` touching ev.data", fmt(k), fmt(k / c, 2), ">= 2,000,000" },
      { "sluice openai: `client:chat(...):deltas()`", fmt(d), fmt(d / c, 2), ">= 1,000,000" } })
  table_md(("Tracing: the same runs with `SLUICE_TRACE=FILE` (chunks/s, median of %d)"):format(3 * runs),
    { "client", "untraced", "traced", "traced / untraced", "target" },
    { { "sluice core", fmt(k), fmt(kt), fmt(kt / k, 3), ">= 0.95" },
      { "sluice openai deltas (a text piece per token in the trace)", fmt(d), fmt(dt), fmt(dt / d, 3), ">= 0.95" } })
end

-- 2. stop latency ------------------------------------------------------------------
if wanted("stop") then
  current = "stop"
  local STOPS = math.max(100, 20 * runs)  -- per client, in the rows with a target: enough for a p99
  local function summary(lat, after)
    local max_after = 0
    for _, v in ipairs(after) do max_after = math.max(max_after, v) end
    return { latency_us = lat, chunks_after_keyword = after, median_us = median(lat),
             p90_us = percentile(lat, 0.9), p99_us = percentile(lat, 0.99), max_after = max_after }
  end
  local function measure(env, target, n)
    local lat, after = {}, {}
    while #lat < n do
      local r = worker_at(env, target, "stop_latency", math.min(20, n - #lat))
      for _, v in ipairs(r.latency_us) do lat[#lat + 1] = v end
      for _, v in ipairs(r.after) do after[#after + 1] = v end
    end
    return summary(lat, after)
  end
  -- The same stops by a bare C client (tests/bench/floor_stop.c: epoll, read,
  -- memmem, close): what any client pays on this machine for the round trip.
  local function measure_c(target, mode, n)
    local ids = cjson.decode(sh(("taskset -c 0 %q %q %d %s"):format(bindir .. "/floor_stop", target,
                                                                      n, mode)):match("%b{}")).ids
    local want, lat, after = {}, {}, {}
    for _, id in ipairs(ids) do want[id] = true end
    local res = assert(sluice.fetch { url = target .. "/stats" })
    for _, r in ipairs(cjson.decode(res.body).requests) do
      if want[r.id] and r.client_closed and r.stop_latency_us ~= cjson.null then
        lat[#lat + 1] = r.stop_latency_us
        after[#after + 1] = r.tokens_sent - 101
      end
    end
    assert(#lat == #ids, "the C client's stops were not all recorded")
    return summary(lat, after)
  end
  local default = measure("", url, STOPS)
  local default_c = measure_c(url, "sleep", STOPS)
  -- Where a stop's time goes, from sluice's own trace of the same stops: the
  -- read that brought the keyword -> the socket shut (sluice's part), against
  -- the whole (the mock writing the keyword -> seeing the close).
  local trace = os.tmpname()
  os.remove(trace)
  local traced = measure(("SLUICE_TRACE=%q"):format(trace), url, STOPS)
  local own = {}
  do
    local last_data, stopped = {}, {}
    for line in io.lines(trace) do
      local ev = cjson.decode(line)
      if ev.ev == "data" then last_data[ev.s] = ev.t
      elseif ev.ev == "stop" then stopped[ev.s] = last_data[ev.s]
      elseif ev.ev == "close" and stopped[ev.s] then own[#own + 1] = (ev.t - stopped[ev.s]) * 1e6 end
    end
    os.remove(trace)
  end
  -- Both processes spinning instead of sleeping in poll: what is left is
  -- sluice's own work plus the kernel's, without two wake-ups of idle CPUs.
  local busy_server = mock.start { quiet = true, cpu = 1, busy_poll = true }
  local busy = measure("SLUICE_BUSY_POLL=1", busy_server.root, 5 * runs)
  local busy_c = measure_c(busy_server.root, "spin", 5 * runs)
  -- Only the client sleeping: the mock's own wake-up is out of the figure.
  local client_sleeps = measure("", busy_server.root, 5 * runs)
  local client_sleeps_c = measure_c(busy_server.root, "sleep", 5 * runs)
  busy_server.stop()
  -- the machine's floor for a round trip between two pinned processes
  local floor = cjson.decode(sh(("%q"):format(bindir .. "/pingpong")):match("%b{}"))
  results.stop = { default = default, busy_poll = busy, c_client = default_c, c_client_spinning = busy_c,
                   client_sleeps = client_sleeps, c_client_sleeps = client_sleeps_c, floor = floor,
                   traced = traced, own_us = own }
  local function row(name, r, c, target)
    return { name, fmt(r.median_us), fmt(r.p90_us), fmt(r.p99_us), c and fmt(r.p99_us / c.p99_us, 2) or "",
             fmt(math.max(table.unpack(r.latency_us))), tostring(#r.latency_us), fmt(r.max_after), target or "" }
  end
  table_md("Stop latency: 5,000 chunks at one per 2 ms, keyword in chunk 100, policy.stop_on; " ..
           "keyword written -> mock sees the close, us",
    { "client", "median", "p90", "p99", "p99 / C client's p99", "max", "stops", "chunks after the keyword (max)",
      "target" },
    { row("sluice, default (client and mock sleep in epoll)", default, default_c, "p99 <= 1.5x C's; 0 chunks"),
      row("floor: bare C client (epoll, read, memmem, close), same mock", default_c),
      row("sluice, default, traced (`SLUICE_TRACE`)", traced, default_c),
      row("sluice, default (sleeps in epoll), sluice-mock --busy-poll", client_sleeps, client_sleeps_c),
      row("floor: bare C client sleeping, sluice-mock --busy-poll", client_sleeps_c),
      row("sluice, SLUICE_BUSY_POLL=1, sluice-mock --busy-poll", busy, busy_c),
      row("floor: bare C client spinning, sluice-mock --busy-poll", busy_c),
      { "floor: a C ping-pong over loopback, sleeping / spinning (round trip)",
        fmt(floor.sleeping_rtt_us) .. " / " .. fmt(floor.spinning_rtt_us), "", "", "", "", "", "", "" } })
  table_md("Where the traced stops' time goes: sluice's own part, from its trace (the read that brought the " ..
           "keyword -> the socket shut), us",
    { "part", "median", "p90", "p99", "max", "stops" },
    { { "sluice: read -> shutdown()", fmt(median(own), 1), fmt(percentile(own, 0.9), 1),
        fmt(percentile(own, 0.99), 1), fmt(#own > 0 and math.max(table.unpack(own)) or nil, 1), tostring(#own) },
      { "the whole stop (as above, traced)", fmt(traced.median_us), fmt(traced.p90_us), fmt(traced.p99_us),
        fmt(math.max(table.unpack(traced.latency_us))), tostring(#traced.latency_us) } })
end

-- 3. concurrency ---------------------------------------------------------------------
-- Next to sluice, two C clients of the same streams (tests/bench/floor_streams.c):
-- plain sockets with epoll (the kernel's share), and libcurl's multi interface
-- driven by sluice's own bridge (src/curlm.c) with the data dropped: sluice's
-- transport without Lua.
if wanted("concurrency") then
  current = "concurrency"
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
    rows[#rows + 1] = row("floor: sluice's curl bridge (src/curlm.c) in C, no Lua, data dropped", r.curl_uv)
    rows[#rows + 1] = row("floor: plain sockets + epoll in C", r.epoll)
  end
  results.concurrency = res
  table_md("Concurrency: streams of 200 chunks at 50 chunks/s each (4 s per stream), medians",
    { "streams", "client", "all completed", "wall (s)", "peak RSS (MB)", "client CPU (s)", "target" }, rows)
end

-- 4. slow consumer ------------------------------------------------------------------
if wanted("slow") then
  current = "slow"
  local r = worker("slow_consumer", 3000000)
  results.slow = r
  table_md("Slow consumer: a script reading slower than the server sends",
    { "streamed (MB)", "events", "seconds", "peak RSS (MB)", "target" },
    { { fmt(r.mb), fmt(r.events), fmt(r.seconds, 1), fmt(r.peak_rss_mb, 1), "<= 64 MB" } })
end

-- 5. start-up --------------------------------------------------------------------------
if wanted("startup") then
  current = "startup"
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

-- 6. batch ----------------------------------------------------------------------------
-- `sluice batch` over an OpenAI Batch file, next to its floor (the same
-- requests by client:chat in as many tasks, nothing written) and a peer (the
-- same batch by Python asyncio + aiohttp, tests/bench/batch_peer.py). Each
-- client runs under tests/bench/rusage.c: wall time, and CPU and peak RSS
-- from wait4's rusage of the process, whatever its language.
if wanted("batch") then
  current = "batch"
  local N, CHUNKS, C, RESUME_LINES = 10000, 20, 256, 100000
  -- a run lasts 1 to 5 s, and others' work on the machine comes in bursts:
  -- three times as many rounds as RUNS, for the medians
  local rounds = 3 * runs
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute(("mkdir -p %q"):format(dir)))
  -- custom_id first, as generated batch files have it (the runner reads it
  -- without decoding the line)
  local function write_input(path, n)
    local fh = assert(io.open(path, "wb"))
    for i = 1, n do
      fh:write(('{"custom_id":"req-%06d","method":"POST","url":"/v1/chat/completions","body":{"model":"mock-model",'
                .. '"messages":[{"role":"user","content":"Question %d"}],"max_tokens":%d,'
                .. '"mock":{"tokens_per_sec":0}}}\n'):format(i, i, CHUNKS))
    end
    fh:close()
  end
  local input, output = dir .. "/in.jsonl", dir .. "/out.jsonl"
  write_input(input, N)
  local cost_file = dir .. "/rusage.json"
  -- runs cmdline (shell words, quoted) on CPU 0 under rusage; returns
  -- its cost, its output, and whether it exited with status 0
  local function measured(cmdline)
    local out, ok = sh(("taskset -c 0 %q -o %q %s 2>&1"):format(bindir .. "/rusage", cost_file, cmdline))
    local fh = assert(io.open(cost_file))
    local cost = cjson.decode(fh:read("a"))
    fh:close()
    return cost, out, ok
  end
  local function lines_of(path)
    local n, ok = 0, 0
    local fh = io.open(path, "rb")
    if not fh then return 0, 0 end
    for line in fh:lines() do
      n = n + 1
      if line:find('"error": ?null') and line:find('"status_code": ?200') then ok = ok + 1 end
    end
    fh:close()
    return n, ok
  end
  local base = url .. "/v1"
  local clients = {
    { key = "sluice", cmd = ("%q batch -i %q -o %q --base-url %q -c %d -q"):format(SLUICE, input, output, base, C),
      writes = true },
    { key = "floor", cmd = ("%q %q %q %q %d"):format(SLUICE, here .. "/batch_floor.lua", base, input, C) },
    { key = "peer", cmd = ("/usr/bin/python3 %q %q %q %q %d"):format(here .. "/batch_peer.py", base, input, output, C),
      writes = true },
  }
  local res = {}
  for _, c in ipairs(clients) do
    res[c.key] = { wall = {}, cpu = {}, peak_rss_mb = {}, cpu_per_request_us = {}, requests_per_second = {},
                   all_written = true }
  end
  -- interleaved, so a busy moment of the machine falls on all three
  for _ = 1, rounds do
    for _, c in ipairs(clients) do
      os.remove(output)
      local cost, out, ok = measured(c.cmd)
      local r = res[c.key]
      local complete
      if c.writes then
        local n, good = lines_of(output)
        complete = ok and n == N and good == N
      else
        local doc = cjson.decode((assert(out:match("(%b{})%s*$"), c.key .. " failed:\n" .. out)))
        complete = ok and doc.completed == N
      end
      if not complete then
        r.all_written = false
        r.note = r.note or out:sub(1, 300)
      end
      r.wall[#r.wall + 1], r.cpu[#r.cpu + 1], r.peak_rss_mb[#r.peak_rss_mb + 1] = cost.wall, cost.cpu, cost.peak_rss_mb
      r.cpu_per_request_us[#r.cpu_per_request_us + 1] = cost.cpu / N * 1e6
      r.requests_per_second[#r.requests_per_second + 1] = N / cost.wall
    end
  end
  os.remove(output)
  for _, c in ipairs(clients) do
    local r = res[c.key]
    r.median = { wall = median(r.wall), cpu = median(r.cpu), peak_rss_mb = median(r.peak_rss_mb),
                 cpu_per_request_us = median(r.cpu_per_request_us),
                 requests_per_second = median(r.requests_per_second) }
  end

  -- resume: an output holding a record for every line of the input, written
  -- once by the runner itself; each run scans it and skips everything
  local big_in, big_out = dir .. "/in100k.jsonl", dir .. "/out100k.jsonl"
  write_input(big_in, RESUME_LINES)
  local fill_cmd = ("%q batch -i %q -o %q --base-url %q -c %d -q"):format(SLUICE, big_in, big_out, base, C)
  local _, fill_out, fill_ok = measured(fill_cmd)
  assert(fill_ok and lines_of(big_out) == RESUME_LINES, "filling the resume output failed:\n" .. fill_out)
  local resume = { wall = {}, cpu = {}, peak_rss_mb = {}, all_skipped = true }
  for _ = 1, rounds do
    local cost, out, ok = measured(fill_cmd)
    resume.all_skipped = resume.all_skipped and ok and lines_of(big_out) == RESUME_LINES
    if not ok then resume.note = resume.note or out:sub(1, 300) end
    resume.wall[#resume.wall + 1], resume.cpu[#resume.cpu + 1] = cost.wall, cost.cpu
    resume.peak_rss_mb[#resume.peak_rss_mb + 1] = cost.peak_rss_mb
  end
  resume.median = { wall = median(resume.wall), cpu = median(resume.cpu), peak_rss_mb = median(resume.peak_rss_mb) }
  local fh = assert(io.open(big_out, "rb"))
  resume.output_mb = fh:seek("end") / 1e6
  fh:close()
  assert(os.execute(("rm -rf %q"):format(dir)))

  local s, fl, peer = res.sluice.median, res.floor.median, res.peer.median
  -- the targets from each round's own figures (the three ran one after the
  -- other, on the same machine's mood), then the median over rounds
  local owns, vs_peers = {}, {}
  for i = 1, rounds do
    local si = res.sluice.cpu_per_request_us[i]
    owns[i] = si - res.floor.cpu_per_request_us[i]
    vs_peers[i] = res.peer.cpu_per_request_us[i] / si
  end
  local own, vs_peer = median(owns), median(vs_peers)
  results.batch = { requests = N, chunks = CHUNKS, concurrency = C, sluice = res.sluice, floor = res.floor,
                    peer = res.peer, resume = resume, resume_lines = RESUME_LINES,
                    runner_cpu_over_floor_us = owns, peer_cpu_ratio = vs_peers,
                    median = { runner_cpu_over_floor_us = own, peer_cpu_ratio = vs_peer } }
  local function row(name, r, target)
    local m = r.median
    return { name, r.all_written and "yes" or "NO", fmt(m.requests_per_second), fmt(m.cpu_per_request_us),
             fmt(m.cpu_per_request_us / fl.cpu_per_request_us, 2), fmt(m.cpu_per_request_us / peer.cpu_per_request_us, 2),
             fmt(m.peak_rss_mb, 1), target or "" }
  end
  table_md(("Batch: %d requests of %d chunks, instant sluice-mock, concurrency %d (medians of %d)"):format(
             N, CHUNKS, C, rounds),
    { "client", "all done", "requests/s", "client CPU per request (µs)", "ratio to the floor",
      "ratio to the peer", "peak RSS (MB)", "target" },
    { row("`sluice batch -c 256 -q`: Batch JSONL in and out", res.sluice,
          "<= floor + 100 µs; <= peer / 3; <= 64 MB"),
      row("floor: `client:chat` in 256 tasks, every delta read, nothing written", res.floor),
      row("peer: Python asyncio + aiohttp, semaphore of 256, same output", res.peer) })
  table_md(("Resume: `sluice batch` over %d lines that all have their record (%.0f MB of output), skipped (medians of %d)"):format(
             RESUME_LINES, resume.output_mb, rounds),
    { "all skipped", "wall (s)", "min (s)", "max (s)", "CPU (s)", "peak RSS (MB)", "target" },
    { { resume.all_skipped and "yes" or "NO", fmt(resume.median.wall, 2), fmt(math.min(table.unpack(resume.wall)), 2),
        fmt(math.max(table.unpack(resume.wall)), 2), fmt(resume.median.cpu, 2), fmt(resume.median.peak_rss_mb, 1),
        "< 1 s" } })
  local function mark(ok) return ok and "met" or "**missed**" end
  table_md(("Batch targets (each round's figures, median of %d rounds)"):format(rounds),
    { "target", "measured", "" },
    { { "the runner's own CPU per request (over the floor) <= 100 µs", fmt(own) .. " µs", mark(own <= 100) },
      { "at least 3x less CPU per request than the Python peer", fmt(vs_peer, 2) .. "x less", mark(vs_peer >= 3) },
      { "peak RSS <= 64 MB", fmt(s.peak_rss_mb, 1) .. " MB", mark(s.peak_rss_mb <= 64) },
      { ("resume of a %d-line output (skip scan) < 1 s"):format(RESUME_LINES), fmt(resume.median.wall, 2) .. " s",
        mark(resume.median.wall < 1) } })
end

-- 7. agent loop ----------------------------------------------------------------------
-- The loop's own CPU per turn: sluice.agent (two tool calls a turn, each in
-- its task, events, budgets) against its floor, the same requests and
-- messages by hand with client:chat (tests/bench/agent.lua).
if wanted("agent") then
  current = "agent"
  local TURNS = 200  -- the conversation is sent whole each turn: longer ones pass the mock's body limit
  local ag, fl = {}, {}
  for _ = 1, 3 * runs do  -- short runs: interleaved, three times as many
    ag[#ag + 1] = worker("agent", "agent", TURNS).cpu / TURNS * 1e6
    fl[#fl + 1] = worker("agent", "floor", TURNS).cpu / TURNS * 1e6
  end
  local own = {}
  for i = 1, #ag do own[i] = ag[i] - fl[i] end
  results.agent = { turns = TURNS, agent_us = ag, floor_us = fl,
                    median = { agent = median(ag), floor = median(fl), own = median(own) } }
  table_md(("Agent loop: %d turns, each a streamed answer with two tool calls and their results sent back (CPU us per turn, median of %d)"):format(TURNS, 3 * runs),
    { "client", "CPU us / turn", "target" },
    { { "`agent.run` (tools in tasks, events, budgets)", fmt(median(ag)), "" },
      { "floor: the same requests with `client:chat`, messages appended by hand", fmt(median(fl)), "" },
      { "the loop's own (agent - floor, paired runs)", fmt(median(own)), "<= 200" } })
end

server.stop()
local f = assert(io.open(out_path, "w"))
f:write(cjson.encode(results), "\n")
f:close()
print("\nraw figures: " .. out_path)

-- ---------------------------------------------------------------------------
-- bench/results.json and the page rendered from it

-- What the figures mean, under each scenario's tables.
local NOTES = {
  throughput = [[
- curl only copies bytes; sluice parses every SSE event and hands it to Lua (core), and decodes every
  chunk (`deltas()`, through a C fast path for the common chunk shape, `s:next_text()`; any other
  shape gets full cjson decoding). Lua's small blocks (a table, its slots and a string per event) come
  from per-size free lists, not malloc.
- A run lasts under 0.1 s, so one busy moment of the machine moves it a lot: three times as many runs,
  interleaved, for the medians.]],
  stop = [[
- A round trip between two processes: the keyword goes out, the close comes back. The bare C client
  (`tests/bench/floor_stop.c`: epoll, `read`, `memmem`, `close`) does the least any client can against
  the same mock. When both processes sleep in epoll, each wake-up of an idle vCPU costs tens of µs
  (the guest halts without polling); with the mock spinning (`sluice-mock --busy-poll`) only the
  client's wake-up is left. `SLUICE_BUSY_POLL=1` makes sluice spin instead of sleeping: the lowest
  latency, for a whole CPU.
- sluice's own share, traced from the socket becoming readable: ~5 µs in libcurl's read (its `recv`
  included), 1 µs back to the scheduler, 5–10 µs of Lua (resuming the task, `deltas()`, the policy,
  `cancel`), then the `shutdown` that sends the close. sluice shuts an HTTP/1 socket itself before
  handing the transfer back to curl, whose own close comes ~10 µs later, at the end of its clean-up.
- Chunks written after the keyword are 0 unless the machine stalls the client for longer than the
  2 ms between chunks.
- The tail, from sluice's own trace of the same stops (the second table): sluice's part, from the read
  that brought the keyword to `shutdown()`, stays in the tens of µs up to its p99; the stops of a
  millisecond or more are the kernel waking a process on a busy 2-core VM -- the keyword waiting to be
  read, or the close waiting for the mock to run -- and the bare C client has them as often.]],
  agent = [[
- The mock answers each turn at once, so what is measured is CPU: the loop's tasks (one per tool call),
  its events, the argument checks, the budgets and the bookkeeping of messages, against the same
  requests made by hand.]],
  concurrency = [[
- 1,000 streams are one `read` per chunk, 200,000 of them in 4 s. perf puts most of the plain-sockets
  client's CPU in the kernel: the TCP receive path and the ACK each read sends back (which, over
  loopback, runs the server side's receive path in the client's context). libcurl driven by sluice's
  bridge (`src/curlm.c`), the data thrown away, adds curl 7.88's `poll()` after every read and its own
  work. A target of 1 CPU s is below what a bare C client spends on such a machine; sluice's own share
  (SSE parsing, queueing, resuming a task and building an event table per chunk) is the difference
  to the curl row.
- curl's connection cache is as large as the most transfers ever live at once (at least 256), so
  curl 7.88 never walks all its connections to find an idle one to close.
- Memory at 10,000 streams is mostly libcurl's per-transfer state (the curl row; sluice gives curl a
  1 KiB receive buffer instead of 16 once 256 streams are live), then each task's coroutine and the
  events in flight. At most 256 ready sockets go to curl per loop pass, so tasks take each pass's
  events before curl reads more, and what the script has not caught up with stays in the kernel's
  socket buffers. The sockets sit in an epoll set of sluice's own, which libuv watches as one
  descriptor. All queues together stay under 16 MiB: past that, streams with unread events pause.
- The host runs Lua's generational collector (streams make many short-lived tables).]],
  slow = [[
- A stream whose queue passes 1 MiB (or all queues together 16 MiB) is paused, and the rest waits in
  the kernel's socket buffer: memory stays bounded however slowly a script reads. That holds for
  HTTP/1.1, the default. Over HTTP/2 (`http2 = true`), libcurl 7.88 goes on taking a paused stream's
  data up to its flow-control window while the connection is read for the others, holding it itself
  (one paused stream next to one read to the end took the process to 44.7 MB); sluice unpauses a
  paused transfer, dropping what it held, before removing it (curl issue 10971, fixed in 8.1).]],
  startup = [[
- libcurl (with OpenSSL and some thirty libraries) is loaded on first use, not at start: linking it
  would cost ~4 ms.]],
  batch = [[
- `sluice batch` is the whole runner: a first pass over the input (custom_ids checked for duplicates,
  what the output already holds skipped), each request streamed through `sluice.openai` (`deltas()`, each
  token's arrival kept for TTFT/TPOT/ITL), its record built and encoded (the Batch output shape and the
  `sluice` object) and appended with one `write(2)` (a crash leaves whole lines), the summary's
  histograms. The floor (`tests/bench/batch_floor.lua`) sends the same requests (the same body,
  `stream_options.include_usage`, `X-Request-Id`) with `client:chat` in 256 tasks, reads every delta and
  the result, and writes nothing: what any sluice script pays for these requests. The runner's own cost
  is the difference.
- The peer (`tests/bench/batch_peer.py`: Debian's Python 3.11 and python3-aiohttp 3.8, with its C HTTP
  parser, no uvloop) is the same batch as one would write it: an `asyncio.Semaphore(256)` gating the
  tasks, one `ClientSession` with a 256-connection pool, `async for line in resp.content` and `json.loads`
  of each `data:` line, the text assembled, one `json.dumps` line a request written whole (line-buffered).
  All three keep 256 keep-alive connections for the 10,000 requests (the mock's `/stats`).
- A round runs the three clients one after the other, 3 x RUNS rounds (a run lasts 1 to 5 s, and other
  work on a shared machine comes in bursts); the targets take each round's difference (or ratio) between
  them, then the median over rounds, so a slow moment of the machine counts once.
- CPU is the client process's user + system time from `wait4` (`tests/bench/rusage.c`, the same for all
  three), peak RSS its `ru_maxrss`; the mock, on CPU 1, is not counted. Requests/s is 10,000 over the
  wall time from fork to exit (start-up and the runner's first pass included).
- Where the runner's own share goes (its pieces timed alone): building and encoding the record
  (`record.line`) ~9 µs, the request's metrics (`stats.request`: the ITL gaps copied and sorted) ~4 µs,
  the summary (`run:add`: a `log` a token for the ITL histogram) ~3.5 µs, the input's first pass ~3 µs,
  the `write(2)` ~2 µs, and the collection of the extra garbage. The floor is sluice's core a request:
  perf puts a third of it in the Lua VM (the openai layer, the tasks), a fifth in the kernel (loopback
  TCP), 15% in libcurl (an easy handle a request) and ~10% in malloc and free.
- The target against the peer leaves the runner little room: the floor alone uses about a quarter of
  the peer's CPU a request (its "ratio to the peer"), so the runner stays 3x below the peer only while its
  own share is under a third of the peer's figure minus the floor's (~35 µs on this machine).
- Resume: the output is written once by the runner itself (100,000 records of 20 tokens), then the same
  command runs again: it scans the output reading only each line's head (`id`, `custom_id`, `error`, in
  that order: no JSON decoding), checks the input (100,000 lines), then walks the input once more to find
  nothing left to send (about a third of the time). Wall time from fork to exit.]],
}
local HEADINGS = { throughput = "Throughput", stop = "Stop latency", concurrency = "Concurrency",
                   slow = "Slow consumer", startup = "Start-up", batch = "Batch", agent = "Agent loop" }

local function read_all(path)
  local fh = io.open(path, "rb")
  if not fh then return nil end
  local text = fh:read("a")
  fh:close()
  return text
end

local function write_all(path, text)
  local tmp = path .. ".tmp"
  local fh = assert(io.open(tmp, "wb"))
  fh:write(text)
  fh:close()
  assert(os.rename(tmp, path))
end

-- JSON with sorted keys, an object's members one per line, arrays on one
-- line: a file whose diff shows what a run changed.
local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t" }
local function encode(v, indent)
  indent = indent or ""
  if type(v) == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return escapes[c] or ("\\u%04x"):format(c:byte()) end) .. '"'
  end
  if type(v) ~= "table" then return cjson.encode(v) end
  if next(v) == nil then return "[]" end
  if #v > 0 then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = encode(x, indent) end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  local keys, parts = {}, {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for i, k in ipairs(keys) do
    parts[i] = indent .. "  " .. encode(k) .. ": " .. encode(v[k], indent .. "  ")
  end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
end

local function render(saved)
  local out = { [[
# sluice benchmarks

This page is written by `./scripts/bench` (`tests/bench/driver.lua`) from
[`results.json`](results.json); do not edit it by hand. `./scripts/bench` runs every scenario;
`./scripts/bench throughput stop` (scenarios: ]] .. table.concat(SCENARIOS, ", ") .. [[) runs those and
replaces only their tables here, keeping the others' last figures: each scenario says the command,
date and machine that produced it.

Release build; sluice-mock pinned to CPU 1, each client to CPU 0; medians of `RUNS` runs (default 5).
Every scenario is measured next to a floor in the same run — `curl -N` for throughput, bare C clients
for the others (`tests/bench/floor_stop.c`, `floor_streams.c`, `pingpong.c`), a bare sluice script and
a Python peer for the batch runner — so the figures read as ratios on whatever machine runs them. A
shared VM is noisy: absolute figures may move by 30% from one hour to the next, the ratios much less.
The targets are the project's goals, not assertions.
]] }
  for _, name in ipairs(SCENARIOS) do
    local sc = saved.scenarios[name]
    out[#out + 1] = "## " .. HEADINGS[name] .. "\n"
    if not sc then
      out[#out + 1] = ("Not measured yet: `./scripts/bench %s`.\n"):format(name)
    else
      for _, t in ipairs(sc.tables) do out[#out + 1] = md(t.title, t.header, t.rows) .. "\n" end
      local m = sc.machine
      out[#out + 1] = ("Measured by `%s` on %s: %d cores (%s)%s.\n"):format(sc.command, sc.date, m.cores,
        m.cpu, sc.commit and (", sluice " .. sc.commit) or "")
      out[#out + 1] = NOTES[name] .. "\n"
    end
  end
  return table.concat(out, "\n")
end

local results_path = root .. "/bench/results.json"
local saved = cjson.decode(read_all(results_path) or '{"scenarios":{}}')
if type(saved.scenarios) ~= "table" then saved.scenarios = {} end
for _, name in ipairs(SCENARIOS) do
  if tables[name] then
    saved.scenarios[name] = { command = run_info.command, date = run_info.date, runs = runs,
                              machine = run_info.machine, commit = run_info.commit,
                              tables = tables[name], figures = results[name] }
  end
end
os.execute(("mkdir -p %q"):format(root .. "/bench"))
write_all(results_path, encode(saved) .. "\n")
write_all(root .. "/bench/README.md", render(saved))
print("results: bench/results.json; page: bench/README.md")
