-- Helpers for the tests of sluice.openai, sluice.policy and the examples.
local sluice = require "sluice"
local policy = require "sluice.policy"
local openai = require "sluice.openai"
local T = require "testlib"

local H = {}

-- A client for the test's mock.
function H.client(opts)
  local o = { base_url = T.url .. "/v1", api_key = "" }
  for k, v in pairs(opts or {}) do o[k] = v end
  return openai.client(o)
end

local seq = 0
-- Opens a chat stream to the mock with a fresh request id; returns chat, id.
function H.chat(mock, opts, body)
  seq = seq + 1
  local id = ("oai%d-%d"):format(os.time(), seq)
  local b = { model = "mock-model", messages = { { role = "user", content = "hello" } }, mock = mock }
  for k, v in pairs(body or {}) do b[k] = v end
  local o = { headers = { ["X-Request-Id"] = id } }
  for k, v in pairs(opts or {}) do o[k] = v end
  local client = o.client or H.client()
  o.client = nil
  return client:chat(b, o), id
end

-- Drives a policy instance over pieces the way a stream does, with a fake
-- clock: pieces[i] arrives at times[i] (default: i * 0.01). Returns the reason,
-- the trim position and the index of the piece it fired on (nil if none).
function H.feed(p, pieces, times)
  local inst = policy.start(p)
  local text = {}
  local fake = { text = function() return table.concat(text) end, reasoning = function() return "" end }
  local st = policy.state(fake, 0)
  for i, d in ipairs(pieces) do
    local t = times and times[i] or i * 0.01
    text[#text + 1] = d
    st.now, st.elapsed = t, t
    st.since_last = t - (st.last_at or 0)
    st.first_at = st.first_at or t
    st.last_at = t
    st.delta = d
    st.bytes = st.bytes + #d
    st.chars = st.chars + policy.chars(d)
    st.tokens = i
    local r, trim = inst.check(inst, st)
    if r then return r, trim, i end
  end
  return nil
end

-- Cuts s into pieces at the given byte positions (each cut is the index of
-- the last byte of a piece).
function H.split(s, cuts)
  local out, from = {}, 1
  for _, c in ipairs(cuts) do
    out[#out + 1] = s:sub(from, c)
    from = c + 1
  end
  out[#out + 1] = s:sub(from)
  return out
end

-- Reads the whole chat through deltas(); returns the pieces and the error raised.
function H.drain(chat)
  local pieces = {}
  local ok, err = pcall(function()
    for d in chat:deltas() do pieces[#pieces + 1] = d end
  end)
  return pieces, not ok and err or nil
end

H.sluice = sluice
return H
