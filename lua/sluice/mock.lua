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

-- Flags every example takes, after its own.
local common_flags = {
  { "model", "M", "the model (default: $OPENAI_MODEL, else the server's first)", many = true },
  { "base-url", "URL", "an OpenAI-compatible server, written like OPENAI_BASE_URL\n" ..
                       "(http://host:port/v1); default: $OPENAI_BASE_URL, else a\n" ..
                       "sluice-mock started for the run" },
}

-- The one-line synopsis: "sluice PROGRAM [--flag V] ... [--help]".
local function synopsis(prog, flags)
  local parts = { "sluice " .. prog }
  for _, f in ipairs(flags) do
    parts[#parts + 1] = ("[--%s %s]"):format(f[1], f[2])
  end
  parts[#parts + 1] = "[--help]"
  return table.concat(parts, " ")
end

local function help_text(prog, spec, flags)
  local out = { "usage: " .. synopsis(prog, flags) }
  if spec.about then out[#out + 1] = spec.about end
  out[#out + 1] = "Runs against $OPENAI_BASE_URL (and $OPENAI_API_KEY), else against a sluice-mock it starts."
  local width = 0
  for _, f in ipairs(flags) do width = math.max(width, #f[1] + #f[2] + 3) end
  for _, f in ipairs(flags) do
    local head = ("--%s %s"):format(f[1], f[2])
    local lines = {}
    for l in (f[3] .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
    out[#out + 1] = ("  %-" .. width .. "s  %s"):format(head, lines[1])
    for i = 2, #lines do out[#out + 1] = (" "):rep(width + 4) .. lines[i] end
  end
  out[#out + 1] = ("  %-" .. width .. "s  %s"):format("--help", "this text")
  return table.concat(out, "\n") .. "\n"
end

-- Reads argv against flags ({ name, value name, help, many=, number= }):
-- --name VALUE or --name=VALUE. Returns the options (names with "_" for "-";
-- a `many` flag's values in a list), or nil and what is wrong; "help" when
-- asked for it.
local function parse_args(argv, flags)
  local known = {}
  for _, f in ipairs(flags) do known[f[1]] = f end
  local o, i = {}, 1
  for _, f in ipairs(flags) do
    if f.many then o[f[1]:gsub("%-", "_")] = {} end
  end
  while argv and argv[i] ~= nil do
    local a = argv[i]
    if a == "--help" or a == "-h" then return nil, "help" end
    local name, v = a:match("^%-%-([%w_-]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w_-]+)$") end
    local f = name and known[name]
    if not f then
      if a:sub(1, 1) == "-" then return nil, ("unknown option '%s'"):format(a) end
      return nil, ("unexpected argument '%s'"):format(a)
    end
    if not v then
      i = i + 1
      v = argv[i]
      if v == nil then return nil, ("option '--%s' needs a value (%s)"):format(name, f[2]) end
    end
    if f.number then
      local n = tonumber(v)
      if not n then return nil, ("option '--%s' must be a number, got '%s'"):format(name, v) end
      v = n
    end
    local key = name:gsub("%-", "_")
    if f.many then
      local list = o[key]
      list[#list + 1] = v
    else
      o[key] = v
    end
    i = i + 1
  end
  return o
end

-- mock.setup(arg, spec) -> env: the command line and the server of an
-- example. spec = { about = "what the example shows, one line",
--   flags = { { "name", "VALUE", "help", number = true }, ... } (besides
--   --model M, repeatable, and --base-url URL, which every example takes),
--   mock = { mock.start options } }.
-- `--help` prints the usage and exits 0; an unknown flag, a missing value or
-- a stray argument prints a one-line usage error and exits 2; both before
-- anything starts. Then: if $OPENAI_BASE_URL (or --base-url) is set, a client
-- for it, else a sluice-mock started with spec.mock. env has client, model
-- (--model, $OPENAI_MODEL, else the server's first model), models (every
-- --model given), options (the other flags, "-" read as "_"), server (the
-- mock we started, or nil), is_mock (the server is a sluice-mock),
-- request_id(name), record(id), report(id, res, label) and finish() (stops
-- our mock).
function mock.setup(argv, spec)
  spec = spec or {}
  local flags = {}
  for _, f in ipairs(spec.flags or {}) do flags[#flags + 1] = f end
  for _, f in ipairs(common_flags) do flags[#flags + 1] = f end
  local prog = argv and argv[0] or "example.lua"
  local o, why = parse_args(argv, flags)
  if why == "help" then
    io.stdout:write(help_text(prog, spec, flags))
    io.stdout:flush()
    os.exit(0)
  elseif not o then
    io.stderr:write(("%s: %s; usage: %s\n"):format(prog, why, synopsis(prog, flags)))
    os.exit(2)
  end

  local openai = require "sluice.openai"
  local base = o.base_url or os.getenv("OPENAI_BASE_URL")
  local env = { options = o }
  if base and base ~= "" then
    env.client = openai.client { base_url = base }
  else
    env.server = mock.start(spec.mock)
    env.client = openai.client { base_url = env.server.url, api_key = "" }
  end
  local models = o.model
  o.model = nil
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
  local function stats()
    local st = fetch_json(root .. "/stats")
    if type(st) == "table" and type(st.requests) == "table" then return st end
  end
  env.is_mock = stats() ~= nil
  local seq = 0
  function env.request_id(name)
    seq = seq + 1
    return ("%s-%d-%d"):format(name, os.time(), seq)
  end
  -- The sluice-mock's record of request id, waiting (up to 2 s) until it
  -- ended. nil against a server that has no /stats; false when the mock
  -- never received the request.
  function env.record(id)
    if not env.is_mock then return nil end
    local deadline = sluice.now() + 2
    local rec
    repeat
      local st = stats()
      if not st then return nil end
      rec = nil
      for _, r in ipairs(st.requests) do
        if r.id == id then rec = r end
      end
      if rec and (rec.client_closed or rec.completed or rec.aborted) then return rec end
      sluice.sleep(0.02)
    until sluice.now() > deadline
    return rec or false
  end
  -- Prints what the client got (res is a chat stream's result()) and, against
  -- a sluice-mock, what the server saw. Returns the mock's record, false when
  -- the mock never received the request, nil against another server.
  function env.report(id, res, label)
    local m = res.metrics
    local how = res.stop_reason and ("stopped by " .. res.stop_reason)
                or res.error and ("failed: " .. tostring(res.error))
                or ("finished on its own (" .. tostring(res.finish_reason) .. ")")
    print(("[request %s] %sreceived %d tokens, %s"):format(id, label and (label .. ": ") or "",
                                                          m.tokens, how))
    -- A request stopped before it was connected never reached the server.
    local rec = (m.connected or not res.stop_reason) and env.record(id) or (env.is_mock and false)
    if rec == nil then
      print("  (the server has no /stats: not a sluice-mock, so what it generated is not known here)")
    elseif rec == false then
      print("  server: never received the request (stopped before it was sent): generated nothing")
    elseif rec.client_closed then
      -- "After the stop": sent after sluice closed the connection, from the
      -- send times of the mock's last tokens (its clock is sluice.now()'s,
      -- CLOCK_MONOTONIC). The rest of what sluice did not read was already
      -- on its way when the script stopped.
      local unread = rec.tokens_sent - m.tokens
      local after = unread
      if m.ended and type(rec.recent_token_at) == "table" then
        after = 0
        for _, t in ipairs(rec.recent_token_at) do
          if t > m.ended then after = after + 1 end
        end
      end
      local spared = rec.max_tokens and rec.max_tokens - rec.tokens_sent
      print(("  server: generated %d tokens, %d after the stop%s%s"):format(
        rec.tokens_sent, after,
        unread > after and format(" (%d more were on their way, unread)", unread - after) or "",
        spared and spared > 0 and format("; spared %d of max_tokens %d", spared, rec.max_tokens) or ""))
      -- sluice's close time and the mock's notice time: two processes, one clock
      local gap = rec.closed_at and m.ended and rec.closed_at - m.ended
      if gap then
        print(("  disconnect: the server noticed it %s after sluice closed the connection"
               .. " (sluice's time and the mock's, one monotonic clock)"):format(
          gap < 0.001 and format("%.0f us", gap * 1e6) or format("%.1f ms", gap * 1000)))
      end
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
