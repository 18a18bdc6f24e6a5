-- sluice batch against sluice-mock: the Batch output shape, stops that close
-- the upstream, retries, resume after kill -9, a torn line, shards, several
-- endpoints, Ctrl-C, --redo-failed, and the numbers of the summary.
local sluice = require "sluice"
local cjson = require "cjson"
local batch = require "sluice.batch"
local T = require "testlib"

local BASE = T.url .. "/v1"
local SLUICE = os.getenv("SLUICE_BIN")

local tmp = T.tmpname

local function write_lines(path, lines)
  local f = assert(io.open(path, "w"))
  for _, l in ipairs(lines) do f:write(l, "\n") end
  f:close()
end

-- A batch file of n chat requests; body(i) may add to each body.
local function requests(n, extra, prefix)
  local lines = {}
  for i = 1, n do
    local body = { model = "mock-model", max_tokens = 5, messages = { { role = "user", content = "q" .. i } } }
    for k, v in pairs(extra and extra(i) or {}) do body[k] = v end
    lines[i] = cjson.encode { custom_id = (prefix or "r") .. i, method = "POST", url = "/v1/chat/completions",
                              body = body }
  end
  return lines
end

local function read_records(path)
  local out = {}
  local f = io.open(path)
  if not f then return out end
  for line in f:lines() do out[#out + 1] = assert(cjson.decode(line), "a whole JSON line: " .. line) end
  f:close()
  return out
end

local function by_id(records)
  local t, dups = {}, {}
  for _, r in ipairs(records) do
    if r.custom_id ~= cjson.null then
      if t[r.custom_id] then dups[#dups + 1] = r.custom_id end
      t[r.custom_id] = r
    end
  end
  return t, dups
end

-- Runs `sluice batch ARGS` in a child; returns its stderr+stdout and status.
local function cli(args, env)
  local p = assert(io.popen(("%s %q batch %s 2>&1"):format(env or "", SLUICE, args)))
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

T.case("records in the Batch output shape, field by field", function()
  local inp, out = tmp(), tmp()
  local lines = requests(3, function(i) return { mock = { tokens_per_sec = 0 }, max_tokens = 4 } end)
  lines[4] = cjson.encode { custom_id = "c1", method = "POST", url = "/v1/completions",
                            body = { model = "mock-model", prompt = "Once", max_tokens = 3, mock = { tokens_per_sec = 0 } } }
  write_lines(inp, lines)
  local seen = 0
  local summary = batch.run { input = inp, output = out, base_url = BASE, quiet = true,
                              on_result = function(rec) seen = seen + 1 end }
  T.eq(summary.requests, 4, "four requests")
  T.eq(seen, 4, "on_result once a record")
  local recs = by_id(read_records(out))
  local r = recs.r1
  T.ok(type(r.id) == "string" and r.id:match("^batch_req_"), "id")
  T.eq(r.custom_id, "r1", "custom_id")
  T.eq(r.error, cjson.null, "error: null")
  T.eq(r.response.status_code, 200, "response.status_code")
  T.ok(type(r.response.request_id) == "string", "response.request_id")
  local b = r.response.body
  T.eq(b.object, "chat.completion", "body.object")
  T.ok(type(b.id) == "string" and type(b.created) == "number" and b.model == "mock-model", "id, created, model")
  T.eq(#b.choices, 1, "one choice")
  local c = b.choices[1]
  T.eq(c.index, 0, "choices[0].index")
  T.eq(c.message.role, "assistant", "message.role")
  T.ok(type(c.message.content) == "string" and #c.message.content > 0, "message.content")
  T.eq(c.finish_reason, "length", "finish_reason")
  T.eq(b.usage.completion_tokens, 4, "usage.completion_tokens")
  T.ok(b.usage.prompt_tokens > 0 and b.usage.total_tokens == b.usage.prompt_tokens + 4, "usage adds up")
  local f = io.open(out)
  local raw = f:read("l")
  f:close()
  T.ok(raw:find('"completion_tokens":%d+[,}]'), "integer counts in the file, not 4.0")
  local sl = r.sluice
  T.eq(sl.attempts, 1, "sluice.attempts")
  T.eq(sl.stop_reason, nil, "no stop_reason: the server finished")
  T.ok(sl.metrics.ttft >= 0 and sl.metrics.e2e >= sl.metrics.ttft, "ttft, e2e")
  T.eq(sl.metrics.output_tokens, 4, "output_tokens")
  T.ok(sl.metrics.tpot and sl.metrics.itl and sl.metrics.itl.p50 and sl.metrics.itl.p99, "tpot, itl mean/p50/p99")
  T.eq(sl.metrics.endpoint, BASE, "endpoint")
  local tc = recs.c1.response.body
  T.eq(tc.object, "text_completion", "a /v1/completions line")
  T.ok(type(tc.choices[1].text) == "string", "choices[0].text")
  os.remove(inp)
  os.remove(out)
end)

T.case("bad lines are error records naming the line; duplicates are refused before anything is sent", function()
  local inp, out = tmp(), tmp()
  local lines = requests(2, function() return { mock = { tokens_per_sec = 0 } } end)
  lines[#lines + 1] = "{not json"
  lines[#lines + 1] = '{"custom_id":"nobody","method":"POST","url":"/v1/chat/completions"}'
  write_lines(inp, lines)
  batch.run { input = inp, output = out, base_url = BASE, quiet = true }
  local recs = read_records(out)
  T.eq(#recs, 4, "a record for every line")
  local bad = 0
  for _, r in ipairs(recs) do
    if r.error ~= cjson.null then
      bad = bad + 1
      T.contains(r.error.message, "line ", "names the line")
    end
  end
  T.eq(bad, 2, "two bad lines")
  -- the same again: nothing twice
  batch.run { input = inp, output = out, base_url = BASE, quiet = true }
  T.eq(#read_records(out), 4, "a rerun adds nothing")
  -- duplicates
  local before = #T.stats().requests
  local dup = requests(3)
  dup[4] = dup[2]
  write_lines(inp, dup)
  local out2 = tmp()
  local text, code = cli(("-i %q -o %q --base-url %q"):format(inp, out2, BASE))
  T.eq(code, 2, "exit 2")
  T.contains(text, 'custom_id "r2" is used twice (lines 2 and 4)', "names the first duplicate")
  T.eq(#T.stats().requests, before, "nothing was sent")
  text, code = cli(("-i /nonexistent -o %q"):format(out2))
  T.eq(code, 2, "a missing file: exit 2")
  T.contains(text, "cannot read /nonexistent", "says so")
  T.eq(select(2, text:gsub("\n", "")), 1, "in one line")
  text, code = cli(("-i %q -o %q --frobnicate"):format(inp, out2))
  T.eq(code, 2, "an unknown option: exit 2")
  T.contains(text, "unknown option --frobnicate", "says so")
  os.remove(inp)
  os.remove(out)
  os.remove(out2)
end)

T.case("a line that is no request keeps its custom_id: a rerun or --redo-failed never writes it twice", function()
  local inp, out = tmp(), tmp()
  local lines = requests(1, function() return { mock = { tokens_per_sec = 0 } } end, "fine")
  lines[2] = '{"custom_id":"torn-json","method":"POST","url":'  -- starts like a request, is no JSON
  lines[3] = '{"custom_id":"no-body","method":"POST","url":"/v1/chat/completions"}'
  write_lines(inp, lines)
  batch.run { input = inp, output = out, base_url = BASE, quiet = true }
  local recs, dups = by_id(read_records(out))
  T.eq(#dups, 0, "one record each")
  T.ok(recs["torn-json"] and recs["torn-json"].error ~= cjson.null, "the torn line's record carries its custom_id")
  T.ok(recs["no-body"] and recs["no-body"].error ~= cjson.null, "the line without a body: an error record")
  batch.run { input = inp, output = out, base_url = BASE, quiet = true }
  T.eq(#read_records(out), 3, "a rerun adds nothing")
  batch.run { input = inp, output = out, base_url = BASE, quiet = true, redo_failed = true }
  recs, dups = by_id(read_records(out))
  T.eq(#dups, 0, "--redo-failed: still one record each")
  T.eq(#read_records(out), 3, "three records")
  os.remove(inp)
  os.remove(out)
end)

T.case("an input refused (duplicates, a missing file) makes no output file", function()
  local inp, out = tmp(), tmp()
  local dup = requests(2)
  dup[3] = dup[1]
  write_lines(inp, dup)
  local summary, err = batch.run { input = inp, output = out, base_url = BASE, quiet = true }
  T.eq(summary, nil, "refused")
  T.contains(err, "used twice", "says why")
  T.eq(T.read_file(out), nil, "no output file")
  summary, err = batch.run { input = inp, output = out, base_url = BASE, quiet = true, redo_failed = true }
  T.eq(summary, nil, "refused with --redo-failed too")
  T.eq(T.read_file(out .. ".redo"), nil, "no .redo file left")
  summary, err = batch.run { input = "/nonexistent/in.jsonl", output = out, base_url = BASE, quiet = true }
  T.contains(tostring(err), "cannot read", "a missing input")
  T.eq(T.read_file(out), nil, "still no output file")
  os.remove(inp)
end)

T.case("--help lists every option", function()
  local text, code = cli("--help")
  T.eq(code, 0, "status")
  for _, flag in ipairs { "--input", "--output", "--prompts", "--model", "--concurrency", "--rate", "--poisson",
                          "--base-url", "--retries", "--shard", "--redo-failed", "--quiet", "--summary", "--policy",
                          "--stop-on", "--max-output", "--deadline", "--ttft", "--idle" } do
    T.contains(text, flag, "lists " .. flag)
  end
end)

T.case("a policy's stop closes the upstream at once; it is a success with its stop_reason", function()
  local inp, out = tmp(), tmp()
  write_lines(inp, requests(4, function(i)
    return { max_tokens = 200, mock = { tokens_per_sec = 100, keyword = "EUREKA", keyword_at = 5 } }
  end, "stop"))
  local summary = batch.run { input = inp, output = out, base_url = BASE, quiet = true, stop_on = { "EUREKA" } }
  T.eq(summary.outcomes.stopped, 4, "all four stopped")
  T.eq(summary.outcomes.stopped_by['stop_on:"EUREKA"'], 4, "by that reason")
  T.ok(summary.tokens_saved >= 4 * 190, "tokens saved: " .. summary.tokens_saved)
  for _, r in ipairs(read_records(out)) do
    T.eq(r.error, cjson.null, "a success")
    T.eq(r.sluice.stop_reason, 'stop_on:"EUREKA"', "stop_reason")
    T.eq(r.response.body.choices[1].finish_reason, "stop", "finish_reason stop")
    local rec = T.wait_record(r.custom_id, function(m) return m.client_closed end)
    T.ok(not rec.completed, "the mock did not finish it")
    T.le(rec.tokens_sent - r.sluice.metrics.output_tokens, 1, "at most one token after the stop")
  end
  os.remove(inp)
  os.remove(out)
end)

T.case("429 then success and 500 are retried, honouring Retry-After; a failure after output is not", function()
  local inp, out = tmp(), tmp()
  write_lines(inp, {
    cjson.encode { custom_id = "busy", body = { model = "m", max_tokens = 3, messages = {},
                                                mock = { tokens_per_sec = 0, status = 429, retry_after = 1,
                                                         fail_first = 1, key = "busy-" .. os.time() } } },
    cjson.encode { custom_id = "down", body = { model = "m", max_tokens = 3, messages = {},
                                                mock = { tokens_per_sec = 0, status = 500, fail_first = 2,
                                                         key = "down-" .. os.time() } } },
    cjson.encode { custom_id = "midway", body = { model = "m", max_tokens = 10, messages = {},
                                                  mock = { tokens_per_sec = 0, error_after = 3 } } },
    cjson.encode { custom_id = "never", body = { model = "m", max_tokens = 3, messages = {},
                                                 mock = { tokens_per_sec = 0, status = 503 } } },
  })
  local t0 = sluice.now()
  local summary = batch.run { input = inp, output = out, base_url = BASE, quiet = true, retry_base = 0.01,
                              retries = 2 }
  local recs = by_id(read_records(out))
  T.eq(recs.busy.error, cjson.null, "429 then success")
  T.eq(recs.busy.sluice.attempts, 2, "two attempts")
  T.ok(sluice.now() - t0 >= 1, "Retry-After (1 s) honoured over the 0.01 s back-off")
  T.eq(recs.down.error, cjson.null, "500 twice then success")
  T.eq(recs.down.sluice.attempts, 3, "three attempts")
  T.ok(recs.midway.error ~= cjson.null, "an error after output")
  T.eq(recs.midway.sluice.attempts, 1, "not retried once output streamed")
  T.ok(recs.never.error ~= cjson.null, "a final failure is written, not dropped")
  T.eq(recs.never.error.code, "http_503", "error.code")
  T.contains(recs.never.error.message, "http 503", "error.message")
  T.eq(recs.never.response.status_code, 503, "response.status_code of the failure")
  T.eq(recs.never.sluice.attempts, 3, "1 + 2 retries")
  T.eq(summary.outcomes.failed, 2, "two failed")
  os.remove(inp)
  os.remove(out)
end)

T.case("kill -9 mid-run, then the same command: every custom_id once, no request finished twice", function()
  local inp, out = tmp(), tmp()
  local tag = "k9-" .. os.time() .. "-"
  -- waves: 10 at a time, each request 0.4 s (4 tokens at 10/s): a kill in
  -- the middle of a wave lands far from any request's end
  write_lines(inp, requests(40, function() return { max_tokens = 4, mock = { tokens_per_sec = 10 } } end, tag))
  local args = ("-i %q -o %q --base-url %q -c 10 -q"):format(inp, out, BASE)
  local p = assert(io.popen(("echo $$; exec %q batch %s"):format(SLUICE, args)))
  local pid = p:read("l")
  T.wait_until(function() return #read_records(out) >= 10 end, 20)
  sluice.sleep(0.2)  -- the middle of the second wave
  os.execute("kill -9 " .. pid)
  p:close()
  local partial = #read_records(out)
  T.ok(partial >= 10 and partial < 40, "killed mid-run, " .. partial .. " records")
  local _, code = cli(args)
  T.eq(code, 0, "the rerun completes")
  local recs, dups = by_id(read_records(out))
  T.eq(#dups, 0, "no custom_id twice: " .. table.concat(dups, ", "))
  for i = 1, 40 do T.ok(recs[tag .. i] and recs[tag .. i].error == cjson.null, "record " .. i) end
  local finished = {}
  for _, rec in ipairs(T.stats().requests) do
    if rec.id:sub(1, #tag) == tag and rec.completed then
      T.ok(not finished[rec.id], "the mock finished " .. rec.id .. " once")
      finished[rec.id] = true
    end
  end
  os.remove(inp)
  os.remove(out)
end)

T.case("a torn last line is repaired, and its request done again", function()
  local inp, out = tmp(), tmp()
  write_lines(inp, requests(5, function() return { mock = { tokens_per_sec = 0 } } end, "torn"))
  batch.run { input = inp, output = out, base_url = BASE, quiet = true }
  -- drop the last record and leave half of it, as a crash mid-write would
  local f = io.open(out)
  local lines = {}
  for l in f:lines() do lines[#lines + 1] = l end
  f:close()
  local last = table.remove(lines)
  f = io.open(out, "w")
  for _, l in ipairs(lines) do f:write(l, "\n") end
  f:write(last:sub(1, 40))
  f:close()
  local summary = batch.run { input = inp, output = out, base_url = BASE, quiet = true }
  T.eq(summary.requests, 1, "one request redone")
  local recs, dups = by_id(read_records(out))
  T.eq(#dups, 0, "nothing twice")
  for i = 1, 5 do T.ok(recs["torn" .. i], "record " .. i) end
  os.remove(inp)
  os.remove(out)
end)

T.case("shards 0..N-1 together are the input, disjoint", function()
  local inp = tmp()
  write_lines(inp, requests(30, function() return { max_tokens = 1, mock = { tokens_per_sec = 0 } } end, "s"))
  local all, n = {}, 0
  for k = 0, 2 do
    local out = tmp()
    batch.run { input = inp, output = out, base_url = BASE, quiet = true, shard = k .. "/3" }
    for _, r in ipairs(read_records(out)) do
      T.ok(not all[r.custom_id], r.custom_id .. " in one shard only")
      all[r.custom_id] = k
      n = n + 1
    end
    os.remove(out)
  end
  T.eq(n, 30, "every line in some shard")
  local used = {}
  for _, k in pairs(all) do used[k] = true end
  T.ok(used[0] and used[1] and used[2], "every shard has some")
  -- the hash is the documented one: FNV-1a 64 of the custom_id, unsigned, mod N
  -- (values from an independent implementation)
  local input = require "sluice.batch.input"
  T.eq(input.hash("hello"), 0xa430d84680aabd0b, "FNV-1a 64 of hello")
  T.eq(input.shard_of("hello", 7), 5, "hello in 7 shards")
  T.eq(input.shard_of("r1", 3), 1, "r1 in 3 shards")
  T.eq(input.shard_of("custom-42", 16), 15, "custom-42 in 16 shards")
  os.remove(inp)
end)

T.case("the summary's TTFT is the server's first-token delay", function()
  local inp, out = tmp(), tmp()
  write_lines(inp, requests(8, function() return { max_tokens = 3, mock = { ttft = 0.2, tokens_per_sec = 0 } } end, "ttft"))
  local summary = batch.run { input = inp, output = out, base_url = BASE, quiet = true }
  T.ok(summary.ttft.median >= 0.19 and summary.ttft.median <= 0.3, "TTFT median ~0.2 s: " .. summary.ttft.median)
  T.ok(summary.e2e.median >= summary.ttft.median, "E2E >= TTFT")
  os.remove(inp)
  os.remove(out)
end)

T.case("a record's TPOT and ITL are the server's pace between tokens", function()
  local inp, out = tmp(), tmp()
  write_lines(inp, requests(4, function() return { max_tokens = 12, mock = { tokens_per_sec = 50 } } end, "itl"))
  local summary = batch.run { input = inp, output = out, base_url = BASE, quiet = true }
  T.eq(summary.outcomes.finished, 4)
  for line in io.lines(out) do
    local m = cjson.decode(line).sluice.metrics
    T.ok(m.tpot > 0.015 and m.tpot < 0.03, "TPOT ~20 ms: " .. m.tpot)
    T.ok(m.itl.p50 > 0.015 and m.itl.p50 < 0.03, "ITL median ~20 ms: " .. m.itl.p50)
    T.ok(m.itl.mean > 0.015 and m.itl.mean < 0.03 and m.itl.p99 >= m.itl.p50, "ITL mean ~20 ms, p99 >= p50")
  end
  T.ok(summary.itl.median > 0.015 and summary.itl.median < 0.03, "the run's ITL median ~20 ms")
  -- sluice.gaps: the gaps between neighbours, sorted, and their sum
  local g, sum = sluice.gaps { 1, 4, 2, 2.5 }
  T.eq(#g, 3)
  T.ok(g[1] == -2 and g[2] == 0.5 and g[3] == 3 and sum == 1.5, "gaps sorted, sum in order")
  local e, zero = sluice.gaps { 7 }
  T.ok(#e == 0 and zero == 0, "one time: no gap")
  local long = {}
  for i = 1, 1000 do long[i] = i * i end
  local lg = sluice.gaps(long)
  T.ok(#lg == 999 and lg[1] == 3 and lg[999] == 1999, "a long list")
  local ok, err = pcall(sluice.gaps, { 1, "x" })
  T.ok(not ok, "a list with a string in it is an error")
  T.contains(tostring(err), "item 2")
  os.remove(inp)
  os.remove(out)
end)

T.case("two endpoints, one stopped mid-run: the run completes on the other", function()
  local mock = require "sluice.mock"
  local a = mock.start { tokens_per_sec = 50 }
  local b = mock.start { tokens_per_sec = 50 }
  local inp, out = tmp(), tmp()
  write_lines(inp, requests(40, function() return { max_tokens = 3 } end, "ep"))
  local killed_at
  local summary = batch.run { input = inp, output = out, base_url = { a.url, b.url }, quiet = true,
                              concurrency = 4, retry_base = 0.01,
                              on_result = function(rec)
                                if not killed_at and rec.custom_id == "ep8" then
                                  a.stop()
                                  killed_at = sluice.now()
                                end
                              end }
  T.ok(killed_at, "one endpoint was stopped")
  local recs = read_records(out)
  T.eq(#recs, 40, "every line has its record")
  T.le(summary.outcomes.failed, 4, "at most what was in flight on it failed")
  local on_a, on_b = 0, 0
  for _, r in ipairs(recs) do
    if r.sluice.metrics and r.sluice.metrics.endpoint == b.url then on_b = on_b + 1 else on_a = on_a + 1 end
  end
  T.ok(on_b >= 40 - 12, "the other endpoint did the rest: " .. on_b)
  b.stop()
  os.remove(inp)
  os.remove(out)
end)

T.case("a dead server: each request fails after its own retries, in seconds, not minutes", function()
  -- a wave of refused connections set the only endpoint aside for a time
  -- that doubled with each of them, to 30 s, and every request waited for
  -- it: 20 requests at -c 8 took 5.5 minutes
  local dead = require("sluice.mock").start {}
  local url = dead.url
  dead.stop()
  local inp, out = tmp(), tmp()
  write_lines(inp, requests(20, nil, "dead"))
  local t0 = sluice.now()
  local summary = batch.run { input = inp, output = out, base_url = url, quiet = true, concurrency = 8,
                              retry_base = 0.05 }
  local took = sluice.now() - t0
  local recs = read_records(out)
  T.eq(#recs, 20, "every line has its record")
  for _, r in ipairs(recs) do
    T.eq(r.error.code, "transport", "a transport error: " .. r.custom_id)
    T.eq(r.sluice.attempts, 4, "tried 1 + retries times: " .. r.custom_id)
  end
  T.eq(summary.outcomes.failed, 20, "failed")
  -- its own back-off is at most 0.05 + 0.1 + 0.2 s a request, 3 waves of 8
  T.le(took, 10, "seconds for the run")
  print(("# 20 requests against a dead server at -c 8: %.2f s"):format(took))
  os.remove(inp)
  os.remove(out)
end)

T.case("Ctrl-C: in-flight requests cancelled upstream, what finished is in the file, exit 1, resume", function()
  local inp, out = tmp(), tmp()
  local tag = "int-" .. os.time() .. "-"
  write_lines(inp, requests(30, function() return { max_tokens = 20, mock = { tokens_per_sec = 50 } } end, tag))
  local args = ("-i %q -o %q --base-url %q -c 5"):format(inp, out, BASE)
  local p = assert(io.popen(("echo $$; exec %q batch %s 2>&1"):format(SLUICE, args)))
  local pid = p:read("l")
  T.wait_until(function() return #read_records(out) >= 5 end, 20)
  os.execute("kill -INT " .. pid)
  local text = p:read("a")
  local _, _, code = p:close()
  T.eq(code, 1, "exit 1: interrupted")
  T.contains(text, "run the same command again to resume", "says how to resume")
  local partial = read_records(out)
  T.ok(#partial >= 5 and #partial < 30, "whole records of what finished")
  local open = 0
  for _, rec in ipairs(T.stats().requests) do
    if rec.id:sub(1, #tag) == tag and not rec.completed then
      open = open + 1
      T.ok(rec.client_closed, rec.id .. ": cancelled upstream")
    end
  end
  T.ok(open > 0, "some were in flight")
  local _, code2 = cli(args .. " -q")
  T.eq(code2, 0, "resumed to the end")
  local recs, dups = by_id(read_records(out))
  T.eq(#dups, 0, "nothing twice")
  for i = 1, 30 do T.ok(recs[tag .. i], "record " .. i) end
  os.remove(inp)
  os.remove(out)
end)

T.case("--redo-failed replaces the failed records, and only those", function()
  local inp, out = tmp(), tmp()
  local key = "redo-" .. os.time()
  local lines = requests(4, function() return { mock = { tokens_per_sec = 0 } } end, "ok")
  lines[5] = cjson.encode { custom_id = "flaky", body = { model = "m", max_tokens = 2, messages = {},
                            mock = { tokens_per_sec = 0, status = 400, fail_first = 1, key = key } } }
  write_lines(inp, lines)
  batch.run { input = inp, output = out, base_url = BASE, quiet = true, retries = 0 }
  local first = by_id(read_records(out))
  T.ok(first.flaky.error ~= cjson.null, "failed first (400 is not retried)")
  local summary = batch.run { input = inp, output = out, base_url = BASE, quiet = true, redo_failed = true }
  T.eq(summary.requests, 1, "only the failed one was sent")
  local recs, dups = by_id(read_records(out))
  T.eq(#dups, 0, "one record each")
  T.eq(recs.flaky.error, cjson.null, "replaced by a success")
  T.eq(recs.ok1.id, first.ok1.id, "the others kept")
  T.eq(#read_records(out), 5, "five records")
  os.remove(inp)
  os.remove(out)
end)

T.case("quick mode: --prompts FILE --model M, custom_id = line number", function()
  local inp, out = tmp(), tmp()
  write_lines(inp, { "first prompt", "", "third prompt" })
  local text, code = cli(("--prompts %q --model mock-model -o %q --base-url %q -q --max-output 3"):format(inp, out, BASE))
  T.eq(code, 0, "status: " .. text)
  local recs = by_id(read_records(out))
  T.ok(recs["1"] and recs["3"] and not recs["2"], "custom_ids are line numbers, blank lines skipped")
  T.eq(recs["1"].sluice.stop_reason, "max_tokens:3", "a flag policy")
  os.remove(inp)
  os.remove(out)
end)

T.case("10,000 requests at concurrency 1,000 in one process, no error", function()
  local inp, out = tmp(), tmp()
  local f = assert(io.open(inp, "w"))
  for i = 1, 10000 do
    f:write('{"custom_id":"big', i, '","method":"POST","url":"/v1/chat/completions","body":{"model":"m",',
            '"max_tokens":5,"messages":[{"role":"user","content":"x"}],"mock":{"tokens_per_sec":0}}}\n')
  end
  f:close()
  local summary = batch.run { input = inp, output = out, base_url = BASE, quiet = true, concurrency = 1000 }
  T.eq(summary.requests, 10000, "all sent")
  T.eq(summary.outcomes.finished, 10000, "all finished")
  T.eq(summary.outcomes.failed, 0, "no error")
  local n = 0
  for _ in io.lines(out) do n = n + 1 end
  T.eq(n, 10000, "10,000 records")
  os.remove(inp)
  os.remove(out)
end)

T.case("the input is a stream: 100,000 lines cost a few MB more than 10,000", function()
  -- a child per size, every line already done: what the input and output
  -- passes hold (the hashes of the custom_ids) is what grows with the file
  local code = [[
    local n, dir = tonumber(arg[1]), arg[2]
    local inp, out = dir .. "/in", dir .. "/out"
    local f, g = io.open(inp, "w"), io.open(out, "w")
    for i = 1, n do
      f:write('{"custom_id":"request-', i, '","body":{"model":"m","messages":[{"role":"user","content":"q', i, '"}]}}\n')
      g:write('{"id":"batch_req_x","custom_id":"request-', i, '","error":null,"response":null,"sluice":{}}\n')
    end
    f:close() g:close()
    collectgarbage()
    local s = require("sluice.batch").run { input = inp, output = out, base_url = "http://127.0.0.1:1/v1", quiet = true }
    assert(s.skipped == n and s.requests == 0)
    io.write(io.open("/proc/self/status"):read("a"):match("VmHWM:%s*(%d+)"), "\n")
  ]]
  local function peak(n)
    local dir = tmp()
    assert(os.execute("mkdir " .. dir))
    local script = dir .. "/m.lua"
    local sf = assert(io.open(script, "w"))
    sf:write(code)
    sf:close()
    local h = assert(io.popen(("%q %q %d %q"):format(SLUICE, script, n, dir)))
    local kb = tonumber(h:read("l"))
    h:close()
    os.execute("rm -rf " .. dir)
    return kb
  end
  local small, large = peak(10000), peak(100000)
  T.ok(small and large, "measured")
  if not os.getenv("SLUICE_SANITIZED") then  -- ASan's shadow and quarantine are not ours
    T.le((large - small) / 1024, 4, "MB more for 100,000 lines than for 10,000")
  end
end)

T.done()
