#!/bin/bash
# netns-link.sh: an emulated link between two network namespaces, for the
# benchmarks of issue 4.
#
#   netns-link.sh up RATE [DELAY]   create (or reshape) the link
#   netns-link.sh down              remove everything this script created
#   netns-link.sh status            show namespaces, addresses and qdiscs
#   netns-link.sh verify            measure the achieved rate (iperf3, or a
#                                   python socket pump when iperf3 is absent)
#
# RATE is a tc rate (10gbit, 1gbit, 500mbit) or "unlimited" (no qdisc: the
# bare veth, which on this machine is CPU-bound, not link-bound).  DELAY is a
# one-way delay applied on each end (e.g. 1ms), so the RTT is twice it.
#
# Topology (addresses fixed by the project's network rules):
#   netns fmbench-src: veth fmb-src 10.77.0.1/24
#   netns fmbench-dst: veth fmb-dst 10.77.0.2/24
# Traffic never leaves these namespaces; nothing is done in the root
# namespace other than creating the veth pair, which is moved away at once.
set -euo pipefail

SRC_NS=${FMBENCH_SRC_NS:-fmbench-src}
DST_NS=${FMBENCH_DST_NS:-fmbench-dst}
SRC_IF=fmb-src
DST_IF=fmb-dst
SRC_IP=10.77.0.1
DST_IP=10.77.0.2
PYTHON=${PYTHON:-/usr/bin/python3}

die() { echo "netns-link.sh: $*" >&2; exit 1; }

# Convert a tc rate (10gbit, 1gbit, 125mbps, 800kbit, bare number = bit/s)
# into bytes per second, because the burst must be sized from it.
rate_to_bytes() {
    local r=${1,,} num unit
    num=${r%%[a-z]*}; unit=${r#"$num"}
    case $unit in
        ""|bit)  echo $(( num / 8 )) ;;
        kbit)    echo $(( num * 1000 / 8 )) ;;
        mbit)    echo $(( num * 1000000 / 8 )) ;;
        gbit)    echo $(( num * 1000000000 / 8 )) ;;
        bps)     echo $(( num )) ;;
        kbps)    echo $(( num * 1000 )) ;;
        mbps)    echo $(( num * 1000000 )) ;;
        gbps)    echo $(( num * 1000000000 )) ;;
        *) die "cannot parse rate '$1'" ;;
    esac
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

create_topology() {
    ns_exists "$SRC_NS" || ip netns add "$SRC_NS"
    ns_exists "$DST_NS" || ip netns add "$DST_NS"
    # The pair may exist already (idempotent `up`): only create it when the
    # source end is missing; a half-created pair from an interrupted run is
    # removed first.
    if ! ip -n "$SRC_NS" link show "$SRC_IF" >/dev/null 2>&1; then
        ip -n "$DST_NS" link del "$DST_IF" 2>/dev/null || true
        ip link del "$SRC_IF" 2>/dev/null || true
        ip link add "$SRC_IF" type veth peer name "$DST_IF"
        ip link set "$SRC_IF" netns "$SRC_NS"
        ip link set "$DST_IF" netns "$DST_NS"
    fi
    ip -n "$SRC_NS" addr replace "$SRC_IP/24" dev "$SRC_IF"
    ip -n "$DST_NS" addr replace "$DST_IP/24" dev "$DST_IF"
    for ns in "$SRC_NS" "$DST_NS"; do ip -n "$ns" link set lo up; done
    ip -n "$SRC_NS" link set "$SRC_IF" up
    ip -n "$DST_NS" link set "$DST_IF" up
}

# Shape one end.  Why these numbers:
# - tbf releases `burst` bytes per token refill; with timer-driven refills
#   (HZ can be as low as 100 on some kernels, and hrtimer slack adds more),
#   a burst smaller than rate x ~5 ms caps the achieved rate below RATE.
#   5 ms at 10 Gbit/s is 6.25 MB; at 1 Gbit/s 625 kB.
# - veth carries GSO super-packets of up to 64 KiB; burst must exceed that
#   or every packet would be segmented (or dropped on old kernels).
# - `latency` sizes the queue: 20 ms of RATE is enough for TCP to fill the
#   pipe (the bandwidth-delay product here is tiny) without bufferbloat that
#   would inflate the downtime's final round trips by more than a few ms.
# With a delay, netem sits at the root (it delays) and tbf is its child (it
#   shapes); netem's limit is raised so that it can hold a full BDP.
shape_end() {
    local ns=$1 dev=$2 rate=$3 delay=$4 bps burst
    tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
    [[ $rate == unlimited ]] && [[ -z $delay ]] && return 0
    if [[ $rate == unlimited ]]; then
        tc -n "$ns" qdisc add dev "$dev" root handle 1: netem delay "$delay" limit 100000
        return 0
    fi
    bps=$(rate_to_bytes "$rate")
    burst=$(( bps / 200 ))
    (( burst < 131072 )) && burst=131072
    if [[ -n $delay ]]; then
        tc -n "$ns" qdisc add dev "$dev" root handle 1: netem delay "$delay" limit 100000
        tc -n "$ns" qdisc add dev "$dev" parent 1:1 handle 10: tbf rate "$rate" burst "$burst" latency 20ms
    else
        tc -n "$ns" qdisc add dev "$dev" root handle 1: tbf rate "$rate" burst "$burst" latency 20ms
    fi
}

