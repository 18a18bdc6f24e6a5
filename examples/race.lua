-- A race: the same prompt to two models (or endpoints) at once. The first to
-- produce an acceptable answer wins, and the other request is cancelled
-- upstream at that moment -- its server stops generating.
--
--   sluice examples/race.lua                                 (two sluice-mock "models")
--   OPENAI_BASE_URL=... sluice examples/race.lua --model small --model large
--   sluice examples/race.lua --base-url URL1 --model m --base-url2 URL2 --model2 m2
local sluice = require "sluice"
local cjson = require "cjson"
local openai = require "sluice.openai"
local mock = require "sluice.mock"

local env = mock.setup(arg, {
  about = "The same prompt to two models or endpoints; the loser is cancelled upstream.\n" ..
          "--model twice (or --model2) names the two contenders.",
  flags = {
    { "model2", "M", "the second contender's model (default: the second --model, else the first)" },
    { "base-url2", "URL", "the second contender's server (default: the first's)" },
  },
})
local prompt = "In one paragraph: why do mills have sluice gates?"

-- the contenders; a sluice-mock makes the first slow and the second quick
-- (the X-Mock header below; any other server ignores it)
local answer = "Because the water that drives a mill has to be measured out. A sluice gate " ..
               "lets the miller open the channel a little or a lot, and close it at once " ..
               "when the wheel races or the river floods."
local contenders = {
  { name = env.models[1], client = env.client, mock = { tokens_per_sec = 30, text = answer } },
  { name = env.options.model2 or env.models[2] or env.models[1],
    client = env.options.base_url2 and openai.client { base_url = env.options.base_url2 } or env.client,
    mock = { tokens_per_sec = 300, text = answer } },
}
if env.is_mock then contenders[1].label, contenders[2].label = "slow model", "quick model" end

-- acceptable: the model finished on its own, with some text
local function acceptable(res)
  return res.error == nil and res.finish_reason ~= nil and #res.text > 20
end

local chats, winner = {}, nil
local tasks = {}
for i, c in ipairs(contenders) do
  c.id = env.request_id("race")
  chats[i] = c.client:chat({
    model = c.name,
    messages = { { role = "user", content = prompt } },
    max_tokens = 300,
  }, { headers = { ["X-Request-Id"] = c.id, ["X-Mock"] = cjson.encode(c.mock) } })
  tasks[i] = sluice.spawn(function()
    local res = chats[i]:result()
    if not winner and acceptable(res) then
      winner = i
      for j, other in ipairs(chats) do
        if j ~= i then other:cancel("lost the race") end
      end
    end
    return res
  end)
end

local results = {}
for i, r in ipairs(sluice.all(tasks)) do results[i] = r[2] end

if winner then
  local res = results[winner]
  print(("winner: %s (%s) after %.2f s:\n%s\n"):format(contenders[winner].name,
        contenders[winner].label or "contender " .. winner,
        res.metrics.ended - res.metrics.started, res.text))
else
  print("no acceptable answer")
end
for i, c in ipairs(contenders) do
  env.report(c.id, results[i], ("%s (%s)"):format(c.name, c.label or "contender " .. i))
end
env.finish()
