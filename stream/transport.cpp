#include "stream/transport.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>

#include <climits>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace fastmig {

Fd& Fd::operator=(Fd&& o) noexcept
{
    if (this != &o)
        reset(o.release());
    return *this;
}

void Fd::reset(int fd)
{
    if (fd_ >= 0)
        ::close(fd_);
    fd_ = fd;
}

std::string HostPort::str() const
{
    if (host.find(':') != std::string::npos)
        return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

HostPort parse_host_port(const std::string& s)
{
    HostPort hp;
    std::string port;
    if (!s.empty() && s[0] == '[') {
        auto close = s.find(']');
        if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
            throw Error("bad address '" + s + "': expected [IPv6]:PORT");
        hp.host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        auto colon = s.rfind(':');
        if (colon == std::string::npos || colon == 0)
            throw Error("bad address '" + s + "': expected HOST:PORT");
        hp.host = s.substr(0, colon);
        port = s.substr(colon + 1);
    }
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
        throw Error("bad port in '" + s + "'");
    unsigned long p = std::stoul(port);
    if (p > 65535)
        throw Error("bad port in '" + s + "': above 65535");
    hp.port = static_cast<std::uint16_t>(p);
    return hp;
}

namespace {

struct AddrList {
    addrinfo* ai = nullptr;
    ~AddrList()
    {
        if (ai)
            freeaddrinfo(ai);
    }
};

void resolve(const HostPort& where, bool passive, AddrList& out)
{
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    std::string port = std::to_string(where.port);
    int rc = getaddrinfo(where.host.c_str(), port.c_str(), &hints, &out.ai);
    if (rc != 0)
        throw Error("cannot resolve '" + where.host + "': " + gai_strerror(rc));
}

std::atomic<int> g_cancel_fd{-1};
std::atomic<const char*> g_cancel_why{nullptr};

void check_cancelled()
{
    if (const char* why = g_cancel_why.load(std::memory_order_acquire))
        throw Error(std::string("interrupted: ") + why);
}

// Waits for `events` on fd; false on timeout.  Throws if cancel_all_io() was
// called before or during the wait.
bool wait_fd(int fd, short events, std::chrono::milliseconds timeout)
{
    pollfd p[2] = {{fd, events, 0}, {g_cancel_fd.load(std::memory_order_acquire), POLLIN, 0}};
    const nfds_t n = p[1].fd >= 0 ? 2 : 1;
    for (;;) {
        check_cancelled();
        int rc = ::poll(p, n, static_cast<int>(timeout.count()));
        check_cancelled();
        if (rc > 0)
            return true;
        if (rc == 0)
            return false;
        if (errno != EINTR)
            throw_errno("poll");
    }
}

void tune_stream_socket(int fd)
{
    // Records are written whole with writev; Nagle would only delay the
    // small control records (ACCEPT, END, DONE) that sit on the critical path.
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

} // namespace

void enable_io_cancellation()
{
    if (g_cancel_fd.load() >= 0)
        return;
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        throw_errno("eventfd");
    g_cancel_fd.store(fd, std::memory_order_release);
}

void cancel_all_io(const char* why) noexcept
{
    g_cancel_why.store(why, std::memory_order_release);
    int fd = g_cancel_fd.load(std::memory_order_acquire);
    if (fd >= 0) {
        // Never read back: the eventfd stays readable, so every later poll
        // returns at once as well.
        std::uint64_t one = 1;
        [[maybe_unused]] auto r = ::write(fd, &one, sizeof one);
    }
}

bool io_cancelled() noexcept { return g_cancel_why.load(std::memory_order_acquire) != nullptr; }

Fd tcp_listen(const HostPort& where)
{
    AddrList al;
    resolve(where, true, al);
    std::string last = "no address";
    for (addrinfo* a = al.ai; a; a = a->ai_next) {
        Fd s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
        if (!s) {
            last = std::strerror(errno);
            continue;
        }
        int one = 1;
        ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(s.get(), a->ai_addr, a->ai_addrlen) != 0 || ::listen(s.get(), 16) != 0) {
            last = std::strerror(errno);
            continue;
        }
        return s;
    }
    throw Error("cannot listen on " + where.str() + ": " + last);
}

std::uint16_t bound_port(int listen_fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        throw_errno("getsockname");
    if (ss.ss_family == AF_INET)
        return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

Fd tcp_accept(int listen_fd, std::chrono::milliseconds timeout)
{
    if (!wait_fd(listen_fd, POLLIN, timeout))
        throw Error("no connection within " + std::to_string(timeout.count()) + " ms");
    Fd c(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (!c)
        throw_errno("accept");
    tune_stream_socket(c.get());
    return c;
}

Fd tcp_connect(const HostPort& where, std::chrono::milliseconds timeout)
{
    AddrList al;
    resolve(where, false, al);
    std::string last = "no address";
    for (addrinfo* a = al.ai; a; a = a->ai_next) {
        Fd s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol));
        if (!s) {
            last = std::strerror(errno);
            continue;
        }
        int rc = ::connect(s.get(), a->ai_addr, a->ai_addrlen);
        if (rc != 0 && errno != EINPROGRESS) {
            last = std::strerror(errno);
            continue;
        }
        if (rc != 0) {
            if (!wait_fd(s.get(), POLLOUT, timeout)) {
                last = "timed out after " + std::to_string(timeout.count()) + " ms";
                continue;
            }
            int err = 0;
            socklen_t len = sizeof err;
            ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) {
                last = std::strerror(err);
                continue;
            }
        }
        // Back to blocking: every later wait is bounded by poll() instead.
        int fl = ::fcntl(s.get(), F_GETFL);
        ::fcntl(s.get(), F_SETFL, fl & ~O_NONBLOCK);
        tune_stream_socket(s.get());
        return s;
    }
    throw Error("cannot connect to " + where.str() + ": " + last);
}

