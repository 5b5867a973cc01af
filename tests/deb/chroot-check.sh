#!/bin/sh
# Installs the fastmig .deb in a Debian chroot (debootstrap minbase of
# FASTMIG_DEB_SUITE, bookworm (Debian 12, Xen 4.17, the default) or trixie
# (Debian 13, Xen 4.20); cached in $FASTMIG_DEB_CHROOT, default
# /var/cache/fastmig-deb/SUITE, reused when it exists) where a stand-in for
# Xen's helper sits at its path, checks `fastmig status` and the diversion,
# then removes and purges it and checks that Xen's helper is back.  Root;
# needs the network for apt's dependencies.  TAP.
#   [FASTMIG_DEB_SUITE=trixie] tests/deb/chroot-check.sh PATH/fastmig_VERSION_amd64.deb
set -u
DEB=$1
SUITE=${FASTMIG_DEB_SUITE:-bookworm}
case $SUITE in
  bookworm) xen_mm=4.17 ;;
  trixie) xen_mm=4.20 ;;
  *) echo "chroot-check: FASTMIG_DEB_SUITE=$SUITE: bookworm or trixie" >&2; exit 2 ;;
esac
C=${FASTMIG_DEB_CHROOT:-/var/cache/fastmig-deb/$SUITE}
XEN=${FASTMIG_DEB_XEN_LIBEXEC:-/usr/lib/xen-$xen_mm/bin}
STOCK=$XEN/libxl-save-helper
n=0 failed=0
ok() { desc=$1; shift; n=$((n + 1))
  if "$@" >/tmp/deb-check.$$ 2>&1; then echo "ok $n - $desc"; else echo "not ok $n - $desc"; sed 's/^/# /' /tmp/deb-check.$$ | tail -20; failed=$((failed + 1)); fi; }
[ "$(id -u)" = 0 ] || { echo "1..0 # SKIP needs root (chroot, dpkg)"; exit 0; }
[ -r "$DEB" ] || { echo "chroot-check: no package at '$DEB' (make deb, or make deb-trixie)" >&2; exit 2; }
# A package built for another Debian would fail on its Depends, or worse
# install and divert the wrong Xen's helper: refuse it by name first.
case $(dpkg-deb -f "$DEB" Version) in
  *+deb12) [ "$SUITE" = bookworm ] ;; *+deb13) [ "$SUITE" = trixie ] ;; *) false ;;
esac || { echo "chroot-check: $DEB (version $(dpkg-deb -f "$DEB" Version)) is not a build for $SUITE" >&2; exit 2; }
if [ ! -x "$C/bin/sh" ]; then
  mkdir -p "$(dirname "$C")"
  rm -rf "$C.tmp"
  debootstrap --variant=minbase "$SUITE" "$C.tmp" http://deb.debian.org/debian >"$C.log" 2>&1 && mv "$C.tmp" "$C" ||
    { echo "1..0 # SKIP debootstrap of $SUITE failed (see $C.log)"; exit 0; }
