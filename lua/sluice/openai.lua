-- sluice.openai: streaming chat and text completions from OpenAI-compatible
-- servers (vLLM, llama.cpp, SGLang, TGI, Ollama, OpenAI), as text pieces or
-- typed events, with stop policies applied as the chunks arrive. Stopping --
-- by a policy, by cancel(), by leaving a loop -- closes the connection at once.
--
-- The chat stream's hot path lives here (deltas(): one C call per simple text
-- chunk); openai/chunk.lua knows the chunks' JSON shape and assembles tool
-- calls, openai/errors.lua turns what the server reported into error values,
-- openai/request.lua checks options and builds requests.
local sluice = require "sluice"
local policy = require "sluice.policy"
local args = require "sluice.args"
local chunk = require "sluice.openai.chunk"
local errors = require "sluice.openai.errors"
local request = require "sluice.openai.request"

local decode = require("cjson.safe").decode
local now = sluice.now
local concat, sub, format = table.concat, string.sub, string.format
local type, setmetatable = type, setmetatable
local chars = policy.chars
local new_error, int, ints = errors.new, errors.int, errors.ints

local openai = {}
openai.decode_chunk = chunk.decode

-- The core stream's reading methods (public: s:next, s:next_text), taken
-- from the first stream and kept as upvalues: the hot path calls them once
-- per chunk. next_text returns a simple text chunk as a bare string, decoded
-- in C.
local next_event, next_text

-- ---------------------------------------------------------------------------
-- Choices. A choice's state: its content pieces (pieces, np, n: content
-- chunks), reasoning (rpieces, nr), tool calls (tools, tool_order, calls,
-- ntool: tool-call chunks), finish_reason, logprobs, and its policy (pol, st).
-- The chat stream is choice 0's state itself, so the hot path of n = 1 is
-- what it always was; choices 1.. (n > 1) are tables of their own.

local function text_of(c)
  local np = c.np
  if np == 0 then return "" end
  local pieces = c.pieces
  if np > 1 then
    local t = concat(pieces, "", 1, np)
    for i = np, 2, -1 do pieces[i] = nil end
    pieces[1] = t
    c.np = 1
  end
  return pieces[1]
end

local function reasoning_of(c)
  local nr = c.nr
  if nr == 0 then return "" end
  return concat(c.rpieces, "", 1, nr)
end

local Choice = { __index = { text = text_of, reasoning = reasoning_of } }

local function new_choice(chat, index)
  local c = setmetatable({
    index = index, pieces = {}, np = 0, n = 0, rpieces = {}, nr = 0, ntool = 0,
    tools = false, tool_order = false, calls = {}, finish_reason = nil, logprobs = nil,
    pol = false, st = false, last_content = false, first_at = nil,
  }, Choice)
  if chat.policy_value then
    c.pol = policy.start(chat.policy_value)
    c.st = policy.state(c, chat.started)
  end
  return c
end

-- The state of choice index (0: the chat stream itself).
local function choice(self, index)
  if index == 0 then return self end
  local others = self.others
  if not others then
    others = {}
    self.others = others
  end
  local c = others[index]
  if not c then
    c = new_choice(self, index)
    others[index] = c
    self.nchoices = math.max(self.nchoices, index + 1)
  end
  return c
end

-- Every choice's state, in index order.
local function each_choice(self)
  local list = { self }
  for i = 1, self.nchoices - 1 do
    if self.others and self.others[i] then list[#list + 1] = self.others[i] end
  end
  return list
end

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

local function fail(self, err)
  self.over = true
  self.error = err
  self.s:cancel(err.message)  -- does nothing once the stream is over
  if self.emit then emit(self, { type = "error", error = err, index = 0 }) end
end

-- A call's arguments decoded (integers as integers), or nil.
local function tool_args(a)
  local doc = decode(a ~= "" and a or "{}")
  return type(doc) == "table" and ints(doc) or nil
end

-- A tool call of choice c is complete: a "tool_call" event.
local function on_tool_call(self, c, call_index, call, raw)
  if self.emit then
    local a = call["function"].arguments
    emit(self, { type = "tool_call", index = c == self and 0 or c.index, call_index = call_index,
                 id = call.id, name = call["function"].name, arguments = a,
                 args = tool_args(a), call = call, raw = raw })
  end
end

local function flush_tools(self, c, raw)
  chunk.flush_tools(c, nil, function(st, i, call) on_tool_call(self, st, i, call, raw) end)
end

-- Cuts choice c's content at byte trim_at (a match's start). Returns the part
-- of the latest piece d that is still before the cut.
local function apply_trim(c, trim_at, d)
  local before = c.st.bytes - #d  -- content bytes before d
  local text = sub(text_of(c), 1, trim_at - 1)
  c.pieces[1] = text
  c.np = text == "" and 0 or 1
  local keep = trim_at > before + 1 and sub(d, 1, trim_at - before - 1) or nil
  local ev = c.last_content
  if ev then ev.text = keep or "" end  -- events(): skipped when emptied
  return keep
