#!/bin/bash
# run-crypto.sh: what authentication and encryption cost (docs/stream-format.md,
# Encryption; README.md, Encryption): the same guests migrated with no key,
# with a key and --cipher none (authenticated, in clear), AES-256-GCM and
# ChaCha20-Poly1305, configurations interleaved within each repeat, medians
# as ratios to "no key" and to "authenticated only".  Starts with one core's
# seal/open rate of each cipher (tests/bench/auth-bench).
#
# usage: run-crypto.sh [--quick] [--scenarios a,b] [--links a,b] [--scale X]
#                      [--repeat N] [--out DIR] [--configs a,b] [-- fastmig args]
#   defaults: scenarios web,idle; links loopback,10gbit,1gbit; repeat 3;
#   scale 0.5 (web 1 GiB, idle 4 GiB).  --quick: scale 0.125, repeat 1.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

SCENARIOS=web,idle
LINKS=loopback,10gbit,1gbit
REPEAT=3
OUT=
CONFIGS=nokey,auth,aes-256-gcm,chacha20-poly1305
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
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "run-crypto.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
export BENCH_SIZE_SCALE=${BENCH_SIZE_SCALE:-0.5}
results_dir run-crypto.sh crypto
log "results in $OUT (scale $BENCH_SIZE_SCALE, repeat $REPEAT)"

KEY=$OUT/psk
[[ -e $KEY ]] || "$FASTMIG" keygen "$KEY" >/dev/null

# config name -> fastmig options (the demo hands key and cipher to its receiver)
config_args() {
    case $1 in
        nokey) echo "" ;;
        auth) echo "--psk-file $KEY --cipher none" ;;
        aes-256-gcm|chacha20-poly1305) echo "--psk-file $KEY --cipher $1" ;;
        *) return 1 ;;
    esac
}

{
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores;" \
         "flags: $(grep -m1 -o -w -e aes -e pclmulqdq -e avx2 -e vaes /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [[ -x ${builddir:-.}/tests/bench/auth-bench ]]; then "${builddir:-.}/tests/bench/auth-bench"; fi
} | tee "$OUT/micro.txt"

run_matrix

if [[ -s $JSONL ]]; then
    {
        echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo; echo "== ratios to no key"; "${BENCHTOOL[@]}" ablation --base nokey "$JSONL"
        echo; echo "== ratios to authenticated only (--cipher none)"; "${BENCHTOOL[@]}" ablation --base auth "$JSONL"
        echo; "${BENCHTOOL[@]}" table "$JSONL"
    } | tee "$OUT/table.txt"
fi
if [[ -s $SKIPS ]]; then echo; echo "skipped:"; cat "$SKIPS"; fi | tee -a "$OUT/table.txt"
log "done: $OUT"
