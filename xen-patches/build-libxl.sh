#!/bin/bash
# build-libxl.sh: Debian's libxenlight with the patches of this directory.
#
#   build-libxl.sh            prints the path of the built, stripped
#                             libxenlight.so.4.17.0 (cached: a second call
#                             with the same version and patches is instant)
#
# It fetches the source package of the Xen that dom0 runs from Debian's
# archive, checks it against the .dsc's SHA-256 sums, applies every
# xen-patches/*.patch, configures the tools with the options of Debian's
# debian/rules and builds tools/libs only (about a minute on 2 cores).
# The result is a drop-in for the package's library: same soname, same
# exported symbols, same paths compiled in (the script checks the symbols
# against the installed library when that is the same version).
#
# Env: XEN_DEB_VERSION        Debian version of the xen source package
#                             (default: the one the nested image installs,
#                             bookworm's 4.17.5+72-g01140da4e8-1)
#      XEN_DEB_POOL           where the source package lives (default: Debian's
#                             main pool, then its security pool, where
#                             bookworm's current Xen updates are:
#                             http://deb.debian.org/debian/pool/main/x/xen and
#                             http://deb.debian.org/debian-security/pool/updates/main/x/xen)
#      FASTMIG_XEN_SRC_CACHE  work and cache directory
#                             (default /var/cache/fastmig-xen-src)
#      FASTMIG_NO_APT=1       do not install missing build tools
# Needs root only to install build tools.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[build-libxl %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ver=${XEN_DEB_VERSION:-4.17.5+72-g01140da4e8-1}
if [[ -n ${XEN_DEB_POOL:-} ]]; then
  pools=("$XEN_DEB_POOL")
else
  pools=(http://deb.debian.org/debian/pool/main/x/xen
         http://deb.debian.org/debian-security/pool/updates/main/x/xen)
fi
cache=${FASTMIG_XEN_SRC_CACHE:-/var/cache/fastmig-xen-src}
[[ $ver =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "XEN_DEB_VERSION='$ver' is not a Debian version"

shopt -s nullglob
patches=("$here"/*.patch)
((${#patches[@]})) || die "no patches in $here"
key=$(cat "${patches[@]}" | sha256sum | cut -c1-16)
out=$cache/libxenlight-$ver-$key.so
if [[ -s $out ]]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi

# Build tools and the headers configure insists on (Build-Depends of the
# package, minus what only the hypervisor, firmware or docs need).
deps=(curl ca-certificates dpkg-dev autoconf automake make gcc flex bison
      pkg-config python3-dev libyajl-dev uuid-dev libncurses-dev
      libzstd-dev liblzma-dev zlib1g-dev libglib2.0-dev libpixman-1-dev
      libaio-dev acpica-tools libext2fs-dev)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ ${FASTMIG_NO_APT:-0} == 1 ]] && die "missing build packages: ${missing[*]}"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
fi

mkdir -p "$cache"
upstream=${ver%-*}
dsc=xen_$ver.dsc
cd "$cache"
pool=
fetch() { # $1 file name in the pool (the first pool that has the .dsc)
  [[ -s $1 ]] && return 0
  local p
  for p in ${pool:-"${pools[@]}"}; do
    if curl -fsS -o "$1.part" "$p/$1" 2>/dev/null; then
      pool=$p
      mv "$1.part" "$1"
      return 0
    fi
  done
  rm -f "$1.part"
  die "cannot fetch $1 from ${pool:-${pools[*]}} (XEN_DEB_VERSION=$ver; XEN_DEB_POOL names another pool)"
}
fetch "$dsc"
# The .dsc names the tarballs with their SHA-256 sums.
sums=$(awk '/^Checksums-Sha256:/ { on = 1; next } /^[^ ]/ { on = 0 } on && NF == 3 { print $1 "  " $3 }' "$dsc")
[[ -n $sums ]] || die "$dsc lists no SHA-256 sums"
while read -r _ f; do fetch "$f"; done <<<"$sums"
sha256sum -c --quiet <<<"$sums" || die "the source tarballs do not match $dsc"

src=$cache/build-$ver-$key
rm -rf "$src"
dpkg-source --no-check -x "$dsc" "$src" >&2 || die "dpkg-source -x $dsc failed"
for p in "${patches[@]}"; do
  log "applying $(basename "$p")"
  patch -d "$src" -p1 --forward --batch <"$p" >&2 || die "$(basename "$p") does not apply to xen $ver"
done

cd "$src"
# Debian's delta removes configure's output; regenerate it as its rules do.
cp /usr/share/misc/config.sub /usr/share/misc/config.guess .
./autogen.sh >&2 || die "autogen.sh failed"
export WGET=/bin/false GIT=/bin/false
log "configuring (options of debian/rules)"
./configure --disable-stubdom --prefix=/usr --includedir=/usr/include \
  --libdir=/usr/lib/x86_64-linux-gnu --with-libexec-libdir-suffix=/x86_64-linux-gnu \
  --host=x86_64-linux-gnu --mandir=/usr/share/man --infodir=/usr/share/info \
  --sysconfdir=/etc --localstatedir=/var --with-libexec-leaf-dir="xen-$(cut -d. -f1,2 <<<"$upstream")" \
  --disable-blktap1 --disable-blktap2 --disable-qemu-traditional --disable-rombios \
  --with-system-qemu=/usr/libexec/xen-qemu-system-i386 \
  --enable-ovmf --with-system-ovmf=/usr/share/ovmf/OVMF.fd \
  --with-system-seabios=/usr/share/seabios/bios-256k.bin \
  --disable-ocamltools --disable-docs >"$src/configure.out" 2>&1 \
  || die "configure failed, see $src/configure.out"
mk=(XEN_TARGET_ARCH=x86_64 XEN_COMPILE_ARCH=x86_64
    "EXTRA_CFLAGS_XEN_TOOLS=$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
    "PREPEND_LDFLAGS_XEN_TOOLS=$(dpkg-buildflags --get LDFLAGS)")
log "building tools/libs"
{ make -j"$(nproc)" -C tools/include "${mk[@]}" && make -j"$(nproc)" -C tools/libs "${mk[@]}"; } \
  >"$src/build.out" 2>&1 || die "build failed, see the end of $src/build.out"

lib=$src/tools/libs/light/libxenlight.so.4.17.0
[[ -f $lib ]] || die "the build made no $lib"
strip -o "$out.part" "$lib"
# Same exported symbols as the package's library, when it is installed at
# this very version (a drop-in must not change the ABI).
inst=/usr/lib/x86_64-linux-gnu/libxenlight.so.4.17.0
if [[ -f $inst && $(dpkg-query -W -f='${Version}' libxenmisc4.17 2>/dev/null || true) == "$ver" ]]; then
  diff <(nm -D --defined-only "$inst" | awk '{ print $3 }' | sort) \
       <(nm -D --defined-only "$out.part" | awk '{ print $3 }' | sort) >&2 \
    || die "the patched library exports other symbols than $inst"
  log "exported symbols match $inst"
fi
mv "$out.part" "$out"
log "built $out"
echo "$out"