end

-- Updates choice c's policy state after a chunk (delta = its content, or "";
-- generated = it carried output) or a deadline wake-up, and asks the policy;
-- a policy that fires on any choice stops the stream. Returns the part of
-- delta to hand out (all of it unless a trimming policy cut it), nil when
-- there is none.
local function check(self, c, delta, generated)
  local st = c.st
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
  local count = c.n + c.nr + c.ntool
  local ut = self.nchoices == 1 and self.usage_tokens  -- a count over all choices
  st.tokens = ut and (ut + count - self.usage_at) or count
  st.usage = self.usage
  local pol = c.pol
  local reason, trim_at = pol.check(pol, st)
  if reason then
    if trim_at then delta = apply_trim(c, trim_at, delta) end
    stop(self, reason)
  end
  if delta ~= "" then return delta end
end

local function add_content(self, c, text, raw)
  local n = c.n + 1
  c.n = n
  local np = c.np + 1
  c.np = np
  c.pieces[np] = text
  if n == 1 then c.first_at = now() end
  if self.emit then
    local ev = { type = "content", text = text, index = c == self and 0 or c.index, raw = raw }
    c.last_content = ev
    emit(self, ev)
  end
end

-- The response's own fields, from the first chunk that has them.
local function take_meta(self, doc)
  if self.id == nil and type(doc.id) == "string" then self.id = doc.id end
  if self.model == nil and type(doc.model) == "string" then self.model = doc.model end
  if self.created == nil and type(doc.created) == "number" then self.created = int(doc.created) end
  if self.object == nil and type(doc.object) == "string" then self.object = doc.object end
  local fp, tier = doc.system_fingerprint, doc.service_tier
  if type(fp) == "string" then self.system_fingerprint = fp end
  if type(tier) == "string" then self.service_tier = tier end
end

local function take_usage(self, usage, raw)
  self.usage = ints(usage)
  local ct = usage.completion_tokens
  if math.type(ct) == "integer" then
    self.usage_tokens = ct
    self.usage_at = self.n + self.nr + self.ntool
  end
  if self.emit then emit(self, { type = "usage", usage = self.usage, index = 0, raw = raw }) end
end

-- The end of the response body: it must have said [DONE], and every choice
-- must have finished.
local function ended(self)
  if self.over then return end
  local missing
  for _, c in ipairs(each_choice(self)) do
    flush_tools(self, c)
    if not c.finish_reason then missing = "a finish_reason" end
  end
  if not self.got_done and self.require_done then
    missing = missing and (missing .. " or [DONE]") or "[DONE]"
  end
  if missing then
    fail(self, new_error("protocol", "stream ended without " .. missing))
  else
    self.over = true
  end
end

