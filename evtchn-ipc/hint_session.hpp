// Free-page hints over a mailbox: the two ends of the protocol of
// free_hints.hpp, moving messages through one shared region and a doorbell
// each way.  Neither end knows which flavour carries it: a memfd and two
// eventfds (the process flavour, what the tests use), or pages a guest
// granted to dom0 and one inter-domain event channel (the Xen flavour,
// xen_channel.hpp).  So the framing the Xen backend and the guest agent run
// is the framing the unit tests run.
//
// Dom0's end (request_free_ranges) bounds everything: one deadline for the
// whole exchange, the parser's limits on batches and ranges, and a private
// copy of every answer before it is judged (the guest can rewrite its pages
// at any instant).  Whatever goes wrong it returns, with the cause, and
// never throws for the agent's faults: no hints is always a safe answer.
#pragma once

#include "evtchn-ipc/free_hints.hpp"

#include <chrono>
#include <functional>

namespace fastmig::ipc::hints {

// One side's view of the mailbox.
struct MailboxEnd {
    std::span<std::uint8_t> region;                      // shared with the peer: hostile
    std::function<void()> notify;                        // ring the peer
    std::function<bool(std::chrono::milliseconds)> wait; // true when the peer rang
};

struct HintResult {
    enum class Outcome {
        hints,     // complete: `ranges` may be skipped
        refused,   // the agent declined (why)
        timed_out, // no complete answer before the deadline (why: how far it got)
        invalid,   // a hostile or broken answer (why)
    };
    Outcome outcome = Outcome::timed_out;
    std::vector<Range> ranges; // empty unless outcome == hints
    std::uint64_t pages = 0;
    std::uint32_t batches = 0;
    std::uint64_t agent_scan_ns = 0; // as the agent reports it
    double elapsed_ms = 0;           // the whole exchange, as dom0 measured it
    std::string why;
    bool ok() const { return outcome == Outcome::hints; }
};
const char* outcome_name(HintResult::Outcome o);

// Dom0: asks for a scan (sequence number `seq`, which must differ from the
// previous session's) and collects every batch, within `timeout` in all.
// A session it abandons (timeout, invalid answer) ends with a `done`.
HintResult request_free_ranges(MailboxEnd& m, std::uint64_t nr_pages, std::uint32_t seq,
                               std::chrono::milliseconds timeout, Limits limits = {});

// The agent's end.  `scan` finds the free ranges (ascending, disjoint) or
// refuses; it is called once per scan request.
struct ScanResult {
    std::vector<Range> ranges;
    RefuseReason refuse = RefuseReason::unknown; // set (and ranges empty) to refuse
    bool refused = false;
    std::uint64_t scan_ns = 0;
};

class HintServer {
public:
    explicit HintServer(std::function<ScanResult(std::uint64_t nr_pages)> scan) : scan_(std::move(scan)) {}

    // Reads the request now in the slot and answers it (rings the peer)
    // unless it is the one already answered or a `done`.  Returns false
    // when there was nothing new to answer.  `why` says what was refused.
    bool handle(MailboxEnd& m, std::string* why = nullptr);

private:
    void answer(MailboxEnd& m, const Request& q, std::uint32_t batch);
    void refuse(MailboxEnd& m, const Request& q, RefuseReason r);

    std::function<ScanResult(std::uint64_t)> scan_;
    std::vector<Range> ranges_;
    std::uint64_t pages_ = 0;
    std::uint64_t scan_ns_ = 0;
    std::uint32_t seq_ = 0;
    std::uint32_t per_batch_ = 0;
    bool scanned_ = false;
    bool have_last_ = false;
    Request last_;
};

} // namespace fastmig::ipc::hints
