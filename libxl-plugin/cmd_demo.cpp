// fastmig demo: a sim domain migrated to a receiver process on this host
// (or in another network namespace), with the report of both sides.
#include "libxl-plugin/cli.hpp"
#include "libxl-plugin/migrate_cli.hpp"
#include "libxl-plugin/netns.hpp"
#include "libxl-plugin/report.hpp"

#include "stream/auth/auth.hpp"
#include "stream/clock.hpp"
#include "stream/codec/codec.hpp"
#include "stream/domain/sim/sim.hpp"
#include "stream/sender.hpp"
#include "stream/spawn.hpp"
#include "stream/transport.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace fastmig::cli {

namespace {

std::string fd_text(int fd)
{
    std::string s;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            s.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
    return s;
}

std::map<std::string, std::string> parse_kv(const std::string& text)
{
    std::map<std::string, std::string> kv;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        auto eq = line.find('=');
        if (eq != std::string::npos)
            kv[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return kv;
}

// What `fastmig demo` was asked for.
struct DemoPlan {
    sim::SimConfig cfg;
    SendOptions so;
    unsigned channels = 2;
    std::string psk_path; // handed on to the receiver
    bool json = false;
    bool keep = false;
    std::chrono::milliseconds warmup{500};
    std::string raddr;
    std::optional<std::string> rns, sns;

    void say(const std::string& s) const
    {
        if (!json) {
            std::printf("%s\n", s.c_str());
            std::fflush(stdout);
        }
    }
};

DemoPlan demo_plan(const std::vector<std::string>& args)
{
    auto valued = kSendValued;
    valued.insert({"memory", "workload", "seed", "warmup-ms", "rate-scale", "sender-netns", "receiver-netns",
                   "receiver-address", "psk-file", "cipher"});
    auto flags = kSendFlags;
    flags.insert({"json", "keep", "no-verify"});
    Options o(args, valued, flags);
    if (!o.positional().empty())
        throw UsageError("demo takes no positional argument: '" + o.positional()[0] + "'");
    DemoPlan p;
    p.cfg = sim_config(o);
    apply_send_options(o, p.so, p.channels);
    p.so.verify = !o.flag("no-verify");
    p.so.psk = load_psk(o, &p.psk_path);
    p.so.suite = load_cipher(o, !p.so.psk.empty());
    p.json = o.flag("json");
    p.keep = o.flag("keep");
    p.warmup = std::chrono::milliseconds(o.uint_or("warmup-ms", 500));
    p.raddr = o.get_or("receiver-address", "127.0.0.1");
    p.rns = o.get("receiver-netns");
    p.sns = o.get("sender-netns");
    if ((p.rns || p.sns) && !o.get("receiver-address"))
        throw UsageError("--sender-netns/--receiver-netns need --receiver-address (the receiver's address in its namespace)");
    return p;
}

std::string bracketed(const std::string& addr)
{
    return addr.find(':') != std::string::npos ? "[" + addr + "]" : addr;
}

// The source, the receiver process and the destination the receiver made:
// what the demo removes when it ends (the destination only on failure or
// without --keep).
struct DemoRun {
    int src_id = -1;
    int dest_id = -1;
    pid_t receiver = -1;
    Fd result; // the receiver's result pipe: "port=N", then its key=value result

    void cleanup(bool destroy_dest)
    {
        result.reset();
        if (receiver > 0) {
            ::kill(receiver, SIGTERM);
            ::waitpid(receiver, nullptr, 0);
            receiver = -1;
        }
        // The sender released the source on success; otherwise it still runs
        // and belongs to this demo.
        try {
            sim::destroy_domain(src_id);
        } catch (...) {
        }
        if (destroy_dest && dest_id > 0) {
            try {
                sim::destroy_domain(dest_id);
            } catch (...) {
            }
        }
    }
};

// The receiver is a separate process, as on a real destination host.  It
// listens on a free port and reports it on the result pipe; returns it.
std::string start_receiver(const DemoPlan& p, DemoRun& run)
{
    SpawnSpec spec;
    const std::string bin = sim::fastmig_binary();
    // The demo's sender does not resolve a lost COMMIT: no records kept.
    spec.argv = {bin, "receive", "--listen", bracketed(p.raddr) + ":0", "--result-fd", "4", "--quiet",
                 "--accept-timeout-ms", "60000", "--timeout-ms", std::to_string(p.so.io_timeout.count()),
                 "--outcome-dir", "none"};
    if (p.rns)
        spec.argv.insert(spec.argv.end(), {"--netns", *p.rns});
    if (!p.psk_path.empty())
        spec.argv.insert(spec.argv.end(), {"--psk-file", p.psk_path, "--cipher", auth::suite_name(p.so.suite)});
    spec.report_fd = 4;
    spec.exec_failed = "cannot execute " + bin + " (set FASTMIG_BIN)\n";
    Spawned child = spawn_reporting(spec);
    run.receiver = child.pid;
    run.result = std::move(child.report);
    // The first line from the receiver is its port (or an error).
    std::string first = read_report_line(run.result.get(), std::nullopt, 256).text;
    if (first.rfind("port=", 0) != 0)
        throw Error("the receiver did not start" + (first.empty() ? std::string() : ": " + first));
    return first.substr(5);
}

std::string demo_banner(const DemoPlan& p, int src_id, const HostPort& dest)
{
    const SendOptions& so = p.so;
    return "migrating sim:" + std::to_string(src_id) + " to a receiver on " + dest.str() + " (" +
           std::to_string(so.pipeline.threads) + " threads, " + std::to_string(p.channels) + " channels, " +
           codec::algorithm_name(so.pipeline.compression.algorithm) + ", downtime target " +
           std::to_string(so.policy.downtime_target_ms).substr(0, 5) + " ms" +
           (so.psk.empty() ? ""
                           : auth::encrypts(so.suite) ? std::string(", encrypted with ") + auth::suite_name(so.suite)
                                                      : std::string(", authenticated, not encrypted")) +
           ")...";
}

// Sends the source to the receiver on `port`: the sender's half of the
// report.  On failure, learns from the receiver the destination it made
// (if any), so that the cleanup removes it.
MigrationReport send_to_receiver(DemoPlan& p, DemoRun& run, const std::string& port)
{
    auto dom = sim::attach(run.src_id);
    HostPort dest = parse_host_port(bracketed(p.raddr) + ":" + port);
    p.say(demo_banner(p, run.src_id, dest));
    Fd conn = tcp_connect(dest, p.so.io_timeout);
    set_channels(p.so, p.channels, dest);
    ProgressLine pl(!p.json && isatty(2));
    p.so.progress = [&](const Progress& pr) { pl.update(pr); };
    MigrationReport rep;
    rep.workload = p.cfg.workload;
    rep.memory_bytes = p.cfg.memory_bytes;
    rep.compress = codec::algorithm_name(p.so.pipeline.compression.algorithm);
    double cpu_before = self_cpu_ms();
    try {
        rep.send = send_domain(*dom, conn.get(), p.so);
    } catch (...) {
        pl.finish();
        auto kv = parse_kv(fd_text(run.result.get()));
        if (kv.count("destination"))
            run.dest_id = parse_sim_domain(kv["destination"]);
        throw;
    }
    pl.finish();
    rep.sender_rss_kib = self_rss_kib();
    rep.sender_cpu_ms = self_cpu_ms() - cpu_before;
    return rep;
}

// The receiver's half of the report: its result, its resources, the downtime.
void collect_receiver(DemoRun& run, MigrationReport& rep)
{
    auto kv = parse_kv(fd_text(run.result.get()));
    run.result.reset();
    int status = 0;
    rusage ru{};
    ::wait4(run.receiver, &status, 0, &ru);
    run.receiver = -1;
    rep.receiver_rss_kib = ru.ru_maxrss;
    rep.receiver_cpu_ms = cpu_ms(ru);
    if (kv.count("error"))
        throw Error("receiver: " + kv["error"]);
    if (!kv.count("destination"))
        throw Error("the receiver exited without a result (status " + std::to_string(status) + ")");
    rep.destination = kv["destination"];
    run.dest_id = parse_sim_domain(rep.destination);
    // Both sim domains live on this host: one monotonic clock.
    if (rep.send.paused_at_ns && rep.send.resumed_at_ns >= rep.send.paused_at_ns)
        rep.downtime_ms = double(rep.send.resumed_at_ns - rep.send.paused_at_ns) / 1e6;
}

} // namespace

int cmd_demo(const std::vector<std::string>& args)
{
    DemoPlan p = demo_plan(args);
    p.say("creating a " + human_bytes(double(p.cfg.memory_bytes)) + " sim domain running '" + p.cfg.workload + "'...");
    Stopwatch create_sw;
    DemoRun run;
    run.src_id = sim::create_domain(p.cfg);
    p.say("  sim:" + std::to_string(run.src_id) + " ready in " + std::to_string(int(create_sw.seconds() * 1000)) + " ms");
    try {
        const std::string port = start_receiver(p, run);
        if (p.sns)
            enter_netns(*p.sns);
        std::this_thread::sleep_for(p.warmup);
        MigrationReport rep = send_to_receiver(p, run, port);
        collect_receiver(run, rep);
        if (p.json) {
            std::printf("%s\n", report_json(rep).c_str());
        } else {
            std::printf("%s", report_table(rep).c_str());
            if (p.keep)
                std::printf("the destination domain %s keeps running (fastmig sim destroy %d)\n",
                            rep.destination.c_str(), run.dest_id);
        }
        run.cleanup(!p.keep);
        return rep.send.verified && !*rep.send.verified ? 1 : 0;
    } catch (...) {
        run.cleanup(true);
        throw;
    }
}

} // namespace fastmig::cli
