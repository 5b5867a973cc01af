// Basic vocabulary of the engine: page numbers, page size, errors that carry
// the domain and the phase they happened in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastmig {

using Pfn = std::uint64_t;

// The stream moves 4 KiB pages (x86 guest frames); the header carries the
// page shift so a future stream with another size is refused, not misread.
constexpr unsigned kPageShift = 12;
constexpr std::size_t kPageSize = std::size_t{1} << kPageShift;

// Largest guest the format accepts: 2^40 pages = 4 PiB.  Anything above is a
// corrupt or hostile header, not a real domain.
constexpr std::uint64_t kMaxPages = std::uint64_t{1} << 40;

// Where in a migration something went wrong; printed in every error.
enum class Phase {
    setup,        // parsing options, attaching to the domain, connecting
    authenticate, // pre-shared key handshake on a connection (docs: Authentication)
    negotiate,    // stream header and the destination's answer
    precopy,      // live rounds
    stop_copy,    // domain suspended, last pages
    state,        // platform state
    finish,       // END, waiting for the destination's READY
    commit,       // COMMIT sent (source) or awaited (destination), then DONE
    receive,      // destination: reading the stream
    restore,      // destination: building the domain
    resume,       // destination: starting the domain
    verify,       // comparing checksums after the fact
};

const char* phase_name(Phase p);

// Every failure the engine reports.  what() reads
//   "<domain>: <phase>: <cause>"
// so a log line alone says which domain, where, and why.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& cause) : std::runtime_error(cause), cause_(cause) {}
    Error(std::string domain, Phase phase, const std::string& cause);

    const std::string& cause() const { return cause_; }
    const std::string& domain() const { return domain_; }
    bool has_context() const { return has_context_; }
    Phase phase() const { return phase_; }

    // The same error, labelled with a domain and phase if it has none yet.
    Error with_context(const std::string& domain, Phase phase) const;

private:
    std::string cause_;
    std::string domain_;
    Phase phase_ = Phase::setup;
    bool has_context_ = false;
};

// A stream that violates the format (bad CRC, bad length, unknown record...).
// Distinct type so the receiver can say "malformed stream" and the sender can
// tell a hostile peer from a local failure.
class StreamError : public Error {
public:
    using Error::Error;
};

// A record whose tag does not verify, or a failed handshake: the peer does
// not hold the key, or the stream was altered, replayed or reordered.
class AuthError : public StreamError {
public:
    using StreamError::StreamError;
};

// The one failure after which the source must not resume the domain: COMMIT
// was sent (or may have been) and the destination's DONE never came, so the
// domain may be running there.  The source keeps it paused; only someone who
// can look at the destination may decide (docs/stream-format.md, Commit).
class InDoubtError : public Error {
public:
    using Error::Error;
};

// errno-based failure of a system call: "what: strerror(errno)".
[[noreturn]] void throw_errno(const std::string& what);

// Names the calling thread (at most 15 characters shown), so that top, perf
// and gdb tell the pipeline's stages apart: "fm-worker-1", "fm-writer-0".
void name_this_thread(const std::string& name);

} // namespace fastmig
