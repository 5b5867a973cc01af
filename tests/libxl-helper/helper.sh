#!/bin/sh
# The libxl-save-helper drop-in, driven through its pipes by a fake libxl
# end (fake_libxl: libxl 4.17's command line and message layout, checked
# byte by byte) with the sim backend: no Xen needed.  TAP.
. "${top_srcdir:-.}/tests/integration/lib.sh"
B=$(dirname "$FASTMIG_BIN")
HELPER=$B/libxl-plugin/libxl-save-helper
FAKE=$B/tests/libxl-helper/fake_libxl
export FASTMIG_HELPER_BACKEND=sim
T=$WORK
export FASTMIG_PEERS=$T/no-peers-file  # hermetic: the host's /etc/fastmig/peers is not read

has() { grep -q -- "$2" "$1"; }
count() { grep -c -- "$2" "$1" || true; }
have_xen() { grep -q '^#define FASTMIG_HAVE_XEN 1' "$B/config.h" 2>/dev/null; }
state() { fm sim info "$1" | sed -n 's/^state: //p'; }
incoming() { fm sim list | awk '$NF == "incoming" {print $1}'; }
new_guest() { fm sim create --memory "$1" --workload "$2" --seed 7; }

# --- the command line --------------------------------------------------------
usage_case() {  # usage_case ARGS...: exit 2, usage on stderr, nothing on stdout
  "$HELPER" "$@" >"$T/u.out" 2>"$T/u.err"; rc=$?
  [ $rc -eq 2 ] && [ ! -s "$T/u.out" ] && has "$T/u.err" usage
}
ok "bad argv: no mode is a usage error" -- usage_case
ok "bad argv: wrong argument count" -- usage_case --save-domain 3 -1 5 1 136
ok "bad argv: non-numeric domid" -- usage_case --save-domain 3 -1 five 1 136 0
ok "bad argv: unknown mode" -- usage_case --suspend-domain 3 -1 5 1 136 0
ok "bad argv: restore without io_fd" -- usage_case --restore-domain -1 -1 6 1 0 2 0 768 0

# --- the default (Xen) backend where no hypervisor runs ----------------------
# Built with the Xen libraries, the helper attaches the Xen domain and libxc's
# cause comes through (no /dev/xen/privcmd here; on a Xen host, no such
# domain: 32751 is below DOMID_FIRST_RESERVED but never allocated in tests);
# built without them, it says the backend is not built.  Either way: an
# error log naming the domain, the phase and the cause, then complete with
# retval -1 (fake_libxl checks the order and the helper's exit status), and
# libxl is never asked to suspend anything.
NODOM=32751
if have_xen; then
  XEN_CAUSE="domain $NODOM.*: setup: .*\(cannot open the hypervisor interface\|does not exist\)"
else
  XEN_CAUSE="domain $NODOM: setup: .*Xen backend is not built/available"
fi
xen_save() {
  FASTMIG_HELPER_BACKEND= "$FAKE" --helper "$HELPER" --domid $NODOM --io "$T/x.img" save >"$T/x.out" 2>&1 ||
    { cat "$T/x.out"; return 1; }
  cat "$T/x.out"
  has "$T/x.out" "save: complete retval=-1" && has "$T/x.out" "level=8 errno=-1 .*save failed: $XEN_CAUSE" &&
    has "$T/x.out" "save: exit 0" && ! has "$T/x.out" "save: suspend" && ! has "$T/x.out" "switch_qemu_logdirty"
}
ok "xen backend, no hypervisor: save fails naming domain, phase and cause; no suspend asked" -- xen_save
bad_suspend_mode() {
  FASTMIG_HELPER_BACKEND= FASTMIG_HELPER_SUSPEND=watch "$FAKE" --helper "$HELPER" --domid $NODOM --io "$T/x.img" save \
    >"$T/s.out" 2>&1 || { cat "$T/s.out"; return 1; }
  cat "$T/s.out"
  if have_xen; then
    has "$T/s.out" "level=8 .*save failed: .*FASTMIG_HELPER_SUSPEND=watch is not a suspend mode (channel or libxl)"
  else
    has "$T/s.out" "level=8 .*save failed: $XEN_CAUSE"
  fi && has "$T/s.out" "save: complete retval=-1" && ! has "$T/s.out" "save: suspend"
}
ok "xen backend: an unknown FASTMIG_HELPER_SUSPEND is refused by name before anything happens" -- bad_suspend_mode

