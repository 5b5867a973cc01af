#!/bin/bash
# build-image.sh: build the nested Xen host image from nothing but Debian's
# packages, without loop mounts, and cache it.
#
# Output (in $FASTMIG_NESTED_CACHE/img-<key>/, <key> = hash of the inputs):
#   xen.elf        the suite's Xen hypervisor (bookworm: 4.17, trixie: 4.20),
#                  decompressed so QEMU's multiboot loader can take it as -kernel
#   vmlinuz        dom0 (and PV guest) Linux kernel
#   initrd.img     dom0 initramfs made by Debian's initramfs-tools
#   rootfs.img     ext4 root filesystem of dom0 (made with mkfs.ext4 -d)
#   guest-parts/   busybox and xen-netfront.ko for the PV test guest's root
#   kernel-version  kernel version, for the record
#   suite, xen-version  the Debian suite and its Xen (make-job.sh, pruning)
#   build.log / timings
# The cache key hashes this script, every file under dom0/ and the suite, so
# editing any of them rebuilds; changing the job scripts (job/, guest/) does not:
# those travel to dom0 on a second disk made per run by make-job.sh.
#
# Usage: build-image.sh [SUITE]    (prints the image directory on stdout)
#        SUITE: bookworm (Debian 12, Xen 4.17; the default) or trixie
#        (Debian 13, Xen 4.20), each with its own dom0 kernel
# Env:   FASTMIG_NESTED_SUITE      SUITE when no argument is given
#        FASTMIG_NESTED_CACHE      cache root (default /var/cache/fastmig-nested)
#        FASTMIG_NESTED_MIRROR     Debian mirror (default: the one apt uses)
#        FASTMIG_NESTED_FORCE=1    rebuild even if cached
#        FASTMIG_NESTED_BUILD_TIMEOUT  limit for debootstrap, s (default 3600:
#                                  it took 238 s on a quiet machine, and over
#                                  1800 s under a load of 14, the kernel's
#                                  initramfs made three times)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${FASTMIG_NESTED_CACHE:-/var/cache/fastmig-nested}
suite=${1:-${FASTMIG_NESTED_SUITE:-bookworm}}

log() { printf '[build-image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Each suite has one Xen; its packages and xen.gz carry the version.
case $suite in
  bookworm) xenver=4.17 ;;
  trixie) xenver=4.20 ;;
  *) die "unknown suite '$suite' (bookworm: Xen 4.17, trixie: Xen 4.20)" ;;
esac

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, device nodes)"
for t in debootstrap mkfs.ext4 sha256sum gzip; do
  command -v "$t" >/dev/null || die "missing tool '$t' (apt-get install debootstrap e2fsprogs)"
done

# The key: the content of every input that ends up in the image.
key=$( (cd "$here" && cat build-image.sh $(find dom0 -type f | LC_ALL=C sort) && echo "$suite") \
       | sha256sum | cut -c1-16)
out=$cache/img-$key
if [[ -f $out/.done && ${FASTMIG_NESTED_FORCE:-0} != 1 ]]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi

# Take the mirror apt is configured with (deb822 or one-line format), so the
# build works wherever apt works; fall back to Debian's default name.
mirror=${FASTMIG_NESTED_MIRROR:-}
if [[ -z $mirror ]]; then
  mirror=$(grep -hoE '(URIs:|^deb) +https?://[^ ]+/debian/?( |$)' \
             /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
           | grep -oE 'https?://[^ ]+' | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
# Clean up the half-built tree on any failure; the chroot's /proc must be
# unmounted first or rm would walk into it.
cleanup() {
  mountpoint -q "$work/root/proc" 2>/dev/null && umount -l "$work/root/proc" || true
  mountpoint -q "$work/root/sys" 2>/dev/null && umount -l "$work/root/sys" || true
  rm -rf "$work"
}
trap cleanup EXIT
exec 3>"$work/build.log"
t0=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - t0 ))s" >>"$work/timings"; log "$1 done at +$(( $(date +%s) - t0 ))s"; }

