-- The sluice module: the C primitives of sluice.core, plus what is written in Lua.
local sluice = require "sluice.core"

local pack, unpack = table.pack, table.unpack

-- sluice.all(tasks) -> list: waits for every task; list[i] = table.pack(tasks[i]:join())
function sluice.all(tasks)
  local results = {}
  for i, t in ipairs(tasks) do
    results[i] = pack(t:join())
  end
  return results
end

-- sluice.first(tasks) -> i, ok, ...: the first task to finish and its join
-- results; the others are cancelled (their streams closed at once).
function sluice.first(tasks)
  local i = sluice._wait_any(tasks)
  local r = pack(tasks[i]:join())
  for j, t in ipairs(tasks) do
    if j ~= i then t:cancel("another task finished first") end
  end
  return i, unpack(r, 1, r.n)
end

-- Waiting inside a plain coroutine (a generator over a stream, say): the
-- wait yields sluice._wait; these pass it up to the task (through any number
-- of nested coroutines) and resume the inner coroutine when the task is woken.
do
  local WAIT = sluice._wait
  local create, status, close = coroutine.create, coroutine.status, coroutine.close
  local raw_resume, raw_yield = coroutine.resume, coroutine.yield

  local function pass_waits(co, r)
    while r[1] and r.n == 2 and r[2] == WAIT and status(co) == "suspended" do
      raw_yield(WAIT)
      r = pack(raw_resume(co))
    end
    return r
  end

  function coroutine.resume(co, ...)
    local r = pass_waits(co, pack(raw_resume(co, ...)))
    return unpack(r, 1, r.n)
  end

  function coroutine.wrap(f)
    local co = create(f)
    return function(...)
      local r = pass_waits(co, pack(raw_resume(co, ...)))
      if r[1] then return unpack(r, 2, r.n) end
      if status(co) == "dead" then close(co) end
      error(r[2], 2)
    end
  end
end

-- sluice.stream{..., confirm = how}: after a stop, ask the server when it
-- actually stopped (sluice.confirm); the core never sees the option.
do
  local raw_stream = sluice.stream
  function sluice.stream(opts)
    if type(opts) == "table" and opts.confirm ~= nil then
      local confirm = require "sluice.confirm"
      local why = confirm.kind(opts.confirm)
      if why then require("sluice.args").raise("sluice.stream", 1, "sluice.stream: option 'confirm' " .. why, 2) end
      local copy = {}
      for k, v in pairs(opts) do
        if k ~= "confirm" then copy[k] = v end
      end
      local ctx = type(copy.url) == "string" and confirm.prepare(opts.confirm, copy.url, copy.headers)
      local s = raw_stream(copy)
      confirm.watch(s, ctx)
      return s
    end
    return raw_stream(opts)
  end
end

return sluice
