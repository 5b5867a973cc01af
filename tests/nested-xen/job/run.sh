#!/bin/bash
# run.sh: the test that dom0 of the nested Xen host runs at boot
# (fastmig-dom0-init mounts the job disk on /job and runs this).
#
# It starts the Xen daemons, then for each guest size and workload boots a
# small guest (GUEST_TYPE: pv, pvh or hvm, see guest_cfg) and runs
# `xl save` + `xl restore` and `xl migrate` to localhost, RUNS times each,
# measuring:
#   total    wall time of the xl command(s), from dom0's clock
#   downtime two ways:
#     ping   dom0 pings the guest every PING_MS ms over a bridge inside
#            this nested host; the longest gap between two replies
#     guest  memwriter in the guest reads CLOCK_BOOTTIME every ~1 ms and
#            prints any gap > 20 ms on its console ("GAP <us>")
#     xl     xl runs with -vvv and every line it prints is timestamped in
#            dom0; downtime = from libxl's "guest has suspended" (sender)
#            to "Domain started successsfully" (receiver, after unpause)
# Each step runs once per helper in HELPERS, alternating within a run so
# that stock and fastmig see the same machine state:
#   stock    Xen's own libxl-save-helper (xc_domain_save/restore)
#   fastmig  /job/fastmig/helper.sh (make-job.sh puts it there), selected
#            with LIBXL_SAVE_HELPER in the environment of xl, which
#            reaches `xl migrate-receive` too (xl -s "" runs it as a child);
#            FASTMIG_OPTIONS become its FASTMIG_HELPER_OPTIONS
#   fastmig-raw    the same with --compress none added
#   fastmig-libxl  the same with FASTMIG_HELPER_SUSPEND=libxl (suspension
#                  through libxl's callback and @releaseDomain, as stock)
#   fastmig-nohints  fastmig with --no-agent-hints: the guest's agent (if
#                  any) is not asked for free pages
# A mixed pool (issue 18's rolling upgrade): each end gets its own helper.
# The source's xl has HENV; the receiving side (`xl restore`, or the
# migrate-receive that `xl migrate -s ""` runs through sh -c, inheriting
# xl's environment) gets RENV on top of it:
#   stock-to-fastmig  the source runs Xen's helper (a libxc stream or
#                  image); the receiver runs fastmig's, which must see the
#                  libxc stream and exec Xen's helper for it (checked in
#                  the receiver's log)
#   fastmig-to-stock  the source runs fastmig's helper with
#                  FASTMIG_PEER=stock (README "Rolling upgrade": `-s ""`
#                  hides the destination from the peers table), which must
#                  exec Xen's helper (checked); the receiver runs Xen's
# With DO_SAVE=1, stock-to-fastmig's save+restore is `xl restore` through
# fastmig's helper of an image Xen's helper saved.
# MODES: idle, write (memwriter alone), afterload: before every save and
# migration the guest runs memload over all but fm_keep MiB of its free
# memory (a job that used most of it and exited: its pages are free and
# still hold data), then dom0 saves or migrates it; memwriter keeps
# AFTER_MIB (32) MiB checked, rewritten at AFTER_RATE (1) MiB/s.  The guest
# runs fastmig-guest-agent (guest/init), which fastmig asks for free pages.
# With a patched libxl on the job disk (/job/libxl, make-job.sh), every
# step runs with it, and LIBXL_EARLY_NICS says whether its patch acts
# (xen-patches/0001-*): 0 for stock and fastmig-late (libxl's own order:
# NICs after the stream), 1 for fastmig and stock-early (NICs attached
# while the stream is read).  So "stock" is always stock behaviour.
#   stock-early    Xen's helper with the patch acting
#   fastmig-late   fastmig's helper with the patch not acting
# Memory: memwriter checks every page of its buffer (generation + stream,
# see guest/memwriter.c); any "CORRUPT" line on the guest's console, or a
# guest whose checker stops making progress, fails the job.
# Results: /job/results/results.tsv (one line a run), logs beside it.
#
# Parameters come from /job/params (written by make-job.sh).
set -euo pipefail
# The image's one Xen (bookworm: 4.17, trixie: 4.20) keeps xl and its tools here.
PATH=$(ls -d /usr/lib/xen-4.*/bin | tail -n 1):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
R=/job/results
mkdir -p "$R"
# shellcheck source=/dev/null
. /job/params
: "${SIZES:=512 1024}" "${MODES:=idle write}" "${RUNS:=3}" "${WRITE_MIB:=128}"
: "${WRITE_RATE:=8}" "${PING_MS:=1}" "${STEP_TIMEOUT:=600}" "${DO_SAVE:=1}" "${DO_MIGRATE:=1}"
if [[ -x /job/fastmig/helper.sh ]]; then : "${HELPERS:=stock fastmig}"; else : "${HELPERS:=stock}"; fi
: "${FASTMIG_OPTIONS:=}" "${XS_LOAD:=0}" "${PERF:=0}" "${FAULTS:=0}" "${CUT_MIB:=16}"
# GUEST_TYPE: pv, pvh (the same kernel and initramfs, no device model) or
# hvm (Debian's qemu-system-xen as device model, SeaBIOS, direct kernel
# boot of the same kernel and initramfs). GUEST_HAP (pvh, hvm only): 0 =
# shadow paging (`hap = 0` in the guest's config), the default because
# TCG's emulated NPT loses guests to "Triple fault" during `xl migrate`
# (README.md); 1 = HAP, that experiment.
: "${GUEST_TYPE:=pv}" "${GUEST_HAP:=0}" "${AFTER_MIB:=32}" "${AFTER_RATE:=1}" "${KEEP_MIB:=64}"
case $GUEST_TYPE in pv|pvh|hvm) ;; *) echo "GUEST_TYPE must be pv, pvh or hvm, not '$GUEST_TYPE'" >&2; exit 2 ;; esac
case $GUEST_HAP in 0|1) ;; *) echo "GUEST_HAP must be 0 or 1, not '$GUEST_HAP'" >&2; exit 2 ;; esac

