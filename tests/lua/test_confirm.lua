-- sluice.confirm end to end: after a stop, the server's own word that it
-- stopped -- from the test's sluice-mock (/stats: exact), and from stand-ins
-- started here: sluice-mock --stand-in llamacpp (llama-server's /slots and
-- /metrics) and --stand-in vllm (vLLM's /metrics), whose --stop-delay keeps
-- an aborted request busy a while, as a real server slow to notice.
--
local sluice = require "sluice"
local cjson = require "cjson"
local T = require "testlib"
local openai = require "sluice.openai"
local policy = require "sluice.policy"
local mock = require "sluice.mock"
local confirm = require "sluice.confirm"

local SLUICE = assert(os.getenv("SLUICE_BIN"), "SLUICE_BIN")
local STOP_DELAY = 0.3 -- how long a stand-in keeps an aborted request busy

-- A stand-in (or any mock) for one case, stopped when the variable goes out
-- of scope; its log must hold no sanitizer report.
local function standin(opts)
  local server = mock.start(opts)
  return setmetatable(server, { __close = function()
    local log = server.log() or ""
    server.stop()
    T.ok(not log:find("Sanitizer", 1, true) and not log:find("runtime error", 1, true),
         "no sanitizer report in the stand-in's log: " .. log:sub(1, 600))
  end })
end

local request_id = T.request_id

local function body(extra)
  local b = { model = "mock-model", max_tokens = 1000, messages = { { role = "user", content = "hello" } } }
  for k, v in pairs(extra or {}) do b[k] = v end
  return b
end

-- A chat the script stops after 3 tokens (a policy), read to its end.
local function stopped_chat(client, id)
  local chat = client:chat(body(), { stop_when = policy.max_tokens(3), headers = { ["X-Request-Id"] = id } })
  for _ in chat:deltas() do end
  T.eq(chat:result().stop_reason, "max_tokens:3", "stopped by the policy")
  return chat
end

-- server_stopped_at once it is there (the confirmation runs in its own
-- task), or nil after `timeout` seconds.
local function confirmed(chat, timeout)
  return T.wait_until(function() return chat:metrics().server_stopped_at end, timeout or 3)
end

local function get(url)
  local res = assert(sluice.fetch { url = url })
  return res.status, res.body
end

-- The llama.cpp stand-in's slots, by id: true while processing.
local function slots(server)
  local status, text = get(server.root .. "/slots")
  T.eq(status, 200, "/slots status")
  local out = {}
  for _, s in ipairs(cjson.decode(text)) do out[s.id] = s.is_processing end
  return out
end

local function metric(server, name, labels)
  local _, text = get(server.root .. "/metrics")
  return confirm.metric(text, name, labels)
end

-- A script run by a child sluice; returns its result and when it exited.
local function run_child(src, args, sluice_args)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  local argv = { SLUICE }
  for _, a in ipairs(sluice_args or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = path
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local r = assert(sluice.exec(argv, { timeout = 30 }))
  local exited = sluice.now()
  os.remove(path)
  T.eq(r.code, 0, "the child's exit status (stderr: " .. r.stderr .. ")")
  return r, exited
end

-- ---- sluice-mock: exact --------------------------------------------------

T.case("sluice-mock: server_stopped_at is the mock's own closed_at", function()
  local client = openai.client { base_url = T.url .. "/v1", api_key = "", confirm = "sluice-mock" }
  local id = request_id("mock")
  local chat = stopped_chat(client, id)
  local ended = chat:metrics().ended
  local at = T.ok(confirmed(chat), "server_stopped_at appears")
  local rec = T.wait_record(id, function(r) return r.client_closed end)
  T.eq(at, rec.closed_at, "server_stopped_at: the mock's closed_at")
  T.le(ended, at, "the mock noticed after sluice closed")
  T.le(at - ended, 1, "and soon")
end)

-- ---- llama.cpp -------------------------------------------------------------

T.case("llamacpp: /slots: confirmed once the slot is no longer processing", function()
  local server <close> = standin { stand_in = "llamacpp", stop_delay = STOP_DELAY, tokens_per_sec = 50 }
  local client = openai.client { base_url = server.url, api_key = "", confirm = "llamacpp" }
  local id = request_id("llama")
  local chat = stopped_chat(client, id)
  local ended = chat:metrics().ended
  local at = T.ok(confirmed(chat), "server_stopped_at appears")
  local busy_then = slots(server)[0]
  T.le(ended, at, "confirmed after the close")
  local rec = server.record(id)
  T.ok(rec.client_closed, "the stand-in saw the close")
  T.ok(not busy_then, "the slot free when confirmed")
  T.le(ended + STOP_DELAY, at, "server_stopped_at, at least stop_delay after the close")
  -- what the server itself said: processing until stop_delay after its close
  sluice.sleep(math.max(0, rec.closed_at + STOP_DELAY + 0.1 - sluice.now()))
  T.eq(slots(server)[0], false, "the slot freed after stop_delay")
end)

T.case("llamacpp: without /slots (--no-slots), the /metrics requests_processing fallback", function()
  local server <close> = standin { stand_in = "llamacpp", no_slots = true, stop_delay = STOP_DELAY,
                                   tokens_per_sec = 50 }
  T.eq(get(server.root .. "/slots"), 501, "/slots answers 501")
  local client = openai.client { base_url = server.url, api_key = "",
                                 confirm = { how = "llamacpp", interval = 0.02, give_up = 2 } }
  local id = request_id("nosl")
  local chat = stopped_chat(client, id)
  local ended = chat:metrics().ended
  local at = T.ok(confirmed(chat), "server_stopped_at appears")
  local processing_then = metric(server, "llamacpp:requests_processing")
  T.le(ended, at, "confirmed after the close")
  T.eq(processing_then, 0, "requests_processing when confirmed")
  T.le(ended + STOP_DELAY, at, "server_stopped_at, at least stop_delay after the close")
  sluice.sleep(STOP_DELAY + 0.1)
  T.eq(metric(server, "llamacpp:requests_processing"), 0, "processing 0 after stop_delay")
end)

-- ---- vLLM ------------------------------------------------------------------

T.case("vllm: /metrics: running back to before, or an abort counted", function()
  local server <close> = standin { stand_in = "vllm", stop_delay = STOP_DELAY, tokens_per_sec = 50 }
  local client = openai.client { base_url = server.url, api_key = "",
                                 confirm = { how = "vllm", interval = 0.02, give_up = 2 } }
  local id = request_id("vllm")
  local chat = stopped_chat(client, id)
  local ended = chat:metrics().ended
  local at = T.ok(confirmed(chat), "server_stopped_at appears")
  local running_then = metric(server, "vllm:num_requests_running")
  local aborts_then = metric(server, "vllm:request_success_total", 'finished_reason="abort"')
  T.le(ended, at, "confirmed after the close")
  T.eq(running_then, 0, "num_requests_running when confirmed")
  T.eq(aborts_then, 1, "the abort counted when confirmed")
  T.le(ended + STOP_DELAY, at, "server_stopped_at, at least stop_delay after the close")
  sluice.sleep(STOP_DELAY + 0.1)
  T.eq(metric(server, "vllm:request_success_total", 'finished_reason="abort"'), 1, "the abort counted")
  T.eq(metric(server, "vllm:num_requests_running"), 0, "running 0")
end)

-- ---- a function probe --------------------------------------------------------

T.case("a function probe: polled every interval after the stop; its answer is server_stopped_at", function()
  local server <close> = standin { stand_in = "vllm", stop_delay = STOP_DELAY, tokens_per_sec = 50 }
  local aborts = function() return metric(server, "vllm:request_success_total", 'finished_reason="abort"') end
  local before = aborts() -- read before the request is sent
  local calls, seen = 0, nil
  local function probe(ctx)
    calls = calls + 1
    seen = ctx
    if aborts() > before then return sluice.now() end
  end
  local client = openai.client { base_url = server.url, api_key = "",
                                 confirm = { how = probe, interval = 0.02, give_up = 2 } }
  local id = request_id("fn")
  local chat = stopped_chat(client, id)
  local ended = chat:metrics().ended
  local at = T.ok(confirmed(chat), "server_stopped_at appears")
  T.le(ended + STOP_DELAY, at, "confirmed once the stand-in counted the abort, stop_delay after")
  T.le(at - ended, STOP_DELAY + 0.5, "and soon after that")
  T.ok(calls >= 5, "polled again and again while the server said nothing (" .. calls .. " calls)")
  T.eq(seen.root, server.root, "ctx.root")
  T.eq(seen.request_id, id, "ctx.request_id")
  T.eq(seen.closed_at, ended, "ctx.closed_at: when sluice closed")
end)

-- ---- giving up ---------------------------------------------------------------

-- A server that never reports: the plain sluice-mock has neither /slots nor
-- /metrics, so a llama.cpp probe learns nothing.
T.case("give_up: a server that never reports; the confirmation task ends after give_up", function()
  local id = request_id("give")
  local url = T.url .. "/v1/chat/completions"
  local headers = { ["X-Request-Id"] = id }
  local s = sluice.stream { url = url, json = T.chat({}, { max_tokens = 1000 }), headers = headers }
  local task = confirm.watch(s, confirm.prepare({ how = "llamacpp", interval = 0.02, give_up = 0.4 }, url, headers))
  T.read_tokens(s, 2)
  s:cancel("enough")
  local ended = s:metrics().ended
  local ok, at, why = task:join()
  local joined = sluice.now()
  T.eq(ok, true, "the task ended without an error")
  T.eq(at, nil, "no server_stopped_at")
  T.eq(why, "gave up after 0.4 s", "why")
  T.le(0.4, joined - ended, "it tried for give_up")
  T.le(joined - ended, 1.2, "and then stopped")
  T.eq(s:metrics().server_stopped_at, nil, "metrics: no server_stopped_at")
  T.eq(task:status(), "done", "task status")
end)

T.case("give_up: a script's exit is held until give_up at most; a stream still running holds nothing", function()
  local give_up = 0.5
  local r, exited = run_child([[
    local openai, policy = require "sluice.openai", require "sluice.policy"
    local client = openai.client { base_url = arg[1] .. "/v1", api_key = "",
                                   confirm = { how = "llamacpp", interval = 0.02, give_up = tonumber(arg[2]) } }
    local chat = client:chat({ model = "m", max_tokens = 1000, messages = { { role = "user", content = "hi" } } },
                             { stop_when = policy.max_tokens(3) })
    for _ in chat:deltas() do end
    print(("%.6f"):format(chat:metrics().ended))
  ]], { T.url, tostring(give_up) })
  local ended = T.ok(tonumber(r.stdout), "the child printed when its stream ended")
  T.le(exited - ended, give_up + 1, "the exit not held beyond give_up")
  T.le(give_up - 0.05, exited - ended, "the exit waited for the confirmation to give up")

  -- the script ends while its stream still runs: the confirmation waits in
  -- the background and holds nothing, give_up = 5 notwithstanding
  local started = sluice.now()
  run_child([[
    local sluice = require "sluice"
    local s = sluice.stream { url = arg[1] .. "/v1/chat/completions", confirm = "llamacpp",
                              json = { stream = true, max_tokens = 1000, messages = {} } }
    s:next()
  ]], { T.url })
  T.le(sluice.now() - started, 3, "the script ended with its stream, without waiting 5 s")
end)

-- ---- the trace -------------------------------------------------------------------

T.case("sluice --trace: a confirm line with server_stopped_at and how", function()
  local trace = os.tmpname()
  local id = request_id("trace")
  local r = run_child([[
    local sluice, openai, policy = require "sluice", require "sluice.openai", require "sluice.policy"
    local client = openai.client { base_url = arg[1] .. "/v1", api_key = "", confirm = "sluice-mock" }
    local chat = client:chat({ model = "m", max_tokens = 1000, messages = { { role = "user", content = "hi" } } },
                             { stop_when = policy.max_tokens(3), headers = { ["X-Request-Id"] = arg[2] } })
    for _ in chat:deltas() do end
    local deadline = sluice.now() + 3
    while not chat:metrics().server_stopped_at and sluice.now() < deadline do sluice.sleep(0.01) end
    print(("%.6f"):format(chat:metrics().server_stopped_at))
  ]], { T.url, id }, { "--trace", trace })
  local f = assert(io.open(trace))
  local lines = {}
  for line in f:lines() do lines[#lines + 1] = cjson.decode(line) end
  f:close()
  os.remove(trace)
  local stream, line
  for _, l in ipairs(lines) do
    if l.ev == "start" and l.request_id == id then stream = l.s end
  end
  T.ok(stream, "the stream's start line")
  for _, l in ipairs(lines) do
    if l.ev == "confirm" and l.s == stream then line = l end
  end
  T.ok(line, "a confirm line for the stream")
  T.eq(line.how, "sluice-mock", "how")
  local rec = T.wait_record(id, function(x) return x.client_closed end)
  T.eq(line.server_stopped_at, rec.closed_at, "server_stopped_at: the mock's closed_at")
  T.eq(("%.6f"):format(line.server_stopped_at), r.stdout:match("^(%S+)"), "as the script's metrics have it")
  T.le(line.server_stopped_at, line.t, "written once known")

  -- the same script, ending as soon as its stream does: the runtime is to
  -- wait for the confirmation (give_up at most), and trace it
  id = request_id("trace-end")
  run_child([[
    local openai, policy = require "sluice.openai", require "sluice.policy"
    local client = openai.client { base_url = arg[1] .. "/v1", api_key = "", confirm = "sluice-mock" }
    local chat = client:chat({ model = "m", max_tokens = 1000, messages = { { role = "user", content = "hi" } } },
                             { stop_when = policy.max_tokens(3), headers = { ["X-Request-Id"] = arg[2] } })
    for _ in chat:deltas() do end
  ]], { T.url, id }, { "--trace", trace })
  f = assert(io.open(trace))
  local text = f:read("a")
  f:close()
  os.remove(trace)
  T.contains(text, '"request_id":"' .. id .. '"', "the trace of the second script")
  T.ok(text:find('"ev":"confirm"', 1, true), "a confirm line in the trace")
end)

-- ---- nothing to confirm ----------------------------------------------------------

T.case("a stream the server finished by itself: no confirmation", function()
  local server <close> = standin { stand_in = "llamacpp", stop_delay = STOP_DELAY, tokens_per_sec = 0 }
  local client = openai.client { base_url = server.url, api_key = "", confirm = "llamacpp" }
  local chat = client:chat(body { max_tokens = 3 }, { stop_when = policy.max_tokens(10) })
  local res = chat:result()
  T.eq(res.finish_reason, "length", "finished by the server")
  T.eq(res.stop_reason, nil, "not stopped by sluice")
  T.eq(confirmed(chat, 0.3), nil, "no server_stopped_at")

  -- the watch says why
  local url = server.url .. "/chat/completions"
  local s = sluice.stream { url = url, json = T.chat({}, { max_tokens = 2 }) }
  local task = confirm.watch(s, confirm.prepare("llamacpp", url))
  local ok, at, why = task:join()
  T.eq(ok, true, "the task ended without an error")
  T.eq(at, nil, "no server_stopped_at")
  T.eq(why, "the server finished it", "why")
  T.eq(s:state(), "done", "the stream is done")
  s:close()
end)

-- ---- misuse and the closing guarantee -------------------------------------------

T.case("a confirm option's interval and give_up are checked", function()
  T.ok(not pcall(openai.client, { base_url = T.url .. "/v1", confirm = { how = "vllm", intervall = 1 } }),
       "an unknown key raises")
  T.ok(not pcall(openai.client, { base_url = T.url .. "/v1", confirm = { how = "vllm", interval = -1 } }),
       "a negative interval raises")
  T.ok(not pcall(openai.client, { base_url = T.url .. "/v1", confirm = { how = "vllm", give_up = "soon" } }),
       "a give_up that is not a number raises")
end)

T.case("a stream dropped without closing is still closed when collected", function()
  local id = request_id("gc")
  do
    -- 40 tokens: if the collector never closes it, it ends by itself within a second
    local s = sluice.stream { url = T.url .. "/v1/chat/completions", json = T.chat({}, { max_tokens = 40 }),
                              headers = { ["X-Request-Id"] = id }, confirm = "sluice-mock" }
    T.read_tokens(s, 2)
  end
  collectgarbage()
  collectgarbage()
  sluice.sleep(0.1)
  local rec = T.record(id)
  T.ok(rec.client_closed, "the mock saw the close")
  T.wait_record(id, function(r) return r.client_closed or r.completed end, 3)
end)

T.done()
