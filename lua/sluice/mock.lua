-- sluice.mock: start the bundled sluice-mock server from a script, so examples
-- run without a GPU; and mock.setup, the examples' "use $OPENAI_BASE_URL if set,
-- else a mock" with a reader for the mock's /stats (what the server saw).
local sluice = require "sluice"
local cjson = require "cjson.safe"
local format = string.format

local mock = {}

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The sluice-mock binary: beside the running sluice, else $SLUICE_MOCK_BIN,
-- else whatever PATH finds.
function mock.binary()
  local exe = sluice.executable
  local dir = exe and exe:match("^(.*)/[^/]*$")
  if dir and exists(dir .. "/sluice-mock") then return dir .. "/sluice-mock" end
  local env = os.getenv("SLUICE_MOCK_BIN")
  if env and env ~= "" then return env end
  return "sluice-mock"
end

local function fetch_json(url, method)
  local res = sluice.fetch { url = url, method = method, timeouts = { connect = 2, total = 5 } }
  if not res or res.status ~= 200 then return nil end
  return cjson.decode(res.body)
end

-- Whether process pid (a child of ours, not reaped yet) is still running.
local function running(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  return stat ~= nil and not stat:match("^%d+ %b() [ZX]")
end

-- mock.start{tokens_per_sec=, ttft=, max_tokens=, model=, text_file=, ...}
-- -> server: starts sluice-mock on a free port (each option becomes
-- --option-name value, true a bare flag; cpu = N pins it to CPU N with
-- taskset). server.url is its base URL (".../v1"), server.root without;
-- server.pid, server.log_file, server.stats(), server.record(id),
-- server.reset(), server.log(), server.stop(). The mock is stopped by
-- server.stop(), when the handle is collected or the script ends; and, being
-- our direct child started with --exit-with-parent, when this process dies
-- however it dies (kill -9 included).
function mock.start(opts)
  local args = { "exec" }
  if opts and opts.cpu then args[#args + 1] = "taskset -c " .. math.tointeger(opts.cpu) end
  local tmp = os.tmpname()
  local url_file, log = tmp .. ".url", tmp .. ".log"
  args[#args + 1] = shell_quote(mock.binary())
  args[#args + 1] = "--port 0 --url-file " .. shell_quote(url_file) .. " --exit-with-parent"
  for k, v in pairs(opts or {}) do
    if k == "cpu" then  -- not a flag of the mock's
    elseif v == true then
      args[#args + 1] = "--" .. k:gsub("_", "-")
    elseif v ~= false then
      args[#args + 1] = "--" .. k:gsub("_", "-") .. " " .. shell_quote(v)
    end
  end
  -- The shell prints its pid and execs (taskset, which execs) the mock: the
  -- pid stays the mock's, and the mock is our child, so closing the popen
  -- handle reaps it.
  local cmd = ("echo $$; %s </dev/null >/dev/null 2>%s"):format(table.concat(args, " "),
                                                               shell_quote(log))
  local proc = io.popen(cmd, "r")
  if not proc then
    os.remove(tmp)
    error("cannot start sluice-mock", 2)
  end
  local pid = math.tointeger(tonumber(proc:read("l")))
  local server = { log_file = log, pid = pid }
  local stopped = false

  function server.stop()
    if stopped then return end
    stopped = true
    if pid and running(pid) then os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
    proc:close()  -- waits for the mock to exit
    for _, f in ipairs { tmp, url_file, url_file .. ".tmp", log } do os.remove(f) end
  end
  -- stops the mock when the handle is collected or the script ends
  server.sentinel = setmetatable({}, { __gc = server.stop })

  local deadline = sluice.now() + 5
  local root
  while pid do
    root = (read_file(url_file) or ""):match("^(http://%S+)\n")
    if root or not running(pid) or sluice.now() > deadline then break end
    sluice.sleep(0.01)
  end
  if not root then
    local why = read_file(log) or ""
    server.stop()
    error("sluice-mock did not start: " .. why, 2)
  end
  server.root = root
  server.url = root .. "/v1"

  function server.stats() return fetch_json(root .. "/stats") end
  function server.reset() return fetch_json(root .. "/stats/reset", "POST") end
  function server.record(id)
    local st = server.stats()
    for _, r in ipairs(st and st.requests or {}) do
      if r.id == id then return r end
    end
  end
  function server.log() return read_file(log) end
  return server
end

-- ---------------------------------------------------------------------------
-- For examples

-- Reads --model M (repeatable), --base-url URL and --key value flags.
local function parse_args(argv)
  local o, models, i = {}, {}, 1
  while argv and argv[i] do
    local a = argv[i]
    local k, v = a:match("^%-%-([%w_-]+)=(.*)$")
    if not k then
      k = a:match("^%-%-([%w_-]+)$")
      if k then
        v = argv[i + 1]
        i = i + 1
      end
    end
    if k then
      k = k:gsub("%-", "_")
      if k == "model" then models[#models + 1] = v else o[k] = v end
    end
    i = i + 1
  end
  o.models = models
  return o
end

-- mock.setup(arg, mock_opts) -> env: if $OPENAI_BASE_URL (or --base-url) is
-- set, a client for it, else a sluice-mock started with mock_opts. env has
-- client, model (--model, $OPENAI_MODEL, else the server's first model),
-- models (every --model given), options (other --flags), server (the mock we
-- started, or nil), is_mock (the server is a sluice-mock), request_id(name), record(id) (the mock's /stats record
-- once it saw the request end; nil when the server is not a sluice-mock) and
-- finish() (stops our mock).
function mock.setup(argv, mock_opts)
  local openai = require "sluice.openai"
  local o = parse_args(argv)
  local base = o.base_url or os.getenv("OPENAI_BASE_URL")
  local env = { options = o }
  if base and base ~= "" then
    env.client = openai.client { base_url = base }
  else
    env.server = mock.start(mock_opts)
    env.client = openai.client { base_url = env.server.url, api_key = "" }
  end
  local models = o.models
  if #models == 0 then
    local m = os.getenv("OPENAI_MODEL")
    if not m or m == "" then
      local ids = env.client:models()
      m = ids and ids[1] or "default"
    end
    models[1] = m
  end
  env.models, env.model = models, models[1]

  local root = env.client.base_url:gsub("/v1$", "")
  -- a sluice-mock answers /stats; examples then ask it for slow or odd behaviour
  local st = env.server and env.server.stats() or fetch_json(root .. "/stats")
  env.is_mock = type(st) == "table" and type(st.requests) == "table"
  local seq = 0
  function env.request_id(name)
    seq = seq + 1
    return ("%s-%d-%d"):format(name, os.time(), seq)
  end
  -- The sluice-mock's record of request id, waiting (up to 2 s) until it
  -- ended; nil against a server that has no /stats.
  function env.record(id)
    local deadline = sluice.now() + 2
    local rec
    repeat
      local st = fetch_json(root .. "/stats")
      if type(st) ~= "table" or type(st.requests) ~= "table" then return nil end
      rec = nil
      for _, r in ipairs(st.requests) do
        if r.id == id then rec = r end
      end
      if rec and (rec.client_closed or rec.completed or rec.aborted) then return rec end
      sluice.sleep(0.02)
    until sluice.now() > deadline
    return rec
  end
  -- Prints what the client got (res is a chat stream's result()) and, against
  -- a sluice-mock, what the server saw. Returns the mock's record or nil.
  function env.report(id, res, label)
    local m = res.metrics
    local how = res.stop_reason and ("stopped by " .. res.stop_reason)
                or res.error and ("failed: " .. tostring(res.error))
                or ("finished on its own (" .. tostring(res.finish_reason) .. ")")
    print(("[request %s] %sreceived %d tokens, %s"):format(id, label and (label .. ": ") or "",
                                                          m.tokens, how))
    local rec = env.record(id)
    if not rec then
      print("  (the server has no /stats: not a sluice-mock)")
    elseif rec.client_closed then
      local spared = rec.max_tokens and rec.max_tokens - rec.tokens_sent
      local latency = rec.closed_at and m.ended and rec.closed_at - m.ended
      print(("  server: generated %d tokens, %d after the stop; noticed the disconnect%s%s"):format(
        rec.tokens_sent, rec.tokens_sent - m.tokens,
        latency and (latency < 0.001 and format(" %.0f us after it", latency * 1e6)
                     or format(" %.1f ms after it", latency * 1000)) or "",
        spared and spared > 0 and format("; spared %d of max_tokens %d", spared, rec.max_tokens) or ""))
    else
      print(("  server: generated %d tokens, %s"):format(rec.tokens_sent,
            rec.completed and "completed the response" or "did not complete the response"))
    end
    return rec
  end
  function env.finish()
    if env.server then env.server.stop() end
  end
  return env
end

return mock