fi
mounted=
cleanup() { [ -z "$mounted" ] || umount "$C/proc"; rm -f /tmp/deb-check.$$; }
trap cleanup EXIT
mount -t proc proc "$C/proc" && mounted=1
in_c() { chroot "$C" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
cp "$DEB" "$C/tmp/fastmig.deb"
# The package depends on the libxen of the build host, which may come from
# a security update: the chroot sees the same suites.
printf 'deb http://deb.debian.org/debian %s main\ndeb http://deb.debian.org/debian %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
  "$SUITE" "$SUITE" "$SUITE" >"$C/etc/apt/sources.list"
# Xen's helper, played by a script (the real one needs xen-utils and a
# hypervisor to be useful): what matters is that the diversion moves it
# aside and puts it back byte for byte.
mkdir -p "$C$XEN"
printf '#!/bin/sh\necho "stock libxl-save-helper"\n' >"$C$STOCK"
chmod 0755 "$C$STOCK"
# The built tree's fastmig reads the chroot from outside before install and
# after removal (FASTMIG_STATUS_ROOT), the installed one inside it.
FM=${FASTMIG_BIN:-$(dirname "$0")/../../fastmig}
outside() { FASTMIG_STATUS_ROOT=$C FASTMIG_XEN_LIBEXEC=$XEN "$FM" status; }
ok "before install: status (from outside) says libxl runs the stock helper" \
  sh -c "FASTMIG_STATUS_ROOT='$C' FASTMIG_XEN_LIBEXEC='$XEN' '$FM' status | grep -q 'libxl runs $STOCK: the stock helper'"
# Without the Recommends (xen-utils-X.Y): they would bring Xen's toolstack
# and QEMU, and Xen's real helper over the stand-in; the Depends are what
# the binaries need to start, and they must all come from $SUITE.
INSTALL='DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends /tmp/fastmig.deb'
ok "apt-get install ./fastmig.deb (dependencies from $SUITE)" \
  in_c sh -c "apt-get update -qq && $INSTALL"
ok "installed: fastmig status says libxl runs fastmig through the package's diversion" \
  sh -c "chroot '$C' fastmig status | tee /dev/stderr | grep -q 'libxl runs $STOCK: fastmig' &&
         chroot '$C' fastmig status | grep -q 'dpkg diversion: *$STOCK -> $STOCK.distrib' &&
         chroot '$C' dpkg-divert --listpackage '$STOCK' | grep -qx fastmig"
ok "installed: the helper and its stock fallback are where libxl looks" \
  sh -c "chroot '$C' '$STOCK' --help | grep -q \"fastmig's drop-in\" && chroot '$C' '$STOCK.distrib' | grep -q 'stock libxl-save-helper'"
ok "installed: the $SUITE build (its version, its changelog entry, Xen $xen_mm's helper path)" \
  sh -c "chroot '$C' dpkg-query -W -f='\${Version}\n' fastmig | grep -q '+deb' &&
         zcat '$C/usr/share/doc/fastmig/changelog.gz' | head -n 1 | grep -q ') $SUITE;' &&
         grep -q '^STOCK=$STOCK\$' '$C/var/lib/dpkg/info/fastmig.postinst' &&
         chroot '$C' dpkg-query -W -f='\${Recommends}\n' fastmig | grep -qx 'xen-utils-$xen_mm'"
ok "installed: man pages fastmig(1), fastmig-libxl-save-helper(8) and fastmig-emu-manager(8)" \
  sh -c "[ -s '$C/usr/share/man/man1/fastmig.1.gz' ] && [ -s '$C/usr/share/man/man8/fastmig-libxl-save-helper.8.gz' ] &&
         [ -s '$C/usr/share/man/man8/fastmig-emu-manager.8.gz' ]"
ok "installed: the emu-manager drop-in runs and answers xenopsd's feature question" \
  sh -c "chroot '$C' /usr/libexec/fastmig/fastmig-emu-manager -supports migration-v2 | grep -qx true"
gone() { [ ! -L "$C$STOCK" ] && [ ! -e "$C$STOCK.distrib" ] && grep -q 'stock libxl-save-helper' "$C$STOCK" &&
  [ -z "$(in_c dpkg-divert --listpackage "$STOCK")" ] && [ ! -e "$C/usr/bin/fastmig" ] &&
  outside | grep -q "libxl runs $STOCK: the stock helper" && outside | grep -q 'dpkg diversion: *none'; }
ok "apt-get remove fastmig" in_c sh -c 'DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq fastmig'
ok "removed: Xen's helper is back at its path, no diversion, status (from outside) says stock" gone
ok "reinstall, then purge" in_c sh -c "$INSTALL &&
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq fastmig"
ok "purged: Xen's helper is back, no diversion" gone
echo "1..$n"
[ "$failed" = 0 ]
