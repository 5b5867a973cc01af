#!/usr/bin/python3
"""benchtool.py: the helpers the bench shell scripts share.

  run      run one migration command, keep its JSON (last stdout line), add
           the child's CPU time (rusage), the tags and the derived figures
           (bytes that must move, physical limit), append to a JSON lines file
  table    print a readable table of a JSON lines file
  ablation print ratios of each ablation config to the default config
  plot     PNG of per-round bytes and dirty pages of one record
  qmp-migrate   drive a QEMU migration through QMP, print one JSON line
  peer-table    print the fastmig/QEMU comparison of a peer JSON lines file

Only the Python standard library, except `plot` (matplotlib).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

PAGE = 4096


# ---------------------------------------------------------------- run
def last_json(text):
    """The last line of `text` that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def must_move_bytes(rec):
    """Bytes that must cross the link, honestly: every page that is not
    zero at the start of the migration (pages_total - pages_zero), less the
    pages the guest reports free when the engine reports them (pages_free),
    times 4096.  Pages re-dirtied during precopy are NOT counted (they are
    the engine's cost, not the physics), and compression is NOT assumed
    (a compressible guest can therefore beat the limit: ratio < 1)."""
    total, zero = rec.get("pages_total"), rec.get("pages_zero")
    if total is None or zero is None:
        return None
    free = rec.get("pages_free") or 0
    return max(0, total - zero - free) * PAGE


