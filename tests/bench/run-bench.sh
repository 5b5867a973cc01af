#!/bin/bash
# run-bench.sh: every scenario of DESIGN.md on every emulated link, with
# total time, downtime, bytes sent, compression ratio, CPU, and the ratio of
# total time to the physical limit (see README.md for definitions).
#
# usage: run-bench.sh [--quick] [--scenarios a,b] [--links a,b] [--scale X]
#                     [--repeat N] [--out DIR] [--no-verify] [-- fastmig args]
#   scenarios: idle,after-load,dpdk,web,random,vdi (default: all)
#   links:     loopback,10gbit,1gbit (default); also cap-10gbit,cap-1gbit
#              (loopback with fastmig's own --max-bandwidth)
#   --scale X: multiply every guest size (also BENCH_SIZE_SCALE)
#   --quick:   scale 0.125, one repeat, all scenarios, all three links
# Environment: BENCH_MEM_LIMIT_GIB (memory guard), BENCH_VERIFY=0,
#   BENCH_VDI_N (4), BENCH_VDI_WORKLOAD (web), BENCH_SEED, FASTMIG_BIN.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

SCENARIOS=idle,after-load,dpdk,web,random,vdi
LINKS=loopback,10gbit,1gbit
REPEAT=1
OUT=
EXTRA=()
while (( $# )); do
    case $1 in
        --quick) BENCH_SIZE_SCALE=${BENCH_SIZE_SCALE:-0.125} ;;
        --scenarios) SCENARIOS=$2; shift ;;
        --links) LINKS=$2; shift ;;
        --scale) BENCH_SIZE_SCALE=$2; shift ;;
        --repeat) REPEAT=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-verify) BENCH_VERIFY=0 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "run-bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
export BENCH_SIZE_SCALE=${BENCH_SIZE_SCALE:-1} BENCH_VERIFY=${BENCH_VERIFY:-1}
[[ $(id -u) == 0 ]] || { echo "run-bench.sh: needs root (network namespaces, tc)" >&2; exit 1; }

OUT=${OUT:-${builddir:-$TOP_SRCDIR}/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
JSONL=$OUT/bench.jsonl
SKIPS=$OUT/skipped.txt
: >"$SKIPS"
log "results in $OUT (scale $BENCH_SIZE_SCALE, fastmig $FASTMIG)"

# Which of the options the lead is adding this build knows: recorded with
# the results so that a table says what it measured.
{
    echo "fastmig: $("$FASTMIG" version 2>&1 | head -1)  git: $(git -C "$TOP_SRCDIR" rev-parse --short HEAD 2>/dev/null || echo -) (+local changes: $(git -C "$TOP_SRCDIR" status --porcelain 2>/dev/null | wc -l) files)"
    for o in --threads --channels --compress --max-bandwidth --sender-netns; do
        if has_opt demo "$o" "$(case $o in --compress) echo none;; --sender-netns) echo x;; --max-bandwidth) echo 100gbit;; *) echo 1;; esac)"; then
            echo "demo $o: yes"; else echo "demo $o: no"; fi
    done
    echo "host: $(nproc) cores, $(awk '/MemTotal/{print int($2/1048576)}' /proc/meminfo) GiB, kernel $(uname -r)"
} >"$OUT/build.txt"
cat "$OUT/build.txt" >&2

measure_loopback 2
log "loopback TCP (iperf3 -P 2): $(( LOOPBACK_BPS / 1000000 )) MB/s, used as loopback's physical limit"
echo "loopback_bytes_per_s: $LOOPBACK_BPS" >>"$OUT/build.txt"

IFS=, read -ra links <<<"$LINKS"
IFS=, read -ra scens <<<"$SCENARIOS"
for link in "${links[@]}"; do
    link_setup "$link"
    # Big guests one at a time (run_case waits for each), so the memory peak
    # is one source+destination pair (or the vdi group).
    for sc in "${scens[@]}"; do
        for (( r = 1; r <= REPEAT; r++ )); do
            log "== $sc on $link (run $r/$REPEAT)"
            run_case "$sc" "$link" default "$JSONL" "$SKIPS" "${EXTRA[@]}"
        done
    done
done
link_setup none

if [[ -s $JSONL ]]; then
    "${BENCHTOOL[@]}" table "$JSONL" | tee "$OUT/table.txt"
    # One plot: the first dpdk run (the scenario with the most rounds), else
    # the first record that has rounds.
    "${BENCHTOOL[@]}" plot "$JSONL" --scenario dpdk --out "$OUT/rounds-dpdk.png" 2>/dev/null ||
        "${BENCHTOOL[@]}" plot "$JSONL" --out "$OUT/rounds.png" || true
fi
if [[ -s $SKIPS ]]; then echo; echo "skipped:"; cat "$SKIPS"; fi | tee -a "$OUT/table.txt"
log "done: $OUT"
