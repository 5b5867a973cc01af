#!/bin/sh
# fastmig-emu-manager, driven through its two control pipes by a fake
# xenopsd (fake_xenopsd: the suspend image's framing written and read byte
# by byte, the control lines answered) on sim domains: no Xen needed.  TAP.
. "${top_srcdir:-.}/tests/integration/lib.sh"
B=$(dirname "$FASTMIG_BIN")
EMU=$B/libxl-plugin/fastmig-emu-manager
FAKE=$B/tests/xapi/fake_xenopsd
export FASTMIG_HELPER_BACKEND=sim
export FASTMIG_EMU_MANAGER_CONF=$WORK/none.conf   # never the host's
export FASTMIG_STOCK_EMU_MANAGER=${top_srcdir:-.}/tests/xapi/fake_stock_emu_manager.py
export FAKE_STOCK_LOG=$WORK/stock.log
T=$WORK

has() { grep -q -- "$2" "$1"; }
state() { fm sim info "$1" | sed -n 's/^state: //p'; }
incoming() { fm sim list | awk '$NF == "incoming" {print $1}'; }
new_guest() { fm sim create --memory "$1" --workload "$2" --seed 7; }
num() { echo "${1#sim:}"; }
drop_incoming() { for d in $(incoming); do fm sim destroy "$d" >/dev/null 2>&1; done; }
run() {  # run OUT ARGS...: the fake xenopsd, transcript in OUT and on stdout
  out=$1; shift
  "$FAKE" --emu "$EMU" "$@" >"$out" 2>&1; rc=$?
  cat "$out"; [ $rc -eq 0 ]
}

# --- the command line ----------------------------------------------------------
supports() { [ "$("$EMU" -supports migration-v2)" = true ] && [ "$("$EMU" --supports=other)" = false ]; }
ok "-supports migration-v2 answers true (getopt_long_only: --x=v too)" -- supports
usage() { "$EMU" "$@" >"$T/u.out" 2>&1; [ $? -eq 1 ] && has "$T/u.out" usage; }
ok "bad argv: an unknown option is exit 1 with usage" -- usage -controloutfd 1 -controlinfd 0 -fd 2 -bogus 1
ok "bad argv: restore without -store_port is exit 1" -- usage -controloutfd 1 -controlinfd 0 -fd 2 -mode hvm_restore -domid 3
ok "bad argv: -mode nonsense is exit 1" -- usage -controloutfd 1 -controlinfd 0 -fd 2 -mode migrate -domid 3
bad_fd() {  # a stream file opened read-write (seekable, not O_APPEND): refused, error line
  : >"$T/rw.img"
  "$EMU" -controloutfd 1 -controlinfd 0 -fd 5 -mode hvm_save -domid 3 5<>"$T/rw.img" >"$T/b.out" 2>&1; rc=$?
  cat "$T/b.out"; [ $rc -eq 1 ] && has "$T/b.out" "^error:fastmig domain 3: setup: -fd 5 must be .*O_APPEND"
}
ok "a seekable read-write stream fd is refused (exit 1, error line)" -- bad_fd

