#!/bin/sh
# Points libxl's stock helper path at fastmig's libxl-save-helper, or back.
#   xl-helper-divert.sh install|uninstall ROOT STOCK_PATH FASTMIG_HELPER
# install: a local dpkg diversion renames the stock helper to STOCK_PATH.distrib
# (and keeps Xen package upgrades putting theirs there), then STOCK_PATH
# becomes a symlink to FASTMIG_HELPER.  uninstall: removes the symlink (only
# if it is fastmig's) and the diversion, which renames the stock helper back.
# ROOT (empty for /) is for tests: every path is taken under it.
set -eu
[ $# -eq 4 ] || { echo "usage: $0 install|uninstall ROOT STOCK_PATH FASTMIG_HELPER" >&2; exit 2; }
action=$1 root=$2 stock=$3 ours=$4
ddiv() { if [ -n "$root" ]; then dpkg-divert --root "$root" "$@"; else dpkg-divert "$@"; fi; }
is_ours() { [ -L "$root$stock" ] && [ "$(readlink "$root$stock")" = "$ours" ]; }
command -v dpkg-divert >/dev/null || { echo "dpkg-divert not found: this target is for Debian hosts; set LIBXL_SAVE_HELPER=$ours instead" >&2; exit 1; }
case $action in
install)
  [ -x "$root$ours" ] || { echo "fastmig's helper $ours is not installed (run make install first)" >&2; exit 1; }
  if is_ours; then echo "libxl already runs $ours"; exit 0; fi
  [ -e "$root$stock" ] || { echo "$stock does not exist: is Xen 4.17 installed (xen-utils-4.17)? For another version: make install-xl-helper XEN_LIBEXEC=/usr/lib/xen-X.Y/bin" >&2; exit 1; }
  ddiv --local --rename --divert "$stock.distrib" --add "$stock"
  ln -s "$ours" "$root$stock"
  echo "libxl now runs $ours for xl save/restore/migrate; the stock helper is $stock.distrib (undo: make uninstall-xl-helper)"
  ;;
uninstall)
  if is_ours; then rm -f "$root$stock"; fi
  if [ -e "$root$stock" ] || [ -L "$root$stock" ]; then
    echo "$stock is not fastmig's symlink; leaving it and the diversion alone" >&2; exit 1
  fi
  ddiv --rename --remove "$stock"
  echo "libxl runs the stock helper $stock again"
  ;;
*) echo "usage: $0 install|uninstall ROOT STOCK_PATH FASTMIG_HELPER" >&2; exit 2 ;;
esac