# --- xl migrate: save and restore helpers joined by a socketpair -------------
G=$(new_guest 64M web)
pair_case() {
  FASTMIG_HELPER_SIM_DOMAIN=$G FASTMIG_HELPER_OPTIONS="--threads 2 --no-free-hints" \
    "$FAKE" --helper "$HELPER" --check-running "$G" pair >"$T/p.out" 2>&1 || { cat "$T/p.out"; return 1; }
  cat "$T/p.out"
  has "$T/p.out" "save: complete retval=0" && has "$T/p.out" "restore: complete retval=0" &&
    has "$T/p.out" "restore: libxl suffix intact" && has "$T/p.out" "restore: static_data_done missing=0"
}
ok "migrate: save->restore through a socketpair completes on both sides" -- pair_case
suspend_phase() {
  [ "$(count "$T/p.out" 'save: suspend')" -eq 1 ] || return 1
  # live: precopy round 0 went before the suspend, stop-and-copy after it,
  # and the guest was still running when libxl was asked to suspend it.
  awk '/Frames iteration 0/ && !s {f=1} /save: suspend/ {s=1; if (!f) exit 1} /stop-and-copy/ {if (!s) exit 1; c=1}
       END {exit !(f && s && c)}' "$T/p.out" && has "$T/p.out" "save: suspend guest=running reply=1"
}
ok "migrate: suspend callback called exactly once, after precopy, before stop-and-copy" -- suspend_phase
D=$(incoming)
bitexact() {
  [ -n "$D" ] && [ "$(state "$G")" = paused ] && [ "$(fm sim checksum "$G")" = "$(fm sim checksum "$D")" ]
}
ok "migrate: source left suspended for libxl, destination memory bit-exact" -- bitexact
runs_after() {
  before=$(fm sim checksum "$D") && fm sim resume "$D" && [ "$(state "$D")" = running ] &&
    sleep 1 && [ "$(fm sim checksum "$D")" != "$before" ]
}
ok "migrate: the restored guest runs once libxl unpauses it (its memory changes)" -- runs_after
fm sim destroy "$G" >/dev/null 2>&1; fm sim destroy "$D" >/dev/null 2>&1

slow_batch() {  # a batch slower than 2 s is named once (domain, phase, pages, time), and the migration still completes
  S=$(new_guest 4M idle)
  FASTMIG_FAILPOINTS=recv:apply-batch=sleep:2100 FASTMIG_HELPER_SIM_DOMAIN=$S \
    FASTMIG_HELPER_OPTIONS="--threads 2 --no-free-hints --max-rounds 1" \
    "$FAKE" --helper "$HELPER" pair >"$T/sb.out" 2>&1 || { cat "$T/sb.out"; return 1; }
  cat "$T/sb.out"
  has "$T/sb.out" "save: complete retval=0" && has "$T/sb.out" "restore: complete retval=0" &&
    [ "$(grep -c 'domain [0-9]*: sim:[0-9]*: receive: slow page batch: round [0-9]*, [0-9]* pages applied in 2[0-9][0-9][0-9]\.[0-9] ms' "$T/sb.out")" -eq 1 ]
}
ok "migrate: a page batch slower than 2 s is logged once, naming the domain, and the migration completes" -- slow_batch
fm sim destroy "$S" >/dev/null 2>&1; for d in $(incoming); do fm sim destroy "$d" >/dev/null 2>&1; done

# --- switch_qemu_logdirty (HVM guests with a device model) ------------------
# As libxc for an HVM domain: QEMU's log-dirty on before the first round, off
# once END is out and before complete; off again on a failure after it was
# switched on; a refusal fails the save at setup, before any suspend.  The
# sim backend plays an HVM guest with FASTMIG_HELPER_SIM_QEMU=1.
G=$(new_guest 32M web)
qemu_pair() {
  FASTMIG_HELPER_SIM_QEMU=1 FASTMIG_HELPER_SIM_DOMAIN=$G FASTMIG_HELPER_OPTIONS="--no-free-hints" \
    "$FAKE" --helper "$HELPER" pair >"$T/q.out" 2>&1 || { cat "$T/q.out"; return 1; }
  cat "$T/q.out"
  has "$T/q.out" "save: complete retval=0" && has "$T/q.out" "restore: complete retval=0" &&
    [ "$(count "$T/q.out" "save: switch_qemu_logdirty domid=.* enable=1")" -eq 1 ] &&
    [ "$(count "$T/q.out" "save: switch_qemu_logdirty domid=.* enable=0")" -eq 1 ] &&
    awk '/save: switch_qemu_logdirty.*enable=1/ {on=NR} /Frames iteration 0/ && !f {f=NR}
         /save: switch_qemu_logdirty.*enable=0/ {off=NR} /save: suspend/ {s=NR} /save: complete/ {c=NR}
         END {exit !(on && f && s && off && c && on < f && f < s && s < off && off < c)}' "$T/q.out" &&
    D=$(incoming) && [ "$(fm sim checksum "$G")" = "$(fm sim checksum "$D")" ] && fm sim destroy "$D" >/dev/null
}
ok "qemu log-dirty: on before round 0, off after END and before complete; migration bit-exact" -- qemu_pair
fm sim resume "$G" >/dev/null 2>&1
qemu_refused() {
  FASTMIG_HELPER_SIM_QEMU=1 FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" --helper "$HELPER" --qemu-reply -1 \
    --io "$T/q.img" save >"$T/q.out" 2>&1 || { cat "$T/q.out"; return 1; }
  cat "$T/q.out"
  has "$T/q.out" "save: complete retval=-1" && has "$T/q.out" "level=8 .*setup: libxl could not switch QEMU's log-dirty mode on" &&
    ! has "$T/q.out" "save: suspend" && ! has "$T/q.out" "enable=0" && [ "$(state "$G")" = running ]
}
ok "qemu log-dirty: libxl refuses to switch it on: save fails at setup, no suspend, guest runs" -- qemu_refused
qemu_failed() {
  FASTMIG_HELPER_SIM_QEMU=1 FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" --helper "$HELPER" --suspend-reply 0 \
    --io "$T/q.img" save >"$T/q.out" 2>&1 || { cat "$T/q.out"; return 1; }
  cat "$T/q.out"
  has "$T/q.out" "save: complete retval=-1" && has "$T/q.out" "enable=1" &&
    awk '/save: suspend/ {s=NR} /save: switch_qemu_logdirty.*enable=0/ {off=NR} /save: complete/ {c=NR}
         END {exit !(s && off && c && s < off && off < c)}' "$T/q.out" && [ "$(state "$G")" = running ]
}
ok "qemu log-dirty: a failed save switches it off again before complete; guest runs" -- qemu_failed
fm sim destroy "$G" >/dev/null 2>&1

