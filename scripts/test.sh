#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== node packages (the test identity provider and the browser driver)"
if [ ! -d node_modules/oidc-provider ] || [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/@grpc/grpc-js ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund
fi
echo "== chart tools (helm, kubernetes-validate)"
scripts/install-tools.sh
echo "== test bed (a real kube-apiserver and etcd: from ../shared/testbed, or built from Go modules once)"
scripts/testbed.sh binaries
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== shell scripts parse"
for script in .ci/run scripts/*.sh examples/*.sh bench/*.sh e2e/*.sh; do bash -n "$script"; done
for script in idp/*.mjs e2e/browser/*.mjs tests/grpc/*.mjs; do node --check "$script"; done
# --locked: the tests build exactly the Cargo.lock the Dockerfile's `cargo build --locked` builds.
echo "== cargo test"
cargo test --locked
