# Sourced by the dom0 jobs (run.sh, xapi.sh): starts Xen's daemons the way
# Debian's /etc/init.d/xen does, minus LSB, and leaves `xl info` in
# $R/xl-info.txt.  The caller defines fail() and R.
xen_daemons_up() {
  local m
  for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-netback xen-blkback bridge; do
    modprobe "$m" 2>/dev/null || true
  done
  mountpoint -q /proc/xen || mount -t xenfs xenfs /proc/xen
  grep -q control_d /proc/xen/capabilities || fail "not dom0 (no control_d in /proc/xen/capabilities)"
  mkdir -p /run/xen /run/xenstored /var/log/xen/console /var/lib/xen /var/lib/fastmig
  xenstored --pid-file /run/xenstore.pid
  # xenstored forks once it serves; still, give it up to 10 s to answer.
  for _ in $(seq 50); do xenstore-ls / >/dev/null 2>&1 && break; sleep 0.2; done
  timeout 60 xen-init-dom0 || fail "xen-init-dom0"
  # --log=guest keeps each guest's console (memwriter's GAP/STAT lines).
  xenconsoled --pid-file /run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
  timeout 30 xl info >"$R/xl-info.txt" || fail "xl info"
}
