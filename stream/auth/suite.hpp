// What protects the records of a connection after the pre-shared-key
// handshake (docs/stream-format.md, Suites): the number AUTH_HELLO carries
// and the name `--cipher` takes.  Apart from auth.hpp so that the options
// of the sender, the receiver and the outcome query can name a suite
// without pulling in nettle.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace fastmig::auth {

enum class Suite : std::uint32_t {
    umac = 1,              // UMAC-128 tags, records in clear (--cipher none)
    aes256_gcm = 2,        // AES-256-GCM: records encrypted and tagged
    chacha20_poly1305 = 3, // ChaCha20-Poly1305: records encrypted and tagged
};

// The suite `fastmig send/receive/demo` use with a key and no --cipher
// (README, Encryption: chosen from `make bench-crypto`).
constexpr Suite kDefaultSuite = Suite::aes256_gcm;

inline bool encrypts(Suite s) { return s != Suite::umac; }

// The --cipher name: "none", "aes-256-gcm", "chacha20-poly1305".
inline const char* suite_name(Suite s)
{
    switch (s) {
    case Suite::umac: return "none";
    case Suite::aes256_gcm: return "aes-256-gcm";
    case Suite::chacha20_poly1305: return "chacha20-poly1305";
    }
    return "unknown";
}

// A suite number read from the wire, if this side knows it.
inline std::optional<Suite> known_suite(std::uint32_t v)
{
    if (v >= 1 && v <= 3)
        return static_cast<Suite>(v);
    return std::nullopt;
}

// A --cipher name; nullopt if it names none of the three.
inline std::optional<Suite> parse_suite_name(const std::string& name)
{
    for (Suite s : {Suite::umac, Suite::aes256_gcm, Suite::chacha20_poly1305})
        if (name == suite_name(s))
            return s;
    return std::nullopt;
}

} // namespace fastmig::auth
