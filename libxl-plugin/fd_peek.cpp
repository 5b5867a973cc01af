#include "libxl-plugin/fd_peek.hpp"

#include "stream/types.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fastmig::emu {

namespace {

[[noreturn]] void fail(const char* what)
{
    throw Error(std::string("peeking at the stream: ") + what + ": " + std::strerror(errno));
}

// What is readable now, not consumed; `eof` when nothing more can come.
std::size_t peek_now(int fd, mode_t type, std::uint8_t* buf, std::size_t max, bool& eof)
{
    eof = false;
    if (S_ISSOCK(type)) {
        ssize_t n = ::recv(fd, buf, max, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        if (n < 0)
            fail("recv(MSG_PEEK)");
        eof = n == 0;
        return std::size_t(n);
    }
    if (S_ISFIFO(type)) {
        // tee(2) copies a pipe's buffered bytes into another pipe and leaves
        // them where they were.
        int scratch[2];
        if (::pipe2(scratch, O_CLOEXEC | O_NONBLOCK) < 0)
            fail("pipe2");
        ssize_t n = ::tee(fd, scratch[1], max, SPLICE_F_NONBLOCK);
        int saved = errno;
        std::size_t got = 0;
        if (n > 0) {
            ssize_t r = ::read(scratch[0], buf, std::size_t(n));
            got = r > 0 ? std::size_t(r) : 0;
        }
        ::close(scratch[0]);
        ::close(scratch[1]);
        if (n < 0 && saved != EAGAIN && saved != EINTR) {
            errno = saved;
            fail("tee");
        }
        // No writer left: poll says POLLHUP (with or without data).
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 0) == 1 && (p.revents & POLLHUP))
            eof = true;
        return got;
    }
    if (S_ISREG(type)) {
        off_t at = ::lseek(fd, 0, SEEK_CUR); // where the next read starts; not a seek
        if (at < 0)
            fail("lseek(SEEK_CUR)");
        ssize_t n = ::pread(fd, buf, max, at);
        if (n < 0)
            fail("pread");
        eof = std::size_t(n) < max; // a file being written is never handed over
        return std::size_t(n);
    }
    errno = EINVAL;
    fail("not a socket, pipe or regular file");
}

} // namespace

std::vector<std::uint8_t> peek_fd(int fd, std::size_t max, std::chrono::milliseconds timeout,
                                  const std::function<bool(std::span<const std::uint8_t>)>& enough)
{
    struct stat st {};
    if (::fstat(fd, &st) < 0)
        fail("fstat");
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<std::uint8_t> buf(max);
    for (;;) {
        bool eof = false;
        std::size_t got = peek_now(fd, st.st_mode, buf.data(), max, eof);
        std::span<const std::uint8_t> seen(buf.data(), got);
        if (got == max || eof || enough(seen)) {
            buf.resize(got);
            return buf;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            throw Error("peeking at the stream: " + std::to_string(got) + " bytes after " +
                        std::to_string(timeout.count()) + " ms, more expected");
        // Nothing buffered: wait for the first byte.  Some bytes already:
        // no readiness event says "more than N bytes", so look again in 2 ms
        // (a peek waits only for the few bytes of a line or a magic).
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, got == 0 ? int(std::min<long long>(left.count(), 1000)) : 2);
    }
}

} // namespace fastmig::emu
