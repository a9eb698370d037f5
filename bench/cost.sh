#!/usr/bin/env bash
# What one proxied request costs, in figures a busy shared machine does not move much:
#   1. CPU time per request (user and system, from /proc) of nginx as a plain reverse proxy (with
#      the forwarding headers kube-iap sends, and bare: Host and X-Forwarded-For only) and
#      of kube-iap on an allUsers route, each under the same wrk load, interleaved, with what the
#      backend and wrk spent per request alongside;
#   2. with valgrind installed, instructions per request of kube-iap on the allUsers route and
#      signed in with a session cookie (callgrind, counted only while the load runs, so start-up
#      is left out). The same binary and load give the same count.
# Throughput ratios (bench/run.sh) follow these, but swing with whatever else the machine runs.
#
#   bench/cost.sh [seconds-per-run] [rounds]      (defaults: 5 s, 2 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/support/nginx.sh
source bench/support/nginx.sh
DURATION=${1:-5}
ROUNDS=${2:-2}
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "bench needs $tool: apt-get install -y wrk nginx-light" >&2; exit 2; }
done
cargo build --release --quiet --bin kube-iap --example sample_app --example mint_session
# A session for the signed-in route; the key is the one in bench/manifests/bench.yaml.
COOKIE=$(target/release/examples/mint_session "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMzI=" signed-in.bench.local bench@example.com 86400)
WORK=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

target/release/examples/sample_app 127.0.0.1:18081 2>/dev/null & pids+=($!)
BACKEND=$!
start_nginx "$WORK" 18082 18081 18085
target/release/kube-iap serve --manifests bench/manifests --no-https --no-access-log \
  --http-addr 127.0.0.1:18083 --admin-addr 127.0.0.1:18093 >"$WORK/kube-iap.log" 2>&1 & pids+=($!)
KUBE_IAP=$!

wait_up http://127.0.0.1:18082/plain
wait_up http://127.0.0.1:18085/plain
wait_up http://127.0.0.1:18083/plain
NGINX_WORKERS=$(pgrep -f 'nginx: worker' -P "$(cat "$WORK/nginx/nginx.pid")" | tr '\n' ' ')

# Clock ticks (user, system) used so far by the given processes, all their threads included.
ticks() {
  local user=0 system=0 u s pid
  for pid in "$@"; do
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
    user=$((user + u)); system=$((system + s))
  done
  echo "$user $system"
}
HZ=$(getconf CLK_TCK)
# Prints requests/s and CPU microseconds per request of the processes $3... under load on URL $2,
# then what the backend and wrk spent per request meanwhile: on these shared cores a proxy that
# makes the backend or the load generator work harder loses throughput it does not show itself.
cost() {
  local name=$1 url=$2; shift 2
  local u0 s0 u1 s1 b0 b1 out requests wrk_cpu
  wrk -t2 -c64 -d1s -H "Host: bench.local" "$url" >/dev/null
  read -r u0 s0 < <(ticks "$@")
  b0=$(ticks "$BACKEND")
  local TIMEFORMAT='%3U %3S'
  { time wrk -t2 -c64 -d"${DURATION}s" -H "Host: bench.local" "$url" >"$WORK/wrk.out"; } 2>"$WORK/wrk.time"
  out=$(cat "$WORK/wrk.out")
  read -r u1 s1 < <(ticks "$@")
  b1=$(ticks "$BACKEND")
  wrk_cpu=$(awk '{print $1 + $2}' "$WORK/wrk.time")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v name="$name" -v n="$requests" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$HZ" \
      -v b="$(( ${b1% *} + ${b1#* } - ${b0% *} - ${b0#* } ))" -v w="$wrk_cpu" \
      -v rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")" \
      'BEGIN { printf "%-10s %8.0f requests/s   user %5.1f   system %5.1f   (backend %5.1f, wrk %5.1f) us/request\n", name, rps, u*1e6/hz/n, s*1e6/hz/n, b*1e6/hz/n, w*1e6/n }'
}
echo "CPU per request (wrk -t2 -c64, ${DURATION}s)"
for _ in $(seq 1 "$ROUNDS"); do
  # shellcheck disable=SC2086 # one argument per worker pid
  cost nginx http://127.0.0.1:18082/plain $NGINX_WORKERS
  cost nginx-bare http://127.0.0.1:18085/plain $NGINX_WORKERS
  cost kube-iap http://127.0.0.1:18083/plain "$KUBE_IAP"
done

if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
  echo "instructions per request: skipped (valgrind not installed)"
  exit 0
fi
kill "$KUBE_IAP"; wait "$KUBE_IAP" 2>/dev/null || true
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out" \
  target/release/kube-iap serve --manifests bench/manifests --no-https --no-access-log \
  --http-addr 127.0.0.1:18083 --admin-addr 127.0.0.1:18093 >"$WORK/callgrind.log" 2>&1 &
VALGRIND=$!
pids+=("$VALGRIND")
# Under valgrind start-up takes seconds.
wait_up http://127.0.0.1:18083/plain 300
# Instructions per request on one route: counted from zero while wrk runs, dumped to a file of
# its own.
instructions() {
  local name=$1 total requests dump
  shift
  wrk -t1 -c4 -d2s "$@" http://127.0.0.1:18083/plain >/dev/null
  callgrind_control -z "$VALGRIND" >/dev/null 2>&1
  callgrind_control -i on "$VALGRIND" >/dev/null 2>&1
  requests=$(wrk -t1 -c4 -d"${DURATION}s" "$@" http://127.0.0.1:18083/plain | awk '/requests in/ {print $1}')
  callgrind_control -i off "$VALGRIND" >/dev/null 2>&1
  callgrind_control -d "$VALGRIND" >/dev/null 2>&1
  dump=$(ls -t "$WORK"/callgrind.out.* | head -1)
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  printf 'instructions per request, %-22s %6d over %d requests\n' "$name:" "$((total / requests))" "$requests"
}
echo "callgrind, whole kube-iap process, wrk -t1 -c4:"
instructions "allUsers" -H "Host: bench.local"
instructions "signed in (cookie)" -H "Host: signed-in.bench.local" -H "Cookie: $COOKIE"
kill -INT "$VALGRIND"
for _ in $(seq 1 150); do kill -0 "$VALGRIND" 2>/dev/null || break; sleep 0.1; done
kill "$VALGRIND" 2>/dev/null || true
wait "$VALGRIND" 2>/dev/null || true