T0=$(date +%s.%N)
say() { printf 'JOB [%7.1fs] %s\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$*"; }
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }
fail() { say "FAIL: $*"; evidence; collect; exit 1; }
evidence() { # the first things to read after a failure, in run.log itself
  xl list 2>&1 | sed 's/^/XL-LIST: /' || true
  local f
  for f in /var/log/xen/console/guest-g1*.log; do
    if [[ -f $f ]]; then tail -n 15 "$f" | sed "s|^|CONSOLE ${f##*/}: |"; fi
  done
  for f in /var/log/xen/qemu-dm-g1*.log; do
    if [[ -f $f ]]; then tail -n 10 "$f" | sed "s|^|DM ${f##*/}: |"; fi
  done
  xl dmesg 2>/dev/null | tail -n 25 | sed 's/^/XEN: /' || true
}
collect() { # copy what helps a post-mortem to the results disk
  mkdir -p "$R/logs"
  cp -r /var/log/xen/. "$R/logs/" 2>/dev/null || true
  xl dmesg >"$R/logs/xl-dmesg.txt" 2>&1 || true
  xl list -v >"$R/logs/xl-list.txt" 2>&1 || true
  dmesg >"$R/logs/dom0-dmesg.txt" 2>&1 || true
  free -m >"$R/logs/dom0-free.txt" 2>&1 || true
  xl info >"$R/logs/xl-info.txt" 2>&1 || true
  sync
}
trap 'fail "line $LINENO: command failed: $BASH_COMMAND"' ERR

# --- 0. The patched libxl, if the job brings one (before any xl runs) ---
LIBXL_PATCHED=0
if [[ -f /job/libxl/libxenlight.so.4.17.0 ]]; then
  lx=/usr/lib/x86_64-linux-gnu/libxenlight.so.4.17.0
  [[ -f $lx ]] || fail "the image has no $lx to replace"
  mount --bind /job/libxl/libxenlight.so.4.17.0 "$lx" || fail "cannot bind the patched libxl over $lx"
  grep -q LIBXL_EARLY_NICS "$lx" || fail "$lx is not the patched libxl after the bind"
  LIBXL_PATCHED=1
  say "patched libxl bound over $lx"
fi

# --- 1. Xen daemons (what Debian's /etc/init.d/xen does, minus LSB) ------
ts=$(now)
. /job/xen-up.sh
xen_daemons_up
# A bridge private to this nested host; nothing leaves QEMU (-nic none).
ip link add xenbr0 type bridge
ip addr add 169.254.100.1/24 dev xenbr0
ip link set xenbr0 up
say "xen daemons up in $(dt "$ts" "$(now)")s; free for guests: $(xl info | awk '/^free_memory/{print $3}') MiB"
# What the nested CPU gave Xen (boot.sh's model): virt_caps must offer what
# the guest type needs, or the job stops here with the reason.
caps=$(awk -F': *' '/^virt_caps/ { print $2 }' "$R/xl-info.txt")
say "virt_caps: $caps; xen_caps: $(awk -F': *' '/^xen_caps/ { print $2 }' "$R/xl-info.txt")"
xl dmesg >"$R/xl-dmesg-boot.txt" 2>&1 || true
grep -E 'SVM|VMX|HVM:|HAP' "$R/xl-dmesg-boot.txt" | sed 's/^/XEN: /' | head -n 12 || true
if [[ $GUEST_TYPE != pv ]]; then
  [[ " $caps " == *" hvm "* ]] \
    || fail "GUEST_TYPE=$GUEST_TYPE needs Xen's HVM support, virt_caps is '$caps' (boot.sh's CPU model must have +svm)"
  need=shadow; [[ $GUEST_HAP == 1 ]] && need=hap
  [[ " $caps " == *" $need "* ]] || fail "GUEST_HAP=$GUEST_HAP needs '$need' in virt_caps '$caps'"
