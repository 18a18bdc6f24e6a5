-- Several prompts at once, each in its own task with its own stop policy, on
-- one event loop; a summary table at the end. Every stopped request is closed
-- upstream the moment its policy fires, while the others keep streaming.
--
--   sluice examples/concurrent.lua [--model M]
local sluice = require "sluice"
local cjson = require "cjson"
local policy = require "sluice.policy"
local mock = require "sluice.mock"

local env = mock.setup(arg, {
  about = "Several prompts at once, each with its own stop policy, and a summary table.",
})

-- mock: how a sluice-mock should behave for this prompt (others ignore it)
local jobs = {
  { prompt = "Count from 1 to 1000.", policy = policy.max_tokens(50), max_tokens = 1000 },
  { prompt = "Prove the Pythagorean theorem; end with QED.", policy = policy.stop_on "QED",
    max_tokens = 1000, mock = { keyword = "QED", keyword_at = 35 } },
  { prompt = "Write a poem about a mill.", policy = policy.max_chars(300), max_tokens = 1000 },
  { prompt = "Explain rivers slowly.", policy = policy.deadline(1.0), max_tokens = 1000,
    mock = { tokens_per_sec = 20 } },
  { prompt = "Say something short.", policy = nil, max_tokens = 30 },
}

local tasks = {}
for i, job in ipairs(jobs) do
  tasks[i] = sluice.spawn(function()
    local id = env.request_id("concurrent")
    local headers = { ["X-Request-Id"] = id }
    local behaviour = { tokens_per_sec = 100 }
    for k, v in pairs(job.mock or {}) do behaviour[k] = v end
    headers["X-Mock"] = cjson.encode(behaviour)
    local chat = env.client:chat({
      model = env.model,
      messages = { { role = "user", content = job.prompt } },
      max_tokens = job.max_tokens,
    }, { stop_when = job.policy, headers = headers })
    return id, chat:result()
  end)
end

local rows = {}
for i, r in ipairs(sluice.all(tasks)) do
  local ok, id, res = r[1], r[2], r[3]
  if not ok then error(id) end
  local m = res.metrics
  rows[i] = { id = id, res = res, tokens = m.tokens, chars = m.chars,
              ending = res.stop_reason or res.error and ("error: " .. res.error.kind)
                       or ("finish: " .. tostring(res.finish_reason)),
              ttft = m.ttft and ("%.0f ms"):format(m.ttft * 1000) or "-",
              time = ("%.2f s"):format((m.ended or sluice.now()) - m.started) }
end

print(("%-3s %-46s %7s %6s %-28s %8s %7s %s"):format("#", "prompt", "tokens", "chars", "ended by",
                                                    "ttft", "time", "server tokens"))
for i, row in ipairs(rows) do
  local rec = env.record(row.id)
  print(("%-3d %-46s %7d %6d %-28s %8s %7s %s"):format(i, jobs[i].prompt, row.tokens, row.chars,
        row.ending, row.ttft, row.time, rec and ("%d"):format(rec.tokens_sent) or "?"))
end
print()
for i, row in ipairs(rows) do env.report(row.id, row.res, "#" .. i) end
env.finish()
