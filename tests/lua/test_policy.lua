-- sluice.policy: each policy on its own (driven with a fake clock), then end
-- to end against sluice-mock, where /stats proves the server stopped at once.
local sluice = require "sluice"
local policy = require "sluice.policy"
local T = require "testlib"
local H = require "oai_helpers"

-- ---------------------------------------------------------------------------
-- Policies alone

T.case("stop_on finds a keyword split at every byte boundary", function()
  local text = "The proof is complete. QED, and nothing more."
  local at = text:find("QED", 1, true)
  local n = #text
  local tried = 0
  -- two pieces, cut anywhere; three pieces, cut at any two places
  for i = 1, n - 1 do
    for j = i, n - 1 do
      local cuts = i == j and { i } or { i, j }
      local pieces = H.split(text, cuts)
      local reason, trim, k = H.feed(policy.stop_on { "QED", trim = true }, pieces)
      T.eq(reason, 'stop_on:"QED"', "reason for cuts " .. table.concat(cuts, ","))
      T.eq(trim, at, "match position")
      -- it fires on the piece holding the keyword's last byte
      local last, pos = at + 2, 0
      for idx, p in ipairs(pieces) do
        pos = pos + #p
        if pos >= last then T.eq(k, idx, "fired on the right piece") break end
      end
      tried = tried + 1
    end
  end
  T.ok(tried > 900, "tried every split")
  -- one byte per piece
  local bytes = {}
  for c in text:gmatch(".") do bytes[#bytes + 1] = c end
  local reason, trim, k = H.feed(policy.stop_on "QED", bytes)
  T.eq(reason, 'stop_on:"QED"', "byte by byte")
  T.eq(trim, nil, "no trim unless asked")
  T.eq(k, at + 2, "fired on the last byte")
end)

T.case("stop_on: several strings, the earliest match wins; no false match", function()
  local reason = H.feed(policy.stop_on { "END", "STOP" }, { "please ST", "OP now, E", "ND" })
  T.eq(reason, 'stop_on:"STOP"', "earliest")
  T.eq(H.feed(policy.stop_on { "QED" }, { "Q", "E", " D", "QE", "d" }), nil, "no match")
  local r = H.feed(policy.stop_on "a\nb\"", { "x a", "\nb\"" })
  T.eq(r, 'stop_on:"a\\nb\\""', "reason quotes control characters")
  T.ok(not pcall(policy.stop_on, {}), "empty list refused")
  T.ok(not pcall(policy.stop_on, { "" }), "empty string refused")
end)

T.case("one policy value, many streams: no state leaks between them", function()
  local p = policy.stop_on "QED"
  local a, b = policy.start(p), policy.start(p)
  local fake = { text = function() return "" end }
  local sa, sb = policy.state(fake, 0), policy.state(fake, 0)
  local function feed(inst, st, d)
    st.delta, st.bytes = d, st.bytes + #d
    return inst.check(inst, st)
  end
  T.eq(feed(a, sa, "Q"), nil, "a: Q")
  T.eq(feed(b, sb, "E"), nil, "b: E")
  T.eq(feed(b, sb, "D"), nil, "b: D (b never saw Q)")
  T.eq(feed(a, sa, "ED"), 'stop_on:"QED"', "a: QED")
  local r1 = policy.repetition { times = 3 }
  local x, y = policy.start(r1), policy.start(r1)
  T.ok(x ~= y, "fresh instances of stateful policies")
end)

T.case("max_tokens, max_chars, match", function()
  local pieces = {}
  for i = 1, 50 do pieces[i] = " w" .. i end
  local r, _, k = H.feed(policy.max_tokens(20), pieces)
  T.eq(r, "max_tokens:20", "reason")
  T.eq(k, 20, "fired on the 20th token")
  r, _, k = H.feed(policy.max_chars(5), { "héé", "llo", "!" })
  T.eq(r, "max_chars:5", "reason")
  T.eq(k, 2, "counts characters, not bytes")
  r, _, k = H.feed(policy.match("%d%d%d%-%d%d%d%d"), { "call 555", "-12", "34 now" })
  T.eq(r, "match:%d%d%d%-%d%d%d%d", "pattern across pieces")
  T.eq(k, 3, "fired when complete")
  local trim
  r, trim = H.feed(policy.match("</?answer>", { trim = true }), { "42 </ans", "wer> junk" })
  T.eq(trim, 4, "match trim position")
  T.eq(H.feed(policy.match("^Sure"), { "I am ", "Sure" }), nil, "anchored at the start only")
  T.eq(H.feed(policy.match("^Sure"), { "Su", "re thing" }), "match:^Sure", "anchored match")
  T.ok(not pcall(policy.max_tokens, -1), "negative refused")
end)

T.case("repetition: a loop fires, ordinary text does not", function()
  local loop = {}
  for _ = 1, 10 do
    for w in ("I am not sure what to do. "):gmatch("%S+%s") do loop[#loop + 1] = w end
  end
  local r, _, k = H.feed(policy.repetition { window = 10, times = 3 }, loop)
  T.eq(r, 'repetition:"I am not sure what to do."x3', "reason")
  T.eq(k, 7 * 3, "fired once the third repetition was complete")
  local prose = {}
  for w in ([[The old mill stood where the river narrowed between two shoulders of
    grey stone, and for as long as anyone in the valley could remember, the miller
    had opened the sluice at dawn and closed it again at dusk. Water was never a
    thing to be wasted.]]):gmatch("%S+%s*") do prose[#prose + 1] = w end
  T.eq(H.feed(policy.repetition {}, prose), nil, "prose")
  local ha = { "ha ", "ha ", "ha ", "ha ", "ha " }
  T.eq(H.feed(policy.repetition { min = 2 }, ha), nil, "min = 2: a short laugh is not a loop")
  for i = 6, 9 do ha[i] = "ha " end
  local r2, _, k2 = H.feed(policy.repetition { min = 2 }, ha)
  T.eq(r2, 'repetition:"ha ha"x4', "a long one is")
  T.eq(k2, 8, "after 8 words")
  -- words split across pieces
  local split = H.split(("abc def "):rep(5), { 2, 5, 9, 11, 20, 26 })
  T.eq(H.feed(policy.repetition { window = 3, times = 4 }, split), 'repetition:"abc def"x4', "split words")
end)

T.case("time policies report deadlines; check fires after them", function()
  local fake = { text = function() return "" end }
  local st = policy.state(fake, 100)
  local d = policy.start(policy.deadline(2))
  T.eq(d:deadline(st), 102, "deadline")
  st.now = 101.9
  T.eq(d:check(st), nil, "not yet")
  st.now = 102
  T.eq(d:check(st), "deadline:2s", "reason")
  local t = policy.start(policy.ttft(0.5))
  T.eq(t:deadline(st), 100.5, "ttft deadline")
  st.first_at = 100.2
  T.eq(t:deadline(st), nil, "no ttft deadline after the first token")
  T.eq(t:check(st), nil, "ttft never fires after a token")
  local i = policy.start(policy.idle(1.5))
  st.last_at = 101
  T.eq(i:deadline(st), 102.5, "idle deadline from the last token")
  st.now = 102.6
  T.eq(i:check(st), "idle:1.5s", "idle reason")
end)

T.case("any, all, functions", function()
  local pieces = { "a", "b", "QED", "c", "d", "e" }
  local r = H.feed(policy.any { policy.max_tokens(5), policy.stop_on "QED" }, pieces)
  T.eq(r, 'stop_on:"QED"', "any: the first to fire")
  r = H.feed(policy.all { policy.max_tokens(5), policy.stop_on "QED" }, pieces)
  T.eq(r, 'max_tokens:5 & stop_on:"QED"', "all: once both fired")
  r = H.feed(function(state) if state.text:find("c", 1, true) then return "saw c" end end, pieces)
  T.eq(r, "saw c", "function reason used as is")
  r = H.feed(function(state) return state.tokens == 2 end, pieces)
  T.eq(r, "function", "a true result")
  local inst = policy.start(policy.any { policy.idle(1), policy.deadline(5), policy.stop_on "x" })
  local st = policy.state({}, 10)
  T.eq(inst:deadline(st), 11, "any: the earliest deadline")
  T.ok(not pcall(policy.any, {}), "empty any refused")
  T.ok(not pcall(policy.start, 42), "not a policy")
end)

-- ---------------------------------------------------------------------------
-- End to end: a policy stops the stream, the server sees it at once

local PACE = { tokens_per_sec = 100 }

T.case("max_tokens stops the request upstream", function()
  local chat, id = H.chat(PACE, { stop_when = policy.max_tokens(20) }, { max_tokens = 1000 })
  local pieces = H.drain(chat)
  local t = sluice.now()
  T.eq(#pieces, 20, "pieces")
  local res = chat:result()
  T.eq(res.stop_reason, "max_tokens:20", "stop_reason")
  T.eq(res.finish_reason, nil, "no finish_reason")
  T.eq(res.error, nil, "not an error")
  T.eq(chat:state(), "cancelled", "core state")
  T.eq(res.metrics.cancel_reason, "max_tokens:20", "the core saw the reason")
  T.assert_stopped(id, 20, t)
end)

T.case("max_tokens uses continuous usage when the server sends it", function()
  local chat, id = H.chat(PACE, { stop_when = policy.max_tokens(15), usage = "continuous" },
                          { max_tokens = 1000 })
  local n = 0
  for ev in chat:events() do
    if ev.type == "content" then n = n + 1 end
    if ev.type == "usage" then T.ok(ev.usage.completion_tokens, "usage in chunks") end
  end
  local res = chat:result()
  T.eq(res.stop_reason, "max_tokens:15", "stop_reason")
  T.eq(res.usage.completion_tokens, 15, "usage at the stop")
  T.assert_stopped(id, n)
end)

T.case("stop_on a keyword the server sends", function()
  local chat, id = H.chat({ tokens_per_sec = 200, keyword = "QED", keyword_at = 30 },
                          { stop_when = policy.stop_on { "QED", trim = true } }, { max_tokens = 1000 })
  local pieces = H.drain(chat)
  local t = sluice.now()
  local res = chat:result()
  T.eq(res.stop_reason, 'stop_on:"QED"', "stop_reason")
  T.ok(not res.text:find("QED", 1, true), "trimmed text")
  T.eq(#pieces, 30, "the keyword piece was not handed out")
  local rec = T.assert_stopped(id, 31, t)
  T.ok(rec.stop_latency_us == nil or rec.stop_latency_us < 500000, "stop latency")
end)

T.case("stop_on with trim in events(): no content event carries the match", function()
  local chat, id = H.chat({ tokens_per_sec = 0, text = "It is proven. QED. And then some more words." },
                          { stop_when = policy.stop_on { ". QED", trim = true } })
  local got = {}
  for ev in chat:events() do
    if ev.type == "content" then got[#got + 1] = ev.text end
  end
  local res = chat:result()
  T.eq(res.text, "It is proven", "text cut before the match")
  -- the "." was handed out before " QED" showed it was part of the match:
  -- pieces already handed out are not taken back
  T.eq(table.concat(got), "It is proven.", "content events")
  T.eq(res.stop_reason, 'stop_on:". QED"', "reason")
  chat = H.chat({ tokens_per_sec = 0, text = "It is proven. QED. And then some more words." },
                { stop_when = policy.stop_on { "QED", trim = true } })
  got = {}
  for ev in chat:events() do
    if ev.type == "content" then got[#got + 1] = ev.text end
  end
  T.eq(chat:result().text, "It is proven. ", "text")
  T.eq(table.concat(got), "It is proven. ", "the piece holding the match is cut")
end)

T.case("stop_on a phrase spread over several tokens", function()
  -- the mock's default passage: "... the miller had opened the sluice at dawn ..."
  local chat, id = H.chat(PACE, { stop_when = policy.stop_on "opened the sluice" }, { max_tokens = 1000 })
  local pieces = H.drain(chat)
  local t = sluice.now()
  local res = chat:result()
  T.eq(res.stop_reason, 'stop_on:"opened the sluice"', "stop_reason")
  T.ok(res.text:find("opened the sluice$"), "text ends with the phrase")
  T.assert_stopped(id, #pieces, t)
end)

T.case("match and max_chars", function()
  local chat, id = H.chat(PACE, { stop_when = policy.match("%l+%.%s+%u") }, { max_tokens = 1000 })
  local pieces = H.drain(chat)
  T.eq(chat:result().stop_reason, "match:%l+%.%s+%u", "match")
  T.assert_stopped(id, #pieces, sluice.now())
  chat, id = H.chat(PACE, { stop_when = policy.max_chars(100) }, { max_tokens = 1000 })
  pieces = H.drain(chat)
  local res = chat:result()
  T.eq(res.stop_reason, "max_chars:100", "max_chars")
  T.ok(#res.text >= 100 and #res.text < 120, "text length near the limit")
  T.assert_stopped(id, #pieces, sluice.now())
end)

T.case("repetition cuts a looping stream", function()
  local chat, id = H.chat({ tokens_per_sec = 300, text = ("I am not sure. Let me check again. "):rep(50) },
                          { stop_when = policy.repetition { times = 3 } }, { max_tokens = 5000 })
  local pieces = H.drain(chat)
  local res = chat:result()
  T.eq(res.stop_reason, 'repetition:"I am not sure. Let me check again."x3', "stop_reason")
  T.assert_stopped(id, #pieces, sluice.now())
end)

T.case("deadline fires on a slow stream", function()
  local chat, id = H.chat({ tokens_per_sec = 20 }, { stop_when = policy.deadline(0.3) }, { max_tokens = 1000 })
  local t0 = sluice.now()
  local pieces = H.drain(chat)
  local took = sluice.now() - t0
  T.eq(chat:result().stop_reason, "deadline:0.3s", "stop_reason")
  T.ok(took >= 0.29 and took < 0.6, "stopped on time (" .. took .. ")")
  T.assert_stopped(id, #pieces, sluice.now())
end)

T.case("ttft fires while the server sends nothing", function()
  local chat, id = H.chat({ ttft = 5 }, { stop_when = policy.ttft(0.2) })
  local t0 = sluice.now()
  local pieces = H.drain(chat)
  local took = sluice.now() - t0
  T.eq(#pieces, 0, "no content")
  T.eq(chat:result().stop_reason, "ttft:0.2s", "stop_reason")
  T.ok(took >= 0.19 and took < 0.5, "on time (" .. took .. ")")
  T.wait_record(id, function(r) return r.client_closed end)
end)

T.case("idle fires against a stalled server, pings ignored", function()
  local chat, id = H.chat({ tokens_per_sec = 200, stall_after = 10, ping_interval = 0.05 },
                          { stop_when = policy.idle(0.3) }, { max_tokens = 1000 })
  local pieces = H.drain(chat)
  local t = sluice.now()
  local res = chat:result()
  T.eq(#pieces, 10, "pieces before the stall")
  T.eq(res.stop_reason, "idle:0.3s", "stop_reason")
  local m = res.metrics
  T.ok(m.ended - m.last_event >= 0.29, "waited the idle time after the last token")
  T.assert_stopped(id, 10, t)
end)

T.case("a function policy and any/all end to end", function()
  local chat, id = H.chat(PACE, { stop_when = function(state)
    if state.tokens >= 8 and state.text:find("river") then return "enough about the river" end
  end }, { max_tokens = 1000 })
  local pieces = H.drain(chat)
  T.eq(chat:result().stop_reason, "enough about the river", "function reason")
  T.assert_stopped(id, #pieces, sluice.now())
  chat, id = H.chat({ tokens_per_sec = 50 }, { stop_when = policy.any {
    policy.stop_on "never appears", policy.deadline(0.2), policy.max_tokens(500) } }, { max_tokens = 1000 })
  pieces = H.drain(chat)
  T.eq(chat:result().stop_reason, "deadline:0.2s", "any with a deadline")
  T.assert_stopped(id, #pieces, sluice.now())
  chat, id = H.chat(PACE, { stop_when = policy.all { policy.max_tokens(10), policy.stop_on "river" } },
                    { max_tokens = 1000 })
  pieces = H.drain(chat)
  T.eq(chat:result().stop_reason, 'max_tokens:10 & stop_on:"river"', "all")
  T.assert_stopped(id, #pieces, sluice.now())
end)

T.case("the same policy value on concurrent streams", function()
  local p = policy.any { policy.stop_on "QED", policy.max_tokens(40) }
  local tasks = {}
  for i = 1, 3 do
    tasks[i] = sluice.spawn(function()
      local chat, id = H.chat({ tokens_per_sec = 200, keyword = "QED", keyword_at = 10 * i },
                              { stop_when = p }, { max_tokens = 1000 })
      local pieces = H.drain(chat)
      return chat:result().stop_reason, #pieces, id
    end)
  end
  for i, r in ipairs(sluice.all(tasks)) do
    T.ok(r[1], "task " .. i .. " ok: " .. tostring(r[2]))
    T.eq(r[2], i <= 3 and 'stop_on:"QED"' or nil, "reason of " .. i)
    T.eq(r[3], 10 * i + 1, "pieces of " .. i)
    T.assert_stopped(r[4], r[3])
  end
end)

T.done()