fi
if [[ $GUEST_TYPE == hvm ]]; then
  # The device model's emulated NIC is a tap device (vifN.0-emu).
  modprobe tun || fail "modprobe tun (the HVM device model's NIC needs /dev/net/tun)"
  [[ -x /usr/libexec/xen-qemu-system-i386 ]] \
    || fail "the image has no /usr/libexec/xen-qemu-system-i386 (qemu-system-xen; build-image.sh)"
fi
echo "step	size_mib	mode	run	total_s	save_s	restore_s	ping_gap_ms	ping_sent	ping_recv	guest_gap_ms	file_mib	xl_gap_ms	xl_mem_ms	stream_mib	suspend_ms	stream_s	xl_helpers_ms	load_mib	hint_pages	agent_scan_ms	hint_exchange_ms" >"$R/results.tsv"
for h in $HELPERS; do
  case $h in
    stock) ;;
    stock-early|fastmig-late) [[ $LIBXL_PATCHED == 1 ]] || fail "HELPERS has $h but the job disk has no patched libxl (FASTMIG_LIBXL_SO)" ;;&
    stock-early) ;;
    fastmig|fastmig-raw|fastmig-libxl|fastmig-late|fastmig-nohints|stock-to-fastmig|fastmig-to-stock) [[ -x /job/fastmig/helper.sh ]] || fail "HELPERS has fastmig but the job disk has no /job/fastmig (FASTMIG_HELPER_BIN)"
             LD_LIBRARY_PATH=/job/fastmig/lib ldd /job/fastmig/libxl-save-helper >"$R/fastmig-ldd.txt" 2>&1 || true
             grep -q 'not found' "$R/fastmig-ldd.txt" && fail "fastmig helper: missing libraries: $(grep 'not found' "$R/fastmig-ldd.txt" | tr '\n' ' ')" ;;
    *) fail "unknown helper '$h' in HELPERS (stock, stock-early, fastmig, fastmig-raw, fastmig-libxl, fastmig-late, fastmig-nohints, stock-to-fastmig, fastmig-to-stock)" ;;
  esac
done
say "helpers: $HELPERS${FASTMIG_OPTIONS:+ (FASTMIG_HELPER_OPTIONS=$FASTMIG_OPTIONS)}$( ((LIBXL_PATCHED)) && echo ', patched libxl')"

kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n1)
GIP=169.254.100.2

guest_cfg() { # $1 size MiB, $2 mode -> writes /var/lib/fastmig/g1.cfg
  # PV, PVH and HVM boot the same kernel and initramfs (Debian's kernel
  # has CONFIG_XEN_PVH; HVM boots it through the device model's direct
  # kernel boot), and all use the PV console (hvc0, memwriter's lines in
  # xenconsoled's log) and netfront (the initramfs has no driver for the
  # emulated NIC, so HVM's eth0 is the PV NIC once the platform device
  # unplugs the emulated one).
  local mib=1 rate=0
  if [[ $2 == write ]]; then mib=$WRITE_MIB; rate=$WRITE_RATE; fi
  if [[ $2 == afterload ]]; then mib=$AFTER_MIB; rate=$AFTER_RATE; fi
  cat >/var/lib/fastmig/g1.cfg <<EOF
name = "g1"
type = "$GUEST_TYPE"
kernel = "$kernel"
ramdisk = "/job/guest-initrd.img"
extra = "console=hvc0 quiet fm_ip=$GIP fm_mib=$mib fm_rate=$rate fm_keep=$KEEP_MIB"
memory = $1
maxmem = $1
vcpus = 1
vif = [ "bridge=xenbr0,mac=00:16:3e:5a:00:02" ]
on_crash = "preserve"
EOF
  [[ $GUEST_TYPE == pv ]] || echo "hap = $GUEST_HAP" >>/var/lib/fastmig/g1.cfg
  [[ $GUEST_TYPE == hvm ]] && cat >>/var/lib/fastmig/g1.cfg <<EOF
device_model_version = "qemu-xen"
xen_platform_pci = 1
serial = "pty"
vnc = 0
sdl = 0
vga = "none"
EOF
  return 0
}

wait_ping() { # wait until the guest answers; $1 = limit in s
  local end=$(( $(date +%s) + $1 ))
  while (( $(date +%s) < end )); do
    ping -c1 -W1 "$GIP" >/dev/null 2>&1 && return 0
  done
  return 1
}

