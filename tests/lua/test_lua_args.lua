-- The Lua layer refuses bad input the way the core does: every public
-- function of sluice.openai and sluice.policy raises an argument error at the
-- caller's line, in the core's words, for an unknown option (at any depth), a
-- value of the wrong type, a flag that is not a boolean, a NaN or negative
-- time; a value is never echoed. And the API key never hangs an error path
-- nor reaches error text (one-pass redaction, sluice.redact).
local sluice = require "sluice"
local cjson = require "cjson"
local openai = require "sluice.openai"
local policy = require "sluice.policy"
local T = require "testlib"
local H = require "oai_helpers"

local BASE = T.url .. "/v1"
local HERE = "test_lua_args.lua:"

-- Runs fn (which makes one call that must raise); returns the message.
local function raises(fn, what)
  local ok, err = pcall(fn)
  T.ok(not ok, what .. ": raised")
  T.eq(type(err), "string", what .. ": an argument error is a message")
  return err
end

-- fn must raise an argument error at this file's line (not inside the
-- library) whose text holds `expected`, and none of `hidden`.
local function argerror(fn, expected, what, hidden)
  local err = raises(fn, what)
  T.contains(err, HERE, what .. ": at the caller's line")
  T.contains(err, "bad argument #", what)
  T.contains(err, expected, what)
  for _, h in ipairs(hidden or {}) do
    T.ok(not err:find(h, 1, true), what .. ": the value is not echoed: " .. err)
  end
  return err
end

local function client(opts)
  local o = { base_url = BASE, api_key = "" }
  for k, v in pairs(opts or {}) do o[k] = v end
  return openai.client(o)
end

local BODY = { model = "mock-model", messages = { { role = "user", content = "hi" } },
               mock = { tokens_per_sec = 0 }, max_tokens = 3 }

-- ---------------------------------------------------------------------------
-- Secrets

-- A child sluice running code with env (and the mock's URL as URL); returns
-- its result, or nil, err (kind "timeout" when it hung and was killed after
-- 20 s).
local function child(code, env)
  local e = { URL = T.url }
  for _, k in ipairs { "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS" } do e[k] = os.getenv(k) end
  for k, v in pairs(env or {}) do e[k] = v end
  return sluice.exec({ os.getenv("SLUICE_BIN"), "-e", code }, { env = e, timeout = 20 })
end

-- The child: for each way an error reaches the script (an HTTP error whose
-- body echoes the key; an error chunk and an SSE error event whose message
-- does), the error's message and body as JSON on stdout.
local ECHO = [=[
local openai, cjson = require "sluice.openai", require "cjson"
local key = os.getenv("KEY")
local client = openai.client { base_url = os.getenv("URL") .. "/v1", api_key = key }
local mocks = { { status = 401, error_body = '{"error":{"message":"bad key ' .. key .. '"}}' } }
if #key <= 1000 then  -- the mock's limit for error_message
  mocks[2] = { tokens_per_sec = 0, error_after = 2, error_message = "bad key " .. key }
  mocks[3] = { tokens_per_sec = 0, error_event = 2, error_message = "bad key " .. key }
end
local out = {}
for i, m in ipairs(mocks) do
  local chat = client:chat { model = "m", max_tokens = 10, messages = {}, mock = m }
  local ok, err = pcall(function() for _ in chat:deltas() do end end)
  local e = chat:result().error
  out[i] = { raised = not ok, same = err == e, message = e and e.message, body = e and e.body,
             text = tostring(err), type = e and e.type }
end
io.write(cjson.encode(out))
]=]

T.case("a short API key hangs every error path", function()
  local keys = { "e", "ab", ("k"):rep(10000), "red", "[redacted]", "redacted", "%", ".", "[", "%d.[x]*",
                 "sk-%.*?[]^$()" }
  local tasks = {}
  for i, key in ipairs(keys) do
    tasks[i] = sluice.spawn(child, ECHO, { KEY = key })
  end
  local prefixes = { "http 401: ", "server error in the stream (error chunk): ",
                     "server error in the stream (error event): " }
  for i, r in ipairs(sluice.all(tasks)) do
    local key = keys[i]
    local name = #key > 20 and ("a key of %d characters"):format(#key) or ("key %q"):format(key)
    local res, err = r[2], r[3]
    T.ok(res, ("%s: the error never arrived (%s): the redaction never ended"):format(name, tostring(err)))
    T.eq(res.code, 0, name .. ": status; stderr: " .. res.stderr)
    local out = cjson.decode(res.stdout)
    T.eq(#out, #key <= 1000 and 3 or 1, name .. ": every error path tried")
    for j, o in ipairs(out) do
      local what = name .. ", " .. prefixes[j]
      T.ok(o.raised and o.same, what .. ": raised, and kept in result().error")
      T.eq(o.message:sub(1, #prefixes[j]), prefixes[j], what .. ": message")
      T.eq(o.text, "http: " .. o.message, what .. ": tostring")
      -- our own words may hold a one-letter key; what the server said may not
      local said = o.message:sub(#prefixes[j] + 1)
      for field, text in pairs { message = said, body = o.body, type = o.type } do
        if text ~= cjson.null then
          T.ok(not text:gsub("%[redacted%]", ""):find(key, 1, true),
               what .. ": no key in the " .. field .. ": " .. text:sub(1, 200))
        end
      end
      T.contains(o.body, "[redacted]", what .. ": the body is kept, redacted")
    end
  end
end)

T.case("the key never reaches errors: also through a header the script set", function()
  -- Azure OpenAI's "api-key" header instead of Authorization
  local key = "azure-SECRET-0123456789"
  local c = openai.client { base_url = BASE, api_key = "", headers = { ["api-key"] = key } }
  local chat = c:chat { model = "m", max_tokens = 10, messages = {},
                        mock = { tokens_per_sec = 0, error_after = 2, error_message = "bad key " .. key } }
  local _, err = pcall(function() for _ in chat:deltas() do end end)
  T.eq(err.kind, "http", "kind")
  T.eq(err.message, "server error in the stream (error chunk): bad key [redacted]", "message")
  T.ok(not err.body:find(key, 1, true), "not in the body")
  local per_request = openai.client { base_url = BASE, api_key = "" }:chat(
    { model = "m", max_tokens = 10, messages = {},
      mock = { tokens_per_sec = 0, error_event = 2, error_message = "bad key " .. key } },
    { headers = { ["X-Api-Key"] = key } })
  T.eq(per_request:result().error.message, "server error in the stream (error event): bad key [redacted]",
       "a request's own header")
end)

T.done()
