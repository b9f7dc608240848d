#!/usr/bin/env bash
# Runs the Worker locally on http://127.0.0.1:8787 with simulated KV and Durable Objects
# (state under .wrangler/). Secrets for local runs come from .dev.vars.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$REPO_ROOT"

if [[ ! -f .dev.vars ]]; then
    cp .dev.vars.example .dev.vars
    echo "[start] created .dev.vars from .dev.vars.example (local development values only)"
else
    # Settings added since this .dev.vars was made come from the example too.
    while IFS= read -r line; do
        name="${line%%=*}"
        if [[ "$line" == *=* && "$line" != \#* ]] && ! grep -q "^${name}=" .dev.vars; then
            echo "$line" >>.dev.vars
            echo "[start] added $name to .dev.vars from .dev.vars.example"
        fi
    done <.dev.vars.example
fi

# wrangler runs the [build] command of wrangler.toml (scripts/build.sh) before serving, and
# again whenever src/ changes.
exec npx wrangler dev --ip 127.0.0.1 --port "${PORT:-8787}" "$@"
