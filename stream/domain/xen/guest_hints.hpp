// Free-page hints from a guest's fastmig agent, for the Xen backend: when to
// ask, one bounded session, which of the reported pfns may go as FREE, and
// the log line that says what happened (evtchn-ipc/README.md, "Free-page
// hints", is the protocol; guest-agent/ the guest's side).
//
// Pure: no Xen header.  What only Xen knows comes in as two callables, so
// the whole decision runs in the unit tests over the process flavour of
// evtchn-ipc (tests/unit/test_guest_hints.cpp):
//   connect     the rendezvous (xen_channel.hpp's connect_agent: the
//               guest's xenstore keys, its granted pages, its port);
//   keep_ram    clears every hinted pfn that is not the guest's RAM as the
//               backend sees it (PV: no frame in the p2m, or a p2m frame;
//               HVM/PVH: a hole, or a gfn it could not type in time).
// Whatever the agent does (silence, a refusal, ranges outside the guest,
// overlapping, endless batches) costs at most `timeout`, one log line that
// names the cause, and no hints; never an exception, never a page that is
// not the guest's RAM.
#pragma once

#include "evtchn-ipc/hint_session.hpp"
#include "stream/dirty_bitmap.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace fastmig::xen {

struct GuestHintOptions {
    bool enabled = true; // --no-agent-hints: off
    // The whole exchange (connect excluded: xenstore reads and one mapping).
    // Where the wait sits decides its size: the sender asks right after
    // enable_dirty_log and before round 0 (sender.cpp, read_free_hints),
    // with the guest running, so the wait is never downtime; a guest that
    // is suspended (xl save, the non-live path) is not asked at all.  It
    // adds to the total time only, and only when an agent is announced but
    // slow or hung: a guest without one costs nothing (connect: "no
    // agent").  An answer is worth waiting for: in the nested TCG runs
    // (tests/nested-xen/README.md) the exchange took 0.3 to 1.6 s, once
    // more than 3 s beside `make check`, and the hints saved 333 MiB and
    // 28 s of a 75 s migration of a 512 MiB guest.  The bound on it is the
    // destination's: nothing goes on the stream while we wait, and a
    // receiver gives up after 30 s of silence (--timeout-ms), of which an
    // HVM guest's hole scan may already have used 5 s.  10 s covers six
    // times the slowest answer measured and leaves 15 s of that margin.
    std::chrono::milliseconds timeout{10000};
};
// Above this the destination's 30 s silence limit (--timeout-ms) would be
// at risk: nothing is sent while the backend waits (plus the HVM hole scan's
// 5 s).
constexpr std::chrono::milliseconds kMaxAgentTimeout{20000};

// What connect() gives: the mailbox dom0 drives and the agent's name (for
// logs); `keep` holds the mapping and the port until the session ends.
struct AgentLink {
    std::shared_ptr<void> keep;
    ipc::hints::MailboxEnd* end = nullptr;
    std::string agent;
};
// Null with why = "no agent" when the guest has none (not worth a warning).
using ConnectAgent = std::function<std::optional<AgentLink>(std::string& why)>;
// Clears in `hinted` what is not the guest's RAM; returns how many it cleared.
using KeepRam = std::function<std::uint64_t(DirtyBitmap& hinted)>;

struct GuestHintReport {
    bool asked = false;        // a session ran
    bool used = false;         // its ranges went into the bitmap
    std::uint64_t hinted = 0;  // pages the agent reported free
    std::uint64_t dropped = 0; // of those, not the guest's RAM
    std::uint64_t added = 0;   // set in the bitmap and not set before
    std::string line;          // for the log: "precopy: free-page hints ..."
};

// Asks the guest's agent once (unless disabled or `suspended`: a suspended
// guest cannot answer, and its hints would be stale anyway) and sets the
// pfns it may skip in `out` (bits already set stay set).  `seq` must differ
// from the previous session's.
GuestHintReport collect_guest_hints(const GuestHintOptions& opt, bool suspended, std::uint32_t seq,
                                    const ConnectAgent& connect, const KeepRam& keep_ram, DirtyBitmap& out);

} // namespace fastmig::xen
