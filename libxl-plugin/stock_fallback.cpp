#include "libxl-plugin/stock_fallback.hpp"

#include "stream/types.hpp"
#include "stream/wire.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fastmig::interop {

namespace {

constexpr std::array<std::uint8_t, kPeekBytes> kLibxcMarker = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                               0xff, 0xff, 'X',  'E',  'N',  'F'};

// `prefix` against one magic: 1 it is the whole magic (or starts with it),
// 0 it may still become it, -1 it cannot.
int match(std::span<const std::uint8_t> prefix, std::span<const std::uint8_t> magic)
{
    std::size_t n = std::min(prefix.size(), magic.size());
    if (!std::equal(prefix.begin(), prefix.begin() + std::ptrdiff_t(n), magic.begin()))
        return -1;
    return n == magic.size() ? 1 : 0;
}

enum class Kind { pipe, socket, file };

struct Fd {
    int fd = -1;
    ~Fd()
    {
        if (fd >= 0)
            ::close(fd);
    }
};

std::string errno_text(const std::string& what)
{
    return what + ": " + std::strerror(errno);
}

// What is in the stream now: up to kPeekBytes in `buf`, none consumed.
struct Look {
    std::size_t n = 0;
    bool eof = false; // no more will come
};

// Whether the writer is gone (a pipe's last writer closed, a socket's peer
// shut down its sending side): what is there now is all there will be.
bool writer_gone(int fd)
{
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR));
}

Look look_pipe(int fd, const Fd (&priv)[2], std::uint8_t* buf, const std::string& who)
{
    // tee(2) duplicates what is in the pipe into ours without consuming
    // it; a short count means only that much is there yet.
    Look l;
    ssize_t k = ::tee(fd, priv[1].fd, kPeekBytes, SPLICE_F_NONBLOCK);
    if (k < 0 && errno != EAGAIN)
        throw Error(errno_text(who + ": tee"));
    if (k > 0) {
        std::size_t got = 0;
        while (got < std::size_t(k)) {
            ssize_t r = ::read(priv[0].fd, buf + got, std::size_t(k) - got);
            if (r <= 0)
                throw Error(errno_text(who + ": reading the peeked bytes back"));
            got += std::size_t(r);
        }
        l.n = got;
    }
    l.eof = k == 0 || (l.n < kPeekBytes && writer_gone(fd));
    return l;
}

Look look_socket(int fd, std::uint8_t* buf, const std::string& who)
{
    Look l;
    ssize_t k = ::recv(fd, buf, kPeekBytes, MSG_PEEK | MSG_DONTWAIT);
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        throw Error(errno_text(who + ": recv(MSG_PEEK)"));
    l.n = k > 0 ? std::size_t(k) : 0;
    l.eof = k == 0 || (l.n < kPeekBytes && writer_gone(fd));
    return l;
}

Look look_file(int fd, off_t at, std::uint8_t* buf, const std::string& who)
{
    Look l;
    while (l.n < kPeekBytes) {
        ssize_t k = ::pread(fd, buf + l.n, kPeekBytes - l.n, at + off_t(l.n));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            throw Error(errno_text(who + ": pread"));
        if (k == 0) {
            l.eof = true; // a file does not grow under `xl restore`
            break;
        }
        l.n += std::size_t(k);
    }
    return l;
}

} // namespace

const char* format_name(StreamFormat f)
{
    switch (f) {
    case StreamFormat::fastmig:
        return "fastmig";
    case StreamFormat::libxc:
        return "libxc (stock Xen)";
    case StreamFormat::unknown:
        break;
    }
    return "unknown";
}

std::optional<StreamFormat> classify_prefix(std::span<const std::uint8_t> prefix)
{
    int fm = match(prefix, wire::kSourceMagic);
    int xc = match(prefix, kLibxcMarker);
    if (fm == 1)
        return StreamFormat::fastmig;
    if (xc == 1)
        return StreamFormat::libxc;
    if (fm == -1 && xc == -1)
        return StreamFormat::unknown;
    return std::nullopt;
}

Peek peek_stream_format(int fd, std::chrono::milliseconds limit)
{
    const std::string who = "io_fd " + std::to_string(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        throw Error(errno_text(who));
    Kind kind;
    off_t offset = 0;
    Fd priv[2];
    Peek p;
    if (S_ISFIFO(st.st_mode)) {
        kind = Kind::pipe;
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
            throw Error(errno_text(who + ": a pipe to peek through"));
        priv[0].fd = fds[0];
        priv[1].fd = fds[1];
        p.method = "pipe (tee)";
    } else if (S_ISSOCK(st.st_mode)) {
        int type = 0;
        socklen_t len = sizeof type;
        if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
            throw Error(who + ": a socket that is not a stream socket: cannot look at its first bytes");
        kind = Kind::socket;
        p.method = "socket (MSG_PEEK)";
    } else if (S_ISREG(st.st_mode)) {
        kind = Kind::file;
        offset = ::lseek(fd, 0, SEEK_CUR);
        if (offset < 0)
            throw Error(errno_text(who + ": lseek"));
        p.method = "file (pread at " + std::to_string(offset) + ")";
    } else {
        throw Error(who + ": neither a pipe, a stream socket nor a regular file (mode " +
                    std::to_string(st.st_mode & S_IFMT) + "): cannot look at its first bytes");
    }

    const auto deadline = std::chrono::steady_clock::now() + limit;
    auto backoff = std::chrono::milliseconds(1);
    std::uint8_t buf[kPeekBytes];
    while (true) {
        Look l = kind == Kind::pipe     ? look_pipe(fd, priv, buf, who)
                 : kind == Kind::socket ? look_socket(fd, buf, who)
                                        : look_file(fd, offset, buf, who);
        p.bytes_seen = l.n;
        if (auto f = classify_prefix({buf, l.n})) {
            p.format = *f;
            return p;
        }
        if (l.eof) {
            p.format = StreamFormat::unknown;
            p.eof = true;
            return p;
        }
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline)
            throw Error(who + " (" + p.method + "): " +
                        (l.n == 0 ? std::string("no data") : "only " + std::to_string(l.n) + " bytes") +
                        " within " + std::to_string(limit.count()) + " ms: cannot tell the stream's format");
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
                    std::chrono::milliseconds(1);
        if (l.n == 0) {
            // Nothing yet: sleep in poll until the first bytes or the end.
            pollfd pf{fd, POLLIN | POLLRDHUP, 0};
            if (::poll(&pf, 1, int(std::min<long long>(left.count(), 60000))) < 0 && errno != EINTR)
                throw Error(errno_text(who + ": poll"));
        } else {
            // Part of the magic is there: poll would return at once, so
            // wait a little for the rest (a writer sends the 12 bytes
            // together; this is for a slow link splitting them).
            std::this_thread::sleep_for(std::min(backoff, left));
            backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
        }
    }
}

std::string exec_program(const std::string& program, const std::vector<std::string>& args)
{
    struct stat st {};
    if (::stat(program.c_str(), &st) != 0)
        return program + (errno == ENOENT ? " does not exist" : ": " + std::string(std::strerror(errno)));
    // The mode bits too: access(X_OK) is true for root on any file.
    if (!S_ISREG(st.st_mode) || (st.st_mode & 0111) == 0 || ::access(program.c_str(), X_OK) != 0)
        return program + " is not an executable file";
    std::vector<char*> argv;
    for (const auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(program.c_str(), argv.data());
    return "cannot run " + program + ": " + std::strerror(errno);
}

} // namespace fastmig::interop
