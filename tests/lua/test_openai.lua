-- sluice.openai against sluice-mock: text, typed events, tool calls, usage,
-- every way a server reports trouble, and every way a script stops a stream.
local sluice = require "sluice"
local cjson = require "cjson"
local openai = require "sluice.openai"
local policy = require "sluice.policy"
local T = require "testlib"
local H = require "oai_helpers"

local FAST = { tokens_per_sec = 0 }
local PACE = { tokens_per_sec = 100 }

-- ---------------------------------------------------------------------------
-- Reading

T.case("deltas, text and result of a complete stream", function()
  local chat, id = H.chat(FAST, nil, { max_tokens = 12 })
  local pieces = H.drain(chat)
  T.eq(#pieces, 12, "pieces")
  T.eq(chat:text(), table.concat(pieces), "text")
  local res = chat:result()
  T.eq(res.text, table.concat(pieces), "result text")
  T.eq(res.finish_reason, "length", "finish_reason")
  T.eq(res.stop_reason, nil, "no stop_reason")
  T.eq(res.error, nil, "no error")
  T.eq(res.metrics.tokens, 12, "metrics tokens")
  T.eq(res.metrics.state, "done", "core state")
  T.ok(res.metrics.ttft and res.metrics.ttft >= 0, "ttft")
  T.eq(#res.tool_calls, 0, "no tool calls")
  local rec = T.wait_record(id, function(r) return r.completed end)
  T.eq(rec.tokens_sent, 12, "server tokens")
  T.ok(res.text:find("^The old mill"), "the mock's passage")
end)

T.case("result() alone reads the whole stream", function()
  local chat = H.chat(FAST, nil, { max_tokens = 30 })
  local res = chat:result()
  T.eq(res.metrics.tokens, 30, "tokens")
  T.eq(res.finish_reason, "length", "finish")
  T.eq(chat:result().text, res.text, "result() again")
end)

T.case("typed events: reasoning, content, usage, finish", function()
  local chat = H.chat({ tokens_per_sec = 0, reasoning = "Let me think about it." },
                      { usage = true }, { max_tokens = 5 })
  local kinds, reasoning, content = {}, {}, {}
  for ev in chat:events() do
    kinds[#kinds + 1] = ev.type
    if ev.type == "reasoning" then reasoning[#reasoning + 1] = ev.text end
    if ev.type == "content" then content[#content + 1] = ev.text end
    if ev.type == "usage" then T.eq(ev.usage.completion_tokens, chat:metrics().tokens, "usage count") end
    if ev.type == "finish" then T.eq(ev.finish_reason, "length", "finish_reason") end
  end
  T.eq(table.concat(reasoning), "Let me think about it.", "reasoning")
  T.eq(#content, 5, "content events")
  T.eq(kinds[1], "reasoning", "reasoning first")
  T.eq(kinds[#kinds - 1], "finish", "then finish")
  T.eq(kinds[#kinds], "usage", "then usage")
  local res = chat:result()
  T.eq(res.reasoning, "Let me think about it.", "result reasoning")
  T.eq(res.usage.completion_tokens, res.metrics.tokens, "usage in result")
  T.eq(res.text, table.concat(content), "text")
end)

T.case("deltas() hands out only content, with or without a policy", function()
  for _, opts in ipairs { {}, { stop_when = policy.max_tokens(100), usage = "continuous" } } do
    local chat = H.chat({ tokens_per_sec = 0, reasoning = "a b c",
                          tool_calls = { { name = "f", arguments = "{}" } } }, opts, { max_tokens = 3 })
    local pieces = H.drain(chat)
    for _, p in ipairs(pieces) do T.ok(type(p) == "string" and p ~= "", "a non-empty piece") end
    T.eq(chat:result().reasoning, "a b c", "reasoning kept")
    T.eq(#chat:result().tool_calls, 1, "tool call kept")
  end
end)

T.case("tool calls are assembled from fragments, each emitted once whole", function()
  local calls = {
    { name = "get_weather", arguments = cjson.encode { city = "Paris", unit = "celsius" } },
    { name = "search", arguments = '{"query": "sluice gates \\u00e9t\\u00e9", "limit": 10}' },
  }
  local chat = H.chat({ tokens_per_sec = 0, tool_calls = calls })
  local seen = {}
  for ev in chat:events() do
    if ev.type == "tool_call" then seen[#seen + 1] = ev end
    if ev.type == "finish" then T.eq(#seen, 2, "both calls emitted before finish") end
  end
  T.eq(#seen, 2, "two calls")
  T.eq(seen[1].name, "get_weather", "name 1")
  T.eq(seen[1].arguments, calls[1].arguments, "arguments 1 whole")
  T.eq(seen[1].args.city, "Paris", "decoded arguments")
  T.eq(seen[2].name, "search", "name 2")
  T.eq(seen[2].arguments, calls[2].arguments, "arguments 2 whole")
  T.eq(seen[2].call_index, 1, "the call's index")
  T.eq(seen[2].index, 0, "the choice's index")
  T.ok(seen[1].id and seen[1].id ~= seen[2].id, "ids")
  local res = chat:result()
  T.eq(res.finish_reason, "tool_calls", "finish_reason")
  T.eq(#res.tool_calls, 2, "result tool_calls")
  T.eq(res.tool_calls[2]["function"].arguments, calls[2].arguments, "message-shaped calls")
  T.eq(res.tool_calls[1].type, "function", "type")
end)

T.case("/completions streams text", function()
  local chat = H.client():complete({ model = "mock-model", prompt = "Once", max_tokens = 7,
                                     mock = FAST })
  local n = 0
  for _ in chat:deltas() do n = n + 1 end
  T.eq(n, 7, "pieces")
  T.eq(chat:result().finish_reason, "length", "finish")
end)

T.case("tolerates pings, usage-only chunks, role-only chunks and nulls", function()
  local chat = H.chat({ tokens_per_sec = 100, ping_interval = 0.005 }, { usage = "continuous" },
                      { max_tokens = 20 })
  local pieces = H.drain(chat)
  local res = chat:result()
  T.eq(#pieces, 20, "pieces")
  T.eq(res.error, nil, "no error")
  T.eq(res.usage.completion_tokens, 20, "final usage")
  -- nulls and odd shapes straight into the decoder
  local chunk = require "sluice.openai.chunk"
  local doc = chunk.decode(
    '{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":null},"finish_reason":null}],"usage":null}')
  local c, r, tc, f, lp = chunk.choice(doc.choices[1])
  T.ok(c == nil and r == nil and f == nil and tc == nil and lp == nil, "all null")
  doc = chunk.decode('{"choices":[],"usage":{"completion_tokens":3}}')
  T.ok(#doc.choices == 0 and doc.usage.completion_tokens == 3, "usage only")
  c, r = chunk.choice(chunk.decode('{"choices":[{"delta":{"reasoning":"hm"}}]}').choices[1])
  T.eq(r, "hm", "delta.reasoning")
  local nothing, e = chunk.decode("not json")
  T.ok(nothing == nil and e == false, "not JSON")
  nothing, e = chunk.decode('{"error":{"message":"no"}}')
  T.ok(nothing == nil and e.error.message == "no", "an error document")
end)

-- ---------------------------------------------------------------------------
-- Failures: raised from the iterators, kept in result().error

local function expect_failure(mock, kind, needle, body, opts)
  local chat, id = H.chat(mock, opts, body or { max_tokens = 50 })
  local pieces, err = H.drain(chat)
  T.ok(err, "the iterator raised")
  T.eq(err.kind, kind, "kind")
  T.contains(tostring(err), needle, "message")
  local res = chat:result()
  T.eq(res.error, err, "result().error")
  T.eq(res.stop_reason, nil, "a failure is not a stop")
  return err, pieces, id, res
end

T.case("HTTP errors keep the server's message, type and code", function()
  local body = cjson.encode { error = { message = "The model `x` does not exist.", type = "NotFoundError",
                                        code = 404, param = "model" } }
  local err = expect_failure({ status = 404, error_body = body }, "http", "does not exist")
  T.eq(err.status, 404, "status")
  T.eq(err.type, "NotFoundError", "type")
  T.eq(err.code, 404, "code")
  T.eq(err.param, "model", "param")
  T.contains(err.message, "http 404", "status in the message")
  err = expect_failure({ status = 503 }, "http", "503")
  T.eq(err.status, 503, "status")
  err = expect_failure({ status = 500, error_body = '{"object":"error","message":"vllm says no","type":"BadRequestError","code":400}' },
                       "http", "vllm says no")
  T.eq(err.type, "BadRequestError", "vLLM's flat error shape")
  err = expect_failure({ status = 502, error_body = "<html>bad gateway</html>" }, "http", "bad gateway")
end)

T.case("an error chunk after HTTP 200", function()
  local err, pieces, id = expect_failure({ tokens_per_sec = 0, error_after = 5 }, "http", "mock error after 5")
  T.eq(#pieces, 5, "content before the error")
  T.eq(err.type, "internal_error", "type")
  T.eq(err.code, 500, "code")
  T.eq(err.status, 500, "status from the error's code")
  T.eq(err.in_stream, true, "reported inside a 200 stream")
end)

T.case("an SSE error event", function()
  local err, pieces = expect_failure({ tokens_per_sec = 0, error_event = 3 }, "http", "mock error event")
  T.eq(#pieces, 3, "content before the error")
  T.eq(err.in_stream, true, "reported inside a 200 stream")
  T.eq(err.type, "internal_error", "type")
end)

T.case("events() yields the error, then raises it", function()
  local chat = H.chat({ tokens_per_sec = 0, error_after = 2 })
  local kinds = {}
  local ok, err = pcall(function()
    for ev in chat:events() do kinds[#kinds + 1] = ev.type end
  end)
  T.ok(not ok, "raised")
  T.eq(kinds[#kinds], "error", "error event first")
  T.eq(err.kind, "http", "kind")
end)

T.case("a chunk that is not JSON", function()
  local err, pieces, id = expect_failure({ tokens_per_sec = 0, malformed_after = 4 }, "protocol", "not JSON")
  T.eq(#pieces, 4, "content before it")
  T.wait_record(id, function(r) return r.client_closed or r.completed end)
end)

T.case("a stream that ends without [DONE] or without finish_reason", function()
  expect_failure({ tokens_per_sec = 0, no_done = true }, "protocol", "without [DONE]")
  local err = expect_failure({ tokens_per_sec = 0, no_finish = true }, "protocol", "finish_reason")
  local chat = H.chat({ tokens_per_sec = 0, no_done = true }, { require_done = false }, { max_tokens = 5 })
  local _, e = H.drain(chat)
  T.eq(e, nil, "require_done = false accepts a missing [DONE]")
end)

T.case("a reset or closed connection mid-stream", function()
  -- (a reset may discard what the kernel had received but not handed over)
  local _, pieces = expect_failure({ tokens_per_sec = 100, reset_after = 5 }, "transport", "reset")
  T.eq(#pieces, 5, "content before the reset: nothing received is lost")
  _, pieces = expect_failure({ tokens_per_sec = 0, close_after = 5 }, "transport", "outstanding read data")
  T.eq(#pieces, 5, "content before the close")
end)

T.case("core timeouts are failures", function()
  local err, pieces = expect_failure({ tokens_per_sec = 100, stall_after = 3 }, "timeout", "idle", nil,
                                     { timeouts = { idle = 0.2 } })
  T.eq(#pieces, 3, "content before the stall")
  local client = H.client { timeouts = { first_byte = 0.2 } }
  expect_failure({ ttft = 3 }, "timeout", "", nil, { client = client })
end)

-- ---------------------------------------------------------------------------
-- Stopping by the script: never an error, always closed upstream

T.case("break out of deltas() closes the connection", function()
  local chat, id = H.chat(PACE, nil, { max_tokens = 1000 })
  local n, t = 0, nil
  for _ in chat:deltas() do
    n = n + 1
    if n == 7 then t = sluice.now() break end
  end
  T.eq(chat:state(), "cancelled", "state")
  T.eq(chat:result().stop_reason, "closed", "stop_reason")
  T.eq(chat:result().error, nil, "not an error")
  T.assert_stopped(id, 7, t)
end)

T.case("break out of events() closes the connection", function()
  local chat, id = H.chat(PACE, nil, { max_tokens = 1000 })
  local n, t = 0, nil
  for ev in chat:events() do
    if ev.type == "content" then n = n + 1 end
    if n == 4 then t = sluice.now() break end
  end
  T.eq(chat:state(), "cancelled", "state")
  T.assert_stopped(id, 4, t)
end)

T.case("cancel() inside the loop ends it quietly", function()
  local chat, id = H.chat(PACE, nil, { max_tokens = 1000 })
  local n, t = 0, nil
  for _ in chat:deltas() do
    n = n + 1
    if n == 5 then
      t = sluice.now()
      chat:cancel("user said stop")
    end
  end
  T.eq(n, 5, "the loop ended after the cancel")
  T.eq(chat:result().stop_reason, "user said stop", "stop_reason")
  T.assert_stopped(id, 5, t)
end)

T.case("cancel() from another task while the reader waits", function()
  local chat, id = H.chat({ tokens_per_sec = 20 }, nil, { max_tokens = 1000 })
  local n = 0
  local reader = sluice.spawn(function()
    for _ in chat:deltas() do n = n + 1 end
    return "ended"
  end)
  while n < 3 do sluice.sleep(0.01) end
  local t = sluice.now()
  chat:cancel("stop button")
  local ok, r = reader:join()
  T.ok(ok, "reader ended without error")
  T.eq(r, "ended", "loop ended")
  T.eq(chat:result().stop_reason, "stop button", "stop_reason")
  T.assert_stopped(id, n, t)
end)

T.case("<close> variable", function()
  local id, n, t
  do
    local chat <close>, rid = H.chat(PACE, nil, { max_tokens = 1000 })
    id = rid
    n = 0
    for _ in chat:deltas() do
      n = n + 1
      if n == 3 then break end
    end
    t = sluice.now()
  end
  T.assert_stopped(id, n, t)
end)

T.case("an error raised inside the loop closes the connection", function()
  local chat, id = H.chat(PACE, nil, { max_tokens = 1000 })
  local n, t = 0, nil
  local ok, err = pcall(function()
    for _ in chat:deltas() do
      n = n + 1
      if n == 6 then t = sluice.now() error("boom") end
    end
  end)
  T.ok(not ok and tostring(err):find("boom"), "error propagates")
  T.assert_stopped(id, n, t)
end)

T.case("the owning task cancelled mid-stream", function()
  local id, n = nil, 0
  local task = sluice.spawn(function()
    local chat
    chat, id = H.chat(PACE, { stop_when = policy.max_tokens(500) }, { max_tokens = 1000 })
    for _ in chat:deltas() do n = n + 1 end
  end)
  while n < 4 do sluice.sleep(0.005) end
  local t = sluice.now()
  task:cancel("shutting down")
  local ok, err = task:join()
  T.ok(not ok and err.kind == "cancelled", "cancelled")
  T.assert_stopped(id, n, t)
end)

-- ---------------------------------------------------------------------------
-- Requests

T.case("stream = true is forced, usage options added, the body passes through", function()
  local chat, id = H.chat(FAST, { usage = "continuous" }, { max_tokens = 3, ignore_eos = true, stream = false })
  local res = chat:result()
  T.eq(res.error, nil, "streamed although the body said stream = false")
  T.ok(res.usage, "usage")
  local rec = T.wait_record(id, function(r) return r.completed end)
  T.eq(rec.stream, true, "the server saw a streaming request")
end)

T.case("the API key goes in Authorization and never into errors or metrics", function()
  local key = "sk-test-SECRET-0123456789"
  local client = H.client { api_key = key }
  local chat = H.chat({ status = 401, error_body = '{"error":{"message":"bad key ' .. key .. '","type":"auth"}}' },
                      { client = client })
  local _, err = H.drain(chat)
  T.eq(err.kind, "http", "kind")
  T.ok(not tostring(err):find(key, 1, true), "not in the message")
  T.ok(not (err.body or ""):find(key, 1, true), "not in the body")
  local m = chat:metrics()
  for k, v in pairs(m) do
    T.ok(not tostring(v):find(key, 1, true), "not in metrics." .. k)
  end
  T.ok(not tostring(client):find(key, 1, true), "not in tostring(client)")
  -- the key was sent: the mock echoes nothing, so check the header is built
  T.eq(client._headers.Authorization, "Bearer " .. key, "header")
  T.ok(openai.client({ base_url = "http://127.0.0.1:1/v1/" }).base_url == "http://127.0.0.1:1/v1", "trailing slash")
  T.ok(not pcall(openai.client, { bogus = 1 }), "unknown client option")
  T.ok(not pcall(H.client().chat, H.client(), {}, { bogus = 1 }), "unknown chat option")
end)

T.case("client:models()", function()
  local ids = assert(H.client():models())
  T.eq(ids[1], "mock-model", "model id")
end)

T.case("client:models(): an HTTP error reads as a stream's, from the core's summary of the body", function()
  local ids, err = openai.client({ base_url = T.url .. "/nope", api_key = "" }):models()
  T.eq(ids, nil, "no list")
  T.eq(err.kind, "http", "kind")
  T.eq(err.status, 404, "status")
  T.contains(tostring(err), "http 404: ", "reads once")
  T.contains(tostring(err), "not found", "the body's message")
  T.eq(sluice._retry_after("7"), 7, "Retry-After in seconds")
  local in_a_minute = sluice._retry_after(os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 60))
  T.ok(in_a_minute >= 55 and in_a_minute <= 61, "Retry-After as an HTTP-date: " .. tostring(in_a_minute))
  T.eq(sluice._retry_after("soon"), nil, "neither form")
end)

T.case("a server that echoes the API key inside the stream: the key never reaches the error", function()
  local key = "sk-live-secret-0123456789"
  local client = openai.client { base_url = T.url .. "/v1", api_key = key }
  for _, fault in ipairs { "error_after", "error_event" } do
    local chat = client:chat({ model = "m", max_tokens = 20, messages = {},
      mock = { tokens_per_sec = 0, [fault] = 3, error_message = "bad key " .. key .. " given" } })
    local ok, err = pcall(function() for _ in chat:deltas() do end end)
    T.ok(not ok, fault .. " raised")
    local e = chat:result().error
    T.contains(e.message, "[redacted]", fault .. ": the server's message is kept, redacted")
    for _, text in ipairs { tostring(err), e.message, tostring(e.body), tostring(e) } do
      T.ok(not text:find(key, 1, true), fault .. ": no key in " .. text)
    end
    local m = chat:metrics()
    for k, v in pairs(m) do
      T.ok(not tostring(v):find(key, 1, true), fault .. ": no key in metrics." .. k)
    end
  end
end)

T.done()