# --- xl save to a file (not live), xl restore from it ------------------------
G=$(new_guest 32M web)
save_file() {
  FASTMIG_HELPER_SIM_DOMAIN=$G FASTMIG_HELPER_OPTIONS="--no-free-hints" \
    "$FAKE" --helper "$HELPER" --xcflags 0 --io "$T/s.img" save >"$T/s.out" 2>&1 || { cat "$T/s.out"; return 1; }
  cat "$T/s.out"
  has "$T/s.out" "save: complete retval=0" && [ "$(count "$T/s.out" 'save: suspend')" -eq 1 ] &&
    ! has "$T/s.out" "Frames iteration" &&
    awk '/save: suspend/ {s=1} /what=/ && / done=[1-9]/ {if (!s) exit 1} END {exit !s}' "$T/s.out"
}
ok "xl save (not live): suspend first, one round, image written" -- save_file
cp "$T/s.img" "$T/s.orig"
restore_file() {
  "$FAKE" --helper "$HELPER" --io "$T/s.img" restore >"$T/r.out" 2>&1 || { cat "$T/r.out"; return 1; }
  cat "$T/r.out"
  D=$(incoming)
  has "$T/r.out" "restore: complete retval=0" && has "$T/r.out" "libxl suffix intact" && [ -n "$D" ] &&
    [ "$(fm sim checksum "$G")" = "$(fm sim checksum "$D")" ] && fm sim resume "$D" && [ "$(state "$D")" = running ]
}
ok "xl restore from the image: bit-exact, libxl's records after it intact, runs" -- restore_file
# libxl goes on when the helper exits; the worker's teardown comes after
# (helper_supervisor.hpp).  A failpoint holds the worker 3 s past its
# hand-over: the process libxl waits for must be gone by then.
handover() {
  FASTMIG_FAILPOINTS=helper:after-handover=sleep:3000 FASTMIG_HELPER_SIM_DOMAIN=$G \
    FASTMIG_HELPER_OPTIONS="--no-free-hints" "$FAKE" --helper "$HELPER" --xcflags 0 --io "$T/h.img" save \
    >"$T/h.out" 2>&1 || { cat "$T/h.out"; return 1; }
  cat "$T/h.out"
  awk '/save: complete retval=0/ {c=NR} /save: exit 0/ {e=NR} /save: worker alive after exit/ {a=NR}
       /save: worker finished/ {f=NR} END {exit !(c && e > c && a > e && f > a)}' "$T/h.out" &&
    has "$T/h.out" "worker pid [0-9]" && [ "$(state "$G")" = paused ]
}
ok "save: the helper exits once libxl has complete, its worker tears down after" -- handover
# The same on the restore side: restore_results and complete go out as soon
# as the domain is built; the receiver's teardown runs in the worker after.
restore_handover() {
  cp "$T/s.orig" "$T/rh.img"
  fm sim list | awk 'NR>1 {print $1}' >"$T/rh.before"
  FASTMIG_FAILPOINTS=helper:after-handover=sleep:3000 "$FAKE" --helper "$HELPER" --io "$T/rh.img" restore     >"$T/rh.out" 2>&1 || { cat "$T/rh.out"; return 1; }
  cat "$T/rh.out"
  for d in $(fm sim list | awk 'NR>1 {print $1}' | grep -vxF -f "$T/rh.before"); do
    fm sim destroy "$d" >/dev/null 2>&1
  done
  awk '/fastmig: restored/ {r=NR} /restore: restore_results/ {s=NR} /restore: complete retval=0/ {c=NR}
       /restore: exit 0/ {e=NR} /restore: worker alive after exit/ {a=NR} /restore: worker finished/ {f=NR}
       END {exit !(r && s > r && c > s && e > c && a > e && f > a)}' "$T/rh.out" &&
    has "$T/rh.out" "libxl suffix intact" && [ "$(count "$T/rh.out" 'restore: restore_results')" -eq 1 ]
}
ok "restore: the helper exits once libxl has complete, its worker tears down after" -- restore_handover
handover_both() { # the pair run above: both workers ended, nothing sent after complete
  for side in save restore; do
    awk -v s="$side" '$0 ~ s": complete retval=0" {c=NR} $0 ~ s": exit 0" {e=NR} $0 ~ s": worker finished" {f=NR}
         END {exit !(c && e > c && f > e)}' "$T/p.out" || return 1
  done
}
ok "migrate: save and restore helpers both hand over, then their workers finish" -- handover_both
fm sim destroy "$G" >/dev/null 2>&1; [ -n "$(incoming)" ] || true
for d in $(fm sim list | awk 'NR>1 {print $1}'); do fm sim destroy "$d" >/dev/null 2>&1; done

