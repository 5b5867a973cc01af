// A xenstore watch on Linux's xenbus device (/dev/xen/xenbus), spoken
// directly instead of through libxenstore's xs_watch.
//
// Why: the agent is a static binary, and libxenstore's static archive is
// built without its reader thread (Xen's tools/libs/store/Makefile adds
// -DUSE_PTHREAD to the shared object only).  Without it, xs_watch writes
// XS_WATCH and reads exactly one message, taking it as the reply.  xenstored
// fires every new watch once as soon as it is registered, and Linux's
// device (drivers/xen/xenbus/xenbus_dev_frontend.c) queues that event from
// its xenwatch thread while the writer is still on its way to queue the
// "OK" it synthesizes after register_xenbus_watch returns: when the event
// is read first, libxenstore finds no reply, fails with EINVAL and closes
// the connection (which drops the watch).  That was the agent's "cannot
// watch ... (Invalid argument)" in every Linux guest.  Here an event that
// comes before the reply is simply counted.
//
// The bytes on the device are the xenstore wire (xen/io/xs_wire.h): a
// 16-byte header {type, req_id, tx_id, len} in host order, then len bytes;
// an XS_WATCH body is the path and the token, each NUL-terminated (the
// device refuses a token without its NUL).  Pure apart from read/write/poll
// on one fd, so a socketpair stands in for the device in the unit test.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fastmig::agent {

namespace xs {
// From xen/io/xs_wire.h (checked against it in xenbus_watch.cpp when the
// header is there): a stable ABI.
constexpr std::uint32_t kWatch = 4;
constexpr std::uint32_t kWatchEvent = 15;
constexpr std::uint32_t kError = 16;
constexpr std::uint32_t kPayloadMax = 4096;
constexpr std::size_t kHeaderSize = 16;
} // namespace xs

struct XsMessage {
    std::uint32_t type = 0;
    std::uint32_t req_id = 0;
    std::uint32_t tx_id = 0;
    std::string body;
};

// The bytes of one XS_WATCH request for `path` with `token`.  Throws
// std::invalid_argument for an empty path or token, one with a NUL inside,
// or a body over xs::kPayloadMax.
std::string watch_request(std::string_view path, std::string_view token);

// Splits the device's byte stream into messages: a read may end inside one,
// or hold several.
class XsMessageReader {
public:
    void feed(const char* data, std::size_t n) { buf_.append(data, n); }
    // The next whole message, if one has arrived.  Throws std::runtime_error
    // when a header claims a body longer than xs::kPayloadMax.
    std::optional<XsMessage> next();
    // Bytes still to come before next() can return a message: the rest of
    // the header, then the rest of the body.
    std::size_t missing() const;

private:
    std::string buf_;
};

// The token of an XS_WATCH_EVENT body ("path\0token\0"), or nothing when
// the body is not that.
std::optional<std::string_view> watch_event_token(std::string_view body);

// Linux's xenbus device, as libxenstore picks it: /dev/xen/xenbus, else
// /proc/xen/xenbus (older kernels, xenfs).
std::string xenbus_device();

// One watch, on a connection of its own.  Closing it unregisters the
// watch; Linux registers it again after a resume (a migration), and
// xenstored then fires it once, which is what the agent waits for.
class XenbusWatch {
public:
    // Opens `device` and registers the watch: throws std::runtime_error
    // naming the device, the path and the cause (an XS_ERROR reply, no
    // reply within `reply_timeout`, a malformed message).
    XenbusWatch(const std::string& device, std::string path, std::string token,
                std::chrono::milliseconds reply_timeout = std::chrono::seconds(5));
    // The same on an fd already open (taken over, closed by the destructor).
    XenbusWatch(int fd, std::string path, std::string token,
                std::chrono::milliseconds reply_timeout = std::chrono::seconds(5));
    ~XenbusWatch();
    XenbusWatch(const XenbusWatch&) = delete;
    XenbusWatch& operator=(const XenbusWatch&) = delete;

    // Readable when an event may be waiting (for poll).  Registration reads
    // no further than its reply, so an event after it leaves this readable;
    // those that came before it are counted by the first drain().
    int fd() const { return fd_; }
    // Reads what the device holds, without blocking: how many events for
    // our token arrived since the last call (those that came before the
    // registration's reply included).  Throws std::runtime_error when the
    // device is gone or sends something that is not an event.
    unsigned drain();

private:
    void register_watch(std::chrono::milliseconds reply_timeout);
    void take(const XsMessage& m);
    std::string what(const std::string& cause) const;

    int fd_;
    std::string path_, token_;
    XsMessageReader reader_;
    unsigned pending_ = 0;
};

} // namespace fastmig::agent
