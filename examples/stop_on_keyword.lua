-- Stop when a keyword appears, even when the server splits it across chunks
-- ("Q" "." "E" "." "D" "."). The policy keeps only the last few bytes between
-- chunks, so it never rescans the whole text. (stop_on{..., trim = true}
-- would also cut the keyword off the text, like a server-side stop sequence.)
--
--   sluice examples/stop_on_keyword.lua [--keyword Q.E.D.] [--model M]
local cjson = require "cjson"
local policy = require "sluice.policy"
local mock = require "sluice.mock"

local env = mock.setup(arg, {
  about = "Stop when a keyword appears, even split across chunks.",
  flags = { { "keyword", "K", "the keyword to stop on (default Q.E.D.)" } },
})
local keyword = env.options.keyword or "Q.E.D."
local id = env.request_id("stop_on_keyword")

-- what a sluice-mock should "generate" (any other server ignores the header):
-- a proof ending in the keyword, then a long ramble the server is spared
local proof = "Suppose there were finitely many primes p1, ..., pn. Let N = p1 * ... * pn + 1. " ..
              "No pi divides N, so N has a prime factor that is not in the list, a contradiction. " ..
              keyword .. " " .. ("Furthermore, one could go on and on about it. "):rep(60)

local chat = env.client:chat({
  model = env.model,
  messages = { { role = "user", content = "Prove that there are infinitely many primes. End with " ..
                                          keyword } },
  max_tokens = 1000,
}, {
  stop_when = policy.stop_on(keyword),
  headers = { ["X-Request-Id"] = id, ["X-Mock"] = cjson.encode { text = proof, tokens_per_sec = 200 } },
})

local pieces = {}
for piece in chat:deltas() do
  pieces[#pieces + 1] = piece
  io.write(piece)
  io.stdout:flush()
end
print("\n")

local res = chat:result()
if res.stop_reason then
  -- which chunks did the keyword arrive in?
  local text, from = res.text, #res.text - #keyword + 1
  local spread, pos = {}, #text
  for i = #pieces, 1, -1 do
    table.insert(spread, 1, ("%q"):format(pieces[i]))
    pos = pos - #pieces[i]
    if pos < from then break end
  end
  print(("found %s spread over %d chunks: %s"):format(keyword, #spread, table.concat(spread, " ")))
end
env.report(id, res)
env.finish()
