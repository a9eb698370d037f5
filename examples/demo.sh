#!/usr/bin/env bash
# Starts the local demo: the sample app on 127.0.0.1:3000 and kube-iap serving examples/manifests.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "Building kube-iap and the sample app (the first build takes a few minutes)..."
cargo build --quiet --bin kube-iap --example sample_app

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

target/debug/examples/sample_app 127.0.0.1:3000 & pids+=($!)
target/debug/kube-iap serve --manifests examples/manifests --no-https \
  --http-addr 127.0.0.1:8080 --admin-addr 127.0.0.1:9090 & pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS -o /dev/null http://127.0.0.1:9090/readyz 2>/dev/null && break
  sleep 0.1
done

cat <<TEXT

kube-iap is running. Open:
  http://hello.localhost:8080/     the sample app, open to everyone (allUsers)
  http://private.localhost:8080/   protected: answers 401 until you sign in
  http://127.0.0.1:9090/status     what kube-iap thinks of every resource
  http://127.0.0.1:9090/metrics    Prometheus metrics

Edit examples/manifests/*.yaml and the change applies within a second. Ctrl-C stops the demo.
TEXT
wait -n "${pids[@]}"
