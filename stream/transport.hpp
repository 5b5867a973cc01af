// TCP transport: connect/listen with timeouts, writev that survives partial
// writes, and a buffered, time-limited reader the decoders pull from.
#pragma once

#include "stream/wire.hpp"

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <sys/uio.h>

namespace fastmig {

// An owned file descriptor.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept;
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    int release()
    {
        int f = fd_;
        fd_ = -1;
        return f;
    }
    void reset(int fd = -1);

private:
    int fd_ = -1;
};

struct HostPort {
    std::string host;
    std::uint16_t port = 0;
    std::string str() const;
};
// "127.0.0.1:5000", "[::1]:5000", "localhost:5000".  Throws Error on bad input.
HostPort parse_host_port(const std::string& s);

// Listening socket (SO_REUSEADDR).  Port 0 picks a free port; see bound_port().
Fd tcp_listen(const HostPort& where);
std::uint16_t bound_port(int listen_fd);
// Waits up to timeout for a connection; Error on timeout.
Fd tcp_accept(int listen_fd, std::chrono::milliseconds timeout);
Fd tcp_connect(const HostPort& where, std::chrono::milliseconds timeout);

// Writes every byte of the iovecs (loops over short writes, EINTR), waiting
// at most `timeout` for the socket to become writable each time.
void write_all(int fd, std::span<const iovec> iov, std::chrono::milliseconds timeout);
void write_all(int fd, std::span<const std::uint8_t> data, std::chrono::milliseconds timeout);

// Bytes written to fd that its reader has not taken yet: what a pipe holds
// (FIONREAD), a socket's send queue (SIOCOUTQ: for TCP, unsent and unacked).
// 0 for a file or anything that cannot tell.
std::size_t unread_bytes(int fd) noexcept;
// Waits until fd holds at most `low` unread bytes (true) or `max` has passed
// (false).  Polls every millisecond: no readiness event says "the reader has
// caught up" (POLLOUT only means there is some room).  Cancellable like
// every wait here.
bool wait_drained(int fd, std::size_t low, std::chrono::milliseconds max);

// Cancels every I/O wait of this process: each wait_fd (inside write_all and
// SocketSource) and each later write_all throws Error("interrupted: <why>").
// Why: libxl stops its save helper with SIGTERM and expects it to clean up
// (resume the source, destroy a half-built domain) and report; a signal
// alone does not wake the pipeline threads blocked in poll().  Async-signal
// safe; `why` must be a string literal.  enable_io_cancellation() must have
// been called first (it creates the eventfd every wait also polls).
void enable_io_cancellation();
void cancel_all_io(const char* why) noexcept;
bool io_cancelled() noexcept;

// A buffered reader over a socket, pipe or file: small reads come from a
// buffer, large ones go straight into the caller's memory.  Each wait for
// data is bounded by `timeout`; EOF before the first byte of a read is a plain
// Error ("the peer closed the connection"), EOF in the middle of one a
// StreamError.  With read_ahead false it never reads a byte the caller did
// not ask for: libxl hands its save helper a stream fd that libxl itself
// reads on after the helper's part (END), so nothing past END may be taken.
class SocketSource : public wire::ByteSource {
public:
    SocketSource(int fd, std::chrono::milliseconds timeout, bool read_ahead = true);
    void read_exact(std::span<std::uint8_t> buf) override;
    void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }

private:
    std::size_t fill(std::uint8_t* dst, std::size_t max, bool mid_read);

    int fd_;
    std::chrono::milliseconds timeout_;
    bool read_ahead_;
    bool is_socket_ = true;
    std::vector<std::uint8_t> buf_;
    std::size_t head_ = 0, tail_ = 0;
};

} // namespace fastmig
