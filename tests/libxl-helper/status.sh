#!/bin/sh
# fastmig status and the dpkg diversion of make install-xl-helper, in a fake
# root (FASTMIG_STATUS_ROOT; dpkg-divert --root): the real system is never
# touched.  TAP.
. "${top_srcdir:-.}/tests/integration/lib.sh"
B=$(dirname "$FASTMIG_BIN")
DIVERT=${top_srcdir:-.}/libxl-plugin/xl-helper-divert.sh
R=$WORK/root
# Where this build expects Xen's helper (configure: /usr/lib/xen-4.17/bin
# on Debian 12, /usr/lib/xen-4.20/bin on Debian 13).
STOCK=$(fm status | sed -n 's/^  stock path: *\(.*\): .*$/\1/p')
OURS=$(fm status | sed -n 's/^  fastmig.s helper: *\(.*\): .*$/\1/p')
mkdir -p "$R/var/lib/dpkg" "$R$(dirname "$STOCK")"
: >"$R/var/lib/dpkg/diversions"
printf '#!/bin/sh\necho stock helper\n' >"$R$STOCK"
chmod +x "$R$STOCK"
st() { FASTMIG_STATUS_ROOT=$R fm status >"$WORK/st.out" 2>&1; cat "$WORK/st.out"; }
has() { grep -q -- "$1" "$WORK/st.out"; }

stock_case() { st && has "libxl runs $STOCK: the stock helper" && has "fastmig's helper: *$OURS: not installed" && has "diversion: *none"; }
ok "status: stock helper in place, fastmig's not installed" -- stock_case
if command -v dpkg-divert >/dev/null 2>&1 && [ -n "$OURS" ]; then
  install -D "$B/libxl-plugin/libxl-save-helper" "$R$OURS"
  ok "install-xl-helper: dpkg diversion, symlink to fastmig's helper" -- \
    sh -c "sh '$DIVERT' install '$R' '$STOCK' '$OURS' && [ -L '$R$STOCK' ] && [ -x '$R$STOCK.distrib' ]"
  diverted_case() { st && has "libxl runs $STOCK: fastmig" && has "diversion: *$STOCK -> $STOCK.distrib" && has "symlink to $OURS"; }
  ok "status: libxl runs fastmig's helper through the diversion" -- diverted_case
  ok "install-xl-helper twice is harmless" -- sh "$DIVERT" install "$R" "$STOCK" "$OURS"
  ok "uninstall-xl-helper: the stock helper is back" -- \
    sh -c "sh '$DIVERT' uninstall '$R' '$STOCK' '$OURS' && [ ! -L '$R$STOCK' ] && [ ! -e '$R$STOCK.distrib' ] && grep -q 'stock helper' '$R$STOCK'"
  st >/dev/null; ok "status after uninstall" -- sh -c "grep -q 'libxl runs $STOCK: the stock helper' '$WORK/st.out' && grep -q 'diversion: *none' '$WORK/st.out'"
  env_case() { LIBXL_SAVE_HELPER=$OURS st && has "libxl runs $OURS: fastmig" && has "LIBXL_SAVE_HELPER: *$OURS"; }
  ok "status: LIBXL_SAVE_HELPER wins over the stock path" -- env_case
else
  echo "ok 2 # SKIP dpkg-divert not available"
  tap_n=2
fi
# libxl's restore order: Debian's library, then one with xen-patches/0001.
# (the file name of this build's Xen: libxenlight.so.4.17.0 on Debian 12, .4.20.0 on 13)
LX=$(FASTMIG_STATUS_ROOT=$R fm status | sed -n "s/^libxl's restore order: \(.*\) not found.*/\1/p")
mkdir -p "$R$(dirname "$LX")"
printf 'libxl of Debian\n' >"$R$LX"
ok "status: Debian's libxl attaches NICs after the stream" -- sh -c "FASTMIG_STATUS_ROOT='$R' '$FASTMIG_BIN' status | grep -q \"restore order: Debian's\""
printf 'libxl \0LIBXL_EARLY_NICS\0 patched\n' >"$R$LX"
ok "status: the patched libxl is recognised" -- sh -c "FASTMIG_STATUS_ROOT='$R' '$FASTMIG_BIN' status | grep -q 'restore order: patched (xen-patches/0001): a restored'"
ok "status: LIBXL_EARLY_NICS=0 is reported" -- sh -c "LIBXL_EARLY_NICS=0 FASTMIG_STATUS_ROOT='$R' '$FASTMIG_BIN' status | grep -q 'but LIBXL_EARLY_NICS=0 here'"
rm -f "$R$LX"
ok "status: no libxl" -- sh -c "FASTMIG_STATUS_ROOT='$R' '$FASTMIG_BIN' status | grep -q 'restore order: $LX not found'"
done_testing
exit 0
