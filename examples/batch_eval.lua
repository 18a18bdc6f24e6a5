-- Evaluate a question set with sluice.batch: each answer is stopped the moment
-- its "Final answer: ..." line is complete -- the connection closes, so the
-- server stops generating whatever the model meant to add -- then scored in
-- on_result. Prints the accuracy, how many answers were stopped early, and
-- the output tokens the stops saved.
--
--   sluice examples/batch_eval.lua [--questions FILE] [--concurrency N] [--max-tokens N] [--model M]
--
-- The questions are JSON lines: id, question, answer (and accept: other
-- right answers). Against a sluice-mock, each request carries in its body
-- what the mock should generate: a short working, the right final answer, and
-- a long ramble after it -- or the line's mock_reply instead (one of the
-- bundled questions gets a wrong answer, one never reaches a final answer).
local cjson = require "cjson"
local policy = require "sluice.policy"
local batch = require "sluice.batch"
local mock = require "sluice.mock"

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local env = mock.setup(arg, {
  about = "Evaluate a question set with sluice batch, stopping each answer at its final-answer line.",
  flags = {
    { "questions", "FILE", "the questions, JSON lines (default: examples/data/questions.jsonl)" },
    { "concurrency", "N", "requests at once (default 8)", number = true },
    { "max-tokens", "N", "max_tokens of each request (default 200)", number = true },
  },
})
local questions_file = env.options.questions or here .. "/data/questions.jsonl"
local concurrency = math.tointeger(env.options.concurrency or 8)
local max_tokens = math.tointeger(env.options.max_tokens or 200)
if not concurrency or concurrency < 1 or not max_tokens or max_tokens < 1 then
  io.stderr:write(arg[0], ": --concurrency and --max-tokens take a positive integer\n")
  env.finish()
  os.exit(2)
end

local questions, by_id = {}, {}
for line in assert(io.open(questions_file)):lines() do
  if line:find("%S") then
    local q = cjson.decode(line)
    questions[#questions + 1] = q
    by_id[q.id] = q
  end
end

-- the OpenAI Batch input: one request a question, custom_id = run tag/question id
local tag = env.request_id("batch_eval")
local ramble = ("Let me double-check that once more, just to be sure. "):rep(40)
local input, output = os.tmpname(), os.tmpname()
local files <close> = setmetatable({}, { __close = function()
  os.remove(input)
  os.remove(output)
end })
local f = assert(io.open(input, "w"))
for _, q in ipairs(questions) do
  local body = {
    model = env.model, max_tokens = max_tokens, temperature = 0,
    messages = {
      { role = "system", content = "Answer the question. Think briefly, then end with a line of the form " ..
                                   "'Final answer: <answer>'." },
      { role = "user", content = q.question },
    },
  }
  if env.is_mock then  -- what a sluice-mock should generate (never sent to other servers)
    local reply = q.mock_reply or ("Working it out step by step.\nFinal answer: " .. q.answer .. "\n")
    body.mock = { text = reply .. ramble, tokens_per_sec = 200 }
  end
  f:write(cjson.encode { custom_id = tag .. "/" .. q.id, method = "POST", url = "/v1/chat/completions",
                         body = body }, "\n")
end
f:close()

-- "Final answer: 42\n" (the line ends, so the answer is whole): stop there
local final_line = policy.match("Final answer:[^%c]+%c")

local function normalize(s)
  s = s:lower():gsub("[*_`]", ""):gsub("^%s+", ""):gsub("[%s%.]+$", ""):gsub("^%$", "")
  local n = tonumber((s:gsub(",", "")))
  return n and tostring(n) or s
end

local function right(q, got)
  local g = normalize(got)
  if g == normalize(q.answer) then return true end
  for _, a in ipairs(q.accept or {}) do
    if g == normalize(a) then return true end
  end
  return false
end

-- scoring, as each record arrives
local scored = {}
local summary, err = batch.run {
  input = input, output = output, concurrency = concurrency, quiet = true,
  base_url = env.client.base_url, api_key = env.server and "" or nil,
  policy = final_line,
  on_result = function(rec)
    local q = by_id[rec.custom_id:match("/([^/]*)$")]
    local body = rec.response ~= cjson.null and rec.response.body
    local choice = body and body.choices and body.choices[1]
    local text = choice and choice.message and choice.message.content
    local got = type(text) == "string" and text:match("Final answer:%s*([^\n]+)") or nil
    local sl = rec.sluice
    scored[q.id] = {
      got = got, right = got ~= nil and right(q, got) or false,
      tokens = sl.metrics and sl.metrics.output_tokens or 0,
      ended = rec.error and ("error: " .. rec.error.code)
              or sl.stop_reason and "stopped at the final answer"
              or ("finished (" .. tostring(choice and choice.finish_reason) .. ")"),
    }
  end,
}
if not summary then error(err, 0) end

print(("%d questions from %s, model %s at %s, %d at a time; custom_ids %s/<id>\n"):format(
  #questions, questions_file, env.model, env.client.base_url, concurrency, tag))
print(("%-5s %-10s %6s  %-28s %s"):format("id", "result", "tokens", "ended", "answer"))
local n_right = 0
for _, q in ipairs(questions) do
  local s = scored[q.id]
  if s.right then n_right = n_right + 1 end
  local result = s.right and "right" or s.got and "WRONG" or "unanswered"
  local answer = (s.got or "-") .. (s.right and "" or ("  (expected " .. q.answer .. ")"))
  print(("%-5s %-10s %6d  %-28s %s"):format(q.id, result, s.tokens, s.ended, answer))
end

local o = summary.outcomes
print()
print(("accuracy: %d/%d (%.0f%%)"):format(n_right, #questions, 100 * n_right / #questions))
print(("stopped early: %d of %d requests, each closed upstream at its final-answer line"):format(
  o.stopped, summary.requests))
print(("tokens: %d generated, %d saved by the stops (max_tokens %d each)"):format(
  summary.output_tokens, summary.tokens_saved, max_tokens))
if o.failed > 0 then print(("failed: %d requests"):format(o.failed)) end

-- what a sluice-mock saw of the stopped requests (its /stats): each closed by
-- the client, and nothing generated for it after the close
if env.is_mock then
  local closed, sent, received = 0, 0, 0
  for _, q in ipairs(questions) do
    if scored[q.id].ended == "stopped at the final answer" then
      local rec = env.record(tag .. "/" .. q.id)
      if rec and rec.client_closed and not rec.completed then closed = closed + 1 end
      sent, received = sent + (rec and rec.tokens_sent or 0), received + scored[q.id].tokens
    end
  end
  print(("server: %d of the %d stopped requests closed by the client before their end; it generated %d "
         .. "tokens for them, the script received %d"):format(closed, o.stopped, sent, received))
end
env.finish()
