// The kernel's or xenstored's side of the xenstore wire, for tests of the
// guest agent's watch (guest-agent/xenbus_watch.hpp): messages as Linux's
// xenbus device writes them, and reading one whole request.
#pragma once

#include "guest-agent/xenbus_watch.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <unistd.h>

namespace fastmig::test {

inline std::string xs_message(std::uint32_t type, const std::string& body)
{
    std::string m(agent::xs::kHeaderSize, '\0');
    const std::uint32_t h[4] = {type, 0, 0, std::uint32_t(body.size())};
    std::memcpy(m.data(), h, sizeof h);
    return m + body;
}

inline std::string xs_event(const std::string& path, const std::string& token)
{
    return xs_message(agent::xs::kWatchEvent, path + std::string(1, '\0') + token + std::string(1, '\0'));
}

inline std::string xs_ok(std::uint32_t type) { return xs_message(type, std::string("OK", 3)); }

// Reads from `fd` until one whole request is in `out`; false at EOF or on
// an error first.
inline bool read_xs_request(int fd, std::string& out)
{
    char b[512];
    for (;;) {
        if (out.size() >= agent::xs::kHeaderSize) {
            std::uint32_t len;
            std::memcpy(&len, out.data() + 12, 4);
            if (out.size() >= agent::xs::kHeaderSize + len)
                return true;
        }
        const ssize_t n = ::read(fd, b, sizeof b);
        if (n <= 0)
            return false;
        out.append(b, std::size_t(n));
    }
}

} // namespace fastmig::test