# --- live migration through socketpairs ----------------------------------------
G=$(new_guest 64M web)
# --max-bandwidth 40M stretches precopy to about a second, so that the
# progress check below sees several lines (one per 100 ms at most); unlimited,
# the 64 MiB went in ~200 ms and CI once saw only "info 99" before the suspend.
migrate() {
  FASTMIG_HELPER_OPTIONS="--threads 2 --no-free-hints --max-bandwidth 40M" run "$T/m.out" migrate --domid "$G" --live || return 1
  D=$(incoming)
  has "$T/m.out" "save: result:0 0 -> Qemu record and End written" && has "$T/m.out" "restore: result:xenguest 0 0" &&
    has "$T/m.out" "restore: Qemu record intact" && has "$T/m.out" "restore: End read" &&
    has "$T/m.out" "save: exit 0" && has "$T/m.out" "restore: exit 0" &&
    has "$T/m.out" "save: suspend: guest=running -> suspended" &&
    [ -n "$D" ] && [ "$(fm sim checksum "$G")" = "$(fm sim checksum "$D")" ]
}
ok "migrate (live): framing around the body intact, destination bit-exact" -- migrate
progress() {  # several progress lines, rising, the last 100, none after the result
  [ "$(grep -c 'save: info ' "$T/m.out")" -ge 3 ] && grep 'save: info ' "$T/m.out" | tail -1 | grep -q 'info 100$' &&
    awk '/save: prepare:xenguest/ {p=NR} /save: info/ && !f {f=NR} /save: suspend:/ {s=NR} /save: result/ {r=NR}
         /save: info/ {l=NR} END {exit !(p && f > p && s > f && r > s && l < r)}' "$T/m.out"
}
ok "migrate: progress lines move (prepare, info..., suspend, info 100, result)" -- progress
restore_progress() {  # the destination's lines too (the fake checks each rises): 100 before the result
  grep -q 'restore: result:xenguest 0 0 after [0-9]* progress lines, the last 100$' "$T/m.out"
}
ok "migrate: the restoring side's progress lines rise to 100 before its result" -- restore_progress
runs() { D=$(incoming); fm sim resume "$D" && [ "$(state "$D")" = running ]; }
ok "migrate: the destination runs once xenopsd unpauses it" -- runs
fm sim destroy "$G" >/dev/null 2>&1; drop_incoming

