#!/bin/bash
# build-xen-shadow.sh: the nested image's Xen hypervisor rebuilt with shadow
# paging, from the same source and with the package's own configuration
# plus CONFIG_SHADOW_PAGING=y, and cached. boot.sh boots it instead of the
# packaged one when FASTMIG_NESTED_XEN names it.
#
#   build-xen-shadow.sh [IMAGE_DIR]     (prints the output directory)
#
# Why: Debian 13's xen-hypervisor-4.20-amd64 is built with
# "# CONFIG_SHADOW_PAGING is not set" (upstream made it default to n in
# 4.20.4 when it deprecated it), and Xen tracks a PV guest's dirty pages
# with its shadow code: without it no PV guest can be migrated live, with
# any helper. Only the hypervisor is built (make -C xen); dom0's tools stay
# the image's packages.
#
# IMAGE_DIR (default: build-image.sh's cached image of FASTMIG_NESTED_SUITE,
# trixie here) gives, read out of its rootfs.img with debugfs (no mount):
#   /boot/xen-X.Y-amd64.config    the package's configuration
#   the xen-hypervisor-X.Y-amd64 version in dpkg's status (the source to build)
# The source, in this order:
#   1. Debian's source package of exactly that version (apt-get source
#      through a private sources list under the cache, signed by Debian's
#      archive keyring: the host's apt configuration is not touched), its
#      patches applied by dpkg-source -x;
#   2. else, if FASTMIG_XEN_GIT names a clone of upstream Xen: the commit
#      Debian's version names (4.20.4+63-g7abfd2bce2: 7abfd2bce2) when the
#      clone has it, else the release tag (RELEASE-4.20.4), or FASTMIG_XEN_REF.
#      The output's `source` file says which, and how far from Debian's.
# Output ($FASTMIG_NESTED_CACHE/xen-shadow-<key>/, key = hash of the source's
# identity, the configuration and the compiler):
#   xen.elf          the hypervisor (xen/xen: what the package gzips to
#                    /boot/xen-X.Y-amd64.gz), for QEMU's -kernel
#   config           its .config;  config.diff  against the package's
#   source, xen-version (X.Y), banner (the full version it prints),
#   toolchain, build.log, build-seconds
# The version gets XEN_VENDORVERSION "-shadow" (xl info's xen_extra and the
# boot banner say "-shadow"), so a log always shows which Xen booted.
#
# Env: FASTMIG_NESTED_CACHE   cache root (default /var/cache/fastmig-nested)
#      FASTMIG_NESTED_SUITE   the image's suite when IMAGE_DIR is not given
#                             (default trixie)
#      FASTMIG_NESTED_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#      FASTMIG_XEN_GIT, FASTMIG_XEN_REF   the fallback source (above)
#      FASTMIG_XEN_JOBS       make -j (default 2; the build runs under nice 19)
# Needs: gcc, binutils, make, flex, bison, python3 (Xen's own build), dpkg-dev
# (dpkg-source), debugfs. Root only to read a root-owned cache.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${FASTMIG_NESTED_CACHE:-/var/cache/fastmig-nested}
mirror=${FASTMIG_NESTED_MIRROR:-http://deb.debian.org/debian}
jobs=${FASTMIG_XEN_JOBS:-2}

log() { printf '[build-xen-shadow %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for t in gcc ld make flex bison python3 debugfs sha256sum; do
  command -v "$t" >/dev/null || die "missing tool '$t' (apt-get install build-essential flex bison python3 e2fsprogs)"
done
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "FASTMIG_XEN_JOBS=$jobs is not a number"

img=${1:-}
if [[ -z $img ]]; then
  img=$(bash "$here/build-image.sh" "${FASTMIG_NESTED_SUITE:-trixie}")
fi
[[ -f $img/.done && -f $img/rootfs.img ]] || die "$img is not a built image (build-image.sh)"
xv=$(cat "$img/xen-version" 2>/dev/null || echo 4.17)
suite=$(cat "$img/suite" 2>/dev/null || echo bookworm)

# What the image's package was built from and with.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
debugfs -R "dump /boot/xen-$xv-amd64.config $tmp/config-debian" "$img/rootfs.img" >/dev/null 2>&1
[[ -s $tmp/config-debian ]] || die "no /boot/xen-$xv-amd64.config in $img/rootfs.img"
debver=$(debugfs -R "cat /var/lib/dpkg/status" "$img/rootfs.img" 2>/dev/null \
         | awk -v p="xen-hypervisor-$xv-amd64" '$1 == "Package:" { on = ($2 == p) } on && $1 == "Version:" { print $2; exit }')
[[ $debver =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "no version of xen-hypervisor-$xv-amd64 in $img's dpkg status"
upstream=${debver%-*}                  # 4.20.4+63-g7abfd2bce2
log "image $img: Xen $xv, package $debver ($suite)"

# --- The source -----------------------------------------------------------
srcroot=$cache/xen-src
mkdir -p "$srcroot"
src= srcid= srckey=   # srckey: what the build is made of (the cache key's part)
# 1. Debian's source package, fetched and checked by apt from a private
#    sources list (deb-src of the suite, its updates and its security archive).
A=$srcroot/apt-$suite
mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
cat >"$A/sources.list" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite-updates main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/debian}/debian-security $suite-security main
EOF
apt_o=(-o "Dir::Etc::sourcelist=$A/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$A/lists"
       -o "Dir::Cache=$A/cache" -o "Dir::Cache::archives=$A/cache/archives" -o APT::Get::List-Cleanup=0
       -o APT::Sandbox::User=root)
dd=$srcroot/deb-$debver
if [[ -d $dd/xen-src/xen ]]; then
  src=$dd/xen-src srcid="debian $debver" srckey="debian $debver"
else
  mkdir -p "$dd"
  if apt-get "${apt_o[@]}" -qq update >"$dd/apt.log" 2>&1 \
     && (cd "$dd" && apt-get "${apt_o[@]}" source --download-only "xen=$debver") >>"$dd/apt.log" 2>&1 \
     && dpkg-source -x "$dd/xen_$debver.dsc" "$dd/xen-src.tmp" >>"$dd/apt.log" 2>&1; then
    mv "$dd/xen-src.tmp" "$dd/xen-src"
    src=$dd/xen-src srcid="debian $debver" srckey="debian $debver"
  else
    rm -rf "$dd/xen-src.tmp"
    log "Debian's source package xen $debver could not be had:"
    grep -E '^(E|W): ' "$dd/apt.log" | head -n 5 | sed 's/^/    /' >&2 || true
  fi
fi
# 2. Upstream's git: Debian's upstream version is `git describe` of a commit.
if [[ -z $src ]]; then
  git=${FASTMIG_XEN_GIT:-}
  [[ -n $git ]] || die "no source for Xen $upstream: Debian's source package is not reachable (see $dd/apt.log) and FASTMIG_XEN_GIT names no upstream clone"
  git -C "$git" rev-parse -q --verify HEAD^{commit} >/dev/null 2>&1 || die "FASTMIG_XEN_GIT=$git is not a git repository"
  want=${upstream##*-g}; [[ $upstream == *-g* ]] || want=
  rel=RELEASE-${upstream%%[+~]*}
  have_want=0
  [[ -n $want ]] && git -C "$git" rev-parse -q --verify "$want^{commit}" >/dev/null && have_want=1
  ref=${FASTMIG_XEN_REF:-}
  if [[ -z $ref ]]; then
    ref=$rel; [[ $have_want == 1 ]] && ref=$want
  fi
  commit=$(git -C "$git" rev-parse -q --verify "$ref^{commit}") || die "$git has no $ref"
  src=$srcroot/git-${commit:0:12}
  if [[ ! -d $src/xen ]]; then
    rm -rf "$src.tmp" && mkdir -p "$src.tmp"
    git -C "$git" archive --format=tar "$commit" | tar -xf - -C "$src.tmp"
    mv "$src.tmp" "$src"
  fi
  srckey="git $commit"
  srcid="upstream git $ref = ${commit:0:12} ($(git -C "$git" describe --tags "$commit" 2>/dev/null || echo '?'))"
  if [[ -n $want && $commit != "$want"* ]]; then
    srcid+="; NOT Debian's $upstream (commit $want"
    [[ $have_want == 1 ]] || srcid+=" is not in $git"
    srcid+="): $(git -C "$git" log -1 --format='%h %cs %s' "$commit"); no Debian patches"
  else
    srcid+="; Debian's upstream commit, without Debian's patches"
  fi
fi
log "source: $srcid"

# --- The configuration: the package's, with shadow paging ----------------
cc_id="$(gcc --version | head -n1); $(ld --version | head -n1)"
sed -E 's/^# CONFIG_SHADOW_PAGING is not set$/CONFIG_SHADOW_PAGING=y/' "$tmp/config-debian" >"$tmp/config-in"
grep -q '^CONFIG_SHADOW_PAGING=y$' "$tmp/config-in" || echo CONFIG_SHADOW_PAGING=y >>"$tmp/config-in"
key=$( { echo "$srckey"; cat "$tmp/config-in"; echo "$cc_id"; } | sha256sum | cut -c1-16)
out=$cache/xen-shadow-$key
if [[ -f $out/.done ]]; then
  log "cached: $out ($(cat "$out/banner"))"
  echo "$out"
  exit 0
fi

# A build tree per key, outside the source (which stays pristine). One whose
# copy was finished (xen/.config is written last) is resumed: an interrupted
# build does not start over (it takes tens of minutes on a loaded machine).
b=$cache/xen-shadow-build-$key
resumed=
if [[ -f $b/xen/.config ]]; then
  resumed=" (resumed: earlier attempts' time not counted)"
  log "resuming the build in $b"
else
  rm -rf "$b" && mkdir -p "$b"
  cp -a "$src/." "$b/"
  cp "$tmp/config-in" "$b/xen/.config"
fi
t0=$(date +%s)
# Debian's patch that prints the package's version in the banner reads
# these, as debian/rules sets them.
deb_vars=()
if [[ -f $b/debian/control ]]; then
  deb_vars=(DEB_VERSION="$debver" DEB_MAINTAINER="$(awk '/^Maintainer: / { sub(/^Maintainer: /, ""); print; exit }' "$b/debian/control")")
fi
mk() { nice -n 19 make -C "$b/xen" --no-print-directory XEN_VENDORVERSION=-shadow "${deb_vars[@]}" "$@"; }
log "olddefconfig + build in $b (make -j$jobs under nice 19; log: $b/build.log)"
{ mk olddefconfig && mk -j"$jobs"; } >>"$b/build.log" 2>&1 \
  || die "build failed, see the tail of $b/build.log:
$(tail -n 30 "$b/build.log")"
secs=$(( $(date +%s) - t0 ))
grep -qx 'CONFIG_SHADOW_PAGING=y' "$b/xen/.config" || die "olddefconfig dropped CONFIG_SHADOW_PAGING=y (see $b/xen/.config)"
[[ -f $b/xen/xen ]] || die "no $b/xen/xen after the build"
# Its banner is "Xen version X.Y" followed by the extra version (".4-shadow").
extra=$(strings -a "$b/xen/xen" | grep -m1 -xE '\.[0-9A-Za-z.+~]*-shadow' || true)
[[ -n $extra ]] || die "the built xen carries no '.N-shadow' extra version string"
banner=$xv$extra

stage=$cache/xen-shadow-$key.tmp
rm -rf "$stage" && mkdir -p "$stage"
cp "$b/xen/xen" "$stage/xen.elf"
cp "$b/xen/.config" "$stage/config"
# What changed against the package's configuration (comments and the
# compiler's own version lines aside, only SHADOW_PAGING should).
diff <(grep -E '^(CONFIG_|# CONFIG_)' "$tmp/config-debian" | grep -vE 'CONFIG_(GCC|CLANG)_VERSION' | sort) \
     <(grep -E '^(CONFIG_|# CONFIG_)' "$b/xen/.config" | grep -vE 'CONFIG_(GCC|CLANG)_VERSION' | sort) \
  >"$stage/config.diff" || true
cp "$tmp/config-debian" "$stage/config-debian"
echo "$srcid" >"$stage/source"
echo "$xv" >"$stage/xen-version"
echo "$banner" >"$stage/banner"
echo "$cc_id" >"$stage/toolchain"
echo "$secs$resumed" >"$stage/build-seconds"
cp "$b/build.log" "$stage/build.log"
touch "$stage/.done"
rm -rf "$out" && mv "$stage" "$out"
rm -rf "$b"
log "built Xen $banner in ${secs}s$resumed: $out; config against the package's:"
sed 's/^/    /' "$out/config.diff" >&2
echo "$out"
