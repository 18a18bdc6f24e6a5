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
-- openai.client

T.case("TLS off by accident: openai.client insecure='false'", function()
  for _, v in ipairs { "false", "no", "0", 0, "true" } do
    local err = argerror(function() openai.client { base_url = BASE, insecure = v } end,
                         "openai.client: option 'insecure' must be true or false, got " .. type(v),
                         "insecure = " .. tostring(v))
    T.contains(err, "bad argument #1 to 'openai.client' (openai.client: option 'insecure'", "the whole form")
  end
  argerror(function() openai.client { base_url = BASE, http2 = "true" } end,
           "openai.client: option 'http2' must be true or false, got string", "http2")
  -- booleans still work
  T.eq(client({ insecure = false, http2 = true }).transport.insecure, false, "insecure = false")
end)

T.case("unknown keys at every depth: openai.client", function()
  local err = argerror(function() openai.client { base_url = BASE, timeouts = { frist_byte = 1 } } end,
                       "openai.client: unknown option 'timeouts.frist_byte'", "timeouts.frist_byte")
  T.contains(err, "bad argument #1 to 'openai.client' (openai.client: unknown option 'timeouts.frist_byte')", "form")
  argerror(function() openai.client { base_url = BASE, insecur = true } end,
           "openai.client: unknown option 'insecur'", "top level")
  argerror(function() openai.client { base_url = BASE, [1] = "x" } end,
           "openai.client: option names are strings, got a number key", "a list item")
  argerror(function() openai.client { base_url = BASE, timeouts = { 5 } } end,
           "openai.client: option names are strings, got a number key in timeouts.", "nested list item")
end)

T.case("unknown keys at every depth: chat and complete options", function()
  local c = client()
  argerror(function() c:chat(BODY, { stopwhen = policy.max_tokens(1) }) end,
           "bad argument #2 to 'client:chat' (client:chat: unknown option 'stopwhen')", "chat")
  argerror(function() c:chat(BODY, { timeouts = { frist_byte = 1 } }) end,
           "client:chat: unknown option 'timeouts.frist_byte'", "chat timeouts")
  argerror(function() c:complete(BODY, { timeouts = { totl = 1 } }) end,
           "bad argument #2 to 'client:complete' (client:complete: unknown option 'timeouts.totl')", "complete")
  argerror(function() c:chat(BODY, { insecure = true }) end,
           "client:chat: unknown option 'insecure'", "a client option is not a request option")
end)

T.case("unknown keys at every depth: policy constructors", function()
  local p = policy.max_tokens(5)
  argerror(function() policy.stop_on("x", { trimm = true }) end,
           "bad argument #2 to 'policy.stop_on' (policy.stop_on: unknown option 'trimm')", "stop_on opts")
  argerror(function() policy.stop_on { "x", trimm = true } end,
           "bad argument #1 to 'policy.stop_on' (policy.stop_on: unknown option 'trimm')", "stop_on list")
  argerror(function() policy.match("x", { windwo = 3 }) end,
           "bad argument #2 to 'policy.match' (policy.match: unknown option 'windwo')", "match")
  argerror(function() policy.repetition { windwo = 3 } end,
           "bad argument #1 to 'policy.repetition' (policy.repetition: unknown option 'windwo')", "repetition")
  argerror(function() policy.any { p, frist = p } end, "policy.any: list must be a non-empty list of "
           .. "policies, got a string key 'frist'", "any")
  argerror(function() policy.all { p, [3] = p } end, "policy.all: list must be a non-empty list of "
           .. "policies, got a number key", "all with a hole")
end)

-- ---------------------------------------------------------------------------
-- Wrong types

