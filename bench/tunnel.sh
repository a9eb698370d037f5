#!/usr/bin/env bash
# Tunnel throughput against a direct loopback TCP copy, in one run: the same sink, the same
# sender, once straight and once through `kube-iap tunnel --listen` -> kube-iap -> the sink.
# A third path sends through two plain relays (accept, connect, copy; nothing else) in place of
# the tunnel client and kube-iap: the same three loopback hops at no cost of their own, so it
# shows what any relayed path can reach when all its processes share this machine's cores.
#
#   bench/tunnel.sh [megabytes-per-run] [rounds]      (defaults: 1000 MB, 3 rounds; medians kept)
set -euo pipefail
cd "$(dirname "$0")/.."
MEGABYTES=${1:-1000}
ROUNDS=${2:-3}
cargo build --release --quiet --bin kube-iap --example token_issuer --example tcp_throughput
WORK=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

coproc ISSUER { exec target/release/examples/token_issuer 127.0.0.1:18084 bench; }
pids+=("$ISSUER_PID")
read -r TOKEN <&"${ISSUER[0]}"
target/release/examples/tcp_throughput sink 127.0.0.1:18095 & pids+=($!)
target/release/examples/tcp_throughput relay 127.0.0.1:18097 127.0.0.1:18095 & pids+=($!)
target/release/examples/tcp_throughput relay 127.0.0.1:18098 127.0.0.1:18097 & pids+=($!)
target/release/kube-iap serve --manifests bench/manifests --no-https --no-access-log \
  --http-addr 127.0.0.1:18083 --admin-addr 127.0.0.1:18093 >"$WORK/kube-iap.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -fsS -o /dev/null http://127.0.0.1:18093/readyz 2>/dev/null && break; sleep 0.1; done
KUBE_IAP_TOKEN=$TOKEN target/release/kube-iap tunnel --url http://localhost:18083 --port 80 \
  --listen 127.0.0.1:18096 >"$WORK/tunnel.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$WORK/tunnel.log" 2>/dev/null && break; sleep 0.1; done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
direct="" relayed="" tunnel=""
for round in $(seq 1 "$ROUNDS"); do
  d=$(target/release/examples/tcp_throughput push 127.0.0.1:18095 "$MEGABYTES")
  r=$(target/release/examples/tcp_throughput push 127.0.0.1:18098 "$MEGABYTES")
  t=$(target/release/examples/tcp_throughput push 127.0.0.1:18096 "$MEGABYTES")
  echo "round $round: direct $d MB/s, two plain relays $r MB/s, tunnel $t MB/s" >&2
  direct+=" $d" relayed+=" $r" tunnel+=" $t"
done
D=$(median <<<"$direct") R=$(median <<<"$relayed") T=$(median <<<"$tunnel")
printf '\n%s MB per run, median of %s rounds\n' "$MEGABYTES" "$ROUNDS"
printf 'direct loopback TCP:      %6s MB/s\nthrough two plain relays: %6s MB/s\nthrough the tunnel:       %6s MB/s\n' "$D" "$R" "$T"
awk -v d="$D" -v r="$R" -v t="$T" 'BEGIN{
  printf "tunnel / direct: %.2fx   (target >= 0.80x)\n", t/d;
  printf "two plain relays / direct: %.2fx   (the most a three-hop path reaches on these cores)\n", r/d;
  printf "tunnel / two plain relays: %.2fx\n", t/r }'
