#!/usr/bin/env bash
# Throughput and latency of one backend reached directly, through nginx as a plain reverse proxy
# (sending the backend the forwarding headers and request id kube-iap sends; "nginx-bare" sends
# only Host and X-Forwarded-For, for reference), through kube-iap on an allUsers route, through
# kube-iap signed in (a session cookie checked against a domain: policy), the same on a Gateway
# API route, and with a bearer ID token (cached after its first verification), in one run on
# loopback. Then the cost of one
# uncached token verification.
#
#   bench/run.sh [seconds-per-run] [rounds]      (defaults: 10 s, 3 rounds)
#
# Peak load: wrk, 2 threads, 64 connections, the targets interleaved round by round (every other
# round in reverse order) and the ratios taken within each round, their median kept, so a slow
# minute on a shared machine hits all targets alike. Half load: hey at half of kube-iap's peak
# rate, the same rate for all targets, in rounds the same way, for p99 added latency. Everything
# (load generator included) shares this machine's cores, so compare ratios, not absolute numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/support/nginx.sh
source bench/support/nginx.sh
DURATION=${1:-10}
ROUNDS=${2:-3}
for tool in wrk hey nginx; do
  command -v "$tool" >/dev/null || { echo "bench needs $tool: apt-get install -y wrk hey nginx-light" >&2; exit 2; }
done

cargo build --release --quiet --bin kube-iap --example sample_app --example mint_session --example token_issuer
# The key is the one in bench/manifests/bench.yaml's kube-iap-session-keys Secret.
COOKIE=$(target/release/examples/mint_session "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMzI=" signed-in.bench.local bench@example.com 86400)
GATEWAY_COOKIE=$(target/release/examples/mint_session "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMzI=" gateway.bench.local bench@example.com 86400)
WORK=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

target/release/examples/sample_app 127.0.0.1:18081 2>/dev/null & pids+=($!)
# The OAuthClient's issuer (bench/manifests): discovery, keys, and one ID token on stdout.
coproc ISSUER { exec target/release/examples/token_issuer 127.0.0.1:18084 bench; }
pids+=("$ISSUER_PID")
read -r TOKEN <&"${ISSUER[0]}"

start_nginx "$WORK" 18082 18081 18085

target/release/kube-iap serve --manifests bench/manifests --no-https --no-access-log \
  --http-addr 127.0.0.1:18083 --admin-addr 127.0.0.1:18093 >"$WORK/kube-iap.log" 2>&1 & pids+=($!)

wait_up http://127.0.0.1:18081/plain
wait_up http://127.0.0.1:18082/plain
wait_up http://127.0.0.1:18085/plain
wait_up http://127.0.0.1:18083/plain
curl -fsS -o /dev/null -H "Host: signed-in.bench.local" -H "Cookie: $COOKIE" http://127.0.0.1:18083/plain \
  || { echo "kube-iap refused the minted session" >&2; exit 1; }
curl -fsS -o /dev/null -H "Host: signed-in.bench.local" -H "Authorization: Bearer $TOKEN" http://127.0.0.1:18083/plain \
  || { echo "kube-iap refused the bench ID token" >&2; exit 1; }
curl -fsS -o /dev/null -H "Host: gateway.bench.local" -H "Cookie: $GATEWAY_COOKIE" http://127.0.0.1:18083/plain \
  || { echo "kube-iap refused the minted session on the Gateway route" >&2; exit 1; }

