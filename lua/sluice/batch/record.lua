-- sluice batch's output records, in the shape of the OpenAI Batch API's (and
-- vllm run-batch's) output: id, custom_id, response { status_code,
-- request_id, body } where body is the chat.completion (or text_completion)
-- object the non-streaming endpoint would have returned, error ({code,
-- message} or null), plus a top-level "sluice" object: stop_reason, attempts,
-- metrics. Keys are written in a fixed order (id, custom_id, error first) so
-- that a resume scans 100,000 lines without decoding them.
local cjson = require "cjson"
local input = require "sluice.batch.input"

local null, encode = cjson.null, cjson.encode
local format = string.format

local M = {}

local function nonempty(t) return t and next(t) ~= nil and t or nil end

-- The completion object of a result: what the server would have answered
-- without stream = true. A request stopped by a policy finished on "stop"
-- (as with a stop sequence); sluice.stop_reason says why.
local function body_of(req, res, output_tokens)
  local chat = req.path == "/chat/completions"
  local choices = {}
  for i, c in ipairs(res.choices or {}) do
    local finish = c.finish_reason or (res.stop_reason and "stop") or null
    if chat then
      local tool_calls = nonempty(c.tool_calls)
      choices[i] = {
        index = c.index, finish_reason = finish, logprobs = c.logprobs or null,
        message = { role = "assistant", content = (c.text ~= "" or not tool_calls) and c.text or null,
                    reasoning_content = c.reasoning, tool_calls = tool_calls },
      }
    else
      choices[i] = { index = c.index, text = c.text, finish_reason = finish, logprobs = c.logprobs or null }
    end
  end
  local usage = res.usage
  if not usage then  -- stopped before the server's usage: what was received
    usage = { prompt_tokens = null, completion_tokens = output_tokens, total_tokens = null }
  end
  return {
    id = res.id or ("sluice-" .. format("%016x", input.hash(req.custom_id))),
    object = chat and "chat.completion" or "text_completion",
    created = res.created or os.time(), model = res.model or req.body.model or null,
    system_fingerprint = res.system_fingerprint, service_tier = res.service_tier,
    choices = choices, usage = usage,
  }
end

-- The error of a failed request as the Batch API writes it: a code (the
-- HTTP status's, or the kind of failure) and the message, which never holds
-- a key.
local function error_of(err)
  local code = err.kind
  if err.kind == "http" and err.status then code = "http_" .. err.status end
  return { code = code, message = tostring(err) }
end

-- The line of a record. r = { req, res (a chat result, or nil), err (an
-- error value, or nil), attempts, metrics, endpoint, line (an input line that
-- was no request) }.
function M.line(r)
  local req, res = r.req, r.res
  local cid = req and req.custom_id or r.custom_id
  local err = r.err or (res and res.error)
  local response = null
  if res and not err then
    response = { status_code = res.metrics.status or 200, request_id = r.request_id or res.id or null,
                 body = body_of(req, res, r.metrics and r.metrics.output_tokens or 0) }
  elseif err and err.kind == "http" and err.status then
    local body = err.body and require("cjson.safe").decode(err.body)
    response = { status_code = err.status, request_id = err.request_id or null,
                 body = type(body) == "table" and body or { error = { message = err.message } } }
  end
  local sl = {
    stop_reason = res and not err and res.stop_reason or nil, attempts = r.attempts,
    metrics = r.metrics, kind = err and err.kind or nil, line = r.line,
  }
  if sl.metrics then sl.metrics.endpoint = r.endpoint end
  local id = "batch_req_" .. format("%016x", input.hash(cid or ("line " .. tostring(r.line))))
  local record = { id = id, custom_id = cid, error = err and error_of(err) or nil, response = response,
                   sluice = sl }
  local text = '{"id":' .. encode(id) .. ',"custom_id":' .. (cid and encode(cid) or "null") ..
               ',"error":' .. (record.error and encode(record.error) or "null") ..
               ',"response":' .. encode(response) .. ',"sluice":' .. encode(sl) .. "}"
  return text, record
end

return M
