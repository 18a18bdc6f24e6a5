-- sluice.openai: streaming chat and text completions from OpenAI-compatible
-- servers (vLLM, llama.cpp, SGLang, TGI, Ollama, OpenAI), as text pieces or
-- typed events, with stop policies applied as the chunks arrive. Stopping --
-- by a policy, by cancel(), by leaving a loop -- closes the connection at once.
local sluice = require "sluice"
local cjson = require "cjson"
local policy = require "sluice.policy"
local args = require "sluice.args"

local decode = require("cjson.safe").decode
local null = cjson.null
local now, redact = sluice.now, sluice.redact
local concat, sub, format = table.concat, string.sub, string.format
local type, setmetatable, pairs = type, setmetatable, pairs
local chars = policy.chars

local openai = {}

-- The core stream's reading methods. next_text returns a simple text chunk as
-- a bare string (decoded in C); without it every chunk goes through cjson.
local stream_methods = debug.getregistry()["sluice.stream"].__index
local next_event = stream_methods.next
local next_text = stream_methods.next_text or next_event

-- ---------------------------------------------------------------------------
-- Errors

local function new_error(kind, message, extra)
  local e = sluice.error(kind, message)
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

local function str(v)
  if type(v) == "string" then return v end
  if type(v) == "number" then return format("%g", v) end
end

-- Text from the server as it goes into an error, without the request's
-- secrets (nil: none, or the text came through the core, which has already
-- taken them out). The one place the Lua layer redacts: sluice.redact, one
-- pass in C.
local function clean(text, secrets)
  if secrets and type(text) == "string" then return redact(text, secrets) end
  return text
end

-- A code as the server gave it (400 or "invalid_api_key"), nil for anything else.
local function scalar(v)
  local t = type(v)
  if t == "string" or t == "number" then return v end
end

-- The error object of an OpenAI-style error document, in its usual shapes:
-- {"error":{"message","type","code","param"}}, {"error":"text"},
-- {"object":"error","message",...} (vLLM), {"message":...}.
local function error_fields(doc)
  if type(doc) ~= "table" then return nil end
  local e = doc.error
  if type(e) == "table" then return e end
  if type(e) == "string" then return { message = e } end
  if doc.object == "error" or type(doc.message) == "string" then return doc end
end

