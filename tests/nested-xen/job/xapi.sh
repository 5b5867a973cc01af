#!/bin/bash
# xapi.sh: the nested-Xen job for fastmig's XenServer / XCP-ng drop-in
# (make nested-xapi; make-job.sh installs it as the job's run.sh when
# FASTMIG_NESTED_JOB=xapi).  There is no xapi or xenopsd in the image: the
# job drives fastmig-emu-manager with fake_xenopsd_xen, which does what
# xenopsd's domain.ml does around its emu-manager on real Xen domains
# (tests/xapi/xen_host.cpp: suspend through control/shutdown, a domain
# built as build_pre does, introduced as build_post does, the source
# destroyed once the destination runs) and writes and reads xenopsd's image
# framing around the drop-in's body (the Qemu record after it must come
# back byte-exact).
#
# One PVH guest (console only: no device model, no NIC; memwriter checks
# its memory and prints GAP/STAT lines on the console) is created with xl,
# then migrated live RUNS times in a row, each time from the domain the
# previous migration built, through socketpairs inside fake_xenopsd_xen.
# After each: the destination runs, memwriter reports no CORRUPT line and
# keeps verifying.  Platform keys (PLATFORM, `key=value,...`) are written
# under each new domain's platform/ before the restore, as xenopsd does
# (default: a time offset, vCPU 0 pinned to pCPU 1, a credit weight and cap,
# a generation id).  Their effect is checked where dom0 can see it: the
# pinning in `xl vcpu-list`; the drop-in's own lines for the rest (on
# credit2, Xen 4.17's default, weight and cap are not set, as xenguest;
# a PVH guest has no generation-id address).
#
# Results: /job/results/results.tsv in job/run.sh's columns (step
# xapi-migrate: total_s, guest_gap_ms, stream_mib, stream_s; the rest "-"),
# each migration's transcript in xapi-<size>-<run>.log.
# Parameters (/job/params): SIZES (512), RUNS (5), WRITE_MIB (64),
# WRITE_RATE (8), GUEST_HAP (0), FASTMIG_OPTIONS, STEP_TIMEOUT (600),
# PLATFORM.
set -euo pipefail
PATH=$(ls -d /usr/lib/xen-4.*/bin | tail -n 1):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
R=/job/results
mkdir -p "$R"
# shellcheck source=/dev/null
. /job/params
: "${SIZES:=512}" "${RUNS:=5}" "${WRITE_MIB:=64}" "${WRITE_RATE:=8}" "${GUEST_HAP:=0}"
: "${FASTMIG_OPTIONS:=}" "${STEP_TIMEOUT:=600}"
: "${PLATFORM:=timeoffset=-3600,vcpu/number=1,vcpu/0/affinity=01,vcpu/weight=512,vcpu/cap=50,generation-id=1234:5678}"
EMU=/job/fastmig/fastmig-emu-manager
FAKE=/job/fastmig/fake_xenopsd_xen

T0=$(date +%s.%N)
say() { printf 'JOB [%7.1fs] %s\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$*"; }
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }
collect() {
  mkdir -p "$R/logs"
  cp -r /var/log/xen/. "$R/logs/" 2>/dev/null || true
  xl dmesg >"$R/logs/xl-dmesg.txt" 2>&1 || true
  xl list -v >"$R/logs/xl-list.txt" 2>&1 || true
  xenstore-ls -f >"$R/logs/xenstore.txt" 2>&1 || true
  sync
}
fail() {
  say "FAIL: $*"
  xl list 2>&1 | sed 's/^/XL-LIST: /' || true
  for f in /var/log/xen/console/guest-g1*.log; do
    [[ -f $f ]] && tail -n 15 "$f" | sed "s|^|CONSOLE ${f##*/}: |"
  done
  xl dmesg 2>/dev/null | tail -n 25 | sed 's/^/XEN: /' || true
  collect
  exit 1
}
trap 'fail "line $LINENO: command failed: $BASH_COMMAND"' ERR
[[ -x $EMU && -x $FAKE ]] || fail "the job disk has no $EMU or $FAKE (make nested-xapi puts them there)"
LD_LIBRARY_PATH=/job/fastmig/lib ldd "$EMU" "$FAKE" >"$R/fastmig-ldd.txt" 2>&1 || true
grep -q 'not found' "$R/fastmig-ldd.txt" && fail "missing libraries: $(grep 'not found' "$R/fastmig-ldd.txt" | tr '\n' ' ')"
export LD_LIBRARY_PATH=/job/fastmig/lib

# --- Xen daemons, as job/run.sh starts them --------------------------------
. /job/xen-up.sh
xen_daemons_up
caps=$(awk -F': *' '/^virt_caps/ { print $2 }' "$R/xl-info.txt")
[[ " $caps " == *" hvm "* ]] || fail "PVH needs Xen's HVM support, virt_caps is '$caps'"

