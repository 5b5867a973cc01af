#include "evtchn-ipc/doorbell.hpp"

#include "stream/types.hpp"

#include <cerrno>
#include <cstdint>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace fastmig::ipc {

Doorbell Doorbell::create()
{
    // Non-blocking so drain() can read without waiting; wait() uses poll.
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        throw_errno("doorbell: eventfd");
    return Doorbell(fd);
}

Doorbell Doorbell::adopt(int fd)
{
    if (fd < 0)
        throw Error("doorbell: invalid fd");
    return Doorbell(fd);
}

Doorbell& Doorbell::operator=(Doorbell&& o) noexcept
{
    if (this != &o) {
        if (fd_ >= 0)
            ::close(fd_);
        fd_ = o.fd_;
        o.fd_ = -1;
    }
    return *this;
}

Doorbell::~Doorbell()
{
    if (fd_ >= 0)
        ::close(fd_);
}

void Doorbell::notify()
{
    std::uint64_t one = 1;
    for (;;) {
        ssize_t n = ::write(fd_, &one, sizeof one);
        if (n == sizeof one)
            return;
        if (n < 0 && errno == EINTR)
            continue;
        // EAGAIN: the counter is at its maximum, so the waiter is already
        // going to wake; nothing is lost.
        if (n < 0 && errno == EAGAIN)
            return;
        throw_errno("doorbell: notify");
    }
}

bool Doorbell::drain()
{
    std::uint64_t v = 0;
    for (;;) {
        ssize_t n = ::read(fd_, &v, sizeof v);
        if (n == sizeof v)
            return true;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return false;
        throw_errno("doorbell: read");
    }
}

bool Doorbell::wait(std::chrono::milliseconds timeout)
{
    if (drain())
        return true;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() < 0)
            left = std::chrono::milliseconds(0);
        pollfd p{fd_, POLLIN, 0};
        int r = ::poll(&p, 1, int(std::min<long long>(left.count(), 1 << 30)));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            throw_errno("doorbell: poll");
        if (r > 0 && drain())
            return true;
        if (left.count() == 0)
            return false;
    }
}

} // namespace fastmig::ipc
