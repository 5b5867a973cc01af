#!/usr/bin/env python3
"""Soak: one busy sim guest migrated back and forth between two network
namespaces many times, a fault injected every tenth migration.

Every migration is one run of the fault matrix (faults.py: the same
receiver and sender command lines, fault injection and checks) between two
namespaces that live for the whole soak: plain migrations must succeed
with the destination's memory verified equal to the source's; a fault
migration must end where its case says.  After each: exactly one copy of
the guest runs (every sim domain looked at), its memory intact (verified
for a migration that moved it; back on the source the guest has written
since and cannot be compared), one process per domain, one memfd per
domain process.  At the end: no process, namespace, veth, memfd or sim
domain file left, the harness holds no more fds than at the start, and the
receivers' peak RSS is flat.

RSS is measured per receive process, as its own peak resident set
(ru_maxrss from wait4 when the harness reaps it); "flat" means the median
over the last 10 plain migrations is at most the first 10's median plus
RSS_SLACK (10 % + 2 MiB): a leak of one buffer per migration would pass
that bound within a few dozen migrations.

Usage (as root): soak.py [--migrations N] [--fault-every K] [--memory SIZE]
Prints a table (per migration: direction, fault, outcome, total and
downtime ms, bytes sent, receiver peak RSS) and a summary line; exits 1 on
any violation.  See tests/faults/README.md, Soak.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402  (the fault matrix: cases, one run, checks)

A_ADDR, B_ADDR = "10.252.0.1", "10.252.0.2"
# Faults whose outcome is decided without an admin (kill, cut, stall; the
# in-doubt cases are the matrix's, but a killed sender is resolved here by
# `fastmig resolve`): cycled through, one per fault slot.
FAULTS = ["dst-kill-stop-copy-busy", "link-cut-precopy", "link-stall-stop-copy", "src-kill-stop-copy-busy",
          "link-cut-after-commit-heal", "dst-kill-after-commit-restart", "src-kill-after-commit-resolve"]
# A plain migration: must succeed, verified.  The receiver need not wait
# for an outcome question (DONE arrived); a busy guest over a clean veth
# finishes well within the matrix's 15 s timeouts.
PLAIN = faults.C("migrate", "no fault", "destination", 0, timeouts=(15000, 15000), linger=0)
RSS_SLACK = (1.10, 2048)  # KiB: last-10 median <= first-10 median * 1.10 + 2048


def memfds(pid):
    """How many memfds the process holds (a sim domain: its RAM and its
    control page)."""
    n = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("/memfd:"):
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


class Soak:
    def __init__(self, a):
        self.a = a
        self.h = faults.Harness(a.bin)
        tag = "%d" % (os.getpid() % 100000)
        # Two sides: (namespace, veth, address).
        self.sides = {"A": ("fms-%s-a" % tag, "fms%sa" % tag, A_ADDR), "B": ("fms-%s-b" % tag, "fms%sb" % tag, B_ADDR)}
        self.guest = ["--memory", a.memory, "--workload", a.workload, "--rate-scale", str(a.rate_scale)]
        self.violations = []
        self.rows = []

    def net(self, frm):
        to = "B" if frm == "A" else "A"
        (ns_s, if_s, ad_s), (ns_d, if_d, ad_d) = self.sides[frm], self.sides[to]
        return (ns_s, if_s, ad_s, ns_d, if_d, ad_d)

    def net_up(self):
        # The matrix's own setup, once, for namespaces that outlive the runs.
        faults.Run(self.h, PLAIN, 0, self.net("A")).net_up()

    def net_heal(self):
        """Undoes a cut or a stall: both veth ends up, no nft rules."""
        for ns, dev, _ in self.sides.values():
            faults.sh("ip", "-n", ns, "link", "set", dev, "up")
            faults.sh("ip", "netns", "exec", ns, "nft", "flush", "ruleset")

    def run(self):
        a = self.a
        fds0 = len(os.listdir("/proc/self/fd"))
        t0 = time.monotonic()
        self.net_up()
        env = dict(os.environ, FASTMIG_SIM_DIR=self.h.simdir)
        dom = faults.sh(self.h.bin, "sim", "create", *self.guest, env=env).stdout.strip()
        # Every copy of the guest must hold what the one created holds.
        self.memfds = memfds(int(re.search(r"^pid: (\d+)", faults.sh(self.h.bin, "sim", "info", dom, env=env).stdout, re.M).group(1)))
        side = "A"
        last = None
        try:
            for k in range(1, a.migrations + 1):
                name = FAULTS[(k // a.fault_every - 1) % len(FAULTS)] if k % a.fault_every == 0 else None
                case = dict(next(c for c in faults.CASES if c["name"] == name), guest=self.guest) if name else PLAIN
                last = faults.Run(self.h, case, k, self.net(side))
                res = dict(case=case["name"], outcome="?", intact=False, checked=True, in_doubt=False, ok=False,
                           notes=[])
                try:
                    last.migrate(res, dom, None, False)
                except Exception as e:  # the harness or the setup failed
                    last.errors.append("%s: %s" % (type(e).__name__, e))
                last.reap()
                doms = last.domains()
                running = [d for d, st in doms.items() if st == "running"]
                self.check_processes(last, doms)
                last.finish(res)
                self.net_heal()
                row = self.row(k, side, name, res, last)
                self.rows.append(row)
                print(self.fmt(row), flush=True)
                for n in res["notes"]:
                    print("#   " + n, flush=True)
                if not res["ok"]:
                    self.violations.append("migration %d (%s): %s" % (k, case["name"], "; ".join(res["notes"][:3])))
                if len(running) != 1:
                    self.violations.append("migration %d: %d copies run, stopping" % (k, len(running)))
                    break
                if running[0] != dom:
                    side = "B" if side == "A" else "A"
                    dom = running[0]
        finally:
            self.finish_checks(last, fds0)
        return time.monotonic() - t0

    def check_processes(self, run, doms):
        """One process per domain (the guest; no sender or receiver left),
        each holding the memfds of a freshly created guest."""
        run.wait_none_left(keep=len(doms))
        for p in run.our_processes():
            pid = int(p.split()[0])
            if memfds(pid) != self.memfds:
                run.errors.append("process %s holds %d memfds, the created guest %d" % (p, memfds(pid), self.memfds))

    def row(self, k, side, fault, res, run):
        rep = {}
        try:
            rep = json.loads(run.read("send", "out").strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
        rss = [ru.ru_maxrss for n, ru in run.rusage.items() if n.startswith("recv")]
        priv = [v for n, v in run.private_kib.items() if n.startswith("recv")]
        return dict(k=k, dir="%s>%s" % (side, "B" if side == "A" else "A"), fault=fault or "-",
                    outcome=res["outcome"] + ("/resolved" if rep.get("resolved") else ""),
                    # A busy guest is checked by send's --verify: not where it
                    # stayed home, nor where send was killed (the destination's
                    # record digest leaves out the pages send sent as free).
                    intact="yes" if res["intact"] else ("n/a" if res["outcome"] == "source" or not res["checked"]
                                                        else "NO"),
                    total=rep.get("total_ms"), down=rep.get("source_downtime_ms"), bytes=rep.get("bytes_sent"),
                    rss=max(rss) if rss else None, priv=max(priv) if priv else None, ok=res["ok"])

    COLS = [("k", 4), ("dir", 4), ("fault", 29), ("outcome", 20), ("intact", 6), ("total", 9), ("down", 8),
            ("bytes", 11), ("rss", 8), ("priv", 8), ("ok", 3)]
    NUMERIC = ("k", "total", "down", "bytes", "rss", "priv")

    def fmt(self, row):
        def cell(key, v):
            if v is None:
                return "-"
            if key in ("total", "down"):
                return "%.1f" % v
            if key == "ok":
                return "ok" if v else "NOT"
            return str(v)
        return "  ".join(cell(k, row[k]).rjust(w) if k in self.NUMERIC
                         else cell(k, row[k]).ljust(w) for k, w in self.COLS)

    def finish_checks(self, run, fds0):
        """Nothing may be left: destroy the guest, then look everywhere."""
        env = dict(os.environ, FASTMIG_SIM_DIR=self.h.simdir)
        out = faults.sh(self.h.bin, "sim", "list", env=env).stdout.splitlines()[1:]
        for line in out:
            faults.sh(self.h.bin, "sim", "destroy", line.split()[0], env=env, check=False)
        if run is None:
            run = faults.Run(self.h, PLAIN, 0, self.net("A"))
        run.errors = []
        run.net_down()  # namespaces and veth, and no process in them
        run.wait_none_left()
        left = [f for f in os.listdir(self.h.simdir) if re.fullmatch(r"\d+\.(lock|sock)", f)]
        if left:
            run.errors.append("sim domain files left: %s" % left)
        held = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()
                and any(self._link(p, f).startswith(self.h.simdir) for f in self._fds(p))]
        if held:
            run.errors.append("processes holding files of the sim directory: %s" % held)
        fds1 = len(os.listdir("/proc/self/fd"))
        if fds1 > fds0:
            run.errors.append("the harness holds %d fds, %d at the start" % (fds1, fds0))
        self.violations += ["at the end: " + e for e in run.errors]
        if self.violations or self.a.keep:
            print("# logs kept in " + self.h.work)
        else:
            shutil.rmtree(self.h.work, ignore_errors=True)
            if os.path.exists(self.h.work):
                self.violations.append("at the end: work and sim directory %s left" % self.h.work)

    @staticmethod
    def _link(pid, fd):
        try:
            return os.readlink("/proc/%s/fd/%s" % (pid, fd))
        except OSError:
            return ""

    @staticmethod
    def _fds(pid):
        try:
            return os.listdir("/proc/%s/fd" % pid)
        except OSError:
            return []

    def rss_flat(self):
        plain = [r["priv"] for r in self.rows if r["fault"] == "-" and r["priv"]]
        if len(plain) < 20:
            return None, None, True
        first, last = statistics.median(plain[:10]), statistics.median(plain[-10:])
        return first, last, last <= first * RSS_SLACK[0] + RSS_SLACK[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("FASTMIG_BIN"))
    ap.add_argument("--migrations", type=int, default=100)
    ap.add_argument("--fault-every", type=int, default=10)
    ap.add_argument("--memory", default="64M")
    ap.add_argument("--workload", default="web")
    ap.add_argument("--rate-scale", type=float, default=1.0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (every run's logs)")
    a = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
        print("soak: SKIP: needs root, ip and nft (network namespaces)")
        return 77
    if not a.bin or not os.access(a.bin, os.X_OK):
        print("soak: --bin (or FASTMIG_BIN) must name the built fastmig")
        return 2
    a.bin = os.path.abspath(a.bin)
    s = Soak(a)
    print("  ".join(k.rjust(w) if k in Soak.NUMERIC else k.ljust(w) for k, w in Soak.COLS))
    secs = s.run()
    first, last, flat = s.rss_flat()
    if not flat:
        s.violations.append("receiver peak RSS grew: median %d KiB over the first 10 plain migrations, %d over "
                            "the last 10" % (first, last))
    rows = s.rows
    cnt = lambda f: sum(1 for r in rows if f(r))
    plain = [r for r in rows if r["fault"] == "-"]
    med = lambda key, rs: statistics.median([r[key] for r in rs if r[key] is not None] or [0])
    for v in s.violations:
        print("# VIOLATION: " + v)
    print("soak: %d migrations (%d faults), %d moved, %d stayed on the source, %d lost, %d twice, %d failed; "
          "memory verified %d/%d moved (%d n/a: send killed); plain migrations: total %.0f ms, downtime %.1f ms (medians); receiver "
          "private RSS %s KiB first 10, %s KiB last 10 (medians, %s); nothing left: %s; %.0f s" % (
              len(rows), cnt(lambda r: r["fault"] != "-"), cnt(lambda r: r["outcome"].startswith("destination")),
              cnt(lambda r: r["outcome"] == "source"), cnt(lambda r: r["outcome"] == "lost"),
              cnt(lambda r: r["outcome"] == "twice"), cnt(lambda r: not r["ok"]),
              cnt(lambda r: r["outcome"].startswith("destination") and r["intact"] == "yes"),
              cnt(lambda r: r["outcome"].startswith("destination")),
              cnt(lambda r: r["outcome"].startswith("destination") and r["intact"] == "n/a"),
              med("total", plain), med("down", plain),
              "%d" % first if first is not None else "-", "%d" % last if last is not None else "-",
              "flat" if flat else "GREW",
              "yes" if not any(v.startswith("at the end") for v in s.violations) else "NO", secs))
    return 1 if s.violations else 0


if __name__ == "__main__":
    sys.exit(main())