# The drop-in's configuration, as a host would have it.
mkdir -p /etc/fastmig
cat >/etc/fastmig/emu-manager.conf <<EOF
backend = xen
options = --no-agent-hints $FASTMIG_OPTIONS
EOF
tr ',' '\n' <<<"$PLATFORM" | sed 's/=/ = /' >/var/lib/fastmig/platform

kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n1)
echo "step	size_mib	mode	run	total_s	save_s	restore_s	ping_gap_ms	ping_sent	ping_recv	guest_gap_ms	file_mib	xl_gap_ms	xl_mem_ms	stream_mib	suspend_ms	stream_s	xl_helpers_ms	load_mib	hint_pages	agent_scan_ms	hint_exchange_ms" >"$R/results.tsv"

newest_stat() { # pages memwriter verified so far (its newest STAT line, by guest boottime)
  cat /var/log/xen/console/guest-g1*.log 2>/dev/null | awk '/^STAT/ && $3 + 0 > b { b = $3 + 0; v = $(NF - 2) } END { print v + 0 }'
}
check_memory() { # $1 = what just ended; the pages verified must grow within $2 s (30)
  local end=$(( $(date +%s) + ${2:-30} )) last
  if grep -h '^CORRUPT' /var/log/xen/console/guest-g1*.log 2>/dev/null | head -n3 | grep -q .; then
    fail "$1: the guest's memory is corrupt: $(grep -h '^CORRUPT' /var/log/xen/console/guest-g1*.log | head -n3 | tr '\n' ' ')"
  fi
  while :; do
    last=$(newest_stat)
    (( last > ${VERIFIED_BEFORE:-0} )) && break
    (( $(date +%s) < end )) || fail "$1: memwriter made no progress for ${2:-30} s (verified $last pages)"
    sleep 1
  done
  VERIFIED_BEFORE=$last
}
# A platform check that fails is reported and the migrations go on (the
# guest's survival is the job's first result); the job fails at the end.
PLATFORM_FAILS=0
pfail() { say "PLATFORM FAIL: $*"; PLATFORM_FAILS=$((PLATFORM_FAILS + 1)); }
check_platform() { # $1 = what just ended, $2 = the new domain, $3 = its transcript
  grep -q "platform: hpet" "$3" || pfail "$1: the drop-in did not log the platform keys it applies"
  local want cpus="" j
  want=$(tr ',' '\n' <<<"$PLATFORM" | sed -n 's|^vcpu/0/affinity=||p')
  PLATFORM_SEEN="not pinned"
  if [[ -n $want ]]; then # '0'/'1' per pCPU -> xl's list of pCPUs ("1", "0-1")
    for ((j = 0; j < ${#want}; j++)); do [[ ${want:j:1} == 1 ]] && cpus+="${cpus:+,}$j"; done
    [[ $cpus == 0,1 ]] && cpus=all
    xl vcpu-list "$2" >"$R/vcpu-list-$2.txt" 2>&1 || pfail "$1: xl vcpu-list $2 failed"
    awk -v d="$2" '$2 == d && $3 == 0 { print $(NF - 2) }' "$R/vcpu-list-$2.txt" | grep -qx "$cpus" \
      || pfail "$1: vCPU 0 of domain $2 is not pinned to pCPU(s) $cpus: $(tail -n +2 "$R/vcpu-list-$2.txt" | tr -s ' ')"
    PLATFORM_SEEN="pinned to $cpus"
  fi
  local weight cap sched
  weight=$(tr ',' '\n' <<<"$PLATFORM" | sed -n 's|^vcpu/weight=||p')
  cap=$(tr ',' '\n' <<<"$PLATFORM" | sed -n 's|^vcpu/cap=||p')
  sched=$(awk -F': *' '/^xen_scheduler/ { print $2 }' "$R/xl-info.txt")
  if [[ -n $weight$cap && $sched == credit ]]; then # XenServer's scheduler (FASTMIG_NESTED_XEN_ARGS=sched=credit)
    xl sched-credit -d "$2" >"$R/sched-$2.txt" 2>&1 || pfail "$1: xl sched-credit -d $2 failed"
    awk -v d="$2" -v w="${weight:-256}" -v c="${cap:-0}" '$2 == d && $3 == w && $4 == c { ok = 1 } END { exit !ok }' \
      "$R/sched-$2.txt" || pfail "$1: domain $2's credit weight/cap are not ${weight:-256}/${cap:-0}: $(tr -s ' \n' ' ' <"$R/sched-$2.txt")"
    PLATFORM_SEEN+=", credit weight ${weight:-256} cap ${cap:-0}"
  elif [[ -n $weight$cap ]]; then # credit2: skipped and said, as xenguest skips it
    grep -q "weight/cap not set, the credit scheduler does not answer" "$3" \
      || pfail "$1: on $sched the drop-in did not say it left weight and cap alone"
    PLATFORM_SEEN+=", weight/cap left alone on $sched (logged)"
  fi
  if tr ',' '\n' <<<"$PLATFORM" | grep -q '^generation-id='; then # PVH: no ACPI, no address to write it at
    grep -q "generation id not written (the guest has no VM_GENERATION_ID_ADDR)" "$3" \
      || pfail "$1: the drop-in did not say what it did with the generation id"
  fi
}
guest_gap() { # largest GAP (ms) memwriter printed between dom0 times $1 and $2
  cat /var/log/xen/console/guest-g1*.log 2>/dev/null \
    | awk -v a="$1" -v b="$2" '/^GAP/ { t = $NF / 1e6; if (t >= a && t <= b + 10 && $2 > g) g = $2 }
                               END { printf "%.1f\n", g / 1000 }'
}

for size in $SIZES; do
  say "=== PVH guest ${size} MiB, memwriter ${WRITE_MIB} MiB at ${WRITE_RATE} MiB/s ==="
  cat >/var/lib/fastmig/g1.cfg <<EOF
name = "g1"
type = "pvh"
kernel = "$kernel"
ramdisk = "/job/guest-initrd.img"
extra = "console=hvc0 quiet fm_mib=$WRITE_MIB fm_rate=$WRITE_RATE fm_agent=0"
memory = $size
maxmem = $size
vcpus = 1
hap = $GUEST_HAP
on_crash = "preserve"
EOF
  timeout "$STEP_TIMEOUT" xl create /var/lib/fastmig/g1.cfg >"$R/create-$size.log" 2>&1 \
    || fail "xl create ($(tail -n3 "$R/create-$size.log"))"
  dom=$(xl domid g1)
  VERIFIED_BEFORE=0
  sleep "${SETTLE_S:-30}" # no NIC to ping: the guest boots (without eth0) and memwriter fills its buffer
  check_memory "boot" 150 # a boot under TCG beside other load took more than 60 s (xapi20-pvh-r5-a)
  say "guest up, domain $dom, memwriter verified $VERIFIED_BEFORE pages"
  for run in $(seq "$RUNS"); do
    log=$R/xapi-$size-$run.log
    ts=$(now)
    timeout "$STEP_TIMEOUT" "$FAKE" --emu "$EMU" migrate --live --domid "$dom" --name "g1-xapi-$run" \
      --memory-mib "$size" --hap "$GUEST_HAP" --platform /var/lib/fastmig/platform >"$log" 2>&1 \
      || fail "migration $run: fake_xenopsd_xen failed ($(grep -E 'PROTOCOL|FAILED|error:' "$log" | head -n3 | tr '\n' ' '))"
    te=$(now)
    grep -q 'restore: Qemu record intact' "$log" || fail "migration $run: the record after the body did not come back intact"
    grep -q 'restore: exit 0' "$log" && grep -q 'save: exit 0' "$log" || fail "migration $run: an emu-manager failed"
    new=$(sed -n 's/^migrate: domain \([0-9]*\) unpaused, source domain [0-9]* destroyed$/\1/p' "$log")
    [[ -n $new ]] || fail "migration $run: no destination domain in the transcript"
    check_memory "migration $run"
    check_platform "migration $run" "$new" "$log"
    gap=$(guest_gap "$ts" "$te")
    # The drop-in's summary: "restored ... N pages, M MiB read in T ms (R rounds)".
    read -r mib ms < <(sed -n 's/.*restored .* pages, \([0-9.]*\) MiB read in \([0-9]*\) ms.*/\1 \2/p' "$log" | head -n1) || true
    stream_s=$(awk -v m="${ms:-}" 'BEGIN { if (m == "") print "-"; else printf "%.2f", m / 1000 }')
    sc=$(sed -n 's/.*saved domain .*, stop-and-copy \([0-9.]*\) ms.*/\1/p' "$log" | head -n1)
    say "migration $run: domain $dom -> $new in $(dt "$ts" "$te") s, ${mib:-?} MiB, stop-and-copy ${sc:-?} ms, guest gap ${gap} ms, memory clean ($VERIFIED_BEFORE pages verified), vCPU 0 $PLATFORM_SEEN"
    printf 'xapi-migrate\t%s\twrite\t%s\t%s\t-\t-\t-\t-\t-\t%s\t-\t-\t-\t%s\t-\t%s\t-\t-\t-\t-\t-\n' \
      "$size" "$run" "$(dt "$ts" "$te")" "$gap" "${mib:--}" "$stream_s" >>"$R/results.tsv"
    sync
    dom=$new
  done
  # The last domain was built by the fake, not xl: destroy it directly.
  xenstore-rm "/local/domain/$dom" 2>/dev/null || true
  xl destroy "$dom" 2>/dev/null || true
done
collect
(( PLATFORM_FAILS == 0 )) || fail "$PLATFORM_FAILS platform check(s) failed (PLATFORM FAIL lines above)"
say "all migrations done"
