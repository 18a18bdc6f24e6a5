-- sluice mock: run the bundled sluice-mock, an OpenAI-compatible server with no GPU
-- Runs in the foreground until Ctrl-C or a signal to sluice, which kills and
-- reaps it (it is a sluice.exec child). Arguments go to sluice-mock as they
-- are; with no --port it listens on a free one and says which. `sluice mock
-- --help` lists its options.
local sluice = require "sluice"
local mock = require "sluice.mock"

local argv = { mock.binary() }
local has_port, help = false, false
for _, a in ipairs(arg) do
  if a == "--port" or a:match("^%-%-port=") then has_port = true end
  if a == "--help" or a == "-h" then help = true end
  argv[#argv + 1] = a
end
if not has_port and not help then
  argv[#argv + 1] = "--port"
  argv[#argv + 1] = "0"
end
local r, err = sluice.exec(argv, { stdout = "inherit", stderr = "inherit" })
if not r then
  io.stderr:write("sluice mock: ", tostring(err), "\n")
  os.exit(1)
end
os.exit(r.code or 128 + r.signal)