-- What one choice entry of a chunk (or of a whole completion) says. Returns
-- the choice's state, its content (or nil) and whether it carried output.
local function on_choice(self, entry, position, raw)
  local c = choice(self, chunk.index(entry, position))
  local content, reasoning, tools, finish, lp = chunk.choice(entry)
  local generated = false
  local index = c == self and 0 or c.index
  if reasoning then
    local nr = c.nr + 1
    c.nr = nr
    c.rpieces[nr] = reasoning
    generated = true
    if self.emit then emit(self, { type = "reasoning", text = reasoning, index = index, raw = raw }) end
  end
  if content then
    add_content(self, c, content, raw)
    if self.tracing and c == self then self.s:trace_text(content) end  -- the fast path's pieces, C traces
    generated = true
  end
  if tools then
    chunk.add_tools(c, tools, function(st, i, call) on_tool_call(self, st, i, call, raw) end,
                    self.emit and function(st, i, tc)
                      emit(self, { type = "tool_call_delta", index = index, call_index = i, id = tc.id,
                                   name = tc.name or "", arguments = concat(tc.args), raw = raw })
                    end or nil)
    c.ntool = c.ntool + 1
    generated = true
  end
  if lp then c.logprobs = chunk.add_logprobs(c.logprobs, lp) end
  if finish then
    flush_tools(self, c, raw)
    c.finish_reason = finish
    if self.emit then emit(self, { type = "finish", finish_reason = finish, index = index, raw = raw }) end
  end
  return c, content, generated
end

