-- sluice.openai's requests: what a client and its requests take (checked as
-- the core checks its own options), the default timeouts, the secrets to keep
-- out of errors, and the request itself.
local args = require "sluice.args"
local policy = require "sluice.policy"

local type, pairs = type, pairs

local M = {}

-- A client made with no timeouts must not wait forever: these hold unless
-- the client or the request says otherwise (false disables one). The first
-- byte may take long: a long prompt's prefill.
M.default_timeouts = { connect = 10, first_byte = 600, idle = 120 }

-- Connection options passed as they are to every request of a client.
M.transport_keys = { "insecure", "ca_file", "proxy", "http2" }

local timeouts_spec = { connect = "seconds", first_byte = "seconds", idle = "seconds", total = "seconds" }
local function confirm_kind(v) return require("sluice.confirm").kind(v) end

M.client_spec = {
  base_url = "url", api_key = "line", headers = "headers", timeouts = timeouts_spec, model = "string",
  insecure = "flag", ca_file = "string", proxy = "line", http2 = "flag", confirm = confirm_kind,
}
M.open_spec = {
  stop_when = policy.kind, require_done = "flag", continuous_usage = "flag",
  usage = function(v)
    if v ~= true and v ~= false and v ~= "continuous" then return 'must be true, false or "continuous"' end
  end,
  timeouts = timeouts_spec, headers = "headers", max_event_bytes = "count", tag = "line",
  confirm = confirm_kind,
}

-- Header values the core keeps out of its errors, and so do we: adds to list
-- the values of such headers and the token of "Bearer TOKEN".
local secret_headers = { authorization = true, ["proxy-authorization"] = true, ["x-api-key"] = true,
                         ["api-key"] = true, cookie = true }
function M.add_secrets(list, headers)
  for name, v in pairs(headers) do
    if secret_headers[name:lower()] and type(v) == "string" and v ~= "" then
      list[#list + 1] = v
      local sp = v:find(" ", 1, true)
      if sp and sp < #v then list[#list + 1] = v:sub(sp + 1) end
    end
  end
  return list
end

-- a with b's keys over it (either may be nil).
function M.merged(a, b)
  if not b then return a end
  if not a then return b end
  local t = {}
  for k, v in pairs(a) do t[k] = v end
  for k, v in pairs(b) do t[k] = v end
  return t
end

-- The secrets of a request: the client's, and those of its own headers.
function M.secrets(client, headers)
  if not headers then return client._secrets end
  local list = M.add_secrets({}, headers)
  if not list[1] then return client._secrets end
  for _, v in ipairs(client._secrets or {}) do list[#list + 1] = v end
  return list
end

-- The body as given, with stream = true (and the client's model, and
-- stream_options when usage is asked for).
function M.body(client, body, opts)
  local req = {}
  for k, v in pairs(body) do req[k] = v end
  req.stream = true
  if req.model == nil then req.model = client.model end
  if opts.usage or opts.continuous_usage then
    local so = {}
    if type(body.stream_options) == "table" then
      for k, v in pairs(body.stream_options) do so[k] = v end
    end
    so.include_usage = true
    if opts.usage == "continuous" or opts.continuous_usage then so.continuous_usage_stats = true end
    req.stream_options = so
  end
  return req
end

-- The core's options for a request of client to path.
function M.stream_opts(client, path, req, opts)
  local t = {
    url = client.base_url .. path, json = req,
    headers = M.merged(client._headers, opts.headers),
    timeouts = M.merged(client.timeouts, opts.timeouts),
    max_event_bytes = opts.max_event_bytes, tag = opts.tag,
  }
  local confirm = opts.confirm
  if confirm == nil then confirm = client.confirm end
  if confirm then t.confirm = confirm end
  for _, k in ipairs(M.transport_keys) do t[k] = client.transport[k] end
  return t
end

-- Checks what openai.client was given (o), with the environment's defaults;
-- returns the client's fields.
function M.client_fields(o, level)
  o = args.options("openai.client", 1, o, M.client_spec, level + 1)
  local base = o.base_url
  if base == nil then
    base = os.getenv("OPENAI_BASE_URL")
    if base == "" then base = nil end
    if base and args.kinds.url(base) then
      error("openai.client: $OPENAI_BASE_URL must be an http:// or https:// URL", level + 1)
    end
  end
  base = (base or "https://api.openai.com/v1"):gsub("/+$", "")
  local key = o.api_key
  if key == nil then
    key = os.getenv("OPENAI_API_KEY")
    if key and args.kinds.line(key) then
      error("openai.client: $OPENAI_API_KEY must not contain CR, LF or NUL", level + 1)
    end
  end
  local headers = {}
  for k, v in pairs(o.headers or {}) do headers[k] = v end
  if key and key ~= "" then headers.Authorization = "Bearer " .. key end
  local transport = {}
  for _, k in ipairs(M.transport_keys) do transport[k] = o[k] end
  local timeouts = {}
  for k, v in pairs(M.default_timeouts) do timeouts[k] = v end
  for k, v in pairs(o.timeouts or {}) do timeouts[k] = v end
  local secrets = M.add_secrets({}, headers)
  return { base_url = base, model = o.model, timeouts = timeouts, transport = transport, confirm = o.confirm,
           _headers = headers, _secrets = secrets[1] and secrets or nil }
end

return M
