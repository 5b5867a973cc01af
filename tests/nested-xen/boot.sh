#!/bin/bash
# boot.sh: boot the nested Xen host in QEMU, let dom0 run the job disk,
# wait for it to power off, and bring the results back.
#
#   boot.sh [-a tcg|kvm] [-m MIB] [-t JOB_SECONDS] IMAGE_DIR JOB.img OUTDIR
#
# -a  accelerator. tcg (default) works here. kvm is kept for machines whose
#     /dev/kvm runs a 64-bit hypervisor properly; see README.md for what
#     it does on this one (it needs Xen's CET probes patched to NOPs, done
#     on a copy of xen.elf in OUTDIR, and then crawls).
# -m  RAM of the nested host in MiB (default 4096; dom0 takes 1024 of it).
# -t  time the job may take, in seconds (default 3000).
#
# QEMU runs Xen as the multiboot kernel (xen.elf) with dom0's kernel and
# initrd as modules; disk 1 is the root filesystem image (snapshot=on: the
# cached image is never written), disk 2 the job disk. Serial console (Xen
# and dom0's hvc0) goes to OUTDIR/serial.log. Every phase has its own
# time limit; on any failure or on exit QEMU is killed, so nothing is left
# running. The results directory of the job disk is copied to
# OUTDIR/results with debugfs (no mount needed).
# Env: FASTMIG_NESTED_XEN boots another hypervisor than the image's: a
#        directory made by build-xen-shadow.sh (xen.elf, xen-version, config),
#        or its xen.elf; it must be the image's Xen version (dom0's tools are
#        the image's). Which one booted, its banner and xl info's virt_caps
#        go to OUTDIR/hypervisor.txt; when its config has shadow paging,
#        virt_caps must say "shadow" or the run fails;
#      FASTMIG_NESTED_CPU replaces the CPU model (TCG) below;
#      FASTMIG_NESTED_XEN_ARGS / FASTMIG_NESTED_DOM0_ARGS add options;
#      T_XEN, T_DOM0, T_OFF override the phase limits (seconds).
set -euo pipefail

# --- The nested host's CPU and Xen's options: the one place they are set ---
# TCG CPU model: qemu64 plus the SSE levels Debian's kernel and Xen like,
# PCLMULQDQ (every x86 server since 2010 has it; ISA-L's CRC needs it for
# its fast path, the table fallback is ~10x slower under TCG), and AMD SVM
# with nested page tables (+svm,+npt): Xen 4.17 then logs "HVM: SVM
# enabled" and offers HVM and PVH guests (xl info's virt_caps "pv hvm hap
# shadow"); PV guests do not use it. QEMU 7.2's TCG emulates no other SVM
# feature (it drops nrip-save, vmcb-clean, ... with a warning) and Xen needs
# none. -cpu max made dom0 fault early; EPYC makes Xen panic in mwait_idle
# (README.md, "PVH and HVM guests", has the probes).
NESTED_CPU_TCG='qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+pclmulqdq,+svm,+npt'
# Xen: serial console, everything logged with timestamps, dom0 fixed at 1 GiB
# (the rest is for guests), no boot-time scrubbing (slow under emulation).
# Paging stays Xen's choice (HAP where NPT is offered): the job picks shadow
# paging per guest (job/run.sh, GUEST_HAP), so both stay testable in a boot.
NESTED_XEN_ARGS='console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all console_timestamps=boot dom0_mem=1024M,max:1024M bootscrub=0'

accel=tcg mem=4096 tjob=3000
while getopts "a:m:t:" o; do
  case $o in
    a) accel=$OPTARG ;;
    m) mem=$OPTARG ;;
    t) tjob=$OPTARG ;;
    *) echo "usage: boot.sh [-a tcg|kvm] [-m MIB] [-t SECONDS] IMAGE_DIR JOB.img OUTDIR" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 3 ]] || { echo "usage: boot.sh [-a tcg|kvm] [-m MIB] [-t SECONDS] IMAGE_DIR JOB.img OUTDIR" >&2; exit 2; }
img=$1 job=$2 out=$3