TARGETS="direct nginx nginx-bare kube-iap kube-iap-cookie kube-iap-bearer kube-iap-gateway"
declare -A URL=([direct]=http://127.0.0.1:18081/plain [nginx]=http://127.0.0.1:18082/plain
                [nginx-bare]=http://127.0.0.1:18085/plain
                [kube-iap]=http://127.0.0.1:18083/plain [kube-iap-cookie]=http://127.0.0.1:18083/plain
                [kube-iap-bearer]=http://127.0.0.1:18083/plain
                [kube-iap-gateway]=http://127.0.0.1:18083/plain)
# Request header arguments for target $2, one per line, in the syntax of tool $1 (hey takes the
# Host as -host: Go's HTTP client ignores a Host header).
headers() {
  local host=bench.local
  case "$2" in kube-iap-cookie|kube-iap-bearer) host=signed-in.bench.local ;; kube-iap-gateway) host=gateway.bench.local ;; esac
  if [ "$1" = hey ]; then printf '%s\n' -host "$host"; else printf '%s\n' -H "Host: $host"; fi
  [ "$2" = kube-iap-cookie ] && printf '%s\n' -H "Cookie: $COOKIE"
  [ "$2" = kube-iap-bearer ] && printf '%s\n' -H "Authorization: Bearer $TOKEN"
  [ "$2" = kube-iap-gateway ] && printf '%s\n' -H "Cookie: $GATEWAY_COOKIE"
  return 0
}
declare -A RPS P50 P99 HALF_P99 ALL_RPS ALL_P50 ALL_P99
# wrk prints latency as 1.23ms / 456.00us / 1.02s; convert to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v); print v+0} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000} else print v }'; }

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for name in $TARGETS; do
  mapfile -t H < <(headers wrk "$name")
  wrk -t2 -c64 -d2s "${H[@]}" "${URL[$name]}" >/dev/null  # warm-up
done
# Every other round runs the targets in reverse order, so that whatever drifts during a round (the
# machine's other load, warm caches) does not always favour the same target.
REVERSED=$(tr ' ' '\n' <<<"$TARGETS" | tac | tr '\n' ' ')
declare -A ROUND_RPS ALL_RATIO
for round in $(seq 1 "$ROUNDS"); do
  order=$TARGETS; [ $((round % 2)) -eq 0 ] && order=$REVERSED
  for name in $order; do
    mapfile -t H < <(headers wrk "$name")
    out=$(wrk -t2 -c64 -d"${DURATION}s" --latency "${H[@]}" "${URL[$name]}")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); [ -z "$non2xx" ] || { echo "$name answered non-2xx: $out" >&2; exit 1; }
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    ALL_RPS[$name]+=" $rps"
    ALL_P50[$name]+=" $(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")"
    ALL_P99[$name]+=" $(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
    ROUND_RPS[$name]=$rps
    echo "round $round: $name $rps requests/s" >&2
  done
  # Ratios within a round, where both sides saw the same minute of this machine: their median is
  # steadier than the ratio of medians taken minutes apart.
  for name in kube-iap kube-iap-cookie kube-iap-bearer kube-iap-gateway; do
    ALL_RATIO[$name]+=" $(awk -v k="${ROUND_RPS[$name]}" -v n="${ROUND_RPS[nginx]}" 'BEGIN{printf "%.3f", k/n}')"
    ALL_RATIO[$name-bare]+=" $(awk -v k="${ROUND_RPS[$name]}" -v n="${ROUND_RPS[nginx-bare]}" 'BEGIN{printf "%.3f", k/n}')"
  done
done
for name in $TARGETS; do
  RPS[$name]=$(median <<<"${ALL_RPS[$name]}")
  P50[$name]=$(median <<<"${ALL_P50[$name]}")
  P99[$name]=$(median <<<"${ALL_P99[$name]}")
done

HALF_RATE=$(awk -v r="${RPS[kube-iap]}" 'BEGIN{printf "%d", r/2}')
CONNS=16
declare -A ALL_HALF_P99 ALL_ADDED
for round in $(seq 1 "$ROUNDS"); do
  order=$TARGETS; [ $((round % 2)) -eq 0 ] && order=$REVERSED
  for name in $order; do
    mapfile -t H < <(headers hey "$name")
    out=$(hey -z "${DURATION}s" -c "$CONNS" -q "$((HALF_RATE / CONNS))" "${H[@]}" "${URL[$name]}")
    non2xx=$(awk '/^ *\[[0-9]+\][ \t]+[0-9]+ responses/ && !/\[200\]/' <<<"$out"); [ -z "$non2xx" ] || { echo "$name answered non-200 under hey: $non2xx" >&2; exit 1; }
    ROUND_RPS[$name]=$(awk '/ 99% in/ {printf "%.3f", $3*1000}' <<<"$out")
    ALL_HALF_P99[$name]+=" ${ROUND_RPS[$name]}"
    echo "half load round $round: $name p99 ${ROUND_RPS[$name]} ms" >&2
  done
  # Added latency within a round, for the same reason as the ratios.
  for name in kube-iap kube-iap-cookie kube-iap-bearer kube-iap-gateway; do
    ALL_ADDED[$name]+=" $(awk -v k="${ROUND_RPS[$name]}" -v d="${ROUND_RPS[direct]}" 'BEGIN{printf "%.3f", k-d}')"
  done
