#!/usr/bin/env bash
# Instruction counts of micro benchmark bodies (benches/micro.rs, its
# `--callgrind` mode) under valgrind's callgrind: the same count run after
# run, so one run judges a change to a hot path on this noisy machine.
#
#   scripts/callgrind.sh NAME...         instructions per run of each case
#   scripts/callgrind.sh list            the cases and what one run does
#   scripts/callgrind.sh all             every case
#
# Only `callgrind_measured` (the case's body, RUNS times) is counted
# (--toggle-collect): setup and one warm-up run are not.
#
# glibc's memcpy and memset use `rep movsb`/`rep stosb` for large sizes,
# which callgrind counts as one instruction per byte (a vector loop moves
# 32 bytes per few instructions), so copies would swamp everything else.
# GLIBC_TUNABLES raises those thresholds so copies run glibc's AVX2 loops,
# counted like any other code. Set REP=1 to keep glibc's own choice.
#
# Environment:
#   RUNS=10            runs of the body counted (the result is per run)
#   BIN=path           a micro bench binary already built (another commit's,
#                      say); default: build this checkout's
#   OUT=dir            keep the callgrind.out.NAME files there (for
#                      callgrind_annotate); default: a temporary directory
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
    BIN=$(cargo bench -p wsloop --bench micro --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*micro[^"]*\)".*/\1/p' | tail -1)
    [ -n "$BIN" ] || { echo "building the micro benchmarks failed:" >&2; cargo bench -p wsloop --bench micro --no-run; exit 1; }
fi
[ $# -gt 0 ] || set -- list
if [ "$1" = list ]; then
    exec "$BIN" --callgrind list
fi
if [ "$1" = all ]; then
    set -- $("$BIN" --callgrind list | awk '{print $1}')
fi

OUT=${OUT:-}
tmp=""
if [ -z "$OUT" ]; then
    tmp=$(mktemp -d)
    OUT=$tmp
    trap 'rm -rf "$tmp"' EXIT
fi
mkdir -p "$OUT"
tunables=glibc.cpu.x86_rep_movsb_threshold=4294967295:glibc.cpu.x86_rep_stosb_threshold=4294967295
[ "${REP:-0}" = 1 ] && tunables=""

printf '%-26s %14s\n' case "Ir per run"
for name in "$@"; do
    file=$OUT/callgrind.out.$name
    if ! GLIBC_TUNABLES=$tunables valgrind --tool=callgrind --callgrind-out-file="$file" \
        --toggle-collect='*callgrind_measured*' "$BIN" --callgrind "$name" "$RUNS" \
        >"$OUT/$name.log" 2>&1; then
        echo "$name: failed:" >&2
        cat "$OUT/$name.log" >&2
        exit 1
    fi
    total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$file" | head -1)
    printf '%-26s %14s\n' "$name" "$((total / RUNS))"
done
[ -z "$tmp" ] && echo "callgrind files in $OUT (callgrind_annotate $OUT/callgrind.out.NAME)"
exit 0
