// The source's way out of "in doubt" (docs/stream-format.md, Resolving a
// lost COMMIT): the connection was lost after COMMIT, so the source opens a
// new one to the same destination, with the same key, and asks what became
// of its migration id.  Bounded by a number of attempts and a deadline;
// only a definite answer from the destination lets the source act.
#pragma once

#include "stream/auth/suite.hpp"
#include "stream/wire_outcome.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fastmig {

struct ResolveOptions {
    // Opens a new connection to the destination (the address the migration
    // used), waiting at most the given time; returns the fd, throws Error.
    // Empty: no resolution, a lost COMMIT stays in doubt at once.
    std::function<int(std::chrono::milliseconds)> connect;
    std::string destination; // for messages: "10.0.0.2:5000"
    // From the loss of the connection; past it the source stays in doubt.
    std::chrono::milliseconds deadline{120000};
    std::chrono::milliseconds retry_interval{2000};
    unsigned max_attempts = 60;
    // One attempt: connect, handshake, query, answer.
    std::chrono::milliseconds attempt_timeout{10000};
    // With a key: the suite of the migration (the sender sets it from its own).
    auth::Suite suite = auth::kDefaultSuite;
    // One line per attempt and per answer (fastmig send prints them).
    std::function<void(const std::string&)> log;
};

struct Resolution {
    enum Kind {
        committed,     // the domain runs at the destination
        not_committed, // it never ran there and never will
        unresolved,    // unreachable until the deadline, or the destination does not know
    } kind = unresolved;
    std::uint64_t verify_digest = 0; // committed, with VERIFY
    std::string detail;              // the destination's message, or the last error
    unsigned attempts = 0;
    double seconds = 0;
};

// Asks until a definite answer, `unknown` (the destination has no usable
// record: asking again would not help), the last attempt or the deadline.
Resolution resolve_outcome(const wire::MigrationId& id, const std::vector<std::uint8_t>& psk,
                           const ResolveOptions& opt, const std::function<void(const std::string&)>& log);

} // namespace fastmig
