#!/usr/bin/env bash
# Smoke test of sluice-mock with curl: every route and the main faults, and
# what /stats says the mock saw. Usage: tests/mock_smoke.sh path/to/sluice-mock
# Under a sanitizer build it also checks the shutdown was clean.
set -euo pipefail

MOCK=${1:?usage: mock_smoke.sh path/to/sluice-mock}
WORK=$(mktemp -d)
MOCK_PID=
REPLIES_PID=
declare -A STANDIN_PID=()
passed=0
failed=0

cleanup() {
  if [[ -n $MOCK_PID ]] && kill -0 "$MOCK_PID" 2>/dev/null; then
    kill -TERM "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
  fi
  if [[ -n $REPLIES_PID ]] && kill -0 "$REPLIES_PID" 2>/dev/null; then
    kill -TERM "$REPLIES_PID" 2>/dev/null || true
    wait "$REPLIES_PID" 2>/dev/null || true
  fi
  local pid
  for pid in "${STANDIN_PID[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok   - $1"; }
not_ok() {
  failed=$((failed + 1))
  echo "FAIL - $1"
  [[ -n ${2:-} ]] && printf '       %s\n' "${2:0:600}"
  return 0
}
# check NAME COMMAND...: passes when the command succeeds.
check() {
  local name=$1
  shift
  if "$@"; then ok "$name"; else not_ok "$name"; fi
}
contains() { [[ $1 == *"$2"* ]]; }
lacks() { [[ $1 != *"$2"* ]]; }
count() { grep -o -- "$2" <<<"$1" | wc -l | tr -d ' '; }

# started the one way every caller starts it
"$MOCK" --port 0 --url-file "$WORK/url" --exit-with-parent --tokens-per-sec 50 \
  >"$WORK/out" 2>"$WORK/err" &
MOCK_PID=$!
for _ in $(seq 100); do
  [[ -f $WORK/url ]] && break
  kill -0 "$MOCK_PID" 2>/dev/null || break
  sleep 0.05