# --- failures ------------------------------------------------------------------
G=$(new_guest 32M web)
failing_suspend() {
  FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" --helper "$HELPER" --suspend-reply 0 --pause-on-suspend "$G" \
    --io "$T/f.img" save >"$T/f.out" 2>&1 || { cat "$T/f.out"; return 1; }
  cat "$T/f.out"
  has "$T/f.out" "save: complete retval=-1" && has "$T/f.out" "level=8 .*domain 5 (sim:.*suspend callback failed" &&
    [ "$(state "$G")" = running ]
}
ok "libxl answers 0 to suspend: failure reported, source resumed and running" -- failing_suspend
term_at_suspend() {
  FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" --helper "$HELPER" --term-at-suspend --pause-on-suspend "$G" \
    --io "$T/f.img" save >"$T/f.out" 2>&1 || { cat "$T/f.out"; return 1; }
  cat "$T/f.out"
  has "$T/f.out" "save: complete retval=-1" && has "$T/f.out" "level=8 .*suspend callback: interrupted: SIGTERM.*resumed" &&
    [ "$(state "$G")" = running ]
}
ok "SIGTERM while libxl handles the suspend callback: source resumed, failure reported" -- term_at_suspend
restore_bad() {  # restore_bad FILE WHAT: fails naming WHAT, no incoming domain left
  "$FAKE" --helper "$HELPER" --no-framing --io "$1" restore >"$T/b.out" 2>&1 || { cat "$T/b.out"; return 1; }
  cat "$T/b.out"
  has "$T/b.out" "restore: complete retval=-1" && has "$T/b.out" "level=8 .*$2" && [ -z "$(incoming)" ] &&
    [ "$(fm sim list | wc -l)" -eq 2 ]
}
tail -c +33 "$T/s.orig" >"$T/clean.img"   # the helper's part alone
head -c $(( $(wc -c <"$T/clean.img") / 2 )) "$T/clean.img" >"$T/trunc.img"
ok "truncated image: clear error, half-built domain destroyed" -- restore_bad "$T/trunc.img" "restore failed: domain 6.*\(truncated\|closed\)"
cp "$T/clean.img" "$T/corrupt.img"
printf '\125' | dd of="$T/corrupt.img" bs=1 seek=$(( $(wc -c <"$T/clean.img") / 3 )) conv=notrunc 2>/dev/null
ok "corrupt image: malformed stream error, domain destroyed" -- restore_bad "$T/corrupt.img" "malformed stream"
printf '\377\377\377\377\377\377\377\377XENF\0\0\0\3' >"$T/libxc.img"
FASTMIG_STOCK_HELPER=$T/no/such/helper \
  ok "a libxc image and no stock helper: the error names the path and the fix, no domain built" -- \
  restore_bad "$T/libxc.img" "libxc (stock Xen) stream.*but FASTMIG_STOCK_HELPER=$T/no/such/helper does not name a file"
static_fail() {
  "$FAKE" --helper "$HELPER" --no-framing --static-reply 1 --io "$T/clean.img" restore >"$T/st.out" 2>&1 || return 1
  has "$T/st.out" "complete retval=-1" && has "$T/st.out" "static_data_done callback failed" && [ -z "$(incoming)" ]
}
ok "libxl fails static_data_done: restore fails, domain destroyed" -- static_fail
# A fastmig stream whose HEADER says KIND, alone: the magic and HEADER of the
# helper's part of the sim image, with domain_kind (HEADER body offset 24)
# rewritten and the record's CRC-32C recomputed (docs/stream-format.md).
kind_stream() {  # kind_stream KIND OUT
  python3 - "$T/clean.img" "$1" "$2" <<'PY'
import struct, sys
def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    return c ^ 0xFFFFFFFF
img = open(sys.argv[1], 'rb').read()
magic, img = img[:8], img[8:]
rtype, length = struct.unpack_from('<II', img, 0)
assert rtype == 1, rtype
body = bytearray(img[16:16 + length])
struct.pack_into('<I', body, 24, int(sys.argv[2]))
head = struct.pack('<IIII', rtype, length, 0, 0)
rec = struct.pack('<IIII', rtype, length, crc32c(head + bytes(body)), 0) + bytes(body)
open(sys.argv[3], 'wb').write(magic + rec + bytes((8 - length % 8) % 8))
PY
}
xen_restore() {  # xen_restore KIND WHAT: the default backend fails the restore naming WHAT
  kind_stream "$1" "$T/k$1.img" || return 1
  FASTMIG_HELPER_BACKEND= "$FAKE" --helper "$HELPER" --no-framing --rdomid $NODOM --io "$T/k$1.img" restore \
    >"$T/xr.out" 2>&1 || { cat "$T/xr.out"; return 1; }
  cat "$T/xr.out"
  has "$T/xr.out" "restore: complete retval=-1" && has "$T/xr.out" "level=8 .*restore failed: .*$2" &&
    has "$T/xr.out" "restore: restore_results store_gfn=0 console_gfn=0" && has "$T/xr.out" "restore: exit 0" &&
    ! has "$T/xr.out" "static_data_done"
}
ok "xen backend, no hypervisor: restore of a PV stream fails naming domain, phase and cause" -- \
  xen_restore 2 "$XEN_CAUSE"
