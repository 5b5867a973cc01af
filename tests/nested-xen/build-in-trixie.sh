#!/bin/bash
# build-in-trixie.sh: build fastmig for Xen 4.20 in a Debian 13 (trixie)
# chroot, run its test suite there, and keep the helper for the nested
# 4.20 image (build-image.sh trixie).
#
#   build-in-trixie.sh [OUT_DIR]        (prints OUT_DIR on stdout)
#
# A Debian 12 host cannot run a 4.20 build: Debian 13's libxen* need glibc
# 2.38 (Debian 12 has 2.36), and its libstdc++ is newer. So the chroot
# (debootstrap minbase of trixie with fastmig's build dependencies, libxen-dev
# 4.20 among them) is made once and cached like the nested image. The sources
# are `git archive HEAD` of this checkout (the committed tree, never this
# build tree nor uncommitted edits), unpacked and built from scratch inside.
#
# OUT_DIR (default /var/cache/fastmig-trixie-build/<commit>) receives:
#   libxl-save-helper, fastmig   the 4.20 binaries
#   lib/                         the libraries the helper needs beyond glibc
#                                and Xen's, taken from the chroot (the nested
#                                dom0 lacks some, and the host's are older)
#   check.log, summary           `make check` output and its closing line
#   deb/                         with FASTMIG_TRIXIE_DEB=1: `make deb` there
#                                (fastmig_VERSION+deb13_amd64.deb, Xen 4.20)
# Use them as FASTMIG_HELPER_BIN=OUT_DIR/libxl-save-helper
# FASTMIG_HELPER_LIBS=OUT_DIR/lib FASTMIG_NESTED_SUITE=trixie nested-check.sh.
#
# Env: FASTMIG_TRIXIE_CHROOT  the chroot (default /var/cache/fastmig-trixie-chroot)
#      FASTMIG_TRIXIE_CHECK=0 build only, skip `make check`
#      FASTMIG_TRIXIE_DEB=1   also `make deb` (a trixie .deb)
#      FASTMIG_TRIXIE_DEB=only the .deb alone: no plain build, no check
#                             (make deb-trixie; one build instead of two)
#      FASTMIG_NESTED_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#      FASTMIG_NESTED_BUILD_TIMEOUT  limit for debootstrap, s (default 3600)
# Root (debootstrap, chroot, mounts). Exit status: that of the build and check.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
C=${FASTMIG_TRIXIE_CHROOT:-/var/cache/fastmig-trixie-chroot}
mirror=${FASTMIG_NESTED_MIRROR:-http://deb.debian.org/debian}

log() { printf '[build-in-trixie %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, mounts)"
command -v debootstrap >/dev/null || die "missing debootstrap (apt-get install debootstrap)"
rev=$(git -C "$src" rev-parse --short=12 HEAD) || die "$src is not a git checkout (the sources come from git archive)"
out=${1:-/var/cache/fastmig-trixie-build/$rev}

# bootstrap.sh's list, as trixie names it (pkgconf; libxen-dev is 4.20 there);
# dpkg-dev comes with build-essential (make deb needs nothing more).
pkgs=(build-essential autoconf automake libtool pkgconf zlib1g-dev libisal-dev
      nettle-dev libboost-test-dev libxen-dev python3 iproute2 procps)
if [[ ! -f $C/.done ]]; then
  log "debootstrap trixie into $C (log: $C.log)"
  rm -rf "$C.tmp"
  timeout "${FASTMIG_NESTED_BUILD_TIMEOUT:-3600}" debootstrap --variant=minbase \
    --include="$(IFS=,; echo "${pkgs[*]}")" trixie "$C.tmp" "$mirror" >"$C.log" 2>&1 \
    || die "debootstrap failed, see the tail of $C.log:
$(tail -n 20 "$C.log")"
  rm -rf "$C.tmp/var/cache/apt/archives/"*.deb
  touch "$C.tmp/.done"
  rm -rf "$C" && mv "$C.tmp" "$C"
fi
log "chroot $C: $(chroot "$C" dpkg-query -W -f='${Package} ${Version}\n' libxen-dev libc6 g++ | tr '\n' ';')"

deb=${FASTMIG_TRIXIE_DEB:-0}
case $deb in 0|1|only) ;; *) die "FASTMIG_TRIXIE_DEB=$deb: 0, 1 or only" ;; esac
# One build at a time in the chroot: each starts by emptying its /build.
exec 9>"$C.lock"
flock -n 9 || { log "waiting for another build in $C ($C.lock)"; flock 9; }