done
for name in $TARGETS; do HALF_P99[$name]=$(median <<<"${ALL_HALF_P99[$name]}"); done

printf '\nmedian of %s rounds of %ss each, at peak and at half load (one rate for all)\n' "$ROUNDS" "$DURATION"
printf '%-16s %14s %10s %10s %18s\n' target "requests/s" "p50 ms" "p99 ms" "p99 ms @ half load"
for name in $TARGETS; do
  printf '%-16s %14.0f %10.3f %10.3f %18.3f\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" "${HALF_P99[$name]}"
done
ratio() { median <<<"${ALL_RATIO[$1]}"; }
span() { tr ' ' '\n' <<<"${ALL_RATIO[$1]}" | grep -v '^$' | sort -g | sed -n '1p;$p' | paste -sd- | sed 's/-/ to /'; }
printf '\nper-round kube-iap / nginx throughput ratios (median, then lowest to highest of %s rounds):\n' "$ROUNDS"
for name in kube-iap kube-iap-cookie kube-iap-bearer kube-iap-gateway; do
  printf '  %-16s %.2fx (%s)   against nginx-bare: %.2fx (%s)\n' "$name" "$(ratio "$name")" "$(span "$name")" \
    "$(ratio "$name-bare")" "$(span "$name-bare")"
done
awk -v k="$(ratio kube-iap)" -v c="$(ratio kube-iap-cookie)" -v b="$(ratio kube-iap-bearer)" \
    -v kb="$(ratio kube-iap-bare)" -v cb="$(ratio kube-iap-cookie-bare)" -v bb="$(ratio kube-iap-bearer-bare)" \
    -v bc="$(awk -v b="${RPS[kube-iap-bearer]}" -v c="${RPS[kube-iap-cookie]}" 'BEGIN{print b/c}')" \
    -v ka="$(median <<<"${ALL_ADDED[kube-iap]}")" -v ca="$(median <<<"${ALL_ADDED[kube-iap-cookie]}")" \
    -v ba="$(median <<<"${ALL_ADDED[kube-iap-bearer]}")" -v rate="$HALF_RATE" \
    -v gc="$(awk -v g="${RPS[kube-iap-gateway]}" -v c="${RPS[kube-iap-cookie]}" 'BEGIN{print g/c}')" \
    -v ga="$(median <<<"${ALL_ADDED[kube-iap-gateway]}")" 'BEGIN{
  printf "\nkube-iap / nginx throughput: %.2fx allUsers, %.2fx signed in, %.2fx bearer   (target >= 1.0x)\n", k, c, b;
  printf "kube-iap / nginx-bare throughput: %.2fx allUsers, %.2fx signed in, %.2fx bearer   (reference)\n", kb, cb, bb;
  printf "bearer (cached) / cookie throughput: %.2fx   (target >= 0.9x)\n", bc;
  printf "p99 added over direct at %d req/s (half of kube-iap peak; median of rounds): %.3f ms allUsers, %.3f ms signed in, %.3f ms bearer   (target <= 1 ms)\n", rate, ka, ca, ba;
  printf "signed in on a Gateway API route / on an IapPolicy host: %.2fx throughput, %.3f ms p99 added at half load   (target >= 1.0x, as signed in)\n", gc, ga }'
echo
# criterion prints the name, then "time: [low estimate high]" on the next line.
cargo bench --quiet --bench verify_token 2>/dev/null | grep -A1 '^uncached ES256' | tr -s ' \n' ' '
echo
