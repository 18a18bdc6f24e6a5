-- sluice mock: run the bundled sluice-mock, an OpenAI-compatible server with no GPU
-- Runs in the foreground until Ctrl-C or a signal to sluice (the mock goes
-- with it: it is started with --exit-with-parent). Arguments go to
-- sluice-mock as they are; with no --port it listens on a free one and says
-- which. `sluice mock --help` lists its options.
local mock = require "sluice.mock"

local function quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local argv = { "exec", quote(mock.binary()) }
local has_port, help = false, false
for _, a in ipairs(arg) do
  if a == "--port" or a:match("^%-%-port=") then has_port = true end
  if a == "--help" or a == "-h" then help = true end
  argv[#argv + 1] = quote(a)
end
if not has_port and not help then argv[#argv + 1] = "--port 0" end
if not help then argv[#argv + 1] = "--exit-with-parent" end

-- exec: the mock is our own child, so it dies with us however we end
local out = assert(io.popen(table.concat(argv, " "), "r"))
while true do
  local line = out:read("l")  -- nil at the end, or when a signal interrupts the read
  if not line then break end
  io.write(line, "\n")
  io.flush()
end
local ok, how, code = out:close()
if ok then os.exit(0) end
os.exit(how == "signal" and 128 + code or code)