done
BASE=$(cat "$WORK/url" 2>/dev/null || true)
PORT=${BASE##*:}
if [[ ! $BASE =~ ^http://127\.0\.0\.1:[0-9]+$ ]]; then
  echo "sluice-mock did not start (url file: '$BASE'):"
  cat "$WORK/out" "$WORK/err"
  exit 1
fi
CHAT=$BASE/v1/chat/completions

c() { curl -s --max-time 10 "$@" || true; }
# A process exited: kill -0 fails, or it is a zombie (an orphan's zombie waits
# for init, which may never reap it).
exited() {
  ! kill -0 "$1" 2>/dev/null || [[ $(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) == [ZX] ]]
}
# wait_for SECONDS COMMAND...: polls until the command succeeds.
wait_for() {
  local tries=$(($1 * 20))
  shift
  for _ in $(seq "$tries"); do
    "$@" && return 0
    sleep 0.05
  done
  "$@"
}

# ---- starting: --url-file --------------------------------------------------

# BASE matched as the whole file but its trailing newlines: exactly one is there
check "url file: the base URL and a newline, nothing else" [ "$(wc -l <"$WORK/url")" = 1 ]
check "url file: no .tmp left behind" [ ! -e "$WORK/url.tmp" ]
check "stdout still says where it listens" [ "$(cat "$WORK/out")" = "sluice-mock listening on $BASE" ]

# The /stats record of a request id (records hold no nested objects), of the
# main mock or of the one at $2.
record() { c "${2:-$BASE}/stats" | grep -o "{\"id\":\"$1\"[^}]*}" || true; }
# Polls until the record of $1 contains $2 (the mock notices at once; the
# client's own exit may take a moment); of the main mock or of the one at $3.
wait_record() {
  local r
  for _ in $(seq 50); do
    r=$(record "$1" "${3:-$BASE}")
    contains "$r" "$2" && break
    sleep 0.02
  done
  printf '%s' "$r"
}

# ---- plain routes ----------------------------------------------------------

out=$(c "$BASE/v1/models")
check "GET /v1/models" contains "$out" '{"object":"list","data":[{"id":"mock-model","object":"model","owned_by":"sluice-mock"}]}'
check "GET /health" [ "$(c "$BASE/health")" = ok ]
out=$(c -w '\n%{http_code}' "$BASE/no/such/path")
check "unknown path is 404 with an OpenAI error" \
  contains "$out" '"type":"not_found_error","code":404}}'$'\n''404'
out=$(c -w '\n%{http_code}' "$CHAT" -d '{"messages": [')
check "bad JSON body is 400" contains "$out" '"type":"invalid_request_error","code":400}}'$'\n''400'

# ---- reading request bodies (jansson) ---------------------------------------

out=$(c "$CHAT" -d '{"messages":[{"role":"user","content":"x"}],"mock":{"text":"caf\u00e9 \ud83d\ude00 \"q\"\/","tokens_per_sec":0}}')
check "unicode and other escapes in a body string" \
  contains "$out" '"content":"café 😀 \"q\"/"},'
out=$(c "$CHAT" -H 'X-Mock: {"text":"\u00fcber","tokens_per_sec":0}' -d '{"messages":[]}')
check "unicode escape in the X-Mock header" contains "$out" '"content":"über"},'
out=$(c "$CHAT" -d '{"extra":{"a":{"b":[1,{"c":null},[true,false]]}},"messages":[{"role":"user","content":[{"type":"text","text":"one two"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"three"}]}],"max_tokens":1,"mock":{"tokens_per_sec":0}}')
check "nested objects and arrays: content parts counted" contains "$out" '"usage":{"prompt_tokens":3,"completion_tokens":1,'
for body in '{"messages":[]} x' '{"messages":[],}' '{"a":tru}' '{"a":"\x"}' '{"a":1' '' '[1,2]' '"str"' '{"mock":5}' '{"mock":{"text":"caf\u00"}}'; do
  out=$(c -w '\n%{http_code}' "$CHAT" -d "$body")
  check "malformed or non-object body is 400: $body" \
    contains "$out" '"type":"invalid_request_error","code":400}}'$'\n''400'
done
out=$(c -w '\n%{http_code}' "$CHAT" -H 'X-Mock: {"text":' -d '{"messages":[]}')
check "malformed X-Mock header is 400" contains "$out" 'the X-Mock header is not valid JSON'
check "malformed X-Mock header: status" contains "$out" $'\n''400'
out=$(c -w '\n%{http_code}' "$CHAT" -d '{"messages":[],"max_tokens":"5"}')
check "max_tokens of the wrong type is 400" contains "$out" 'max_tokens must be a non-negative integer'

# ---- generation ------------------------------------------------------------

out=$(c "$CHAT" -H 'X-Request-Id: plain-1' -d '{"model":"m1","messages":[{"role":"user","content":"say five words"}],"max_tokens":5,"mock":{"tokens_per_sec":0}}')
check "non-streaming chat" contains "$out" '"object":"chat.completion","created":'
check "non-streaming chat text, finish_reason, usage" contains "$out" \
  '"message":{"role":"assistant","content":"The old mill stood where"},"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}'

headers=$WORK/headers
out=$(c -N -D "$headers" "$CHAT" -d '{"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],"max_tokens":6,"mock":{"tokens_per_sec":200}}')
check "stream: SSE headers" grep -qi '^content-type: text/event-stream' "$headers"
check "stream: X-Request-Id header" grep -qi '^x-request-id: chatcmpl-[0-9]' "$headers"
check "stream: role chunk first" contains "$(head -1 <<<"$out")" '"delta":{"role":"assistant","content":""}'
check "stream: 6 content chunks" [ "$(count "$out" '"delta":{"content":')" = 6 ]
check "stream: finish chunk" contains "$out" '"delta":{},"logprobs":null,"finish_reason":"length"}]}'
check "stream: usage chunk" contains "$out" '"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":6,"total_tokens":7}}'
check "stream: ends with [DONE]" [ "$(tail -1 <<<"$out")" = 'data: [DONE]' ]

out=$(c -N "$BASE/v1/completions" -d '{"stream":true,"prompt":"one two","max_tokens":3,"mock":{"tokens_per_sec":0}}')
check "completions stream" [ "$(count "$out" '"object":"text_completion"')" = 4 ]

out=$(c -N "$CHAT" -H 'X-Mock: {"text":"Hi, you.","tokens_per_sec":0}' -d '{"stream":true,"mock":{"text":"ignored","no_done":true}}')
check "X-Mock header wins; mock.text ends with stop" \
  [ "$(grep -o '"content":"[^"]*"' <<<"$out" | tr '\n' '|')" = '"content":""|"content":"Hi"|"content":","|"content":" you"|"content":"."|' ]
check "mock.text finish_reason stop, no_done from the body" bash -c \
  '[[ $1 == *"\"finish_reason\":\"stop\""* && $1 != *"[DONE]"* ]]' _ "$out"

# two requests on one connection: keep-alive after a complete stream
c -N -o /dev/null "$CHAT" -H 'X-Request-Id: ka-1' -d '{"stream":true,"max_tokens":2}' \
  --next -s -N -o /dev/null "$CHAT" -H 'X-Request-Id: ka-2' -d '{"stream":true,"max_tokens":2}'
conn1=$(record ka-1 | grep -o '"conn":[0-9]*')
conn2=$(record ka-2 | grep -o '"conn":[0-9]*')
check "keep-alive: both streams on one connection" [ -n "$conn1" -a "$conn1" = "$conn2" ]

# pipelined requests written at once
body='{"prompt":"x","max_tokens":2,"mock":{"tokens_per_sec":0}}'
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
printf 'GET /health HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%sGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' \
  "${#body}" "$body" >&3
out=$(timeout 5 cat <&3 || true)
exec 3<&-
check "pipelined requests answered in order" \
  [ "$(grep -o 'HTTP/1.1 200 OK' <<<"$out" | wc -l)" = 3 -a "$(count "$out" '"object":"text_completion"')" = 1 ]

out=$(c "$BASE/v1/completions" -H 'Transfer-Encoding: chunked' -d '{"prompt":"chunked body","max_tokens":1,"mock":{"tokens_per_sec":0}}')
check "chunked request body" contains "$out" '"prompt_tokens":2,'

# ---- faults ----------------------------------------------------------------

out=$(c -D "$headers" -w '\n%{http_code}' "$CHAT" -d '{"stream":true,"mock":{"status":429}}')
check "status fault: 429 with an OpenAI error body" \
  contains "$out" '{"error":{"message":"mock error 429","type":"rate_limit_error","code":429}}'$'\n''429'
check "status fault: JSON content type" grep -qi '^content-type: application/json' "$headers"

set +e
out=$(curl -s -N --max-time 10 "$CHAT" -H 'X-Request-Id: err-1' -d '{"stream":true,"mock":{"error_after":3,"tokens_per_sec":0}}')
rc=$?
set -e
check "error_after: 3 tokens, then the error event" bash -c \
  '[[ $(grep -c "\"delta\":{\"content\":" <<<"$1") == 3 && $(tail -1 <<<"$1") == "data: {\"error\":{\"message\":\"mock error after 3 tokens\",\"type\":\"internal_error\",\"code\":500}}" ]]' _ "$out"
check "error_after: no [DONE], response ended properly" bash -c '[[ $1 != *"[DONE]"* && $2 == 0 ]]' _ "$out" "$rc"

set +e
out=$(curl -s -N --max-time 10 "$CHAT" -d '{"stream":true,"max_tokens":4,"mock":{"error_event":1,"tokens_per_sec":0}}')
set -e
check "error_event: event: error" contains "$out" $'event: error\ndata: {"error":'

out=$(c -N "$CHAT" -d '{"stream":true,"max_tokens":3,"mock":{"malformed_after":1,"tokens_per_sec":0}}')
check "malformed_after: broken event, then the stream goes on" bash -c \
  '[[ $1 == *"data: {\"id\":\"broken\", \"choices\": ["* && $1 == *"data: [DONE]"* ]]' _ "$out"

set +e
curl -s -N --max-time 1 -o /dev/null "$CHAT" -H "X-Request-Id: stall-$$" -d '{"stream":true,"mock":{"stall_after":2}}'
rc=$?
set -e
check "stall: curl timed out" [ "$rc" = 28 ]
r=$(wait_record "stall-$$" '"client_closed":true')
check "stall: /stats client_closed and aborted" contains "$r" '"client_closed":true,"aborted":true'
check "stall: /stats closed_at and close_notice_us set" bash -c \
  '[[ $1 == *"\"closed_at\":"[0-9]* && $1 == *"\"close_notice_us\":"[0-9]* && $1 == *"\"tokens_sent\":2,"* ]]' _ "$r"
check "stall: fault recorded, not completed" contains "$r" '"fault":"stall_after"'
check "stall: 'Aborted request' logged" grep -q "^Aborted request stall-$$" "$WORK/err"

set +e
out=$(curl -s -N --max-time 1 "$CHAT" -H "X-Request-Id: kw-$$" -d '{"stream":true,"max_tokens":1000,"mock":{"tokens_per_sec":20,"keyword":" QED","keyword_at":4}}')
set -e
check "keyword: streamed at its position" [ "$(grep -o '"content":"[^"]*"' <<<"$out" | sed -n 6p)" = '"content":" QED"' ]
r=$(wait_record "kw-$$" '"client_closed":true')
check "keyword: keyword_at and stop_latency_us recorded" bash -c \
  '[[ $1 == *"\"keyword_at\":"[0-9]*.[0-9]* && $1 == *"\"stop_latency_us\":"[0-9]* ]]' _ "$r"

set +e
curl -s -N --max-time 10 -o "$WORK/reset" "$CHAT" -H "X-Request-Id: reset-$$" -d '{"stream":true,"mock":{"reset_after":2,"tokens_per_sec":0}}'
rc=$?
set -e
check "reset_after: curl sees a reset (56)" [ "$rc" = 56 ]
check "reset_after: 2 tokens before it" [ "$(grep -c '"delta":{"content":' "$WORK/reset")" = 2 ]
check "reset_after: recorded" contains "$(record "reset-$$")" '"fault":"reset_after"'

set +e
curl -s -N --max-time 10 -o "$WORK/close" "$CHAT" -d '{"stream":true,"mock":{"close_after":1,"tokens_per_sec":0}}'
rc=$?
set -e
check "close_after: curl sees a cut-off body (18)" [ "$rc" = 18 ]

out=$(c -N "$CHAT" -d '{"stream":true,"mock":{"tokens_per_sec":0,"tool_calls":[{"name":"get_weather","arguments":"{\"city\": \"Paris\", \"unit\": \"C\"}"}]}}')
args=$(grep -o '"arguments":"[^"\\]*\(\\.[^"\\]*\)*"' <<<"$out" | sed 's/^"arguments":"//; s/"$//' | tr -d '\n')
check "tool_calls: header delta" contains "$out" '"delta":{"tool_calls":[{"index":0,"id":"call_0","type":"function","function":{"name":"get_weather","arguments":""}}]}'
check "tool_calls: argument fragments join up" [ "$args" = '{\"city\": \"Paris\", \"unit\": \"C\"}' ]
check "tool_calls: finish_reason tool_calls" contains "$out" '"finish_reason":"tool_calls"'

out=$(c -N -D "$headers" "$CHAT" -d '{"stream":true,"max_tokens":3,"mock":{"ndjson":true,"tokens_per_sec":0}}')
check "ndjson: content type" grep -qi '^content-type: application/x-ndjson' "$headers"
check "ndjson: one JSON object a line, no SSE" bash -c \
  '[[ $(grep -c "^{\"id\":\"chatcmpl-" <<<"$1") == 5 && $1 != *"data:"* ]]' _ "$out"

out=$(c -N "$CHAT" -d '{"stream":true,"max_tokens":2,"mock":{"reasoning":"Hmm.","tokens_per_sec":0}}')
check "reasoning before content" [ "$(grep -o '"delta":{"[a-z_]*"' <<<"$out" | tr '\n' ' ')" = \
  '"delta":{"role" "delta":{"reasoning_content" "delta":{"reasoning_content" "delta":{"content" "delta":{"content" ' ]

# ---- n choices -------------------------------------------------------------

# "INDEX<TAB>TOKEN" per content chunk, in the order sent
tokens_by_index() { sed -n '/"finish_reason":null/s/.*"choices":\[{"index":\([0-9]*\),\("delta":{"content"\|"text"\):"\([^"]*\)".*/\1	\3/p' <<<"$1"; }
# the choices' texts, one line each, by index
texts() { tokens_by_index "$1" | awk -F'\t' '{ t[$1] = t[$1] $2; if ($1 + 1 > n) n = $1 + 1 } END { for (i = 0; i < n; i++) print i ": " t[i] }'; }
# "INDEX:REASON" per finish chunk, in the order sent
finishes() { grep -o '"index":[0-9]*,[^]]*"finish_reason":"[a-z_]*"' <<<"$1" | sed 's/"index":\([0-9]*\),.*"finish_reason":"\([a-z_]*\)"/\1:\2/' | tr '\n' ' '; }

out=$(c -N "$CHAT" -H 'X-Request-Id: n3' -d '{"n":3,"stream":true,"max_tokens":4,"stream_options":{"include_usage":true},"mock":{"tokens_per_sec":0}}')
check "n=3: role chunks for choices 0, 1, 2 first" \
  [ "$(head -5 <<<"$out" | grep -o '"index":[0-9]*,"delta":{"role"' | tr -d '\n')" = '"index":0,"delta":{"role""index":1,"delta":{"role""index":2,"delta":{"role"' ]
check "n=3: one choice per chunk" [ "$(grep '^data: {' <<<"$out" | grep -c '"index":[0-9]*,.*"index":')" = 0 ]
check "n=3: content chunks interleaved round robin" \
  [ "$(tokens_by_index "$out" | cut -f1 | tr -d '\n')" = 012012012012 ]
check "n=3: each choice its own text" [ "$(texts "$out" | cut -d: -f2- | sort -u | wc -l)" = 3 ]
check "n=3: choice 0 is the text as with n=1, choice 1 starts a token later" \
  [ "$(texts "$out" | head -2 | tr '\n' '|')" = '0: The old mill stood|1:  old mill stood where|' ]
check "n=3: a finish chunk per choice, max_tokens cuts all" [ "$(finishes "$out")" = '0:length 1:length 2:length ' ]
check "n=3: usage counts every choice's tokens" contains "$out" '"choices":[],"usage":{"prompt_tokens":0,"completion_tokens":12,"total_tokens":12}}'
check "n=3: /stats tokens_sent counts every choice" contains "$(record n3)" '"tokens_sent":12,'

out=$(c -N "$CHAT" -d '{"n":2,"stream":true,"max_tokens":4,"mock":{"tokens_per_sec":0,"choice_tokens":[2,5]}}')
check "choice_tokens: choices end apart, each with its own reason" [ "$(finishes "$out")" = '0:stop 1:length ' ]
check "choice_tokens: choice 0 ends after 2 tokens, choice 1 goes on to 4" \
  [ "$(grep -o '"index":[0-9]*,"delta":{[^}]*}' <<<"$out" | sed 's/"delta":{"\([a-z]*\)".*/\1/; s/"delta":{}/finish/; s/"index"://' | tr '\n' ' ')" = \
    '0,role 1,role 0,content 1,content 0,content 1,content 0,finish 1,content 1,content 1,finish ' ]

out=$(c "$CHAT" -d '{"n":2,"max_tokens":3,"mock":{"tokens_per_sec":0,"choice_tokens":[3,1]}}')
check "n=2 non-streaming: a choices array, own texts and reasons, usage summed" contains "$out" \
  '"choices":[{"index":0,"message":{"role":"assistant","content":"The old mill"},"logprobs":null,"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":" old"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":0,"completion_tokens":4,"total_tokens":4}}'
out=$(c "$BASE/v1/completions" -d '{"n":2,"prompt":"p","max_tokens":2,"mock":{"tokens_per_sec":0}}')
check "n=2 completions, non-streaming" contains "$out" \
  '"choices":[{"index":0,"text":"The old","logprobs":null,"finish_reason":"length"},{"index":1,"text":" old mill","logprobs":null,"finish_reason":"length"}]'
out=$(c -N "$BASE/v1/completions" -d '{"n":2,"prompt":"p","stream":true,"max_tokens":2,"mock":{"tokens_per_sec":0}}')
check "n=2 completions, streaming interleaved" [ "$(tokens_by_index "$out" | tr '\t\n' ':|')" = '0:The|1: old|0: old|1: mill|' ]
check "n=2 completions, a finish per choice" [ "$(finishes "$out")" = '0:length 1:length ' ]

out=$(c -N "$CHAT" -d '{"n":2,"stream":true,"max_tokens":3,"mock":{"tokens_per_sec":0,"keyword":" KW","keyword_at":1,"reasoning":"Hm."}}')
check "n=2 with reasoning and a keyword: every choice has both" \
  [ "$(grep -o '"index":[0-9]*,"delta":{"[a-z_]*":"[^"]*"' <<<"$out" | grep -v role | sed 's/"delta":{//; s/"index"://' | tr '\n' '|')" = \
    '0,"reasoning_content":"Hm"|1,"reasoning_content":"Hm"|0,"reasoning_content":"."|1,"reasoning_content":"."|0,"content":"The"|1,"content":" old"|0,"content":" KW"|1,"content":" KW"|0,"content":" mill"|1,"content":" stood"|' ]

set +e
out=$(curl -s -N --max-time 10 "$CHAT" -d '{"n":2,"stream":true,"max_tokens":5,"mock":{"error_after":3,"tokens_per_sec":0}}')
set -e
check "n=2: fault positions count tokens over all choices" bash -c \
  '[[ $(grep -c "\"delta\":{\"content\":" <<<"$1") == 3 && $(tail -1 <<<"$1") == *"mock error after 3 tokens"* ]]' _ "$out"

a=$(c -N "$CHAT" -H 'X-Request-Id: same' -d '{"stream":true,"max_tokens":3,"stream_options":{"include_usage":true},"mock":{"tokens_per_sec":0,"tool_calls":[{"name":"f","arguments":"{\"x\": 1}"}]}}' | sed 's/"created":[0-9]*//')
b=$(c -N "$CHAT" -H 'X-Request-Id: same' -d '{"n":1,"stream":true,"max_tokens":3,"stream_options":{"include_usage":true},"mock":{"tokens_per_sec":0,"tool_calls":[{"name":"f","arguments":"{\"x\": 1}"}]}}' | sed 's/"created":[0-9]*//')
check "n=1 is the same stream as no n" [ -n "$a" -a "$a" = "$b" ]

for n in 0 129 1.5 '"2"' -1 true; do
  out=$(c -w '\n%{http_code}' "$CHAT" -d "{\"n\":$n,\"stream\":true}")
  check "n=$n is a 400" contains "$out" 'n must be an integer from 1 to 128","type":"invalid_request_error","code":400}}'$'\n''400'
done
out=$(c -w '\n%{http_code}' "$CHAT" -d '{"n":2,"mock":{"choice_tokens":[1]}}')
check "choice_tokens needs n entries" contains "$out" 'mock.choice_tokens must be an array of n non-negative integers'
out=$(c -w '\n%{http_code}' "$CHAT" -d '{"n":2,"mock":{"choice_tokens":[1,-1]}}')
check "choice_tokens entries are non-negative integers" contains "$out" $'\n''400'

# ---- stats -----------------------------------------------------------------

# recent_token_at: the send times of the last 4 tokens, oldest first
field() { grep -o "\"$2\":\(\[[^]]*\]\|[^,]*\)" <<<"$1" | sed 's/^"[a-z_]*"://; s/^\[//; s/\]$//'; }
c -N -o /dev/null "$CHAT" -H 'X-Request-Id: recent-6' -d '{"stream":true,"max_tokens":6,"mock":{"tokens_per_sec":100}}'
c -N -o /dev/null "$CHAT" -H 'X-Request-Id: recent-2' -d '{"stream":true,"max_tokens":2,"mock":{"tokens_per_sec":100}}'
c -o /dev/null "$CHAT" -H 'X-Request-Id: recent-0' -d '{"max_tokens":0}'
r=$(record recent-6)
recent=$(field "$r" recent_token_at)
check "recent_token_at: 4 of 6 paced tokens, oldest first, the last is last_token_at" awk -v list="$recent" -v last="$(field "$r" last_token_at)" -v first="$(field "$r" first_token_at)" \
  'BEGIN { n = split(list, t, ","); ok = n == 4 && t[4] == last && t[1] > first
           for (i = 2; i <= n; i++) ok = ok && t[i] > t[i - 1]; exit !ok }'
r=$(record recent-2)
check "recent_token_at: both of 2 tokens" awk -v list="$(field "$r" recent_token_at)" -v first="$(field "$r" first_token_at)" -v last="$(field "$r" last_token_at)" \
  'BEGIN { n = split(list, t, ","); exit !(n == 2 && t[1] == first && t[2] == last && t[2] > t[1]) }'
check "recent_token_at: empty when no token was sent" contains "$(record recent-0)" '"recent_token_at":[],'

out=$(c "$BASE/stats")
check "stats: counters" bash -c '[[ $1 =~ \"active\":0,\"connections_open\":1,\"connections_total\":[0-9]+\}$ ]]' _ "$out"
check "stats: reset" [ "$(c -X POST "$BASE/stats/reset")" = '{"ok":true}' ]
check "stats: empty after reset" contains "$(c "$BASE/stats")" '{"requests":[],'

# ---- --replies: scripted conversations ---------------------------------------

cat >"$WORK/replies.json" <<'EOF'
{"rules": [
  {"name": "observation", "when": {"system_contains": "Action Input:", "last_starts_with": "Observation:"},
   "reply": {"text": "Thought: I know it\nFinal Answer: 5"}},
  {"name": "react", "when": {"system_contains": "Action Input:"},
   "reply": {"text": "Action: add\nAction Input: {}\nObservation: 999 (made up)\nThought: more"}},
  {"name": "answer", "when": {"last_role": "tool"},
   "reply": {"text": "tool={{tool}} last={{last}} user={{user}} {{ kept }} {{x"}},
  {"name": "parallel", "when": {"last_contains": "both", "tools": true},
   "reply": {"tool_calls": [{"name": "slow_a", "arguments": "{\"n\": 1}"}, {"name": "slow_b", "arguments": "{}"}]}},
  {"name": "add", "when": {"last_role": "user", "last_contains": "add", "tools": true},
   "reply": {"tool_calls": [{"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}]}},
  {"name": "no-tools", "when": {"last_contains": "add", "tools": false},
   "reply": {"text": "no tools", "no_done": true}},
  {"name": "any", "when": {"any_contains": "secret"}, "reply": {"text": "found {{user}}"}},
  {"name": "turn-2", "when": {"turn": 2}, "reply": {"text": "turn two"}},
  {"name": "late", "when": {"min_turn": 3, "max_turn": 4}, "reply": {"text": "late"}},
  {"when": {"last_role": "system"}, "reply": {"status": 503}}
]}
EOF
"$MOCK" --port 0 --url-file "$WORK/replies.url" --exit-with-parent --tokens-per-sec 0 \
  --replies "$WORK/replies.json" >/dev/null 2>"$WORK/replies.err" &
REPLIES_PID=$!
wait_for 5 test -s "$WORK/replies.url" || true
RBASE=$(cat "$WORK/replies.url" 2>/dev/null || true)
check "replies: the mock starts with a replies file" [ -n "$RBASE" ]
RCHAT=$RBASE/v1/chat/completions
TOOLS='"tools":[{"type":"function","function":{"name":"add","parameters":{}}}]'
# ask ID BODY [curl args...]: a streamed chat request to the replies mock
ask() { local id=$1 body=$2; shift 2; c -N "$RCHAT" -H "X-Request-Id: $id" "$@" -d "$body"; }
# the streamed content, joined
content() { grep -o '"delta":{"content":"[^"\\]*\(\\.[^"\\]*\)*"' <<<"$1" | sed 's/^"delta":{"content":"//; s/"$//' | tr -d '\n'; }
arguments() { grep -o '"arguments":"[^"\\]*\(\\.[^"\\]*\)*"' <<<"$1" | sed 's/^"arguments":"//; s/"$//' | tr -d '\n'; }
rule_of() { record "$1" "$RBASE" | grep -o '"rule":[^,]*,"rule_name":[^,]*'; }

out=$(ask r-add '{"stream":true,"messages":[{"role":"user","content":"please add 2 and 3"}],'"$TOOLS"'}')
check "replies: last_role + last_contains + tools: a tool call to add" contains "$out" \
  '"tool_calls":[{"index":0,"id":"call_0","type":"function","function":{"name":"add","arguments":""}}]'
check "replies: its arguments come in several fragments that join up" bash -c \
  '[[ $(grep -c "\"function\":{\"arguments\":\"" <<<"$1") -ge 3 && $2 == "{\\\"a\\\": 2, \\\"b\\\": 3}" ]]' _ "$out" "$(arguments "$out")"
check "replies: finish_reason tool_calls" contains "$out" '"finish_reason":"tool_calls"'
check "replies: /stats names the rule and its index" [ "$(rule_of r-add)" = '"rule":4,"rule_name":"add"' ]
check "replies: the log names the rule" wait_for 2 grep -q '^INFO r-add .* rule=add$' "$WORK/replies.err"

out=$(ask r-parts '{"stream":true,"messages":[{"role":"user","content":[{"type":"text","text":"please"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"add"}]}],'"$TOOLS"'}')
check "replies: content parts are read" [ "$(rule_of r-parts)" = '"rule":4,"rule_name":"add"' ]
out=$(ask r-notools '{"stream":true,"messages":[{"role":"user","content":"please add 2 and 3"}]}')
check "replies: tools false: a request without tools" [ "$(content "$out")" = 'no tools' ]
out=$(ask r-emptytools '{"stream":true,"messages":[{"role":"user","content":"please add"}],"tools":[]}')
check "replies: an empty tools array is no tools" [ "$(rule_of r-emptytools)" = '"rule":5,"rule_name":"no-tools"' ]

out=$(ask r-odd '{"stream":true,"messages":[1,"x",null,{"role":5,"content":{"a":1}},{"role":"user","content":[1,{"text":5},{"type":"text","text":"add"}]}],"tools":{}}')
check "replies: messages of odd shapes are read as far as they go" [ "$(content "$out")" = 'no tools' ]

out=$(ask r-par '{"stream":true,"messages":[{"role":"user","content":"run both"}],'"$TOOLS"'}')
check "replies: two tool calls in one reply" bash -c \
  '[[ $1 == *"{\"index\":0,\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"slow_a\""* && $1 == *"{\"index\":1,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"slow_b\""* ]]' _ "$out"

after_tool='[{"role":"user","content":"please add 2 and 3"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_0","type":"function","function":{"name":"add","arguments":"{}"}}]},{"role":"tool","tool_call_id":"call_0","content":"5 \"five\""}]'
out=$(ask r-answer '{"stream":true,"messages":'"$after_tool"','"$TOOLS"'}')
check "replies: after a tool message, {{tool}} {{last}} {{user}} filled in, other braces kept" \
  [ "$(content "$out")" = 'tool=5 \"five\" last=5 \"five\" user=please add 2 and 3 {{ kept }} {{x' ]
out=$(c "$RCHAT" -d '{"messages":[{"role":"tool","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}')
check "replies: placeholders of parts: the texts joined by newlines; {{user}} of none is empty" \
  contains "$out" '"content":"tool=a\nb last=a\nb user= {{ kept }} {{x"'

out=$(ask r-any '{"stream":true,"messages":[{"role":"user","content":"the secret is out"},{"role":"assistant","content":"ok"},{"role":"user","content":"and now?"}]}')
check "replies: any_contains an earlier message" [ "$(content "$out")" = 'found and now?' ]
two='{"role":"assistant","content":"a"},{"role":"user","content":"b"}'
out=$(ask r-turn2 '{"stream":true,"messages":[{"role":"user","content":"x"},'"$two"','"$two"']}')
check "replies: turn: two assistant messages" [ "$(content "$out")" = 'turn two' ]
out=$(ask r-turn3 '{"stream":true,"messages":[{"role":"user","content":"x"},'"$two"','"$two"','"$two"']}')
check "replies: min_turn and max_turn: three" [ "$(content "$out")" = 'late' ]
out=$(ask r-turn5 '{"stream":true,"max_tokens":3,"messages":[{"role":"user","content":"x"},'"$two,$two,$two,$two,$two"']}')
check "replies: no rule matches: the default text" [ "$(content "$out")" = 'The old mill' ]
check "replies: no rule matches: /stats rule null" [ "$(rule_of r-turn5)" = '"rule":null,"rule_name":null' ]
out=$(ask r-none '{"stream":true,"max_tokens":2}')
check "replies: no messages at all: the default text" [ "$(content "$out")" = 'The old' ]

react='{"role":"system","content":"Answer with Thought:, Action:, Action Input: lines."}'
out=$(ask r-react '{"stream":true,"messages":['"$react"',{"role":"user","content":"What is 2 + 3?"}]}')
check "replies: system_contains: the ReAct text with a made-up Observation" \
  [ "$(content "$out")" = 'Action: add\nAction Input: {}\nObservation: 999 (made up)\nThought: more' ]
out=$(ask r-obs '{"stream":true,"messages":['"$react"',{"role":"user","content":"What is 2 + 3?"},{"role":"assistant","content":"Action: add\nAction Input: {}"},{"role":"user","content":"Observation: 5"}]}')
check "replies: last_starts_with Observation: the final answer" [ "$(content "$out")" = 'Thought: I know it\nFinal Answer: 5' ]
out=$(ask r-obs2 '{"stream":true,"messages":['"$react"',{"role":"user","content":"no Observation: here"}]}')
check "replies: last_starts_with is a prefix, not a substring" [ "$(rule_of r-obs2)" = '"rule":1,"rule_name":"react"' ]

out=$(c -w '\n%{http_code}' "$RCHAT" -H 'X-Request-Id: r-503' -d '{"messages":[{"role":"system","content":"s"}]}')
check "replies: a rule's reply may be a fault" contains "$out" '"code":503}}'$'\n''503'
check "replies: an unnamed rule: its index, a null name" [ "$(rule_of r-503)" = '"rule":9,"rule_name":null' ]

out=$(ask r-body '{"stream":true,"messages":[{"role":"user","content":"add"}],"mock":{"text":"from the body"}}')
check "replies: the body's own mock wins over the rule's, key by key" bash -c \
  '[[ $1 == "from the body" && $2 != *"[DONE]"* ]]' _ "$(content "$out")" "$out"
out=$(ask r-header '{"stream":true,"messages":[{"role":"user","content":"add"}],"mock":{"text":"from the body"}}' -H 'X-Mock: {"text":"from the header"}')
check "replies: and the X-Mock header wins over both" [ "$(content "$out")" = 'from the header' ]
out=$(c -w '\n%{http_code}' "$RCHAT" -d '{"messages":[{"role":"user","content":"add"}],"mock":{"no_done":"yes"}}')
check "replies: a bad body mock is still a 400" contains "$out" 'mock.no_done must be true or false'

out=$(c "$RBASE/v1/completions" -H 'X-Request-Id: r-compl' -d '{"prompt":"please add","max_tokens":2}')
check "replies: /v1/completions is not scripted" bash -c \
  '[[ $1 == *"\"text\":\"The old\""* && $2 == "\"rule\":null,\"rule_name\":null" ]]' _ "$out" "$(rule_of r-compl)"

kill -TERM "$REPLIES_PID"
set +e
wait "$REPLIES_PID"
rc=$?
set -e
REPLIES_PID=
check "replies: clean exit" [ "$rc" = 0 ]
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/replies.err"; then
  not_ok "replies: no sanitizer reports" "$(grep -E -A5 'Sanitizer|runtime error' "$WORK/replies.err" | head -20)"
fi

check "replies: --help documents it" bash -c '"$1" --help | grep -q -- "--replies FILE" && "$1" --help | grep -q "{{tool}}"' _ "$MOCK"
# bad_replies NAME JSON EXPECTED: the mock refuses to start, exit 2, saying EXPECTED
bad_replies() {
  local rc=0
  printf '%s' "$2" >"$WORK/bad.json"
  timeout 5 "$MOCK" --port 0 --replies "$WORK/bad.json" >/dev/null 2>"$WORK/bad.err" || rc=$?
  if [[ $rc == 2 ]] && grep -qF -- "$3" "$WORK/bad.err"; then ok "replies: bad file: $1"
  else not_ok "replies: bad file: $1" "exit $rc: $(cat "$WORK/bad.err")"; fi
}
bad_replies "not JSON" '{"rules": [' 'not valid JSON'
bad_replies "no rules array" '[]' 'must be a JSON object {"rules": [...]}'
bad_replies "unknown top-level key" '{"rules": [], "rule": []}' 'unknown key "rule"'
bad_replies "a rule without a reply" '{"rules": [{"when": {}}]}' 'rules[0].reply must be an object'
bad_replies "unknown rule key" '{"rules": [{"reply": {}}, {"reply": {}, "wen": {}}]}' 'rules[1]: unknown key "wen"'
bad_replies "unknown condition" '{"rules": [{"reply": {}, "when": {"last_rol": "user"}}]}' 'rules[0].when: unknown condition "last_rol"'
bad_replies "turn not an integer" '{"rules": [{"reply": {}, "when": {"turn": 1.5}}]}' 'rules[0].when.turn must be a non-negative integer'
bad_replies "tools not a boolean" '{"rules": [{"reply": {}, "when": {"tools": 1}}]}' 'rules[0].when.tools must be true or false'
bad_replies "a substring not a string" '{"rules": [{"reply": {}, "when": {"any_contains": null}}]}' 'rules[0].when.any_contains must be a string'
bad_replies "a bad reply option value" '{"rules": [{"reply": {"tokens_per_sec": "fast"}}]}' 'rules[0].reply: mock.tokens_per_sec must be a non-negative number'
bad_replies "an unknown reply option" '{"rules": [{"reply": {"tool_call": []}}]}' 'rules[0].reply: unknown option mock.tool_call'
bad_replies "bad tool_calls" '{"rules": [{"reply": {"tool_calls": [{"name": 1}]}}]}' 'mock.tool_calls must be an array'
bad_replies "an unknown placeholder" '{"rules": [{"reply": {"text": "{{tools}}"}}]}' 'unknown placeholder {{tools}}'
bad_replies "a duplicate key" '{"rules": [{"reply": {}, "reply": {}}]}' 'duplicate object key'
bad_replies "an empty file" '' 'not valid JSON'
rm -f "$WORK/bad.json"
rc=0
timeout 5 "$MOCK" --port 0 --replies "$WORK/no-such-file" >/dev/null 2>"$WORK/bad.err" || rc=$?
check "replies: an unreadable file: exit 2, says why" bash -c \
  '[[ $1 == 2 ]] && grep -q "unable to open" "$2"' _ "$rc" "$WORK/bad.err"

# ---- --stand-in: llama.cpp's and vLLM's documents --------------------------

# start_standin VAR NAME ARGS...: another mock (a child of this shell, not of
# a subshell: it exits with its parent), its base URL in VAR, its pid kept for
# stop_standin and cleanup.
start_standin() {
  local var=$1 name=$2
  shift 2
  "$MOCK" --port 0 --url-file "$WORK/$name.url" --exit-with-parent "$@" >/dev/null 2>"$WORK/$name.err" &
  STANDIN_PID[$name]=$!
  wait_for 5 test -s "$WORK/$name.url" || true
  printf -v "$var" '%s' "$(cat "$WORK/$name.url" 2>/dev/null || true)"
}
# stop_standin NAME: SIGTERM; a clean exit, no sanitizer report.
stop_standin() {
  local rc=0
  kill -TERM "${STANDIN_PID[$1]}"
  wait "${STANDIN_PID[$1]}" || rc=$?
  unset "STANDIN_PID[$1]"
  check "stand-in $1: clean exit" [ "$rc" = 0 ]
  if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/$1.err"; then
    not_ok "stand-in $1: no sanitizer reports" "$(grep -E -A5 'Sanitizer|runtime error' "$WORK/$1.err" | head -20)"
  fi
}
now() { date +%s.%N; }
# poll_eq SECONDS EXPECTED COMMAND...: polls until COMMAND prints EXPECTED
poll_eq() {
  local tries=$(($1 * 20)) want=$2
  shift 2
  for _ in $(seq "$tries"); do
    [[ $("$@") == "$want" ]] && return 0
    sleep 0.05
  done
  [[ $("$@") == "$want" ]]
}
# is_processing per slot, "ID:true ID:false ..."
slot_states() { c "$1/slots" | grep -o '"id":[0-9]*,"id_task":-\?[0-9]*,"n_ctx":[0-9]*,"speculative":false,"is_processing":[a-z]*' | sed 's/"id":\([0-9]*\),.*"is_processing":/\1:/' | tr '\n' ' '; }
# a sample's value: metric NAME-AND-LABELS URL
metric() { c "$2/metrics" | grep -F "$1 " | grep -v '^#' | awk '{ print $NF }'; }
# a stream to URL in the background, written to FILE; curl's --max-time SECONDS
stream_to() { curl -s -N --max-time "$3" -o "$2" "$1/v1/chat/completions" -H "X-Request-Id: $4" -d "$5" || true; }

check "without --stand-in: no /slots" contains "$(c -w '%{http_code}' "$BASE/slots")" '404'
check "without --stand-in: no /metrics" contains "$(c -w '%{http_code}' "$BASE/metrics")" '404'

start_standin LB llama --stand-in llamacpp --slots 2 --stop-delay 1 --tokens-per-sec 20
check "llamacpp: the stand-in starts" [ -n "$LB" ]
check "llamacpp: /health as llama-server's" [ "$(c "$LB/health")" = '{"status":"ok"}' ]
out=$(c -D "$headers" "$LB/slots")
check "llamacpp: /slots is JSON" grep -qi '^content-type: application/json' "$headers"
check "llamacpp: /slots, two idle slots, no task yet" [ "$(grep -o '"id":[0-9]*,"id_task":-1,' <<<"$out" | tr -d '\n')" = '"id":0,"id_task":-1,"id":1,"id_task":-1,' ]
check "llamacpp: a slot's shape" contains "$out" \
  '{"id":0,"id_task":-1,"n_ctx":4096,"speculative":false,"is_processing":false,"params":{"n_predict":-1,"max_tokens":-1,"stream":true},"next_token":{"has_next_token":false,"has_new_line":false,"n_remain":-1,"n_decoded":0}}'
out=$(c -D "$headers" "$LB/metrics")
check "llamacpp: /metrics in the Prometheus text format" grep -qi '^content-type: text/plain; version=0.0.4' "$headers"
for m in prompt_tokens_total:counter prompt_seconds_total:counter tokens_predicted_total:counter \
         tokens_predicted_seconds_total:counter prompt_tokens_seconds:gauge predicted_tokens_seconds:gauge \
         requests_processing:gauge requests_deferred:gauge n_tokens_max:counter; do
  check "llamacpp: /metrics llamacpp:${m%%:*} with HELP and TYPE ${m#*:}" bash -c \
    '[[ $1 == *"# HELP llamacpp:$2 "* && $1 == *"# TYPE llamacpp:$2 $3"$'"'"'\n'"'"'"llamacpp:$2 "[0-9]* ]]' _ "$out" "${m%%:*}" "${m#*:}"
done
check "llamacpp: nothing processing at first" [ "$(metric llamacpp:requests_processing "$LB")" = 0 ]

# a generation in flight: 20 tokens at 20 a second
stream_to "$LB" "$WORK/l1" 10 l1 '{"stream":true,"max_tokens":20,"messages":[{"role":"user","content":"one two three"}]}' &
spid=$!
poll_eq 2 '0:true 1:false ' slot_states "$LB" || true
check "llamacpp: in flight: one slot processing" [ "$(slot_states "$LB")" = '0:true 1:false ' ]
out=$(c "$LB/slots")
check "llamacpp: in flight: its task, params and next_token" bash -c \
  '[[ $1 == "[{\"id\":0,\"id_task\":0,\"n_ctx\":4096,\"speculative\":false,\"is_processing\":true,\"params\":{\"n_predict\":20,\"max_tokens\":20,\"stream\":true},\"next_token\":{\"has_next_token\":true,\"has_new_line\":false,\"n_remain\":"[0-9]*",\"n_decoded\":"[0-9]*"}}"* ]]' _ "$out"
check "llamacpp: in flight: requests_processing 1" [ "$(metric llamacpp:requests_processing "$LB")" = 1 ]
wait "$spid"
check "llamacpp: the stream completed" contains "$(record l1 "$LB")" '"completed":true'
check "llamacpp: done: no slot processing" [ "$(slot_states "$LB")" = '0:false 1:false ' ]
check "llamacpp: done: the slot keeps its last task" contains "$(c "$LB/slots")" \
  '{"id":0,"id_task":0,"n_ctx":4096,"speculative":false,"is_processing":false,"params":{"n_predict":20,"max_tokens":20,"stream":true},"next_token":{"has_next_token":false,"has_new_line":false,"n_remain":0,"n_decoded":20}}'
check "llamacpp: done: requests_processing 0" [ "$(metric llamacpp:requests_processing "$LB")" = 0 ]
check "llamacpp: done: tokens_predicted_total 20, prompt_tokens_total 3" bash -c \
  '[[ $1 == 20 && $2 == 3 ]]' _ "$(metric llamacpp:tokens_predicted_total "$LB")" "$(metric llamacpp:prompt_tokens_total "$LB")"
check "llamacpp: done: n_tokens_max 23" [ "$(metric llamacpp:n_tokens_max "$LB")" = 23 ]
check "llamacpp: done: predicted_tokens_seconds about the pace" bash -c \
  'awk -v r="$1" "BEGIN { exit !(r > 10 && r < 40) }"' _ "$(metric llamacpp:predicted_tokens_seconds "$LB")"

# --stop-delay: the client closes; the generation stops at once, the slot 1 s later
stream_to "$LB" /dev/null 0.3 l2 '{"stream":true,"max_tokens":1000}'
closed=$(now)
r=$(wait_record l2 '"client_closed":true' "$LB")
check "stop-delay: /stats exact: the close noticed at once" contains "$(record l2 "$LB")" '"client_closed":true'
check "stop-delay: the generation stopped" grep -q '^Aborted request l2 ' "$WORK/llama.err"
check "stop-delay: its slot still processing" [ "$(slot_states "$LB")" = '0:false 1:true ' ]
check "stop-delay: requests_processing still 1" [ "$(metric llamacpp:requests_processing "$LB")" = 1 ]
poll_eq 3 '0:false 1:false ' slot_states "$LB" || true
freed=$(now)
check "stop-delay: the slot freed, 1 s after the close" bash -c \
  'awk -v a="$1" -v b="$2" "BEGIN { exit !(b - a >= 0.9 && b - a < 3) }" && [[ $3 == "0:false 1:false " ]]' \
  _ "$closed" "$freed" "$(slot_states "$LB")"
check "stop-delay: tokens stopped with the generation" [ "$(c "$LB/slots" | grep -o '"n_decoded":[0-9]*' | tail -1)" = "$(grep -o '"tokens_sent":[0-9]*' <<<"$r" | sed 's/tokens_sent/n_decoded/')" ]

# three generations of a second each, two slots: the third deferred until one is free
spids=()
for i in 1 2 3; do
  stream_to "$LB" "$WORK/d$i" 10 "d$i" '{"stream":true,"max_tokens":20}' &
  spids+=($!)
  sleep 0.05
done
check "deferred: requests_deferred 1" poll_eq 1 1 metric llamacpp:requests_deferred "$LB"
check "deferred: both slots processing" [ "$(slot_states "$LB")" = '0:true 1:true ' ]
check "deferred: ?fail_on_no_slot=1 is 503" contains "$(c -w '%{http_code}' "$LB/slots?fail_on_no_slot=1")" '"type":"unavailable_error","code":503}}503'
check "deferred: nothing sent to it yet" contains "$(record d3 "$LB")" '"tokens_sent":0,'
wait "${spids[@]}"
check "deferred: all three streamed whole" bash -c \
  '[[ $(grep -c "\"delta\":{\"content\":" "$1/d1") == 20 && $(grep -c "\"delta\":{\"content\":" "$1/d3") == 20 ]]' _ "$WORK"
check "deferred: none deferred now" [ "$(metric llamacpp:requests_deferred "$LB")" = 0 ]
check "deferred: ?fail_on_no_slot=1 with a free slot" [ "$(c "$LB/slots?fail_on_no_slot=1" | head -c 9)" = '[{"id":0,' ]
stop_standin llama

# shut down while a request lingers and another waits for its slot
start_standin SB busy --stand-in llamacpp --slots 1 --stop-delay 30 --tokens-per-sec 20
stream_to "$SB" /dev/null 0.3 b1 '{"stream":true,"max_tokens":1000}'
stream_to "$SB" /dev/null 5 b2 '{"stream":true,"max_tokens":1000}' &
spid=$!
check "shutdown: one request lingers, one deferred" poll_eq 1 '1 1' bash -c \
  'curl -s "$1/metrics" | awk "/^llamacpp:requests_(processing|deferred) / { printf \"%s%s\", s, \$2; s = \" \" }"' _ "$SB"
stop_standin busy
wait "$spid"

start_standin NB noslots --stand-in llamacpp --no-slots
out=$(c -w '\n%{http_code}' "$NB/slots")
check "--no-slots: /slots answers 501 as llama-server does" contains "$out" \
  '{"error":{"message":"This server does not support slots endpoint. Start it with `--slots`","type":"not_supported_error","code":501}}'$'\n''501'
check "--no-slots: /metrics still served" [ "$(metric llamacpp:requests_processing "$NB")" = 0 ]
stop_standin noslots

start_standin OB oldslots --stand-in llamacpp --slots 1 --slots-state --tokens-per-sec 20
stream_to "$OB" /dev/null 5 o1 '{"stream":true,"max_tokens":20}' &
spid=$!
poll_eq 1 1 bash -c 'curl -s "$1/slots" | grep -c "\"state\":1,"' _ "$OB" || true
check "--slots-state: \"state\": 1 while processing, no is_processing" bash -c \
  '[[ $1 == *"\"speculative\":false,\"state\":1,\"params\""* && $1 != *is_processing* ]]' _ "$(c "$OB/slots")"
wait "$spid"
check "--slots-state: \"state\": 0 once done" contains "$(c "$OB/slots")" '"state":0,'
stop_standin oldslots

start_standin VB vllm --stand-in vllm --model 'm"1' --stop-delay 1 --tokens-per-sec 20
check "vllm: the stand-in starts" [ -n "$VB" ]
out=$(c -w '%{http_code}' "$VB/health")
check "vllm: /health an empty 200" [ "$out" = 200 ]
check "vllm: no /slots" contains "$(c -w '%{http_code}' "$VB/slots")" '404'
out=$(c "$VB/metrics")
L='engine="0",model_name="m\"1"'
check "vllm: num_requests_running, HELP and TYPE" contains "$out" \
  $'# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{'"$L"'} 0.0'
check "vllm: num_requests_waiting" contains "$out" $'# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{'"$L"'} 0.0'
check "vllm: request_success_total by finished_reason" contains "$out" \
  $'# HELP vllm:request_success_total Count of successfully processed requests.\n# TYPE vllm:request_success_total counter\nvllm:request_success_total{engine="0",finished_reason="stop",model_name="m\\"1"} 0.0\nvllm:request_success_total{engine="0",finished_reason="length",model_name="m\\"1"} 0.0\nvllm:request_success_total{engine="0",finished_reason="abort",model_name="m\\"1"} 0.0'
check "vllm: token counters" bash -c '[[ $1 == *"# TYPE vllm:prompt_tokens_total counter"* && $1 == *"# TYPE vllm:generation_tokens_total counter"* ]]' _ "$out"
ok_label="finished_reason=\"length\",model_name=\"m\\\"1\""
stream_to "$VB" /dev/null 5 v1 '{"stream":true,"max_tokens":20}' &
spid=$!
check "vllm: in flight: running 1" poll_eq 1 1.0 metric "vllm:num_requests_running{$L}" "$VB"
wait "$spid"
check "vllm: finished: running 0" [ "$(metric "vllm:num_requests_running{$L}" "$VB")" = 0.0 ]
check "vllm: finished by max_tokens: length counted" [ "$(metric "vllm:request_success_total{engine=\"0\",$ok_label}" "$VB")" = 1.0 ]
c "$VB/v1/chat/completions" -d '{"mock":{"text":"a b","tokens_per_sec":0}}' >/dev/null
check "vllm: finished by itself: stop counted" [ "$(metric "vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"m\\\"1\"}" "$VB")" = 1.0 ]
check "vllm: generation_tokens_total" [ "$(metric "vllm:generation_tokens_total{$L}" "$VB")" = 22.0 ]
abort="vllm:request_success_total{engine=\"0\",finished_reason=\"abort\",model_name=\"m\\\"1\"}"
stream_to "$VB" /dev/null 0.3 v2 '{"stream":true,"max_tokens":1000}'
closed=$(now)
wait_record v2 '"client_closed":true' "$VB" >/dev/null
check "vllm stop-delay: still running after the close" [ "$(metric "vllm:num_requests_running{$L}" "$VB")" = 1.0 ]
check "vllm stop-delay: no abort counted yet" [ "$(metric "$abort" "$VB")" = 0.0 ]
poll_eq 3 1.0 metric "$abort" "$VB" || true
freed=$(now)
check "vllm stop-delay: the abort counted, running 0, 1 s after the close" bash -c \
  'awk -v a="$1" -v b="$2" "BEGIN { exit !(b - a >= 0.9 && b - a < 3) }" && [[ $3 == 1.0 && $4 == 0.0 ]]' \
  _ "$closed" "$freed" "$(metric "$abort" "$VB")" "$(metric "vllm:num_requests_running{$L}" "$VB")"
stop_standin vllm

start_standin V0 vllm0 --stand-in vllm
set +e
curl -s -N --max-time 0.3 -o /dev/null "$V0/v1/chat/completions" -d '{"stream":true}'
set -e
check "vllm, no stop-delay: the abort counted at once" poll_eq 1 1.0 metric 'vllm:request_success_total{engine="0",finished_reason="abort",model_name="mock-model"}' "$V0"
check "vllm, no stop-delay: a fault cut short is an abort too" bash -c \
  'curl -s -N --max-time 5 -o /dev/null "$1/v1/chat/completions" -d "{\"stream\":true,\"mock\":{\"close_after\":1,\"tokens_per_sec\":0}}"; [[ $? == 18 ]]' _ "$V0"
check "vllm: two aborts" [ "$(metric 'vllm:request_success_total{engine="0",finished_reason="abort",model_name="mock-model"}' "$V0")" = 2.0 ]
stop_standin vllm0

# bad_flags NAME EXPECTED ARGS...: the mock refuses to start, exit 2, saying EXPECTED
bad_flags() {
  local rc=0 name=$1 expected=$2
  shift 2
  timeout 5 "$MOCK" --port 0 "$@" >/dev/null 2>"$WORK/bad.err" || rc=$?
  if [[ $rc == 2 ]] && grep -qF -- "$expected" "$WORK/bad.err"; then ok "stand-in flags: $name"
  else not_ok "stand-in flags: $name" "exit $rc: $(head -3 "$WORK/bad.err")"; fi
}
bad_flags "an unknown stand-in" 'bad value for --stand-in: sglang' --stand-in sglang
bad_flags "--stop-delay alone" '--stop-delay needs --stand-in' --stop-delay 1
bad_flags "--slots for vllm" '--slots needs --stand-in llamacpp' --stand-in vllm --slots 2
bad_flags "--no-slots alone" '--no-slots needs --stand-in llamacpp' --no-slots
bad_flags "--slots 0" 'bad value for --slots: 0' --stand-in llamacpp --slots 0
bad_flags "a negative --stop-delay" 'bad value for --stop-delay: -1' --stand-in vllm --stop-delay -1
check "stand-in: --help documents the flags" bash -c \
  'h=$("$1" --help); for f in "--stand-in KIND" "--slots N" "--no-slots" "--slots-state" "--stop-delay S" "vllm:num_requests_running" "requests_processing" "finished_reason"; do [[ $h == *"$f"* ]] || exit 1; done' _ "$MOCK"

# ---- --exit-with-parent ----------------------------------------------------

# a parent shell killed with -9 takes its mock with it, which shuts down cleanly
bash -c '"$1" --port 0 --url-file "$2.url" --exit-with-parent >/dev/null 2>"$2.err" &
  echo $! >"$2.pid"; wait' _ "$MOCK" "$WORK/child" &
parent=$!
wait_for 5 test -s "$WORK/child.url" || true
wait_for 5 test -s "$WORK/child.pid" || true
child=$(cat "$WORK/child.pid" 2>/dev/null)
[[ $child =~ ^[0-9]+$ && $child -gt 1 ]] || child=0  # never 'kill 0': our own group
check "exit-with-parent: the mock runs, a child of the shell" bash -c \
  '[[ -s $1 && $(sed "s/^.*) //" /proc/$2/stat | cut -d" " -f2) == "$3" ]]' _ "$WORK/child.url" "$child" "$parent"
check "exit-with-parent: it serves" [ "$(c "$(cat "$WORK/child.url")/health")" = ok ]
{ kill -9 "$parent"; wait "$parent"; } 2>/dev/null || true
check "exit-with-parent: gone once the parent is killed -9" wait_for 5 exited "$child"
check "exit-with-parent: a clean shutdown, as on SIGTERM" grep -q 'SIGTERM, shutting down' "$WORK/child.err"
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/child.err"; then
  not_ok "exit-with-parent: no sanitizer reports" "$(head -20 "$WORK/child.err")"
fi

# without the flag, the same mock outlives its parent (the check above can fail)
bash -c '"$1" --port 0 --url-file "$2.url" >/dev/null 2>&1 & echo $! >"$2.pid"; wait' \
  _ "$MOCK" "$WORK/plain" &
parent=$!
wait_for 5 test -s "$WORK/plain.url" || true
wait_for 5 test -s "$WORK/plain.pid" || true
child=$(cat "$WORK/plain.pid" 2>/dev/null)
[[ $child =~ ^[0-9]+$ && $child -gt 1 ]] || child=0
{ kill -9 "$parent"; wait "$parent"; } 2>/dev/null || true
sleep 0.3
if [[ $child != 0 ]] && ! exited "$child"; then
  ok "without --exit-with-parent: the mock outlives its parent"
else
  not_ok "without --exit-with-parent: the mock outlives its parent"
fi
[[ $child != 0 ]] && kill -TERM "$child" 2>/dev/null || true

# a parent gone before the mock starts: an orphan exits at once; the shell in
# between writes its pid, waits for its own parent to be gone, then execs
(bash -c 'echo $$ >"$2.pid"; sleep 0.3
  sed "s/^.*) //" /proc/$$/stat | cut -d" " -f2 >"$2.ppid"
  exec "$1" --port 0 --url-file "$2.url" --exit-with-parent >/dev/null 2>"$2.err"' \
  _ "$MOCK" "$WORK/orphan" &)
wait_for 5 test -s "$WORK/orphan.ppid" || true
child=$(cat "$WORK/orphan.pid" 2>/dev/null)
[[ $child =~ ^[0-9]+$ && $child -gt 1 ]] || child=0
if [[ $(cat "$WORK/orphan.ppid" 2>/dev/null) == 1 ]]; then
  check "exit-with-parent: started by an orphan, it exits at once" wait_for 5 exited "$child"
  check "exit-with-parent: says why, never listens" bash -c \
    'grep -q "the parent is gone" "$1.err" && [[ ! -e $1.url ]]' _ "$WORK/orphan"
else
  [[ $child != 0 ]] && kill -TERM "$child" 2>/dev/null || true
  echo "skip - orphans are adopted by a subreaper here, not by init"
fi

# ---- shutdown --------------------------------------------------------------

kill -TERM "$MOCK_PID"
set +e
wait "$MOCK_PID"
rc=$?
set -e
MOCK_PID=
check "SIGTERM: clean exit" [ "$rc" = 0 ]
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/err"; then
  not_ok "no sanitizer reports" "$(grep -E -A5 'Sanitizer|runtime error' "$WORK/err" | head -20)"
else
  ok "no sanitizer reports"
fi

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
