// fastmig demo / send / receive.
#include "libxl-plugin/cli.hpp"
#include "libxl-plugin/netns.hpp"
#include "libxl-plugin/report.hpp"

#include "stream/auth/auth.hpp"
#include "stream/clock.hpp"
#include "stream/codec/codec.hpp"
#include "stream/domain/sim/sim.hpp"
#include "stream/outcome_store.hpp"
#include "stream/receiver.hpp"
#include "stream/sender.hpp"
#include "stream/spawn.hpp"
#include "stream/transport.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace fastmig::cli {

namespace {

// receive's default --max-memory: this host's RAM.  A sim guest lives in it
// (a memfd), so a larger one cannot be received here anyway, and a hostile
// header cannot make the receiver size its per-page bookkeeping for 2^40
// pages (about 2 bits a page, 8 bytes with --verify) before refusing.
std::uint64_t host_memory_bytes()
{
    long pages = ::sysconf(_SC_PHYS_PAGES), size = ::sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? std::uint64_t(pages) * std::uint64_t(size) : 0;
}

// --psk-file FILE, else $FASTMIG_PSK_FILE, else no key (docs/stream-format.md,
// Authentication).  Returns the path too, so demo can hand it on.
std::vector<std::uint8_t> load_psk(const Options& o, std::string* path_out = nullptr)
{
    std::string path;
    if (auto p = o.get("psk-file"))
        path = *p;
    else if (const char* e = std::getenv("FASTMIG_PSK_FILE"); e && *e)
        path = e;
    if (path.empty())
        return {};
    if (path_out)
        *path_out = path;
    try {
        return auth::load_key_file(path);
    } catch (const Error& e) {
        throw UsageError((o.get("psk-file") ? "--psk-file: " : "FASTMIG_PSK_FILE: ") + e.cause());
    }
}

// --cipher NAME (docs/stream-format.md, Encryption): what protects the
// records once a key is given; both ends must name the same one.
auth::Suite load_cipher(const Options& o, bool have_key)
{
    auto name = o.get("cipher");
    if (!name)
        return auth::kDefaultSuite;
    auto s = auth::parse_suite_name(*name);
    if (!s)
        throw UsageError("--cipher: '" + *name + "' is not one of aes-256-gcm, chacha20-poly1305, none");
    if (!have_key && auth::encrypts(*s))
        throw UsageError("--cipher " + *name + " needs a key (--psk-file): the encryption keys are derived from it");
    return *s;
}

bool is_loopback(const std::string& host)
{
    return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// Channel 0 is connected here; the sender opens the others after the
// destination's ACCEPT, through this.
void set_channels(SendOptions& so, unsigned channels, const HostPort& dest)
{
    so.channels = channels;
    so.connect_channel = [dest, t = so.io_timeout] { return tcp_connect(dest, t).release(); };
}

// A connection lost after COMMIT is followed by outcome queries to the same
// address (docs/stream-format.md, Resolving a lost COMMIT), unless
// --no-resolve.
void set_resolve(const Options& o, SendOptions& so, const HostPort& dest)
{
    if (o.flag("no-resolve"))
        return;
    ResolveOptions& r = so.resolve;
    r.deadline = std::chrono::milliseconds(o.uint_or("resolve-deadline-ms", 120000));
    r.retry_interval = std::chrono::milliseconds(o.uint_or("resolve-interval-ms", 2000));
    r.max_attempts = static_cast<unsigned>(o.uint_or("resolve-attempts", 60));
    if (r.deadline.count() < 100 || r.retry_interval.count() < 10 || r.max_attempts < 1 || r.max_attempts > 100000)
        throw UsageError("--resolve-deadline-ms must be at least 100, --resolve-interval-ms at least 10, "
                         "--resolve-attempts 1..100000");
    r.attempt_timeout = so.io_timeout;
    r.destination = dest.str();
    r.connect = [dest](std::chrono::milliseconds t) { return tcp_connect(dest, t).release(); };
    // Not errors (the one error line comes at the end): progress of the
    // resolution, for the log of whoever runs fastmig send.
    r.log = [](const std::string& line) { std::fprintf(stderr, "resolve: %s\n", line.c_str()); };
}

double cpu_ms(const rusage& ru)
{
    return (double(ru.ru_utime.tv_sec) + double(ru.ru_stime.tv_sec)) * 1e3 +
           (double(ru.ru_utime.tv_usec) + double(ru.ru_stime.tv_usec)) / 1e3;
}

// A one-line progress display on a terminal, rewritten in place.
class ProgressLine {
public:
    explicit ProgressLine(bool enabled) : on_(enabled) {}
    ~ProgressLine() { finish(); }
    void update(const Progress& p)
    {
        if (!on_)
            return;
        double pct = p.pages_round ? 100.0 * double(p.pages_done) / double(p.pages_round) : 100.0;
        double rate = p.elapsed_s > 0 ? double(p.bytes_total) / p.elapsed_s : 0;
        std::fprintf(stderr, "\r  %s %-3u %5.1f%%  %10s sent  %10s/s  %6.1f s   ", p.stop_copy ? "stop-copy" : "round    ",
                     p.round, pct, human_bytes(double(p.bytes_total)).c_str(), human_bytes(rate).c_str(), p.elapsed_s);
        dirty_ = true;
    }
    void finish()
    {
        if (on_ && dirty_)
            std::fprintf(stderr, "\r%80s\r", "");
        dirty_ = false;
    }

private:
    bool on_;
    bool dirty_ = false;
};

long self_rss_kib()
{
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

double self_cpu_ms()
{
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return cpu_ms(ru);
}

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

// The outcome records of `receive` (docs/stream-format.md, Resolving a lost
// COMMIT): --outcome-dir DIR (none: no records, feature OUTCOME refused),
// kept --outcome-keep-ms.
std::unique_ptr<OutcomeStore> open_outcome_store(const Options& o)
{
    const std::string dir = o.get_or("outcome-dir", default_outcome_dir());
    if (dir == "none")
        return nullptr;
    const auto keep_ms = o.uint_or("outcome-keep-ms", 24ull * 3600 * 1000);
    if (keep_ms < 1000)
        throw UsageError("--outcome-keep-ms must be at least 1000");
    try {
        return std::make_unique<OutcomeStore>(dir, std::chrono::seconds(keep_ms / 1000));
    } catch (const Error& e) {
        throw Error("--outcome-dir: " + e.cause() + " (or --outcome-dir none: a lost COMMIT then stays in doubt)");
    }
}

// Migrations whose source may come back to ask for the outcome: READY went
// out and no DONE_ACK came back.  The receive loop stays up for them (up
// to --outcome-linger-ms after the last one), even without --keep-listening.
class Askers {
public:
    void set(const wire::MigrationId& id, bool pending)
    {
        if (pending) {
            ids_.insert(id);
            until_ = std::chrono::steady_clock::now() + linger_;
        } else {
            ids_.erase(id);
        }
    }
    void answered(const wire::MigrationId& id) { ids_.erase(id); }
    bool waiting() const { return !ids_.empty(); }
    std::chrono::milliseconds left() const
    {
        return std::max(std::chrono::milliseconds(0), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                          until_ - std::chrono::steady_clock::now()));
    }
    std::chrono::milliseconds linger_{300000};

private:
    std::set<wire::MigrationId> ids_;
    std::chrono::steady_clock::time_point until_{};
};

// Runs one receive on an accepted connection and writes key=value results
// to result_fd (if >= 0).
int receive_one(int conn, const ReceiveOptions& ro, int result_fd, bool quiet, Askers& askers)
{
    sim::SimProvider provider;
    try {
        ReceiveResult r = receive_domain(conn, provider, ro);
        if (r.query_id) {
            if (r.query_answer != wire::OutcomeAnswer::unknown)
                askers.answered(*r.query_id);
            if (!quiet)
                std::printf("answered an outcome query for migration %s: %s\n",
                            wire::migration_id_hex(*r.query_id).c_str(), wire::outcome_answer_name(r.query_answer));
            std::fflush(stdout);
            return 0;
        }
        if (result_fd >= 0) {
            std::string kv = "destination=" + r.domain + "\nbytes_received=" + std::to_string(r.bytes_received) +
                             "\npages_written=" + std::to_string(r.pages_written) + "\nresumed_at_ns=" +
                             std::to_string(r.resumed_at_ns) + "\nreceive_ms=" + std::to_string(r.receive_ms) +
                             "\nrestore_ms=" + std::to_string(r.restore_ms) + "\n";
            write_all(result_fd, {reinterpret_cast<const std::uint8_t*>(kv.data()), kv.size()},
                      std::chrono::milliseconds(5000));
        }
        if (!quiet)
            std::printf("received %s as %s: %s in %u rounds, running (restore %.2f ms)\n", r.source_name.c_str(),
                        r.domain.c_str(), human_bytes(double(r.bytes_received)).c_str(), r.rounds, r.restore_ms);
        if (!r.done_delivered)
            std::fprintf(stderr,
                         "fastmig receive: %s: finish: the domain runs here, but DONE did not reach the source (%s); "
                         "the source keeps its copy paused: destroy it there\n",
                         r.domain.c_str(), r.done_error.c_str());
        return 0;
    } catch (const std::exception& e) {
        if (ro.queries_only) {
            // Not a migration's failure (a source that gave up an attempt,
            // a stray connection): the one migration's status stands.
            std::fprintf(stderr, "fastmig receive: warning: while waiting for outcome queries: %s\n", e.what());
            return 1;
        }
        std::fprintf(stderr, "fastmig receive: %s\n", e.what());
        if (result_fd >= 0) {
            std::string kv = std::string("error=") + e.what() + "\n";
            (void)!::write(result_fd, kv.data(), kv.size());
        }
        return 1;
    }
}

} // namespace

int cmd_receive(const std::vector<std::string>& args)
{
    Options o(args,
              {"listen", "listen-fd", "result-fd", "max-memory", "timeout-ms", "commit-timeout-ms", "accept-timeout-ms",
               "netns", "psk-file", "cipher", "outcome-dir", "outcome-keep-ms", "outcome-linger-ms"},
              {"keep-listening", "quiet"});
    if (!o.positional().empty())
        throw UsageError("receive takes no positional argument (did you mean --listen " + o.positional()[0] + "?)");
    ReceiveOptions ro;
    ro.max_memory_bytes = o.size_or("max-memory", host_memory_bytes()); // 0: no limit
    ro.io_timeout = std::chrono::milliseconds(o.uint_or("timeout-ms", 30000));
    ro.commit_timeout = std::chrono::milliseconds(o.uint_or("commit-timeout-ms", 30000));
    if (ro.io_timeout.count() < 100 || ro.commit_timeout.count() < 100)
        throw UsageError("--timeout-ms and --commit-timeout-ms must be at least 100");
    int result_fd = o.get("result-fd") ? static_cast<int>(o.uint_or("result-fd", 0)) : -1;
    // Inherited descriptors must not leak into the domains this receiver
    // creates (whoever reads result_fd waits for its EOF).
    if (result_fd >= 0)
        ::fcntl(result_fd, F_SETFD, FD_CLOEXEC);
    bool quiet = o.flag("quiet");
    ro.psk = load_psk(o);
    ro.suite = load_cipher(o, !ro.psk.empty());
    auto accept_timeout = std::chrono::milliseconds(o.uint_or("accept-timeout-ms", 24ull * 3600 * 1000));
    Askers askers;
    askers.linger_ = std::chrono::milliseconds(o.uint_or("outcome-linger-ms", 300000));
    auto outcomes = open_outcome_store(o);
    ro.outcomes = outcomes.get();
    ro.outcome_pending = [&](const wire::MigrationId& id, bool pending) { askers.set(id, pending); };
    if (auto ns = o.get("netns"))
        enter_netns(*ns);

    Fd listener;
    if (auto lfd = o.get("listen-fd")) {
        listener.reset(static_cast<int>(parse_uint(*lfd, "--listen-fd")));
        ::fcntl(listener.get(), F_SETFD, FD_CLOEXEC);
    } else if (auto where = o.get("listen")) {
        HostPort hp;
        try {
            hp = parse_host_port(*where);
        } catch (const Error& e) {
            throw UsageError(e.cause());
        }
        listener = tcp_listen(hp);
        hp.port = bound_port(listener.get());
        if (ro.psk.empty() && !is_loopback(hp.host) && !quiet)
            std::fprintf(stderr,
                         "fastmig receive: warning: listening on %s without --psk-file: anyone who can reach this "
                         "port can send a domain (see README.md, Authentication)\n",
                         hp.host.c_str());
        if (!quiet)
            std::printf("listening on %s\n", hp.str().c_str());
        std::fflush(stdout);
        if (result_fd >= 0) {
            std::string kv = "port=" + std::to_string(hp.port) + "\n";
            write_all(result_fd, {reinterpret_cast<const std::uint8_t*>(kv.data()), kv.size()},
                      std::chrono::milliseconds(5000));
        }
    } else {
        throw UsageError("receive needs --listen HOST:PORT");
    }
    // Extra channels of a migration are the next connections on the same port.
    ro.accept_channel = [&](std::chrono::milliseconds t) { return tcp_accept(listener.get(), t).release(); };
    int rc = 0;
    do {
        Fd conn = tcp_accept(listener.get(), accept_timeout);
        rc = receive_one(conn.get(), ro, result_fd, quiet, askers);
    } while (o.flag("keep-listening"));
    // One migration taken: its source may still come back and ask what
    // became of it (the connection was lost after READY), so stay for the
    // question, answering nothing else, until it is asked or the linger ends.
    ro.queries_only = true;
    while (askers.waiting() && askers.left().count() > 0) {
        Fd conn;
        try {
            conn = tcp_accept(listener.get(), askers.left());
        } catch (const Error&) {
            break; // nobody asked in time
        }
        receive_one(conn.get(), ro, -1, true, askers);
    }
    return rc;
}

int cmd_send(const std::vector<std::string>& args)
{
    auto flags = kSendFlags;
    flags.insert({"verify", "json", "no-release", "quiet"});
    auto valued = kSendValued;
    valued.insert({"psk-file", "cipher"}); // direct channels only: xl migrate keeps its ssh transport
    valued.insert({"resolve-deadline-ms", "resolve-interval-ms", "resolve-attempts"});
    flags.insert("no-resolve");
    Options o(args, valued, flags);
    if (o.positional().size() != 2)
        throw UsageError("usage: fastmig send DOMAIN HOST:PORT [options] (see fastmig help)");
    int id = parse_sim_domain(o.positional()[0]);
    HostPort dest;
    try {
        dest = parse_host_port(o.positional()[1]);
    } catch (const Error& e) {
        throw UsageError(e.cause());
    }
    SendOptions so;
    unsigned channels = 2;
    apply_send_options(o, so, channels);
    so.verify = o.flag("verify");
    so.release_source = !o.flag("no-release");
    so.psk = load_psk(o);
    so.suite = load_cipher(o, !so.psk.empty());
    bool json = o.flag("json");
    ProgressLine pl(!json && !o.flag("quiet") && isatty(2));
    so.progress = [&](const Progress& p) { pl.update(p); };

    auto dom = sim::attach(id);
    Fd conn;
    try {
        conn = tcp_connect(dest, so.io_timeout);
    } catch (const Error& e) {
        throw Error(dom->name(), Phase::setup, e.cause() + "; the domain keeps running on the source");
    }
    set_channels(so, channels, dest);
    set_resolve(o, so, dest);
    // Not an error line: what to ask if this process dies after COMMIT.
    const std::string dom_name = dom->name(), dest_name = o.positional()[1];
    so.on_commit = [&](const wire::MigrationId& mid) {
        std::fprintf(stderr,
                     "commit: %s, migration %s: should this process die before it reports, the domain stays "
                     "paused here; then run: fastmig resolve %s %s %s\n",
                     dom_name.c_str(), wire::migration_id_hex(mid).c_str(), dom_name.c_str(), dest_name.c_str(),
                     wire::migration_id_hex(mid).c_str());
    };
    MigrationReport rep;
    rep.memory_bytes = dom->nr_pages() * kPageSize;
    rep.compress = codec::algorithm_name(so.pipeline.compression.algorithm);
    rep.send = send_domain(*dom, conn.get(), so);
    pl.finish();
    rep.sender_rss_kib = self_rss_kib();
    rep.sender_cpu_ms = self_cpu_ms();
    // Two hosts have two clocks: only the source's upper bound is known here.
    rep.downtime_ms = -1;
    if (json)
        std::printf("%s\n", report_json(rep).c_str());
    else
        std::printf("%s", report_table(rep).c_str());
    return rep.send.verified && !*rep.send.verified ? 1 : 0;
}

namespace {

wire::MigrationId parse_migration_id_hex(const std::string& s)
{
    wire::MigrationId id{};
    if (s.size() != 2 * id.size() || s.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
        throw UsageError("a migration id is 32 hexadecimal digits (as `fastmig send` printed it): '" + s + "'");
    for (std::size_t i = 0; i < id.size(); ++i)
        id[i] = static_cast<std::uint8_t>(std::stoul(s.substr(2 * i, 2), nullptr, 16));
    if (id == wire::MigrationId{})
        throw UsageError("the migration id 0 is never drawn");
    return id;
}

} // namespace

// The source's question after the fact (a sender killed after COMMIT, or
// in doubt because the destination was unreachable until its deadline):
// the same OUTCOME_QUERY as send's own resolution, then the same action.
int cmd_resolve(const std::vector<std::string>& args)
{
    Options o(args, {"psk-file", "timeout-ms", "resolve-deadline-ms", "resolve-interval-ms", "resolve-attempts"}, {});
    if (o.positional().size() != 3)
        throw UsageError("usage: fastmig resolve DOMAIN HOST:PORT MIGRATION_ID [options] (see fastmig help)");
    const int id = parse_sim_domain(o.positional()[0]);
    HostPort dest;
    try {
        dest = parse_host_port(o.positional()[1]);
    } catch (const Error& e) {
        throw UsageError(e.cause());
    }
    const auto mid = parse_migration_id_hex(o.positional()[2]);
    SendOptions so;
    so.io_timeout = std::chrono::milliseconds(o.uint_or("timeout-ms", 30000));
    so.psk = load_psk(o);
    set_resolve(o, so, dest);
    const std::string name = "sim:" + std::to_string(id);
    // Only a source kept paused by a migration may be resolved: a running
    // one was resumed already (or never paused), and acting on it could
    // destroy the one copy that runs.
    const auto state = sim::domain_info(id).state;
    if (state != "paused")
        throw UsageError(name + " is " + state + ", not paused: nothing to resolve");
    Resolution r = resolve_outcome(mid, so.psk, so.resolve, so.resolve.log);
    switch (r.kind) {
    case Resolution::committed:
        sim::destroy_domain(id);
        std::printf("committed: the domain runs on %s; the paused %s was destroyed (%s)\n", dest.str().c_str(),
                    name.c_str(), r.detail.c_str());
        return 0;
    case Resolution::not_committed:
        sim::attach(id)->resume();
        std::printf("not committed: the domain never ran on %s; %s was resumed (%s)\n", dest.str().c_str(),
                    name.c_str(), r.detail.c_str());
        return 1;
    case Resolution::unresolved: break;
    }
    throw InDoubtError(name, Phase::commit,
                       "migration " + wire::migration_id_hex(mid) + " could not be resolved by asking " + dest.str() +
                           " (" + std::to_string(r.attempts) + " attempts: " + r.detail + "); " + name +
                           " stays paused: look at the destination (README.md, 'When a migration fails')");
}

namespace {

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

int cmd_keygen(const std::vector<std::string>& args)
{
    Options o(args, {}, {});
    if (o.positional().size() > 1)
        throw UsageError("usage: fastmig keygen [FILE]");
    if (o.positional().empty()) {
        std::printf("%s\n", auth::make_key_hex().c_str());
        return 0;
    }
    auth::write_new_key_file(o.positional()[0]);
    return 0;
}

} // namespace fastmig::cli
