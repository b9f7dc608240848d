#!/usr/bin/env bash
# Builds the Worker: build/index.js + build/index_bg.wasm (worker-build --release).
# Set SKIP_WASM_OPT=1 to skip the wasm-opt pass (faster builds while iterating).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$REPO_ROOT"

# The run viewer (/ui) lays graphs out with dagre, served from this origin like the page itself
# (its CSP allows scripts from 'self' only, and the page works offline). The copy in
# public/vendor/ is gitignored and made here, before the wasm is considered, so `npm start`,
# `wrangler deploy` and the tests always serve the version package-lock.json pins.
vendor="public/vendor"
mkdir -p "$vendor"
for f in dist/dagre.min.js:dagre.min.js LICENSE:dagre.LICENSE.txt; do
    src="node_modules/@dagrejs/dagre/${f%%:*}" dst="$vendor/${f##*:}"
    if [[ ! -f "$src" ]]; then
        echo "[build] $src is missing: run npm ci" >&2
        exit 1
    fi
    cmp -s "$src" "$dst" || cp "$src" "$dst"
done

# Nothing to do when build/ is newer than everything it is made from (the MCP tools compile in
# public/openapi.json and the graph schema) and was made the same
# way: `wrangler dev` runs this at every start (and `npm start` restarts then serve within
# seconds), and `wrangler deploy` runs it too. FORCE_BUILD=1 always rebuilds.
stamp="build/.made-with"
recipe="skip_opt=${SKIP_WASM_OPT:-0} keep_names=${KEEP_WASM_NAMES:-0}"
if [[ "${FORCE_BUILD:-0}" != "1" && -f build/index_bg.wasm && -f build/index.js && -f "$stamp" ]] &&
    [[ "$(cat "$stamp")" == "$recipe" ]] &&
    [[ -z "$(find src Cargo.toml Cargo.lock scripts/build.sh public/openapi.json public/schema/graph.json -newer "$stamp" -print -quit)" ]]; then
    echo "[build] build/ is up to date with src/ (FORCE_BUILD=1 rebuilds)"
    exit 0
fi
rm -f "$stamp"
# Panic locations name source files; without the machine's own directories in front of
# them the bundle is smaller (and the same on every machine).
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$cargo_home/registry/src/=/ --remap-path-prefix=$REPO_ROOT/="

log="$(mktemp -t worker-build.XXXXXX.log)"
# The stamp is written only when an optimised build succeeds (`built`, set below).
on_exit() {
    rm -f "$log"
    if [[ -n "${built:-}" ]]; then echo "$recipe" >"$stamp"; fi
}
trap on_exit EXIT

if [[ "${SKIP_WASM_OPT:-0}" == "1" ]]; then
    echo "[build] SKIP_WASM_OPT=1: building without wasm-opt"
    worker-build --release --no-opt
    built=1
    exit 0
fi

# worker-build keeps the wasm name section (function names, ~60 KB gzip) so that stack traces
# through wasm frames are readable. Production panics still log their message and file:line
# (console_error_panic_hook), so the names are dropped to keep the bundle small; set
# KEEP_WASM_NAMES=1 for a build that keeps them.
strip_names() {
    [[ "${KEEP_WASM_NAMES:-0}" == "1" ]] && return 0
    local wasm="build/index_bg.wasm" features=()
    for f in mutable-globals sign-ext nontrapping-float-to-int bulk-memory multivalue \
        reference-types exception-handling; do
        features+=("--enable-$f")
    done
    # -O3 once more on the way (for speed, like the crate's release profile):
    # worker-build's own pass is wasm-opt's default level.
    if "$WASM_OPT_BIN" "$wasm" -O3 --strip-debug "${features[@]}" -o "$wasm.stripped"; then
        mv "$wasm.stripped" "$wasm"
    else
        rm -f "$wasm.stripped"
        echo "[build] WARNING: could not strip the wasm name section; the build keeps it" >&2
    fi
}

if worker-build --release 2>&1 | tee "$log"; then
    strip_names
    built=1
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
