#!/bin/bash
# kvm-probe.sh: how far do a plain Linux kernel and Xen get under this
# machine's /dev/kvm, per QEMU CPU model? Evidence for README.md's
# "KVM or TCG" section; not part of nested-check.
#
#   kvm-probe.sh [SECONDS_PER_TRY] [CPU_MODEL ...]
#
# For each model it boots, each for at most SECONDS_PER_TRY (default 60):
#   linux  the image's kernel directly (no Xen), init=fastmig-dom0-init,
#          which powers off at once when there is no job disk
#   xen    Xen with dom0, as boot.sh -a kvm does (rdssp patched to NOPs)
# and prints the outcome and the last line the guest printed. One QEMU at
# a time; every QEMU is ended by `timeout`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
per=${1:-60}
shift || true
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(host,-arch-capabilities qemu64 Haswell-noTSX Skylake-Client-noTSX-IBRS EPYC)
[[ -w /dev/kvm ]] || { echo "kvm-probe: /dev/kvm not usable" >&2; exit 1; }
img=$("$here/build-image.sh")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The same rdssp patch as boot.sh (see there for why).
python3 - "$img/xen.elf" "$out/xen-kvm.elf" <<'PY'
import re, sys
d = bytearray(open(sys.argv[1], 'rb').read())
for pat, nop in ((rb'\xf3[\x40-\x4f]\x0f\x1e[\xc8-\xcf]', b'\x0f\x1f\x44\x00\x00'),
                 (rb'\xf3\x0f\x1e[\xc8-\xcf]', b'\x0f\x1f\x40\x00')):
    for m in re.finditer(pat, bytes(d)):
        d[m.start():m.start() + len(nop)] = nop
open(sys.argv[2], 'wb').write(d)
PY
common=(-enable-kvm -m 2048 -smp 2 -nographic -display none -monitor none -no-reboot -nic none
        -drive "file=$img/rootfs.img,if=virtio,format=raw,snapshot=on")
# Last printable line (SeaBIOS's screen-clearing escapes removed).
lastline() { tr -d '\r' <"$1" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' | grep -a -v '^\s*$' | tail -n1 | cut -c1-110; }
printf '%-28s %-6s %-8s %s\n' cpu what result "last line on the console"
for m in "${models[@]}"; do
  for what in linux xen; do
    log=$out/$what.log
    : >"$log"
    if [[ $what == linux ]]; then
      args=(-kernel "$img/vmlinuz" -initrd "$img/initrd.img"
            -append "root=/dev/vda ro console=ttyS0 init=/sbin/fastmig-dom0-init")
    else
      args=(-kernel "$out/xen-kvm.elf"
            -append "console=com1 com1=115200,8n1 loglvl=all cet=no-shstk,no-ibt dom0_mem=512M,max:512M bootscrub=0"
            -initrd "$img/vmlinuz root=/dev/vda ro console=hvc0 earlyprintk=xen init=/sbin/fastmig-dom0-init,$img/initrd.img")
    fi
    t0=$SECONDS rc=0
    timeout "$per" qemu-system-x86_64 "${common[@]}" -cpu "$m" -serial "file:$log" "${args[@]}" \
      >"$out/qemu.out" 2>&1 || rc=$?
    if grep -q 'FASTMIG-DOM0: powering off' "$log"; then res="ok:$((SECONDS - t0))s"
    elif grep -q 'emulation failure' "$out/qemu.out"; then res=emulfail
    elif [[ $rc == 124 ]]; then res="timeout"
    else res="exit:$rc"; fi
    printf '%-28s %-6s %-8s %s\n' "$m" "$what" "$res" "$(lastline "$log")"
    if [[ $res == exit:* ]]; then
      grep -v '^$' "$out/qemu.out" | tail -n2 | sed 's/^/    qemu: /'
    fi
  done
done
