-- Checking what scripts pass to the public functions of the Lua layer, in the
-- core's words (src/largs.c): misuse raises an argument error at the caller's
-- line that names the function and the option as the script wrote it:
--   bad argument #1 to 'openai.client' (openai.client: unknown option 'timeouts.frist_byte')
-- A value is never echoed in a message: it may be a secret.
--
-- `level` arguments count as error()'s do in the function calling args: 2 is
-- that function's caller (the script's line). A helper between a public
-- function and args adds one, and must not call args in a tail call (its
-- frame would vanish). Checks run once per call, never per chunk.
local args = {}

local type, pairs, format, find = type, pairs, string.format, string.find
local tointeger = math.tointeger

-- At or above this many seconds a time means no limit (SL_NO_LIMIT in
-- src/runtime.h: what a millisecond timer can still count).
args.NO_LIMIT = 9007199254740.992

-- Raises "bad argument #argn to 'fname' (msg)" like luaL_argerror, naming
-- the function as the core does (always its full name, e.g. 'openai.client',
-- 'client:chat'); a method call counts self out of argn.
local function raise(fname, argn, msg, level)
  local info = debug.getinfo(level, "n")  -- the public function
  if info and info.namewhat == "method" then
    argn = argn - 1
    if argn == 0 then
      error(format("calling '%s' on bad self (%s)", fname, msg), level + 1)
    end
  end
  error(format("bad argument #%d to '%s' (%s)", argn, fname, msg), level + 1)
end
args.raise = raise

-- ---------------------------------------------------------------------------
-- Kinds. Each returns nil when v is fine, else what is wrong, worded to follow
-- "option 'x' " or a parameter's name. nil never reaches them.

local function crlf(s)
  return find(s, "[\r\n%z]") ~= nil
end

local kinds = {}

function kinds.flag(v)
  if type(v) ~= "boolean" then return "must be true or false, got " .. type(v) end
end

function kinds.string(v)
  if type(v) ~= "string" then return "must be a string, got " .. type(v) end
end

-- A string that reaches the wire whole (an API key, a proxy).
function kinds.line(v)
  if type(v) ~= "string" then return "must be a string, got " .. type(v) end
  if crlf(v) then return "must not contain CR, LF or NUL" end
end

function kinds.url(v)
  if type(v) ~= "string" then return "must be a string, got " .. type(v) end
  if find(v, "[%z\1-\31\127]") then
    return "must not contain control characters (CR, LF, NUL, ...)"
  end
  local scheme = v:match("^(%a+)://")
  scheme = scheme and scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then return "must be an http:// or https:// URL" end
end

kinds["function"] = function(v)
  if type(v) ~= "function" then return "must be a function, got " .. type(v) end
end

function kinds.table(v)
  if type(v) ~= "table" then return "must be a table, got " .. type(v) end
end

-- A time in seconds: a number >= 0 (huge: no limit), or false (none).
function kinds.seconds(v)
  if v == false then return nil end
  if type(v) ~= "number" then return "must be a number of seconds (or false), got " .. type(v) end
  if v ~= v then return "must be a number of seconds, not NaN" end
  if v < 0 then return "must not be negative" end
end

-- An integer >= min (a float with an integral value counts).
function args.integer(min)
  return function(v)
    if type(v) ~= "number" then return "must be an integer, got " .. type(v) end
    local i = tointeger(v)
    if not i then return "must be an integer, got a fraction" end
    if i < min then return format("must be at least %d", min) end
  end
end
kinds.count = args.integer(1)

-- Request headers as the core takes them: names are tokens, values strings
-- (or numbers) without CR, LF or NUL. A name is shown (control characters as
-- '?', at most 63 bytes); a value never.
function kinds.headers(v)
  if type(v) ~= "table" then return "must be a table, got " .. type(v) end
  for name, value in pairs(v) do
    if type(name) ~= "string" then
      return "must map names (strings) to values, got a " .. type(name) .. " key"
    end
    if not find(name, "^[%w!#$%%&'*+%-.^_`|~]+$") then
      local shown = name:sub(1, 63):gsub("[%z\1-\31\127]", "?")
      return "has a name that is not a token (letters, digits, !#$%&'*+-.^_`|~; "
             .. "no spaces, colons, CR, LF or NUL): '" .. shown .. "'"
    end
    local t = type(value)
    if t ~= "string" and t ~= "number" then
      return format("value of '%s' must be a string, got %s", name, t)
    end
    if t == "string" and crlf(value) then
      return format("value of '%s' must not contain CR, LF or NUL", name)
    end
  end
end

args.kinds = kinds

-- ---------------------------------------------------------------------------
-- Checks

-- Checks t[key] against kind (a name in kinds, a function, or a nested spec);
-- returns what is wrong and the option's path.
local check_options

local function check_value(v, kind, path)
  local tk = type(kind)
  if tk == "string" then return kinds[kind](v), path end
  if tk == "function" then return kind(v), path end
  if type(v) ~= "table" then return "must be a table, got " .. type(v), path end
  return check_options(v, kind, path .. ".")
end

-- Returns nil when every key of t is in spec and every value of its kind;
-- else what is wrong: (why, path) for an option, or (message) for a key.
function check_options(t, spec, prefix)
  for k, v in pairs(t) do
    if type(k) ~= "string" then
      return format("option names are strings, got a %s key%s%s", type(k),
                    prefix ~= "" and " in " or "", prefix)
    end
    local kind = spec[k]
    if kind == nil then return format("unknown option '%s%s'", prefix, k) end
    local why, path = check_value(v, kind, prefix .. k)
    if why then return why, path end
  end
end

-- args.options(fname, argn, t, spec, level) -> t (an empty table for nil):
-- argument argn of fname is an options table whose keys are all in spec,
-- spec[key] being the option's kind: "flag", "string", "line", "url",
-- "table", "function", "seconds", "count", "headers", a function(v) ->
-- why|nil, or a
-- table: the spec of a nested options table.
function args.options(fname, argn, t, spec, level)
  if t == nil then return {} end
  if type(t) ~= "table" then
    raise(fname, argn, format("%s: options must be a table, got %s", fname, type(t)), level + 1)
  end
  local why, path = check_options(t, spec, "")
  if why then
    if path then why = format("option '%s' %s", path, why) end
    raise(fname, argn, fname .. ": " .. why, level + 1)
  end
  return t
end

-- args.check(fname, argn, name, v, kind, level) -> v: argument argn (called
-- `name`) is of kind (as in args.options; nil is checked too).
function args.check(fname, argn, name, v, kind, level)
  local why = v == nil and "is required" or check_value(v, kind, name)
  if why then raise(fname, argn, format("%s: %s %s", fname, name, why), level + 1) end
  return v
end

-- args.seconds(fname, argn, v, level) -> v, or math.huge when v means no
-- limit: a time argument in the words of the core's sl_check_seconds.
function args.seconds(fname, argn, v, level)
  local why
  if type(v) ~= "number" then why = "must be a number of seconds"
  elseif v ~= v then why = "must be a number of seconds, not NaN"
  elseif v < 0 then why = "must not be negative" end
  if why then raise(fname, argn, fname .. ": seconds " .. why, level + 1) end
  if v >= args.NO_LIMIT then return math.huge end
  return v
end

return args
