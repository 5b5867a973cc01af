// Blocking read of exactly n bytes, for the test programs that play
// libxl's and Xen's ends (fake_libxl, fake_stock_helper): false at EOF or
// on an error, retried on EINTR.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include <unistd.h>

inline bool read_exact(int fd, void* buf, std::size_t n)
{
    auto* p = static_cast<std::uint8_t*>(buf);
    while (n) {
        ssize_t r = ::read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        n -= std::size_t(r);
    }
    return true;
}