root=$work/root
# Packages: Xen (hypervisor only for its xen.gz; the tools run in dom0), the
# kernel, and what the dom0 test scripts use (linux-perf: the job's PERF=1
# profile). qemu-system-xen and seabios are the HVM guest's device model
# (/usr/libexec/xen-qemu-system-i386, the path Debian's libxl runs) and its
# BIOS: only Recommends/Suggests of xen-utils-X.Y, which minbase leaves out;
# hvmloader comes with xen-utils-X.Y. minbase keeps it small; we do
# not boot systemd (our own init is faster, which matters under TCG).
pkgs=(linux-image-amd64 initramfs-tools kmod
      "xen-hypervisor-$xenver-amd64" "xen-utils-$xenver" xen-utils-common
      qemu-system-xen seabios
      busybox-static iproute2 iputils-ping procps e2fsprogs util-linux
      coreutils gawk linux-perf)
log "debootstrap $suite from $mirror (log: $work/build.log)"
timeout "${FASTMIG_NESTED_BUILD_TIMEOUT:-3600}" debootstrap --variant=minbase --include="$(IFS=,; echo "${pkgs[*]}")" \
  "$suite" "$root" "$mirror" >&3 2>&1 || die "debootstrap failed, see tail of log:
$(tail -n 30 "$work/build.log")"
stamp debootstrap

kver=$(ls "$root/lib/modules" | sort -V | tail -n1)
[[ -n $kver ]] || die "no kernel installed in the rootfs"
# initramfs-tools normally ran from the kernel's postinst; make sure.
if [[ ! -f $root/boot/initrd.img-$kver ]]; then
  mount -t proc proc "$root/proc"
  chroot "$root" update-initramfs -c -k "$kver" >&3 2>&1
  umount "$root/proc"
fi
[[ -f $root/boot/xen-$xenver-amd64.gz ]] || die "xen-$xenver-amd64.gz missing from the rootfs"

# Our dom0 init and helpers.
install -m 0755 "$here/dom0/fastmig-dom0-init" "$root/sbin/fastmig-dom0-init"
echo nested-xen >"$root/etc/hostname"
printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$root/etc/fstab"
# Free the space apt's package cache takes.
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

# Boot files, taken out of the rootfs (not from the host's /boot).
gzip -dc "$root/boot/xen-$xenver-amd64.gz" >"$work/xen.elf"
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd.img"
echo "$kver" >"$work/kernel-version"
echo "$suite" >"$work/suite"
echo "$xenver" >"$work/xen-version"
stamp bootfiles

# Parts of the PV test guest's root that must match this image's kernel:
# busybox and the xen-netfront module (the network is how dom0 measures
# downtime: it pings the guest every millisecond). The guest initramfs
# itself is assembled per run by make-job.sh, so editing the guest's init
# or memwriter does not rebuild this image.
gp=$work/guest-parts
mkdir -p "$gp"
cp "$root/bin/busybox" "$gp/busybox"
f=$(find "$root/lib/modules/$kver/kernel/drivers/net" -name 'xen-netfront.ko*' | head -n1 || true)
case $f in
  "") echo "xen-netfront built in" >"$gp/netfront-builtin" ;;
  *.xz) xz -dc "$f" >"$gp/xen-netfront.ko" ;;
  *.zst) zstd -qdc "$f" >"$gp/xen-netfront.ko" ;;
  *) cp "$f" "$gp/xen-netfront.ko" ;;
esac
stamp guest-parts

# The disk image, without loop mounts: mkfs.ext4 copies the tree in (-d).
# Size: what the tree needs plus room for save files of a 1 GiB guest and logs.
used_mb=$(du -sm "$root" | cut -f1)
size_mb=$(( used_mb + 3072 ))
mkfs.ext4 -q -F -L nestedroot -d "$root" "$work/rootfs.img" "${size_mb}M" >&3 2>&1 \
  || die "mkfs.ext4 -d failed"
stamp mkfs

# Publish atomically: build in $work, then rename.
rm -rf "$root"
du -sh "$work"/* >&3
exec 3>&-
touch "$work/.done"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
chmod 755 "$out"
# Keep only the newest two images of this suite so the cache does not grow
# forever (an image without a suite file predates them: bookworm).
for d in $(ls -dt "$cache"/img-* 2>/dev/null); do
  if [[ $(cat "$d/suite" 2>/dev/null || echo bookworm) == "$suite" ]]; then echo "$d"; fi
done | tail -n +3 | xargs -r rm -rf
log "built $out in $(( $(date +%s) - t0 ))s"
echo "$out"
