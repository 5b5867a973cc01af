#!/bin/sh
# fastmig status shows the peers table (libxl-plugin/peers.hpp) in effect:
# absent, listed, overridden, broken.  TAP.
. "${top_srcdir:-.}/tests/integration/lib.sh"
P=$WORK/peers
st() { FASTMIG_PEERS=$P fm status >"$WORK/st.out" 2>&1; cat "$WORK/st.out"; }
has() { grep -q -- "$1" "$WORK/st.out"; }
absent() { st && has "$P: not present: every destination gets fastmig's stream" && has "FASTMIG_PEER: not set here"; }
ok "status: no peers file, every destination fastmig" -- absent
printf '# pool\ndefault stock\nHost2 fastmig\n' >"$P"
listed() { st && has "^  $P:\$" && has "^    host2  *fastmig (line 3)" && has "^    default  *stock (line 2)"; }
ok "status: the table, its default and line numbers" -- listed
override() { FASTMIG_PEER=stock st && has "FASTMIG_PEER=stock here: it overrides the table"; }
ok "status: FASTMIG_PEER is shown as the override" -- override
printf 'default stock\nhost2 fast\n' >"$P"
broken() { st && has "ERROR: $P:2: unknown format 'fast' (fastmig or stock) (every save fails until it is fixed)"; }
ok "status: a broken table is an error with its line" -- broken
done_testing
exit 0