-- The choices of a decoded chunk (or whole completion) doc, then its usage,
-- then the policies of the choices that moved (a policy sees the usage that
-- came with the chunk). Returns the first choice's content to hand out.
local function on_choices(self, doc, raw)
  local out, moved = nil, nil
  local choices = doc.choices
  if type(choices) == "table" then
    for i = 1, #choices do
      local entry = choices[i]
      if type(entry) == "table" then
        local c, content, generated = on_choice(self, entry, i, raw)
        if c == self then out = content end
        if c.pol and generated then
          moved = moved or {}
          moved[#moved + 1] = { c, content or "", true }
        end
      end
    end
  end
  local usage = doc.usage
  if type(usage) == "table" then
    take_usage(self, usage, raw)
    if self.pol and not moved then moved = { { self, "", false } } end
  end
  if moved then
    for _, m in ipairs(moved) do
      if self.over then break end
      local o = check(self, m[1], m[2], m[3])
      if m[1] == self then out = o end
    end
  end
  return out
end

-- [DONE]: the response is over. Its end (the chunked body's last bytes)
-- usually came with it; a server or proxy that holds the connection open
-- after [DONE] is not waited for: the stream is let go at once.
local function on_done_event(self)
  self.got_done = true
  for _, c in ipairs(each_choice(self)) do
    flush_tools(self, c)
    if not c.finish_reason then
      fail(self, new_error("protocol", "stream ended without a finish_reason"))
      return
    end
  end
  self.over = true
  local s = self.s
  if s:state() == "streaming" then s:cancel("[DONE]") end
end

-- A full event from the core (anything but a simple text chunk). Returns the
-- content to hand out, if any.
local function on_event(self, ev)
  local data = ev.data
  if ev.event ~= "message" then
    if ev.event == "error" then
      fail(self, errors.in_stream(decode(data), data, "error event", self.secrets))
    end
    return nil  -- other event types are not part of the protocol
  end
  if self.got_done then return nil end
  if data == "[DONE]" then
    on_done_event(self)
    return nil
  end
  local doc, err = chunk.decode(data)
  if not doc then
    if err == false then fail(self, errors.malformed(data, self.secrets))
    else fail(self, errors.in_stream(err, data, "error chunk", self.secrets)) end
    return nil
  end
  take_meta(self, doc)
  return on_choices(self, doc, self.emit and doc or nil)
end

-- A 200 that was no event stream: a server that ignored stream = true sent
-- the whole completion as JSON; it becomes the result (deltas() yields its
-- text once). Anything else (a proxy's HTML page) is the protocol error the
-- core made of it.
local function on_not_stream(self, err)
  local doc = (err.content_type or ""):find("json", 1, true) and decode(err.body or "")
  if type(doc) ~= "table" or type(doc.choices) ~= "table" then
    if type(doc) == "table" and errors.fields(doc) then
      return fail(self, errors.in_stream(doc, err.body, "instead of a stream", nil))
    end
    return fail(self, err)
  end
  take_meta(self, doc)
  local as_chunk = { choices = {}, usage = doc.usage }
  for i, entry in ipairs(doc.choices) do
    local msg = type(entry) == "table" and entry.message
    if type(msg) == "table" then  -- chat: a message in place of a delta
      entry = { index = entry.index, finish_reason = entry.finish_reason, logprobs = entry.logprobs,
                delta = { content = msg.content, reasoning_content = msg.reasoning_content,
                          reasoning = msg.reasoning, tool_calls = msg.tool_calls } }
      if type(msg.tool_calls) == "table" then
        for k, tc in ipairs(msg.tool_calls) do
          if type(tc) == "table" and tc.index == nil then tc.index = k - 1 end
        end
      end
    end
    as_chunk.choices[i] = entry
  end
  local out = on_choices(self, as_chunk, self.emit and doc or nil)
  self.got_done = true
  self.over = true
  return out
end

-- What the core's read returned when it was not a simple text piece.
local function on_read(self, ev, err)
  if ev then return on_event(self, ev) end
  if err == nil then
    ended(self)
  elseif err == "timeout" then  -- a policy deadline passed
    for _, c in ipairs(each_choice(self)) do
      if c.pol and not self.over then check(self, c, "", false) end
    end
  elseif err.kind == "cancelled" then  -- cancelled from elsewhere (another task, the core)
    if not self.over then
      self.over = true
      self.stop_reason = self.s:metrics().cancel_reason or "cancelled"
    end
  elseif err.kind == "http" then
    fail(self, errors.http(err))
  elseif err.kind == "protocol" and err.content_type then
    return on_not_stream(self, err)
  else
    fail(self, err)
  end
end

-- The earliest time a policy of any choice may fire although nothing
-- arrives, or nil.
local function next_deadline(self)
  local best
  for _, c in ipairs(each_choice(self)) do
    local pol = c.pol
    local d = pol and pol.deadline and pol.deadline(pol, c.st)
    if d and (not best or d < best) then best = d end
  end
  return best
end

-- Reads until a piece of content can be handed out (returned) or the stream
-- is over (nil). In events mode every chunk is decoded in full (events carry
-- it as ev.raw), and it returns true once events are queued.
local function pull(self)
  local s = self.s
  local read = self.emit and next_event or next_text
  while not self.over do
    local ev, err
    if self.timed then
      local d = next_deadline(self)
      if d then
        local left = d - now()
        ev, err = read(s, left > 0.001 and left or 0.001)
      else
        ev, err = read(s)
      end
    else
      ev, err = read(s)
    end
    local out
    if type(ev) == "string" then
      if ev ~= "" then
        add_content(self, self, ev)
        out = ev
        if self.pol then out = check(self, self, ev, true) end
      end
    else
      out = on_read(self, ev, err)
    end
    if out then return out end
    if self.emit and self.qhead <= self.qtail then return true end
  end
end

-- for piece in chat:deltas(): the content of the first choice as it arrives.
-- Without a policy or events, the hot path: a simple chunk is one C call and
-- add_content's three lines, written out (calling add_content costs 5% more
-- instructions per chunk, measured with callgrind); everything else goes
-- through on_read, as in pull().
local function deltas_next(self)
  if not self.pol and not self.emit then
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

-- for ev in chat:events(): typed events of every choice (ev.index); ev.type
-- is "content", "reasoning", "tool_call" (a whole call), "tool_call_delta"
-- (a call's arguments so far, as they stream), "usage", "finish" or "error",
-- and ev.raw the decoded chunk. After an error event the next call raises it.
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

-- The first choice's content so far (cut at a trimming policy's match).
Chat.text = text_of

-- The first choice's reasoning text so far (reasoning_content / reasoning).
Chat.reasoning = reasoning_of

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

-- "done" once the server finished, though the connection was let go after
-- [DONE]; else the core stream's state.
function Chat:state()
  if self.got_done and not self.error then return "done" end
  return self.s:state()
end
function Chat:status() return self.s:status() end
function Chat:headers() return self.s:headers() end
function Chat:header(name) return self.s:header(name) end

-- The stream's metrics (the core's, plus tokens over every choice, the first
-- choice's content_tokens, and ttft).
function Chat:metrics()
  local m = self.s:metrics()
  local tokens = 0
  for _, c in ipairs(each_choice(self)) do tokens = tokens + c.n + c.nr + c.ntool end
  m.tokens = tokens
  m.content_tokens = self.n
  if self.first_at then m.ttft = self.first_at - self.started end
  m.stop_reason = self.stop_reason
  if self.error then m.error = self.error end
  return m
end

-- Reads what is left (policies still apply) and returns the outcome. Never
-- raises for a failed stream: see result().error. choices[i] is choice i - 1;
-- text, reasoning, finish_reason, tool_calls and logprobs are the first's.
function Chat:result()
  self.emit = false
  while not self.over do pull(self) end
  local m = self:metrics()
  m.chars = chars(text_of(self))
  local choices = {}
  for _, c in ipairs(each_choice(self)) do
    local index = c == self and 0 or c.index
    choices[index + 1] = {
      index = index, text = text_of(c), reasoning = c.nr > 0 and reasoning_of(c) or nil,
      finish_reason = c.finish_reason, tool_calls = c.calls, logprobs = c.logprobs,
    }
  end
  return {
    text = text_of(self), reasoning = self.nr > 0 and reasoning_of(self) or nil,
    finish_reason = self.finish_reason, stop_reason = self.stop_reason,
    usage = self.usage, tool_calls = self.calls, logprobs = self.logprobs, choices = choices,
    id = self.id, model = self.model, created = self.created, object = self.object,
    system_fingerprint = self.system_fingerprint, service_tier = self.service_tier,
    metrics = m, error = self.error,
  }
end

function Chat:__tostring()
  return format("sluice.openai.stream (%s)", self:state())
end

-- ---------------------------------------------------------------------------
-- The client

local Client = { __name = "sluice.openai.client" }
Client.__index = Client

-- openai.client{base_url=, api_key=, headers=, timeouts=, model=, insecure=,
-- ca_file=, proxy=, http2=}: base_url defaults to $OPENAI_BASE_URL (else
-- OpenAI's), api_key to $OPENAI_API_KEY (sent as "Authorization: Bearer").
-- client.timeouts shows the defaults (connect 10, first_byte 600, idle 120
-- seconds) with the client's own over them; false disables one. Everything
-- is checked here as the core checks its own options: misuse raises now,
-- naming openai.client, not at the first request.
function openai.client(o)
  local fields = request.client_fields(o, 2)
  return setmetatable(fields, Client)
end

function Client:__tostring()
  return "sluice.openai.client (" .. self.base_url .. ")"
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
  opts = args.options(fname, 3, opts, request.open_spec, level + 1)
  return opts  -- not a tail call: the levels count this function
end

local function open(self, path, body, opts)
  local req = request.body(self, body, opts)
  local started = now()
  local s = sluice.stream(request.stream_opts(self, path, req, opts))
  if not next_text then next_event, next_text = s.next, s.next_text end
  local tracing = sluice.trace() ~= nil
  if tracing then  -- what a report needs besides the core's lines
    s:trace_note { layer = "openai", path = path, model = type(req.model) == "string" and req.model or nil,
                   max_tokens = math.tointeger(req.max_tokens or req.max_completion_tokens),
                   n = math.tointeger(req.n), policy = opts.stop_when and tostring(opts.stop_when) or nil }
  end
  local pol = opts.stop_when and policy.start(opts.stop_when)
  local chat = setmetatable({
    s = s, started = started, over = false,
    pieces = {}, np = 0, n = 0, rpieces = {}, nr = 0, ntool = 0,
    tools = false, tool_order = false, calls = {}, logprobs = nil,
    others = false, nchoices = 1,
    finish_reason = nil, stop_reason = nil, usage = nil, usage_tokens = nil, usage_at = 0,
    got_done = false, require_done = opts.require_done ~= false,
    error = nil, first_at = nil, secrets = request.secrets(self, opts.headers), last_content = false,
    emit = false, queue = false, qhead = 1, qtail = 0,
    policy_value = opts.stop_when or false, tracing = tracing,
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
  local o = request.stream_opts(self, "/models", nil, {})
  o.json, o.confirm = nil, nil
  local res, err = sluice.fetch(o)
  if not res then return nil, err end
  if res.status >= 400 then return nil, errors.from_response(res, self._secrets) end
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
