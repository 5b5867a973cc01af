#!/bin/sh
# Puts a changelog entry for the Debian release this tree is being built on
# at the top of debian/changelog, as a binNMU-style rebuild does, so that
# the .deb says which Debian (and Xen) it is for:
#   fastmig (0.1.0+deb13) trixie     Xen 4.20's libraries, /usr/lib/xen-4.20
#   fastmig (0.1.0+deb12) bookworm   Xen 4.17's
# Why a suffix: a build links libxenctrl.so.X.Y of one Xen (its soname
# carries the version), so each Debian release needs its own binary, and
# "+debNN" orders them (0.1.0+deb12 < 0.1.0+deb13), so a dist-upgrade from
# 12 to 13 replaces the 4.17 build with the 4.20 one.
# Run from the top of a build copy (deb.mk, build-in-trixie.sh), never in a
# checkout: it edits debian/changelog in place.  The entry is dated now, as
# a binNMU's is (lintian wants the newest entry later than the one below),
# or SOURCE_DATE_EPOCH when set (reproducible builds).
#   sh debian/suite-changelog.sh [OS_RELEASE_FILE]
set -eu
osr=${1:-/etc/os-release}
[ -r "$osr" ] || { echo "suite-changelog: cannot read $osr (which Debian is this?)" >&2; exit 1; }
# shellcheck disable=SC1090
ID= VERSION_ID= VERSION_CODENAME=
. "$osr"
[ "$ID" = debian ] && [ -n "$VERSION_ID" ] && [ -n "$VERSION_CODENAME" ] || {
  echo "suite-changelog: $osr is not a Debian release with a number (ID=$ID VERSION_ID=$VERSION_ID): build the package on Debian 12 or 13" >&2
  exit 1; }
base=$(dpkg-parsechangelog -S Version)
date=$(LC_ALL=C date -R ${SOURCE_DATE_EPOCH:+-d @$SOURCE_DATE_EPOCH})
maint=$(dpkg-parsechangelog -S Maintainer)
case $base in *+deb*) echo "suite-changelog: debian/changelog already has a suite entry ($base)" >&2; exit 1 ;; esac
xen=$(pkg-config --modversion xencontrol 2>/dev/null | cut -d. -f1,2)
[ -n "$xen" ] || { echo "suite-changelog: no xencontrol.pc: install libxen-dev (the package is built for one Xen)" >&2; exit 1; }
tmp=debian/changelog.suite.$$
{
  printf 'fastmig (%s+deb%s) %s; urgency=medium\n\n' "$base" "$VERSION_ID" "$VERSION_CODENAME"
  printf '  * Built for Debian %s (%s): Xen %s'"'"'s libraries, libxl'"'"'s helper in\n' "$VERSION_ID" "$VERSION_CODENAME" "$xen"
  printf '    /usr/lib/xen-%s/bin.\n\n' "$xen"
  printf ' -- %s  %s\n\n' "$maint" "$date"
  cat debian/changelog
} >"$tmp"
mv "$tmp" debian/changelog
dpkg-parsechangelog -S Version
