-- sluice.batch: batch evaluation over an inference server. Reads requests in
-- the OpenAI Batch file format (or a file of prompts), streams each through
-- sluice.openai with the stop policies asked for -- a policy's stop closes the
-- upstream connection at that moment, so the server stops generating -- and
-- writes one record a request in the Batch output format, resumable after a
-- crash (kill -9 included), shardable across machines, with vLLM-style
-- serving metrics. `sluice batch` (lua/sluice/cli/batch.lua) is a thin
-- wrapper over batch.run.
--
--   local summary = require("sluice.batch").run {
--     input = "requests.jsonl", output = "results.jsonl", concurrency = 64,
--     policy = sluice.policy.stop_on("Final answer:"),
--     on_result = function(record) ... end,
--   }
local sluice = require "sluice"
local args = require "sluice.args"
local policy = require "sluice.policy"
local input = require "sluice.batch.input"
local output = require "sluice.batch.output"
local record = require "sluice.batch.record"
local stats = require "sluice.batch.stats"
local endpoints = require "sluice.batch.endpoints"

local now, sleep = sluice.now, sluice.sleep

local batch = {}

local function list_of(kind)
  return function(v)
    if type(v) == kind then return nil end
    if type(v) ~= "table" then return ("must be a %s or a list of them, got %s"):format(kind, type(v)) end
    for i, x in ipairs(v) do
      if type(x) ~= kind then return ("[%d] must be a %s, got %s"):format(i, kind, type(x)) end
    end
  end
end

local function shard_kind(v)
  if type(v) == "string" then
    local k, n = v:match("^(%d+)/(%d+)$")
    k, n = tonumber(k), tonumber(n)
    if not k or n < 1 or k >= n then return 'must be "K/N" with 0 <= K < N' end
  elseif type(v) == "table" then
    local k, n = math.tointeger(v[1]), math.tointeger(v[2])
    if not k or not n or n < 1 or k < 0 or k >= n then return "must be {K, N} with 0 <= K < N" end
  else
    return 'must be "K/N" or {K, N}, got ' .. type(v)
  end
end

local function policy_or_factory(v)
  if type(v) == "function" then return nil end  -- a function of the request
  return policy.kind(v)
end

-- The client's options are checked as openai.client checks them.
local cs = require("sluice.openai.request").client_spec
local spec = {
  input = "string", prompts = "string", model = "string", output = "string",
  concurrency = "count", rate = "seconds", poisson = "flag",
  base_url = list_of("string"), api_key = cs.api_key,
  policy = policy_or_factory, stop_on = list_of("string"), max_output = "count",
  deadline = "seconds", ttft = "seconds", idle = "seconds",
  retries = args.integer(0), retry_base = "seconds",
  shard = shard_kind, redo_failed = "flag",
  quiet = "flag", progress = "flag", summary = "string",
  on_result = "function", on_interrupt = "function",
  timeouts = cs.timeouts, headers = cs.headers, insecure = cs.insecure, ca_file = cs.ca_file,
  http2 = cs.http2, confirm = cs.confirm, trace = "string",
}

