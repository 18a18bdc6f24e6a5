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

return sluice
