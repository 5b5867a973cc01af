#!/bin/bash
# make-job.sh: make the job disk that dom0 of the nested Xen host runs.
#
#   make-job.sh IMAGE_DIR OUT.img [NAME=VALUE ...]
#
# The disk (ext4, made with mkfs.ext4 -d, no loop mount) holds:
#   run.sh             the dom0 test (job/run.sh)
#   params             NAME=VALUE lines given here (see job/run.sh)
#   guest-initrd.img   the PV test guest's root: busybox + xen-netfront.ko
#                      from the image (they must match its kernel), our
#                      guest/init and guest/memwriter (compiled here, static)
#   results/           empty; dom0 writes into it, the host reads it back
#                      with debugfs (boot.sh)
# It is rebuilt every run: it is small and cheap (about a second).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[make-job %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $# -ge 2 ]] || die "usage: make-job.sh IMAGE_DIR OUT.img [NAME=VALUE ...]"
img=$1 out=$2
shift 2
[[ -f $img/.done ]] || die "$img is not a built image (run build-image.sh)"
for t in gcc cpio gzip mkfs.ext4; do
  command -v "$t" >/dev/null || die "missing tool '$t'"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The guest's root filesystem, as an initramfs.
g=$work/guest
mkdir -p "$g"/{bin,proc,sys,dev,tmp,lib/modules}
cp "$img/guest-parts/busybox" "$g/bin/busybox"
[[ -f $img/guest-parts/xen-netfront.ko ]] && cp "$img/guest-parts/xen-netfront.ko" "$g/lib/modules/"
gcc -O2 -static -Wall -Wextra -o "$g/bin/memwriter" "$here/guest/memwriter.c" \
  || die "compiling memwriter failed (static glibc comes with libc6-dev)"
install -m 0755 "$here/guest/init" "$g/init"

j=$work/job
mkdir -p "$j/results"
(cd "$g" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$j/guest-initrd.img"
install -m 0755 "$here/job/run.sh" "$j/run.sh"
: >"$j/params"
for kv in "$@"; do
  [[ $kv =~ ^[A-Z_][A-Z0-9_]*=[-A-Za-z0-9_.\ ]*$ ]] || die "bad parameter '$kv' (NAME=VALUE)"
  printf '%s="%s"\n' "${kv%%=*}" "${kv#*=}" >>"$j/params"
done

# Room for results (ping logs at 1 kHz are the bulk); sparse on the host.
rm -f "$out"
mkfs.ext4 -q -F -L fastmigjob -d "$j" "$out" 512M >/dev/null || die "mkfs.ext4 -d failed"
log "job disk $out ($(du -h "$j/guest-initrd.img" | cut -f1) guest initrd; params: $*)"
