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

// A buffered reader over a socket: small reads come from a buffer, large
// ones go straight into the caller's memory.  Each wait for data is bounded
// by `timeout`; EOF before the first byte of a read is a plain Error ("the
// peer closed the connection"), EOF in the middle of one a StreamError.
class SocketSource : public wire::ByteSource {
public:
    SocketSource(int fd, std::chrono::milliseconds timeout);
    void read_exact(std::span<std::uint8_t> buf) override;
    void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }

private:
    std::size_t fill(std::uint8_t* dst, std::size_t max, bool mid_read);

    int fd_;
    std::chrono::milliseconds timeout_;
    std::vector<std::uint8_t> buf_;
    std::size_t head_ = 0, tail_ = 0;
};

} // namespace fastmig
