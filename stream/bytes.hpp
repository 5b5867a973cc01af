// Little-endian loads and stores: the one place that knows how the host lays
// out integers.  The stream format, the auth bodies and Xen's own records are
// little endian on every host; memcpy keeps these free of alignment and
// aliasing assumptions (fields are read in place from a byte buffer) and
// compiles to a plain load or store on x86.
#pragma once

#include <bit>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace fastmig::bytes {

// The host value of `v` read as little endian (identity on x86).
template <std::integral T> constexpr T from_le(T v)
{
    if constexpr (std::endian::native == std::endian::big && sizeof(T) > 1) {
        using U = std::make_unsigned_t<T>;
        U u = static_cast<U>(v);
        if constexpr (sizeof(T) == 2)
            u = __builtin_bswap16(u);
        else if constexpr (sizeof(T) == 4)
            u = __builtin_bswap32(u);
        else
            u = __builtin_bswap64(u);
        return static_cast<T>(u);
    }
    return v;
}

// Byte swapping is its own inverse.
template <std::integral T> constexpr T to_le(T v) { return from_le(v); }

template <std::integral T> T load_le(const std::uint8_t* p)
{
    T v;
    std::memcpy(&v, p, sizeof v);
    return from_le(v);
}

template <std::integral T> void store_le(std::uint8_t* p, T v)
{
    v = to_le(v);
    std::memcpy(p, &v, sizeof v);
}

template <std::integral T> void append_le(std::vector<std::uint8_t>& out, T v)
{
    std::uint8_t b[sizeof(T)];
    store_le(b, v);
    out.insert(out.end(), b, b + sizeof b);
}

} // namespace fastmig::bytes
