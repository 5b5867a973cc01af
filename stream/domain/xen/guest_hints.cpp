#include "stream/domain/xen/guest_hints.hpp"

#include <cstdio>

namespace fastmig::xen {

namespace {

constexpr const char* kPrefix = "precopy: free-page hints: ";

std::string ms(double v)
{
    char b[32];
    std::snprintf(b, sizeof b, "%.1f ms", v);
    return b;
}

std::string agent_label(const std::string& a) { return a.empty() ? "the guest's agent" : "agent '" + a + "'"; }

} // namespace

GuestHintReport collect_guest_hints(const GuestHintOptions& opt, bool suspended, std::uint32_t seq,
                                    const ConnectAgent& connect, const KeepRam& keep_ram, DirtyBitmap& out)
{
    using Outcome = ipc::hints::HintResult::Outcome;
    GuestHintReport rep;
    if (!opt.enabled) {
        rep.line = std::string(kPrefix) + "the guest's agent is not asked (--no-agent-hints)";
        return rep;
    }
    if (suspended) {
        rep.line = std::string(kPrefix) + "the guest is suspended, its agent cannot answer: none";
        return rep;
    }
    std::string why;
    std::optional<AgentLink> link;
    try {
        link = connect(why);
    } catch (const std::exception& e) {
        why = e.what();
    }
    if (!link || !link->end) {
        rep.line = why == "no agent" ? std::string(kPrefix) + "no fastmig agent in the guest: none"
                                     : std::string(kPrefix) + "cannot reach the guest's agent (" + why +
                                           "): migrating without hints";
        return rep;
    }
    rep.asked = true;
    const std::string who = agent_label(link->agent);
    ipc::hints::HintResult r;
    try {
        r = ipc::hints::request_free_ranges(*link->end, out.size(), seq, opt.timeout);
    } catch (const std::exception& e) {
        // dom0's own end failed (the event channel device): not the agent's
        // fault, and no reason to stop the migration either.
        rep.line = std::string(kPrefix) + "the session with " + who + " failed on dom0's side (" + e.what() +
                   "): migrating without hints";
        return rep;
    }
    link.reset(); // unmap the guest's pages and unbind the port at once
    switch (r.outcome) {
    case Outcome::hints:
        break;
    case Outcome::refused:
        rep.line = std::string(kPrefix) + who + " declined (" + r.why + "): migrating without hints";
        return rep;
    case Outcome::timed_out:
        rep.line = std::string(kPrefix) + who + " did not answer within " + std::to_string(opt.timeout.count()) +
                   " ms (" + r.why + "): migrating without hints";
        return rep;
    case Outcome::invalid:
        rep.line = std::string(kPrefix) + who + " sent an answer fastmig refuses (" + r.why +
                   "): migrating without hints, no range of it used";
        return rep;
    }
    // The parser checked every range against out.size(); checked again
    // here because a page skipped wrongly is data lost.
    DirtyBitmap hinted(out.size());
    for (const auto& g : r.ranges) {
        if (g.count == 0 || g.first >= out.size() || g.count > out.size() - g.first) {
            rep.line = std::string(kPrefix) + who + ": range " + std::to_string(g.first) + "+" +
                       std::to_string(g.count) + " lies outside the guest's " + std::to_string(out.size()) +
                       " pages: migrating without hints";
            return rep;
        }
        for (Pfn p = g.first; p < g.end(); ++p)
            hinted.set(p);
    }
    rep.hinted = hinted.count();
    try {
        rep.dropped = keep_ram(hinted);
    } catch (const std::exception& e) {
        rep.line = std::string(kPrefix) + "cannot check " + who + "'s pages against the guest's memory (" + e.what() +
                   "): migrating without hints";
        rep.dropped = rep.hinted;
        return rep;
    }
    hinted.for_each_set([&](Pfn p) {
        if (!out.test(p)) {
            out.set(p);
            ++rep.added;
        }
    });
    rep.used = true;
    rep.line = std::string(kPrefix) + who + " reported " + std::to_string(rep.hinted) + " free pages in " +
               std::to_string(r.ranges.size()) + " ranges (" + std::to_string(r.batches) + " batches); " +
               std::to_string(rep.hinted - rep.dropped) + " go as FREE, " + std::to_string(rep.dropped) +
               " dropped (not the guest's RAM); agent scan " + ms(double(r.agent_scan_ns) / 1e6) + ", exchange " +
               ms(r.elapsed_ms);
    return rep;
}

} // namespace fastmig::xen