# --- suspend to an O_APPEND file, resume from it -------------------------------
G=$(new_guest 32M web)
suspend_file() {
  FASTMIG_HELPER_OPTIONS="--no-free-hints" run "$T/s.out" save --domid "$G" --out "$T/s.img" || return 1
  has "$T/s.out" "save: saved" && has "$T/s.out" "save: exit 0" && [ "$(state "$G")" = paused ] &&
    head -c 15 "$T/s.img" | grep -q XenSavedDomv2 &&
    python3 - "$T/s.img" <<'PY'
import struct, sys
b = open(sys.argv[1], 'rb').read()
assert b[:15] == b'XenSavedDomv2-\n'
t, n = struct.unpack_from('<QQ', b, 15); assert t == 0x0f, t
off = 31 + n
t, n = struct.unpack_from('<QQ', b, off); assert (t, n) == (0xf0, 0), (t, n)
assert b[off + 16:off + 24] == b'FMIG\r\nS\0', b[off + 16:off + 24]
assert b[-16:] == struct.pack('<QQ', 0xffff, 0)
PY
}
ok "suspend to an O_APPEND file: signature, Xenops, Libxc header, fastmig body, ..., End" -- suspend_file
resume_file() {
  run "$T/r.out" restore --in "$T/s.img" || return 1
  D=$(incoming)
  has "$T/r.out" "restore: result:xenguest 0 0" && has "$T/r.out" "restore: Qemu record intact" &&
    has "$T/r.out" "restore: End read" && has "$T/r.out" "restore: exit 0" &&
    [ "$(fm sim checksum "$G")" = "$(fm sim checksum "$D")" ]
}
ok "restore from the file: bit-exact, the Qemu record after the body byte-exact" -- resume_file
resume_progress() {  # progress-interval-ms 0: every change goes out
  drop_incoming
  FASTMIG_EMU_PROGRESS_MS=0 run "$T/rp.out" restore --in "$T/s.img" || return 1
  [ "$(grep -c 'restore: info ' "$T/rp.out")" -ge 10 ] && has "$T/rp.out" "restore: exit 0" &&
    grep -q 'restore: result:xenguest 0 0 after [0-9]* progress lines, the last 100$' "$T/rp.out"
}
ok "restore, interval 0: a progress line for each change, rising, 100 before the result" -- resume_progress
resume_rate_limited() {  # a 60 s interval: 0 at the start, at most one more, then 100
  drop_incoming
  FASTMIG_EMU_PROGRESS_MS=60000 run "$T/rl.out" restore --in "$T/s.img" || return 1
  n=$(grep -c 'restore: info ' "$T/rl.out")
  [ "$n" -ge 2 ] && [ "$n" -le 3 ] && has "$T/rl.out" "restore: info 0$" &&
    grep -q 'the last 100$' "$T/rl.out"
}
ok "restore, progress-interval-ms 60000: rate-limited (0, at most one more, 100)" -- resume_rate_limited
# xenguest's restore side effects from the VM's platform/ keys: the sim
# backend reads them from a file in place of xenstore, checks them as on Xen
# and logs what it would apply (restore_platform.hpp; the Xen calls
# themselves need Xen).
platform() {  # platform OUT KEYS...: a restore of s.img with those keys
  out=$1; shift
  drop_incoming
  printf '%s\n' "$@" >"$T/platform"
  FASTMIG_HELPER_SIM_PLATFORM=$T/platform run "$out" restore --in "$T/s.img"
}
platform_applied() {
  platform "$T/p.out" "hpet = 0" "timeoffset = -3600" "vcpu/number = 2" "vcpu/0/affinity = 0110" \
    "vcpu/1/affinity = 1" "vcpu/weight = 512" "vcpu/cap = 50" "generation-id = 123:456" || return 1
  has "$T/p.out" "platform, not applied: before the stream: hpet off, time offset -3600 s, vcpu 0 on pcpus 1-2, vcpu 1 on pcpus 0, weight 512, cap 50, generation id 123:456" &&
    has "$T/p.out" "platform, not applied: built: generation id 123:456" &&
    has "$T/p.out" "restore: result:xenguest 0 0" && has "$T/p.out" "restore: Qemu record intact" &&
    has "$T/p.out" "restore: exit 0"
}
ok "restore: the VM's platform keys (HPET, time offset, affinity, weight, cap, generation id) reach the backend" -- platform_applied
platform_defaults() {  # no keys: HPET on (xenguest's default), nothing else
  platform "$T/pd.out" || return 1
  has "$T/pd.out" "platform, not applied: before the stream: hpet on, time offset 0 s$" &&
    ! has "$T/pd.out" "generation id" && has "$T/pd.out" "restore: exit 0"
}
ok "restore without platform keys: HPET on, no generation id" -- platform_defaults
platform_bad_key() {  # refused by name before the body is read; nothing built
  platform "$T/pb.out" "vcpu/weight = lots"
  has "$T/pb.out" "restore: error:fastmig restore domain [0-9]*: setup: platform/vcpu/weight = \"lots\": not a number" &&
    has "$T/pb.out" "restore: exit 2" && [ -z "$(incoming)" ]
}
ok "restore: a malformed platform key is an error naming it, before any page" -- platform_bad_key
platform_bad_genid() {  # xenguest's set_genid refuses a half 0 after the body; here before it
  platform "$T/pg.out" "generation-id = 0:5"
  has "$T/pg.out" "restore: error:fastmig restore domain [0-9]*: setup: platform/generation-id = \"0:5\": not a valid generation id" &&
    has "$T/pg.out" "restore: exit 2" && ! has "$T/pg.out" "result:xenguest" && ! has "$T/pg.out" "Qemu record" &&
    [ -z "$(incoming)" ]
}
ok "restore: an invalid generation id is refused before the body, naming it, no result" -- platform_bad_genid
drop_incoming; fm sim destroy "$G" >/dev/null 2>&1

