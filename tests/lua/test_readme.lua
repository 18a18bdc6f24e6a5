-- Every command in README.md runs as written. The page's convention:
--   ```sh   each line is a command. It runs with sh in a scratch directory
--           where build/ is the build under test (its sluice, sluice-mock)
--           and examples/, scripts/, lua/ are the sources; OPENAI_* unset.
--   ```lua  each block is a whole script, run by that sluice as a child from
--           the same directory. A block whose first line is `-- NAME.lua` is
--           also saved there as NAME.lua, for the commands that run it.
--   `--> text` in a comment (`# --> text` after a command; `--> text` after a
--           Lua line or on a line of its own) says what the output contains;
--           each must appear, in order, spaces and tabs counting as one.
--   http://127.0.0.1:8000, where the page's `sluice mock --port 8000`
--           listens, is this test's own sluice-mock (T.url).
-- Other blocks (no language, ```python, ...) are not run. A command must exit
-- 0. The commands that do not run as they are written are listed below,
-- with the reason.
local sluice = require "sluice"
local T = require "testlib"

local here = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
local root = here .. "/../.."
local bin = assert(os.getenv("SLUICE_BIN"), "SLUICE_BIN")
local bindir = bin:match("^(.*)/[^/]*$")

-- Not run, and why.
local SKIP = {
  ["./scripts/demo"] = "configures and builds the source tree in build/ (the tree under test when " ..
                       "ctest runs from build/); what it shows is examples/stop_on_keyword.lua, run " ..
                       "by test_examples.lua",
  ["./scripts/test"] = "runs this very suite, and the sanitizer build",
}
-- Servers in the foreground, run until they say they are listening, then
-- stopped with SIGINT (Ctrl-C): { command to run instead (no fixed port),
-- what it prints once ready, the exit status Ctrl-C gives }.
local SERVERS = {
  ["build/sluice mock --port 8000"] = { "build/sluice mock --port 0", "sluice-mock listening on http://127.0.0.1:", 130 },
}

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function read_file(path) return assert(T.read_file(path), "cannot read " .. path) end

local write_file = T.write_file

local function squash(s) return (s:gsub("[ \t]+", " ")) end

-- The page's URL becomes the test's mock (plain text, not a pattern).
local function localize(s)
  local out = s:gsub("http://127%.0%.0%.1:8000", (T.url:gsub("%%", "%%%%")))
  return out
end

-- Checks that the expected texts appear in out, in that order.
local function expect_in(out, expected, what)
  local text, pos = squash(out), 1
  for _, e in ipairs(expected) do
    local at, stop = text:find(squash(e), pos, true)
    if not at then
      error(("%s: output lacks %q (after what was already matched):\n%s"):format(what, e, out), 2)
    end
    pos = stop + 1
  end
end

-- The blocks of the page: { lang, first_line, lines = { {text, number} } }.
local function blocks(path)
  local list, cur, n = {}, nil, 0
  for line in io.lines(path) do
    n = n + 1
    if cur then
      if line:match("^```%s*$") then
        list[#list + 1] = cur
        cur = nil
      else
        cur.lines[#cur.lines + 1] = { line, n }
      end
    else
      local lang = line:match("^```(%S*)%s*$")
      if lang then cur = { lang = lang, first_line = n + 1, lines = {} } end
    end
  end
  assert(not cur, "README.md: a ``` block is not closed")
  return list
end

local all = blocks(root .. "/README.md")
local sh_lines, lua_blocks = {}, {}
for _, b in ipairs(all) do
  if b.lang == "sh" then
    for _, l in ipairs(b.lines) do
      if not l[1]:match("^%s*$") and not l[1]:match("^%s*#") then sh_lines[#sh_lines + 1] = l end
    end
  elseif b.lang == "lua" then
    lua_blocks[#lua_blocks + 1] = b
  end
end

-- The scratch directory: build/ is the build under test.
local dir = os.tmpname()
os.remove(dir)
assert(sluice.exec { "mkdir", dir })
assert(sluice.exec { "ln", "-s", bindir, dir .. "/build" })
for _, d in ipairs { "examples", "scripts", "lua" } do
  assert(sluice.exec { "ln", "-s", root .. "/" .. d, dir .. "/" .. d })
end
for _, b in ipairs(lua_blocks) do
  local name = b.lines[1] and b.lines[1][1]:match("^%-%- ([%w_.-]+%.lua)$")
  local text = {}
  for i, l in ipairs(b.lines) do text[i] = l[1] end
  b.source = localize(table.concat(text, "\n") .. "\n")
  if name then write_file(dir .. "/" .. name, b.source) end
end

local env_prefix = "unset OPENAI_BASE_URL OPENAI_API_KEY OPENAI_MODEL; "

T.case("the page keeps its promises about itself", function()
  local n = 0
  for line in io.lines(root .. "/README.md") do n = n + 1 end
  T.le(n, 200, "README.md lines")
  local text = read_file(root .. "/README.md")
  T.ok(text:match("^# sluice\n\n```sh\n%./scripts/demo .-\n%./scripts/test "), "the two commands come first")
  for cmd in pairs(SKIP) do
    local found = false
    for _, l in ipairs(sh_lines) do if l[1]:match("^(%S+)") == cmd then found = true end end
    T.ok(found, "a skipped command is still on the page: " .. cmd)
  end
  T.ok(#lua_blocks >= 5 and #sh_lines >= 6, "blocks found: " .. #lua_blocks .. " lua, " .. #sh_lines .. " sh lines")
end)

for _, l in ipairs(sh_lines) do
  local line, n = l[1], l[2]
  local cmd = line:match("^(.-)%s+#%s*%-%->") or line
  local name = line:match("^(.-)%s+#") or line  -- without its comment
  local skip = SKIP[line:match("^(%S+)")]
  local server = SERVERS[cmd]
  if skip then
    print(("skip - README.md:%d: %s: %s"):format(n, name, skip))
  else
    T.case(("README.md:%d: %s"):format(n, name), function()
      local expected = {}
      local e = line:match("#%s*%-%->%s*(.-)%s*$")
      if server then
        -- started in the background, stopped as Ctrl-C would once ready
        local script = ([[
%s > out.server 2>&1 & pid=$!
for i in $(seq 1 200); do grep -q %s out.server && break; sleep 0.025; done
kill -INT $pid; wait $pid; status=$?; cat out.server; echo "exit status $status"; rm -f out.server]]):format(
          server[1], q(server[2]))
        local r = assert(sluice.exec(env_prefix .. script, { shell = true, cwd = dir, timeout = 30 }))
        expect_in(r.stdout, { server[2], "exit status " .. server[3] }, cmd)
        return
      end
      if e then expected[1] = localize(e) end
      local r = assert(sluice.exec(env_prefix .. localize(cmd) .. " </dev/null 2>&1",
                                   { shell = true, cwd = dir, timeout = 60 }))
      if r.code ~= 0 then
        error(("exit status %s (signal %s):\n%s"):format(tostring(r.code), tostring(r.signal), r.stdout))
      end
      expect_in(r.stdout, expected, cmd)
    end)
  end
end

for _, b in ipairs(lua_blocks) do
  T.case(("README.md:%d: the lua block"):format(b.first_line), function()
    local expected = {}
    for _, l in ipairs(b.lines) do
      local e = l[1]:match("%-%->%s*(.-)%s*$")
      if e then expected[#expected + 1] = localize(e) end
    end
    local file = dir .. "/block" .. b.first_line .. ".lua"
    write_file(file, b.source)
    local r = assert(sluice.exec(env_prefix .. q(bin) .. " " .. q(file) .. " </dev/null",
                                 { shell = true, cwd = dir, timeout = 60 }))
    os.remove(file)
    if r.code ~= 0 then
      error(("exit status %s (signal %s):\n%s%s"):format(tostring(r.code), tostring(r.signal),
                                                         r.stdout, r.stderr))
    end
    expect_in(r.stdout, expected, "the block at line " .. b.first_line)
  end)
end

assert(sluice.exec { "rm", "-rf", dir })
T.done()