if have_xen; then
  ok "xen backend, no hypervisor: restore of an HVM/PVH stream fails naming domain, phase and cause" -- \
    xen_restore 3 "$XEN_CAUSE"
  ok "xen backend: a sim stream is refused, nothing built" -- xen_restore 1 "kind 1"
else
  for d in "restore of an HVM/PVH stream fails naming domain, phase and cause" "a sim stream is refused"; do
    tap_n=$((tap_n + 1)); echo "ok $tap_n - xen backend: $d # SKIP built without the Xen libraries"
  done
fi
crc_env() {  # FASTMIG_CRC32C: the table path migrates a guest; a bad value is refused by name
  FASTMIG_CRC32C=table FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" --helper "$HELPER" --xcflags 0 --io "$T/c.img" save \
    >"$T/c.out" 2>&1 || { cat "$T/c.out"; return 1; }
  FASTMIG_CRC32C=table "$FAKE" --helper "$HELPER" --io "$T/c.img" restore >>"$T/c.out" 2>&1 || { cat "$T/c.out"; return 1; }
  has "$T/c.out" "save: complete retval=0" && has "$T/c.out" "restore: complete retval=0" &&
    has "$T/c.out" "crc32_iscsi_base (forced by FASTMIG_CRC32C)" &&
    D=$(incoming) && [ "$(fm sim checksum "$G")" = "$(fm sim checksum "$D")" ] && fm sim destroy "$D" >/dev/null &&
    fm sim resume "$G" >/dev/null &&
    FASTMIG_CRC32C=fast FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" --helper "$HELPER" --io "$T/c2.img" save >"$T/c2.out" 2>&1 &&
    has "$T/c2.out" "save: complete retval=-1" && has "$T/c2.out" "level=8 .*FASTMIG_CRC32C='fast' is not auto" &&
    ! has "$T/c2.out" "save: suspend" && [ "$(state "$G")" = running ]
}
ok "FASTMIG_CRC32C=table saves and restores bit-exact; an unknown value is refused before anything happens" -- crc_env
settle_env() {  # FASTMIG_HELPER_SETTLE_MS: a malformed value is refused by name, on either side
  FASTMIG_HELPER_SETTLE_MS=soon FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" --helper "$HELPER" --io "$T/st.img" save \
    >"$T/st.out" 2>&1 &&
    has "$T/st.out" "save: complete retval=-1" && has "$T/st.out" "level=8 .*FASTMIG_HELPER_SETTLE_MS=soon is not a number" &&
    ! has "$T/st.out" "save: suspend" && [ "$(state "$G")" = running ] &&
    FASTMIG_HELPER_SETTLE_MS=-5 "$FAKE" --helper "$HELPER" --io "$T/c.img" restore >"$T/st2.out" 2>&1 &&
    has "$T/st2.out" "restore: complete retval=-1" && has "$T/st2.out" "FASTMIG_HELPER_SETTLE_MS=-5 is not a number" &&
    [ -z "$(incoming)" ]
}
ok "FASTMIG_HELPER_SETTLE_MS: a malformed value is refused before anything happens" -- settle_env
remus() {
  FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" --helper "$HELPER" --stream-type 1 --io "$T/rm.img" save >"$T/rm.out" 2>&1 &&
    has "$T/rm.out" "complete retval=-1" && has "$T/rm.out" "Remus/COLO" && [ "$(state "$G")" = running ]
}
ok "checkpointed stream (Remus) refused clearly, guest untouched" -- remus
fm sim destroy "$G" >/dev/null 2>&1

