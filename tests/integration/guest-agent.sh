#!/bin/bash
# fastmig-guest-agent as a program (TAP): its scan on a synthetic
# /proc/kpageflags, its errors and exit statuses; and the errors of dom0's
# probe (fastmig-hint-probe).  Its protocol end and range
# building are unit-tested (free_hints.test, guest_agent.test); under Xen it
# runs in the nested harness's guest.
set -u
AGENT=${AGENT_BIN:-$(pwd)/tests/integration/fastmig-guest-agent}
PROBE=${PROBE_BIN:-$(pwd)/evtchn-ipc/fastmig-hint-probe}
work=$(mktemp -d "${TMPDIR:-/tmp}/fastmig-agent.XXXXXX")
trap 'rm -rf "$work"' EXIT
n=0
ok() { # ok DESCRIPTION -- COMMAND...
  local d=$1; shift 2
  n=$((n + 1))
  if "$@" >"$work/out" 2>&1; then echo "ok $n - $d"; else echo "not ok $n - $d"; sed 's/^/# /' "$work/out"; fi
}

# 10000 pfns: free blocks at 0-99 and 5000-5999, single pages at 7000 and 7002,
# and a used page with other flags at 7001.
python3 - "$work/kpf" <<'PY'
import struct, sys
f = [0] * 10000
for i in list(range(0, 100)) + list(range(5000, 6000)) + [7000, 7002]:
    f[i] = 1 << 10
f[7001] = 1 << 7
open(sys.argv[1], "wb").write(struct.pack("<%dQ" % len(f), *f))
PY

scan_finds() { # scan_finds PATTERN [OPTION...]
  local pat=$1; shift
  "$AGENT" --scan-only --kpageflags "$work/kpf" "$@" 2>&1 | tee /dev/stderr | grep -q "$pat"
}
ok "scan of a synthetic kpageflags: pages and ranges" -- scan_finds "10000 pfns (0 RAM spans), 1102 free pages in 4 ranges" --iomem none
ok "--limit stops the scan (dom0's pfn count)" -- scan_finds "5500 pfns (0 RAM spans), 600 free pages in 2 ranges" --limit 5500 --iomem none
# RAM at pfns [0, 100) and [5000, 5500) only, as /proc/iomem says it (the
# rest a hole, a nested line and a device range): only those are read.
cat >"$work/iomem" <<'IOMEM'
00000000-00063fff : System RAM
  00010000-00020fff : Kernel code
000a0000-000bffff : PCI Bus 0000:00
01388000-0157bfff : System RAM
fee00000-fee00fff : Local APIC
IOMEM
ok "--iomem: only the System RAM spans are read" -- scan_finds "600 pfns (2 RAM spans), 600 free pages in 2 ranges" --iomem "$work/iomem"
printf '00000000-00000000 : System RAM\n' >"$work/iomem-hidden"
ok "--iomem with hidden addresses (no root): every pfn" -- scan_finds "10000 pfns (0 RAM spans), 1102 free pages" --iomem "$work/iomem-hidden"

fails() { # fails STATUS PATTERN COMMAND...
  local want=$1 pat=$2 rc=0; shift 2
  "$@" >"$work/err" 2>&1 || rc=$?
  [ "$rc" = "$want" ] && grep -q "$pat" "$work/err" || { echo "status $rc, wanted $want; output:"; cat "$work/err"; return 1; }
}
ok "unreadable kpageflags: exit 1, names the file" -- fails 1 "cannot open $work/nope" "$AGENT" --scan-only --kpageflags "$work/nope"
ok "--pages 0: usage, exit 2" -- fails 2 "usage: fastmig-guest-agent" "$AGENT" --pages 0
ok "unknown option: usage, exit 2" -- fails 2 "usage:" "$AGENT" --bogus
ok "probe: domain 0 is not a guest, exit 2" -- fails 2 "not a guest domain id" "$PROBE" 0 --nr-pages 10
ok "probe: missing page count, exit 2" -- fails 2 "usage: fastmig-hint-probe" "$PROBE" 5 --nr-pages
if [ -e /dev/xen/xenbus ] || [ -e /var/run/xenstored/socket ] || [ -e /run/xenstored/socket ]; then
  n=$((n + 1)); echo "ok $n - serving outside Xen fails clearly # SKIP this host has xenstore"
  n=$((n + 1)); echo "ok $n - probing outside Xen fails clearly # SKIP this host has xenstore"
else
  ok "serving outside Xen: exit 1, says why" -- fails 1 "cannot connect to xenstore" timeout 20 "$AGENT"
  ok "probing outside Xen: exit 1, says why" -- fails 1 "cannot connect to xenstore" timeout 20 "$PROBE" 5 --nr-pages 10
fi
echo "1..$n"