T.case("wrong types: base_url = 42 is an argument error, not 'attempt to index a number value'", function()
  argerror(function() openai.client { base_url = 42 } end,
           "bad argument #1 to 'openai.client' (openai.client: option 'base_url' must be a string, got number)", "42")
  argerror(function() openai.client { base_url = "ftp://user:hunter2@example.com/v1" } end,
           "openai.client: option 'base_url' must be an http:// or https:// URL", "ftp", { "hunter2" })
  argerror(function() openai.client { base_url = "localhost:8000/v1" } end,
           "openai.client: option 'base_url' must be an http:// or https:// URL", "no scheme")
  argerror(function() openai.client { base_url = "http://h/v1\r\nX: y" } end,
           "openai.client: option 'base_url' must not contain control characters", "CR LF in the URL")
  argerror(function() openai.client "http://h/v1" end,
           "openai.client: options must be a table, got string", "not a table")
  argerror(function() openai.client { base_url = BASE, api_key = 42 } end,
           "openai.client: option 'api_key' must be a string, got number", "api_key")
  argerror(function() openai.client { base_url = BASE, model = {} } end,
           "openai.client: option 'model' must be a string, got table", "model")
  argerror(function() openai.client { base_url = BASE, ca_file = true } end,
           "openai.client: option 'ca_file' must be a string, got boolean", "ca_file")
  argerror(function() openai.client { base_url = BASE, proxy = "http://p\n" } end,
           "openai.client: option 'proxy' must not contain CR, LF or NUL", "proxy")
  argerror(function() openai.client { base_url = BASE, timeouts = 5 } end,
           "openai.client: option 'timeouts' must be a table, got number", "timeouts")
  argerror(function() openai.client { base_url = BASE, timeouts = { idle = "5" } } end,
           "openai.client: option 'timeouts.idle' must be a number of seconds (or false), got string", "idle")
  argerror(function() openai.client { base_url = BASE, headers = "X-A: 1" } end,
           "openai.client: option 'headers' must be a table, got string", "headers")
  argerror(function() openai.client { base_url = BASE, headers = { ["X A"] = "1" } } end,
           "openai.client: option 'headers' has a name that is not a token", "header name")
  argerror(function() openai.client { base_url = BASE, headers = { "x" } } end,
           "openai.client: option 'headers' must map names (strings) to values, got a number key", "header list")
  argerror(function() openai.client { base_url = BASE, headers = { ["X-A"] = true } } end,
           "openai.client: option 'headers' value of 'X-A' must be a string, got boolean", "header value")
  argerror(function() openai.client { base_url = BASE, headers = { ["X-A"] = "a\nX-Injected: 1" } } end,
           "openai.client: option 'headers' value of 'X-A' must not contain CR, LF or NUL", "header CR LF",
           { "X-Injected" })
end)

T.case("wrong types: chat and complete arguments", function()
  local c = client()
  argerror(function() c:chat("hello") end,
           "bad argument #1 to 'client:chat' (client:chat: body must be a table, got string)", "body")
  argerror(function() c:complete(nil) end, "client:complete: body is required", "no body")
  argerror(function() c:chat(BODY, "fast") end,
           "client:chat: options must be a table, got string", "opts")
  argerror(function() c.chat(BODY, {}) end,
           "bad argument #1 to 'client:chat' (sluice.openai.client expected, got table)", "self")
  argerror(function() c.models() end,
           "bad argument #1 to 'client:models' (sluice.openai.client expected, got nil)", "models self")
  argerror(function() c:chat(BODY, { stop_when = 20 }) end,
           "client:chat: option 'stop_when' must be a policy", "stop_when")
  argerror(function() c:chat(BODY, { stop_when = { reason = "x" } }) end,
           "client:chat: option 'stop_when' must be a policy", "stop_when table without check")
  argerror(function() c:chat(BODY, { usage = "yes" }) end,
           "client:chat: option 'usage' must be true, false or \"continuous\"", "usage")
  argerror(function() c:chat(BODY, { require_done = "false" }) end,
           "client:chat: option 'require_done' must be true or false, got string", "require_done")
  argerror(function() c:chat(BODY, { max_event_bytes = 0 }) end,
           "client:chat: option 'max_event_bytes' must be at least 1", "max_event_bytes 0")
  argerror(function() c:chat(BODY, { max_event_bytes = 1.5 }) end,
           "client:chat: option 'max_event_bytes' must be an integer, got a fraction", "max_event_bytes 1.5")
  argerror(function() c:chat(BODY, { headers = { ["X-A"] = "a\r\nb" } }) end,
           "client:chat: option 'headers' value of 'X-A' must not contain CR, LF or NUL", "headers")
  argerror(function() c:chat(BODY, { timeouts = { idle = -1 } }) end,
           "client:chat: option 'timeouts.idle' must not be negative", "timeouts")
  -- what is right still goes through, and a stream's cancel takes a string
  local chat = c:chat(BODY, { usage = "continuous", require_done = false, max_event_bytes = 4096.0,
                              timeouts = { idle = false, total = math.huge }, headers = { ["X-N"] = 7 },
                              stop_when = function() end })
  argerror(function() chat:cancel(5) end,
           "bad argument #1 to 'chat:cancel' (chat:cancel: reason must be a string, got number)", "cancel")
  T.eq(chat:result().error, nil, "a valid request runs")
end)

