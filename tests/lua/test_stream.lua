-- Streams: framing, errors as values, limits, timeouts that keep the stream
-- open, metrics, headers, and no secret in any error.
local sluice = require "sluice"
local cjson = require "cjson"
local T = require "testlib"

T.case("an SSE chat stream read to the end", function()
  local s, id = T.open({ tokens_per_sec = 0 }, { body = { max_tokens = 20, stream_options = { include_usage = true } } })
  T.eq(s:state(), "connecting", "state before any I/O")
  local tokens, text, done, usage, finish = 0, {}, false, nil, nil
  for ev in s:events() do
    T.eq(ev.event, "message", "default event type")
    if ev.data == "[DONE]" then
      done = true
    else
      local c = cjson.decode(ev.data)
      T.eq(c.object, "chat.completion.chunk", "object")
      local ch = c.choices[1]
      if ch then
        if ch.delta.content and ch.delta.content ~= "" then
          tokens = tokens + 1
          text[#text + 1] = ch.delta.content
        end
        if ch.finish_reason ~= cjson.null then finish = ch.finish_reason end
      end
      if c.usage and c.usage ~= cjson.null then usage = c.usage end
    end
  end
  T.ok(done, "[DONE] seen")
  T.eq(tokens, 20, "tokens")
  T.eq(finish, "length", "finish_reason")
  T.eq(usage.completion_tokens, 20, "usage")
  T.eq(s:state(), "done", "state")
  T.eq(s:status(), 200, "status")
  T.contains(s:headers()["content-type"], "text/event-stream", "content-type header")
  T.eq(s:headers()["x-request-id"], id, "request id header")
  T.eq(s:header("X-Request-ID"), id, "one header, by a name in any case")
  T.eq(s:header("x-no-such-header"), nil, "a header not sent")
  local m = s:metrics()
  T.ok(m.started <= m.connected and m.connected <= m.first_byte and m.first_byte <= m.first_event
       and m.first_event <= m.last_event and m.last_event <= m.ended, "metric times in order")
  T.ok(m.events >= 22, "events counted")
  T.ok(m.bytes > 1000, "bytes counted")
  T.eq(m.error, nil, "no error")
  local rec = T.record(id)
  T.ok(rec.completed and not rec.client_closed, "server completed the response")
  T.ok(#table.concat(text) > 20, "text")
end)

T.case("ndjson framing", function()
  local s = T.open({ tokens_per_sec = 0, ndjson = true }, { framing = "ndjson", body = { max_tokens = 7 } })
  local n = 0
  for ev in s:events() do
    T.eq(ev.event, nil, "no event field")
    local c = cjson.decode(ev.data)
    T.eq(c.object, "chat.completion.chunk", "a whole JSON line")
    n = n + 1
  end
  T.ok(n >= 8, "lines: " .. n)
  T.eq(s:state(), "done", "state")
end)

T.case("raw framing and a plain GET", function()
  local s = sluice.stream { url = T.url .. "/v1/models", framing = "raw" }
  local parts = {}
  for ev in s:events() do parts[#parts + 1] = ev.data end
  local body = cjson.decode(table.concat(parts))
  T.eq(body.object, "list", "models list")
end)

T.case("fetch", function()
  local res = assert(sluice.fetch { url = T.url .. "/v1/chat/completions",
                                    json = T.chat({}, { stream = false, max_tokens = 5 }) })
  T.eq(res.status, 200, "status")
  local body = cjson.decode(res.body)
  T.eq(body.object, "chat.completion", "object")
  T.eq(body.usage.completion_tokens, 5, "tokens")
  T.contains(res.headers["content-type"], "application/json", "header")
  local res404 = assert(sluice.fetch { url = T.url .. "/nope" })
  T.eq(res404.status, 404, "fetch returns any status")
end)

T.case("HTTP error status becomes an error value with status and body", function()
  local s = T.open({ status = 429 })
  local ev, err = s:next()
  T.eq(ev, nil, "no event")
  T.eq(err.kind, "http", "kind")
  T.eq(err.status, 429, "status")
  T.contains(err.body, '"error"', "body kept")
  T.contains(tostring(err), "429", "tostring")
  T.eq(s:state(), "failed", "state")
  T.eq(s:metrics().error.kind, "http", "metrics.error")
  local ok, raised = pcall(function() for _ in s:events() do end end)
  T.ok(not ok and raised.kind == "http", "events() raises the failure")
end)

T.case("a huge error body is cut at 64 KiB and still reported as the HTTP error", function()
  local s = T.open({ status = 500, error_body = string.rep("e", 200000) })
  local ev, err = s:next()
  T.eq(ev, nil, "no event")
  T.eq(err.kind, "http", "kind")
  T.eq(err.status, 500, "status")
  T.eq(#err.body, 65536, "body kept up to the cap")
end)

T.case("connection reset mid-stream is a transport error, not a silent end", function()
  local s = T.open({ tokens_per_sec = 0, reset_after = 5 }, { body = { max_tokens = 100 } })
  local n, err = 0, nil
  while true do
    local ev, e = s:next()
    if not ev then err = e break end
    n = n + 1
  end
  T.ok(err, "an error, not a clean end")
  T.eq(err.kind, "transport", "kind")
  T.contains(err.message, "reset", "message")
  T.eq(n, 6, "events received before the reset (role chunk + 5 tokens): none lost")
end)

T.case("abrupt close mid-stream is a transport error", function()
  local s = T.open({ tokens_per_sec = 0, close_after = 5 }, { body = { max_tokens = 100 } })
  local ev, err
  repeat ev, err = s:next() until not ev
  T.ok(err, "an error, not a clean end")
  T.eq(err.kind, "transport", "kind")
end)

T.case("connection refused", function()
  local s = sluice.stream { url = "http://127.0.0.1:1/v1/chat/completions", json = {} }
  local ev, err = s:next()
  T.eq(ev, nil, "no event")
  T.eq(err.kind, "transport", "kind")
  T.ok(#err.message > 0, "message")
end)

T.case("an event larger than max_event_bytes fails the stream with kind limit", function()
  -- every chunk of the mock is ~200 bytes, over this limit
  local s = T.open({ tokens_per_sec = 0 }, { max_event_bytes = 100, body = { max_tokens = 10 } })
  local ev, err
  repeat ev, err = s:next() until not ev
  T.eq(err and err.kind, "limit", "kind")
  T.contains(err.message, "max_event_bytes", "message")
end)

T.case("next(timeout) times out and the stream stays open", function()
  local s = T.open({ tokens_per_sec = 100, ttft = 0.3 }, { body = { max_tokens = 3 } })
  local ev, err = s:next(0.05)
  T.eq(ev, nil, "nothing yet")
  T.eq(err, "timeout", "timeout")
  T.ok(s:state() == "streaming" or s:state() == "connecting", "still open")
  local n = 0
  for e in s:events() do n = n + 1 end
  T.ok(n >= 4, "the stream continued")
  T.eq(s:state(), "done", "done")
end)

T.case("fetch caps the body at max_event_bytes", function()
  local res, err = sluice.fetch { url = T.url .. "/v1/chat/completions", max_event_bytes = 1000,
                                  json = T.chat({ tokens_per_sec = 0 }, { stream = false, max_tokens = 500 }) }
  T.eq(res, nil, "no result")
  T.eq(err.kind, "limit", "kind")
  T.contains(err.message, "response body larger", "message")
end)

T.case("more streams than the open-file limit allows: a clear limit error", function()
  local cmd = ("ulimit -n 80 && %q -e %q 2>&1"):format(os.getenv("SLUICE_BIN"), ([[
    local sluice = require "sluice"
    local ss, limited, msg = {}, 0, nil
    for i = 1, 120 do ss[i] = sluice.stream { url = "URL/v1/chat/completions",
      json = { model = "m", stream = true, max_tokens = 50, messages = {}, mock = { tokens_per_sec = 10 } } } end
    for i = 1, 120 do
      local ev, err = ss[i]:next()
      if not ev and err and err.kind == "limit" then limited = limited + 1; msg = err.message end
    end
    print(limited, msg)]]):gsub("URL", T.url))
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  local n = tonumber(out:match("^(%d+)"))
  T.ok(n and n > 0 and n < 120, "some streams refused, the others ran: " .. out)
  T.contains(out, "open-file limit", "the message says why")
end)

T.case("bad options raise", function()
  T.ok(not pcall(sluice.stream, {}), "url required")
  T.ok(not pcall(sluice.stream, { url = T.url, framing = "xml" }), "framing checked")
  local ok, err = pcall(sluice.stream, { url = T.url, timeout = 3 })
  T.ok(not ok and err:find("unknown option 'timeout'"), "unknown option named")
  T.ok(not pcall(sluice.stream, { url = T.url, body = "x", json = {} }), "body and json")
end)

T.case("no secret in errors or bodies", function()
  local key = "sk-test-0123456789abcdef"
  local s = sluice.stream { url = T.url .. "/v1/chat/completions",
    headers = { Authorization = "Bearer " .. key },
    json = T.chat({ status = 401, error_body = '{"error":{"message":"Incorrect API key provided: ' .. key .. '"}}' }) }
  local _, err = s:next()
  T.eq(err.kind, "http", "kind")
  T.ok(not err.body:find(key, 1, true), "key redacted from the body")
  T.ok(not tostring(err):find(key, 1, true), "key not in the message")
  local s2 = sluice.stream { url = "http://127.0.0.1:1/", headers = { Authorization = "Bearer " .. key } }
  local _, err2 = s2:next()
  T.ok(not tostring(err2):find(key, 1, true), "key not in a transport error")
end)

T.done()
