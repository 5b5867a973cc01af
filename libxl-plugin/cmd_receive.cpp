// fastmig receive: one migration (or several, --keep-listening) into sim
// domains, then the outcome queries of its sources.
#include "libxl-plugin/cli.hpp"
#include "libxl-plugin/migrate_cli.hpp"
#include "libxl-plugin/netns.hpp"

#include "stream/domain/sim/sim.hpp"
#include "stream/outcome_store.hpp"
#include "stream/receiver.hpp"
#include "stream/transport.hpp"

#include <cstdio>
#include <set>

#include <fcntl.h>
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

bool is_loopback(const std::string& host)
{
    return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
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

} // namespace fastmig::cli