T.case("wrong types: policy constructors", function()
  argerror(function() policy.max_tokens("5") end,
           "bad argument #1 to 'policy.max_tokens' (policy.max_tokens: n must be an integer, got string)", "max_tokens")
  argerror(function() policy.max_tokens(-1) end, "policy.max_tokens: n must be at least 0", "negative")
  argerror(function() policy.max_chars(2.5) end, "policy.max_chars: n must be an integer, got a fraction",
           "max_chars")
  argerror(function() policy.max_chars() end, "policy.max_chars: n is required", "max_chars()")
  argerror(function() policy.stop_on(5) end,
           "policy.stop_on: strings must be a string or a list of strings, got number", "stop_on")
  argerror(function() policy.stop_on { "a", 5 } end, "policy.stop_on: strings[2] must be a string, got number",
           "stop_on item")
  argerror(function() policy.stop_on { "" } end, "policy.stop_on: strings[1] must not be empty", "empty")
  argerror(function() policy.stop_on {} end, "policy.stop_on: strings must hold at least one string", "none")
  argerror(function() policy.stop_on { "QED", trim = "yes" } end,
           "policy.stop_on: option 'trim' must be true or false, got string", "trim in the list")
  argerror(function() policy.stop_on("QED", { trim = 1 }) end,
           "policy.stop_on: option 'trim' must be true or false, got number", "trim in opts")
  argerror(function() policy.match(5) end, "policy.match: pattern must be a string, got number", "match")
  argerror(function() policy.match("") end, "policy.match: pattern must not be empty", "empty pattern")
  argerror(function() policy.match("x", { trim = "false" }) end,
           "policy.match: option 'trim' must be true or false, got string", "match trim")
  argerror(function() policy.match("x", { window = 0 }) end,
           "policy.match: option 'window' must be at least 1", "match window")
  argerror(function() policy.repetition { times = 1 } end,
           "policy.repetition: option 'times' must be at least 2", "times")
  argerror(function() policy.repetition { window = "3" } end,
           "policy.repetition: option 'window' must be an integer, got string", "window")
  argerror(function() policy.repetition { window = 2, min = 3 } end,
           "policy.repetition: option 'min' must not be greater than option 'window'", "min > window")
  argerror(function() policy.repetition(true) end,
           "policy.repetition: options must be a table, got boolean", "repetition(true)")
  argerror(function() policy.any {} end, "policy.any: list must be a non-empty list of policies", "any{}")
  argerror(function() policy.any(policy.max_tokens(1)) end,
           "policy.any: list must be a non-empty list of policies", "any(p) instead of any{p}")
  argerror(function() policy.all { policy.max_tokens(1), "QED" } end,
           "bad argument #1 to 'policy.all' (policy.all: list[2] must be a policy", "all")
  argerror(function() policy.start(42) end,
           "policy.start: p must be a policy (a sluice.policy value, a function or a table with a check "
           .. "function), got number", "start", { "42" })
  -- the trim flag still works both ways
  local _, trim = H.feed(policy.stop_on { "QED", trim = true }, { "a QED" })
  T.eq(trim, 3, "trim in the list")
  _, trim = H.feed(policy.stop_on("QED", { trim = false }), { "a QED" })
  T.eq(trim, nil, "trim = false")
end)

-- ---------------------------------------------------------------------------
-- Times