cmd_up() {
    local rate=${1:?usage: netns-link.sh up RATE [DELAY]} delay=${2:-}
    [[ $rate == unlimited ]] || rate_to_bytes "$rate" >/dev/null
    create_topology
    shape_end "$SRC_NS" "$SRC_IF" "$rate" "$delay"
    shape_end "$DST_NS" "$DST_IF" "$rate" "$delay"
    # A first packet resolves ARP now, so that it is not charged to the
    # first benchmark run (ping is not installed by default: a TCP connect to
    # a closed port answers with RST, which proves reachability).
    ip netns exec "$SRC_NS" "$PYTHON" -c '
import socket,sys
try: socket.create_connection(("'"$DST_IP"'", 9), timeout=2)
except ConnectionRefusedError: sys.exit(0)
except OSError as e: sys.exit("no connectivity: %s" % e)' || die "no connectivity $SRC_IP -> $DST_IP"
    echo "link up: $SRC_NS($SRC_IP) <-> $DST_NS($DST_IP) rate=$rate${delay:+ delay=$delay}"
}

cmd_down() {
    # Deleting a namespace deletes the veth end inside it, and with it the
    # peer; the explicit `link del` covers a pair left in the root namespace
    # by an interrupted `up`.
    ip link del "$SRC_IF" 2>/dev/null || true
    ns_exists "$SRC_NS" && ip netns del "$SRC_NS"
    ns_exists "$DST_NS" && ip netns del "$DST_NS"
    echo "link down"
}

cmd_status() {
    for ns in "$SRC_NS" "$DST_NS"; do
        if ns_exists "$ns"; then
            echo "== $ns"; ip -n "$ns" -br addr; tc -n "$ns" qdisc show
        else
            echo "== $ns: absent"
        fi
    done
}

# Measure the achieved rate from src to dst for SECONDS (default 3); prints
# "achieved_gbit=X".  iperf3 when installed, else a python socket pump.
cmd_verify() {
    local secs=${1:-3} out
    ns_exists "$SRC_NS" || die "link is down"
    if command -v iperf3 >/dev/null; then
        ip netns exec "$DST_NS" iperf3 -s -1 -B "$DST_IP" -p 5299 >/dev/null 2>&1 &
        local spid=$!
        sleep 0.5
        out=$(ip netns exec "$SRC_NS" iperf3 -c "$DST_IP" -p 5299 -t "$secs" -J 2>/dev/null) || { kill "$spid" 2>/dev/null; die "iperf3 failed"; }
        wait "$spid" 2>/dev/null || true
        "$PYTHON" -c 'import json,sys; d=json.load(sys.stdin); print("achieved_gbit=%.3f (iperf3, receiver side)" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' <<<"$out"
    else
        ip netns exec "$DST_NS" "$PYTHON" -c '
import socket
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(("'"$DST_IP"'",5299)); s.listen(1); c,_=s.accept()
while c.recv(1<<20): pass' &
        local spid=$!
        sleep 0.5
        ip netns exec "$SRC_NS" "$PYTHON" -c '
import socket,time
s=socket.create_connection(("'"$DST_IP"'",5299)); b=bytes(1<<20); n=0; t0=time.time()
while time.time()-t0 < '"$secs"': n+=s.send(b)
s.close(); print("achieved_gbit=%.3f (python pump, sender side)" % (n*8/(time.time()-t0)/1e9))'
        wait "$spid" || true
    fi
}

[[ $(id -u) == 0 ]] || die "must run as root (ip netns, tc)"
case ${1:-} in
    up)     shift; cmd_up "$@" ;;
    down)   cmd_down ;;
    status) cmd_status ;;
    verify) shift; cmd_verify "$@" ;;
    *) echo "usage: $0 up RATE [DELAY] | down | status | verify [SECONDS]" >&2; exit 2 ;;
esac