# --- stock Xen streams: handed whole to Xen's own helper (rolling upgrade) ---
# A libxc stream (8 x 0xFF, XENF, ...) between libxl's own records, as xl
# restore reads it from a file and xl migrate-receive from ssh's pipe or
# socket.  fastmig's helper must look at it without consuming a byte and
# exec the stock helper with libxl's command line: the fake stock helper
# records its argv and reads the libxc part from its first byte to its END
# (byte count and FNV-1a hash against the image's), and fake_libxl then
# finds its suffix intact.
STOCKFAKE=$B/tests/libxl-helper/fake_stock_helper
make_libxc() {  # make_libxc OUT PAGES: prints "LENGTH HASH" of the libxc part
  python3 - "$1" "$2" <<'PY'
import random, struct, sys
out, pages = sys.argv[1], int(sys.argv[2])
rnd = random.Random(17)
s = b'\xff' * 8 + b'XENF' + struct.pack('>IHHI', 3, 0, 0, 0)      # image header, big endian
s += struct.pack('<IHHII', 1, 12, 0, 4, 17)                        # domain header: x86 PV, Xen 4.17
def rec(t, body):
    return struct.pack('<II', t, len(body)) + body + b'\0' * ((8 - len(body) % 8) % 8)
s += rec(2, struct.pack('<BBHI', 8, 4, 0, 0))                      # X86_PV_INFO
for base in range(0, pages, 4):                                    # PAGE_DATA, 4 pages each
    n = min(4, pages - base)
    body = struct.pack('<II', n, 0) + b''.join(struct.pack('<Q', base + i) for i in range(n))
    s += rec(1, body + bytes(rnd.getrandbits(8) for _ in range(4096 * n)))
s += rec(0, b'')                                                   # END
h = 1469598103934665603
for c in s:
    h = ((h ^ c) * 1099511628211) & 0xffffffffffffffff
open(out, 'wb').write(b'LIBXL-PREFIX-RECORDS-0123456789\n' + s + b'LIBXL-SUFFIX: EMULATOR_XENSTORE_DATA, END\n')
print(len(s), '%016x' % h)
PY
}
set -- $(make_libxc "$T/xc.img" 40)
XC_LEN=$1 XC_HASH=$2
stock_restore() {  # stock_restore KIND [fake_libxl options]: handed over, read whole, suffix intact
  kind=$1; shift
  rm -f "$T/stock.log"
  FAKE_STOCK_LOG=$T/stock.log FASTMIG_STOCK_HELPER=$STOCKFAKE \
    "$FAKE" --helper "$HELPER" --io-kind "$kind" "$@" --io "$T/xc.img" restore >"$T/sr.out" 2>&1 ||
    { cat "$T/sr.out" "$T/stock.log"; return 1; }
  cat "$T/sr.out" "$T/stock.log"
  args=$(sed -n 's/^restore: argv //p' "$T/sr.out")
  [ -n "$args" ] && grep -qxF "args=$args" "$T/stock.log" && grep -qxF "argv0=$STOCKFAKE" "$T/stock.log" &&
    grep -qx "read=$XC_LEN hash=$XC_HASH records=[0-9]* end=1" "$T/stock.log" &&
    has "$T/sr.out" "libxc (stock Xen) stream (looked at its first 12 bytes, $kind.*running the stock helper $STOCKFAKE" &&
    has "$T/sr.out" "restore: complete retval=0" && has "$T/sr.out" "libxl suffix intact" && [ -z "$(incoming)" ]
}
ok "libxc stream in a file (xl restore): the stock helper gets libxl's argv and the whole stream" -- stock_restore file
ok "libxc stream on a pipe (ssh): the stock helper gets libxl's argv and the whole stream" -- stock_restore pipe
ok "libxc stream on a socket: the stock helper gets libxl's argv and the whole stream" -- stock_restore socket
ok "libxc stream on a pipe, its first bytes 3 at a time: handed over whole" -- stock_restore pipe --feed-chunk 3
ok "libxc stream on a socket, its first bytes 5 at a time: handed over whole" -- stock_restore socket --feed-chunk 5
# The layout make install-xl-helper and the Debian package leave: libxl's
# path is a symlink to fastmig's helper, Xen's own is beside it as .distrib.
diverted() {
  mkdir -p "$T/xenbin" && ln -sf "$HELPER" "$T/xenbin/libxl-save-helper" &&
    cp "$STOCKFAKE" "$T/xenbin/libxl-save-helper.distrib" && rm -f "$T/stock.log" &&
    FAKE_STOCK_LOG=$T/stock.log FASTMIG_STOCK_HELPER= "$FAKE" --helper "$T/xenbin/libxl-save-helper" \
      --io-kind pipe --io "$T/xc.img" restore >"$T/dv.out" 2>&1 || { cat "$T/dv.out"; return 1; }
  cat "$T/dv.out" "$T/stock.log"
  grep -qx "read=$XC_LEN hash=$XC_HASH records=[0-9]* end=1" "$T/stock.log" &&
    has "$T/dv.out" "running the stock helper $T/xenbin/libxl-save-helper.distrib" && has "$T/dv.out" "suffix intact"
}
ok "diverted layout: the stock helper is found as <libxl's path>.distrib" -- diverted
none_found() {
  FASTMIG_STOCK_HELPER= "$FAKE" --helper "$HELPER" --io-kind socket --io "$T/xc.img" restore >"$T/nf.out" 2>&1 ||
    { cat "$T/nf.out"; return 1; }
  cat "$T/nf.out"
  has "$T/nf.out" "restore: complete retval=-1" && has "$T/nf.out" "restore: restore_results store_gfn=0" &&
    has "$T/nf.out" "level=8 .*libxc (stock Xen) stream.*but Xen's stock libxl-save-helper was not found (tried $HELPER.distrib, " &&
    has "$T/nf.out" "set FASTMIG_STOCK_HELPER=" && [ -z "$(incoming)" ]
}
if [ -e /usr/lib/xen-4.17/bin/libxl-save-helper ] || [ -e /usr/lib/xen-4.20/bin/libxl-save-helper ]; then
  tap_n=$((tap_n + 1)); echo "ok $tap_n - no stock helper anywhere: the error lists the paths # SKIP Xen's helper is installed here"
