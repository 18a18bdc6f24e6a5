#!/usr/bin/env bash
# Runs one Lua test file with the sluice host against a fresh sluice-mock on a
# free loopback port. The test finds the mock through SLUICE_MOCK_URL, its log
# through SLUICE_MOCK_LOG, and the suite's fault-injecting proxy
# (tests/tools/faultproxy.c) through SLUICE_FAULTPROXY_BIN.
# Usage: run_lua_test.sh SLUICE SLUICE_MOCK TEST.lua [FAULTPROXY]
set -u
sluice=$(realpath "$1") mock=$(realpath "$2") test=$(realpath "$3")
faultproxy=${4:+$(realpath "$4")}
dir=$(mktemp -d)
"$mock" --port 0 --url-file "$dir/url" --exit-with-parent --quiet >/dev/null 2>"$dir/log" &
mock_pid=$!
status=1
cleanup() {
  kill "$mock_pid" 2>/dev/null
  wait "$mock_pid"
  mock_status=$?
  # the mock exits 0 on SIGTERM; anything else (a sanitizer report) fails the test
  if [ "$mock_status" -ne 0 ] && [ "$mock_status" -ne 143 ]; then
    echo "sluice-mock exited with status $mock_status:"; tail -n 40 "$dir/log"
    status=1
  fi
  rm -rf "$dir"
  exit "$status"
}
trap cleanup EXIT
url=
for _ in $(seq 1 200); do
  [ -f "$dir/url" ] && url=$(cat "$dir/url") && break
  kill -0 "$mock_pid" 2>/dev/null || break
  sleep 0.025
done
if [ -z "$url" ]; then
  echo "sluice-mock did not start:"; cat "$dir/log"
  exit 1
fi
export SLUICE_MOCK_URL=$url SLUICE_MOCK_LOG=$dir/log SLUICE_MOCK_PID=$mock_pid
export SLUICE_BIN=$sluice SLUICE_MOCK_BIN=$mock SLUICE_FAULTPROXY_BIN=$faultproxy
export LUA_PATH="$(cd "$(dirname "$test")" && pwd)/?.lua;;"
cd "$(dirname "$test")"
"$sluice" "$test"
status=$?
