#!/usr/bin/env bash
# Builds every fuzz target and runs each for a short time on a copy of its
# seed corpus (the repository is left untouched). Exits non-zero if a
# target fails to build or finds a crash, leak, timeout or OOM.
#
#   FUZZ_SECONDS   seconds per target (default 30)
#   FUZZ_TARGETS   space-separated subset (default: all, from `cargo fuzz list`)
#   FUZZ_KEEP      set to keep the temporary directory (corpora, logs, crashes)
#
# Stable toolchain with RUSTC_BOOTSTRAP=1, as in CI; `cargo +nightly fuzz`
# works the same.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${FUZZ_SECONDS:-30}"
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"

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

work="$(mktemp -d "${TMPDIR:-/tmp}/wsloop-fuzz.XXXXXX")"
if [[ -z "${FUZZ_KEEP:-}" ]]; then
    trap 'rm -rf "$work"' EXIT
fi

failed=()
for t in $targets; do
    dir="$work/$t"
    mkdir -p "$dir/corpus" "$dir/artifacts"
    if [[ -d "fuzz/corpus/$t" ]]; then
        cp -R "fuzz/corpus/$t/." "$dir/corpus/"
    fi
    echo "fuzz-smoke: $t for ${seconds}s"
    # Known crashing inputs first: they must pass once src is fixed.
    regressions=()
    for f in fuzz/regressions/"$t"-*.bin; do
        [[ -e "$f" ]] && regressions+=("$f")
    done
    status=0
    if [[ ${#regressions[@]} -gt 0 ]]; then
        if ! "$bindir/$t" -rss_limit_mb=2048 -timeout=10 "${regressions[@]}" >"$dir/regressions.log" 2>&1; then
            echo "fuzz-smoke: $t: a known crashing input in fuzz/regressions still crashes:"
            grep -E "panicked|Running:|ERROR" "$dir/regressions.log" | head -n 10
            failed+=("$t (regression)")
        fi
    fi
    "$bindir/$t" \
        -max_total_time="$seconds" \
        -rss_limit_mb=2048 \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/" \
        "$dir/corpus" >"$dir/log" 2>&1 || status=$?
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$dir/log" || true
    if [[ $status -ne 0 ]] || ls "$dir/artifacts/" | grep -q .; then
        echo "fuzz-smoke: $t FAILED (exit $status):"
        grep -E -A2 "panicked at|ERROR: libFuzzer|^SUMMARY" "$dir/log" | grep -vE '^ +#[0-9]' | head -n 20 \
            || tail -n 20 "$dir/log"
        for a in "$dir"/artifacts/*; do
            [[ -e "$a" ]] && echo "  artifact: $a ($(od -An -tx1 -v "$a" | tr -d '\n' | cut -c1-200))"
        done
        failed+=("$t")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz-smoke: crashes in: ${failed[*]}"
    [[ -n "${FUZZ_KEEP:-}" ]] && echo "fuzz-smoke: kept $work"
    exit 1
fi
echo "fuzz-smoke: all targets ran ${seconds}s without a crash"
