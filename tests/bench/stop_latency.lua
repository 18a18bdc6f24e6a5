-- Stop-latency worker: URL K. K times: 5,000 chunks at one per 2 ms, chunk 100
-- carries a keyword, policy.stop_on stops it. The mock measures from writing
-- that chunk to seeing the close. Prints {latency_us=[...], after=[...]}.
local sluice = require "sluice"
local cjson = require "cjson"
local openai = require "sluice.openai"
local policy = require "sluice.policy"
local url, k = arg[1], tonumber(arg[2])
local client = openai.client { base_url = url .. "/v1", api_key = "x" }
local lat, after = {}, {}
for i = 1, k do
  local id = ("stop-%d-%d"):format(os.time(), i)
  local chat = client:chat({ model = "m", max_tokens = 5000, messages = { { role = "user", content = "go" } },
                             mock = { tokens_per_sec = 500, keyword = " KEYWORD", keyword_at = 100 } },
                           { stop_when = policy.stop_on { "KEYWORD" }, headers = { ["X-Request-Id"] = id } })
  for _ in chat:deltas() do end
  assert(chat:result().stop_reason, "the policy did not fire")
  local rec
  for _ = 1, 200 do
    local res = assert(sluice.fetch { url = url .. "/stats" })
    for _, r in ipairs(cjson.decode(res.body).requests) do
      if r.id == id and r.client_closed then rec = r end
    end
    if rec then break end
    sluice.sleep(0.005)
  end
  assert(rec and rec.stop_latency_us ~= cjson.null, "no stop latency recorded")
  lat[#lat + 1] = rec.stop_latency_us
  after[#after + 1] = rec.tokens_sent - 101
  sluice.sleep(0.05)
end
print(cjson.encode { latency_us = lat, after = after })
