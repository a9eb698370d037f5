#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== shell scripts parse"
for script in .ci/run scripts/*.sh examples/*.sh bench/*.sh e2e/*.sh; do bash -n "$script"; done
echo "== cargo test"
cargo test
