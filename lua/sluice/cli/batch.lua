-- sluice batch: run a file of requests through an inference server, stopping each as a policy says (--help: options)
-- A thin wrapper over require("sluice.batch").run: the flags below map onto
-- its options one to one. Exit status: 0 when every input line has its
-- record (failed requests included: they are in the file), 1 when the run
-- was interrupted, 2 for usage or input errors.
local batch = require "sluice.batch"

local USAGE = [[
usage: sluice batch -i requests.jsonl -o results.jsonl [options]
       sluice batch --prompts prompts.txt --model M -o results.jsonl [options]

Sends every request of an OpenAI Batch file (one JSON object a line:
custom_id, method, url, body) to an OpenAI-compatible server, streaming, and
writes one JSON line a request in the Batch output format, with a "sluice"
object (stop_reason, attempts, ttft/tpot/itl/e2e, output tokens, endpoint).
A request a policy stops is closed upstream at once, and is a success.
Running the same command again skips what is done: resume after a crash.

input and output
  -i, --input FILE       the requests (OpenAI Batch format); - reads stdin
      --prompts FILE     quick mode: one prompt a line (custom_id = line number)
      --model M          the model for --prompts
  -o, --output FILE      the results, appended; what is in it is skipped
      --redo-failed      run again only the requests whose record holds an error
      --shard K/N        only the lines whose custom_id hashes to K (0..N-1)
      --summary FILE     write the summary as JSON too
      --trace FILE       a trace of every stream (sluice report FILE draws it)
      --confirm HOW      after a stop, ask the server when it stopped (sluice-mock,
                         llamacpp, vllm): in the trace, as server_stopped_at
  -q, --quiet            no progress, no summary

server and load
      --base-url URL     like $OPENAI_BASE_URL (http://host:port/v1); repeat
                         it for several servers (the least busy gets each
                         request; one that fails to connect is set aside)
  -c, --concurrency N    requests at once (default 64)
      --rate R           start at most R requests a second
      --poisson          with --rate: Poisson arrivals
      --retries N        retries of a request that failed before any output
                         (connection errors, 429, 5xx; default 3)
      --retry-base S     first back-off in seconds (default 0.5; doubles,
                         with jitter; a server's Retry-After wins)
      --first-byte-timeout S, --idle-timeout S, --connect-timeout S
                         the client's timeouts (default 600, 120, 10)
      --insecure         do not verify TLS certificates
      --ca-file FILE     trust this CA

stop policies (any of them stops a request)
      --stop-on STR      stop when the output contains STR (repeatable)
      --max-output N     stop after N output tokens
      --deadline S       stop S seconds after the request started
      --ttft S           stop when no token came within S seconds
      --idle S           stop when no token came for S seconds
      --policy FILE      a Lua file returning a sluice.policy value, or a
                         function(request) returning one (or nil)

The API key comes from $OPENAI_API_KEY. Exit status: 0 when every line has
its record (failures included), 1 when interrupted, 2 for usage errors.
]]

local cl = require("sluice.cmdline").new("sluice batch", arg, USAGE)
local function usage_error(msg) cl:error(msg) end

local o = { base_url = nil, stop_on = nil }
local timeouts
for a in cl:each() do
  if a == "-i" or a == "--input" then o.input = cl:value(a)
  elseif a == "--prompts" then o.prompts = cl:value(a)
  elseif a == "--model" then o.model = cl:value(a)
  elseif a == "-o" or a == "--output" then o.output = cl:value(a)
  elseif a == "--redo-failed" then o.redo_failed = true
  elseif a == "--shard" then
    o.shard = cl:value(a)
    local k, n = o.shard:match("^(%d+)/(%d+)$")
    if not k or tonumber(k) >= tonumber(n) then usage_error("--shard needs K/N with 0 <= K < N") end
  elseif a == "--summary" then o.summary = cl:value(a)
  elseif a == "--trace" then o.trace = cl:value(a)
  elseif a == "--confirm" then o.confirm = cl:value(a)
  elseif a == "-q" or a == "--quiet" then o.quiet = true
  elseif a == "--base-url" then
    o.base_url = o.base_url or {}
    o.base_url[#o.base_url + 1] = cl:value(a)
  elseif a == "-c" or a == "--concurrency" then o.concurrency = cl:integer(a, 1)
  elseif a == "--rate" then o.rate = cl:number(a)
  elseif a == "--poisson" then o.poisson = true
  elseif a == "--retries" then o.retries = cl:integer(a, 0)
  elseif a == "--retry-base" then o.retry_base = cl:number(a)
  elseif a == "--first-byte-timeout" or a == "--idle-timeout" or a == "--connect-timeout" then
    timeouts = timeouts or {}
    timeouts[a:match("^%-%-(.-)%-timeout$"):gsub("-", "_")] = cl:number(a)
  elseif a == "--insecure" then o.insecure = true
  elseif a == "--ca-file" then o.ca_file = cl:value(a)
  elseif a == "--stop-on" then
    o.stop_on = o.stop_on or {}
    o.stop_on[#o.stop_on + 1] = cl:value(a)
  elseif a == "--max-output" then o.max_output = cl:integer(a, 1)
  elseif a == "--deadline" then o.deadline = cl:number(a)
  elseif a == "--ttft" then o.ttft = cl:number(a)
  elseif a == "--idle" then o.idle = cl:number(a)
  elseif a == "--policy" then
    local file = cl:value(a)
    local chunk, err = loadfile(file)
    if not chunk then usage_error("--policy: " .. err) end
    local ok, p = pcall(chunk)
    if not ok then usage_error("--policy " .. file .. ": " .. tostring(p)) end
    o.policy = p
  else
    usage_error("unknown option " .. a)
  end
end
o.timeouts = timeouts

if not o.output then usage_error("-o/--output is required") end
if not o.input and not o.prompts then usage_error("give -i/--input FILE or --prompts FILE") end
if o.input and o.prompts then usage_error("give -i/--input or --prompts, not both") end
if o.prompts and not o.model then usage_error("--prompts needs --model") end
for _, f in ipairs { o.input ~= "-" and o.input or nil, o.prompts } do
  local h = io.open(f, "rb")
  if not h then usage_error("cannot read " .. f) end
  h:close()
end

o.on_interrupt = function() os.exit(1) end
local ok, summary, err = pcall(batch.run, o)
if not ok then
  if tostring(summary):find("bad argument", 1, true) then usage_error(tostring(summary)) end
  io.stderr:write("sluice batch: ", tostring(summary), "\n")
  os.exit(1)
end
if not summary then usage_error(err) end
if summary.requests + summary.skipped < summary.total then os.exit(1) end
os.exit(0)