-- The policy of a request: the run's flags and its policy (a value, or a
-- function of the request returning one), any of them stopping it.
local function policy_maker(o)
  local fixed = {}
  if o.stop_on then fixed[#fixed + 1] = policy.stop_on(o.stop_on) end
  if o.max_output then fixed[#fixed + 1] = policy.max_tokens(o.max_output) end
  if o.deadline then fixed[#fixed + 1] = policy.deadline(o.deadline) end
  if o.ttft then fixed[#fixed + 1] = policy.ttft(o.ttft) end
  if o.idle then fixed[#fixed + 1] = policy.idle(o.idle) end
  local user = o.policy
  if not user and #fixed == 0 then return function() return nil end end
  local static
  if type(user) ~= "function" then
    if user then fixed[#fixed + 1] = user end
    static = #fixed == 1 and fixed[1] or policy.any(fixed)
  end
  return function(req)
    if static then return static end
    local p = user(req)
    if p == nil then return #fixed > 0 and policy.any(fixed) or nil end
    local list = { p }
    for i = 1, #fixed do list[i + 1] = fixed[i] end
    return #list == 1 and p or policy.any(list)
  end
end

-- The custom_id goes to the server as X-Request-Id (vLLM and others log it,
-- and the mock's /stats shows it), unless it cannot be a header value.
local function request_headers(cid)
  if #cid <= 256 and not cid:find("[%z\1-\31\127]") then return { ["X-Request-Id"] = cid } end
end

-- Sends req until it succeeds or may not be retried; returns what record.line
-- takes, and the arrival times of its tokens.
local function process(req, o, eps, make_policy)
  local attempts, pol = 0, make_policy(req)
  req.headers = req.headers or request_headers(req.custom_id)
  req.tag = req.tag or (req.headers and req.custom_id)
  while true do
    attempts = attempts + 1
    local ep, gen = eps:take()
    local started, times = now(), {}
    local open = req.path == "/completions" and ep.client.complete or ep.client.chat
    local chat = open(ep.client, req.body, { stop_when = pol, usage = true, headers = req.headers,
                                             tag = req.tag })
    local ok, e = pcall(function()
      for _ in chat:deltas() do times[#times + 1] = now() end
    end)
    if not ok and type(e) == "table" and e.kind == "cancelled" then
      eps:give_back(ep, gen)
      error(e, 0)  -- this task is being cancelled (Ctrl-C, the run ending): not the request's failure
    end
    local res = chat:result()
    local ended = now()
    local tokens = res.metrics.tokens
    local err = res.error
    eps:give_back(ep, gen, err and endpoints.connection_error(err, tokens))
    if err and attempts <= o.retries and endpoints.retryable(err, tokens) then
      sleep(endpoints.backoff(attempts + 1, o.retry_base, err))
    else
      local out_tokens = res.usage and math.tointeger(res.usage.completion_tokens) or tokens
      local metrics, gaps, gap_sum
      if err then
        metrics = { e2e = stats.us(ended - started), output_tokens = tokens }
      else
        metrics, gaps, gap_sum = stats.request(started, ended, times, out_tokens)
      end
      return { req = req, res = res, attempts = attempts, metrics = metrics, endpoint = ep.url,
               request_id = chat:header("x-request-id") }, gaps, gap_sum
    end
  end
end

local function default_base()
  local b = os.getenv("OPENAI_BASE_URL")
  return (b and b ~= "") and b or "http://127.0.0.1:8000/v1"
end

-- batch.run{ input= | prompts= (with model=), output=, ... } -> summary, or
-- nil, message when the input or output cannot be used (a missing file,
-- duplicate custom_ids). Misuse raises. See `sluice batch --help`.
function batch.run(o)
  o = args.options("batch.run", 1, o, spec, 2)
  if not o.output then args.raise("batch.run", 1, "batch.run: option 'output' is required", 2) end
  if (o.input == nil) == (o.prompts == nil) then
    args.raise("batch.run", 1, "batch.run: give one of the options 'input' and 'prompts'", 2)
  end
  if o.prompts and not o.model then
    args.raise("batch.run", 1, "batch.run: option 'prompts' needs option 'model'", 2)
  end
  if o.trace then sluice.trace(o.trace) end
  o.concurrency = o.concurrency or 64
  o.retries = o.retries or 3
  o.retry_base = o.retry_base or 0.5
  local shard = o.shard
  if type(shard) == "string" then
    local k, n = shard:match("^(%d+)/(%d+)$")
    shard = { tonumber(k), tonumber(n) }
  end

  -- what is there already, then the input checked whole before anything is
  -- sent or any file made
  local st = output.scan(o.output)
  local done
  if o.redo_failed then
    done = function(cid) return not (cid and st.failed:has(cid)) end
  else
    done = function(cid, lineno)
      if cid then return st.done:has(cid) end
      return st.bad_lines[lineno] == true
    end
  end
  local reader, err = input.open { path = o.input or o.prompts, prompts = o.prompts ~= nil, model = o.model,
                                   shard = shard }
  if not reader then return nil, err end
  local total, skipped = reader:check(done)
  if not total then
    reader:close()
    return nil, skipped
  end
  local writer
  if o.redo_failed then
    writer = output.redo(o.output)
  else
    writer, err = output.open(o.output)
    if not writer then
      reader:close()
      return nil, "cannot write " .. o.output .. ": " .. tostring(err)
    end
  end

  local bases = o.base_url
  if type(bases) == "string" then bases = { bases } end
  bases = bases or { default_base() }
  local eps = endpoints.new(bases, { api_key = o.api_key, timeouts = o.timeouts, headers = o.headers,
                                     insecure = o.insecure, ca_file = o.ca_file, http2 = o.http2,
                                     confirm = o.confirm })
  local make_policy = policy_maker(o)
  local run = stats.run(total)
  run.skipped = skipped
  run.started = now()
  local redone = o.redo_failed and input.idset() or nil  -- the custom_ids redone, for finish()
  local tty = sluice.isatty(2)
  local show_progress = not o.quiet and (o.progress ~= false)

  local function write(r, gaps, gap_sum)
    local text, rec = record.line(r)
    writer:write(text)
    local cid = r.req and r.req.custom_id or r.custom_id
    if redone and cid then redone:add(cid) end
    local mt = r.req and r.req.body and (r.req.body.max_tokens or r.req.body.max_completion_tokens)
    run:add(rec, gaps, math.tointeger(mt), gap_sum)
    if o.on_result then o.on_result(rec) end
  end

  local function finish(interrupted)
    local summary = run:summary(now(), interrupted)
    if writer.finish then writer.finish(redone) else writer:close() end
    reader:close()
    if tty and show_progress then io.stderr:write("\r\27[K") end
    if not o.quiet then
      io.stderr:write(stats.format(summary), "\n")
      if interrupted then
        io.stderr:write(("interrupted: %d of %d requests have their record in %s; run the same command "
                         .. "again to resume\n"):format(run.done + run.skipped, run.total, o.output))
      end
    end
    if o.summary then
      local f = io.open(o.summary, "w")
      if f then
        f:write(require("cjson").encode(summary), "\n")
        f:close()
      end
    end
    return summary
  end

  -- Ctrl-C, a signal, or the script's end while this runs: what is finished
  -- is in the file; say so, and how to resume.
  local finished = false
  local guard <close> = setmetatable({}, { __close = function()
    if finished then return end
    finished = true
    local summary = finish(true)
    if o.on_interrupt then o.on_interrupt(summary) end
  end })

  -- pacing: --rate R requests a second, evenly or as Poisson arrivals
  local next_slot = now()
  local function pace()
    if not o.rate or o.rate == 0 or o.rate == math.huge then return end
    local slot = next_slot
    local gap = o.poisson and -math.log(1 - math.random()) / o.rate or 1 / o.rate
    next_slot = math.max(next_slot, now() - 1) + gap
    local wait = slot - now()
    if wait > 0 then sleep(wait) end
  end

  local next_request = reader:requests(done)
  local function worker()
    while true do
      local req, why, cid, lineno = next_request()
      if req == nil then return end
      if req == false then
        write { custom_id = cid, err = sluice.error("protocol", why), attempts = 0, line = lineno }
      else
        pace()
        run.in_flight = run.in_flight + 1
        local r, gaps, gap_sum = process(req, o, eps, make_policy)
        run.in_flight = run.in_flight - 1
        write(r, gaps, gap_sum)
      end
    end
  end

  local progress
  if show_progress then
    progress = sluice.spawn(function()
      local every = tty and 0.1 or 10
      while true do
        sleep(every)
        local line = run:progress(now())
        if tty then io.stderr:write("\r\27[K", line) else io.stderr:write(line, "\n") end
      end
    end)
  end
  local workers = {}
  for i = 1, math.min(o.concurrency, math.max(1, total - skipped)) do workers[i] = sluice.spawn(worker) end
  local failure
  for _, w in ipairs(workers) do
    local ok, e = w:join()
    if not ok and not failure then failure = e end
  end
  if progress then progress:cancel() progress:join() end
  if failure then error(failure, 0) end  -- the guard records the interruption
  finished = true
  return finish(false)
end

return batch
