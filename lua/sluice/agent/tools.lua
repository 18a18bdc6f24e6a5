-- sluice.agent's tools: a tool is { name, description, parameters (a JSON
-- schema table), run = function(args, ctx), early = true|nil }. Each call runs
-- in its own task with its timeout; what a call returns (a string, or a value
-- encoded as JSON) or what went wrong (bad arguments, an error it raised, a
-- timeout) becomes the content of the `tool` message the model sees -- never
-- a crash of the loop. Cancelling a call cancels its task: its sluice.exec
-- children are killed and reaped, its sluice.fetch closed.
local sluice = require "sluice"
local cjson = require "cjson"
local args = require "sluice.args"

local decode = require("cjson.safe").decode
local ints = require("sluice.openai.errors").ints
local encode = cjson.encode
local null = cjson.null
local format = string.format

local M = {}

-- The request's "tools" field, in OpenAI's format.
function M.spec(tools)
  local out = {}
  for i, t in ipairs(tools) do
    out[i] = { type = "function", ["function"] = {
      name = t.name, description = t.description,
      parameters = t.parameters or { type = "object", properties = {} } } }
  end
  return out
end

-- The arguments of a call, decoded and checked against the schema's required
-- fields; or nil, what is wrong (said to the model).
function M.arguments(tool, text)
  local doc
  if type(text) == "table" then
    doc = text
  else
    if text == nil or text:match("^%s*$") then text = "{}" end
    doc = decode(text)
    if type(doc) ~= "table" then
      return nil, "the arguments are not valid JSON: " .. tostring(text):sub(1, 200)
    end
  end
  ints(doc)  -- 2, not 2.0, however the arguments came (a ReAct Action Input too)
  local params = tool.parameters
  local required = type(params) == "table" and params.required
  if type(required) == "table" then
    for _, name in ipairs(required) do
      if doc[name] == nil or doc[name] == null then
        return nil, format("missing the required argument %q", tostring(name))
      end
    end
  end
  return doc
end

-- What a tool's return value says to the model.
local function as_text(v)
  if v == nil then return "" end
  if type(v) == "string" then return v end
  local ok, s = pcall(encode, v)
  return ok and s or tostring(v)
end

-- Starts a call: returns its task, whose join gives ok (true when the tool
-- ran to its end), the content of the tool message, and the seconds it took.
-- Cancelling the task cancels the tool's own (its children killed, its
-- fetches closed). timeout: seconds, or nil for none.
function M.start(tool, text_args, ctx, timeout)
  return sluice.spawn(function()
    local t0 = sluice.now()
    local a, why = M.arguments(tool, text_args)
    if not a then return false, "error: " .. why, 0 end
    local runner = sluice.spawn(function() return tool.run(a, ctx) end)
    local sleeper = timeout and timeout < math.huge and sluice.spawn(sluice.sleep, timeout) or nil
    local guard <close> = setmetatable({}, { __close = function()  -- this call cancelled: the tool too
      runner:cancel("the tool call was cancelled")
      if sleeper then sleeper:cancel() end
    end })
    local i, ok, result = sluice.first(sleeper and { runner, sleeper } or { runner })
    local took = sluice.now() - t0
    if i == 2 then return false, format("error: %s ran out of time (%gs) and was stopped", tool.name, timeout), took end
    if not ok then
      local msg = type(result) == "table" and result.message or tostring(result)
      return false, "error: " .. tostring(msg), took
    end
    return true, as_text(result), took
  end)
end

-- ---------------------------------------------------------------------------
-- Built-in tools

