// The bytes an iovec list describes, in order: what writev would send.
// Shared by the unit tests and the fuzz seed generator.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <vector>

namespace fastmig::test {

inline std::vector<std::uint8_t> gather(std::span<const iovec> iov)
{
    std::vector<std::uint8_t> out;
    for (const auto& v : iov) {
        auto* p = static_cast<const std::uint8_t*>(v.iov_base);
        out.insert(out.end(), p, p + v.iov_len);
    }
    return out;
}

} // namespace fastmig::test
