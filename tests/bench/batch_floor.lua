-- The batch scenario's floor: BASE_URL INPUT CONCURRENCY. Sends the requests
-- of an OpenAI Batch file (the same bytes on the wire as `sluice batch`:
-- the body, stream_options.include_usage, X-Request-Id) with client:chat in
-- CONCURRENCY tasks, reads every delta and the result, and writes nothing:
-- what any sluice script pays for the requests themselves. Prints
-- {completed=, failed=}; the driver measures its CPU and memory from outside.
local sluice = require "sluice"
local cjson = require "cjson"
local openai = require "sluice.openai"

local base, path, concurrency = arg[1], arg[2], tonumber(arg[3])
local client = openai.client { base_url = base, api_key = "" }
local file = assert(io.open(path, "rb"))
local completed, failed, first_err = 0, 0, nil

local function worker()
  for line in file:lines() do  -- the tasks share the file: each line read once
    local req = cjson.decode(line)
    local chat = client:chat(req.body, { usage = true, headers = { ["X-Request-Id"] = req.custom_id } })
    for _ in chat:deltas() do end
    local err = chat:result().error
    if err then
      failed = failed + 1
      first_err = first_err or tostring(err)
    else
      completed = completed + 1
    end
  end
end

local tasks = {}
for i = 1, concurrency do tasks[i] = sluice.spawn(worker) end
for _, t in ipairs(tasks) do assert(t:join()) end
file:close()
print(cjson.encode { completed = completed, failed = failed, note = first_err })
