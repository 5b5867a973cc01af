#!/bin/bash
# qemu-peer.sh: QEMU 7.2's live migration of the same memory content as a
# fastmig scenario, over the same loopback, in the same run; reported as
# fastmig/QEMU ratios.
#
# For each scenario: create a sim guest, let it run BENCH_WARMUP_MS, copy its
# RAM (the memfd of `fastmig sim serve`) to a sparse file, then
#   1. fastmig: `fastmig send` that very guest to `fastmig receive` on
#      127.0.0.1 (the same bytes as the dump, up to the few pages an idle
#      guest writes meanwhile), and a `fastmig demo` of a guest made with the
#      same size/workload/seed (its destination-side downtime is measured);
#   2. QEMU: a paused source (-S, never started, no kernel) whose RAM is the
#      dump (memory-backend-file), migrated to a `-incoming` QEMU through QMP,
#      once per QEMU configuration (plain; multifd x2; multifd x2 + zstd;
#      multifd x2 + zlib), with max-bandwidth set far above loopback speed,
#      and once per kind of destination RAM: anonymous memory (QEMU's
#      default, transparent huge pages where the host allows them) and a
#      memfd (memory-backend-memfd, what the sim's incoming guest gets).
#
# usage: qemu-peer.sh [--scenarios idle,web] [--size 2G] [--qemu-configs LIST]
#                     [--dst-ram anon,memfd] [--builds NAME=DIR/fastmig,...]
#                     [--send-args "ARGS"] [--no-demo] [--repeat N] [--out DIR]
#   QEMU configs: plain,multifd,multifd-zstd,multifd-zlib (default all; zlib
#   is slow: ~40 s for 2 GiB of mixed content on 2 cores)
#   --builds: `fastmig send` to `fastmig receive` with each build in turn (an
#   A/B of two trees on the same content; each build's guest is made with the
#   same size/workload/seed); --send-args: extra options for fastmig send;
#   --no-demo: skip the `fastmig demo` reference.
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

SCENARIOS=idle,web
SIZE=2G
QCONFIGS=plain,multifd,multifd-zstd,multifd-zlib
REPEAT=1
OUT=
DSTRAM=anon,memfd
BUILDS=
SEND_ARGS=
DEMO=1
while (( $# )); do
    case $1 in
        --scenarios) SCENARIOS=$2; shift ;;
        --size) SIZE=$2; shift ;;
        --qemu-configs) QCONFIGS=$2; shift ;;
        --repeat) REPEAT=$2; shift ;;
        --out) OUT=$2; shift ;;
        --dst-ram) DSTRAM=$2; shift ;;
        --builds) BUILDS=$2; shift ;;
        --send-args) SEND_ARGS=$2; shift ;;
        --no-demo) DEMO=0 ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "qemu-peer.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[[ $(id -u) == 0 ]] || { echo "qemu-peer.sh: needs root (reads /proc/PID/fd of the sim guest)" >&2; exit 1; }
