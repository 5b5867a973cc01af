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

// What kind of failure an Error is; it decides what the engine does next.
//   local     a failure on this host (a system call, the domain backend)
//   stream    the peer broke the format (bad CRC, bad length, unknown record):
//             the receiver says "malformed stream", the sender blames the peer
//   auth      a tag that does not verify or a failed handshake: the peer does
//             not hold the key, or the stream was altered, replayed or
//             reordered (a stream error too: is_stream() holds)
//   in_doubt  the one failure after which the source must not resume the
//             domain: COMMIT was sent (or may have been) and the destination's
//             DONE never came, so the domain may be running there; only someone
//             who can look at the destination may decide
//             (docs/stream-format.md, Commit)
enum class ErrorKind { local, stream, auth, in_doubt };

// Every failure the engine reports.  what() reads
//   "<domain>: <phase>: <cause>"
// so a log line alone says which domain, where, and why.  The kind travels
// with the error through every relabelling (relabelled, with_context); throw
// a relabelled error with raise() so that it is caught as the class its kind
// names (StreamError, AuthError, InDoubtError below).
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& cause, ErrorKind kind = ErrorKind::local)
        : std::runtime_error(cause), cause_(cause), kind_(kind)
    {
    }
    Error(std::string domain, Phase phase, const std::string& cause, ErrorKind kind = ErrorKind::local);

    const std::string& cause() const { return cause_; }
    const std::string& domain() const { return domain_; }
    bool has_context() const { return has_context_; }
    Phase phase() const { return phase_; }
    ErrorKind kind() const { return kind_; }
    bool is_stream() const { return kind_ == ErrorKind::stream || kind_ == ErrorKind::auth; }
    bool is_auth() const { return kind_ == ErrorKind::auth; }
    bool is_in_doubt() const { return kind_ == ErrorKind::in_doubt; }

    // The same error, labelled with a domain and phase if it has none yet.
    Error with_context(const std::string& domain, Phase phase) const;
    // The same error (kind, domain, phase) with another cause, usually the
    // old one with what the caller knows put around it.
    Error relabelled(const std::string& cause) const;

private:
    std::string cause_;
    std::string domain_;
    Phase phase_ = Phase::setup;
    bool has_context_ = false;
    ErrorKind kind_ = ErrorKind::local;
};

// Throws `e` as the class its kind names, so a relabelled error is caught
// where the original would have been.
[[noreturn]] void raise(const Error& e);

// The kinds as classes, so that a catch clause can pick one.  Each sets its
// kind and adds nothing else: an Error of kind `stream` thrown by raise() is
// a StreamError.
class StreamError : public Error {
public:
    explicit StreamError(const std::string& cause) : Error(cause, ErrorKind::stream) {}
    StreamError(std::string domain, Phase phase, const std::string& cause)
        : Error(std::move(domain), phase, cause, ErrorKind::stream)
    {
    }

protected:
    explicit StreamError(const Error& e) : Error(e) {}
    friend void raise(const Error&);
};

class AuthError : public StreamError {
public:
    explicit AuthError(const std::string& cause) : StreamError(Error(cause, ErrorKind::auth)) {}

private:
    explicit AuthError(const Error& e) : StreamError(e) {}
    friend void raise(const Error&);
};

class InDoubtError : public Error {
public:
    explicit InDoubtError(const std::string& cause) : Error(cause, ErrorKind::in_doubt) {}
    InDoubtError(std::string domain, Phase phase, const std::string& cause)
        : Error(std::move(domain), phase, cause, ErrorKind::in_doubt)
    {
    }

private:
    explicit InDoubtError(const Error& e) : Error(e) {}
    friend void raise(const Error&);
};

// errno-based failure of a system call: "what: strerror(errno)".
[[noreturn]] void throw_errno(const std::string& what);

// Names the calling thread (at most 15 characters shown), so that top, perf
// and gdb tell the pipeline's stages apart: "fm-worker-1", "fm-writer-0".
void name_this_thread(const std::string& name);

} // namespace fastmig