log() { printf '[boot %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
command -v debugfs >/dev/null || die "debugfs missing (apt-get install e2fsprogs)"
for f in xen.elf vmlinuz initrd.img rootfs.img; do
  [[ -f $img/$f ]] || die "$img/$f missing: build the image first (build-image.sh)"
done
[[ -f $job ]] || die "job disk $job missing (make-job.sh)"
mkdir -p "$out"
serial=$out/serial.log
: >"$serial"

# The image's Xen, or FASTMIG_NESTED_XEN's of the same version.
xv=$(cat "$img/xen-version" 2>/dev/null || echo 4.17)   # 4.17 before images recorded it
xen=$img/xen.elf xen_config= xen_from=image
if [[ -n ${FASTMIG_NESTED_XEN:-} ]]; then
  if [[ -d $FASTMIG_NESTED_XEN ]]; then xd=$FASTMIG_NESTED_XEN xen=$FASTMIG_NESTED_XEN/xen.elf
  else xen=$FASTMIG_NESTED_XEN xd=$(dirname "$FASTMIG_NESTED_XEN"); fi
  [[ -f $xen ]] || die "FASTMIG_NESTED_XEN=$FASTMIG_NESTED_XEN: no $xen (build-xen-shadow.sh makes one)"
  [[ $(head -c4 "$xen" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] || die "FASTMIG_NESTED_XEN: $xen is not an ELF file (a decompressed xen.gz)"
  fxv=$(cat "$xd/xen-version" 2>/dev/null) || die "FASTMIG_NESTED_XEN: no $xd/xen-version, so its Xen version is unknown"
  [[ $fxv == "$xv" ]] || die "FASTMIG_NESTED_XEN is Xen $fxv but the image's tools are $xv"
  [[ -f $xd/config ]] && xen_config=$xd/config
  xen_from="FASTMIG_NESTED_XEN ($(cat "$xd/source" 2>/dev/null || echo "source unknown"))"
fi
{ echo "hypervisor: $xen"; echo "from: $xen_from"; echo "sha256: $(sha256sum <"$xen" | cut -c1-16)"; } >"$out/hypervisor.txt"
log "hypervisor: $xen ($xen_from)"
xen_args=$NESTED_XEN_ARGS
case $accel in
  tcg)
    accel_args=(-accel tcg,thread=multi -cpu "${FASTMIG_NESTED_CPU:-$NESTED_CPU_TCG}")
    : "${T_XEN:=120}" "${T_DOM0:=600}"
    ;;
  kvm)
    [[ -w /dev/kvm ]] || die "/dev/kvm not usable"
    # -arch-capabilities: QEMU cannot set MSR 0x10a here. Xen 4.17 reads the
    # shadow-stack pointer (rdssp) unconditionally in early code; it is a NOP
    # without CET, but this KVM's instruction emulator rejects it
    # ("emulation failure"), so the copy we boot has those replaced by NOPs
    # of the same length. cet=no-shstk,no-ibt keeps Xen from enabling CET.
    accel_args=(-enable-kvm -cpu host,-arch-capabilities)
    xen_src=$xen xen=$out/xen-kvm.elf
    python3 - "$xen_src" "$xen" <<'PY'
import re, sys
d = bytearray(open(sys.argv[1], 'rb').read())
n = 0
for pat, nop in ((rb'\xf3[\x40-\x4f]\x0f\x1e[\xc8-\xcf]', b'\x0f\x1f\x44\x00\x00'),  # rdsspq r64
                 (rb'\xf3\x0f\x1e[\xc8-\xcf]', b'\x0f\x1f\x40\x00')):                 # rdsspd r32
    for m in re.finditer(pat, bytes(d)):
        d[m.start():m.start() + len(nop)] = nop
        n += 1
open(sys.argv[2], 'wb').write(d)
print(f"patched {n} rdssp instructions", file=sys.stderr)
PY
    xen_args+=" cet=no-shstk,no-ibt"
    : "${T_XEN:=300}" "${T_DOM0:=1800}"
    ;;
  *) die "accelerator must be tcg or kvm" ;;
esac
: "${T_OFF:=120}"
xen_args+=" ${FASTMIG_NESTED_XEN_ARGS:-}"
# dom0: our init instead of systemd (see dom0/fastmig-dom0-init).
dom0_args="root=/dev/vda ro console=hvc0 earlyprintk=xen init=/sbin/fastmig-dom0-init fastmig.timeout=$tjob ${FASTMIG_NESTED_DOM0_ARGS:-}"
[[ $dom0_args != *,* ]] || die "dom0 options may not contain ',' (QEMU's multiboot module separator)"

qemu=(qemu-system-x86_64 "${accel_args[@]}" -m "$mem" -smp 2
      -nographic -display none -monitor none -no-reboot -nic none
      -serial "file:$serial"
      -kernel "$xen" -append "$xen_args"
      -initrd "$img/vmlinuz $dom0_args,$img/initrd.img"
      -drive "file=$img/rootfs.img,if=virtio,format=raw,snapshot=on"
      -drive "file=$job,if=virtio,format=raw")
printf '%q ' "${qemu[@]}" >"$out/qemu-cmdline.txt"

qpid=
stop_qemu() {
  if [[ -n $qpid ]] && kill -0 "$qpid" 2>/dev/null; then
    log "stopping QEMU (pid $qpid)"
    kill -TERM "$qpid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
}
trap stop_qemu EXIT
trap 'exit 130' INT TERM

t0=$(date +%s.%N)
since() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
log "starting QEMU ($accel, ${mem} MiB); serial log: $serial"
"${qemu[@]}" >"$out/qemu.out" 2>&1 &
qpid=$!