def lo_tx_bytes(netns):
    """Bytes sent on the loopback of a private network namespace: every byte
    of the migration and nothing else (headers included), for fastmig and
    QEMU alike."""
    if not netns:
        return None
    try:
        out = subprocess.run(["ip", "netns", "exec", netns, "cat", "/sys/class/net/lo/statistics/tx_bytes"],
                             capture_output=True, text=True, check=True).stdout
        return int(out.strip())
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def cmd_run(a):
    tags = json.loads(a.tags) if a.tags else {}
    w0 = lo_tx_bytes(a.wire_netns)
    t0 = time.monotonic()
    try:
        # Its own process group, so that an interrupted benchmark can end the
        # command and everything it started (the demo's receiver) by that id.
        p = subprocess.Popen(a.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    except OSError as e:
        out, err, rc, ru = "", str(e), 127, None
    else:
        import signal

        def stop(signum, _frame):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            sys.exit(128 + signum)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            out, err = p.communicate(timeout=a.timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err += "\nbenchtool: timed out after %ss" % a.timeout
        # wait4 already happened inside communicate(); RUSAGE_CHILDREN is
        # cumulative, so the caller runs one `run` per process (the shell
        # starts a new python each time) and this is this command's CPU.
        import resource
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        rc = p.returncode
    wall_ms = (time.monotonic() - t0) * 1000
    rec = last_json(out) if rc == 0 else None
    if rec is None:
        rec = {"error": (err.strip().splitlines() or ["exit %d" % rc])[-1], "exit": rc}
    rec.update(tags)
    rec["wall_ms"] = round(wall_ms, 3)
    w1 = lo_tx_bytes(a.wire_netns)
    if w0 is not None and w1 is not None:
        rec["wire_bytes"] = w1 - w0
    if ru is not None:
        # CPU of the command and of every descendant it waited for (the demo
        # waits for its receiver; sim guests are daemons and are not counted).
        rec["rusage_cpu_ms"] = round((ru.ru_utime + ru.ru_stime) * 1000, 1)
    mm = must_move_bytes(rec)
    if mm is not None:
        rec["must_move_bytes"] = mm
        if a.link_bytes_per_s:
            rec["link_bytes_per_s"] = a.link_bytes_per_s
            limit_ms = mm / a.link_bytes_per_s * 1000
            rec["limit_ms"] = round(limit_ms, 3)
            if rec.get("total_ms") and limit_ms > 0:
                rec["total_over_limit"] = round(rec["total_ms"] / limit_ms, 3)
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if rc != 0:
        sys.stderr.write(err[-2000:])
    print(summary_line(rec))
    return 0 if "error" not in rec else 1


def summary_line(r):
    if "error" in r:
        return "  %-10s %-9s %-16s ERROR %s" % (r.get("scenario", "?"), r.get("link", "?"),
                                               r.get("config", ""), r["error"])
    return "  %-10s %-9s %-16s total %9.1f ms  downtime %7.2f ms  sent %8.1f MiB  limit x%s" % (
        r.get("scenario", "?"), r.get("link", "?"), r.get("config", ""),
        r.get("total_ms") or 0, downtime(r) or 0, (r.get("bytes_sent") or 0) / 2**20,
        r.get("total_over_limit", "-"))


def downtime(r):
    d = r.get("downtime_ms")
    return d if d is not None else r.get("source_downtime_ms")


# ---------------------------------------------------------------- tables
def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    return recs


def fmt(v, spec):
    if v is None or v == "":
        return "-"
    try:
        return spec % v
    except TypeError:
        return str(v)


def cpu_ms(r):
    """Sender + receiver CPU as fastmig reports it; the child's rusage when
    it does not (demo: sender + receiver processes, guests excluded)."""
    if r.get("cpu_ms") is not None:
        return r["cpu_ms"] + (r.get("receiver_cpu_ms") or 0)
    return r.get("rusage_cpu_ms")


def aggregate_groups(recs):
    """vdi xN: N records with one group id become one extra row: makespan
    (the slowest guest's total), summed bytes and CPU, the worst downtime."""
    groups = {}
    for r in recs:
        g = r.get("group")
        if g and "error" not in r:
            groups.setdefault(g, []).append(r)
    rows = []
    for g, rs in groups.items():
        if len(rs) < 2:
            continue
        a = dict(rs[0])
        a["scenario"] = "%s x%d" % (rs[0].get("scenario"), len(rs))
        a["total_ms"] = max(x.get("total_ms") or 0 for x in rs)
        a["downtime_ms"] = max(downtime(x) or 0 for x in rs)
        for k in ("bytes_sent", "must_move_bytes", "memory_bytes"):
            a[k] = sum(x.get(k) or 0 for x in rs)
        c = [cpu_ms(x) for x in rs]
        a["cpu_ms"] = sum(x for x in c if x is not None) if any(x is not None for x in c) else None
        a["receiver_cpu_ms"] = None
        if a.get("link_bytes_per_s"):
            a["limit_ms"] = a["must_move_bytes"] / a["link_bytes_per_s"] * 1000
            a["total_over_limit"] = round(a["total_ms"] / a["limit_ms"], 3) if a["limit_ms"] else None
        a["aggregate"] = True
        rows.append(a)
    return rows


HEAD = ("scenario", "link", "config", "GiB", "total_ms", "down_ms", "sent_MiB", "mustmove_MiB",
        "cratio", "cpu_ms", "limit_ms", "tot/limit", "rounds", "ok")


def table_rows(recs):
    rows = []
    for r in recs + aggregate_groups(recs):
        if "error" in r:
            rows.append((r.get("scenario", "?"), r.get("link", "?"), r.get("config", ""), "", "ERROR",
                         "", "", "", "", "", "", "", "", "see errors below"))
            continue
        rows.append((
            r.get("scenario", "?") + ("" if r.get("aggregate") or not r.get("group") else "#%s" % r.get("member", "")),
            r.get("link", "?"), r.get("config", ""),
            fmt((r.get("memory_bytes") or 0) / 2**30, "%.2f"),
            fmt(r.get("total_ms"), "%.1f"),
            fmt(downtime(r), "%.2f") + ("" if r.get("downtime_ms") is not None or downtime(r) is None else "s"),
            fmt((r.get("bytes_sent") or 0) / 2**20, "%.1f"),
            fmt((r.get("must_move_bytes") or 0) / 2**20, "%.1f"),
            fmt(r.get("compress_ratio"), "%.2f"),
            fmt(cpu_ms(r), "%.0f"),
            fmt(r.get("limit_ms"), "%.1f"),
            fmt(r.get("total_over_limit"), "%.2f"),
            fmt(r.get("rounds"), "%d"),
            {True: "yes", False: "NO", None: "-"}.get(r.get("verified"), "-"),
        ))
    return rows


def render(head, rows):
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    out = ["  ".join(str(h).rjust(n) for h, n in zip(head, w)),
           "  ".join("-" * n for n in w)]
    for r in rows:
        out.append("  ".join(str(x).rjust(n) for x, n in zip(r, w)))
    return "\n".join(out)


def cmd_table(a):
    recs = load(a.file)
    print(render(HEAD, table_rows(recs)))
    errs = [r for r in recs if "error" in r]
    if errs:
        print("\nerrors:")
        for r in errs:
            print("  %s %s %s: %s" % (r.get("scenario"), r.get("link"), r.get("config"), r["error"]))
    print("\ndown_ms: destination-side downtime (demo); a trailing 's' marks the source-side\n"
          "downtime (send/receive path, no common clock). mustmove_MiB: non-zero pages at\n"
          "round 0 (see README). limit_ms = mustmove / link rate (loopback: measured TCP rate).\n"
          "cratio: fastmig's compress_ratio (- when the build does not report it).\n"
          "cpu_ms: sender+receiver CPU (fastmig's figures, else the demo's rusage).")


def cmd_ablation(a):
    recs = [r for r in load(a.file) if "error" not in r]
    errs = [r for r in load(a.file) if "error" in r]
    by = {}
    for r in recs:
        by.setdefault((r.get("scenario"), r.get("link")), {}).setdefault(r.get("config"), []).append(r)
    head = ("scenario", "link", "config", "total_ms", "x total", "down_ms", "x down", "sent_MiB",
            "x sent", "cpu_ms", "x cpu")
    rows = []
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None
    for (sc, ln), cfgs in by.items():
        base = cfgs.get(a.base)
        if not base:
            continue
        bt = med([x["total_ms"] for x in base])
        bd = med([downtime(x) or 0 for x in base])
        bs = med([x["bytes_sent"] for x in base])
        bc = med([cpu_ms(x) or 0 for x in base])
        for cfg, rs in cfgs.items():
            t = med([x["total_ms"] for x in rs]); d = med([downtime(x) or 0 for x in rs])
            s = med([x["bytes_sent"] for x in rs]); c = med([cpu_ms(x) or 0 for x in rs])
            rr = lambda x, y: "%.2f" % (x / y) if y else "-"
            rows.append((sc, ln, cfg, "%.1f" % t, rr(t, bt), "%.2f" % d, rr(d, bd),
                         "%.1f" % (s / 2**20), rr(s, bs), "%.0f" % c, rr(c, bc)))
    print(render(head, rows))
    for r in errs:
        print("ERROR %s %s %s: %s" % (r.get("scenario"), r.get("link"), r.get("config"), r["error"]))
    print("\nx = median of the config / median of the %s config (same scenario, same link,"
          "\nsame run)%s." % (a.base, "; > 1 means the feature that was turned off was helping"
                               if a.base == "default" else ""))


# ---------------------------------------------------------------- policy
def cmd_policy(a):
    """default vs --compress none vs --always-compress: medians per row, the
    default's ratio to the faster of the other two, and which way the
    policy went in the default runs.  A config tagged CONFIG@BUILD (run-policy.sh
    --builds) is one build's run: one row per build, then each build's
    median over the first build's, per configuration."""
    recs = [r for r in load(a.file) if "error" not in r]
    errs = [r for r in load(a.file) if "error" in r]
    by, builds = {}, []
    for r in recs:
        cfg, _, build = r.get("config", "").partition("@")
        if build not in builds:
            builds.append(build)
        by.setdefault((r.get("scenario"), r.get("size"), r.get("link"), build), {}).setdefault(cfg, []).append(r)
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None
    ratio = lambda x, y: "%.2f" % (x / y) if x and y else "-"
    head = ("scenario", "size", "link", "build", "n", "default_ms", "none_ms", "always_ms", "default/best",
            "default/none", "sent_MiB def/none/always", "cpu_ms def/none/always", "default compressed rounds")
    rows = []
    names = ("default", "compress-none", "always-compress")
    for (sc, size, ln, build), cfgs in by.items():
        d, n, al = (cfgs.get(c, []) for c in names)
        # run-policy.sh --ab-default-only: this build ran the default alone;
        # the first build's none and always stand for it.
        first = by.get((sc, size, ln, builds[0]), {})
        n, al = n or first.get("compress-none", []), al or first.get("always-compress", [])
        t = [med([x["total_ms"] for x in rs]) if rs else None for rs in (d, n, al)]
        others = [x for x in t[1:] if x]
        sent = "/".join("%.0f" % (med([x["bytes_sent"] for x in rs]) / 2**20) if rs else "-" for rs in (d, n, al))
        cpu = "/".join("%.0f" % med([cpu_ms(x) or 0 for x in rs]) if rs else "-" for rs in (d, n, al))
        comp = [sum(1 for s in x.get("round_stats", []) if (s.get("compression") or {}).get("compressing"))
                for x in d]
        rows.append((sc, size, ln, build or "-", "%d/%d/%d" % (len(d), len(n), len(al)),
                     "%.0f" % t[0] if t[0] else "-", "%.0f" % t[1] if t[1] else "-", "%.0f" % t[2] if t[2] else "-",
                     ratio(t[0], min(others) if others else None), ratio(t[0], t[1]), sent, cpu,
                     ",".join(map(str, comp)) or "-"))
    print(render(head, rows))
    if len(builds) > 1:
        base = builds[0]
        head2 = ("scenario", "size", "link", "config") + tuple("%s/%s" % (b, base) for b in builds[1:]) + \
                tuple("%s_ms (runs)" % b for b in builds)
        rows2 = []
        for (sc, size, ln, build), cfgs in by.items():
            if build != base:
                continue
            for c, rs in cfgs.items():
                m = [by.get((sc, size, ln, b), {}).get(c, []) for b in builds]
                mt = [med([x["total_ms"] for x in xs]) for xs in m]
                rows2.append((sc, size, ln, c) + tuple(ratio(x, mt[0]) for x in mt[1:]) +
                             tuple("%.0f (%s)" % (x, ",".join("%.0f" % y["total_ms"] for y in xs)) if x else "-"
                                   for x, xs in zip(mt, m)))
        print("\nbuilds (ratio of medians of total_ms, same row and config, same run; < 1: faster than %s)" % base)
        print(render(head2, rows2))
    for r in errs:
        print("ERROR %s %s %s: %s" % (r.get("scenario"), r.get("link"), r.get("config"), r["error"]))
    print("\nmedians of total_ms over the repeats (n = runs of default/none/always); default/best: the default's"
          "\nmedian over the faster of --compress none and --always-compress (same row, same run); the last"
          "\ncolumn: per default run, how many rounds ended with compression on.")


# ---------------------------------------------------------------- plot
def cmd_plot(a):
    try:
        import matplotlib
    except ImportError:
        # Optional (tests/bench/README.md): the tables are the result.
        print("plot: skipped, python3-matplotlib is not installed (apt-get install python3-matplotlib)")
        return 0
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    recs = [r for r in load(a.file) if r.get("round_stats")]
    if a.scenario:
        recs = [r for r in recs if r.get("scenario") == a.scenario]
    if a.link:
        recs = [r for r in recs if r.get("link") == a.link]
    if not recs:
        sys.exit("plot: no record with round_stats matches")
    r = recs[a.index]
    rs = r["round_stats"]
    x = [s["round"] for s in rs]
    mib = [s["bytes"] / 2**20 for s in rs]
    pages = [s["pages"] for s in rs]
    dirty = [s.get("dirty_after", 0) for s in rs]
    # dirty rate: pages dirtied while the round was being sent, per second
    rate = [s.get("dirty_after", 0) / (s["ms"] / 1000) if s.get("ms") else 0 for s in rs]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    colors = ["tab:red" if s.get("stop_copy") else "tab:blue" for s in rs]
    ax1.bar(x, mib, color=colors)
    ax1.set_ylabel("MiB sent in round")
    ax1.set_yscale("log")
    for xi, m, s in zip(x, mib, rs):
        ax1.annotate("%.1f ms" % s["ms"], (xi, m), ha="center", va="bottom", fontsize=8)
    ax1.set_title("%s %s GiB, link %s, config %s: total %.1f ms, downtime %s ms, %s\n(red = stop-and-copy round)" % (
        r.get("scenario"), "%.2f" % (r.get("memory_bytes", 0) / 2**30), r.get("link"), r.get("config", "default"),
        r.get("total_ms", 0), fmt(downtime(r), "%.2f"), r.get("stop_reason", "")), fontsize=10)
    ax2.plot(x, pages, "o-", label="pages in round")
    ax2.plot(x, dirty, "s-", label="dirty pages after round")
    ax2.set_yscale("symlog")
    ax2.set_ylabel("pages")
    ax2.set_xlabel("round")
    ax3 = ax2.twinx()
    ax3.plot(x, rate, "^--", color="tab:green", label="dirty rate: dirty after / round time (pages/s)")
    ax3.set_ylabel("dirty pages / s")
    h1, l1 = ax2.get_legend_handles_labels()
    h3, l3 = ax3.get_legend_handles_labels()
    # below the axes: over the data it hides the points that matter
    ax2.legend(h1 + h3, l1 + l3, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize=8)
    ax2.set_xticks(x)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print("plot: %s" % a.out)


# ---------------------------------------------------------------- QMP
class QMP:
    """Minimal QMP client: a JSON object per line; events are skipped."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.s.makefile("rw")
        self.read()  # greeting
        self.cmd("qmp_capabilities")

    def read(self):
        line = self.f.readline()
        if not line:
            raise RuntimeError("QMP connection closed")
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            r = self.read()
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError("%s: %s" % (name, r["error"].get("desc")))
            return r.get("return")


def cmd_qmp_migrate(a):
    src = QMP(a.src)
    dst = QMP(a.dst)
    caps = []
    if a.multifd:
        caps.append({"capability": "multifd", "state": True})
    if caps:
        # Both ends must agree on multifd before `migrate`.
        src.cmd("migrate-set-capabilities", capabilities=caps)
        dst.cmd("migrate-set-capabilities", capabilities=caps)
    # max-bandwidth in bytes/s: QEMU's default cap is 128 MiB/s; set it far
    # above anything loopback can do so that QEMU is not handicapped.
    params = {"max-bandwidth": a.max_bandwidth}
    dparams = {}
    if a.multifd:
        params["multifd-channels"] = a.channels
        params["multifd-compression"] = a.compression
        dparams = {"multifd-channels": a.channels, "multifd-compression": a.compression}
    src.cmd("migrate-set-parameters", **params)
    if dparams:
        dst.cmd("migrate-set-parameters", **dparams)
    w0 = lo_tx_bytes(a.wire_netns)
    t0 = time.monotonic()
    src.cmd("migrate", uri=a.uri)
    while True:
        q = src.cmd("query-migrate")
        st = q.get("status")
        if st in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() - t0 > a.timeout:
            src.cmd("migrate_cancel")
            q = {"status": "timeout"}
            break
        time.sleep(a.poll_ms / 1000)
    wall = (time.monotonic() - t0) * 1000
    # The destination reports completion on its side too; wait for it so
    # that both QEMUs are idle before they are killed.
    # Its completion time is recorded too (dst_done_ms, from `migrate`, to
    # the polling period): QEMU's total-time ends at the source, fastmig's at
    # the destination's DONE.
    dst_done = None
    for _ in range(3000):
        try:
            if dst.cmd("query-migrate").get("status") in ("completed", "failed"):
                dst_done = (time.monotonic() - t0) * 1000
                break
        except RuntimeError:
            break
        time.sleep(0.01)
    w1 = lo_tx_bytes(a.wire_netns)
    ram = q.get("ram", {})
    out = {"peer": "qemu", "status": q.get("status"), "qemu_total_ms": q.get("total-time"),
           "qemu_downtime_ms": q.get("downtime"), "qemu_setup_ms": q.get("setup-time"),
           "qemu_bytes": ram.get("transferred"), "qemu_ram_total": ram.get("total"),
           "qemu_zero_pages": ram.get("duplicate"), "qemu_normal_pages": ram.get("normal"),
           "qemu_mbps": ram.get("mbps"), "poll_wall_ms": round(wall, 1),
           "dst_done_ms": round(dst_done, 1) if dst_done is not None else None,
           "multifd": a.multifd, "channels": a.channels if a.multifd else 1,
           "compression": a.compression if a.multifd else "none"}
    if w0 is not None and w1 is not None:
        out["wire_bytes"] = w1 - w0
    print(json.dumps(out))
    return 0 if q.get("status") == "completed" else 1


def cmd_peer_table(a):
    recs = load(a.file)
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None
    # Two fastmig references per scenario: `send` of the very guest that was
    # dumped (byte-identical content) and `demo` of a guest with the same
    # size/workload/seed (same generator: the same content up to the guest's
    # own writes; its downtime is measured on one clock).
    # A config "send same guest@NAME" is one build of qemu-peer.sh --builds:
    # the ratio columns then hold one figure per build, in run order.
    ref, builds = {}, []
    for r in recs:
        if r.get("peer") == "fastmig" and "error" not in r:
            cfg, _, build = r.get("config", "").partition("@")
            kind = "send" if cfg.startswith("send") else "demo"
            if build not in builds:
                builds.append(build)
            ref.setdefault((r["scenario"], kind, build), []).append(r)
    head = ("scenario", "who", "config", "total_ms", "dst_done_ms", "down_ms", "sent_MiB", "wire_MiB",
            "send/qemu total", "demo/qemu total", "send/qemu wire")
    rows = []
    for r in recs:
        sc = r.get("scenario")
        if "error" in r or r.get("status") not in (None, "completed"):
            rows.append((sc, r.get("peer"), r.get("config", ""), "FAIL", "", "", "", "", "", "", "see below"))
            continue
        if r.get("peer") == "fastmig":
            rows.append((sc, "fastmig", r.get("config", ""), "%.1f" % r["total_ms"], "", fmt(downtime(r), "%.2f"),
                         "%.1f" % (r["bytes_sent"] / 2**20), fmt((r.get("wire_bytes") or 0) / 2**20, "%.1f"),
                         "", "", ""))
            continue
        t, b = r.get("qemu_total_ms"), r.get("qemu_bytes")
        def rt(kind, key, den):
            def one(b):
                xs = [x[key] for x in ref.get((sc, kind, b), [])]
                return "%.3f" % (med(xs) / den) if xs and den else "-"
            return "/".join(one(b) for b in builds)
        rows.append((sc, "qemu", r.get("config", ""), fmt(t, "%.0f"), fmt(r.get("dst_done_ms"), "%.0f"),
                     fmt(r.get("qemu_downtime_ms"), "%.0f"),
                     fmt((b or 0) / 2**20, "%.1f"), fmt((r.get("wire_bytes") or 0) / 2**20, "%.1f"),
                     rt("send", "total_ms", t), rt("demo", "total_ms", t),
                     rt("send", "wire_bytes", r.get("wire_bytes"))))
    print(render(head, rows))
    for r in recs:
        if "error" in r or r.get("status") not in (None, "completed"):
            print("FAILED %s %s: %s" % (r.get("scenario"), r.get("config"), r.get("error", r.get("status"))))
    print("\nratio < 1: fastmig is faster (or sends less). QEMU total_ms is its own 'total-time'"
          "\n(migrate command to completion at the source; dst_done_ms: until the destination says"
          "\ncompleted, polled every 10 ms); fastmig's is connect to DONE. Same content, same loopback."
          "\nsend = fastmig send of the dumped guest; demo = fastmig demo, same size/workload/seed."
          "\nsent_MiB: each tool's own count (QEMU: ram.transferred); wire_MiB: bytes on the"
          "\nloopback of the private netns both run in (TCP/IP headers included)."
          "\nQEMU's guest is paused for the whole migration: its downtime figure means little."
          "\ndst-memfd: QEMU's destination RAM is a memfd (memory-backend-memfd), as the sim's is."
          + ("\nratio columns: one figure per build, %s." % " / ".join(b or "-" for b in builds)
             if len(builds) > 1 else ""))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="sub", required=True)
    p = sub.add_parser("run")
    p.add_argument("--out", required=True)
    p.add_argument("--tags", default="")
    p.add_argument("--link-bytes-per-s", type=float, default=0)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--wire-netns", help="count loopback bytes in this netns")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("table"); p.add_argument("file"); p.set_defaults(fn=cmd_table)
    p = sub.add_parser("ablation"); p.add_argument("file")
    p.add_argument("--base", default="default", help="the configuration the ratios are relative to")
    p.set_defaults(fn=cmd_ablation)
    p = sub.add_parser("policy"); p.add_argument("file"); p.set_defaults(fn=cmd_policy)
    p = sub.add_parser("peer-table"); p.add_argument("file"); p.set_defaults(fn=cmd_peer_table)
    p = sub.add_parser("plot")
    p.add_argument("file"); p.add_argument("--out", required=True)
    p.add_argument("--scenario"); p.add_argument("--link"); p.add_argument("--index", type=int, default=0)
    p.set_defaults(fn=cmd_plot)
    p = sub.add_parser("qmp-migrate")
    p.add_argument("--src", required=True); p.add_argument("--dst", required=True)
    p.add_argument("--uri", required=True)
    p.add_argument("--multifd", action="store_true")
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--compression", default="none")
    p.add_argument("--max-bandwidth", type=int, default=100 * 2**30)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--wire-netns", help="count loopback bytes in this netns")
    # query-migrate takes QEMU's big lock; polling too often could slow the
    # migration it measures (checked: 20 ms and 250 ms give the same times)
    p.add_argument("--poll-ms", type=float, default=float(os.environ.get("QMP_POLL_MS", 20)))
    p.set_defaults(fn=cmd_qmp_migrate)
    a = ap.parse_args()
    if a.sub == "run":
        if a.cmd and a.cmd[0] == "--":
            a.cmd = a.cmd[1:]
        if not a.cmd:
            ap.error("run: no command")
    sys.exit(a.fn(a) or 0)


if __name__ == "__main__":
    main()