# ping every PING_MS ms in the background, timestamps on (-D); the gap
# analysis reads reply lines only.
ping_start() { ping -D -n -i "$(awk -v m="$PING_MS" 'BEGIN{print m/1000}')" -W 1 "$GIP" >"$1" 2>&1 & PING_PID=$!; sleep 1; }
ping_stop() { # -> "maxgap_ms sent recv"
  sleep 2; kill -INT "$PING_PID" 2>/dev/null || true; wait "$PING_PID" 2>/dev/null || true
  awk -F'[][]' '/bytes from/ { t=$2+0; if (p && t-p > g) g=t-p; p=t; n++ }
                /packets transmitted/ { split($0,a," "); s=a[1] }
                END { printf "%.1f %s %d\n", g*1000, s, n }' "$1"
}
# Prefix every line with dom0's time in seconds (gawk's time extension:
# no process per line, so xl is not slowed by its log).
# (gawk 5.2 warns that "time" is obsolete; it works, so keep the log clean.)
stamp() { gawk '@load "time"; { printf "%.6f %s\n", gettimeofday(), $0; fflush() }' 2>/dev/null; }
xl_gap() { # from the timestamped xl log $1: "downtime_ms memory_part_ms helpers_ms"
  # memory part: suspended -> receiver's "Restore successful" (the last
  # pages and vCPU state are in); the rest is devices and hotplug scripts
  # on the receiver before it unpauses.
  # helpers: suspended -> the receiver's libxl reads libxl's END record,
  # which the sender's libxl writes only once its helper has exited: the
  # part of the downtime that both helpers (and their exits) account for.
  # (fastmig's own suspension, FASTMIG_HELPER_SUSPEND=channel, has no
  # libxl line: its "suspended in ... from the request" marks the moment)
  awk '(/guest has suspended/ || /suspended in [0-9.]+ ms from the request/) && !s { s = $1 }
       (/Restore successful/ || /fastmig: restored/) && s && !r { r = $1 }
       /process_record: Record: 0, length 0/ && s && !h { h = $1 }
       /migration target: Domain started/ && s { e = $1 }
       END { if (s && e) printf "%.1f %.1f %.1f\n", (e - s) * 1000, r ? (r - s) * 1000 : -1, h ? (h - s) * 1000 : -1
             else print "NA NA NA" }' "$1"
}
stream_s() { # from the timestamped xl log $1: the helper's start at the
  # source to the end of the restore at the destination (libxc's "Restore
  # successful", fastmig's "restored"): the memory stream end to end,
  # without libxl's device set-up and tear-down around it.
  awk '/starting save/ && !a { a = $1 } (/Restore successful/ || /fastmig: restored /) && a && !b { b = $1 }
       END { if (a && b) printf "%.2f\n", b - a; else print "NA" }' "$1"
}
suspend_ms() { # from the timestamped xl log $1: request -> "suspended" seen, ms
  # libxl's own wait (stock helper, or FASTMIG_HELPER_SUSPEND=libxl):
  # "issuing PV suspend request" (PVH and HVM guests: "issuing PVH/HVM
  # suspend request") -> "guest has suspended" (@releaseDomain);
  # fastmig's channel: the helper's own measurement of the same interval.
  awk '/suspended in [0-9.]+ ms from the request/ && $0 ~ /channel\)/ { for (i = 1; i < NF; i++) if ($i == "in") { v = $(i + 1); break } }
       /issuing (PV|PVH\/HVM) suspend request/ && !a { a = $1 }
       /guest has suspended/ && a && !b { b = $1 }
       END { if (v != "") print v; else if (a && b) printf "%.2f\n", (b - a) * 1000; else print "NA" }' "$1"
}
# XS_LOAD > 0: that many background loops writing and reading xenstore
# during each operation, to see what a busy xenstored does to a suspend
# noticed through @releaseDomain.
xs_load_start() {
  XS_PIDS=()
  for i in $(seq "$XS_LOAD"); do
    ( while :; do xenstore-write "/local/domain/0/fmload/$i" "$RANDOM$RANDOM" && xenstore-read "/local/domain/0/fmload/$i" >/dev/null; done ) &
    XS_PIDS+=($!)
  done
}
xs_load_stop() { # (wait returns the loops' 143: not an error here)
  if [[ ${#XS_PIDS[@]} -gt 0 ]]; then kill "${XS_PIDS[@]}" 2>/dev/null || true; wait "${XS_PIDS[@]}" 2>/dev/null || true; fi
  XS_PIDS=()
}

# PERF=1: a system-wide CPU profile of dom0 (cpu-clock: no hardware
# counters under TCG) during each migration, reported in dom0 itself
# (its binaries and symbols) to perf-<id>.txt.
perf_start() {
  PERF_PID=
  [[ $PERF == 1 ]] || return 0
  command -v perf >/dev/null || { say "PERF=1 but the image has no perf"; return 0; }
  perf record -a -e cpu-clock -F 499 -o "/tmp/perf-$1.data" >/dev/null 2>&1 &
  PERF_PID=$!
}
perf_stop() {
  [[ -n $PERF_PID ]] || return 0
  kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null || true
  perf report -i "/tmp/perf-$1.data" --stdio --no-children --sort comm,dso,sym 2>/dev/null \
    | grep -v '^$' | head -n 400 >"$R/perf-$1.txt" || true
  perf report -i "/tmp/perf-$1.data" --stdio --no-children --sort comm 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -n 40 >"$R/perf-comm-$1.txt" || true
  rm -f "/tmp/perf-$1.data"
}

guest_gap() { # largest GAP memwriter printed for an operation between
  # dom0 times $1 and $2 (s), in ms. Matched by the guest's realtime stamp,
  # not by file position: after a migration the guest's console goes to
  # guest-g1--incoming.log (the name the receiver gives the new domain).
  cat /var/log/xen/console/guest-g1*.log 2>/dev/null \
    | awk -v a="$1" -v b="$2" '/^GAP/ { t = $NF / 1e6; if (t >= a && t <= b + 10 && $2 > g) g = $2 }
                               END { printf "%.1f\n", g / 1000 }'
}

# The environment prefix (an env command line) that selects helper $1,
# into the array HENV (the source, or xl save), and RENV, what the
# receiving side (xl restore, xl migrate-receive) adds to it: empty but
# for the mixed pool's helpers.  RECV_CMD is RENV quoted for sh -c.
helper_env() {
  RENV=()
  if [[ $1 == stock-to-fastmig ]]; then
    HENV=(env -u LIBXL_SAVE_HELPER)
    RENV=(env LIBXL_SAVE_HELPER=/job/fastmig/helper.sh "FASTMIG_HELPER_OPTIONS=$FASTMIG_OPTIONS")
  elif [[ $1 == fastmig-to-stock ]]; then
    HENV=(env LIBXL_SAVE_HELPER=/job/fastmig/helper.sh "FASTMIG_HELPER_OPTIONS=$FASTMIG_OPTIONS" FASTMIG_PEER=stock)
    RENV=(env -u LIBXL_SAVE_HELPER -u FASTMIG_PEER)
  elif [[ $1 == fastmig || $1 == fastmig-late ]]; then
    HENV=(env LIBXL_SAVE_HELPER=/job/fastmig/helper.sh "FASTMIG_HELPER_OPTIONS=$FASTMIG_OPTIONS")
  elif [[ $1 == fastmig-nohints ]]; then
    HENV=(env LIBXL_SAVE_HELPER=/job/fastmig/helper.sh "FASTMIG_HELPER_OPTIONS=$FASTMIG_OPTIONS --no-agent-hints")
  elif [[ $1 == fastmig-raw ]]; then
    HENV=(env LIBXL_SAVE_HELPER=/job/fastmig/helper.sh "FASTMIG_HELPER_OPTIONS=$FASTMIG_OPTIONS --compress none")
  elif [[ $1 == fastmig-libxl ]]; then
    HENV=(env LIBXL_SAVE_HELPER=/job/fastmig/helper.sh "FASTMIG_HELPER_OPTIONS=$FASTMIG_OPTIONS"
          FASTMIG_HELPER_SUSPEND=libxl)
  else
    HENV=(env -u LIBXL_SAVE_HELPER)
  fi
  # The patched libxl's switch (ignored by Debian's own libxl).
  case $1 in
    stock|fastmig-late|stock-to-fastmig|fastmig-to-stock) HENV+=(LIBXL_EARLY_NICS=0) ;;
    *) HENV+=(LIBXL_EARLY_NICS=1) ;;
  esac
  RECV_CMD=
  if [[ ${#RENV[@]} -gt 0 ]]; then RECV_CMD="$(printf '%q ' "${RENV[@]}")"; fi
  return 0
}
# For the mixed pool's helpers: the log $2 of operation $3 must show that
# the hand-over to Xen's helper happened where it should ($1 the helper;
# a mixed helper that silently moved a fastmig stream would prove nothing).
# $4: which end's log it is: save (the source) or restore (the receiver);
# a migration's log holds both.
mixed_path_taken() {
  local want=
  case $1:$4 in
    stock-to-fastmig:restore) want='holds a libxc \(stock Xen\) stream.*running the stock helper' ;;
    fastmig-to-stock:save) want='the destination takes stock Xen streams \(FASTMIG_PEER=stock\): running the stock helper' ;;
    *) return 0 ;;
  esac
  grep -q -E "$want" "$2" || fail "$3: the $4 side's log has no '$want' (the mixed-pool path was not taken)"
  say "$3: $(grep -E "$want" "$2" | head -n 1 | grep -o 'fastmig: .*')"
}
# xl list's state column (r b p s c d): running, blocked or waiting for a
# CPU ("------"), but not paused, shut down, crashed or dying.
runnable() { [[ -n $1 && $1 != *p* && $1 != *s* && $1 != *c* && $1 != *d* ]]; }
# The after-load workload (MODES=afterload): memload in the guest over TCP
# (guest/loadsvc behind busybox nc); sets LOAD_MIB.  Elsewhere LOAD_MIB is
# empty.
guest_load() { # $1 = what for (errors)
  LOAD_MIB=
  [[ $mode == afterload ]] || return 0
  local reply=
  exec 3<>"/dev/tcp/$GIP/7000" || fail "$1: cannot reach the guest's loadsvc (port 7000)"
  reply=$(timeout 600 head -n1 <&3) || true
  exec 3<&- 3>&-
  [[ $reply == LOADED* ]] || fail "$1: the guest's memload answered '$reply'"
  LOAD_MIB=$(awk '{ print $2 }' <<<"$reply")
  say "$1: guest $reply"
  # Let the freed pages reach the buddy lists (per-CPU lists drain).
  sleep 2
}
# Whether the guest's agent announced itself (not a failure when not: the
# runs then show "no fastmig agent"); its console lines, for the record.
agent_ready() {
  local id end=$(( $(date +%s) + 60 )) p=
  id=$(xl domid g1)
  while (( $(date +%s) < end )); do
    p=$(xenstore-read "/local/domain/$id/data/fastmig-agent/protocol" 2>/dev/null) && break
    sleep 1
  done
  say "guest agent: protocol '${p:-none}' ($(xenstore-read "/local/domain/$id/data/fastmig-agent/agent" 2>/dev/null || echo 'no agent key'))"
  grep -h 'AGENT' /var/log/xen/console/guest-g1*.log 2>/dev/null | awk '!seen[$0]++' | head -n 6 | sed 's/^/GUEST: /' || true
}
# From the timestamped xl log $1 (fastmig's free-page hint line):
# "pages_sent_as_free agent_scan_ms exchange_ms", NA when there is none.
hint_stats() {
  awk '/free-page hints: .* reported [0-9]+ free pages/ {
         for (i = 1; i < NF; i++) {
           if ($(i + 1) == "go" && $(i + 2) == "as") p = $i
           if ($i == "scan") s = $(i + 1)
           if ($i == "exchange") e = $(i + 1)
         } }
       END { if (p != "") print p, s, e; else print "NA NA NA" }' "$1"
}
# After a migration that had to fail ($1 names it in errors, $2 is dom0's
# time it ended, $3 a file for xl list): exactly one g1, runnable, answering
# pings, its memory intact.  Leaves its state column in ST.
survived_on_source() {
  sleep 5
  xl list >"$3" 2>&1
  local n; n=$(awk '$1 ~ /^g1/ { n++ } END { print n + 0 }' "$3")
  ST=$(awk '$1 == "g1" { print $5 }' "$3")
  [[ $n == 1 ]] || fail "$1: $n domains named g1* after the failed migration: $(tr '\n' ' ' <"$3")"
  runnable "$ST" || fail "$1: g1 is '$ST', not running, after the failed migration"
  # No device of the half-built domain left behind (with the patched libxl
  # its NIC may have been attached before the stream failed): the only
  # vif backend in xenstore and the only vif in dom0 are g1's (an HVM
  # guest's device model adds its emulated NIC's tap, vifN.0-emu).
  local id vifs devs
  id=$(awk '$1 == "g1" { print $2 }' "$3")
  vifs=$(xenstore-list /local/domain/0/backend/vif 2>/dev/null | tr '\n' ' ')
  [[ $vifs == "$id " ]] || fail "$1: vif backends of domains '$vifs' in xenstore, expected only g1's ($id)"
  devs=$(ls /sys/class/net | grep '^vif' | grep -vx "vif$id\.0-emu" | tr '\n' ' ' || true)
  [[ $devs == "vif$id.0 " ]] || fail "$1: dom0 has vif devices '$devs', expected only vif$id.0 (and its -emu tap)"
  wait_ping 60 || fail "$1: the guest does not answer after the failed migration"
  check_memory "$2" "$1"
}
# memwriter's own verdict on the guest's memory: no CORRUPT line at all,
# and its checker still making progress (a newer STAT line than at $1,
# a dom0 time, with more pages verified). Fails the job otherwise.
check_memory() { # $1 = dom0 time the operation ended, $2 = what it was
  local logs=/var/log/xen/console/guest-g1*.log end=$(( $(date +%s) + 30 )) last
  if grep -h '^CORRUPT' $logs 2>/dev/null | head -n5 | grep -q .; then
    fail "$2: the guest's memory is corrupt: $(grep -h '^CORRUPT' $logs | head -n3 | tr '\n' ' ')"
  fi
  while :; do
    # The newest STAT line (by the guest's boottime, which goes on across
    # save and migration; a migrated guest's console is another file)
    # gives the pages verified so far, which must grow after the operation.
    last=$(cat $logs 2>/dev/null | awk '/^STAT/ && $3 + 0 > b { b = $3 + 0; v = $(NF - 2) } END { print v + 0 }')
    [[ -n ${VERIFIED_BEFORE:-} && $last -gt $VERIFIED_BEFORE ]] && break
    [[ -z ${VERIFIED_BEFORE:-} && $last -gt 0 ]] && break
    (( $(date +%s) < end )) || fail "$2: memwriter made no progress checking memory for 30 s after it (verified $last pages)"
    sleep 1
  done
  VERIFIED_BEFORE=$last
}