# xenopsd goes on when the process it started exits; the worker's teardown
# comes after (helper_supervisor.hpp).  A failpoint holds the worker 3 s
# past its hand-over: the fake xenopsd must be done, the worker still alive.
handover() {  # handover OUT ARGS...
  out=$1; shift
  FASTMIG_FAILPOINTS=emu:after-handover=sleep:3000 run "$out" "$@" || return 1
  for w in $(sed -n 's/.*worker pid \([0-9]*\) (its teardown continues.*/\1/p' "$out"); do
    kill -0 "$w" 2>/dev/null || { echo "worker $w already gone"; return 1; }
    while kill -0 "$w" 2>/dev/null; do sleep 0.2; done
  done
  [ "$(grep -c 'worker pid [0-9]* (its teardown continues' "$out")" -ge 1 ]
}
G=$(new_guest 32M web)
handover_save() { handover "$T/h.out" save --domid "$G" --out "$T/h.img" && has "$T/h.out" "save: exit 0"; }
ok "save: the drop-in exits once xenopsd has the result, its worker tears down after" -- handover_save
handover_restore() {
  handover "$T/hr.out" restore --in "$T/h.img" && has "$T/hr.out" "restore: Qemu record intact" &&
    has "$T/hr.out" "restore: exit 0"
}
ok "restore: the same, and the Qemu record after the body still intact" -- handover_restore
drop_incoming; fm sim destroy "$G" >/dev/null 2>&1

# --- abort and timeouts ----------------------------------------------------------
SLOW="--max-bandwidth 8M --compress none --threads 2"
G=$(new_guest 64M random)
abort_case() {
  FASTMIG_HELPER_OPTIONS="$SLOW" run "$T/a.out" migrate --domid "$G" --live --abort-after-info 2 || return 1
  has "$T/a.out" "save: sending abort" && has "$T/a.out" "save: error:fastmig save domain $(num $G) ($G): precopy: .*abort" &&
    has "$T/a.out" "save: exit 2" && ! has "$T/a.out" "save: suspend:" && [ "$(state "$G")" = running ] &&
    [ -z "$(incoming)" ]
}
ok "abort mid-precopy: error line, exit 2, source running, nothing left at the destination" -- abort_case
no_done() {  # no_done PHASE: xenopsd never answers; the drop-in gives up after the bound
  FASTMIG_EMU_DONE_TIMEOUT_MS=1500 FASTMIG_HELPER_OPTIONS="--no-free-hints" \
    run "$T/n.out" save --domid "$G" --live --out "$T/n.img" --no-done "$1" || return 1
  has "$T/n.out" "save: error:fastmig save domain $(num $G) ($G): .*no answer from xenopsd to '$1.*' within 1500 ms" &&
    has "$T/n.out" "save: exit 2" && [ "$(state "$G")" = running ]
}
ok "xenopsd never answers prepare: timeout, clear error, source running" -- no_done prepare
no_done_suspend() {
  no_done suspend && has "$T/n.out" "save: suspend: guest=running (not answering)" &&
    has "$T/n.out" "save: error:.*stop-and-copy: no answer from xenopsd to .suspend:. within 1500 ms; the domain was resu"
}
ok "xenopsd never answers suspend: timeout, clear error, source resumed and running" -- no_done_suspend
bad_timeout() {
  FASTMIG_EMU_DONE_TIMEOUT_MS=soon run "$T/bt.out" save --domid "$G" --out "$T/bt.img" || return 1
  has "$T/bt.out" "error:fastmig domain $(num $G): setup: FASTMIG_EMU_DONE_TIMEOUT_MS=soon is not" &&
    has "$T/bt.out" "save: exit 1" && [ "$(state "$G")" = running ]
}
ok "a malformed FASTMIG_EMU_DONE_TIMEOUT_MS is refused before anything happens" -- bad_timeout
fm sim destroy "$G" >/dev/null 2>&1

