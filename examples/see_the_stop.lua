-- See the stop: a dozen chat streams at once with mixed stop policies (a
-- token budget, a keyword, a deadline, a time-to-first-token limit, none)
-- and one that fails, traced; then the trace drawn as an HTML timeline --
-- which streams were cut, how early, how many tokens that saved, and when
-- the server itself stopped (asked of a sluice-mock after each stop).
--
--   sluice examples/see_the_stop.lua [--out PREFIX] [--model M]
-- writes PREFIX.trace.jsonl and PREFIX.html (PREFIX: a new temporary name);
-- open the page in a browser, or `sluice report PREFIX.trace.jsonl` for the
-- same in the terminal.
local sluice = require "sluice"
local cjson = require "cjson"
local policy = require "sluice.policy"
local openai = require "sluice.openai"
local report = require "sluice.report"
local mock = require "sluice.mock"

local env = mock.setup(arg, {
  about = "A dozen streams with mixed stop policies, traced and drawn as an HTML timeline.",
  flags = { { "out", "PREFIX", "write PREFIX.trace.jsonl and PREFIX.html (default: a temporary name)" } },
  mock = { tokens_per_sec = 60 },
})

local prefix = env.options.out
if not prefix then
  prefix = os.tmpname()
  os.remove(prefix)
  prefix = prefix .. "-see_the_stop"
end
local trace_path, html_path = prefix .. ".trace.jsonl", prefix .. ".html"
os.remove(trace_path)
trace_path = sluice.trace(trace_path)  -- already tracing (sluice --trace FILE)? that file, then

-- against a sluice-mock, ask it after each stop when it stopped generating
local client = env.client
if env.is_mock then
  client = openai.client { base_url = env.client.base_url, api_key = "", confirm = "sluice-mock" }
end

local story = "The old mill stood where the river bent, and the miller climbed the hill each morning " ..
              "to watch the fog lift. He kept a ledger of every sack of grain. QED, he wrote at the " ..
              "bottom of each page, as if the sums were proofs. " .. ("The wheel turned and turned. "):rep(40)

-- mock: how a sluice-mock should behave (any other server ignores X-Mock)
local jobs = {
  { name = "no policy, short", max_tokens = 24 },
  { name = "no policy, long", max_tokens = 60, mock = { tokens_per_sec = 120 } },
  { name = "no policy, slow start", max_tokens = 20, mock = { ttft = 0.25 } },
  { name = "max_tokens 10", max_tokens = 200, policy = policy.max_tokens(10) },
  { name = "max_tokens 30", max_tokens = 200, policy = policy.max_tokens(30) },
  { name = "stop_on QED", max_tokens = 200, policy = policy.stop_on "QED" },
  { name = "stop_on wheel", max_tokens = 200, policy = policy.stop_on "wheel" },
  { name = "deadline 0.3 s", max_tokens = 200, policy = policy.deadline(0.3) },
  { name = "deadline 0.5 s", max_tokens = 200, policy = policy.deadline(0.5), mock = { tokens_per_sec = 30 } },
  { name = "ttft 0.2 s", max_tokens = 200, policy = policy.ttft(0.2), mock = { ttft = 1.5 } },
  { name = "max_chars 120", max_tokens = 200, policy = policy.max_chars(120) },
  { name = "HTTP 503", max_tokens = 50, mock = { status = 503 },
    model = not env.is_mock and "no-such-model-see-the-stop" or nil },
}

local tasks = {}
for i, job in ipairs(jobs) do
  tasks[i] = sluice.spawn(function()
    local behaviour = { text = story }
    for k, v in pairs(job.mock or {}) do behaviour[k] = v end
    local chat = client:chat({
      model = job.model or env.model, max_tokens = job.max_tokens,
      messages = { { role = "user", content = "Tell me about the mill." } },
    }, { stop_when = job.policy, tag = job.name,
         headers = { ["X-Request-Id"] = env.request_id("see_the_stop"), ["X-Mock"] = cjson.encode(behaviour) } })
    pcall(function() for _ in chat:deltas() do end end)  -- a failure is in the result
    return chat:result()
  end)
  sluice.sleep(0.03)  -- staggered, so the rows do not all start at once
end
for i, r in ipairs(sluice.all(tasks)) do
  local res = r[2]
  local how = res.stop_reason and ("stopped by " .. res.stop_reason) or
              res.error and ("failed: " .. tostring(res.error)) or ("finished (" .. tostring(res.finish_reason) .. ")")
  print(("%-22s %3d tokens  %s"):format(jobs[i].name, res.metrics.tokens or 0, how))
end
sluice.sleep(0.3)  -- the server's confirmations come in
env.finish()

local m = assert(report.read(trace_path))
assert(report.write_html(m, html_path))
print()
for _, line in ipairs(report.totals_lines(m)) do print(line) end
print("trace:  " .. trace_path)
print("report: " .. html_path)
