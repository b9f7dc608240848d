#!/usr/bin/env bash
# Fuzzes the engine's core with cargo-fuzz (libFuzzer, nightly toolchain).
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Defaults: 60 seconds each for graph, template, token, stored and sim. Targets run one after
# another, as one libFuzzer job at low priority (nice 15), built without a
# sanitizer (the core is safe Rust) but with debug assertions and overflow checks.
# Seeds under fuzz/seeds/<target>/ are copied into fuzz/corpus/<target>/ (which
# grows across runs); crashes land in fuzz/artifacts/<target>/. Build output
# stays in fuzz/target. Exits non-zero if any target crashed or failed to run.
#
# Extra libFuzzer flags can be passed through FUZZ_ARGS, e.g. FUZZ_ARGS="-max_len=8192".
set -uo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
case ":$PATH:" in
    *":$HOME/.cargo/bin:"*) ;;
    *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

ALL_TARGETS=(graph template token stored sim)
secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [[ "$secs" -eq 0 ]]; then
    echo "usage: $0 [seconds-per-target] [target...]   (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
fi
shift $(( $# > 0 ? 1 : 0 ))
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    if [[ ! -f "fuzz/fuzz_targets/$t.rs" ]]; then
        echo "unknown target '$t' (have: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz"
    nice -n 15 cargo install cargo-fuzz --locked || exit 1
fi

BUILD_FLAGS=(--sanitizer none --debug-assertions)
echo "[fuzz] building ${targets[*]}"
nice -n 15 cargo +nightly fuzz build "${BUILD_FLAGS[@]}" >/dev/null 2>fuzz/build.log \
    || { cat fuzz/build.log >&2; exit 1; }

count_findings() {
    find "$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l
}

logdir="fuzz/logs"
mkdir -p "$logdir"
summary=()
status=0
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    [[ -d "fuzz/seeds/$t" ]] && cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null
    dict=()
    [[ -f "fuzz/dict/$t.dict" ]] && dict=("-dict=fuzz/dict/$t.dict")
    before="$(count_findings "$artifacts")"
    log="$logdir/$t.log"
    echo "[fuzz] $t: ${secs}s (log: $log)"
    # shellcheck disable=SC2086
    nice -n 15 cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$t" "$corpus" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    after="$(count_findings "$artifacts")"

    runs="$(grep -oE 'Done [0-9]+ runs' "$log" | tail -n1 | grep -oE '[0-9]+')"
    [[ -z "$runs" ]] && runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n1)"
    speed="$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n1)"
    last="$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -n1)"
    cov="$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+')"
    ft="$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+')"
    corp="$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$last" | cut -d' ' -f2)"
    crash="no"
    if [[ $rc -ne 0 || "$after" -gt "$before" ]]; then
        status=1
        found="$(grep -oE 'Test unit written to [^ ]+' "$log" | awk '{print $NF}' | tail -n1)"
        crash="YES (exit $rc) ${found:-see $log}"
    fi
    line="$(printf '%-9s runs=%-10s exec/s=%-7s cov=%-6s ft=%-6s corpus=%-12s crash=%s' \
        "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crash")"
    echo "[fuzz] $line"
    summary+=("$line")
done

echo
echo "==================== fuzz summary (${secs}s per target) ===================="
printf '%s\n' "${summary[@]}"
exit "$status"
