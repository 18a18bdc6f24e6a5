-- sluice.openai's errors: what a server reported (an HTTP error, an error
-- inside a stream, a response that is not a stream) as error values whose
-- message reads once: tostring(err) is "http 503: server overloaded". And the
-- integers: Debian's lua-cjson decodes every number as a float; the layer
-- hands over integers where the JSON had them.
local sluice = require "sluice"

local decode = require("cjson.safe").decode
local redact = sluice.redact
local type, pairs, format = type, pairs, string.format
local tointeger = math.tointeger

local M = {}

function M.new(kind, message, extra)
  local e = sluice.error(kind, message)
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- A number that is integral as a Lua integer; anything else as it is.
local function int(v)
  if type(v) == "number" then return tointeger(v) or v end
  return v
end
M.int = int

-- t with every integral number (at any depth) an integer: usage counts and
-- their *_details. Changes t in place and returns it.
local function ints(t)
  for k, v in pairs(t) do
    local tv = type(v)
    if tv == "number" then
      local i = tointeger(v)
      if i then t[k] = i end
    elseif tv == "table" then
      ints(v)
    end
  end
  return t
end
M.ints = ints

local function str(v)
  if type(v) == "string" then return v end
  if type(v) == "number" then return format("%d", int(v) or v) end
end

-- Text from the server as it goes into an error, without the request's
-- secrets (nil: none, or the text came through the core, which has already
-- taken them out). The one place the Lua layer redacts: sluice.redact.
local function clean(text, secrets)
  if secrets and type(text) == "string" then return redact(text, secrets) end
  return text
end
M.clean = clean

-- A code as the server gave it (400 or "invalid_api_key"), nil otherwise.
local function scalar(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return int(v) end
end

-- The error object of an OpenAI-style error document, in its usual shapes:
-- {"error":{"message","type","code","param"}}, {"error":"text"},
-- {"object":"error","message",...} (vLLM), {"message":...}.
local function error_fields(doc)
  if type(doc) ~= "table" then return nil end
  local e = doc.error
  if type(e) == "table" then return e end
  if type(e) == "string" then return { message = e } end
  if doc.object == "error" or type(doc.message) == "string" then return doc end
end
M.fields = error_fields

-- Adds type, code, param (and request_id from the body when no header gave
-- one) of the error document doc to err.
local function add_fields(err, doc, secrets)
  local e = error_fields(doc)
  if not e then return err end
  err.type = err.type or clean(str(e.type), secrets)
  err.code = err.code or scalar(e.code)
  err.param = err.param or clean(str(e.param), secrets)
  if not err.request_id and type(doc) == "table" then
    local id = doc.request_id or doc.id
    if type(id) == "string" then err.request_id = clean(id, secrets) end
  end
  return err
end

-- An HTTP error of the core: its message ("http 503: <the server's>"),
-- status, body, retry_after and request_id are already right and clean;
-- the layer adds what the body's JSON says.
function M.http(err)
  return add_fields(err, decode(err.body or ""))
end

-- An HTTP error from a fetch's {status, body, headers} (client:models()),
-- read as the core reads a stream's: its message from sluice._error_summary,
-- Retry-After in either form.
function M.from_response(res, secrets)
  local msg = clean(sluice._error_summary(res.body), secrets)
  local err = M.new("http", msg ~= "" and format("http %d: %s", res.status, msg) or format("http %d", res.status),
                    { status = res.status, body = clean(res.body, secrets) })
  local h = res.headers or {}
  err.request_id = h["x-request-id"] or h["request-id"]
  err.retry_after = sluice._retry_after(h["retry-after"])
  return add_fields(err, decode(res.body or ""), secrets)
end

-- An error the server reported inside a 200 stream (an error chunk or an SSE
-- `event: error`): kind "http" like any error the server reports, with
-- in_stream = true, and status when the error carries an HTTP code. The
-- stream's data has not been through the core's redaction: secrets do it.
function M.in_stream(doc, data, how, secrets)
  local e = error_fields(doc)
  local body = clean(data, secrets)
  local msg = e and clean(str(e.message), secrets)
  if not msg or msg == "" then msg = body:gsub("%s+", " "):sub(1, 200) end
  local code = e and scalar(e.code)
  local status = math.type(code) == "integer" and code >= 100 and code <= 599 and code or nil
  return add_fields(M.new("http", format("http %s in the stream (%s): %s", status or "error", how, msg), {
    status = status, in_stream = true, body = body,
  }), doc, secrets)
end

-- A chunk that is not JSON.
function M.malformed(data, secrets)
  local body = clean(data, secrets)
  return M.new("protocol", "malformed chunk (not JSON): " .. body:gsub("%s+", " "):sub(1, 120), { body = body })
end

return M