-- An HTTP error (the core's, or {status, body} of a fetch), with the
-- server's message, type and code; secrets as for clean().
local function http_error(err, secrets)
  local e = error_fields(decode(err.body or ""))
  local body = clean(err.body, secrets)
  local status = err.status
  local msg = e and clean(str(e.message), secrets)
  if not msg or msg == "" then
    local text = body and body:gsub("%s+", " "):sub(1, 200)
    msg = (text and text ~= "") and text or ("status " .. tostring(status))
  end
  return new_error("http", format("http %s: %s", tostring(status), msg), {
    status = status, body = body,
    type = e and clean(str(e.type), secrets), code = e and scalar(e.code),
    param = e and clean(str(e.param), secrets),
  })
end

-- An error the server reported inside a 200 stream (an error chunk or an SSE
-- `event: error`): kind "http" like any error the server reports, with
-- in_stream = true, and status when the error carries an HTTP code. The
-- stream's data has not been through the core's redaction: secrets do it.
local function server_error(doc, data, how, secrets)
  local e = error_fields(doc)
  local body = clean(data, secrets)
  local msg = e and clean(str(e.message), secrets)
  if not msg or msg == "" then msg = body:gsub("%s+", " "):sub(1, 200) end
  local code = e and scalar(e.code)
  local status = type(code) == "number" and math.tointeger(code)  -- cjson gives 500.0
  if status and (status < 100 or status > 599) then status = nil end
  return new_error("http", format("server error in the stream (%s): %s", how, msg), {
    status = status or nil, in_stream = true,
    type = e and clean(str(e.type), secrets), code = code, param = e and clean(str(e.param), secrets),
    body = body,
  })
end

-- ---------------------------------------------------------------------------
-- Decoding one chunk. The one place that knows the JSON shape of a chunk, so it
-- can be replaced by a faster decoder. Returns:
--   content, reasoning, finish_reason, tool_calls, usage, error_doc
-- each nil when absent (or null); error_doc is the decoded chunk when it
-- reports an error, or false when the chunk is not JSON at all.
local function decode_chunk(data)
  local c = decode(data)
  if type(c) ~= "table" then return nil, nil, nil, nil, nil, false end
  local e = c.error
  if (e ~= nil and e ~= null) or c.object == "error" then
    return nil, nil, nil, nil, nil, c
  end
  local content, reasoning, finish, tools
  local choices = c.choices
  if type(choices) == "table" then
    local ch = choices[1]
    if type(ch) == "table" then
      local d = ch.delta
      if type(d) == "table" then
        content = d.content
        reasoning = d.reasoning_content
        if type(reasoning) ~= "string" then reasoning = d.reasoning end
        tools = d.tool_calls
      else
        content = ch.text  -- /completions
      end
      finish = ch.finish_reason
    end
  end
  local usage = c.usage
  if type(content) ~= "string" or content == "" then content = nil end
  if type(reasoning) ~= "string" or reasoning == "" then reasoning = nil end
  if type(finish) ~= "string" then finish = nil end
  if type(tools) ~= "table" then tools = nil end
  if type(usage) ~= "table" then usage = nil end
  return content, reasoning, finish, tools, usage, nil
end
openai.decode_chunk = decode_chunk

-- ---------------------------------------------------------------------------
-- The chat stream

local Chat = { __name = "sluice.openai.stream" }
Chat.__index = Chat

-- Typed events are queued only while someone iterates events().
local function emit(self, ev)
  local t = self.qtail + 1
  self.qtail = t
  self.queue[t] = ev
end

-- Stops the transfer with reason (a policy's or the script's): not an error.
local function stop(self, reason)
  if self.over then return end
  self.over = true
  self.stop_reason = reason
  self.s:cancel(reason)
end

-- Emits the tool calls that are complete: those with an index below `below`
-- (servers stream calls one after the other), or all of them.
local function flush_tools(self, below)
  local tools = self.tools
  if not tools then return end
  for _, idx in ipairs(self.tool_order) do
    local tc = tools[idx]
    if not tc.done and (not below or idx < below) then
      tc.done = true
      local args = concat(tc.args)
      local call = { id = tc.id, type = tc.type or "function",
                     ["function"] = { name = tc.name or "", arguments = args } }
      self.calls[#self.calls + 1] = call
      if self.emit then
        emit(self, { type = "tool_call", index = idx, id = tc.id, name = call["function"].name,
                     arguments = args, args = decode(args ~= "" and args or "{}"), call = call })
      end
    end
  end
end

local function add_tool_fragments(self, list)
  local tools = self.tools
  if not tools then
    tools = {}
    self.tools, self.tool_order, self.calls = tools, {}, {}
  end
  for i = 1, #list do
    local f = list[i]
    if type(f) == "table" then
      local idx = f.index
      if type(idx) ~= "number" then idx = i - 1 end
      local tc = tools[idx]
      if not tc then
        flush_tools(self, idx)
        tc = { args = {}, done = false }
        tools[idx] = tc
        self.tool_order[#self.tool_order + 1] = idx
      end
      if type(f.id) == "string" and f.id ~= "" then tc.id = f.id end
      if type(f.type) == "string" then tc.type = f.type end
      local fn = f["function"]
      if type(fn) == "table" then
        local name = fn.name
        if type(name) == "string" and name ~= "" then
          if not tc.name or tc.name == "" then tc.name = name
          elseif name ~= tc.name then tc.name = tc.name .. name end
        end
        local a = fn.arguments
        if type(a) == "string" and a ~= "" then tc.args[#tc.args + 1] = a end
      end
    end
  end
  self.ntool = self.ntool + 1
end

-- Cuts the content text at byte trim_at (a match's start). Returns the part of
-- the latest piece d that is still before the cut.
local function apply_trim(self, trim_at, d)
  local before = self.st.bytes - #d  -- content bytes before d
  local text = sub(self:text(), 1, trim_at - 1)
  self.pieces[1] = text
  self.np = text == "" and 0 or 1
  local keep = trim_at > before + 1 and sub(d, 1, trim_at - before - 1) or nil
  local ev = self.last_content
  if ev then ev.text = keep or "" end  -- events(): skipped when emptied
  return keep
end

-- Updates the policy state after a chunk (delta = its content, or "";
-- generated = it carried output) or a deadline wake-up, and asks the policy.
-- Returns the part of delta to hand out (all of it unless a trimming policy
-- cut it), nil when there is none.
local function check(self, delta, generated)
  local st = self.st
  local t = now()
  st.now = t
  st.elapsed = t - st.started
  st.since_last = t - (st.last_at or st.started)
  if generated then
    if not st.first_at then st.first_at = t end
    st.last_at = t
  end
  st.delta = delta
  if delta ~= "" then
    st.bytes = st.bytes + #delta
    st.chars = st.chars + chars(delta)
  end
  local count = self.n + self.nr + self.ntool
  local ut = self.usage_tokens
  st.tokens = ut and (ut + count - self.usage_at) or count
  st.usage = self.usage
  local pol = self.pol
  local reason, trim_at = pol.check(pol, st)
  if reason then
    if trim_at then delta = apply_trim(self, trim_at, delta) end
    stop(self, reason)
  end
  if delta ~= "" then return delta end
end

local function add_content(self, text)
  local n = self.n + 1
  self.n = n
  local np = self.np + 1
  self.np = np
  self.pieces[np] = text
  if n == 1 then self.first_at = now() end
  if self.emit then
    local ev = { type = "content", text = text }
    self.last_content = ev
    emit(self, ev)
  end
end

local function fail(self, err)
  self.over = true
  self.error = err
  self.s:cancel(err.message)  -- does nothing once the stream is over
  if self.emit then emit(self, { type = "error", error = err }) end
end

-- The end of the response body: it must have said [DONE] and finished.
local function ended(self)
  flush_tools(self)
  if self.over then return end
  local missing
  if not self.finish_reason then missing = "a finish_reason" end
  if not self.got_done and self.require_done then
    missing = missing and (missing .. " or [DONE]") or "[DONE]"
  end
  if missing then
    fail(self, new_error("protocol", "stream ended without " .. missing))
  else
    self.over = true
  end
end

-- A full event from the core (anything but a simple text chunk). Returns the
-- content to hand out, if any.
local function on_event(self, ev)
  local data = ev.data
  if ev.event ~= "message" then
    if ev.event == "error" then
      fail(self, server_error(decode(data), data, "error event", self.secrets))
    end
    return nil  -- other event types are not part of the protocol
  end
  if self.got_done then return nil end
  if data == "[DONE]" then
    self.got_done = true
    flush_tools(self)
    if not self.finish_reason then
      fail(self, new_error("protocol", "stream ended without a finish_reason"))
      return nil
    end
    -- The response ends right after [DONE]: read that end so the connection
    -- can be reused, but do not wait on a server that keeps it open.
    local s = self.s
    repeat
      local e2, err = next_event(s, 1)
      if err == "timeout" then s:cancel("nothing after [DONE]") end
    until not e2
    self.over = true
    return nil
  end
  local content, reasoning, finish, tools, usage, err = decode_chunk(data)
  if err ~= nil then
    local secrets = self.secrets
    if err == false then
      local body = clean(data, secrets)
      fail(self, new_error("protocol", "malformed chunk (not JSON): " .. body:gsub("%s+", " "):sub(1, 120),
                           { body = body }))
    else
      fail(self, server_error(err, data, "error chunk", secrets))
    end
    return nil
  end
  local generated = false
  if reasoning then
    local nr = self.nr + 1
    self.nr = nr
    self.rpieces[nr] = reasoning
    generated = true
    if self.emit then emit(self, { type = "reasoning", text = reasoning }) end
  end
  if content then
    add_content(self, content)
    generated = true
  end
  if tools then
    add_tool_fragments(self, tools)
    generated = true
  end
  if usage then
    self.usage = usage
    local ct = usage.completion_tokens
    if type(ct) == "number" then
      self.usage_tokens = ct
      self.usage_at = self.n + self.nr + self.ntool
    end
    if self.emit then emit(self, { type = "usage", usage = usage }) end
  end
  if finish then
    flush_tools(self)
    self.finish_reason = finish
    if self.emit then emit(self, { type = "finish", finish_reason = finish }) end
  end
  if self.pol and (generated or usage) then
    return check(self, content or "", generated)
  end
  return content
end

-- What the core's read returned when it was not a simple text piece.
local function on_read(self, ev, err)
  if ev then return on_event(self, ev) end
  if err == nil then
    ended(self)
  elseif err == "timeout" then
    check(self, "", false)  -- a policy deadline passed
  elseif err.kind == "cancelled" then  -- cancelled from elsewhere (another task, the core)
    if not self.over then
      self.over = true
      self.stop_reason = self.s:metrics().cancel_reason or "cancelled"
    end
  elseif err.kind == "http" then
    fail(self, http_error(err))
  else
    fail(self, err)
  end
end

-- Reads until a piece of content can be handed out (returned) or the stream
-- is over (nil). In events mode, returns true once events are queued.
local function pull(self)
  local s = self.s
  while not self.over do
    local ev, err
    local pol = self.pol
    if self.timed then
      local d = pol.deadline(pol, self.st)
      if d then
        local left = d - now()
        ev, err = next_text(s, left > 0.001 and left or 0.001)
      else
        ev, err = next_text(s)
      end
    else
      ev, err = next_text(s)
    end
    local out
    if type(ev) == "string" then
      if ev ~= "" then
        add_content(self, ev)
        out = ev
        if pol then out = check(self, ev, true) end
      end
    else
      out = on_read(self, ev, err)
    end
    if out then return out end
    if self.emit and self.qhead <= self.qtail then return true end
  end
end

-- for piece in chat:deltas(): the content as it arrives.
local function deltas_next(self)
  if not self.pol and not self.emit then
    -- the hot path: no policy, no events, a simple chunk is one C call
    local s, pieces = self.s, self.pieces
    while not self.over do
      local ev, err = next_text(s)
      if type(ev) == "string" then
        if ev ~= "" then
          local n, np = self.n + 1, self.np + 1
          self.n, self.np = n, np
          pieces[np] = ev
          if n == 1 then self.first_at = now() end
          return ev
        end
      else
        local out = on_read(self, ev, err)
        if out then return out end
      end
    end
  else
    local out = pull(self)
    if out then return out end
  end
  if self.error then error(self.error, 0) end
  return nil
end

function Chat:deltas()
  return deltas_next, self, nil, self
end

-- for ev in chat:events(): typed events; ev.type is "content", "reasoning",
-- "tool_call", "usage", "finish" or "error". After an error event the next
-- call raises it.
local function events_next(self)
  while true do
    local h = self.qhead
    if h <= self.qtail then
      local q = self.queue
      local ev = q[h]
      q[h] = nil
      self.qhead = h + 1
      if ev.text ~= "" then return ev end
    end
    if self.over then break end
    pull(self)
  end
  if self.error then error(self.error, 0) end
  return nil
end

function Chat:events()
  if not self.emit then
    self.emit = true
    self.queue, self.qhead, self.qtail = {}, 1, 0
  end
  return events_next, self, nil, self
end

-- The content received so far (cut at a trimming policy's match).
function Chat:text()
  local np = self.np
  if np == 0 then return "" end
  local pieces = self.pieces
  if np > 1 then
    local t = concat(pieces, "", 1, np)
    for i = np, 2, -1 do pieces[i] = nil end
    pieces[1] = t
    self.np = 1
  end
  return pieces[1]
end

-- The reasoning text received so far (reasoning_content / reasoning).
function Chat:reasoning()
  local nr = self.nr
  if nr == 0 then return "" end
  return concat(self.rpieces, "", 1, nr)
end

-- Stops generation now: the connection is closed before this returns. Not an
-- error: a loop over deltas() or events() just ends.
function Chat:cancel(reason)
  if reason ~= nil and type(reason) ~= "string" then
    args.raise("chat:cancel", 2, "chat:cancel: reason must be a string, got " .. type(reason), 2)
  end
  stop(self, reason or "cancelled")
end

function Chat:close()
  if not self.over then stop(self, "closed") end
end
Chat.__close = Chat.close

function Chat:state() return self.s:state() end
function Chat:status() return self.s:status() end
function Chat:headers() return self.s:headers() end

-- The stream's metrics (the core's, plus tokens, chars and ttft).
function Chat:metrics()
  local m = self.s:metrics()
  m.tokens = self.n + self.nr + self.ntool
  m.content_tokens = self.n
  if self.first_at then m.ttft = self.first_at - self.started end
  m.stop_reason = self.stop_reason
  if self.error then m.error = self.error end
  return m
end

-- Reads what is left (policies still apply) and returns the outcome. Never
-- raises for a failed stream: see result().error.
function Chat:result()
  self.emit = false
  while not self.over do pull(self) end
  local m = self:metrics()
  m.chars = chars(self:text())
  return {
    text = self:text(), reasoning = self.nr > 0 and self:reasoning() or nil,
    finish_reason = self.finish_reason, stop_reason = self.stop_reason,
    usage = self.usage, tool_calls = self.calls, metrics = m, error = self.error,
  }
end

function Chat:__tostring()
  return format("sluice.openai.stream (%s)", self.s:state())
end

-- ---------------------------------------------------------------------------
-- The client

local Client = { __name = "sluice.openai.client" }
Client.__index = Client

-- Connection options passed as they are to every request of a client.
local transport_keys = { "insecure", "ca_file", "proxy", "http2" }

-- What openai.client, client:chat and client:complete take (see sluice.args).
local timeouts_spec = { connect = "seconds", first_byte = "seconds", idle = "seconds", total = "seconds" }
local client_spec = {
  base_url = "url", api_key = "line", headers = "headers", timeouts = timeouts_spec, model = "string",
  insecure = "flag", ca_file = "string", proxy = "line", http2 = "flag",
}
local open_spec = {
  stop_when = policy.kind, require_done = "flag", continuous_usage = "flag",
  usage = function(v)
    if v ~= true and v ~= false and v ~= "continuous" then return 'must be true, false or "continuous"' end
  end,
  timeouts = timeouts_spec, headers = "headers", max_event_bytes = "count",
}

-- Header values the core keeps out of its errors, and so do we: adds to list
-- the values of such headers and the token of "Bearer TOKEN".
local secret_headers = { authorization = true, ["proxy-authorization"] = true, ["x-api-key"] = true,
                         ["api-key"] = true, cookie = true }
local function add_secrets(list, headers)
  for name, v in pairs(headers) do
    if secret_headers[name:lower()] and type(v) == "string" and v ~= "" then
      list[#list + 1] = v
      local sp = v:find(" ", 1, true)
      if sp and sp < #v then list[#list + 1] = v:sub(sp + 1) end
    end
  end
  return list
end

-- Adds the client's connection options to request options t; returns t.
local function with_transport(self, t)
  for _, k in ipairs(transport_keys) do t[k] = self.transport[k] end
  return t
end

-- openai.client{base_url=, api_key=, headers=, timeouts=, model=, insecure=,
-- ca_file=, proxy=, http2=}: base_url defaults to $OPENAI_BASE_URL (else OpenAI's),
-- api_key to $OPENAI_API_KEY; the key is sent as "Authorization: Bearer".
-- Everything is checked here as the core checks its own options (sluice.args):
-- misuse raises now, naming openai.client, not at the first request.
function openai.client(o)
  o = args.options("openai.client", 1, o, client_spec, 2)
  local base = o.base_url
  if base == nil then
    base = os.getenv("OPENAI_BASE_URL")
    if base == "" then base = nil end
    if base and args.kinds.url(base) then
      error("openai.client: $OPENAI_BASE_URL must be an http:// or https:// URL", 2)
    end
  end
  base = (base or "https://api.openai.com/v1"):gsub("/+$", "")
  local key = o.api_key
  if key == nil then
    key = os.getenv("OPENAI_API_KEY")
    if key and args.kinds.line(key) then
      error("openai.client: $OPENAI_API_KEY must not contain CR, LF or NUL", 2)
    end
  end
  local headers = {}
  for k, v in pairs(o.headers or {}) do headers[k] = v end
  if key and key ~= "" then headers.Authorization = "Bearer " .. key end
  local transport = {}
  for _, k in ipairs(transport_keys) do transport[k] = o[k] end
  local secrets = add_secrets({}, headers)
  return setmetatable({ base_url = base, model = o.model, timeouts = o.timeouts, transport = transport,
                        _headers = headers, _secrets = secrets[1] and secrets or nil }, Client)
end

function Client:__tostring()
  return "sluice.openai.client (" .. self.base_url .. ")"
end

local function merged(a, b)
  if not b then return a end
  if not a then return b end
  local t = {}
  for k, v in pairs(a) do t[k] = v end
  for k, v in pairs(b) do t[k] = v end
  return t
end

-- Raises unless self (argument 1 of method fname) is a client.
local function check_client(fname, self, level)
  if getmetatable(self) ~= Client then
    args.raise(fname, 1, "sluice.openai.client expected, got " .. type(self), level + 1)
  end
end

-- Checks the arguments of client:chat or :complete (fname); returns opts.
local function check_open(fname, self, body, opts, level)
  check_client(fname, self, level + 1)
  args.check(fname, 2, "body", body, "table", level + 1)
  opts = args.options(fname, 3, opts, open_spec, level + 1)
  return opts  -- not a tail call: the levels count this function
end

-- The secrets of a request: the client's, and those of its own headers.
local function request_secrets(self, headers)
  if not headers then return self._secrets end
  local list = add_secrets({}, headers)
  if not list[1] then return self._secrets end
  for _, v in ipairs(self._secrets or {}) do list[#list + 1] = v end
  return list
end

local function open(self, path, body, opts)
  local req = {}
  for k, v in pairs(body) do req[k] = v end
  req.stream = true
  if req.model == nil then req.model = self.model end
  if opts.usage or opts.continuous_usage then
    local so = {}
    if type(body.stream_options) == "table" then
      for k, v in pairs(body.stream_options) do so[k] = v end
    end
    so.include_usage = true
    if opts.usage == "continuous" or opts.continuous_usage then so.continuous_usage_stats = true end
    req.stream_options = so
  end
  local pol = opts.stop_when and policy.start(opts.stop_when)
  local started = now()
  local s = sluice.stream(with_transport(self, {
    url = self.base_url .. path, json = req,
    headers = merged(self._headers, opts.headers),
    timeouts = merged(self.timeouts, opts.timeouts),
    max_event_bytes = opts.max_event_bytes,
  }))
  local chat = setmetatable({
    s = s, started = started, over = false,
    pieces = {}, np = 0, n = 0, rpieces = {}, nr = 0, ntool = 0,
    tools = false, tool_order = false, calls = {},
    finish_reason = nil, stop_reason = nil, usage = nil, usage_tokens = nil, usage_at = 0,
    got_done = false, require_done = opts.require_done ~= false,
    error = nil, first_at = nil, secrets = request_secrets(self, opts.headers), last_content = false,
    emit = false, queue = false, qhead = 1, qtail = 0,
    pol = pol or false, timed = pol and pol.deadline ~= nil or false, st = false,
  }, Chat)
  if pol then chat.st = policy.state(chat, started) end
  return chat
end

-- client:chat(body, opts) -> stream: POST {base_url}/chat/completions with
-- stream = true. opts: stop_when = policy, usage = true | "continuous",
-- timeouts, headers, require_done (default true), max_event_bytes.
function Client:chat(body, opts)
  opts = check_open("client:chat", self, body, opts, 2)
  return open(self, "/chat/completions", body, opts)
end

-- client:complete(body, opts) -> stream: POST {base_url}/completions.
function Client:complete(body, opts)
  opts = check_open("client:complete", self, body, opts, 2)
  return open(self, "/completions", body, opts)
end

-- client:models() -> list of model ids | nil, err
function Client:models()
  check_client("client:models", self, 2)
  local res, err = sluice.fetch(with_transport(self, { url = self.base_url .. "/models",
                                                      headers = self._headers, timeouts = self.timeouts }))
  if not res then return nil, err end
  if res.status >= 400 then  -- a fetch's body is as the server sent it
    return nil, http_error({ status = res.status, body = res.body }, self._secrets)
  end
  local doc = decode(res.body)
  local ids = {}
  if type(doc) == "table" and type(doc.data) == "table" then
    for _, m in ipairs(doc.data) do
      if type(m) == "table" and type(m.id) == "string" then ids[#ids + 1] = m.id end
    end
  end
  return ids
end

return openai
