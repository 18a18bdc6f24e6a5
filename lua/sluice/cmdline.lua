-- Command lines of sluice's subcommands (lua/sluice/cli/*.lua): each
-- argument in turn, "--flag=value" read as "--flag value", -h/--help
-- printing the usage; values checked as they are taken; a usage error is one
-- line on stderr and exit status 2.
--   local cl = require("sluice.cmdline").new("sluice batch", arg, USAGE)
--   for a in cl:each() do
--     if a == "-o" then o.output = cl:value(a) ... else cl:error("unknown option " .. a) end
--   end
local M = {}

local Cmdline = {}
Cmdline.__index = Cmdline

function M.new(name, argv, usage)
  local args = {}
  for i = 1, #argv do args[i] = argv[i] end
  return setmetatable({ name = name, args = args, i = 0, usage = usage }, Cmdline)
end

function Cmdline:error(msg)
  io.stderr:write(self.name, ": ", msg, " (", self.name, " --help)\n")
  os.exit(2)
end

-- The arguments one by one (-h and --help print the usage and exit 0).
function Cmdline:each()
  return function()
    self.i = self.i + 1
    local a = self.args[self.i]
    if a == nil then return nil end
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if flag then
      a = flag
      table.insert(self.args, self.i + 1, inline)
    end
    if a == "-h" or a == "--help" then
      io.write(self.usage)
      os.exit(0)
    end
    return a
  end
end

-- The value after flag.
function Cmdline:value(flag)
  local v = self.args[self.i + 1]
  if v == nil then self:error(flag .. " needs a value") end
  self.i = self.i + 1
  return v
end

function Cmdline:number(flag)
  local v = self:value(flag)
  local n = tonumber(v)
  if not n or n < 0 or n ~= n then self:error(flag .. " needs a non-negative number, got " .. v) end
  return n
end

function Cmdline:integer(flag, min)
  local v = self:value(flag)
  local n = math.tointeger(tonumber(v))
  if not n or n < (min or 0) then self:error(("%s needs a whole number of at least %d, got %s"):format(flag, min or 0, v)) end
  return n
end

-- flag's value, one of the strings in `allowed`.
function Cmdline:choice(flag, allowed)
  local v = self:value(flag)
  for _, x in ipairs(allowed) do if v == x then return v end end
  local list = #allowed > 1 and table.concat(allowed, ", ", 1, #allowed - 1) .. " or " .. allowed[#allowed] or allowed[1]
  self:error(("%s needs %s, got %s"):format(flag, list, v))
end

return M