# --- damaged bodies ----------------------------------------------------------------
G=$(new_guest 64M web)
damaged() {  # damaged OUT FAKEOPT VALUE: a migration whose stream is damaged on the way
  FASTMIG_HELPER_OPTIONS="--threads 2 --no-free-hints --compress none" \
    run "$1" migrate --domid "$G" --live "$2" "$3" || return 1
  has "$1" "restore: error:fastmig restore domain 77" && has "$1" "restore: exit 2" &&
    has "$1" "save: error:fastmig save domain $(num $G) ($G): " && has "$1" "save: exit 2" &&
    [ "$(state "$G")" = running ] && [ -z "$(incoming)" ]
}
# 1 MiB into the image: inside the first round's pages.
corrupt() { damaged "$T/c.out" --corrupt-at 1048576 && has "$T/c.out" "restore: error:.*\(malformed\|CRC\|crc\)"; }
ok "corrupt body in flight: destination error names it, source error, source running, nothing built" -- corrupt
truncated() {
  damaged "$T/t.out" --cut-at 1048576 &&
    has "$T/t.out" "restore: error:fastmig restore domain 77.*\(closed\|truncated\|ended\)"
}
ok "truncated body in flight: destination error, source error, source running, nothing built" -- truncated
trunc_file() {  # a suspend image cut inside the body
  FASTMIG_HELPER_OPTIONS="--no-free-hints" run "$T/tf.out" save --domid "$G" --out "$T/tf.img" || return 1
  fm sim resume "$G" >/dev/null
  head -c 200000 "$T/tf.img" >"$T/tf2.img"
  run "$T/tf2.out" restore --in "$T/tf2.img" || return 1
  has "$T/tf2.out" "restore: error:fastmig restore domain 77.*receive" && has "$T/tf2.out" "restore: exit 2" &&
    [ -z "$(incoming)" ]
}
ok "truncated suspend image: error line naming domain and phase, nothing built" -- trunc_file
bad_genid_migrate() {  # the destination's VM has a malformed generation id: refused before the
  # body, the source's save fails and its guest was never suspended
  printf '%s\n' "generation-id = 12:x" >"$T/platform-bad"
  FASTMIG_HELPER_SIM_PLATFORM=$T/platform-bad FASTMIG_HELPER_OPTIONS="--threads 2 --no-free-hints" \
    run "$T/bg.out" migrate --domid "$G" --live || return 1
  has "$T/bg.out" "restore: error:fastmig restore domain 77: setup: platform/generation-id = \"12:x\": not two numbers A:B" &&
    has "$T/bg.out" "restore: exit 2" && has "$T/bg.out" "save: exit 2" && ! has "$T/bg.out" "save: suspend:" &&
    [ "$(state "$G")" = running ] && [ -z "$(incoming)" ]
}
ok "migrate: a malformed generation id at the destination is refused before the body, source running" -- bad_genid_migrate
fm sim destroy "$G" >/dev/null 2>&1

