#!/bin/bash
# run-ablation.sh: the same scenario with each pipeline feature turned off in
# turn, in one run, reported as ratios to the default configuration.
#
# usage: run-ablation.sh [--quick] [--scenarios a,b] [--links a,b] [--scale X]
#                        [--repeat N] [--out DIR] [--configs a,b] [-- fastmig args]
#   default scenarios: web,dpdk (web: compression and XBZRLE matter; dpdk:
#   XBZRLE and the hot set); default links: loopback,1gbit (compression loses
#   on the first and should win on the second); repeat 3 (median is reported).
#   --quick: scale 0.125, repeat 1.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

SCENARIOS=web,dpdk
LINKS=loopback,1gbit
REPEAT=3
OUT=
CONFIGS=default,threads1,no-zero-detect,compress-none,compress-zlib,always-compress,xbzrle-off,channels1
EXTRA=()
while (( $# )); do
    case $1 in
        --quick) BENCH_SIZE_SCALE=${BENCH_SIZE_SCALE:-0.125}; REPEAT=1 ;;
        --scenarios) SCENARIOS=$2; shift ;;
        --links) LINKS=$2; shift ;;
        --scale) BENCH_SIZE_SCALE=$2; shift ;;
        --repeat) REPEAT=$2; shift ;;
        --out) OUT=$2; shift ;;
        --configs) CONFIGS=$2; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "run-ablation.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
export BENCH_SIZE_SCALE=${BENCH_SIZE_SCALE:-1}
results_dir run-ablation.sh ablation
log "results in $OUT (scale $BENCH_SIZE_SCALE, repeat $REPEAT)"

# config name -> the fastmig option that turns one feature off
config_args() {
    case $1 in
        default) echo "" ;;
        threads1) echo "--threads 1" ;;
        no-zero-detect) echo "--no-zero-detect" ;;
        compress-none) echo "--compress none" ;;
        compress-zlib) echo "--compress zlib" ;;
        always-compress) echo "--always-compress" ;;
        xbzrle-off) echo "--xbzrle-cache 0" ;;
        channels1) echo "--channels 1" ;;
        *) return 1 ;;
    esac
}

run_matrix

if [[ -s $JSONL ]]; then
    { "${BENCHTOOL[@]}" ablation "$JSONL"; echo; "${BENCHTOOL[@]}" table "$JSONL"; } | tee "$OUT/table.txt"
fi
if [[ -s $SKIPS ]]; then echo; echo "skipped:"; cat "$SKIPS"; fi | tee -a "$OUT/table.txt"
log "done: $OUT"