# The committed tree, built from scratch in the chroot.
b=/build/fastmig-$rev
rm -rf "${C:?}/build"
mkdir -p "$C$b"
[[ $deb == only ]] || git -C "$src" archive --format=tar HEAD | tar -xf - -C "$C$b"

mounted=()
cleanup() {
  local m
  for m in "${mounted[@]}"; do umount -R -l "$m" 2>/dev/null || true; done  # innermost first
}
trap cleanup EXIT
# The tests need /proc, /sys and /dev with its submounts (/dev/shm, pts),
# and / a mount point of its own: `fastmig receive --netns` makes / a
# slave mount, as `ip netns exec` does, and that fails on a plain directory.
for m in . proc sys dev; do
  mountpoint -q "$C/$m" && continue
  case $m in
    .) mount --bind "$C" "$C" ;;
    proc) mount -t proc proc "$C/proc" ;;
    sys) mount -t sysfs sysfs "$C/sys" ;;
    dev) mount --rbind /dev "$C/dev" && mount --make-rslave "$C/dev" ;;
  esac
  mounted=("$C/$m" "${mounted[@]}")
done
in_c() { chroot "$C" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

mkdir -p "$out"
st=0
if [[ $deb != only ]]; then
  log "building $rev in $C$b"
  in_c sh -c "cd $b && autoreconf -fi >/dev/null 2>&1 && ./configure --quiet && make -j$(nproc) --no-print-directory" \
    >"$out/build.log" 2>&1 || die "build failed, see the tail of $out/build.log:
$(tail -n 30 "$out/build.log")"
  grep -q 'libxenctrl\.so\.4\.20' <(objdump -p "$C$b/libxl-plugin/libxl-save-helper") \
    || die "the helper is not linked with libxenctrl.so.4.20 (did configure find libxen-dev?)"

  install -m 0755 "$C$b/libxl-plugin/libxl-save-helper" "$C$b/fastmig" "$out/"
  rm -rf "$out/lib" && mkdir -p "$out/lib"
  # What make-job.sh would take from the build host, taken from the chroot.
  in_c ldd "$b/libxl-plugin/libxl-save-helper" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' \
    | grep -Ev '/(libc|libm|libxen[a-z]*|ld-linux[-a-z0-9_]*)\.so' \
    | while read -r lib; do cp -L "$C$lib" "$out/lib/"; done
  log "helper and $(ls "$out/lib" | wc -l) libraries in $out"

  if [[ ${FASTMIG_TRIXIE_CHECK:-1} != 0 ]]; then
    log "make check in the chroot"
    in_c sh -c "cd $b && make -j$(nproc) --no-print-directory check" >"$out/check.log" 2>&1 || st=$?
    in_c sh -c "cd $b && tests/summary.sh ." >"$out/summary" 2>&1 || st=1
    log "make check: $(tail -n 1 "$out/summary")"
    [[ $st == 0 ]] || grep -E '^(FAIL|ERROR)' "$out/check.log" >&2 || true
  fi
fi  # deb != only
if [[ $deb != 0 ]]; then
  # What `make deb` does (deb.mk), minus git, which the chroot lacks: the
  # archive holds exactly the tracked files; a fresh copy, since
  # dpkg-buildpackage's clean step would distclean the checked tree.
  # suite-changelog.sh labels it for Debian 13 from the chroot's os-release.
  mkdir -p "$C/build/deb/fastmig-$rev"
  git -C "$src" archive --format=tar HEAD | tar -xf - -C "$C/build/deb/fastmig-$rev"
  rm -rf "$out/deb" && mkdir -p "$out/deb"
  log "dpkg-buildpackage in $C/build/deb/fastmig-$rev (log: $out/deb.log)"
  if in_c DEB_BUILD_OPTIONS=parallel=$(nproc) sh -c "cd /build/deb/fastmig-$rev && sh debian/suite-changelog.sh && dpkg-buildpackage -us -uc -b" >"$out/deb.log" 2>&1; then
    cp "$C"/build/deb/*.deb "$out/deb/"
    dpkg-deb -x "$out"/deb/fastmig_*.deb "$out/deb/unpacked"
    grep -q 'libxenctrl\.so\.4\.20' <(objdump -p "$out/deb/unpacked/usr/libexec/fastmig/libxl-save-helper") \
      || { st=1; log "the packaged helper is not linked with libxenctrl.so.4.20"; }
    rm -rf "$out/deb/unpacked"
    log "deb: $(ls "$out/deb"); Depends: $(dpkg-deb -f "$out"/deb/fastmig_*.deb Depends)"
  else
    st=1; log "dpkg-buildpackage failed, see the tail of $out/deb.log:
$(tail -n 30 "$out/deb.log")"
  fi
fi
echo "$out"
exit $st