# --- the stock path ------------------------------------------------------------------
stock_body() {
  : >"$FAKE_STOCK_LOG"
  "$FAKE" stock-image "$T/stock.img" && run "$T/sb.out" restore --in "$T/stock.img" || return 1
  cat "$FAKE_STOCK_LOG"
  has "$T/sb.out" "restore: result:xenguest 7 8" && has "$T/sb.out" "restore: Qemu record intact" &&
    has "$T/sb.out" "restore: exit 0" &&
    has "$FAKE_STOCK_LOG" "^argv -controloutfd [0-9]* -controlinfd [0-9]* -fd [0-9]* -mode hvm_restore -domid 77 -store_port 11 -console_port 12$" &&
    has "$FAKE_STOCK_LOG" "^control restore:xenguest$" && has "$FAKE_STOCK_LOG" "^body-starts ffffffffffffffff58454e46$" &&
    has "$FAKE_STOCK_LOG" "^body-read 72 bytes up to END$"
}
ok "a stock libxc body goes to the stock emu-manager: same argv, it reads the body from its first byte" -- stock_body
stock_pv() {  # PV: chosen from argv, before anything is read or written
  : >"$FAKE_STOCK_LOG"
  run "$T/pv.out" save --pv --domid 5 --out "$T/pv.img" || return 1
  cat "$FAKE_STOCK_LOG"
  has "$FAKE_STOCK_LOG" "^argv -controloutfd [0-9]* -controlinfd [0-9]* -fd [0-9]* -mode save -domid 5$" &&
    has "$T/pv.out" "save: exit 0" && has "$FAKE_STOCK_LOG" "body-written 48 bytes" &&
    run "$T/pvr.out" restore --pv --in "$T/pv.img" && has "$T/pvr.out" "restore: Qemu record intact" &&
    has "$FAKE_STOCK_LOG" "^argv .* -mode restore -domid 77 -store_port 11 -console_port 12$"
}
ok "PV save and restore go to the stock emu-manager from argv alone" -- stock_pv
stock_vgpu() {
  : >"$FAKE_STOCK_LOG"
  run "$T/vg.out" save --domid 5 --dm vgpu --out "$T/vg.img" || return 1
  has "$FAKE_STOCK_LOG" "^argv .* -mode hvm_save -domid 5 -dm vgpu$" && has "$T/vg.out" "save: exit 0"
}
ok "-dm vgpu goes to the stock emu-manager" -- stock_vgpu
no_dm() {  # a guest whose class has a device model but xenopsd names none (PVH): fastmig's own path, no QMP
  : >"$FAKE_STOCK_LOG"
  G=$(new_guest 32M web)
  FASTMIG_HELPER_SIM_QEMU=1 FASTMIG_HELPER_OPTIONS="--no-free-hints" run "$T/nd.out" save --domid "$G" --live --out "$T/nd.img" || return 1
  fm sim destroy "$G" >/dev/null 2>&1
  has "$T/nd.out" "save: exit 0" && has "$T/nd.out" "save: result:0 0" && [ ! -s "$FAKE_STOCK_LOG" ] &&
    ! has "$T/nd.out" "dirty logging switched on"
}
ok "live save without -dm (a PVH guest) stays on fastmig's path and asks no QMP" -- no_dm
unopenable() {  # a domain the backend cannot open: the stock emu-manager, same argv, nothing written by fastmig
  : >"$FAKE_STOCK_LOG"
  run "$T/uo.out" save --domid 4321 --live --out "$T/uo.img" || return 1
  cat "$FAKE_STOCK_LOG"
  has "$T/uo.out" "domain 4321: the sim backend cannot take it (.*): running the stock emu-manager" &&
    has "$FAKE_STOCK_LOG" "^argv -controloutfd [0-9]* -controlinfd [0-9]* -fd [0-9]* -mode hvm_save -domid 4321 -live true$" &&
    has "$T/uo.out" "save: exit 0" && has "$FAKE_STOCK_LOG" "body-written 48 bytes" &&
    [ "$(( $(wc -c <"$T/uo.img") ))" -eq $(( 15 + 16 + 34 + 16 + 48 + 16 + 4099 + 16 )) ]
}
ok "a domain the backend cannot open goes to the stock emu-manager before anything is written" -- unopenable
no_stock() {
  FASTMIG_STOCK_EMU_MANAGER=$T/nowhere run "$T/ns.out" save --pv --domid 5 --out "$T/ns.img" || return 1
  has "$T/ns.out" "save: error:fastmig domain 5: setup: a PV guest (-mode save), which fastmig hands to the stock" &&
    has "$T/ns.out" "save: exit 2"
}
ok "no stock emu-manager where configured: a clear error line, exit 2" -- no_stock
conf_file() {
  printf '# test\nstock-emu-manager = %s\n' "$T/from-conf" >"$T/emu.conf"
  FASTMIG_EMU_MANAGER_CONF=$T/emu.conf FASTMIG_STOCK_EMU_MANAGER= run "$T/cf.out" save --pv --domid 5 --out "$T/cf.img" || return 1
  has "$T/cf.out" "exec $T/from-conf failed" &&
    printf 'colour = blue\n' >"$T/bad.conf" &&
    FASTMIG_EMU_MANAGER_CONF=$T/bad.conf run "$T/cf2.out" save --domid 5 --out "$T/cf2.img" &&
    has "$T/cf2.out" "bad.conf:1: unknown key 'colour'" && has "$T/cf2.out" "save: exit 1"
}
ok "the configuration file names the stock emu-manager; an unknown key is refused by line" -- conf_file

done_testing
exit 0