QEMU=${QEMU:-$(command -v qemu-system-x86_64 || true)}
[[ -n $QEMU ]] || { echo "qemu-peer.sh: skipped: qemu-system-x86_64 not installed (apt-get install qemu-system-x86)" >&2; exit 77; }
OUT=${OUT:-${builddir:-$TOP_SRCDIR}/bench-results/qemu-peer-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
JSONL=$OUT/peer.jsonl
WORK=$(mktemp -d /var/tmp/fmbench-qemu.XXXXXX)   # the RAM dumps: on disk, not tmpfs
BENCH_CLEANUPS+=("rm -rf '$WORK'")
# Both fastmig and QEMU run in a private network namespace and talk over its
# loopback: the same path for both, and its lo counters are exactly the bytes
# each put on the wire (nobody else uses that loopback).
PEER_NS=fmbench-peer
ip netns del "$PEER_NS" 2>/dev/null || true
ip netns add "$PEER_NS"
BENCH_CLEANUPS+=("ip netns del $PEER_NS")
ip -n "$PEER_NS" link set lo up
INNS=(ip netns exec "$PEER_NS")
log "results in $OUT; QEMU $("$QEMU" --version | head -1)"
parse_builds "$BUILDS"
for (( b = 0; b < ${#bbins[@]}; b++ )); do log "build ${bnames[b]:-this}: ${bbins[b]}"; done
mib=$(size_mib "$(scaled_size "$SIZE")")   # honours BENCH_SIZE_SCALE
MEM=${mib}M

# qemu_start NAME ARGS...: start one QEMU with a QMP socket; its pid is
# recorded for cleanup.  -S: the vCPUs never run; -nodefaults/-display none:
# no devices beyond the machine's own, so both ends agree on the device set.
# TCG by default (QEMU_ACCEL=kvm to change), because KVM is not needed to hold
# paused RAM and a colleague's VM may be using it.
qemu_start() {
    local name=$1; shift
    "${INNS[@]}" "$QEMU" -name "fmbench-$name" -machine pc -accel "${QEMU_ACCEL:-tcg}" -nodefaults -display none -S \
        -qmp "unix:$WORK/$name.qmp,server=on,wait=off" "$@" >"$WORK/$name.log" 2>&1 &
    QPID=$!
    BENCH_PIDS+=("$QPID")
}
qemu_stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

# dump_ram SIM FILE: copy the guest's RAM memfd, sparse (zero pages stay holes).
dump_ram() {
    local id=$1 file=$2 pid fd
    pid=$("$FASTMIG" sim list | awk -v id="$id" '$1==id{print $2}')
    [[ -n $pid ]] || { echo "no pid for $id" >&2; return 1; }
    fd=$(ls -l "/proc/$pid/fd" | awk '/memfd:fastmig-sim:[0-9]+-ram/{print $(NF-3)}' | head -1)
    [[ -n $fd ]] || { echo "no ram memfd in /proc/$pid/fd" >&2; return 1; }
    cp --sparse=always "/proc/$pid/fd/$fd" "$file"
}

port=7460
IFS=, read -ra scens <<<"$SCENARIOS"
IFS=, read -ra qcfgs <<<"$QCONFIGS"
IFS=, read -ra dstram <<<"$DSTRAM"
for sc in "${scens[@]}"; do
  for (( r = 1; r <= REPEAT; r++ )); do
    if ! why=$(mem_ok "$sc" "$mib" 2); then   # sim pair + two QEMUs
        echo "$sc: skipped: $why" | tee -a "$OUT/skipped.txt" >&2; continue
    fi
    for (( b = 0; b < ${#bbins[@]}; b++ )); do
        # FASTMIG_BIN: the sim guests run the same build as send and receive
        export FASTMIG=${bbins[b]} FASTMIG_BIN=${bbins[b]}
        btag=${bnames[b]:+@${bnames[b]}}
        log "== $sc $MEM: sim guest${btag:+ ($btag)}$( (( b == 0 )) && echo ', dump')"
        id=$("$FASTMIG" sim create --memory "$MEM" --workload "$sc" --seed "${BENCH_SEED:-1}")
        sleep "$(awk -v ms="${BENCH_WARMUP_MS:-500}" 'BEGIN{print ms/1000}')"
        img=$WORK/$sc.ram
        if (( b == 0 )); then
            dump_ram "$id" "$img"
            log "dump: $(du -m "$img" | cut -f1) MiB allocated of $MEM"
        fi

        # fastmig, the very guest that was dumped (the first build) or one
        # made the same way: send/receive on loopback.
        port=$((port + 1))
        "${INNS[@]}" "$FASTMIG" receive --listen "127.0.0.1:$port" >"$WORK/recv.log" 2>&1 &
        rpid=$!; BENCH_PIDS+=("$rpid")
        for _ in $(seq 100); do grep -q listening "$WORK/recv.log" && break; sleep 0.05; done
        # shellcheck disable=SC2086  # SEND_ARGS is a list of words by design
        "${BENCHTOOL[@]}" run --out "$JSONL" --wire-netns "$PEER_NS" \
            --tags "{\"peer\":\"fastmig\",\"scenario\":\"$sc\",\"config\":\"send same guest$btag\",\"size\":\"$MEM\"}" \
            -- "${INNS[@]}" "$FASTMIG" send "$id" "127.0.0.1:$port" --json $SEND_ARGS &
        # waited for in the background: an INT/TERM then cleans up at once
        bpid=$!; BENCH_PIDS+=("$bpid"); wait "$bpid" || true; forget_pid "$bpid"
        wait "$rpid" 2>/dev/null || true; forget_pid "$rpid"
        destroy_all_sims
        (( DEMO )) || continue
        # fastmig demo, same size/workload/seed: the downtime on one clock.
        # shellcheck disable=SC2086
        "${BENCHTOOL[@]}" run --out "$JSONL" --wire-netns "$PEER_NS" \
            --tags "{\"peer\":\"fastmig\",\"scenario\":\"$sc\",\"config\":\"demo same seed$btag\",\"size\":\"$MEM\"}" \
            -- "${INNS[@]}" "$FASTMIG" demo --memory "$MEM" --workload "$sc" --seed "${BENCH_SEED:-1}" --json --no-verify $SEND_ARGS &
        bpid=$!; BENCH_PIDS+=("$bpid"); wait "$bpid" || true; forget_pid "$bpid"
        destroy_all_sims
    done

    for qc in "${qcfgs[@]}"; do
        case $qc in
            plain) qargs=() ;;
            multifd) qargs=(--multifd --channels 2 --compression none) ;;
            multifd-zstd) qargs=(--multifd --channels 2 --compression zstd) ;;
            multifd-zlib) qargs=(--multifd --channels 2 --compression zlib) ;;
            *) echo "unknown QEMU config $qc" >&2; continue ;;
        esac
      for dr in "${dstram[@]}"; do
        case $dr in
            # Anonymous RAM (QEMU's default; THP where the host allows).
            anon) dobj="memory-backend-ram,id=ram,size=$MEM"; qname="qemu $qc" ;;
            # A memfd, like the sim's incoming guest (shmem: no huge pages
            # unless shmem_enabled says so).
            memfd) dobj="memory-backend-memfd,id=ram,size=$MEM"; qname="qemu $qc dst-memfd" ;;
            *) echo "unknown destination RAM $dr (anon, memfd)" >&2; continue ;;
        esac
        port=$((port + 1))
        log "== $sc: QEMU $qc, destination RAM $dr"
        # Destination under the same backend id ("ram") as the source, so
        # that the RAMBlock names match.
        qemu_start dst -m "$MEM" -object "$dobj" -machine memory-backend=ram \
            -incoming "tcp:127.0.0.1:$port"
        dpid=$QPID
        qemu_start src -m "$MEM" -object "memory-backend-file,id=ram,mem-path=$img,size=$MEM,share=on" \
            -machine memory-backend=ram
        spid=$QPID
        if res=$("${BENCHTOOL[@]}" qmp-migrate --src "$WORK/src.qmp" --dst "$WORK/dst.qmp" \
                    --uri "tcp:127.0.0.1:$port" --wire-netns "$PEER_NS" "${qargs[@]}" 2>"$WORK/qmp.err"); then :; else
            res=${res:-"{\"error\": \"$(tail -1 "$WORK/qmp.err" | tr -d '"\\')\"}"}
        fi
        "$PYTHON" -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(scenario=sys.argv[2], config=sys.argv[3], size=sys.argv[4]); print(json.dumps(d))' \
            "$res" "$sc" "$qname" "$MEM" >>"$JSONL"
        tail -1 "$JSONL" | cut -c1-200 >&2
        qemu_stop "$spid"; qemu_stop "$dpid"
      done
    done
    rm -f "$img"
  done
done

"${BENCHTOOL[@]}" peer-table "$JSONL" | tee "$OUT/table.txt"
log "done: $OUT"
