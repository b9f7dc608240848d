#!/usr/bin/env bash
# Makes sure every tool the build and the tests need is present, installing only what is
# missing or at the wrong version, so a warm machine passes through in about a second.
#
# Source it (`source scripts/toolchain.sh`) to get the exported variables in your shell, or
# run it directly just to prepare the machine. Only crates.io and npm are reachable here, so
# nothing is ever downloaded from GitHub: worker-build is told where its helpers live through
# WASM_BINDGEN_BIN, ESBUILD_BIN and WASM_OPT_BIN.

_toolchain_main() {
    local repo_root
    repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    export REPO_ROOT="$repo_root"

    case ":$PATH:" in
        *":$HOME/.cargo/bin:"*) ;;
        *) export PATH="$HOME/.cargo/bin:$PATH" ;;
    esac

    local want_worker_build="0.8.7"

    # --- Rust target for the Worker -------------------------------------------------------
    if ! rustup target list --installed | grep -qx 'wasm32-unknown-unknown'; then
        echo "[toolchain] adding rust target wasm32-unknown-unknown"
        rustup target add wasm32-unknown-unknown || return 1
    fi

    # --- worker-build ---------------------------------------------------------------------
    local have_wb=""
    if command -v worker-build >/dev/null 2>&1; then
        have_wb="$(worker-build --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true)"
    fi
    if [[ "$have_wb" != "$want_worker_build" ]]; then
        echo "[toolchain] installing worker-build $want_worker_build (found: ${have_wb:-none}); takes ~5 min on 2 cores"
        cargo install worker-build --version "$want_worker_build" || return 1
        have_wb="$(worker-build --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true)"
        if [[ "$have_wb" != "$want_worker_build" ]]; then
            echo "[toolchain] worker-build on PATH is ${have_wb:-missing}, wanted $want_worker_build" >&2
            return 1
        fi
    fi

    # --- wasm-bindgen CLI, exactly the library version in Cargo.lock ----------------------
    if [[ ! -f "$repo_root/Cargo.lock" && -f "$repo_root/Cargo.toml" ]]; then
        echo "[toolchain] Cargo.lock missing; generating it"
        (cd "$repo_root" && cargo generate-lockfile) || return 1
    fi
    local want_bindgen=""
    if [[ -f "$repo_root/Cargo.lock" ]]; then
        want_bindgen="$(awk '
            /^\[\[package\]\]/ { in_pkg = 1; name = ""; next }
            in_pkg && /^name = / { name = $3; gsub(/"/, "", name); next }
            in_pkg && /^version = / && name == "wasm-bindgen" { v = $3; gsub(/"/, "", v); print v; exit }
        ' "$repo_root/Cargo.lock")"
    fi
    if [[ -z "$want_bindgen" ]]; then
        echo "[toolchain] warning: no wasm-bindgen package in Cargo.lock; not checking the wasm-bindgen CLI" >&2
    else
        local have_bindgen=""
        if command -v wasm-bindgen >/dev/null 2>&1; then
            have_bindgen="$(wasm-bindgen --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true)"
        fi
        if [[ "$have_bindgen" != "$want_bindgen" ]]; then
            echo "[toolchain] installing wasm-bindgen-cli $want_bindgen (found: ${have_bindgen:-none}); takes ~2.5 min"
            # No --locked: the CLI's own lockfile names a crate version the index lacks.
            cargo install wasm-bindgen-cli --version "$want_bindgen" || return 1
            have_bindgen="$(wasm-bindgen --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true)"
            if [[ "$have_bindgen" != "$want_bindgen" ]]; then
                echo "[toolchain] wasm-bindgen on PATH is ${have_bindgen:-missing}, wanted $want_bindgen" >&2
                return 1
            fi
        fi
    fi
    if command -v wasm-bindgen >/dev/null 2>&1; then
        WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
        export WASM_BINDGEN_BIN
    fi

    # --- npm packages (wrangler, miniflare, esbuild, binaryen) ----------------------------
    if [[ ! -d "$repo_root/node_modules" \
        || ! -f "$repo_root/node_modules/.package-lock.json" \
        || "$repo_root/package-lock.json" -nt "$repo_root/node_modules/.package-lock.json" ]]; then
        echo "[toolchain] node_modules missing or older than package-lock.json; running npm ci"
        (cd "$repo_root" && npm ci --no-audit --no-fund) || return 1
    fi

    local platform_esbuild
    platform_esbuild="$repo_root/node_modules/@esbuild/$(node -p 'process.platform + "-" + process.arch')/bin/esbuild" || return 1
    if [[ -x "$platform_esbuild" ]]; then
        export ESBUILD_BIN="$platform_esbuild"
    else
        export ESBUILD_BIN="$repo_root/node_modules/.bin/esbuild"
    fi
    export WASM_OPT_BIN="$repo_root/node_modules/binaryen/bin/wasm-opt"
    export WRANGLER_SEND_METRICS=false
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    _toolchain_main
    echo "[toolchain] ready: WASM_BINDGEN_BIN=${WASM_BINDGEN_BIN:-unset} ESBUILD_BIN=$ESBUILD_BIN WASM_OPT_BIN=$WASM_OPT_BIN"
else
    # Every step above returns non-zero on failure, so this works with or without `set -e`.
    _toolchain_main
    _toolchain_status=$?
    if [[ $_toolchain_status -ne 0 ]]; then
        echo "[toolchain] failed (status $_toolchain_status)" >&2
        return "$_toolchain_status"
    fi
    unset _toolchain_status
fi
