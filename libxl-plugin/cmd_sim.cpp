// fastmig sim: create, list, inspect and destroy simulated domains.
#include "libxl-plugin/cli.hpp"

#include "stream/domain/sim/sim.hpp"
#include "stream/sender.hpp"
#include "stream/wire.hpp"

#include <cstdio>

namespace fastmig::cli {

namespace {

const char* kSimUsage =
    "usage: fastmig sim create [--memory SIZE] [--workload NAME] [--seed N] [--rate-scale X]\n"
    "       fastmig sim list\n"
    "       fastmig sim info ID\n"
    "       fastmig sim pause ID | resume ID   (resume also starts a restored, paused domain)\n"
    "       fastmig sim checksum ID   (CRC-64 digest of every page, as --verify computes it)\n"
    "       fastmig sim destroy ID\n"
    "       fastmig sim workloads\n";

// domain_checksums() for a domain being built (its pages as they are now).
std::vector<std::uint64_t> incoming_checksums(IncomingDomain& d)
{
    std::vector<std::uint64_t> sums(d.nr_pages());
    std::vector<std::uint8_t> buf(kPageSize);
    for (Pfn p = 0; p < d.nr_pages(); ++p) {
        d.read_page(p, buf);
        sums[p] = wire::page_checksum(buf);
    }
    return sums;
}

} // namespace

int cmd_sim(const std::vector<std::string>& args, int argc, char** argv)
{
    if (args.empty())
        throw UsageError(std::string("sim needs a subcommand\n") + kSimUsage);
    const std::string& sub = args[0];
    std::vector<std::string> rest(args.begin() + 1, args.end());

    if (sub == "serve") // internal: the sim domain process itself
        return sim::serve_main(argc, argv);

    if (sub == "create") {
        Options o(rest, {"memory", "workload", "seed", "rate-scale"}, {});
        if (!o.positional().empty())
            throw UsageError("sim create takes no positional argument");
        sim::SimConfig cfg = sim_config(o);
        int id = sim::create_domain(cfg);
        std::printf("sim:%d\n", id);
        return 0;
    }
    if (sub == "list") {
        if (!rest.empty())
            throw UsageError("sim list takes no argument");
        auto doms = sim::list_domains();
        std::printf("%-8s %-8s %-12s %-12s %s\n", "ID", "PID", "MEMORY", "WORKLOAD", "STATE");
        for (auto& d : doms)
            std::printf("sim:%-4d %-8d %-12s %-12s %s\n", d.id, int(d.pid), human_bytes(double(d.memory_bytes)).c_str(),
                        d.workload.empty() ? "-" : d.workload.c_str(), d.state.c_str());
        return 0;
    }
    if (sub == "info" || sub == "destroy") {
        if (rest.size() != 1)
            throw UsageError("usage: fastmig sim " + sub + " ID");
        int id = parse_sim_domain(rest[0]);
        if (sub == "destroy") {
            sim::destroy_domain(id);
            return 0;
        }
        auto d = sim::domain_info(id);
        std::printf("id: sim:%d\npid: %d\nmemory: %s (%llu bytes)\nworkload: %s\nstate: %s\n", d.id, int(d.pid),
                    human_bytes(double(d.memory_bytes)).c_str(), (unsigned long long)d.memory_bytes,
                    d.workload.empty() ? "-" : d.workload.c_str(), d.state.c_str());
        return 0;
    }
    if (sub == "pause" || sub == "resume" || sub == "checksum") {
        if (rest.size() != 1)
            throw UsageError("usage: fastmig sim " + sub + " ID");
        int id = parse_sim_domain(rest[0]);
        if (sub != "pause" && sim::domain_info(id).state == "incoming") {
            // A domain built by a restore and left paused (libxl's helper
            // hands it over so): resume starts it, as libxl's unpause would.
            auto in = sim::attach_incoming(id);
            if (sub == "resume") {
                in->unpause();
                return 0;
            }
            std::printf("%016llx\n", (unsigned long long)wire::page_digest(incoming_checksums(*in)));
            return 0;
        }
        auto dom = sim::attach(id);
        if (sub == "pause") {
            dom->suspend(std::chrono::seconds(10));
        } else if (sub == "resume") {
            dom->resume(); // also drops a migration's hold (in-doubt resolution)
        } else {
            std::printf("%016llx\n", (unsigned long long)wire::page_digest(domain_checksums(*dom)));
        }
        return 0;
    }
    if (sub == "workloads") {
        for (auto& w : sim::workload_names())
            std::printf("%-12s %s\n", w.first.c_str(), w.second.c_str());
        return 0;
    }
    throw UsageError("unknown sim subcommand '" + sub + "'\n" + kSimUsage);
}

} // namespace fastmig::cli
