#include "guest-agent/xenbus_watch.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#if __has_include(<xen/io/xs_wire.h>)
extern "C" {
#include <xen/io/xs_wire.h>
}
static_assert(fastmig::agent::xs::kWatch == XS_WATCH);
static_assert(fastmig::agent::xs::kWatchEvent == XS_WATCH_EVENT);
static_assert(fastmig::agent::xs::kError == XS_ERROR);
static_assert(fastmig::agent::xs::kPayloadMax == XENSTORE_PAYLOAD_MAX);
static_assert(fastmig::agent::xs::kHeaderSize == sizeof(xsd_sockmsg));
#endif

namespace fastmig::agent {

namespace {

void put32(std::string& out, std::uint32_t v)
{
    char b[4];
    std::memcpy(b, &v, 4);
    out.append(b, 4);
}

std::uint32_t get32(const char* p)
{
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

std::string printable(std::string_view s)
{
    std::string r;
    for (char c : s.substr(0, 64))
        r += (c >= 0x20 && c < 0x7f) ? c : '?';
    return r;
}

} // namespace

std::string watch_request(std::string_view path, std::string_view token)
{
    if (path.empty() || token.empty())
        throw std::invalid_argument("xenstore watch: empty path or token");
    if (path.find('\0') != path.npos || token.find('\0') != token.npos)
        throw std::invalid_argument("xenstore watch: NUL inside the path or the token");
    const std::size_t len = path.size() + 1 + token.size() + 1;
    if (len > xs::kPayloadMax)
        throw std::invalid_argument("xenstore watch: path and token exceed " + std::to_string(xs::kPayloadMax) +
                                    " bytes");
    std::string m;
    m.reserve(xs::kHeaderSize + len);
    put32(m, xs::kWatch);
    put32(m, 0); // req_id: echoed back, unused with one request at a time
    put32(m, 0); // tx_id: no transaction
    put32(m, std::uint32_t(len));
    m.append(path);
    m.push_back('\0');
    m.append(token);
    m.push_back('\0');
    return m;
}

std::optional<XsMessage> XsMessageReader::next()
{
    if (buf_.size() < xs::kHeaderSize)
        return std::nullopt;
    const std::uint32_t len = get32(buf_.data() + 12);
    if (len > xs::kPayloadMax)
        throw std::runtime_error("xenstore message of " + std::to_string(len) + " bytes (at most " +
                                 std::to_string(xs::kPayloadMax) + ")");
    if (buf_.size() < xs::kHeaderSize + len)
        return std::nullopt;
    XsMessage m;
    m.type = get32(buf_.data());
    m.req_id = get32(buf_.data() + 4);
    m.tx_id = get32(buf_.data() + 8);
    m.body.assign(buf_, xs::kHeaderSize, len);
    buf_.erase(0, xs::kHeaderSize + len);
    return m;
}

std::size_t XsMessageReader::missing() const
{
    if (buf_.size() < xs::kHeaderSize)
        return xs::kHeaderSize - buf_.size();
    const std::size_t whole = xs::kHeaderSize + std::min<std::uint32_t>(get32(buf_.data() + 12), xs::kPayloadMax);
    return whole > buf_.size() ? whole - buf_.size() : 0;
}

std::optional<std::string_view> watch_event_token(std::string_view body)
{
    const auto end_path = body.find('\0');
    if (end_path == body.npos)
        return std::nullopt;
    const auto rest = body.substr(end_path + 1);
    const auto end_token = rest.find('\0');
    if (end_token == rest.npos)
        return std::nullopt;
    return rest.substr(0, end_token);
}

std::string xenbus_device()
{
    return ::access("/dev/xen/xenbus", F_OK) == 0 ? "/dev/xen/xenbus" : "/proc/xen/xenbus";
}

namespace {

int open_device(const std::string& device, const std::string& path)
{
    const int fd = ::open(device.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0)
        throw std::runtime_error("cannot watch " + path + ": cannot open " + device + ": " + std::strerror(errno));
    return fd;
}

} // namespace

XenbusWatch::XenbusWatch(const std::string& device, std::string path, std::string token,
                         std::chrono::milliseconds reply_timeout)
    : XenbusWatch(open_device(device, path), std::move(path), std::move(token), reply_timeout)
{
}

XenbusWatch::XenbusWatch(int fd, std::string path, std::string token, std::chrono::milliseconds reply_timeout)
    : fd_(fd), path_(std::move(path)), token_(std::move(token))
{
    try {
        register_watch(reply_timeout);
    } catch (...) {
        ::close(fd_);
        throw;
    }
}

XenbusWatch::~XenbusWatch() { ::close(fd_); }

std::string XenbusWatch::what(const std::string& cause) const { return "xenstore watch on " + path_ + ": " + cause; }

void XenbusWatch::register_watch(std::chrono::milliseconds reply_timeout)
{
    // One write: the device buffers a partial message, but a single write
    // is handled atomically against other writers of the same fd.
    const std::string req = watch_request(path_, token_);
    const ssize_t w = ::write(fd_, req.data(), req.size());
    if (w != ssize_t(req.size()))
        throw std::runtime_error(what(w < 0 ? std::string("write: ") + std::strerror(errno) : "short write"));
    const auto deadline = std::chrono::steady_clock::now() + reply_timeout;
    for (;;) {
        while (auto m = reader_.next()) {
            if (m->type == xs::kWatch)
                return; // "OK"
            if (m->type == xs::kError)
                throw std::runtime_error(what("xenstore refused it: " + printable(m->body)));
            take(*m); // the first firing may come before the reply
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            throw std::runtime_error(what("no reply within " + std::to_string(reply_timeout.count()) + " ms"));
        pollfd p{fd_, POLLIN, 0};
        const int r = ::poll(&p, 1, int(left.count()));
        if (r < 0 && errno != EINTR)
            throw std::runtime_error(what(std::string("poll: ") + std::strerror(errno)));
        if (r <= 0)
            continue;
        // No further than the message being read: what follows the reply
        // stays in the device and keeps fd() readable for the caller's poll.
        char buf[4096];
        const ssize_t n = ::read(fd_, buf, std::min(sizeof buf, std::max<std::size_t>(reader_.missing(), 1)));
        if (n < 0 && errno != EINTR)
            throw std::runtime_error(what(std::string("read: ") + std::strerror(errno)));
        if (n == 0)
            throw std::runtime_error(what("the device closed before its reply"));
        if (n > 0)
            reader_.feed(buf, std::size_t(n));
    }
}

void XenbusWatch::take(const XsMessage& m)
{
    if (m.type != xs::kWatchEvent)
        throw std::runtime_error(what("unexpected xenstore message of type " + std::to_string(m.type)));
    const auto token = watch_event_token(m.body);
    if (!token)
        throw std::runtime_error(what("malformed watch event"));
    if (*token == token_)
        ++pending_;
}

unsigned XenbusWatch::drain()
{
    for (;;) {
        pollfd p{fd_, POLLIN, 0};
        const int r = ::poll(&p, 1, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            throw std::runtime_error(what(std::string("poll: ") + std::strerror(errno)));
        if (r == 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)))
            break;
        char buf[4096];
        const ssize_t n = ::read(fd_, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            throw std::runtime_error(what(std::string("read: ") + std::strerror(errno)));
        if (n == 0)
            throw std::runtime_error(what("the device closed"));
        reader_.feed(buf, std::size_t(n));
    }
    while (auto m = reader_.next())
        take(*m);
    const unsigned n = pending_;
    pending_ = 0;
    return n;
}

} // namespace fastmig::agent
