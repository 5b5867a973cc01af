#!/bin/bash
# Every workload migrated end to end through `fastmig demo` (separate receiver
# process, sim domains in their own processes, loopback TCP), with every page
# checked against the source at the instant it was paused.
. "$(dirname "$0")/lib.sh"

check_demo() {  # check_demo MEMORY WORKLOAD [extra demo options]
  local mem=$1 wl=$2; shift 2
  local out="$WORK/demo-$wl-$mem.json"
  fm demo --memory "$mem" --workload "$wl" --json "$@" >"$out" || { cat "$out"; return 1; }
  local verified total rounds pages zero sent bytes free
  verified=$(json_get "$out" verified)
  [ "$verified" = "true" ] || { echo "verified=$verified"; tail -1 "$out"; return 1; }
  pages=$(json_get "$out" pages_total); zero=$(json_get "$out" pages_zero); sent=$(json_get "$out" pages_sent)
  bytes=$(json_get "$out" bytes_sent); rounds=$(json_get "$out" rounds)
  total=$(json_get "$out" total_ms)
  # Every page went at least once; a zero page costs a descriptor, not a page.
  free=$(json_get "$out" pages_free)
  [ $((zero + sent + free)) -ge "$pages" ] || { echo "zero+free+sent < pages"; return 1; }
  [ "$rounds" -ge 2 ] || { echo "rounds=$rounds"; return 1; }
  python3 - "$out" <<'PY' || return 1
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
assert r["memory_bytes"] > 0 and r["workload"]
assert r["downtime_ms"] is not None and 0 <= r["downtime_ms"] < 10000, r["downtime_ms"]
assert r["total_ms"] > 0
# bytes on the wire: at least the pages sent raw, at most every data page
# raw plus descriptors and 1% framing (compression and deltas only shrink)
raw = r["pages_sent"] - r["pages_deflate"] - r["pages_xbzrle"]
assert r["bytes_sent"] >= raw * 4096, (r["bytes_sent"], raw)
assert r["bytes_sent"] <= (r["pages_sent"] * 4096 + r["pages_total"] * 8) * 1.01 + 65536
assert r["threads"] >= 1 and r["channels"] >= 1
# the guest's free-page hints: every workload but random leaves memory unused
assert r["pages_free"] > 0 or r["workload"] == "random", r["pages_free"]
assert len(r["round_stats"]) == r["rounds"] and r["round_stats"][-1]["stop_copy"]
PY
  echo "$wl $mem: total $total ms, $rounds rounds, $bytes bytes"
}

# Over loopback the destination shares this host's cores: the compression
# gate sends raw and says why; with --max-bandwidth the token bucket is a
# link again and the gate judges it (issue 16).
check_same_host() {  # check_same_host yes|no [extra demo options]
  local want=$1; shift
  local out="$WORK/demo-same-host-$want.json"
  fm demo --memory 256M --workload web --json "$@" >"$out" || { cat "$out"; return 1; }
  python3 - "$out" "$want" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
whys = [rs["compression"]["why"] for rs in r["round_stats"]]
same = ["on this host" in w for w in whys]
if sys.argv[2] == "yes":
    assert all(same), whys
    assert r["pages_deflate"] == 0, r["pages_deflate"]
else:
    assert not any(same), whys
PY
}

for wl in idle after-load dpdk web random; do
  ok "demo $wl 256M verified" -- check_demo 256M "$wl"
done
ok "demo dpdk 512M with a 1 ms target verified" -- check_demo 512M dpdk --downtime-ms 1
ok "demo web 256M with 3 rounds max verified" -- check_demo 256M web --max-rounds 3 --rate-scale 20
ok "demo random 1G verified" -- check_demo 1G random
ok "demo over loopback: raw, the destination is on this host" -- check_same_host yes
ok "demo over loopback with --max-bandwidth: the gate judges the cap" -- check_same_host no --max-bandwidth 200M
for seed in 2 3 4; do
  ok "demo idle 256M seed $seed verified" -- check_demo 256M idle --seed "$seed" --rate-scale 100
done
# Nothing left behind: no sim domain, no receiver.
ok "no sim domain left" -- bash -c '[ -z "$(ls "$FASTMIG_SIM_DIR"/*.sock 2>/dev/null)" ]'
done_testing
