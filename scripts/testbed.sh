#!/usr/bin/env bash
# A real Kubernetes API server for the tests and benchmarks: etcd + kube-apiserver on loopback.
#
#   scripts/testbed.sh binaries          # the folder holding kube-apiserver and etcd (getting them first)
#   scripts/testbed.sh start DIR         # prints `export KUBECONFIG=... TESTBED_*=...`
#   scripts/testbed.sh supervise DIR     # start, print the same line, stop when standard input closes
#   scripts/testbed.sh restart DIR       # kube-apiserver only, same port and data (watches must resume)
#   scripts/testbed.sh compact DIR       # compact etcd to its current revision (old watches get 410 Gone)
#   scripts/testbed.sh stop DIR
#
# The binaries come from ../shared/testbed when its digests match, else from the cache
# (${KUBE_IAP_TESTBED_CACHE:-~/.cache/kube-iap-testbed}/VERSION), else they are built there from Go
# modules by scripts/build-testbed.sh (about 20 minutes cold). DIR is the caller's scratch folder: it
# holds the data, certificates, ports, kubeconfig and logs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=v1.36.2
SHARED=${KUBE_IAP_SHARED_TESTBED:-$ROOT/../shared/testbed}
CACHE=${KUBE_IAP_TESTBED_CACHE:-$HOME/.cache/kube-iap-testbed}/$VERSION
cmd=${1:-}; D=${2:-}
usage() { echo "usage: $0 binaries | start|supervise|restart|compact|stop DIR" >&2; exit 2; }
[ -n "$cmd" ] || usage

digest() { sha256sum "$1" | cut -d' ' -f1; }

binaries() { # the folder with both binaries: unpacked from ../shared, or built once
  if [ -f "$SHARED/kube-apiserver.sha256" ] && [ -f "$SHARED/etcd.sha256" ]; then
    local name want
    for name in kube-apiserver etcd; do
      want=$(cut -d' ' -f1 "$SHARED/$name.sha256")
      if [ ! -x "$CACHE/$name" ] || [ "$(digest "$CACHE/$name")" != "$want" ]; then
        mkdir -p "$CACHE"; xz -dc "$SHARED/$name.xz" >"$CACHE/$name.tmp"; chmod +x "$CACHE/$name.tmp"
        [ "$(digest "$CACHE/$name.tmp")" = "$want" ] || { echo "$SHARED/$name.xz: digest mismatch" >&2; exit 1; }
        mv "$CACHE/$name.tmp" "$CACHE/$name"
      fi
    done
  elif [ ! -x "$CACHE/kube-apiserver" ] || [ ! -x "$CACHE/etcd" ]; then
    echo "== no ready test bed at $SHARED; building kube-apiserver $VERSION and etcd into $CACHE" >&2
    "$ROOT/scripts/build-testbed.sh" "$CACHE" >&2
  fi
  echo "$CACHE"
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

start_apiserver() { # from the ports and certificates DIR already holds
  # shellcheck disable=SC1091
  . "$D/ports"
  "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$EP" --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 --secure-port="$AP" \
    --tls-cert-file="$D/pki/apiserver.crt" --tls-private-key-file="$D/pki/apiserver.key" \
    --client-ca-file="$D/pki/ca.crt" --token-auth-file="$D/pki/tokens.csv" --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$D/pki/sa.pub" \
    --service-account-signing-key-file="$D/pki/sa.key" --service-cluster-ip-range=10.96.0.0/12 \
    --endpoint-reconciler-type=none --enable-priority-and-fairness=false --profiling=false \
    >>"$D/logs/apiserver.log" 2>&1 &
  echo $! >"$D/apiserver.pid"
  disown $! # stopped by stop_process, which the shell need not report
  local token; token=$(cut -d, -f1 "$D/pki/tokens.csv")
  for _ in $(seq 1 300); do
    if curl -sf --cacert "$D/pki/ca.crt" -H "Authorization: Bearer $token" "https://127.0.0.1:$AP/readyz" >/dev/null; then
      return 0
    fi
    kill -0 "$(cat "$D/apiserver.pid")" 2>/dev/null || break
    sleep 0.2
  done
  echo "kube-apiserver did not become ready; see $D/logs/apiserver.log" >&2; tail -5 "$D/logs/apiserver.log" >&2; exit 1
}

exports() {
  . "$D/ports"
  echo "export KUBECONFIG=$D/kubeconfig TESTBED_APISERVER_PID=$(cat "$D/apiserver.pid") TESTBED_ETCD_PID=$(cat "$D/etcd.pid") TESTBED_APISERVER=https://127.0.0.1:$AP TESTBED_ETCD=http://127.0.0.1:$EP"
}

start() {
  mkdir -p "$D/pki" "$D/logs"; D=$(cd "$D" && pwd)
  BIN=$(binaries)
  echo "EP=$(free_port) PP=$(free_port) AP=$(free_port)" >"$D/ports"
  . "$D/ports"
  local pki=$D/pki
  openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=testbed-ca -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.96.0.1\n' >"$pki/ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 7 \
    -extfile "$pki/ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null; openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  local token; token=admin-$(openssl rand -hex 12); echo "$token,admin,admin,system:masters" >"$pki/tokens.csv"
  "$BIN/etcd" --name testbed --data-dir "$D/etcd" --listen-client-urls "http://127.0.0.1:$EP" \
    --advertise-client-urls "http://127.0.0.1:$EP" --listen-peer-urls "http://127.0.0.1:$PP" \
    --initial-advertise-peer-urls "http://127.0.0.1:$PP" --initial-cluster "testbed=http://127.0.0.1:$PP" \
    --log-level warn >"$D/logs/etcd.log" 2>&1 &
  echo $! >"$D/etcd.pid"
  disown $!
  cat >"$D/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: testbed, cluster: {server: "https://127.0.0.1:$AP", certificate-authority: "$pki/ca.crt"}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: testbed, context: {cluster: testbed, user: admin, namespace: default}}]
current-context: testbed
KC
  start_apiserver
  exports
}

stop_process() { # stop_process NAME: its pid file in DIR; resumed first in case a test paused it
  [ -f "$D/$1.pid" ] || return 0
  local pid; pid=$(cat "$D/$1.pid"); kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true; rm -f "$D/$1.pid"
}

case $cmd in
binaries) binaries ;;
start) [ -n "$D" ] || usage; start ;;
supervise)
  # The tests hold this process's standard input; when they exit, however they exit, it closes
  # and the test bed goes with them, data and all.
  [ -n "$D" ] || usage
  trap 'stop_process apiserver; stop_process etcd; rm -rf "$D"' EXIT
  start
  cat >/dev/null || true ;;
restart)
  [ -n "$D" ] || usage; D=$(cd "$D" && pwd); BIN=$(binaries)
  stop_process apiserver; start_apiserver; exports ;;
compact)
  [ -n "$D" ] || usage; . "$D/ports"
  # etcd's JSON gateway: the current revision, then a physical compaction up to it.
  revision=$(curl -sf -X POST "http://127.0.0.1:$EP/v3/kv/range" -d '{"key":"AA=="}' |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
  curl -sf -X POST "http://127.0.0.1:$EP/v3/kv/compaction" -d "{\"revision\":\"$revision\",\"physical\":true}" >/dev/null
  echo "$revision" ;;
stop) [ -n "$D" ] || usage; D=$(cd "$D" && pwd); stop_process apiserver; stop_process etcd ;;
*) usage ;;
esac
