-- Stop policies: when should a stream stop? A policy value is a description;
-- every stream gets a fresh instance of it (policy.start), so one value can
-- serve many streams at once and no per-stream state leaks between them.
--
-- An instance is a table with
--   check(self, state) -> reason | nil [, trim_at]   after each generated chunk,
--                                                   and when a deadline passes
--   deadline(self, state) -> time | nil              (optional) the sluice.now()
--                                                   time at which check may fire
--                                                   although nothing arrives
-- `state` (kept by the stream) has: text (the content so far, built on demand:
-- reading it on every chunk costs a copy of the whole text), delta (the
-- content piece just received; "" for reasoning, tool-call and usage chunks
-- and on a deadline wake-up), tokens (the server's continuous usage count when
-- it sends one, else one per generated chunk), chars, bytes, usage, now,
-- started, elapsed (since the request started), since_last (since the
-- previous generated chunk), first_at, last_at (times of the first and latest
-- generated chunk, false before), reasoning (built on demand). trim_at, when
-- given, is the byte position in the content where text() should be cut.
local args = require "sluice.args"

local policy = {}

local find, sub, format, concat = string.find, string.sub, string.format, table.concat
local type, pairs, mtype = type, pairs, math.type
local utf8len = utf8.len
local huge = math.huge
local raise, check, options = args.raise, args.check, args.options

local Policy = { __name = "sluice.policy" }
Policy.__index = Policy

-- A description whose start() calls new() for each stream.
local function define(name, new)
  return setmetatable({ name = name, new = new }, Policy)
end

function Policy:start()
  return self.new()
end

function Policy:__tostring()
  return "policy " .. self.name
end

-- A string in double quotes with control characters escaped, for reasons.
local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or format("\\x%02x", c:byte())
  end) .. '"'
end
policy.quote = quote

-- "2s", "0.5s", "1.25s"
local function seconds(s)
  return format("%gs", s)
end

-- Is p something policy.start takes?
local function is_policy(p)
  local t = type(p)
  if t == "function" then return true end
  return t == "table" and (type(p.start) == "function" or type(p.check) == "function")
end

-- The argument kind "a policy" (args.options), e.g. for stop_when.
function policy.kind(v)
  if not is_policy(v) then
    return "must be a policy (a sluice.policy value, a function or a table with a check "
           .. "function), got " .. type(v)
  end
end

-- policy.start(p) -> instance: p is a policy value, a function
-- fn(state) -> reason|nil, or a table with check (and optionally deadline and
-- start). Functions returning true (not a string) stop with reason "function".
function policy.start(p)
  check("policy.start", 1, "p", p, policy.kind, 2)
  if type(p) == "function" then
    return {
      check = function(_, state)
        local r = p(state)
        if r then return type(r) == "string" and r or "function" end
      end,
    }
  end
  if type(p.start) == "function" then return p:start() end
  return p
end

-- A policy that never fires (a time policy given no limit).
local never_inst = { check = function() end }
local function never(name)
  return define(name, function() return never_inst end)
end

-- A time argument: seconds >= 0; math.huge (or any huge number) means never.
local function time_arg(fname, s)
  s = args.seconds(fname, 1, s, 3)
  return s  -- not a tail call: the levels count this function
end

-- ---------------------------------------------------------------------------
-- Budgets

-- A budget: stops once state[field] reaches n. It keeps no state of its own,
-- so every stream shares the one instance.
local function budget(name, field, n)
  local reason = name .. ":" .. format("%d", n)
  local inst = { check = function(_, state)
    if state[field] >= n then return reason end
  end }
  return define(reason, function() return inst end)
end

-- max_tokens(n): the server's continuous usage count when it sends one, else
-- one token per generated chunk (content, reasoning or tool-call pieces).
function policy.max_tokens(n)
  check("policy.max_tokens", 1, "n", n, args.integer(0), 2)
  return budget("max_tokens", "tokens", n)
end

-- max_chars(n): characters (UTF-8 code points) of content.
function policy.max_chars(n)
  check("policy.max_chars", 1, "n", n, args.integer(0), 2)
  return budget("max_chars", "chars", n)
end

-- ---------------------------------------------------------------------------
-- Text