-- Caps text at max bytes, saying so where the model can see it.
local function capped(text, max)
  if not max or #text <= max then return text end
  return text:sub(1, max) .. format("\n[truncated: %d more bytes not shown]", #text - max)
end

local exec_spec = { name = "string", description = "string", argv_prefix = "table", timeout = "seconds",
                    max_output = "count", shell = "flag", cwd = "string", env = "table", early = "flag" }

-- agent.tools.exec{ name=, argv_prefix = {"python3", "-c"}, timeout=,
-- max_output=, shell=, cwd=, env= }: a program the model runs. Without shell
-- the model gives `args` (a list of strings) appended to argv_prefix; with
-- shell = true, a `command` line for /bin/sh. The model sees the exit status
-- and the output, capped (and told so).
function M.exec(o)
  o = args.options("agent.tools.exec", 1, o, exec_spec, 2)
  if not o.name then args.raise("agent.tools.exec", 1, "agent.tools.exec: option 'name' is required", 2) end
  local max = o.max_output or 16384
  local params = o.shell and {
    type = "object", properties = { command = { type = "string", description = "a shell command line" } },
    required = { "command" } } or {
    type = "object", properties = { args = { type = "array", items = { type = "string" },
                                             description = "arguments" } },
    required = { "args" } }
  return {
    name = o.name, early = o.early,
    description = o.description or (o.shell and "Runs a shell command." or
                  ("Runs " .. table.concat(o.argv_prefix or {}, " ") .. " with the given arguments.")),
    parameters = params,
    run = function(a)
      local argv, opts = {}, { timeout = o.timeout, max_output = math.max(max * 4, 1 << 20), cwd = o.cwd, env = o.env }
      if o.shell then
        if type(a.command) ~= "string" then error("command must be a string", 0) end
        argv = a.command
        opts.shell = true
      else
        for _, v in ipairs(o.argv_prefix or {}) do argv[#argv + 1] = v end
        if type(a.args) ~= "table" then error("args must be a list of strings", 0) end
        for _, v in ipairs(a.args) do
          if type(v) ~= "string" then error("args must be a list of strings", 0) end
          argv[#argv + 1] = v
        end
        if #argv == 0 then error("nothing to run", 0) end
      end
      local r, err = sluice.exec(argv, opts)
      if not r then error(tostring(err), 0) end
      local status = r.code and ("exit status " .. r.code) or ("killed by signal " .. tostring(r.signal))
      local out = status .. "\n" .. capped(r.stdout, max)
      if r.stderr ~= "" then out = out .. "\n[stderr]\n" .. capped(r.stderr, max) end
      return out
    end,
  }
end

local fetch_spec = { name = "string", description = "string", base_url = "url", timeout = "seconds",
                     max_output = "count", headers = "headers", early = "flag" }

-- agent.tools.fetch{ name=, base_url=, timeout=, max_output=, headers= }: an
-- HTTP GET or POST under base_url (the model gives `path`, and `method` and
-- `body` for a POST). The model sees the status and the body, capped.
function M.fetch(o)
  o = args.options("agent.tools.fetch", 1, o, fetch_spec, 2)
  if not o.name or not o.base_url then
    args.raise("agent.tools.fetch", 1, "agent.tools.fetch: options 'name' and 'base_url' are required", 2)
  end
  local max = o.max_output or 16384
  local base = o.base_url:gsub("/+$", "")
  return {
    name = o.name, early = o.early,
    description = o.description or ("Fetches a path under " .. base .. "."),
    parameters = { type = "object", required = { "path" }, properties = {
      path = { type = "string", description = "the path, starting with /" },
      method = { type = "string", enum = { "GET", "POST" } },
      body = { type = "string", description = "the body of a POST" } } },
    run = function(a)
      if type(a.path) ~= "string" or a.path:find("[%c ]") then error("path must be a string without spaces", 0) end
      local path = a.path:sub(1, 1) == "/" and a.path or ("/" .. a.path)
      local method = a.method == "POST" and "POST" or "GET"
      local res, err = sluice.fetch { url = base .. path, method = method, headers = o.headers,
                                      body = method == "POST" and type(a.body) == "string" and a.body or nil,
                                      timeouts = o.timeout and { total = o.timeout } or nil }
      if not res then error(tostring(err), 0) end
      return ("status %d\n%s"):format(res.status, capped(res.body, max))
    end,
  }
end

return M