else
  ok "no stock helper anywhere: the error lists every path tried and the fix" -- none_found
fi
fastmig_logged() {  # fastmig's own stream says so in the log and stays with fastmig
  has "$T/r.out" "holds a fastmig stream (looked at its first 12 bytes, file (pread at 32)): fastmig's helper restores it" &&
    has "$T/p.out" "holds a fastmig stream (looked at its first [0-9]* bytes, socket (MSG_PEEK)): fastmig's helper restores it"
}
ok "a fastmig stream: the log says fastmig's helper restores it (file, socket)" -- fastmig_logged
silent_pipe() {  # nothing ever comes: a bounded wait, then a clear error
  mkfifo "$T/fifo" && (exec 9<>"$T/fifo"; sleep 8) &
  sleep 0.2
  FASTMIG_HELPER_OPTIONS="--timeout-ms 1500" "$FAKE" --helper "$HELPER" --no-framing --io "$T/fifo" restore \
    >"$T/sp.out" 2>&1 || { cat "$T/sp.out"; return 1; }
  cat "$T/sp.out"
  has "$T/sp.out" "restore: complete retval=-1" &&
    has "$T/sp.out" "level=8 .*looking at the stream: io_fd [0-9]* (pipe (tee)): no data within 1500 ms"
}
ok "a stream that never starts: bounded wait, clear error" -- silent_pipe

# --- saves towards a stock host: per destination (peers table, FASTMIG_PEER) --
G=$(new_guest 16M web)
stock_save() {  # stock_save OUT FAKE_LIBXL_ARGS...: the fake stock helper did the save, guest untouched
  out=$1; shift
  rm -f "$T/stock.log"
  FAKE_STOCK_LOG=$T/stock.log FASTMIG_STOCK_HELPER=$STOCKFAKE FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" "$@" \
    >"$out" 2>&1 || { cat "$out"; return 1; }
  cat "$out" "$T/stock.log"
  args=$(sed -n 's/^save: argv //p' "$out")
  [ -n "$args" ] && grep -qxF "args=$args" "$T/stock.log" && grep -q "^wrote=" "$T/stock.log" &&
    has "$out" "save: complete retval=0" && ! has "$out" "save: suspend" && [ "$(state "$G")" = running ] &&
    has "$out" "running the stock helper $STOCKFAKE for this save"
}
env_stock() {
  FASTMIG_PEER=stock stock_save "$T/es.out" --helper "$HELPER" --io "$T/es.img" save &&
    has "$T/es.out" "the destination takes stock Xen streams (FASTMIG_PEER=stock)" &&
    [ "$(head -c 44 "$T/es.img" | tail -c 12 | od -An -tx1 | tr -d ' ')" = ffffffffffffffff58454e46 ]
}
ok "FASTMIG_PEER=stock: the stock helper writes the save (libxl's argv, a libxc image), fastmig never touches the guest" -- env_stock
round_trip() {  # that image restored through fastmig's helper: handed back to the stock helper
  rm -f "$T/stock.log"
  FAKE_STOCK_LOG=$T/stock.log FASTMIG_STOCK_HELPER=$STOCKFAKE "$FAKE" --helper "$HELPER" --io "$T/es.img" restore \
    >"$T/rt.out" 2>&1 || { cat "$T/rt.out"; return 1; }
  cat "$T/rt.out" "$T/stock.log"
  grep -q "records=2 end=1" "$T/stock.log" && has "$T/rt.out" "libxl suffix intact" && has "$T/rt.out" "complete retval=0"
}
ok "the stock image restores through fastmig's helper (handed to the stock helper, suffix intact)" -- round_trip
cat >"$T/peers" <<'EOF2'
# rolling upgrade: host2 and 10.0.0.7 still run stock Xen
default fastmig

