-- sluice batch's servers: one or more base URLs, each request sent to the one
-- with the fewest requests in flight. An endpoint whose connections fail is
-- set aside for a back-off period (1 s, doubling to 30 s while it keeps
-- failing) and the run goes on on the others; it is tried again after it.
-- The failures of requests sent together count once (a wave of 64 refused
-- connections is one failure, not 64). When every endpoint is set aside,
-- requests do not wait for one to come back: they go on trying at their own
-- back-off, so a dead server costs each request its retries, no more. And the
-- retry rules: connection errors, 429 and 5xx before any output arrived are
-- retried with exponential back-off and full jitter, honouring Retry-After;
-- nothing is retried once output has streamed.
local sluice = require "sluice"
local openai = require "sluice.openai"

local now = sluice.now
local random, min = math.random, math.min

local M = {}

local Set = {}
Set.__index = Set

-- base_urls: a list; client_opts: what each openai.client gets besides.
function M.new(base_urls, client_opts)
  local list = {}
  for i, url in ipairs(base_urls) do
    local o = { base_url = url }
    for k, v in pairs(client_opts or {}) do o[k] = v end
    local c = openai.client(o)
    list[i] = { url = c.base_url, client = c, in_flight = 0, down_until = 0, failures = 0, gen = 0 }
  end
  return setmetatable({ list = list, turn = 0 }, Set)
end

-- The endpoint for the next request, and its generation (for give_back):
-- the one with the fewest in flight among those not set aside; when all are,
-- the one that comes back first.
function Set:take()
  local t, best, soonest = now(), nil, nil
  local n = #self.list
  self.turn = self.turn % n + 1
  for k = 0, n - 1 do  -- starting from a turning point: ties go round
    local ep = self.list[(self.turn + k - 1) % n + 1]
    if ep.down_until <= t then
      if not best or ep.in_flight < best.in_flight then best = ep end
    elseif not soonest or ep.down_until < soonest.down_until then
      soonest = ep
    end
  end
  best = best or soonest
  best.in_flight = best.in_flight + 1
  return best, best.gen
end

-- A request sent to ep (of generation gen) is over; did it fail to connect?
function Set:give_back(ep, gen, connection_failed)
  ep.in_flight = ep.in_flight - 1
  if connection_failed then
    if gen == ep.gen then  -- the first failure since the endpoint was last set aside
      ep.gen = ep.gen + 1
      ep.failures = ep.failures + 1
      ep.down_until = now() + min(30, 2 ^ (ep.failures - 1))
    end
  else
    ep.failures = 0
  end
end

-- Did err (a failed result, `tokens` received) fail to connect at all?
function M.connection_error(err, tokens)
  if tokens > 0 then return false end
  if err.kind == "transport" then return true end
  return err.kind == "timeout" and (err.message or ""):find("connect", 1, true) ~= nil
end

-- May a request that failed with err, having received `tokens`, be sent
-- again? Connection errors, timeouts before the first byte, 429 and 5xx --
-- never once output streamed.
function M.retryable(err, tokens)
  if tokens > 0 or err.kind == "cancelled" then return false end
  if err.kind == "transport" or err.kind == "timeout" then return true end
  if err.kind == "http" then
    local st = err.status
    return st == 429 or (st ~= nil and st >= 500)
  end
  return false
end

-- Seconds to wait before attempt `attempt` (2, 3, ...): full jitter over an
-- exponential base, or the server's Retry-After when it asks for more.
function M.backoff(attempt, base, err)
  local cap = min(30, base * 2 ^ (attempt - 2))
  local wait = random() * cap
  if err and err.retry_after and err.retry_after > wait then wait = err.retry_after end
  return wait
end

return M