-- stop_on{"QED", "END", trim = true} or stop_on("QED"): plain strings, found
-- even when split across chunks. Only the last (longest - 1) bytes of what came
-- before are searched again with each new piece, never the whole text.
-- trim = true cuts text() before the match, like a server-side stop sequence.
function policy.stop_on(strings, opts)
  local F = "policy.stop_on"
  opts = options(F, 2, opts, { trim = "flag" }, 2)
  if type(strings) == "string" then strings = { strings } end
  if type(strings) ~= "table" then
    raise(F, 1, F .. ": strings must be a string or a list of strings, got " .. type(strings), 2)
  end
  local count = #strings
  local rest = {}  -- the options written into the list: trim
  for k, v in pairs(strings) do
    if not (mtype(k) == "integer" and k >= 1 and k <= count) then rest[k] = v end
  end
  options(F, 1, rest, { trim = "flag" }, 2)
  if count == 0 then raise(F, 1, F .. ": strings must hold at least one string", 2) end
  local trim = strings.trim or opts.trim or false
  local needles, reasons, longest = {}, {}, 0
  for i = 1, count do
    local s = strings[i]
    if type(s) ~= "string" then
      raise(F, 1, format("%s: strings[%d] must be a string, got %s", F, i, type(s)), 2)
    end
    if s == "" then raise(F, 1, format("%s: strings[%d] must not be empty", F, i), 2) end
    needles[i] = s
    reasons[i] = "stop_on:" .. quote(s)
    if #s > longest then longest = #s end
  end
  local keep = longest - 1
  local name = count == 1 and reasons[1] or "stop_on"
  return define(name, function()
    local carry = ""
    return { trim = trim, check = function(_, state)
      local d = state.delta
      if d == "" then return nil end
      local hay = carry .. d
      local best, which
      for i = 1, count do
        local a = find(hay, needles[i], 1, true)
        if a and (not best or a < best) then best, which = a, i end
      end
      if best then
        return reasons[which], trim and (state.bytes - #hay + best) or nil
      end
      if keep == 0 then carry = ""
      elseif #hay > keep then carry = sub(hay, -keep)
      else carry = hay end
    end }
  end)
end

-- match(pattern [, {window = 256, trim = false}]): a Lua pattern, searched in
-- the last `window` bytes of content plus the new piece (a match longer than
-- the window may be missed). A pattern anchored with ^ is tried only while the
-- text is shorter than the window.
function policy.match(pattern, opts)
  local F = "policy.match"
  check(F, 1, "pattern", pattern, "string", 2)
  if pattern == "" then raise(F, 1, F .. ": pattern must not be empty", 2) end
  opts = options(F, 2, opts, { window = args.integer(1), trim = "flag" }, 2)
  local window = opts.window or 256
  local trim = opts.trim or false
  local anchored = sub(pattern, 1, 1) == "^"
  local reason = "match:" .. pattern
  return define(reason, function()
    local carry = ""
    return { trim = trim, check = function(_, state)
      local d = state.delta
      if d == "" then return nil end
      if anchored and state.bytes - #d > window then return nil end
      local hay = carry .. d
      local a = find(hay, pattern)
      if a then
        return reason, trim and (state.bytes - #hay + a) or nil
      end
      if #hay > window then carry = sub(hay, -window) else carry = hay end
    end }
  end)
end

-- repetition{window = 20, times = 4, min = 1}: the text has fallen into a
-- loop: its last words are one n-gram of `min` to `window` WORDS (runs of
-- non-space characters, punctuation included) repeated `times` times in a
-- row. Work per new word is bounded by window * times comparisons.
function policy.repetition(opts)
  local F = "policy.repetition"
  opts = options(F, 1, opts, { window = args.integer(1), times = args.integer(2),
                               min = args.integer(1) }, 2)
  local window, times, min = opts.window or 20, opts.times or 4, opts.min or 1
  if min > window then
    raise(F, 1, F .. ": option 'min' must not be greater than option 'window'", 2)
  end
  local keep = window * times
  local name = format("repetition{window=%d,times=%d}", window, times)
  return define(name, function()
    local words, n, partial = {}, 0, ""

    -- Is the end of the word list one p-gram repeated `times` times?
    local function looping()
      for p = min, window do
        local span = p * times
        if span > n then return nil end
        local k, stop, same = n, n - span + p, true
        while k > stop do
          if words[k] ~= words[k - p] then same = false break end
          k = k - 1
        end
        if same then
          local gram = concat(words, " ", n - p + 1, n)
          if #gram > 60 then gram = sub(gram, 1, 57) .. "..." end
          return format("repetition:%sx%d", quote(gram), times)
        end
      end
    end

    local function push(w)
      n = n + 1
      words[n] = w
      words[n - keep] = nil
      return looping()
    end

    return { check = function(_, state)
      local d = state.delta
      if d == "" then return nil end
      local buf = partial .. d
      local pos, len = 1, #buf
      while true do
        local a, b = find(buf, "%S+", pos)
        if not a then partial = "" break end
        if b == len then  -- the word may go on in the next piece
          partial = sub(buf, a)
          if #partial > 256 then  -- no spaces (code, CJK): cut it into a word
            partial = ""
            local r = push(sub(buf, a))
            if r then return r end
          end
          break
        end
        local r = push(sub(buf, a, b))
        if r then return r end
        pos = b + 1
      end
    end }
  end)
end

-- ---------------------------------------------------------------------------
-- Time. Each reports a deadline, so the stream wakes up for it even while the
-- server sends nothing.

-- deadline(s): s seconds after the request started.
function policy.deadline(s)
  s = time_arg("policy.deadline", s)
  if s == huge then return never("deadline:never") end
  local reason = "deadline:" .. seconds(s)
  local inst = {
    check = function(_, state)
      if state.now - state.started >= s then return reason end
    end,
    deadline = function(_, state) return state.started + s end,
  }
  return define(reason, function() return inst end)
end

-- ttft(s): no generated token s seconds after the request started.
function policy.ttft(s)
  s = time_arg("policy.ttft", s)
  if s == huge then return never("ttft:never") end
  local reason = "ttft:" .. seconds(s)
  local inst = {
    check = function(_, state)
      if not state.first_at and state.now - state.started >= s then return reason end
    end,
    deadline = function(_, state)
      if not state.first_at then return state.started + s end
    end,
  }
  return define(reason, function() return inst end)
end

-- idle(s): no generated token for s seconds (counted from the request start
-- until the first one). Keep-alive comments such as `: ping` do not count.
function policy.idle(s)
  s = time_arg("policy.idle", s)
  if s == huge then return never("idle:never") end
  local reason = "idle:" .. seconds(s)
  local inst = {
    check = function(_, state)
      if state.now - (state.last_at or state.started) >= s then return reason end
    end,
    deadline = function(_, state) return (state.last_at or state.started) + s end,
  }
  return define(reason, function() return inst end)
end

-- ---------------------------------------------------------------------------
-- Combinators

-- Raises unless list is a non-empty list of policies (argument 1 of fname).
local function check_list(fname, list)
  local what = fname .. ": list must be a non-empty list of policies"
  if type(list) ~= "table" then raise(fname, 1, what .. ", got " .. type(list), 3) end
  local count = #list
  if count == 0 then raise(fname, 1, what, 3) end
  for k in pairs(list) do
    if not (mtype(k) == "integer" and k >= 1 and k <= count) then
      raise(fname, 1, format("%s, got a %s key%s", what, type(k),
                             type(k) == "string" and " '" .. k .. "'" or ""), 3)
    end
  end
  for i = 1, count do
    local why = policy.kind(list[i])
    if why then raise(fname, 1, format("%s: list[%d] %s", fname, i, why), 3) end
  end
end

local function start_all(list)
  local insts, timed, trim = {}, false, false
  for i, p in ipairs(list) do
    local inst = policy.start(p)
    insts[i] = inst
    timed = timed or inst.deadline ~= nil
    trim = trim or inst.trim
  end
  return insts, timed, trim
end

local function earliest(insts, state, skip)
  local best = huge
  for i = 1, #insts do
    local inst = insts[i]
    if inst.deadline and not (skip and skip[i]) then
      local d = inst.deadline(inst, state)
      if d and d < best then best = d end
    end
  end
  if best < huge then return best end
end

-- any{p1, p2, ...}: stops as soon as one of them does, with its reason.
function policy.any(list)
  check_list("policy.any", list)
  return define("any", function()
    local insts, timed, trim = start_all(list)
    local count = #insts
    local inst = { trim = trim, check = function(_, state)
      for i = 1, count do
        local p = insts[i]
        local r, t = p.check(p, state)
        if r then return r, t end
      end
    end }
    if timed then inst.deadline = function(_, state) return earliest(insts, state) end end
    return inst
  end)
end

-- all{p1, p2, ...}: stops once every one of them has fired (each is latched
-- when it fires); the reason lists theirs joined by " & ".
function policy.all(list)
  check_list("policy.all", list)
  return define("all", function()
    local insts, timed = start_all(list)
    local count, fired, reasons, nfired = #insts, {}, {}, 0
    local inst = { check = function(_, state)
      for i = 1, count do
        if not fired[i] then
          local p = insts[i]
          local r = p.check(p, state)
          if r then
            fired[i], reasons[i], nfired = true, r, nfired + 1
          end
        end
      end
      if nfired == count then return concat(reasons, " & ") end
    end }
    if timed then inst.deadline = function(_, state) return earliest(insts, state, fired) end end
    return inst
  end)
end

-- ---------------------------------------------------------------------------
-- The per-stream state the policies read. The stream owns it and updates it.

local State = {}
State.__index = function(state, k)
  if k == "text" then return state.stream:text() end
  if k == "reasoning" then return state.stream:reasoning() end
end

-- policy.state(stream, started) -> a state for one stream; stream has text()
-- and reasoning().
function policy.state(stream, started)
  return setmetatable({
    stream = stream, started = started, now = started, elapsed = 0, since_last = 0,
    delta = "", tokens = 0, chars = 0, bytes = 0, first_at = false, last_at = false,
    usage = nil,
  }, State)
end

-- Counts characters of a piece (bytes when it is not valid UTF-8 on its own).
function policy.chars(s)
  return utf8len(s) or #s
end

return policy
