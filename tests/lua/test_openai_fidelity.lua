-- sluice.openai says exactly what the server sent, and never waits forever by
-- default. Each case is named for a bug found on an earlier main, against
-- the bundled mock (its n support, and its hand-written responses:
-- mock.raw_body, content_type, hold).
local sluice = require "sluice"
local cjson = require "cjson"
local openai = require "sluice.openai"
local policy = require "sluice.policy"
local T = require "testlib"

local BASE = T.url .. "/v1"
local function client(o)
  o = o or {}
  o.base_url, o.api_key = BASE, o.api_key or ""
  return openai.client(o)
end
local function body(mock, extra)
  local b = { model = "mock-model", messages = { { role = "user", content = "hi" } }, mock = mock }
  for k, v in pairs(extra or {}) do b[k] = v end
  return b
end

-- A hand-written SSE body: each chunk table encoded on a data: line, then [DONE].
local function sse(chunks, done)
  local out = {}
  for i, c in ipairs(chunks) do out[i] = "data: " .. cjson.encode(c) .. "\n\n" end
  if done ~= false then out[#out + 1] = "data: [DONE]\n\n" end
  return table.concat(out)
end

local function is_int(v) return math.type(v) == "integer" end

T.case("several choices (n > 1) are kept apart, not merged", function()
  local chat = client():chat(body({ tokens_per_sec = 0, choice_tokens = { 4, 6 } }, { n = 2, max_tokens = 5 }),
                             { usage = true })
  local pieces, events = {}, {}
  local evs = client():chat(body({ tokens_per_sec = 0, choice_tokens = { 4, 6 } }, { n = 2, max_tokens = 5 }))
  for ev in evs:events() do events[#events + 1] = ev end
  for piece in chat:deltas() do pieces[#pieces + 1] = piece end
  local res = chat:result()
  T.eq(#res.choices, 2, "two choices")
  T.eq(res.choices[1].index, 0, "choices[1] is index 0")
  T.eq(res.choices[2].index, 1, "choices[2] is index 1")
  T.ok(res.choices[1].text ~= res.choices[2].text, "texts apart: " .. res.choices[1].text .. " | " .. res.choices[2].text)
  T.eq(res.choices[1].finish_reason, "stop", "choice 0 ended by itself (4 tokens)")
  T.eq(res.choices[2].finish_reason, "length", "choice 1 ran into max_tokens")
  T.eq(res.text, res.choices[1].text, "result().text is the first choice's")
  T.eq(table.concat(pieces), res.choices[1].text, "deltas() yields the first choice only")
  T.eq(chat:text(), res.choices[1].text, "text() too")
  T.eq(res.finish_reason, "stop", "finish_reason is the first choice's")
  local by_index, finishes = { [0] = {}, [1] = {} }, {}
  for _, ev in ipairs(events) do
    T.ok(is_int(ev.index), ev.type .. " event carries an integer index")
    if ev.type == "content" then table.insert(by_index[ev.index], ev.text) end
    if ev.type == "finish" then finishes[ev.index] = ev.finish_reason end
  end
  T.eq(table.concat(by_index[0]), res.choices[1].text, "choice 0's events")
  T.eq(table.concat(by_index[1]), res.choices[2].text, "choice 1's events")
  T.eq(finishes[0], "stop", "choice 0's finish event")
  T.eq(finishes[1], "length", "choice 1's finish event")
  T.eq(res.usage.completion_tokens, 9, "usage counts every choice (4 + 5)")
end)

T.case("several choices: a policy sees every choice and stops the stream when it fires on any", function()
  -- choice i's text starts i words into the passage: choice 1 says each word
  -- one step before choice 0 does
  local probe = client():chat(body({ tokens_per_sec = 0 }, { n = 2, max_tokens = 6 })):result()
  local word = probe.choices[2].text:match("^%s*(%S+)%s+(%S+)"):gsub("%p", "")
  T.ok(#word > 0, "a word of choice 1")
  local id = "n2-policy-" .. os.time()
  local chat = client { headers = { ["X-Request-Id"] = id } }:chat(
    body({ tokens_per_sec = 100 }, { n = 2, max_tokens = 500 }), { stop_when = policy.stop_on(word) })
  local res = chat:result()
  T.contains(res.stop_reason or "", "stop_on", "stopped by the policy")
  T.contains(res.choices[2].text, word, "choice 1 said it")
  T.ok(res.choices[2].text ~= res.choices[1].text, "kept apart")
  T.wait_record(id, function(r) return r.client_closed end)
end)

T.case("integers are integers: usage, indices, created, status, error codes", function()
  local res = client():chat(body({ tokens_per_sec = 0 }, { max_tokens = 3 }), { usage = true }):result()
  for k, v in pairs(res.usage) do
    if type(v) == "number" then T.ok(is_int(v), "usage." .. k .. " is an integer: " .. tostring(v)) end
  end
  T.ok(is_int(res.created), "created")
  T.ok(is_int(res.choices[1].index), "index")
  T.ok(is_int(res.metrics.status), "status")
  local failed = client():chat(body({ tokens_per_sec = 0, error_after = 2 }, { max_tokens = 10 })):result()
  T.ok(failed.error, "an error chunk")
  T.ok(is_int(failed.error.code), "err.code is an integer: " .. tostring(failed.error.code))
  T.ok(is_int(failed.error.status), "err.status")
  local _, err = pcall(function()
    for _ in client():chat(body({ status = 503, error_body = '{"error":{"message":"busy","code":503}}' })):deltas() do end
  end)
  T.ok(is_int(err.code) and is_int(err.status), "an HTTP error's code and status")
end)

local CHUNKS = {
  { id = "chatcmpl-77", object = "chat.completion.chunk", created = 1700000000, model = "m-served",
    system_fingerprint = "fp_42", service_tier = "default",
    choices = { { index = 0, delta = { role = "assistant", content = "Hi" }, finish_reason = cjson.null,
                  logprobs = { content = { { token = "Hi", logprob = -0.25, bytes = { 72, 105 }, top_logprobs = {} } } } } } },
  { id = "chatcmpl-77", object = "chat.completion.chunk", created = 1700000000, model = "m-served",
    choices = { { index = 0, delta = { content = " there" }, finish_reason = "stop",
                  logprobs = { content = { { token = " there", logprob = -0.5, bytes = {}, top_logprobs = {} } } } } },
    usage = { prompt_tokens = 5, completion_tokens = 2, total_tokens = 7,
              completion_tokens_details = { reasoning_tokens = 0 } },
    x_vendor = { note = "kept in raw" } },
}

T.case("what the result holds: id, model, created, system_fingerprint, service_tier, logprobs, ev.raw", function()
  local res = client():chat(body({ raw_body = sse(CHUNKS) })):result()
  T.eq(res.error, nil, "no error")
  T.eq(res.text, "Hi there", "text")
  T.eq(res.id, "chatcmpl-77", "id")
  T.eq(res.model, "m-served", "model (the server's, not the request's)")
  T.eq(res.created, 1700000000, "created")
  T.ok(is_int(res.created), "created is an integer")
  T.eq(res.system_fingerprint, "fp_42", "system_fingerprint")
  T.eq(res.service_tier, "default", "service_tier")
  T.eq(#res.logprobs.content, 2, "a logprob per token")
  T.eq(res.logprobs.content[2].token, " there", "in order")
  T.eq(res.logprobs.content[1].logprob, -0.25, "the value")
  T.eq(res.choices[1].logprobs, res.logprobs, "and per choice")
  T.eq(res.usage.completion_tokens_details.reasoning_tokens, 0, "nested usage")
  T.ok(is_int(res.usage.completion_tokens_details.reasoning_tokens), "nested usage is an integer")
  local raws = 0
  for ev in client():chat(body({ raw_body = sse(CHUNKS) })):events() do
    T.ok(type(ev.raw) == "table", ev.type .. " event carries ev.raw")
    if ev.raw.x_vendor then raws = raws + 1 end
  end
  T.ok(raws > 0, "ev.raw has what the layer does not read")
end)

T.case("a response that is not a stream: JSON is the result, HTML a protocol error that says what came", function()
  local whole = { id = "chatcmpl-9", object = "chat.completion", created = 1700000001, model = "m",
                  choices = { { index = 0, finish_reason = "stop",
                                message = { role = "assistant", content = "All at once." } } },
                  usage = { prompt_tokens = 3, completion_tokens = 4, total_tokens = 7 } }
  local chat = client():chat(body({ raw_body = cjson.encode(whole), content_type = "application/json" }))
  local pieces = {}
  for p in chat:deltas() do pieces[#pieces + 1] = p end
  T.eq(#pieces, 1, "deltas() yields the text once")
  T.eq(pieces[1], "All at once.", "the text")
  local res = chat:result()
  T.eq(res.error, nil, "not an error")
  T.eq(res.finish_reason, "stop", "finish_reason")
  T.eq(res.usage.completion_tokens, 4, "usage")
  T.ok(is_int(res.usage.completion_tokens), "an integer")
  T.eq(res.id, "chatcmpl-9", "id")
  -- a proxy's page, which happens to echo the key
  local key = "sk-secret-abc123"
  local page = "<html><head><title>Login required</title></head><body>" .. string.rep("x", 400) ..
               " key=" .. key .. "</body></html>"
  local r2 = client { api_key = key }:chat(body({ raw_body = page, content_type = "text/html" })):result()
  T.ok(r2.error, "an error")
  T.eq(r2.error.kind, "protocol", "kind")
  T.contains(r2.error.message, "text/html", "names the content type")
  T.contains(r2.error.message, "<html><head><title>Login required", "and the first bytes")
  T.le(#r2.error.message, 300, "at most 200 of them")
  T.ok(not (r2.error.body or ""):find(key, 1, true), "the key is not in the body")
  T.ok(not r2.error.message:find("stream ended without", 1, true), "not 'stream ended without...'")
  -- the core says the same
  local s = sluice.stream { url = BASE .. "/chat/completions", json = body({ raw_body = page, content_type = "text/html" }) }
  local _, err = s:next()
  T.eq(err.kind, "protocol", "core: kind")
  T.eq(err.content_type, "text/html", "core: err.content_type")
end)

T.case("[DONE] then silence: the loop ends at once, not a second later", function()
  local id = "done-hold-" .. os.time()
  local chunks = { { choices = { { index = 0, delta = { content = "ok" }, finish_reason = "stop" } } } }
  local chat = client { headers = { ["X-Request-Id"] = id } }:chat(body({ raw_body = sse(chunks), hold = true }))
  for _ in chat:deltas() do end
  local ended = sluice.now()
  local res = chat:result()
  T.eq(res.error, nil, "no error")
  T.eq(res.stop_reason, nil, "the server finished: no stop_reason")
  T.eq(res.text, "ok", "text")
  T.eq(chat:state(), "done", "state")
  local rec = T.wait_record(id, function(r) return r.client_closed end)
  -- the mock holds the response open until the client closes: the loop could
  -- only end through [DONE] (the bound is loose; a 2-core machine is noisy)
  T.le(ended - rec.last_token_at, 0.5, "seconds from [DONE] written to the loop's end")
  print(("# [DONE] written -> the loop's end: %.2f ms (the issue's target: under 10 ms)"):format(
    (ended - rec.last_token_at) * 1000))
end)

T.case("errors read once: 'http 503: <message>', retry_after, request_id, type, code", function()
  local id = "err-once-" .. os.time()
  local doc = '{"error":{"message":"server overloaded, retry later","type":"overloaded_error","code":"busy","param":"model"}}'
  local _, err = pcall(function()
    for _ in client { headers = { ["X-Request-Id"] = id } }:chat(
      body({ status = 503, error_body = doc, retry_after = 7 })):deltas() do end
  end)
  T.eq(tostring(err), "http 503: server overloaded, retry later", "tostring")
  T.eq(err.retry_after, 7, "retry_after")
  T.ok(is_int(err.retry_after), "an integer")
  T.eq(err.request_id, id, "request_id")
  T.eq(err.type, "overloaded_error", "type")
  T.eq(err.code, "busy", "code")
  T.eq(err.param, "model", "param")
  -- the HTTP-date form
  local when = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 120)
  local r = client():chat(body({ status = 429, error_body = doc, retry_after = when })):result()
  T.ok(r.error.retry_after >= 115 and r.error.retry_after <= 121, "an HTTP-date in seconds: " .. tostring(r.error.retry_after))
  -- an HTML error page: its title, never the page
  local page = "<html><head><title>502 Bad Gateway</title></head><body>" .. string.rep("<p>noise</p>", 100) .. "</body></html>"
  local s = sluice.stream { url = BASE .. "/chat/completions", json = body({ status = 502, error_body = page }) }
  local _, e2 = s:next()
  T.eq(tostring(e2), "http 502: 502 Bad Gateway", "the core: the title")
  T.eq(e2.message, "http 502: 502 Bad Gateway", "message")
  local r3 = client():chat(body({ status = 502, error_body = page })):result()
  T.eq(tostring(r3.error), "http 502: 502 Bad Gateway", "the layer: the same")
end)

T.case("never wait forever by default: client timeouts, overridable and disableable", function()
  local c = client()
  T.eq(c.timeouts.connect, 10, "connect 10 s")
  T.eq(c.timeouts.first_byte, 600, "first byte 600 s")
  T.eq(c.timeouts.idle, 120, "idle 120 s")
  local c2 = client { timeouts = { idle = false, first_byte = 30 } }
  T.eq(c2.timeouts.idle, false, "disabled")
  T.eq(c2.timeouts.first_byte, 30, "overridden")
  T.eq(c2.timeouts.connect, 10, "the rest kept")
  -- a server that accepts and never writes a byte of the body
  local t0 = sluice.now()
  local r = client { timeouts = { first_byte = 0.3 } }:chat(body({ raw_body = "", hold = true })):result()
  T.eq(r.error and r.error.kind, "timeout", "a timeout")
  T.contains(r.error.message, "first byte", "naming the phase")
  T.le(sluice.now() - t0, 2, "well under the test's limit")
  -- per request, over the client's
  local r2 = client():chat(body({ raw_body = "", hold = true }), { timeouts = { first_byte = 0.2 } }):result()
  T.contains(r2.error.message, "first byte", "a request's own timeout")
  -- a server that listens and never accepts
  local server = require("sluice.mock").start { no_accept = true }
  local lazy = openai.client { base_url = server.url, api_key = "", timeouts = { connect = 0.3, first_byte = 0.3 } }
  local chats = {}
  for i = 1, 4 do chats[i] = lazy:chat(body({})) end
  for i = 1, 4 do
    local e = chats[i]:result().error
    T.eq(e and e.kind, "timeout", "never accepted: a timeout")
    T.ok(e.message:find("connect", 1, true) or e.message:find("first byte", 1, true), "naming the phase: " .. e.message)
  end
  chats = nil
  collectgarbage()
  server.stop()
end)

T.done()
