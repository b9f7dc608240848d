#!/usr/bin/env bash
# The full check CI runs: formatting, lints (native and wasm), native unit tests, one
# release build, the daemon's own test, then the end-to-end tests against the built Worker
# running in workerd through Miniflare.
set -euo pipefail

section() {
    printf '\n==================== %s ====================\n' "$*"
}

source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$REPO_ROOT"

section "cargo fmt --check"
cargo fmt --check

section "cargo clippy (native, all targets)"
cargo clippy --all-targets -- -D warnings

section "cargo clippy (wasm32-unknown-unknown, lib)"
cargo clippy --target wasm32-unknown-unknown --lib -- -D warnings

section "cargo test (native core)"
cargo test

section "build the Worker (worker-build --release)"
bash scripts/build.sh

section "node --test (daemon + end-to-end)"
shopt -s nullglob
test_files=(tests/*.test.mjs tests/e2e/*.test.mjs)
shopt -u nullglob
if [[ ${#test_files[@]} -eq 0 ]]; then
    echo "no *.test.mjs files found under tests/" >&2
    exit 1
fi
node --test --test-concurrency=1 "${test_files[@]}"

section "all checks passed"
