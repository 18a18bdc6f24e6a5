-- sluice.confirm: the server's own word that a stopped stream stopped. After
-- a stream ends without the server finishing it (a cancel, a policy, a
-- timeout, a failure), a task polls the server until it reports the request
-- gone, and records when: s:metrics().server_stopped_at, and a "confirm"
-- line in the trace -- so a script can say "the server stopped N ms after I
-- closed". Built in:
--   "sluice-mock"  its /stats: the request's record says when the mock saw the close (exact)
--   "llamacpp"     llama.cpp llama-server's /slots: the slot that served the request is no
--                  longer processing (/metrics llamacpp:requests_processing as a fallback)
--   "vllm"         /metrics: vllm:num_requests_running back to what it was before the request,
--                  or vllm:request_success_total{finished_reason="abort"} rising
-- or a function probe(ctx) -> server_stopped_at|nil, called every interval.
-- The polling is bounded (interval, give_up), runs in its own task, never
-- delays the close, and never holds the script's exit beyond give_up: while
-- the stream runs, the task waits in the background, and holds a watch, not
-- the stream (dropped, it is still closed by the garbage collector). The
-- llamacpp and vllm probes read their baseline (one GET) before the request
-- goes out, so that it does not count itself.
local sluice = require "sluice"

local decode = require("cjson.safe").decode
local now, sleep = sluice.now, sluice.sleep

local confirm = {}

local function get(url)
  local res = sluice.fetch { url = url, timeouts = { connect = 1, total = 2 } }
  if res and res.status == 200 then return res.body end
end

local function get_json(url)
  local body = get(url)
  return body and decode(body)
end

-- The sum of a Prometheus metric's samples whose labels contain `labels`
-- (a plain substring such as 'finished_reason="abort"'), or nil.
function confirm.metric(text, name, labels)
  local sum, found = 0, false
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, #name) == name and line:sub(1, 1) ~= "#" then
      local rest = line:sub(#name + 1)
      local lab, value = rest:match("^(%b{})%s+(%S+)")
      if not lab then value = rest:match("^%s+(%S+)") lab = "" end
      local v = tonumber(value)
      if v and (not labels or lab:find(labels, 1, true)) then
        sum = sum + v
        found = true
      end
    end
  end
  return found and sum or nil
end

local probes = {}

probes["sluice-mock"] = {
  poll = function(ctx)
    local st = get_json(ctx.root .. "/stats")
    if type(st) ~= "table" or type(st.requests) ~= "table" then return nil end
    for _, r in ipairs(st.requests) do
      if r.id == ctx.request_id then
        if r.client_closed and type(r.closed_at) == "number" then return r.closed_at end
        if r.completed then return type(r.last_token_at) == "number" and r.last_token_at or now() end
      end
    end
  end,
}

-- llama.cpp: the slots processing before the request are not ours; of those
-- processing once it ended, ours is among the new ones.
local function busy_slots(ctx)
  local slots = get_json(ctx.root .. "/slots")
  if type(slots) ~= "table" then return nil end
  local busy = {}
  for i, s in ipairs(slots) do
    if type(s) == "table" then
      local processing = s.is_processing
      if processing == nil then processing = s.state ~= nil and s.state ~= 0 end
      if processing then busy[s.id or (i - 1)] = true end
    end
  end
  return busy
end

probes.llamacpp = {
  before = function(ctx)
    ctx.busy_before = busy_slots(ctx)
    if not ctx.busy_before then
      local m = get(ctx.root .. "/metrics")
      ctx.processing_before = m and confirm.metric(m, "llamacpp:requests_processing")
    end
  end,
  poll = function(ctx)
    local busy = busy_slots(ctx)
    if busy then
      if not ctx.ours then  -- the first look after the end: which slots could be ours
        ctx.ours = {}
        for id in pairs(busy) do
          if not (ctx.busy_before or {})[id] then ctx.ours[id] = true end
        end
      end
      for id in pairs(ctx.ours) do
        if busy[id] then return nil end
      end
      return now()
    end
    local m = get(ctx.root .. "/metrics")
    local p = m and confirm.metric(m, "llamacpp:requests_processing")
    if p and p <= (ctx.processing_before or 0) then return now() end
  end,
}

probes.vllm = {
  before = function(ctx)
    local m = get(ctx.root .. "/metrics")
    if m then
      ctx.running_before = confirm.metric(m, "vllm:num_requests_running")
      ctx.aborts_before = confirm.metric(m, "vllm:request_success_total", 'finished_reason="abort"') or 0
    end
  end,
  poll = function(ctx)
    local m = get(ctx.root .. "/metrics")
    if not m then return nil end
    local aborts = confirm.metric(m, "vllm:request_success_total", 'finished_reason="abort"')
    if aborts and aborts > (ctx.aborts_before or 0) then return now() end
    local running = confirm.metric(m, "vllm:num_requests_running")
    if running and ctx.running_before and running <= ctx.running_before then return now() end
  end,
}

confirm.probes = probes

-- What a confirm option may be: a name above, a function, or
-- { how = one of those, interval = s, give_up = s }. Returns why not, or nil.
function confirm.kind(v)
  local how = type(v) == "table" and v.how or v
  if type(how) == "function" or (type(how) == "string" and probes[how]) then
    if type(v) == "table" then
      for k, x in pairs(v) do
        if k ~= "how" and k ~= "interval" and k ~= "give_up" then return "has an unknown key '" .. tostring(k) .. "'" end
        if k ~= "how" and (math.type(x) == nil or x ~= x or x <= 0 or x == math.huge) then
          return ("'%s' must be a positive number of seconds, got %s"):format(k, tostring(x))
        end
      end
    end
    return nil
  end
  return 'must be "sluice-mock", "llamacpp", "vllm", a function, or {how=, interval=, give_up=}'
end

-- The scheme://host:port of url.
local function root_of(url)
  return url:match("^(https?://[^/?#]+)") or url
end

-- Before a stream to url opens: what the server looks like without it (a
-- probe's `before`, one GET), so that the request is not counted in its own
-- baseline. Returns the watch's context.
function confirm.prepare(how, url, headers)
  local o = type(how) == "table" and how or { how = how }
  local ctx = { root = root_of(url), url = url, how = o.how, probe = probes[o.how] or { poll = o.how },
                interval = o.interval or 0.02, give_up = o.give_up or 5 }
  for k, v in pairs(headers or {}) do
    if type(k) == "string" and k:lower() == "x-request-id" then ctx.request_id = v end
  end
  if ctx.probe.before then ctx.probe.before(ctx) end
  return ctx
end

-- The watching task: holds the watch, never the stream, which a script may
-- still drop to the garbage collector.
local function watching(w, ctx)
  local state, ended, request_id = w:wait()  -- in the background until the end
  if state == "done" then return nil, "the server finished it" end
  ctx.request_id = ctx.request_id or request_id
  ctx.closed_at = ended
  local deadline = now() + ctx.give_up
  while now() < deadline do
    local at = ctx.probe.poll(ctx)
    if at then
      w:confirmed(at, type(ctx.how) == "string" and ctx.how or "function")
      return at
    end
    sleep(ctx.interval)
  end
  return nil, "gave up after " .. ctx.give_up .. " s"
end

-- Watches stream s (opened after confirm.prepare gave ctx) and confirms its
-- stop. Returns the task; its join gives server_stopped_at, or nil and why
-- (the server finished by itself; gave up).
function confirm.watch(s, ctx)
  return sluice.spawn(watching, s:_watch(), ctx)
end

return confirm