for size in $SIZES; do
  for mode in $MODES; do
    say "=== guest ${size} MiB, $mode ==="
    guest_cfg "$size" "$mode"
    ts=$(now)
    timeout "$STEP_TIMEOUT" xl create -e /var/lib/fastmig/g1.cfg >"$R/create-$size-$mode.log" 2>&1 \
      || fail "xl create ($(tail -n3 "$R/create-$size-$mode.log"))"
    wait_ping 300 || fail "guest ${size}/$mode never answered ping"
    boot_s=$(dt "$ts" "$(now)")
    # Let memwriter fill its buffer and settle.
    sleep "${SETTLE_S:-10}"
    say "guest up (pings) after ${boot_s}s"
    echo "boot	$size	$mode	0	$boot_s								" >>"$R/results.tsv"; sync
    VERIFIED_BEFORE=
    check_memory "$(now)" "boot"
    agent_ready
    for run in $(seq "$RUNS"); do
     for h in $HELPERS; do
      helper_env "$h"
      if [[ $DO_SAVE == 1 ]]; then
        f=/var/lib/fastmig/g1.save
        id=$h-$size-$mode-$run
        guest_load "save ($h, run $run)"
        ping_start "$R/ping-save-$id.txt"
        t1=$(now)
        timeout "$STEP_TIMEOUT" "${HENV[@]}" xl -v save g1 "$f" >"$R/save-$id.log" 2>&1 \
          || fail "xl save ($h): $(tail -n3 "$R/save-$id.log")"
        t2=$(now)
        timeout "$STEP_TIMEOUT" "${HENV[@]}" "${RENV[@]}" xl -v restore -e "$f" >"$R/restore-$id.log" 2>&1 \
          || fail "xl restore ($h): $(tail -n3 "$R/restore-$id.log")"
        t3=$(now)
        mixed_path_taken "$h" "$R/save-$id.log" "save ($h, run $run)" save
        mixed_path_taken "$h" "$R/restore-$id.log" "restore ($h, run $run)" restore
        wait_ping 60 || fail "guest did not answer after restore ($h)"
        read -r gap sent recv < <(ping_stop "$R/ping-save-$id.txt")
        fmib=$(awk -v b="$(stat -c %s "$f")" 'BEGIN { printf "%.1f", b / 1048576 }'); rm -f "$f"
        sleep 2
        ggap=$(guest_gap "$t1" "$t3")
        check_memory "$t3" "save+restore ($h, run $run)"
        printf 'saverestore-%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\t\t%s\n' "$h" "$size" "$mode" "$run" \
          "$(dt "$t1" "$t3")" "$(dt "$t1" "$t2")" "$(dt "$t2" "$t3")" "$gap" "$sent" "$recv" "$ggap" "$fmib" "$fmib" >>"$R/results.tsv"; sync
        say "save+restore ($h) run $run: total $(dt "$t1" "$t3")s (save $(dt "$t1" "$t2")s, restore $(dt "$t2" "$t3")s), ping gap ${gap} ms, guest gap ${ggap} ms"
        sleep 3
      fi
      if [[ $DO_MIGRATE == 1 ]]; then
        id=$h-$size-$mode-$run
        guest_load "migrate ($h, run $run)"
        ping_start "$R/ping-mig-$id.txt"
        t1=$(now)
        # -s "": xl runs the "host" argument itself (sh -c) instead of ssh
        # host xl migrate-receive, so this is a localhost migration over a
        # pipe. dd in front of the receiver counts the stream's bytes (it
        # passes each read on as it comes, so it adds no waiting).
        ml=$R/migrate-$id.log
        xs_load_start
        perf_start "$id"
        timeout "$STEP_TIMEOUT" "${HENV[@]}" xl -vvv migrate -s "" -e g1 \
          "dd bs=1M 2>$R/dd-$id.txt | ${RECV_CMD}xl -vvv migrate-receive -e" 2>&1 \
          | stamp >"$ml" || { xs_load_stop; fail "xl migrate ($h): $(tail -n3 "$ml")"; }
        t2=$(now)
        perf_stop "$id"
        xs_load_stop
        mixed_path_taken "$h" "$ml" "migrate ($h, run $run)" save
        mixed_path_taken "$h" "$ml" "migrate ($h, run $run)" restore
        sus=$(suspend_ms "$ml")
        sts=$(stream_s "$ml")
        read -r xgap xmem xhelp < <(xl_gap "$ml")
        read -r hpages hscan hex < <(hint_stats "$ml")
        grep -o 'free-page hints: .*' "$ml" | head -n 2 | sed 's/^/HINTS: /' || true
        # The agent's side of it (its scan's wall and CPU time).
        cat /var/log/xen/console/guest-g1*.log 2>/dev/null | grep 'AGENT.*scan:' | tail -n 1 | sed 's/^/GUEST: /' || true
        smib=$(awk '/bytes/ { printf "%.1f", $1 / 1048576 }' "$R/dd-$id.txt")
        wait_ping 60 || fail "guest did not answer after migrate ($h)"
        read -r gap sent recv < <(ping_stop "$R/ping-mig-$id.txt")
        sleep 2
        ggap=$(guest_gap "$t1" "$t2")
        check_memory "$t2" "migrate ($h, run $run)"
        printf 'migrate-%s\t%s\t%s\t%s\t%s\t\t\t%s\t%s\t%s\t%s\t\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$h" "$size" "$mode" "$run" \
          "$(dt "$t1" "$t2")" "$gap" "$sent" "$recv" "$ggap" "$xgap" "$xmem" "$smib" "$sus" "$sts" "$xhelp" \
          "${LOAD_MIB:-}" "$hpages" "$hscan" "$hex" >>"$R/results.tsv"; sync
        say "migrate ($h) run $run: total $(dt "$t1" "$t2")s (stream ${sts}s), xl downtime ${xgap} ms (memory part ${xmem} ms, helpers done ${xhelp} ms), ${smib} MiB stream, suspend ${sus} ms, ping gap ${gap} ms, guest gap ${ggap} ms${LOAD_MIB:+, after a load of $LOAD_MIB MiB}, free-page hints: $hpages pages (agent scan $hscan ms, exchange $hex ms)"
        sleep 3
      fi
     done
    done
    # FAULTS=1: per helper, one migration whose stream is cut after CUT_MIB
    # (the destination sees a truncated stream during precopy).  It must
    # fail, and leave exactly one g1, running on the source, its memory
    # intact, and no half-built domain behind.
    if [[ $FAULTS == 1 ]]; then
      # fastmig's own failpoint, after the guest is suspended: "error" makes
      # the helper fail there; its error path resumes the guest
      # (cooperatively), the migration fails, the guest must run on the
      # source.  ("kill" is not run: a SIGKILLed channel-mode helper leaves
      # Xen's suspend subscription on a dead port, so the guest's next
      # suspension would not reach libxl's watch; see docs/libxl-helper.md.)
      for h in $HELPERS; do
        # (a mixed pool's source: Xen's helper does the save, fastmig's
        # failpoints never run)
        [[ $h == stock* || $h == fastmig-to-stock ]] && continue
        act=error
        helper_env "$h"
        fl=$R/fault-stopcopy-$act-$h-$size-$mode.log
        t1=$(now)
        if timeout "$STEP_TIMEOUT" "${HENV[@]}" FASTMIG_FAILPOINTS="send:stop-copy=$act" xl -vvv migrate -s "" -e g1 \
             "xl -vvv migrate-receive -e" 2>&1 | stamp >"$fl"; then
          fail "fault-stopcopy-$act ($h): xl migrate succeeded with a failing source helper"
        fi
        t2=$(now)
        grep -q 'suspended in\|guest has suspended' "$fl" || fail "fault-stopcopy-$act ($h): the guest was never suspended"
        survived_on_source "fault-stopcopy-$act ($h)" "$t2" "$fl.list"
        printf 'faultstop%s-%s\t%s\t%s\t1\t%s\t\t\t\t\t\t\t\t\t\t\t\t\n' "$act" "$h" "$size" "$mode" "$(dt "$t1" "$t2")" >>"$R/results.tsv"; sync
        say "fault-stopcopy-$act ($h): xl migrate failed after the suspension, as it must; g1 runs on the source ('$ST'), memory intact"
        sleep 3
      done
      for h in $HELPERS; do
        helper_env "$h"
        fl=$R/fault-cut-$h-$size-$mode.log
        t1=$(now)
        if timeout "$STEP_TIMEOUT" "${HENV[@]}" xl -vvv migrate -s "" -e g1 \
             "head -c $((CUT_MIB << 20)) | ${RECV_CMD}xl -vvv migrate-receive -e" 2>&1 | stamp >"$fl"; then
          fail "fault-cut ($h): xl migrate succeeded on a stream cut after $CUT_MIB MiB"
        fi
        t2=$(now)
        survived_on_source "fault-cut ($h)" "$t2" "$R/fault-cut-$h-$size-$mode.list"
        printf 'faultcut-%s\t%s\t%s\t1\t%s\t\t\t\t\t\t\t\t\t\t\t\t\n' "$h" "$size" "$mode" "$(dt "$t1" "$t2")" >>"$R/results.tsv"; sync
        say "fault-cut ($h): xl migrate failed as it must after $(dt "$t1" "$t2")s; g1 runs on the source ('$ST'), memory intact"
        sleep 3
      done
    fi
    cat /var/log/xen/console/guest-g1*.log >"$R/console-$size-$mode.log" 2>/dev/null || true
    timeout 60 xl destroy g1 || fail "xl destroy"
    rm -f /var/log/xen/console/guest-g1*.log
  done
done
collect
say "ALL DONE"
