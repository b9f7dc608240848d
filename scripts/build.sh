#!/usr/bin/env bash
# Builds the Worker: build/index.js + build/index_bg.wasm (worker-build --release).
# Set SKIP_WASM_OPT=1 to skip the wasm-opt pass (faster builds while iterating).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$REPO_ROOT"

log="$(mktemp -t worker-build.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

if [[ "${SKIP_WASM_OPT:-0}" == "1" ]]; then
    echo "[build] SKIP_WASM_OPT=1: building without wasm-opt"
    worker-build --release --no-opt
    exit 0
fi

if worker-build --release 2>&1 | tee "$log"; then
    exit 0
fi

# The wasm-opt shipped by the binaryen npm package is itself compiled to JS/wasm; if it
# cannot handle the module, an unoptimised build still works, only larger. worker-build
# ends every failure of its wasm-opt step (and only those) with "To disable `wasm-opt`".
if grep -q 'To disable `wasm-opt`' "$log"; then
    echo "[build] WARNING: the wasm-opt step failed (WASM_OPT_BIN=$WASM_OPT_BIN);" \
        "rebuilding with --no-opt, so build/index_bg.wasm is NOT optimised" >&2
    worker-build --release --no-opt
else
    echo "[build] worker-build failed" >&2
    exit 1
fi
