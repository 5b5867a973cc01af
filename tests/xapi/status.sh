#!/bin/sh
# fastmig status, XenServer / XCP-ng part, and make install-xapi-emu-manager,
# in a fake root (FASTMIG_STATUS_ROOT, DESTDIR): the real system is never
# touched.  TAP.
. "${top_srcdir:-.}/tests/integration/lib.sh"
B=$(dirname "$FASTMIG_BIN")
R=$WORK/root
ALT=/usr/lib/xapi/alternatives/emu-manager/fastmig
OURS=$(fm status | sed -n 's/^  fastmig.s drop-in: *\(.*\): .*$/\1/p')
st() { FASTMIG_STATUS_ROOT=$R fm status >"$WORK/st.out" 2>&1; cat "$WORK/st.out"; }
has() { grep -q -- "$1" "$WORK/st.out"; }
mkdir -p "$R"

none() { st && has "XAPI alternative: *$ALT: missing" && has "xenopsd: not configured here"; }
ok "status: no xenopsd, no alternative" -- none
install_alt() {
  ${MAKE:-make} -s -C "$B" install-xapi-emu-manager DESTDIR="$R" >"$WORK/inst.out" 2>&1 || { cat "$WORK/inst.out"; return 1; }
  [ -L "$R$ALT" ] && [ "$(readlink "$R$ALT")" = "$OURS" ] && [ -x "$R$OURS" ]
}
ok "make install-xapi-emu-manager DESTDIR=...: the alternative is a symlink to the installed drop-in" -- install_alt
mkdir -p "$R/etc" "$R/usr/lib64/xen/bin"
printf '# xenopsd\nsearch-path=/usr/lib64/xen/bin\n' >"$R/etc/xenopsd.conf"
printf '#!/bin/sh\n# the stock emu-manager\n' >"$R/usr/lib64/xen/bin/emu-manager"
default_case() {
  st && has "fastmig's drop-in: *$OURS: installed" && has "XAPI alternative: *$ALT: fastmig's emu-manager, symlink to $OURS" &&
    has "global setting: *emu-manager not set" && has "xenopsd runs emu-manager: the stock emu-manager" &&
    has "platform:emu-manager=fastmig run fastmig's"
}
ok "status: xenopsd's default; VMs can pick the fastmig alternative" -- default_case
mkdir -p "$R/etc/xenopsd.conf.d"
printf 'emu-manager=%s\n' "$ALT" >"$R/etc/xenopsd.conf.d/fastmig.conf"
global_case() {
  st && has "global setting: *emu-manager=$ALT (/etc/xenopsd.conf.d/fastmig.conf)" && has "xenopsd runs $ALT: fastmig, for every VM"
}
ok "status: the global switch in a conf.d fragment makes xenopsd run fastmig" -- global_case
printf 'emu-manager = /usr/lib64/xen/bin/emu-manager\n' >"$R/etc/xenopsd.conf.d/zz-later.conf"
later_case() { st && has "xenopsd runs /usr/lib64/xen/bin/emu-manager: the stock emu-manager"; }
ok "status: a later fragment wins (xenopsd's order)" -- later_case
rm "$R/etc/xenopsd.conf.d/zz-later.conf"
uninstall_alt() {
  ${MAKE:-make} -s -C "$B" uninstall-xapi-emu-manager DESTDIR="$R" >/dev/null 2>&1 && [ ! -e "$R$ALT" ] &&
    st && has "XAPI alternative: *$ALT: missing" && has "xenopsd runs $ALT: MISSING"
}
ok "uninstall-xapi-emu-manager: alternative gone, status warns the global switch still names it" -- uninstall_alt
back_case() { rm "$R/etc/xenopsd.conf.d/fastmig.conf" && st && has "xenopsd runs emu-manager: the stock emu-manager"; }
ok "the way back: without the fragment xenopsd runs the stock emu-manager" -- back_case
done_testing
exit 0
