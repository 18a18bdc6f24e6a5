-- sluice batch's figures: per-request serving metrics, with the definitions
-- of vLLM's benchmark_serving (TTFT: request start to first token; TPOT:
-- (E2E - TTFT) / (output tokens - 1); ITL: every gap between two tokens, pooled
-- over requests; E2E: request start to its end), and the run's summary:
-- outcomes, latency distributions (mean, median, p90, p99), throughput, and
-- the output tokens the policies saved. Distributions are kept as histograms
-- (2% buckets): memory stays the same however long the run.
local floor, log, exp, format = math.floor, math.log, math.exp, string.format
local gaps_of = require("sluice").gaps

local M = {}

-- ---------------------------------------------------------------------------
-- Exact statistics of one request's gaps (a few hundred values at most).

local function quantile_sorted(v, q)
  local n = #v
  if n == 0 then return nil end
  local i = math.max(1, math.min(n, math.ceil(q * n)))
  return v[i]
end

-- v rounded to the microsecond (what a record says; nil stays nil).
local function us(v) return v and floor(v * 1e6 + 0.5) / 1e6 end
M.us = us

-- The metrics of one finished request: started and ended (sluice.now()),
-- times (each token's arrival), tokens (output tokens). Returns them and the
-- gaps between tokens, sorted (what the run's ITL histogram takes).
function M.request(started, ended, times, tokens)
  local e2e = ended - started
  local m = { e2e = us(e2e), output_tokens = tokens }
  local n = #times
  if n == 0 then return m, nil end
  local ttft = times[1] - started
  m.ttft = us(ttft)
  if tokens > 1 then m.tpot = us((e2e - ttft) / (tokens - 1)) end
  if n < 2 then return m, nil end
  local gaps, sum = gaps_of(times)  -- sorted, in C
  m.itl = { mean = us(sum / (n - 1)), p50 = us(quantile_sorted(gaps, 0.5)), p99 = us(quantile_sorted(gaps, 0.99)) }
  return m, gaps, sum
end

-- ---------------------------------------------------------------------------
-- Histograms: bucket k holds values in [LOW * STEP^k, LOW * STEP^(k+1)).

local LOW, STEP = 1e-6, 1.02
local LOGSTEP = log(STEP)

local Hist = {}
Hist.__index = Hist

function M.hist()
  return setmetatable({ n = 0, sum = 0, min = nil, max = nil, buckets = {} }, Hist)
end

local INVSTEP, LOGLOW = 1 / LOGSTEP, log(LOW)

function Hist:add(v)
  if v == nil then return end
  self.n = self.n + 1
  self.sum = self.sum + v
  if not self.min or v < self.min then self.min = v end
  if not self.max or v > self.max then self.max = v end
  local k = v > LOW and floor((log(v) - LOGLOW) * INVSTEP) or 0
  self.buckets[k] = (self.buckets[k] or 0) + 1
end

-- Adds a sorted list whose sum is known (a request's token gaps): equal
-- neighbours (the same bucket, nearly always) cost no logarithm.
function Hist:add_sorted(list, sum)
  local n = #list
  if n == 0 then return end
  local b = self.buckets
  self.n = self.n + n
  self.sum = self.sum + sum
  if not self.min or list[1] < self.min then self.min = list[1] end
  if not self.max or list[n] > self.max then self.max = list[n] end
  local hi, k = -1, 0  -- values below hi share bucket k
  for i = 1, n do
    local v = list[i]
    if v >= hi then
      k = v > LOW and floor((log(v) - LOGLOW) * INVSTEP) or 0
      hi = v > LOW and exp(LOGLOW + (k + 1) * LOGSTEP) or LOW
    end
    b[k] = (b[k] or 0) + 1
  end
end

-- The value below which a fraction q of the values lie (within 1%).
function Hist:quantile(q)
  if self.n == 0 then return nil end
  local keys = {}
  for k in pairs(self.buckets) do keys[#keys + 1] = k end
  table.sort(keys)
  local want, seen = q * self.n, 0
  for _, k in ipairs(keys) do
    seen = seen + self.buckets[k]
    if seen >= want then
      local mid = LOW * exp((k + 0.5) * LOGSTEP)
      return math.max(self.min, math.min(self.max, mid))
    end
  end
  return self.max
end

function Hist:summary()
  if self.n == 0 then return nil end
  return { count = self.n, mean = self.sum / self.n, median = self:quantile(0.5), p90 = self:quantile(0.9),
           p99 = self:quantile(0.99), min = self.min, max = self.max }
end

-- ---------------------------------------------------------------------------
-- The run

local Run = {}
Run.__index = Run

function M.run(total)
  return setmetatable({
    total = total, done = 0, skipped = 0, in_flight = 0, started = nil,
    finished = 0, stopped = 0, failed = 0, retries = 0, output_tokens = 0,
    by_reason = {}, nreasons = 0, by_kind = {},
    saved = 0, saved_unknown = 0,
    ttft = M.hist(), tpot = M.hist(), itl = M.hist(), e2e = M.hist(),
  }, Run)
end

local MAX_REASONS = 20

-- Counts one record: outcome, tokens, latency (kept only for requests that
-- did not fail), and saved tokens (max_tokens - output over stopped ones);
-- gaps: its token gaps, sorted, and their sum (stats.request's).
function Run:add(rec, gaps, max_tokens, gap_sum)
  self.done = self.done + 1
  local sl = rec.sluice
  local m = sl.metrics or {}
  self.retries = self.retries + math.max(0, (sl.attempts or 1) - 1)
  self.output_tokens = self.output_tokens + (m.output_tokens or 0)
  if rec.error then
    self.failed = self.failed + 1
    local kind = sl.kind or "error"
    self.by_kind[kind] = (self.by_kind[kind] or 0) + 1
    return
  end
  if sl.stop_reason then
    self.stopped = self.stopped + 1
    local reason = sl.stop_reason
    if #reason > 60 then reason = reason:sub(1, 57) .. "..." end
    if not self.by_reason[reason] then
      if self.nreasons >= MAX_REASONS then reason = "other" else self.nreasons = self.nreasons + 1 end
    end
    self.by_reason[reason] = (self.by_reason[reason] or 0) + 1
    if math.type(max_tokens) == "integer" then
      self.saved = self.saved + math.max(0, max_tokens - (m.output_tokens or 0))
    else
      self.saved_unknown = self.saved_unknown + 1
    end
  else
    self.finished = self.finished + 1
  end
  self.ttft:add(m.ttft)
  self.tpot:add(m.tpot)
  self.e2e:add(m.e2e)
  if gaps then self.itl:add_sorted(gaps, gap_sum) end
end

local function duration(s)
  if not s or s ~= s or s == math.huge then return "?" end
  s = floor(s + 0.5)
  if s < 60 then return s .. "s" end
  if s < 3600 then return format("%dm%02ds", s // 60, s % 60) end
  return format("%dh%02dm", s // 3600, s % 3600 // 60)
end

-- The live progress line (without decoration).
function Run:progress(now)
  local elapsed = now - (self.started or now)
  local rate = elapsed > 0 and self.done / elapsed or 0
  local left = self.total - self.done - self.skipped
  local eta = rate > 0 and left / rate or nil
  return format("%d/%d done, %d in flight, %.1f req/s, %.0f tok/s, %d stopped early, %d errors, ETA %s",
                self.done + self.skipped, self.total, self.in_flight, rate,
                elapsed > 0 and self.output_tokens / elapsed or 0, self.stopped, self.failed,
                eta and duration(eta) or "?")
end

-- The summary as a table (what --summary writes).
function Run:summary(now, interrupted)
  local elapsed = now - (self.started or now)
  local reasons = {}
  for r, n in pairs(self.by_reason) do reasons[r] = n end
  local kinds = {}
  for k, n in pairs(self.by_kind) do kinds[k] = n end
  return {
    requests = self.done, skipped = self.skipped, total = self.total, interrupted = interrupted or false,
    seconds = elapsed, requests_per_second = elapsed > 0 and self.done / elapsed or nil,
    output_tokens = self.output_tokens,
    output_tokens_per_second = elapsed > 0 and self.output_tokens / elapsed or nil,
    outcomes = { finished = self.finished, stopped = self.stopped, failed = self.failed,
                 stopped_by = reasons, failed_by = kinds },
    retries = self.retries,
    tokens_saved = self.saved, tokens_saved_unknown = self.saved_unknown,
    ttft = self.ttft:summary(), tpot = self.tpot:summary(), itl = self.itl:summary(), e2e = self.e2e:summary(),
  }
end

local function ms(v) return v and format("%9.1f", v * 1000) or "        -" end

-- The summary for people: stderr at the end of a run.
function M.format(s)
  local out = {}
  local function line(...) out[#out + 1] = format(...) end
  line("sluice batch: %d requests in %.1f s (%.1f req/s), %d output tokens (%.0f tok/s)%s",
       s.requests, s.seconds, s.requests_per_second or 0, s.output_tokens, s.output_tokens_per_second or 0,
       s.skipped > 0 and format("; %d already done, skipped", s.skipped) or "")
  line("  finished by the server  %d", s.outcomes.finished)
  local reasons = {}
  for r in pairs(s.outcomes.stopped_by) do reasons[#reasons + 1] = r end
  table.sort(reasons)
  for _, r in ipairs(reasons) do  -- a reason's control characters shown, not acted on
    local shown = r:gsub("%c", function(c) return c == "\n" and "\\n" or format("\\%03d", c:byte()) end)
    line("  stopped by %-13s %d", shown, s.outcomes.stopped_by[r])
  end
  local kinds = {}
  for k in pairs(s.outcomes.failed_by) do kinds[#kinds + 1] = k end
  table.sort(kinds)
  for _, k in ipairs(kinds) do line("  failed (%s)%s %d", k, string.rep(" ", math.max(1, 15 - #k)), s.outcomes.failed_by[k]) end
  if s.retries > 0 then line("  retries                 %d", s.retries) end
  local rows = {}
  for _, k in ipairs { "ttft", "tpot", "itl", "e2e" } do
    local d = s[k]
    if d then rows[#rows + 1] = format("  %-6s     %s %s %s %s", k:upper(), ms(d.mean), ms(d.median), ms(d.p90), ms(d.p99)) end
  end
  if #rows > 0 then  -- none when this run sent nothing (all done before)
    line("  latency (ms)      mean    median       p90       p99")
    for _, r in ipairs(rows) do out[#out + 1] = r end
  end
  if s.outcomes.stopped > 0 then
    line("  output tokens saved by stops: %d%s", s.tokens_saved,
         s.tokens_saved_unknown > 0 and format(" (unknown for %d requests without max_tokens)", s.tokens_saved_unknown) or "")
  end
  return table.concat(out, "\n")
end

return M
