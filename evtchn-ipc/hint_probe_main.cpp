// fastmig-hint-probe DOMID: dom0's side of the free-page hint protocol on
// its own, for trying a guest's agent by hand or from the nested harness
// before (and besides) a migration: connect, ask once, print what came back
// and what it cost.  It makes the same two calls the Xen backend makes
// (connect_agent, request_free_ranges), so a guest that answers it answers
// a migration.
//
// Exit status: 0 hints received, 3 the guest has no agent, 4 the agent
// refused, timed out or answered something refused (the cause is printed),
// 1 dom0 could not connect (xenstore, grant mapping, event channel),
// 2 bad arguments.
#include "evtchn-ipc/xen_channel.hpp"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <unistd.h>

using namespace fastmig::ipc;

namespace {

int usage()
{
    std::fprintf(stderr, "usage: fastmig-hint-probe DOMID --nr-pages N [--timeout-ms MS]\n");
    return 2;
}

// A decimal number in [lo, hi], or false.
bool number(const char* s, unsigned long long lo, unsigned long long hi, unsigned long long& out)
{
    char* end = nullptr;
    if (!*s || *s == '-')
        return false;
    out = std::strtoull(s, &end, 10);
    return *end == '\0' && out >= lo && out <= hi;
}

} // namespace

int main(int argc, char** argv)
{
    unsigned long long domid = 0, nr_pages = 0, timeout_ms = 2000;
    if (argc != 4 && argc != 6)
        return usage();
    if (!number(argv[1], 1, 0x7fef, domid)) {
        std::fprintf(stderr, "fastmig-hint-probe: '%s' is not a guest domain id\n", argv[1]);
        return 2;
    }
    if (std::string(argv[2]) != "--nr-pages" || !number(argv[3], 1, 1ull << 40, nr_pages))
        return usage();
    if (argc == 6 && (std::string(argv[4]) != "--timeout-ms" || !number(argv[5], 1, 600000, timeout_ms)))
        return usage();
    std::string why;
    auto ch = connect_agent(std::uint32_t(domid), why);
    if (!ch) {
        std::printf("domain %llu: %s\n", domid, why.c_str());
        return why == "no agent" ? 3 : 1;
    }
    // A sequence number unlike the last session's (which another dom0
    // process may have run): time and pid.
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    const std::uint32_t seq = std::uint32_t(t.tv_nsec ^ (t.tv_sec << 20) ^ getpid()) | 1;
    auto r = hints::request_free_ranges(ch->end(), nr_pages, seq, std::chrono::milliseconds(long(timeout_ms)));
    std::printf("domain %llu: agent '%s': %s%s%s: %llu free pages in %zu ranges, %u batches, "
                "agent scan %.1f ms, %.1f ms in all\n",
                domid, ch->agent().c_str(), hints::outcome_name(r.outcome), r.why.empty() ? "" : ": ",
                r.why.c_str(), (unsigned long long)r.pages, r.ranges.size(), r.batches, r.agent_scan_ns / 1e6,
                r.elapsed_ms);
    return r.ok() ? 0 : 4;
}
