#include "evtchn-ipc/fd_passing.hpp"

#include "stream/types.hpp"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace fastmig::ipc {

namespace {

// Waits for `events` on sock until the deadline; throws on timeout.
void wait_for(int sock, short events, std::chrono::steady_clock::time_point deadline, const char* what)
{
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            throw Error(std::string(what) + ": timed out");
        pollfd p{sock, events, 0};
        int r = ::poll(&p, 1, int(std::min<long long>(left.count(), 1 << 30)));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            throw_errno(what);
        if (r > 0)
            return; // readable/writable, or HUP/ERR: the call itself reports it
    }
}

sockaddr_un make_addr(const std::string& path)
{
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path)
        throw Error("socket path too long: " + path);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return a;
}

} // namespace

void send_fds(int sock, const void* data, std::size_t len, const std::vector<int>& fds,
              std::chrono::milliseconds timeout)
{
    if (len > kMaxMessage || fds.size() > kMaxFds)
        throw Error("send_fds: message too large");
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::uint8_t dummy = 0;
    iovec iov{len ? const_cast<void*>(data) : &dummy, len ? len : 1};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (!fds.empty()) {
        std::memset(cbuf, 0, sizeof cbuf);
        mh.msg_control = cbuf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
        ssize_t n = ::sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0)
            return; // SEQPACKET: all or nothing
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wait_for(sock, POLLOUT, deadline, "send_fds");
            continue;
        }
        throw_errno("send_fds");
    }
}

void close_fds(Message& m)
{
    for (int fd : m.fds)
        if (fd >= 0)
            ::close(fd);
    m.fds.clear();
}

Message recv_fds(int sock, std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    Message m;
    m.data.resize(kMaxMessage + 1); // one more byte tells a truncation apart
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
    for (;;) {
        iovec iov{m.data.data(), m.data.size()};
        msghdr mh{};
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof cbuf;
        ssize_t n = ::recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_for(sock, POLLIN, deadline, "recv_fds");
            continue;
        }
        if (n < 0)
            throw_errno("recv_fds");
        for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (std::size_t i = 0; i < k; ++i) {
                    int fd;
                    std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                    m.fds.push_back(fd);
                }
            }
        }
        if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
            close_fds(m);
            throw Error("recv_fds: message or fd list too large");
        }
        if (n == 0 && m.fds.empty())
            throw Error("recv_fds: peer closed the connection");
        m.data.resize(std::size_t(n));
        return m;
    }
}

int connect_seqpacket(const std::string& path)
{
    sockaddr_un a = make_addr(path);
    int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) {
        int e = errno;
        ::close(s);
        errno = e;
        return -1;
    }
    return s;
}

int listen_seqpacket(const std::string& path, int backlog)
{
    sockaddr_un a = make_addr(path);
    int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0)
        throw_errno("socket");
    if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0 || ::listen(s, backlog) < 0) {
        int e = errno;
        ::close(s);
        errno = e;
        throw_errno("listen on " + path);
    }
    return s;
}

} // namespace fastmig::ipc
