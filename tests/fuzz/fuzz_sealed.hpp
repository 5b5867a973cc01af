// Encrypted streams for the fuzz targets and their seeds
// (docs/stream-format.md, Encryption): the fixed key both use, and the
// sealing of a clear stream record by record, as a keyed source would send
// it.  Like fix_crcs: a mutated encrypted record never has a valid tag, so
// inputs that ask for it are sealed after mutation, and the body parsers
// are reached through decryption; the others test the tag check itself.
#pragma once

#include "stream/auth/auth.hpp"
#include "stream/wire.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace fastmig::fuzz {

inline std::vector<std::uint8_t> fuzz_key() { return std::vector<std::uint8_t>(auth::kAeadKeySize, 0x42); }

// `s[0, from)` (the magic) as it is, then every whole record of `s` sealed
// under fuzz_key() with sequence numbers 0, 1, ...; a record whose length
// runs past the end, and whatever follows it, is copied as it is.
inline std::vector<std::uint8_t> seal_stream(std::span<const std::uint8_t> s, std::size_t from, auth::Suite suite)
{
    const auto key = fuzz_key();
    auth::AeadSealer sealer(suite, key);
    std::size_t at = std::min(from, s.size()); // a stream shorter than its magic stays as it is
    std::vector<std::uint8_t> out(s.begin(), s.begin() + at);
    while (at + wire::kRecordHeaderSize <= s.size()) {
        const std::uint64_t len = std::uint64_t{s[at + 4]} | std::uint64_t{s[at + 5]} << 8 |
                                  std::uint64_t{s[at + 6]} << 16 | std::uint64_t{s[at + 7]} << 24;
        const std::uint64_t whole = wire::kRecordHeaderSize + len + (8 - len % 8) % 8;
        if (whole > s.size() - at)
            break;
        const iovec rec{const_cast<std::uint8_t*>(s.data() + at), static_cast<std::size_t>(whole)};
        std::vector<iovec> sealed;
        sealer.seal({&rec, 1}, sealed);
        for (const iovec& v : sealed)
            out.insert(out.end(), static_cast<const std::uint8_t*>(v.iov_base),
                       static_cast<const std::uint8_t*>(v.iov_base) + v.iov_len);
        at += static_cast<std::size_t>(whole);
    }
    out.insert(out.end(), s.begin() + at, s.end());
    return out;
}

} // namespace fastmig::fuzz
