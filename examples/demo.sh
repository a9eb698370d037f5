#!/usr/bin/env bash
# Starts the local demo: a local OpenID provider on 127.0.0.1:9000 (idp/server.mjs), the sample app
# on 127.0.0.1:3000, and kube-iap serving examples/manifests on 127.0.0.1:8080. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v node >/dev/null || { echo "The demo's identity provider needs Node.js 20 or newer." >&2; exit 1; }
if [ ! -d node_modules/oidc-provider ]; then
  echo "Installing the local identity provider (npm ci)..."
  npm ci --no-audit --no-fund --silent
fi
echo "Building kube-iap and the sample app (the first build takes a few minutes)..."
cargo build --quiet --bin kube-iap --example sample_app

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

node idp/server.mjs --port 9000 --groups alice@example.com=engineering \
  --redirect-uri http://private.localhost:8080/_iap/callback \
  --redirect-uri http://hello.localhost:8080/_iap/callback >/dev/null 2>&1 & pids+=($!)
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
  http://private.localhost:8080/   protected: sign in at the local provider with any login
                                   and password; alice@example.com (or anyone @example.com)
                                   gets in, bob@elsewhere.org is shown a 403
  http://private.localhost:8080/_iap/clear_login_cookie   sign out
  http://127.0.0.1:9090/status     what kube-iap thinks of every resource
  http://127.0.0.1:9090/metrics    Prometheus metrics

Edit examples/manifests/*.yaml and the change applies within a second. Ctrl-C stops the demo.
TEXT
wait -n "${pids[@]}"
