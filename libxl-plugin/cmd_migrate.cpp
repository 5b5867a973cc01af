// fastmig send and resolve: a sim domain to a receiver, and the question
// after the fact when a sender lost the answer to its COMMIT; keygen.
#include "libxl-plugin/cli.hpp"
#include "libxl-plugin/migrate_cli.hpp"
#include "libxl-plugin/report.hpp"

#include "stream/auth/auth.hpp"
#include "stream/codec/codec.hpp"
#include "stream/domain/sim/sim.hpp"
#include "stream/sender.hpp"
#include "stream/transport.hpp"

#include <cstdio>
#include <string>

#include <unistd.h>

namespace fastmig::cli {

namespace {

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

} // namespace

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
