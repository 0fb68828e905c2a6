#!/usr/bin/env bash
# Builds every fuzz target and runs each for a short time on a copy of its
# seed corpus (the repository is left untouched), FUZZ_JOBS targets at a
# time (one per core). Exits non-zero if a target fails to build, a known
# crashing input in fuzz/regressions crashes again, or a target finds a
# crash, leak, timeout or OOM.
#
#   FUZZ_SECONDS   seconds per target (default 30)
#   FUZZ_TARGETS   space-separated subset (default: all, from `cargo fuzz list`)
#   FUZZ_JOBS      targets run at once (default: the number of cores)
#   FUZZ_KEEP      set to keep the temporary directory (corpora, logs, crashes)
#
# Stable toolchain with RUSTC_BOOTSTRAP=1, as in CI; `cargo +nightly fuzz`
# works the same.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# `wait -n -p` (which job ended) needs bash 5.1.
if (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501 )); then
    echo "fuzz-smoke: needs bash 5.1 or later (this is $BASH_VERSION)" >&2
    exit 2
fi
cd "$root"

seconds="${FUZZ_SECONDS:-30}"
jobs="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz-smoke: FUZZ_JOBS must be a positive number, not '$jobs'" >&2; exit 2; }
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
echo "fuzz-smoke: building: $(echo $targets)"
cargo fuzz build

# The build above uses the host triple and release profile.
triple="$(rustc -vV | sed -n 's/^host: //p')"
bindir="$root/fuzz/target/$triple/release"
for t in $targets; do
    [[ -x "$bindir/$t" ]] || { echo "fuzz-smoke: no binary for target '$t' at $bindir/$t" >&2; exit 1; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/wsloop-fuzz.XXXXXX")"
pids=()
cleanup() {
    local p
    # Each job is its own process group (set -m below): stop the ones still
    # running, fuzzer included, by their PIDs.
    for p in "${pids[@]+"${pids[@]}"}"; do
        kill -- "-$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    [[ -n "${FUZZ_KEEP:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# fuzz_one TARGET: the regressions, then the timed run. Writes
# $work/TARGET/report (what to print), $work/TARGET/failed (a line per
# failure) and, last, $work/TARGET/done; runs in the background, so it
# prints nothing itself. No `set -e` here: a grep that finds nothing must
# not end the job before it records a failure.
fuzz_one() {
    set +e
    local t="$1" dir="$work/$1" status=0 f a
    local regressions=()
    mkdir -p "$dir/corpus" "$dir/artifacts"
    : >"$dir/report"
    : >"$dir/failed"
    if [[ -d "fuzz/corpus/$t" ]]; then
        cp -R "fuzz/corpus/$t/." "$dir/corpus/"
    fi
    # Known crashing inputs first: they must pass once src is fixed.
    for f in fuzz/regressions/"$t"-*.bin; do
        [[ -e "$f" ]] && regressions+=("$f")
    done
    if [[ ${#regressions[@]} -gt 0 ]]; then
        if "$bindir/$t" -rss_limit_mb=2048 -timeout=10 "${regressions[@]}" >"$dir/regressions.log" 2>&1; then
            echo "  ${#regressions[@]} known crashing input(s) in fuzz/regressions pass" >>"$dir/report"
        else
            {
                echo "fuzz-smoke: $t: a known crashing input in fuzz/regressions still crashes:"
                grep -E "panicked|Running:|ERROR" "$dir/regressions.log" | head -n 10
            } >>"$dir/report"
            echo "$t (regression)" >>"$dir/failed"
        fi
    fi
    "$bindir/$t" \
        -max_total_time="$seconds" \
        -rss_limit_mb=2048 \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/" \
        "$dir/corpus" >"$dir/log" 2>&1 || status=$?
    {
        grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$dir/log" || true
        if [[ $status -ne 0 ]] || ls "$dir/artifacts/" | grep -q .; then
            echo "fuzz-smoke: $t FAILED (exit $status):"
            grep -E -A2 "panicked at|ERROR: libFuzzer|^SUMMARY" "$dir/log" | grep -vE '^ +#[0-9]' | head -n 20 \
                || tail -n 20 "$dir/log"
            for a in "$dir"/artifacts/*; do
                [[ -e "$a" ]] && echo "  artifact: $a ($(od -An -tx1 -v "$a" | tr -d '\n' | cut -c1-200))"
            done
            echo "$t" >>"$dir/failed"
        fi
    } >>"$dir/report"
    : >"$dir/done"
}

# report PID: print the finished target's report (whole, so that two
# targets' output never interleaves) and forget its PID.
declare -A target_of=()
report() {
    local pid="$1" t i
    t="${target_of[$pid]}"
    echo "fuzz-smoke: $t done"
    cat "$work/$t/report"
    for i in "${!pids[@]}"; do
        [[ "${pids[$i]}" == "$pid" ]] && unset 'pids[i]'
    done
    pids=("${pids[@]+"${pids[@]}"}")
}

echo "fuzz-smoke: ${seconds}s per target, $jobs at a time"
set -m   # each target's job in its own process group, so cleanup can stop it whole
for t in $targets; do
    while [[ ${#pids[@]} -ge $jobs ]]; do
        done_pid=""
        wait -n -p done_pid "${pids[@]}" || true
        report "$done_pid"
    done
    echo "fuzz-smoke: $t for ${seconds}s"
    fuzz_one "$t" &
    pids+=("$!")
    target_of[$!]="$t"
done
while [[ ${#pids[@]} -gt 0 ]]; do
    done_pid=""
    wait -n -p done_pid "${pids[@]}" || true
    report "$done_pid"
done

failed=()
for t in $targets; do
    if [[ ! -e "$work/$t/done" ]]; then
        failed+=("$t (did not finish)")
        continue
    fi
    while IFS= read -r line; do
        failed+=("$line")
    done <"$work/$t/failed"
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz-smoke: failures in: ${failed[*]}"
    [[ -n "${FUZZ_KEEP:-}" ]] && echo "fuzz-smoke: kept $work"
    exit 1
fi
echo "fuzz-smoke: all targets ran ${seconds}s without a crash"