T.case("times: NaN and negative raise, huge means never, false means none", function()
  local nan = 0 / 0
  for _, name in ipairs { "deadline", "ttft", "idle" } do
    argerror(function() policy[name](nan) end,
             ("policy.%s: seconds must be a number of seconds, not NaN"):format(name),
             name .. "(NaN)")
    argerror(function() policy[name](-0.5) end, ("policy.%s: seconds must not be negative"):format(name),
             name .. "(-0.5)")
    argerror(function() policy[name]("1") end, ("policy.%s: seconds must be a number of seconds"):format(name),
             name .. "('1')")
    for _, huge in ipairs { math.huge, 1e300 } do
      local inst = policy.start(policy[name](huge))
      T.eq(inst.deadline, nil, name .. "(" .. huge .. "): no deadline to wake up for")
      local st = policy.state({ text = function() return "" end }, 0)
      st.now = 1e15
      T.eq(inst.check(inst, st), nil, name .. "(" .. huge .. ") never fires")
    end
  end
  argerror(function() openai.client { base_url = BASE, timeouts = { first_byte = nan } } end,
           "openai.client: option 'timeouts.first_byte' must be a number of seconds, not NaN", "client NaN")
  argerror(function() openai.client { base_url = BASE, timeouts = { connect = -1 } } end,
           "openai.client: option 'timeouts.connect' must not be negative", "client negative")
  argerror(function() client():chat(BODY, { timeouts = { total = nan } }) end,
           "client:chat: option 'timeouts.total' must be a number of seconds, not NaN", "chat NaN")
  -- huge and false: no limit; the request runs to its end
  local c = client { timeouts = { connect = false, first_byte = math.huge, idle = 1e300, total = false } }
  local chat = c:chat(BODY, { stop_when = policy.any { policy.deadline(math.huge), policy.idle(1e300) } })
  local res = chat:result()
  T.eq(res.error, nil, "no error")
  T.eq(res.finish_reason, "length", "ran to the end")
end)

-- ---------------------------------------------------------------------------
-- Secrets

T.case("header injection through api_key", function()
  for _, key in ipairs { "sk-SECRET-1\r\nX-Injected: 1", "sk-SECRET-2\n", "sk-SECRET-3\0tail" } do
    argerror(function() openai.client { base_url = BASE, api_key = key } end,
                         "bad argument #1 to 'openai.client' (openai.client: option 'api_key' must not contain CR, LF or NUL)",
                         ("api_key %q"):format(key), { "sk-SECRET", "X-Injected", "tail" })
  end
  -- the same through a header: named, never shown
  argerror(function() openai.client { base_url = BASE, headers = { Authorization = "Bearer sk-SECRET-4\r\n" } } end,
           "openai.client: option 'headers' value of 'Authorization' must not contain CR, LF or NUL",
           "Authorization", { "sk-SECRET" })
end)

-- A child sluice running code with env (and the mock's URL as URL); returns
-- its result, or nil, err (kind "timeout" when it hung and was killed after
-- 20 s).
local function child(code, env)
  local e = { URL = T.url }
  for _, k in ipairs { "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS" } do e[k] = os.getenv(k) end
  for k, v in pairs(env or {}) do e[k] = v end
  return sluice.exec({ os.getenv("SLUICE_BIN"), "-e", code }, { env = e, timeout = 20 })
end

T.case("keys and URLs from the environment are checked at openai.client", function()
  local code = [[require("sluice.openai").client()]]
  local r = assert(child(code, { OPENAI_BASE_URL = "localhost:8000/v1", OPENAI_API_KEY = "k" }))
  T.eq(r.code, 1, "status")
  T.contains(r.stderr, "(command line):1: openai.client: $OPENAI_BASE_URL must be an http:// or https:// URL",
             "base URL")
  r = assert(child(code, { OPENAI_BASE_URL = BASE, OPENAI_API_KEY = "sk-SECRET-ENV\nX-Injected: 1" }))
  T.eq(r.code, 1, "status")
  T.contains(r.stderr, "(command line):1: openai.client: $OPENAI_API_KEY must not contain CR, LF or NUL", "key")
  T.ok(not r.stderr:find("SECRET", 1, true), "the key is not shown")
  r = assert(child(code .. [[ print("ok")]], { OPENAI_BASE_URL = BASE .. "/", OPENAI_API_KEY = "k" }))
  T.eq(r.stdout, "ok\n", "a good environment still works: " .. r.stderr)
end)

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
  local prefixes = { "http 401: ", "http 500 in the stream (error chunk): ",
                     "http 500 in the stream (error event): " }
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
      T.eq(o.text, o.message, what .. ": tostring reads the message once")
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
  T.eq(err.message, "http 500 in the stream (error chunk): bad key [redacted]", "message")
  T.ok(not err.body:find(key, 1, true), "not in the body")
  local per_request = openai.client { base_url = BASE, api_key = "" }:chat(
    { model = "m", max_tokens = 10, messages = {},
      mock = { tokens_per_sec = 0, error_event = 2, error_message = "bad key " .. key } },
    { headers = { ["X-Api-Key"] = key } })
  T.eq(per_request:result().error.message, "http 500 in the stream (error event): bad key [redacted]",
       "a request's own header")
end)

T.done()
