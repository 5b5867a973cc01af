// Bounds-checked little-endian field access in record bodies and guest
// structures, over the byte order of stream/bytes.hpp.
#pragma once

#include "stream/bytes.hpp"
#include "stream/types.hpp"

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

namespace fastmig::xen {

template <class T> T load(std::span<const std::uint8_t> b, std::size_t off)
{
    if (off + sizeof(T) > b.size())
        throw Error("field at offset " + std::to_string(off) + " beyond a " + std::to_string(b.size()) +
                    "-byte structure");
    return bytes::load_le<T>(b.data() + off);
}

template <class T> void store(std::span<std::uint8_t> b, std::size_t off, T v)
{
    if (off + sizeof(T) > b.size())
        throw Error("field at offset " + std::to_string(off) + " beyond a " + std::to_string(b.size()) +
                    "-byte structure");
    bytes::store_le(b.data() + off, v);
}

template <class T> void append(std::vector<std::uint8_t>& out, T v) { bytes::append_le(out, v); }

inline std::string hex(std::uint64_t v)
{
    char b[24];
    std::snprintf(b, sizeof b, "%#llx", (unsigned long long)v);
    return b;
}

} // namespace fastmig::xen