# Wait for a line matching $2 in the serial log within $3 seconds; fail
# early on a crash pattern or if QEMU died.
phase() {
  local name=$1 pat=$2 limit=$3 start=$SECONDS
  while :; do
    if grep -qE "$pat" "$serial"; then
      log "$name after $(since)s"
      echo "$name $(since)" >>"$out/boot-timings.txt"
      return 0
    fi
    local crash
    crash=$(grep -m1 -E 'Panic on CPU|Kernel panic|FATAL TRAP|Xen BUG|general protection fault' "$serial" || true)
    if [[ -n $crash ]] || grep -q 'emulation failure' "$out/qemu.out"; then
      log "tail of serial log:"; tail -n 30 "$serial" >&2
      log "tail of QEMU output:"; grep -v '^$' "$out/qemu.out" | tail -n 15 >&2
      die "phase '$name': crash seen: ${crash:-KVM emulation failure (see $out/qemu.out)}"
    fi
    if ! kill -0 "$qpid" 2>/dev/null; then
      log "tail of serial log:"; tail -n 30 "$serial" >&2
      grep -v '^$' "$out/qemu.out" | tail -n 15 >&2
      die "phase '$name': QEMU exited before '$pat'"
    fi
    if (( SECONDS - start > limit )); then
      log "tail of serial log:"; tail -n 30 "$serial" >&2
      die "phase '$name': no '$pat' within ${limit}s"
    fi
    sleep 1
  done
}
: >"$out/boot-timings.txt"
phase xen-banner "Xen version ${xv//./\\.}" "$T_XEN"
echo "banner: $(grep -m1 -oE 'Xen version [^ ]+ \([^)]*\)' "$serial")" >>"$out/hypervisor.txt"
phase dom0-kernel 'Linux version' "$T_DOM0"
phase dom0-init 'FASTMIG-DOM0: up' "$T_DOM0"
# dom0 stops the job itself at $tjob (then kills it 10 s later) and still
# writes rc and powers off: wait for that, so a job that ran out of time
# leaves its finished runs readable.
phase job-done 'FASTMIG-DOM0: job finished' "$((tjob + 60))"
# QEMU's peak resident memory on the host, read before it exits.
hwm=$(awk '/VmHWM/{print int($2/1024)}' "/proc/$qpid/status" 2>/dev/null || echo NA)
echo "qemu-peak-rss-mib ${hwm:-NA}" >>"$out/boot-timings.txt"
phase power-off 'FASTMIG-DOM0: powering off' "$T_OFF"
end=$((SECONDS + T_OFF))
while kill -0 "$qpid" 2>/dev/null && (( SECONDS < end )); do sleep 1; done
kill -0 "$qpid" 2>/dev/null && die "QEMU still running ${T_OFF}s after dom0 powered off"
wait "$qpid" || log "QEMU exit status $?"
qpid=
echo "qemu-exit $(since)" >>"$out/boot-timings.txt"
log "QEMU exited after $(since)s; its peak RSS was ${hwm:-NA} MiB"

rm -rf "$out/results"
# Replay the job disk's journal first: debugfs reads only what is
# checkpointed, and the files dom0 wrote last (rc, the failing step's
# logs, logs/) can still be in the journal only (seen after a failed job:
# rc "missing" and no logs/ until e2fsck had replayed it). 0 and 1
# (corrected) are both fine here.
e2fsck -fy "$job" >"$out/job-fsck.txt" 2>&1 || (( $? <= 1 )) \
  || log "e2fsck of $job says $(tail -n1 "$out/job-fsck.txt"); reading it anyway"
debugfs -R "rdump /results $out" "$job" >/dev/null 2>&1 || die "could not read results from $job"
# Which hypervisor ran, as dom0's xl saw it; a shadow-paging build that
# does not offer shadow paging is not the hypervisor this run was meant for.
caps=$(awk -F': *' '/^virt_caps/ { print $2; exit }' "$out/results/xl-info.txt" 2>/dev/null || true)
xver=$(awk -F': *' '/^xen_(major|minor|extra)/ { v = v $2 (/major/ ? "." : "") } END { print v }' "$out/results/xl-info.txt" 2>/dev/null || true)
echo "xl info: xen $xver; virt_caps: ${caps:-unknown}" >>"$out/hypervisor.txt"
log "$(sed -n 's/^banner: //p' "$out/hypervisor.txt"); xl info: xen $xver, virt_caps: ${caps:-unknown}"
if [[ -n $xen_config ]] && grep -qx 'CONFIG_SHADOW_PAGING=y' "$xen_config"; then
  [[ " $caps " == *" shadow "* ]] || die "$xen was built with shadow paging but virt_caps is '${caps:-unknown}'"
fi
rc=$(cat "$out/results/rc" 2>/dev/null || echo missing)
log "job exit code: $rc; results in $out/results"
[[ $rc == 0 ]] || die "the job in dom0 failed (rc=$rc); see $out/results/run.log and $serial"
