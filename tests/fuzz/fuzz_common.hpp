// Shared pieces of the fuzz targets (tests/fuzz/README.md): input framing
// helpers, the CRC fixer, and loud failure.  Header-only so that each target
// is one translation unit plus the engine's libraries.
#pragma once

#include "stream/wire.hpp"

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <span>
#include <thread>
#include <vector>

#include <sys/socket.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_HAVE_ASAN 1
#endif
#endif
#ifndef FUZZ_HAVE_ASAN
#define FUZZ_HAVE_ASAN 0
#endif
#if FUZZ_HAVE_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace fastmig::fuzz {

using Bytes = std::vector<std::uint8_t>;

// A broken invariant of the code under test (not a refused input): print
// and abort, which libFuzzer and the replay driver both report as a crash.
[[noreturn]] inline void fuzz_fail(const char* what)
{
    std::fprintf(stderr, "FUZZ INVARIANT BROKEN: %s\n", what);
    std::abort();
}
#define FUZZ_ASSERT(cond)                                                                                            \
    do {                                                                                                             \
        if (!(cond))                                                                                                 \
            ::fastmig::fuzz::fuzz_fail(#cond " (" __FILE__ ":" FUZZ_STR(__LINE__) ")");                              \
    } while (0)
#define FUZZ_STR2(x) #x
#define FUZZ_STR(x) FUZZ_STR2(x)

// FUZZ_VERBOSE=1 in the environment: the targets print why each input was
// refused (to check by hand that seeds go all the way through).
inline void verbose(const char* what, const std::exception* e = nullptr)
{
    static const bool on = std::getenv("FUZZ_VERBOSE") != nullptr;
    if (on)
        std::fprintf(stderr, "%s%s%s\n", what, e ? ": " : "", e ? e->what() : "");
}

// A buffer reused by every execution (allocating 64 KiB blocks per input
// goes through the sanitizer's mmap path and dominates the run time) whose
// bytes outside the span handed out are poisoned for AddressSanitizer: a
// read or write one byte before or after it is reported like a heap
// overflow.  Without ASan (the g++ replay driver) it is a plain buffer.
class Fenced {
public:
    explicit Fenced(std::size_t capacity) : buf_(capacity + 2 * kFence) { poison(0, buf_.size()); }
    // `n` bytes (n <= capacity), ending right before the back fence, so an
    // overrun of one byte is caught; the content is `fill` repeated.
    std::span<std::uint8_t> take(std::size_t n, std::uint8_t fill = 0)
    {
        poison(open_, open_n_); // only what the last take() opened
        const std::size_t at = buf_.size() - kFence - n;
        unpoison(at, n);
        open_ = at;
        open_n_ = n;
        std::memset(buf_.data() + at, fill, n);
        return {buf_.data() + at, n};
    }
    std::span<std::uint8_t> copy(std::span<const std::uint8_t> from)
    {
        auto s = take(from.size());
        if (!from.empty())
            std::memcpy(s.data(), from.data(), from.size());
        return s;
    }

private:
    static constexpr std::size_t kFence = 64;
    void poison(std::size_t at, std::size_t n)
    {
#if FUZZ_HAVE_ASAN
        __asan_poison_memory_region(buf_.data() + at, n);
#else
        (void)at, (void)n;
#endif
    }
    void unpoison(std::size_t at, std::size_t n)
    {
#if FUZZ_HAVE_ASAN
        __asan_unpoison_memory_region(buf_.data() + at, n);
#else
        (void)at, (void)n;
#endif
    }
    std::vector<std::uint8_t> buf_;
    std::size_t open_ = 0, open_n_ = 0;
};

// Reads the input front to back; running out yields zeros / empty spans, so
// a target never has to reject a short input.
class Input {
public:
    Input(const std::uint8_t* data, std::size_t size) : p_(data), left_(size) {}
    std::uint8_t u8()
    {
        if (!left_)
            return 0;
        --left_;
        return *p_++;
    }
    std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | u8() << 8); }
    // The next n bytes (fewer at the end).
    std::span<const std::uint8_t> take(std::size_t n)
    {
        n = n < left_ ? n : left_;
        std::span<const std::uint8_t> s(p_, n);
        p_ += n;
        left_ -= n;
        return s;
    }
    std::span<const std::uint8_t> rest() { return take(left_); }
    std::size_t left() const { return left_; }

private:
    const std::uint8_t* p_;
    std::size_t left_;
};

inline std::uint32_t rd32(const std::uint8_t* p)
{
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}
inline void wr32(std::uint8_t* p, std::uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

// Recomputes the CRC of every record in `s`, starting at byte `from` (after
// the magic), as far as the length fields allow.  A mutated record almost
// never has a valid CRC-32C, so without this the fuzzer would only ever test
// the CRC check; the targets fix CRCs for inputs whose flag bit asks for it
// and leave the others alone, so the check itself is fuzzed too.
inline void fix_crcs(std::span<std::uint8_t> s, std::size_t from)
{
    std::size_t at = from;
    while (at + wire::kRecordHeaderSize <= s.size()) {
        const std::uint64_t len = rd32(s.data() + at + 4);
        if (at + wire::kRecordHeaderSize + len > s.size())
            return;
        wr32(s.data() + at + 8, 0);
        std::uint32_t c = wire::crc32c({s.data() + at, wire::kRecordHeaderSize});
        c = wire::crc32c({s.data() + at + wire::kRecordHeaderSize, static_cast<std::size_t>(len)}, c);
        wr32(s.data() + at + 8, ~c);
        at += wire::kRecordHeaderSize + len + (8 - len % 8) % 8;
    }
}

// A peer that hangs up must show as an error, never as SIGPIPE killing
// the harness (the engine sends with MSG_NOSIGNAL; this covers the rest).
inline const bool kSigpipeIgnored = (std::signal(SIGPIPE, SIG_IGN), true);

// One connection as the fake peer sees it: a socket pair, the peer's end
// (`ours`) driven by a thread of the harness, the other end (`theirs`)
// handed to the code under test.  Whoever takes `theirs` over sets it to
// -1; the destructor closes what is left, which ends the thread's drain.
struct PeerConn {
    explicit PeerConn(Bytes b) : bytes(std::move(b))
    {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            fuzz_fail("socketpair");
        ours = sv[0];
        theirs = sv[1];
    }
    ~PeerConn()
    {
        if (theirs >= 0)
            ::close(theirs);
        if (io.joinable())
            io.join();
        ::close(ours);
    }
    PeerConn(const PeerConn&) = delete;
    PeerConn& operator=(const PeerConn&) = delete;
    // Writes bytes[from, to); stops quietly if the other side hung up.
    void put(std::size_t from, std::size_t to)
    {
        while (from < to) {
            ssize_t w = ::send(ours, bytes.data() + from, to - from, MSG_NOSIGNAL);
            if (w <= 0)
                return;
            from += static_cast<std::size_t>(w);
        }
    }
    // The peer has said everything: close its sending direction, then read
    // and drop whatever comes until the other end is closed.
    void finish()
    {
        ::shutdown(ours, SHUT_WR);
        std::uint8_t sink[16384];
        while (::read(ours, sink, sizeof sink) > 0) {
        }
    }
    Bytes bytes;
    int ours = -1, theirs = -1;
    std::thread io;
};

} // namespace fastmig::fuzz