HOST2   stock   # names compare without case
10.0.0.7 stock
EOF2
peers_stock() {
  FASTMIG_PEERS=$T/peers FAKE_LIBXL_ARGS="--helper $HELPER --io $T/ps.img save" \
    stock_save "$T/ps.out" migrate -s "ssh -p 2222" -e 5 root@host2 &&
    has "$T/ps.out" "destination host2: $T/peers:4)"
}
ok "peers table: xl migrate DOMAIN root@host2 with host2 stock: the stock helper saves" -- peers_stock
peers_fastmig() {
  FASTMIG_PEERS=$T/peers FASTMIG_HELPER_SIM_DOMAIN=$G FAKE_LIBXL_ARGS="--helper $HELPER --xcflags 0 --io $T/pf.img save" \
    "$FAKE" migrate 5 host3 >"$T/pf.out" 2>&1 || { cat "$T/pf.out"; return 1; }
  cat "$T/pf.out"
  has "$T/pf.out" "save: complete retval=0" &&
    has "$T/pf.out" "writing fastmig's stream (destination host3: 'host3' not listed, default of $T/peers:2)" &&
    [ "$(head -c 39 "$T/pf.img" | tail -c 7)" = "$(printf 'FMIG\r\nS')" ] && fm sim resume "$G" >/dev/null
}
ok "peers table: an unlisted destination gets the default (fastmig), the save is fastmig's" -- peers_fastmig
peers_bad() {  # peers_bad FILE-CONTENT WHAT
  printf "$1" >"$T/peers.bad"
  FASTMIG_PEERS=$T/peers.bad FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" --helper "$HELPER" --io "$T/pb.img" save \
    >"$T/pb.out" 2>&1 || { cat "$T/pb.out"; return 1; }
  cat "$T/pb.out"
  has "$T/pb.out" "save: complete retval=-1" && has "$T/pb.out" "level=8 .*choosing the stream format: $2 (the guest was not touched)" &&
    ! has "$T/pb.out" "save: suspend" && [ "$(state "$G")" = running ]
}
ok "malformed peers table: the save fails before anything, naming file and line" -- \
  peers_bad 'default fastmig\nhost2 stok\n' "$T/peers.bad:2: unknown format 'stok' (fastmig or stock)"
bad_env() {
  FASTMIG_PEER=maybe FASTMIG_HELPER_SIM_DOMAIN=$G "$FAKE" --helper "$HELPER" --io "$T/pb.img" save \
    >"$T/be.out" 2>&1 || { cat "$T/be.out"; return 1; }
  cat "$T/be.out"
  has "$T/be.out" "save: complete retval=-1" && has "$T/be.out" "FASTMIG_PEER='maybe' is neither fastmig nor stock" &&
    ! has "$T/be.out" "save: suspend" && [ "$(state "$G")" = running ]
}
ok "FASTMIG_PEER with a bad value: the save fails before anything" -- bad_env
fm sim destroy "$G" >/dev/null 2>&1

# --- the guest agent's words ---------------------------------------------------
G=$(new_guest 32M web)
# The guest-agent words are accepted by both ends (xl gives both the same
# environment) and checked.
agent_words() {
  FASTMIG_HELPER_SIM_DOMAIN=$G FASTMIG_HELPER_OPTIONS="--no-free-hints --no-agent-hints --agent-timeout-ms 500" \
    "$FAKE" --helper "$HELPER" pair >"$T/a.out" 2>&1 || { cat "$T/a.out"; return 1; }
  has "$T/a.out" "save: complete retval=0" && has "$T/a.out" "restore: complete retval=0" || { cat "$T/a.out"; return 1; }
  D=$(incoming) && fm sim destroy "$D" >/dev/null
  FASTMIG_HELPER_SIM_DOMAIN=$G FASTMIG_HELPER_OPTIONS="--agent-timeout-ms 60000" \
    "$FAKE" --helper "$HELPER" --xcflags 0 --io "$T/a.img" save >"$T/a.out" 2>&1
  cat "$T/a.out"
  has "$T/a.out" "agent-timeout-ms must be 1..20000" && ! has "$T/a.out" "save: complete retval=0"
}
ok "migrate: --no-agent-hints and --agent-timeout-ms reach both ends, a bad bound is refused" -- agent_words
fm sim destroy "$G" >/dev/null 2>&1

# --- SIGTERM from libxl mid-stream ---------------------------------------------
SLOW="--max-bandwidth 8M --compress none --threads 2"
G=$(new_guest 64M random)
term_case() {  # term_case save|restore: SIGTERM that helper after 3 progress messages
  FASTMIG_HELPER_SIM_DOMAIN=$G FASTMIG_HELPER_OPTIONS="$SLOW" \
    "$FAKE" --helper "$HELPER" --term-$1-after 3 pair >"$T/t.out" 2>&1 || { cat "$T/t.out"; return 1; }
  cat "$T/t.out"
  has "$T/t.out" "$1 failed: .*interrupted: SIGTERM" && has "$T/t.out" "save: complete retval=-1" &&
    has "$T/t.out" "restore: complete retval=-1" && [ "$(state "$G")" = running ] && [ -z "$(incoming)" ]
}
ok "SIGTERM to the save helper mid-stream: source running, no half domain at the destination" -- term_case save
ok "SIGTERM to the restore helper mid-stream: half-built domain destroyed, source running" -- term_case restore
fm sim destroy "$G" >/dev/null 2>&1

done_testing
exit 0
