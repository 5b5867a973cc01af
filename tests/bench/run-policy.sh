#!/bin/bash
# run-policy.sh: does the compression policy follow the bottleneck?  The
# default against --compress none and --always-compress, on the rows of
# issue 16, in one run: rows and configurations interleaved within each
# repeat (the configurations' order rotating from one repeat to the next),
# medians reported as ratios (benchtool.py policy).
#
# usage: run-policy.sh [--rows web:10gbit:1,...] [--repeat N] [--out DIR]
#                      [--no-warmup] [--configs default,compress-none,...]
#                      [--builds NAME=FASTMIG,NAME=FASTMIG] [-- fastmig demo args]
#   a row is SCENARIO:LINK:SCALE (scale multiplies the scenario's base size:
#   web 2 GiB, random 8 GiB).  Default rows: web 2 GiB at 10gbit and on
#   loopback, random 4 GiB at 10gbit, web 2 GiB at 1gbit.  Repeat 5.
#   --builds: an A/B of fastmig binaries (e.g. main's build against yours),
#   interleaved with the configurations; the table adds each build's ratio
#   to the first build's, per configuration.  --ab-default-only: only the
#   default configuration runs with every build, the others with the first
#   (a change to the policy alone leaves --compress none and
#   --always-compress as they were; the other builds' default/best then
#   uses the first build's none and always).
#   A warm-up migration runs first and is not reported: the first migration
#   of a series on this VM runs ~2x slower (the host backs its memory late).
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

ROWS=web:10gbit:1,web:loopback:1,random:10gbit:0.5,web:1gbit:1
REPEAT=5
OUT=
WARMUP=1
CONFIGS=(default compress-none always-compress)
BUILDS=
AB_DEFAULT_ONLY=0
EXTRA=()
while (( $# )); do
    case $1 in
        --rows) ROWS=$2; shift ;;
        --repeat) REPEAT=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-warmup) WARMUP=0 ;;
        --configs) IFS=, read -ra CONFIGS <<<"$2"; shift ;;
        --builds) BUILDS=$2; shift ;;
        --ab-default-only) AB_DEFAULT_ONLY=1 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "run-policy.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
results_dir run-policy.sh policy
log "results in $OUT (rows $ROWS, repeat $REPEAT)"

config_args() {
    case $1 in
        default) echo "" ;;
        compress-none) echo "--compress none" ;;
        always-compress) echo "--always-compress" ;;
    esac
}

IFS=, read -ra rows <<<"$ROWS"
parse_builds "$BUILDS"
measure_loopback 2
{
    echo "git: $(git -C "$TOP_SRCDIR" describe --always --dirty 2>/dev/null || echo unknown)"
    for (( b = 0; b < ${#bbins[@]}; b++ )); do echo "build ${bnames[b]:-this}: ${bbins[b]}"; done
    echo "started: $(date -u +%FT%TZ); load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "other processes using CPU at the start:"
    ps -eo pcpu,comm --sort=-pcpu | head -8
} >"$OUT/build.txt"

if (( WARMUP )); then
    IFS=: read -r sc link scale <<<"${rows[0]}"
    log "== warm-up: $sc on $link (not reported)"
    link_setup "$link"
    FASTMIG=${bbins[0]} FASTMIG_BIN=${bbins[0]} BENCH_SIZE_SCALE=$scale run_case "$sc" "$link" default "$OUT/warmup.jsonl" "$SKIPS" "${EXTRA[@]}"
fi

for (( r = 1; r <= REPEAT; r++ )); do
    for row in "${rows[@]}"; do
        IFS=: read -r sc link scale <<<"$row"
        link_setup "$link"
        # The configurations' order rotates with the repeat: the first
        # migration of a row (after a row of another size) runs on memory
        # the VM has not backed recently, and paid ~1.5x the receiver CPU
        # of the next one in a run where default always went first (random
        # 4 GiB at 10gbit: default/none 1.33 with the same bytes sent).
        for (( k = 0; k < ${#CONFIGS[@]}; k++ )); do
          c=${CONFIGS[(k + r - 1) % ${#CONFIGS[@]}]}
          for (( b = 0; b < ${#bbins[@]}; b++ )); do
            (( AB_DEFAULT_ONLY && b > 0 )) && [[ $c != default ]] && continue
            tag=$c${bnames[b]:+@${bnames[b]}}
            log "== $sc x$scale on $link, $tag (run $r/$REPEAT)"
            # shellcheck disable=SC2046
            # FASTMIG_BIN: the sim guests run the same build as the demo
            FASTMIG=${bbins[b]} FASTMIG_BIN=${bbins[b]} BENCH_SIZE_SCALE=$scale run_case "$sc" "$link" "$tag" "$JSONL" "$SKIPS" $(config_args "$c") "${EXTRA[@]}"
          done
        done
    done
done
link_setup none
echo "finished: $(date -u +%FT%TZ); load: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/build.txt"

{
    if (( WARMUP )); then echo "(a warm-up migration ran first and is not in this table: $OUT/warmup.jsonl)"
    else echo "(no warm-up run: --no-warmup)"; fi
    [[ -s $JSONL ]] && "${BENCHTOOL[@]}" policy "$JSONL"
    if [[ -s $SKIPS ]]; then echo; echo "skipped:"; cat "$SKIPS"; fi
} | tee "$OUT/table.txt"
log "done: $OUT"
