#!/usr/bin/env bash
# Runs the deterministic simulation of the run's gate (src/sim) on fresh seeds
# for as long as asked, and prints what it covered:
#
#   scripts/sim.sh [seconds] [first-seed]
#
# Defaults: 600 seconds, a first seed taken from the clock (printed, so a run
# can be repeated). Built with optimisations. A failing seed stops the run and
# prints the command that replays it with a trace of every request, answer,
# storage operation, alarm and crash. `cargo test` runs a fixed set of seeds;
# this looks further. Keep every seed that finds a bug in REGRESSIONS
# (tests/sim.rs).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
case ":$PATH:" in
    *":$HOME/.cargo/bin:"*) ;;
    *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

secs="${1:-600}"
base="${2:-$(( $(date +%s) * 1000 ))}"
if ! [[ "$secs" =~ ^[0-9]+$ && "$base" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [seconds] [first-seed]" >&2
    exit 2
fi
echo "[sim] $secs s from seed $base"
# Fully optimised, without the release profile's LTO (that is for the
# Worker), in a target directory of its own so `cargo test`'s builds stay warm.
SIM_SECONDS="$secs" SIM_BASE="$base" CARGO_TARGET_DIR="$REPO_ROOT/target/sim" \
    CARGO_PROFILE_DEV_OPT_LEVEL=3 CARGO_PROFILE_TEST_OPT_LEVEL=3 \
    cargo test --test sim -- one_seed --ignored --nocapture
