#!/usr/bin/env python3
"""Fault matrix: the real fastmig binary, sim domains, two network namespaces.

Each run of a case: a fresh pair of namespaces (source, destination) joined by
a veth pair, a sim domain, `fastmig receive` in the destination namespace,
`fastmig send --verify` in the source namespace, one fault injected (a
failpoint that kills or stops a process at an exact phase, a link cut, a
stalled link, a relay that damages the stream, a refusal, a memory limit,
packet loss, latency), then assertions on the outcome:

  * where the domain runs (source or destination), and that exactly one copy
    runs (every sim domain is looked at through `fastmig sim list`);
  * its memory is intact: the guests are static (--rate-scale 0), so the
    checksum of the copy that runs must equal the checksum taken at creation;
    a successful send must also report verified=true;
  * the exit status of `fastmig send` and its error line (domain, phase,
    cause; IN DOUBT for the one in-doubt case);
  * nothing is left behind: no fastmig or sim process, no namespace, no veth.

Usage (as root):  faults.py [--reps N] [--short] [--case NAME ...] [--list]
Output is TAP (one test per run), then the table and a summary line as TAP
comments.  Exit 0 when every run passed.  See tests/faults/README.md.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_ADDR, DST_ADDR = "10.251.0.1", "10.251.0.2"
GUEST = ["--memory", "64M", "--workload", "web", "--rate-scale", "0"]
BUSY = ["--memory", "64M", "--workload", "web", "--rate-scale", "1"]
# Short enough that stalls end fast, long enough that a loaded CI machine
# (2 cores, load 16 seen) does not time out before the injected fault.
IO_TIMEOUT_MS = 5000      # send and receive --timeout-ms
DONE_TIMEOUT_MS = 5000    # send --done-timeout-ms, receive --commit-timeout-ms
HANG_S = 60               # a process still alive after this is killed
# A connection lost after COMMIT (docs/stream-format.md, Resolving a lost
# COMMIT): the sender asks again for this long, every RESOLVE_INTERVAL_MS;
# the receiver stays up for the question this long after its migration.
RESOLVE_DEADLINE_MS = 6000
RESOLVE_INTERVAL_MS = 500
LINGER_MS = 8000
SLACK_S = 10              # send/receive must end within their timeouts + this

# ---------------------------------------------------------------- the cases
#
# expect: where the one running copy must be at the end ("source" or
#   "destination"); send_rc: exit status of fastmig send (-9: killed by its
#   own failpoint, so no status and no error line); phase: the phase its
#   error line must name; cause: a regex the error line must match.
#   in_doubt: the source is left paused; the harness then plays the admin
#   (resolve: "destroy-source" if the destination runs it, "resume-source"
#   otherwise) and checks the result.


def C(name, what, expect, send_rc, **kw):
    d = dict(name=name, what=what, expect=expect, send_rc=send_rc, phase=None, cause=None,
             send_fp=None, recv_fp=None, trigger=None, action=None, relay=None,
             recv_args=[], recv_rlimit_as=None, nft=None, in_doubt=False, resolve=None,
             guest=GUEST, recv_dies=False, race=None, timeouts=(IO_TIMEOUT_MS, DONE_TIMEOUT_MS),
             heal=None, resolved=None, restart_recv=False, linger=LINGER_MS, resolve_cmd=None)
    d.update(kw)
    return d


CASES = [
    # The destination dies (SIGKILL) at each phase.  Its half-built copy
    # holds a "destroy" lease; the source sees the connection go and resumes.
    C("dst-kill-before-round0", "receiver SIGKILLed after ACCEPT, before round 0", "source", 1,
      recv_fp="recv:before-round0=kill", phase="precopy|negotiate", recv_dies=True),
    C("dst-kill-mid-precopy", "receiver SIGKILLed at ROUND_END 0", "source", 1,
      recv_fp="recv:mid-precopy=kill", phase="precopy|stop-and-copy|finish", recv_dies=True),
    C("dst-kill-stop-copy", "receiver SIGKILLed when the source is suspended", "source", 1,
      recv_fp="recv:stop-copy=kill", phase="stop-and-copy|platform state|finish",
      cause="resumed on the source", recv_dies=True),
    # The sender waits a little after READY, so the death is seen before
    # COMMIT would go: the check that guards COMMIT must resume the source.
    C("dst-kill-after-ready", "receiver SIGKILLed after READY, sender slow to COMMIT", "source", 1,
      recv_fp="recv:after-ready=kill", send_fp="send:before-commit=sleep:200", phase="commit",
      cause="COMMIT not sent.*resumed on the source", recv_dies=True),
    # The same death racing COMMIT: if COMMIT left before the hang-up was
    # seen, the source cannot tell and the documented in-doubt rule applies
    # (source paused, exit 3, nothing runs until the admin resumes it).
    C("dst-kill-after-ready-race", "receiver SIGKILLed right after READY, racing COMMIT", "source", 1,
      recv_fp="recv:after-ready=kill", phase="commit", cause="resumed on the source", recv_dies=True,
      race=dict(send_rc=3, cause="DONE never came", in_doubt=True, resolve="resume-source", expect="none")),
    C("dst-kill-after-commit", "receiver SIGKILLed after COMMIT (domain started, DONE not sent)",
      "destination", 3, recv_fp="recv:after-commit=kill", phase="commit", cause="DONE never came",
      in_doubt=True, resolve="destroy-source", recv_dies=True),
    # The same with a guest that keeps dirtying memory: several precopy
    # rounds and a non-empty stop-and-copy.  Its memory cannot be compared
    # once it runs on the source again (it has written since): "intact" is
    # only counted where --verify or a checksum could check it.
    C("dst-kill-mid-precopy-busy", "receiver SIGKILLed at ROUND_END 0, busy guest", "source", 1,
      recv_fp="recv:mid-precopy=kill", phase="precopy|stop-and-copy|finish", recv_dies=True, guest=BUSY),
    C("dst-kill-stop-copy-busy", "receiver SIGKILLed when the source is suspended, busy guest", "source", 1,
      recv_fp="recv:stop-copy=kill", phase="stop-and-copy|platform state|finish",
      cause="resumed on the source", recv_dies=True, guest=BUSY),
    C("src-kill-stop-copy-busy", "sender SIGKILLed just after suspending, busy guest", "source", -9,
      send_fp="send:stop-copy=kill", guest=BUSY),
    # fastmig send dies (SIGKILL) at each phase.  The source guest holds a
    # "resume" lease until just before COMMIT, then "keep paused".
    C("src-kill-before-round0", "sender SIGKILLed before round 0", "source", -9,
      send_fp="send:before-round0=kill"),
    C("src-kill-mid-precopy", "sender SIGKILLed after round 0", "source", -9,
      send_fp="send:mid-precopy=kill"),
    C("src-kill-stop-copy", "sender SIGKILLed just after suspending the guest", "source", -9,
      send_fp="send:stop-copy=kill"),
    C("src-kill-before-commit", "sender SIGKILLed after READY, before COMMIT", "source", -9,
      send_fp="send:before-commit=kill"),
    C("src-kill-after-commit", "sender SIGKILLed right after writing COMMIT", "destination", -9,
      send_fp="send:after-commit=kill", in_doubt=True, resolve="destroy-source"),
    # The link goes away.  A failpoint that sleeps marks the phase; the
    # harness cuts or stalls the link while the process waits there.
    C("link-cut-precopy", "veth down during precopy", "source", 1,
      recv_fp="recv:mid-precopy=sleep:300", trigger="recv:mid-precopy", action="link-down",
      phase="precopy|stop-and-copy|finish", cause="timed out|timeout|resumed|keeps running"),
    C("link-cut-after-commit", "veth down after COMMIT arrived, before DONE", "destination", 3,
      recv_fp="recv:after-commit=sleep:300", trigger="recv:after-commit", action="link-down",
      phase="commit", cause="DONE never came", in_doubt=True, resolve="destroy-source"),
    C("link-cut-before-commit", "veth down after READY, COMMIT lost on the way", "none", 3,
      send_fp="send:before-commit=sleep:300", trigger="send:before-commit", action="link-down",
      phase="commit", cause="DONE never came.*asking.*failed", in_doubt=True, resolve="resume-source"),
    # The same two cuts, but the link comes back while the source asks for
    # the outcome on a new connection: resolved without anyone, both ways.
    # heal: once every (process, text) has appeared in that process's
    # stderr, the link goes up again.
    # The receiver dies right after starting the domain; a new `fastmig
    # receive` on the same port and outcome directory answers the source
    # from the record the dead one left on disk.
    C("dst-kill-after-commit-restart", "receiver SIGKILLed after COMMIT (DONE not sent), restarted on its port",
      "destination", 0, recv_fp="recv:after-commit=kill", recv_dies=True, restart_recv=True, resolved="committed"),
    C("link-cut-after-commit-heal", "veth down after COMMIT arrived (DONE lost), up again while the source asks",
      "destination", 0, recv_fp="recv:after-commit=sleep:300", trigger="recv:after-commit", action="link-down",
      heal=[("send", "resolve: ")], resolved="committed"),
    C("link-cut-before-commit-heal", "veth down after READY (COMMIT lost), up again once the destination gave "
      "up waiting and the source asks", "source", 1,
      send_fp="send:before-commit=sleep:300", trigger="send:before-commit", action="link-down",
      heal=[("send", "resolve: "), ("recv", "fastmig receive: sim:")], phase="commit",
      cause="confirmed the domain never ran there.*resumed on the source"),
    # The admin's way out of the two in-doubt endings, without looking at
    # the destination: `fastmig resolve` with the id send printed at COMMIT
    # (resolve_cmd: its exit status), the link healed first.
    C("src-kill-after-commit-resolve", "sender SIGKILLed right after writing COMMIT, then fastmig resolve",
      "destination", -9, send_fp="send:after-commit=kill", resolve_cmd=0),
    C("link-cut-before-commit-resolve", "veth down after READY (COMMIT lost) past send's deadline, then up "
      "and fastmig resolve", "source", 3,
      send_fp="send:before-commit=sleep:300", trigger="send:before-commit", action="link-down",
      phase="commit", cause="DONE never came.*asking.*failed", linger=20000, resolve_cmd=1),
    C("link-stall-precopy", "every packet dropped (nft) during precopy, past --timeout-ms", "source", 1,
      recv_fp="recv:mid-precopy=sleep:1500", trigger="recv:mid-precopy", action="stall",
      phase="precopy|stop-and-copy|finish", cause="nothing for 5000 ms|timed out"),
    C("link-stall-stop-copy", "every packet dropped (nft) during stop-and-copy", "source", 1,
      recv_fp="recv:stop-copy=sleep:1500", trigger="recv:stop-copy", action="stall",
      phase="stop-and-copy|platform state|finish", cause="resumed on the source"),
    # Bytes damaged on the wire past TCP's checksum, and a version mismatch.
    C("relay-flip-byte", "one payload byte flipped by a relay (record CRC)", "source", 1,
      relay=["--flip", "300000"], phase="precopy|stop-and-copy|finish", cause="CRC mismatch|malformed"),
    C("relay-version", "relay rewrites HEADER.version to 99 (CRC fixed up)", "source", 1,
      relay=["--version", "99"], phase="negotiate", cause="stream version 99 is not supported"),
    # The destination refuses or cannot hold the guest.
    C("refuse-max-memory", "guest larger than receive --max-memory", "source", 1,
      recv_args=["--max-memory", "32M"], phase="negotiate", cause="refused the domain.*exceeds"),
    C("dst-address-space", "receiver under ulimit -v 160M, guest of 256M", "source", 1,
      recv_rlimit_as=160 << 20, guest=["--memory", "256M", "--workload", "web", "--rate-scale", "0"],
      phase="negotiate", cause="refused the domain.*Cannot allocate memory.*keeps running"),
    # Degraded but working links: the migration must succeed.
    # A lost segment can wait for TCP's backed-off retransmission timer for
    # seconds: these run with timeouts nearer the defaults (30 s).
    C("loss-2pct", "2% of packets dropped both ways (nft numgen)", "destination", 0,
      nft="loss2", timeouts=(15000, 15000)),
    C("delay-20ms", "20 ms added each way (relay)", "destination", 0, relay=["--delay-ms", "20"],
      timeouts=(15000, 15000)),
    C("loss-and-delay-busy", "1% loss + 10 ms, guest dirtying memory (web workload)", "destination", 0,
      nft="loss1", relay=["--delay-ms", "10"], timeouts=(15000, 15000),
      guest=BUSY),
]

SHORT = ["dst-kill-stop-copy", "dst-kill-after-commit", "src-kill-mid-precopy", "link-stall-precopy",
         "relay-flip-byte", "refuse-max-memory", "loss-2pct", "src-kill-after-commit-resolve"]


def netem_available():
    """The kernel may lack sch_netem (this CI kernel does); then loss goes
    through nft and latency through the relay."""
    ns = "fmf-probe-%d" % os.getpid()
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        r = subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "corrupt", "1%"],
                           capture_output=True)
        return r.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def netem_cases():
    return [C("netem-corrupt", "tc netem corrupt 1% (TCP checksums catch most)", "destination", 0,
              netem=["corrupt", "1%"])]

# ------------------------------------------------------------ the harness


def sh(*cmd, check=True, **kw):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


class Run:
    """One run of one case: its namespaces, processes and observations."""

    def __init__(self, h, case, k, net=None):
        """net: (source namespace, its veth, its address, destination
        namespace, its veth, its address) that outlive this run (the soak
        migrates back and forth between two); else this run makes its own."""
        self.h, self.case, self.k = h, case, k
        if net:
            self.ns_s, self.if_s, self.addr_s, self.ns_d, self.if_d, self.addr_d = net
        else:
            tag = "%d-%d" % (os.getpid() % 100000, k)
            self.ns_s, self.ns_d = "fmf-%s-s" % tag, "fmf-%s-d" % tag
            self.if_s, self.if_d = "fmf%ss" % tag.replace("-", ""), "fmf%sd" % tag.replace("-", "")
            self.addr_s, self.addr_d = SRC_ADDR, DST_ADDR
        self.rusage = {}  # process name -> resource.struct_rusage, from wait4
        self.private_kib = {}  # process name -> peak RssAnon + RssFile seen (KiB), sampled
        self.dir = os.path.join(h.work, "%s.%d" % (case["name"], k))
        os.makedirs(self.dir)
        self.env = dict(os.environ, FASTMIG_SIM_DIR=h.simdir)
        self.env.pop("FASTMIG_FAILPOINTS", None)
        self.procs = []
        self.errors = []

    def fm(self, *args, **kw):
        return sh(self.h.bin, *args, env=self.env, **kw)

    # -- network
    def net_up(self):
        sh("ip", "netns", "add", self.ns_s)
        sh("ip", "netns", "add", self.ns_d)
        sh("ip", "link", "add", self.if_s, "type", "veth", "peer", "name", self.if_d)
        sh("ip", "link", "set", self.if_s, "netns", self.ns_s)
        sh("ip", "link", "set", self.if_d, "netns", self.ns_d)
        for ns, dev, addr in ((self.ns_s, self.if_s, self.addr_s), (self.ns_d, self.if_d, self.addr_d)):
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        if self.case.get("nft"):
            pct = {"loss1": 1, "loss2": 2}[self.case["nft"]]
            for ns in (self.ns_s, self.ns_d):
                self.nft(ns, "table inet fmf {\n chain out {\n type filter hook output priority 0;\n"
                             " meta l4proto tcp numgen random mod 100 < %d drop\n }\n}\n" % pct)
        if self.case.get("netem"):
            for ns, dev in ((self.ns_s, self.if_s), (self.ns_d, self.if_d)):
                sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", *self.case["netem"])

    def nft(self, ns, ruleset):
        r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset, text=True,
                           capture_output=True)
        if r.returncode != 0:
            raise RuntimeError("nft in %s: %s" % (ns, r.stderr.strip()))

    def inject(self, action):
        if action == "link-down":
            sh("ip", "-n", self.ns_s, "link", "set", self.if_s, "down")
        elif action == "link-up":
            sh("ip", "-n", self.ns_s, "link", "set", self.if_s, "up")
        elif action == "stall":
            for ns in (self.ns_s, self.ns_d):
                self.nft(ns, "table inet fmfstall {\n chain in {\n type filter hook input priority 0;\n"
                             " meta l4proto tcp drop\n }\n chain out {\n type filter hook output priority 0;\n"
                             " meta l4proto tcp drop\n }\n}\n")

    def net_down(self):
        for ns in (self.ns_s, self.ns_d):
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            if pids:
                self.errors.append("processes left in namespace %s: %s" % (ns, " ".join(pids)))
                for p in pids:
                    try:
                        os.kill(int(p), signal.SIGKILL)
                    except OSError:
                        pass
            sh("ip", "netns", "del", ns, check=False)
        left = sh("ip", "netns", "list").stdout
        for ns in (self.ns_s, self.ns_d):
            if re.search(r"^%s\b" % re.escape(ns), left, re.M):
                self.errors.append("namespace %s left behind" % ns)
        if sh("ip", "link", "show", self.if_s, check=False).returncode == 0:
            self.errors.append("veth %s left behind" % self.if_s)

    # -- processes
    def spawn(self, name, argv, ns, extra_env=None, rlimit_as=None):
        env = dict(self.env)
        if extra_env:
            env.update(extra_env)
        out = open(os.path.join(self.dir, name + ".out"), "w")
        err = open(os.path.join(self.dir, name + ".err"), "w")

        def pre():
            if rlimit_as:
                import resource
                resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))

        with out, err:  # the child has its own copies: a soak spawns hundreds
            p = subprocess.Popen(["ip", "netns", "exec", ns] + argv, stdout=out, stderr=err, env=env,
                                 preexec_fn=pre, start_new_session=True)
        p.name = name
        self.procs.append(p)
        return p

    def sample_rss(self):
        """The private resident memory of each live process of the run: its
        peak RSS (wait4) also counts the guest memory it maps (shmem), which
        varies with the pages sent; a leak shows here."""
        for p in self.procs:
            if p.returncode is not None:
                continue
            try:
                with open("/proc/%d/status" % p.pid) as f:
                    st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
                kib = int(st["RssAnon"].split()[0]) + int(st["RssFile"].split()[0])
            except (OSError, KeyError, ValueError):
                continue
            self.private_kib[p.name] = max(kib, self.private_kib.get(p.name, 0))

    def read(self, name, ext):
        try:
            with open(os.path.join(self.dir, name + "." + ext)) as f:
                return f.read()
        except OSError:
            return ""

    def wait_for(self, what, test, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = test()
            if v:
                return v
            time.sleep(0.02)
        raise RuntimeError("timed out waiting for " + what)

    def wait_exit(self, p, timeout):
        """The exit status (negative: the signal), and in self.rusage the
        process's own resource use (peak RSS), which only wait4 returns."""
        end = time.monotonic() + timeout
        while p.returncode is None and time.monotonic() < end:
            self.sample_rss()
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                self.rusage[p.name] = ru
            else:
                time.sleep(0.02)
        try:
            return p.wait(0)
        except subprocess.TimeoutExpired:
            self.errors.append("%s still running after %d s (hang): killed" % (p.name, timeout))
            if shutil.which("gdb"):  # where it hangs, for the log
                bt = os.path.join(self.dir, p.name + ".hang-bt")
                with open(bt, "w") as f:
                    subprocess.run(["gdb", "-batch", "-p", str(p.pid), "-ex", "thread apply all bt 25"],
                                   stdout=f, stderr=subprocess.STDOUT, timeout=120, check=False)
                frames = [l for l in open(bt).read().splitlines() if l.startswith("#") or l.startswith("Thread ")]
                self.errors += ["%s: %s" % (os.path.basename(bt), l[:160]) for l in frames[:60]]
            os.killpg(p.pid, signal.SIGKILL)
            return p.wait()

    # -- domains
    def domains(self):
        out = self.fm("sim", "list").stdout.splitlines()[1:]
        doms = {}
        for line in out:
            f = line.split()
            if len(f) >= 5:
                doms[f[0]] = f[-1]
        return doms

    def checksum(self, dom):
        r = self.fm("sim", "checksum", dom, check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def our_processes(self):
        """Every live process started for this matrix (sim guests included):
        they carry the private FASTMIG_SIM_DIR in their environment."""
        mark = ("FASTMIG_SIM_DIR=" + self.h.simdir).encode()
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    env = f.read().split(b"\0")
                with open("/proc/%s/stat" % pid) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if mark in env and state != "Z":
                try:
                    cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode()
                except OSError:
                    cmd = "?"
                found.append("%s %s" % (pid, cmd.strip()))
        return found

    # -- the run
    def execute(self):
        """One run: its namespaces, a new guest, the migration, the checks,
        and everything torn down."""
        c = self.case
        res = dict(case=c["name"], outcome="?", intact=False, checked=True, in_doubt=False, ok=False, notes=[])
        try:
            self.net_up()
            src = self.fm("sim", "create", *c["guest"]).stdout.strip()
            static = "--rate-scale" in c["guest"] and c["guest"][c["guest"].index("--rate-scale") + 1] == "0"
            self.migrate(res, src, self.checksum(src), static)
        except Exception as e:  # an unexpected failure of the harness or the setup
            self.errors.append("%s: %s" % (type(e).__name__, e))
        finally:
            self.cleanup()
        return self.finish(res)

    def migrate(self, res, src, sum0, static):
        """Migrates `src` from the source namespace to the destination's
        with this run's fault, then checks the outcome (observe).  Raises on
        a failure of the harness; assertions go to self.errors."""
        c = self.case
        self.src = src
        # Receiver, in the destination namespace.
        io_ms, done_ms = c["timeouts"]
        rargs = [self.h.bin, "receive", "--listen", self.addr_d + ":0", "--timeout-ms", str(io_ms),
                 "--commit-timeout-ms", str(done_ms), "--accept-timeout-ms", "20000",
                 "--outcome-dir", os.path.join(self.dir, "outcomes"),
                 "--outcome-linger-ms", str(c["linger"])] + c["recv_args"]
        recv = self.spawn("recv", rargs, self.ns_d,
                          {"FASTMIG_FAILPOINTS": c["recv_fp"]} if c["recv_fp"] else None, c["recv_rlimit_as"])
        port = self.wait_for("the receiver's port", lambda: (
            re.search(r"listening on .*:(\d+)", self.read("recv", "out")) or
            (recv.poll() is not None and RuntimeError("receiver exited: " + self.read("recv", "err")))))
        if isinstance(port, Exception):
            raise port
        port = port.group(1)
        target = self.addr_d + ":" + port
        if c["relay"]:
            relay = self.spawn("relay", [sys.executable, os.path.join(HERE, "relay.py"), "--listen", self.addr_d,
                                         "--to", target] + c["relay"], self.ns_d)
            rport = self.wait_for("the relay's port", lambda: re.search(r"port=(\d+)", self.read("relay", "out")))
            target = self.addr_d + ":" + rport.group(1)

        sargs = [self.h.bin, "send", src, target, "--verify", "--json", "--timeout-ms", str(io_ms),
                 "--done-timeout-ms", str(done_ms), "--resolve-deadline-ms", str(RESOLVE_DEADLINE_MS),
                 "--resolve-interval-ms", str(RESOLVE_INTERVAL_MS)]
        t_send = time.monotonic()
        send = self.spawn("send", sargs, self.ns_s, {"FASTMIG_FAILPOINTS": c["send_fp"]} if c["send_fp"] else None)
        if c["trigger"]:
            side = "recv" if c["trigger"].startswith("recv:") else "send"
            self.wait_for("failpoint " + c["trigger"],
                          lambda: ("failpoint %s:" % c["trigger"]) in self.read(side, "err"), timeout=HANG_S)
            self.inject(c["action"])
        if c["heal"]:
            for side, text in c["heal"]:
                self.wait_for("'%s' from %s" % (text, side), lambda: text in self.read(side, "err"), timeout=HANG_S)
            self.inject("link-up")
        recv2 = None
        if c["restart_recv"]:
            self.wait_exit(recv, HANG_S)
            recv2 = self.spawn("recv2", [a if a != self.addr_d + ":0" else target for a in rargs], self.ns_d)
        send_rc = self.wait_exit(send, HANG_S)
        if c["resolve_cmd"] is not None:
            self.resolve_cmd(src, target, res)
        recv_rc = self.wait_exit(recv, HANG_S)
        if recv2:
            rc2 = self.wait_exit(recv2, HANG_S)
            if rc2 != 0:
                self.errors.append("the restarted receiver exited %s: %s" % (rc2, self.read("recv2", "err")))
        # Every wait has a timeout: nothing may outlive the sum of the
        # two (a stall costs one of each at most) by much.
        took = time.monotonic() - t_send
        res["seconds"] = took
        # A receiver stays up LINGER_MS for a question that may not come.
        if took > (io_ms + done_ms + c["linger"]) / 1000.0 + SLACK_S:
            self.errors.append("send/receive took %.1f s, past their timeouts (%d + %d ms)" % (took, io_ms, done_ms))
        if c["relay"]:
            relay.kill()
            relay.wait()
        res["send_rc"], res["recv_rc"] = send_rc, recv_rc
        if c["race"] and send_rc == c["race"]["send_rc"]:
            self.case = c = dict(c, **c["race"])  # lost the race: hold it to the in-doubt rule
        self.check_send(send_rc, src)
        if recv_rc == 1:
            # Warnings (e.g. listening off loopback without --psk-file)
            # are not the error line.
            lines = [l for l in self.read("recv", "err").splitlines()
                     if l.startswith("fastmig receive:") and not l.startswith("fastmig receive: warning:")]
            # "incoming" alone: refused before the header (and the
            # domain's name in it) could be trusted, e.g. a bad version.
            if len(lines) != 1 or not re.match(r"fastmig receive: (incoming|(incoming )?sim:\d+): [a-z -]+: .+", lines[0]):
                self.errors.append("receiver error line lacks domain/phase/cause: %s" % lines)
        if c["recv_dies"] and recv_rc != -9:
            self.errors.append("receiver exit %s, wanted -9 (its failpoint kills it)" % recv_rc)
        self.observe(res, src, sum0, static)

    def finish(self, res):
        """res with the verdict, and the last words of each side on failure."""
        res["ok"] = not self.errors
        res["notes"] = list(self.errors)
        if self.errors:
            # What each side said last: a failure seen only on CI must be
            # diagnosable from its log (the work directory is gone there).
            for name in ("send", "recv"):
                for ext in ("err", "out"):
                    tail = self.read(name, ext).splitlines()[-8:]
                    res["notes"] += ["%s.%s: %s" % (name, ext, l) for l in tail]
        return res

    def resolve_cmd(self, src, target, res):
        """What an admin does after a send killed or in doubt after COMMIT:
        `fastmig resolve` with what send's `commit:` line named, while the
        receiver still lingers for the question."""
        c = self.case
        if c["action"] == "link-down":
            self.inject("link-up")
        m = re.search(r"fastmig resolve (\S+) (\S+) ([0-9a-f]{32})", self.read("send", "err"))
        if not m:
            self.errors.append("send printed no 'fastmig resolve' line at COMMIT")
            return
        if (m.group(1), m.group(2)) != (src, target):
            self.errors.append("send's resolve line names %s %s, not %s %s" % (m.group(1), m.group(2), src, target))
        p = self.spawn("resolve", [self.h.bin, "resolve", src, target, m.group(3), "--timeout-ms", "5000",
                                   "--resolve-deadline-ms", str(RESOLVE_DEADLINE_MS),
                                   "--resolve-interval-ms", str(RESOLVE_INTERVAL_MS)], self.ns_s)
        rc = res["resolve_rc"] = self.wait_exit(p, HANG_S)
        if rc != c["resolve_cmd"]:
            self.errors.append("fastmig resolve exit %s, wanted %s: %s %s" % (
                rc, c["resolve_cmd"], self.read("resolve", "out").strip(), self.read("resolve", "err").strip()))

    def check_send(self, rc, src):
        c = self.case
        if rc != c["send_rc"]:
            self.errors.append("send exit %s, wanted %s" % (rc, c["send_rc"]))
        err = [l for l in self.read("send", "err").splitlines() if l.startswith("fastmig send:")]
        if rc in (1, 3):
            if len(err) != 1:
                self.errors.append("wanted one error line from send, got %d" % len(err))
                return
            line = err[0]
            m = re.match(r"fastmig send: (IN DOUBT: )?(sim:\d+): ([a-z -]+): (.+)", line)
            if not m:
                self.errors.append("error line lacks domain/phase/cause: " + line)
                return
            if m.group(2) != src:
                self.errors.append("error line names %s, not %s" % (m.group(2), src))
            if c["phase"] and not re.fullmatch(c["phase"], m.group(3)):
                self.errors.append("error line phase '%s', wanted %s" % (m.group(3), c["phase"]))
            if c["cause"] and not re.search(c["cause"], m.group(4)):
                self.errors.append("error line cause lacks /%s/: %s" % (c["cause"], m.group(4)))
            if (rc == 3) != bool(m.group(1)):
                self.errors.append("IN DOUBT must go with exit 3: " + line)
        elif rc == 0:
            try:
                rep = json.loads(self.read("send", "out").strip().splitlines()[-1])
                if rep.get("verified") is not True:
                    self.errors.append("send succeeded but verified=%s" % rep.get("verified"))
                if rep.get("resolved") != c["resolved"]:
                    self.errors.append("send reports resolved=%s, wanted %s" % (rep.get("resolved"), c["resolved"]))
            except (ValueError, IndexError):
                self.errors.append("send succeeded without a JSON report")

    def settle(self, want_running):
        """Orphan leases act when their holder's process is gone: give them a
        moment, then return the domains as they are."""
        end = time.monotonic() + 5
        while True:
            doms = self.domains()
            if want_running(doms) or time.monotonic() > end:
                return doms
            time.sleep(0.05)

    def observe(self, res, src, sum0, static):
        c = self.case
        running = lambda d: [k for k, v in d.items() if v == "running"]

        def expected(d):
            r = running(d)
            if c["expect"] == "source":
                return r == [src] and len(d) == 1
            if c["expect"] == "destination":
                return len(r) == 1 and r[0] != src and (len(d) == 1 or (c["in_doubt"] and d.get(src) == "paused"))
            return not r and d.get(src) == "paused" and len(d) == 1

        doms = self.settle(expected)
        r = running(doms)
        res["domains"] = doms
        if len(r) > 1:
            res["outcome"] = "twice"
        elif not r:
            res["outcome"] = "lost"
        else:
            res["outcome"] = "source" if r[0] == src else "destination"
        if c["in_doubt"]:
            if doms.get(src) != "paused":
                self.errors.append("in doubt: the source should be kept paused, it is %s" % doms.get(src, "gone"))
            else:
                res["in_doubt"] = True
                # The admin's move, as README.md says: look at the destination.
                if r:
                    self.fm("sim", "destroy", src)
                else:
                    self.fm("sim", "resume", src)
                doms = self.domains()
                r = running(doms)
                res["outcome"] = "destination" if r and r[0] != src else ("source" if r else "lost")
                res["resolved"] = c["resolve"]
                if (c["resolve"] == "destroy-source") != (res["outcome"] == "destination"):
                    self.errors.append("in doubt: resolution %s did not apply" % c["resolve"])
        want = c["expect"] if c["expect"] != "none" else "source"
        if res["outcome"] != want:
            self.errors.append("domain %s, wanted on the %s (domains: %s)" % (res["outcome"], want, doms))
        others = {k: v for k, v in doms.items() if k not in r}
        if others:
            self.errors.append("stray domains besides the running one: %s" % others)
        if len(r) == 1:
            s = self.checksum(r[0])
            if static:
                res["intact"] = s is not None and s == sum0
                if not res["intact"]:
                    self.errors.append("memory changed: %s at creation, %s now on %s" % (sum0, s, r[0]))
            else:
                # A busy guest keeps writing: the sender's verify compares
                # the destination with the source at the instant it paused.
                res["checked"] = res.get("send_rc") == 0
                res["intact"] = res["checked"] and s is not None
        # Every live process must be a listed domain.
        procs = self.our_processes()
        if len(procs) != len(doms):
            self.errors.append("%d processes for %d domains: %s" % (len(procs), len(doms), "; ".join(procs)))

    def cleanup(self):
        self.reap()
        try:
            for d in self.domains():
                self.fm("sim", "destroy", d, check=False)
        except Exception as e:
            self.errors.append("cannot list domains at cleanup: %s" % e)
        self.net_down()
        self.wait_none_left()

    def reap(self):
        """Kills (and counts as an error) every process of this run still up."""
        for p in self.procs:
            if p.poll() is None:
                self.errors.append("%s still running at cleanup" % p.name)
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait()

    def wait_none_left(self, keep=0):
        """Waits up to 3 s for our processes to be down to `keep` (the
        domains that should run), then kills the rest as an error."""
        end = time.monotonic() + 3
        while len(self.our_processes()) > keep and time.monotonic() < end:
            time.sleep(0.05)
        left = self.our_processes()
        if len(left) > keep:
            self.errors.append("processes left behind: " + "; ".join(left))
            for p in left:
                try:
                    os.kill(int(p.split()[0]), signal.SIGKILL)
                except OSError:
                    pass


class Harness:
    def __init__(self, binary):
        self.bin = binary
        self.work = tempfile.mkdtemp(prefix="fastmig-faults.")
        self.simdir = os.path.join(self.work, "sim")
        os.makedirs(self.simdir)


def table(results, cases):
    cols = ["case", "runs", "source", "destination", "lost", "twice", "in-doubt", "intact", "mem-n/a", "failed"]
    rows = []
    for c in cases:
        rs = [r for r in results if r["case"] == c["name"]]
        if not rs:
            continue
        cnt = lambda o: sum(1 for r in rs if r["outcome"] == o)
        rows.append([c["name"], len(rs), cnt("source"), cnt("destination"), cnt("lost"), cnt("twice"),
                     sum(1 for r in rs if r["in_doubt"]), sum(1 for r in rs if r["intact"]),
                     sum(1 for r in rs if not r["checked"]),
                     sum(1 for r in rs if not r["ok"])])
    tot = ["total"] + [sum(r[i] for r in rows) for i in range(1, len(cols))]
    w = [max(len(str(x)) for x in [cols[i]] + [r[i] for r in rows + [tot]]) for i in range(len(cols))]
    fmt = lambda r: "  ".join(str(x).ljust(w[i]) if i == 0 else str(x).rjust(w[i]) for i, x in enumerate(r))
    lines = [fmt(cols), fmt(["-" * w[0]] + ["-" * x for x in w[1:]])] + [fmt(r) for r in rows] + [fmt(tot)]
    return lines, tot


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("FASTMIG_BIN"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--short", action="store_true", help="the few cases make check runs, once each")
    ap.add_argument("--case", action="append", help="run only this case (repeatable)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs of every run)")
    a = ap.parse_args()
    cases = list(CASES)
    if a.list:
        for c in cases + netem_cases():
            print("%-24s %s" % (c["name"], c["what"]))
        return 0
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
        print("1..0 # SKIP needs root, ip and nft (network namespaces)")
        return 0
    if sh("ip", "netns", "add", "fmf-probe-%d" % os.getpid(), check=False).returncode != 0:
        print("1..0 # SKIP cannot create a network namespace")
        return 0
    sh("ip", "netns", "del", "fmf-probe-%d" % os.getpid(), check=False)
    if not a.bin or not os.access(a.bin, os.X_OK):
        print("Bail out! FASTMIG_BIN (or --bin) must name the built fastmig")
        return 1
    a.bin = os.path.abspath(a.bin)
    netem = netem_available()
    if netem:
        cases += netem_cases()
    if a.short:
        cases, a.reps = [c for c in cases if c["name"] in SHORT], 1
    if a.case:
        cases = [c for c in cases if c["name"] in a.case]
    h = Harness(a.bin)
    results = []
    n = 0
    t0 = time.monotonic()
    try:
        for rep in range(a.reps):
            for c in cases:
                n += 1
                t = time.monotonic()
                r = Run(h, c, n).execute()
                results.append(r)
                print("%s %d - %s (rep %d): %s%s, %.1f s" % ("ok" if r["ok"] else "not ok", n, c["name"], rep + 1,
                                                           r["outcome"], ", in doubt, resolved" if r["in_doubt"] else "",
                                                           time.monotonic() - t), flush=True)
                for note in r["notes"]:
                    print("#   " + note, flush=True)
    finally:
        # Kept when asked, and when a case failed (every run's logs).
        if not a.keep and all(r["ok"] for r in results):
            shutil.rmtree(h.work, ignore_errors=True)
        else:
            print("# logs kept in " + h.work)
    print("1..%d" % n)
    lines, tot = table(results, cases)
    print("#")
    for l in lines:
        print("# " + l)
    if not netem:
        print("# (netem-corrupt not run: this kernel has no sch_netem; loss via nft, latency via the relay)")
    failed = tot[-1]
    print("# faults: %d injected, %d failed; %d lost, %d twice, %d in doubt; memory intact %d/%d checked "
          "(%d busy guests back on the source not checkable); %.0f s" % (
              n, failed, tot[4], tot[5], tot[6], tot[7], n - tot[8], tot[8], time.monotonic() - t0))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