void write_all(int fd, std::span<const iovec> iov_in, std::chrono::milliseconds timeout)
{
    // Copy the (small) iovec array so it can be advanced over short writes.
    constexpr std::size_t kStackIov = 64;
    iovec stack[kStackIov];
    std::vector<iovec> heap;
    iovec* iov = stack;
    if (iov_in.size() > kStackIov) {
        heap.assign(iov_in.begin(), iov_in.end());
        iov = heap.data();
    } else {
        std::copy(iov_in.begin(), iov_in.end(), stack);
    }
    std::size_t n = iov_in.size();
    std::size_t i = 0;
    bool is_socket = true;
    while (i < n) {
        check_cancelled(); // a reader that never blocks must not hide a cancel
        int cnt = static_cast<int>(std::min<std::size_t>(n - i, IOV_MAX));
        // sendmsg with MSG_NOSIGNAL: a vanished peer is an error to report,
        // not a SIGPIPE that kills the process holding a suspended domain.
        // MSG_DONTWAIT: connections are blocking sockets (tcp_connect,
        // accept), and a blocking send to a peer that stopped reading waits
        // forever; the wait must be the poll below, bounded by `timeout`
        // (found by the fault matrix: a sender hung after a relay's flipped
        // byte made the destination stop reading).
        msghdr mh{};
        mh.msg_iov = iov + i;
        mh.msg_iovlen = static_cast<std::size_t>(cnt);
        ssize_t w = is_socket ? ::sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) : ::writev(fd, iov + i, cnt);
        if (w < 0 && errno == ENOTSOCK) {
            is_socket = false;
            continue;
        }
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (!wait_fd(fd, POLLOUT, timeout))
                    throw Error("peer stopped reading for " + std::to_string(timeout.count()) + " ms");
                continue;
            }
            throw_errno("send");
        }
        auto left = static_cast<std::size_t>(w);
        while (i < n && left >= iov[i].iov_len) {
            left -= iov[i].iov_len;
            ++i;
        }
        if (i < n && left) {
            iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
            iov[i].iov_len -= left;
        }
    }
}

void write_all(int fd, std::span<const std::uint8_t> data, std::chrono::milliseconds timeout)
{
    iovec v{const_cast<std::uint8_t*>(data.data()), data.size()};
    write_all(fd, std::span<const iovec>(&v, 1), timeout);
}

std::size_t unread_bytes(int fd) noexcept
{
    struct stat st {};
    if (::fstat(fd, &st) < 0)
        return 0;
    int n = 0;
    if (S_ISFIFO(st.st_mode) && ::ioctl(fd, FIONREAD, &n) == 0 && n > 0)
        return std::size_t(n);
    if (S_ISSOCK(st.st_mode) && ::ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0)
        return std::size_t(n);
    return 0;
}

bool wait_drained(int fd, std::size_t low, std::chrono::milliseconds max)
{
    const auto until = std::chrono::steady_clock::now() + max;
    for (;;) {
        if (unread_bytes(fd) <= low)
            return true;
        if (std::chrono::steady_clock::now() >= until)
            return false;
        check_cancelled();
        pollfd p{g_cancel_fd.load(std::memory_order_acquire), POLLIN, 0};
        ::poll(&p, p.fd >= 0 ? 1 : 0, 1);
    }
}

SocketSource::SocketSource(int fd, std::chrono::milliseconds timeout, bool read_ahead)
    : fd_(fd), timeout_(timeout), read_ahead_(read_ahead), buf_(read_ahead ? 256 * 1024 : 0)
{
}

std::size_t SocketSource::fill(std::uint8_t* dst, std::size_t max, bool mid_read)
{
    for (;;) {
        if (!wait_fd(fd_, POLLIN, timeout_))
            throw Error("peer sent nothing for " + std::to_string(timeout_.count()) + " ms");
        ssize_t r = is_socket_ ? ::recv(fd_, dst, max, 0) : ::read(fd_, dst, max);
        if (r < 0 && errno == ENOTSOCK) { // a pipe or a file (libxl's helper)
            is_socket_ = false;
            continue;
        }
        if (r > 0)
            return static_cast<std::size_t>(r);
        // At a read boundary the peer simply went away (killed, closed): not
        // a malformed stream.  Inside a read, what it sent is truncated.
        if (r == 0 && !mid_read)
            throw Error("the peer closed the connection");
        if (r == 0)
            throw StreamError("connection closed by peer in the middle of a record");
        if (errno != EINTR && errno != EAGAIN)
            throw_errno("receive");
    }
}

void SocketSource::read_exact(std::span<std::uint8_t> out)
{
    std::size_t done = 0;
    while (done < out.size()) {
        if (head_ < tail_) {
            std::size_t n = std::min(tail_ - head_, out.size() - done);
            std::memcpy(out.data() + done, buf_.data() + head_, n);
            head_ += n;
            done += n;
            continue;
        }
        std::size_t want = out.size() - done;
        if (!read_ahead_ || want >= buf_.size() / 2) {
            // Large reads (page data) bypass the buffer: one copy, not two.
            done += fill(out.data() + done, want, done > 0);
        } else {
            head_ = 0;
            tail_ = fill(buf_.data(), buf_.size(), done > 0);
        }
    }
}

} // namespace fastmig
