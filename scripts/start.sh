#!/usr/bin/env bash
# Runs the Worker locally on http://127.0.0.1:8787 with simulated KV and Durable Objects
# (state under .wrangler/). Secrets for local runs come from .dev.vars.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$REPO_ROOT"

if [[ ! -f .dev.vars ]]; then
    cp .dev.vars.example .dev.vars
    echo "[start] created .dev.vars from .dev.vars.example (local development values only)"
fi

# wrangler runs the [build] command of wrangler.toml (scripts/build.sh) before serving, and
# again whenever src/ changes.
exec npx wrangler dev --ip 127.0.0.1 --port "${PORT:-8787}" "$@"
