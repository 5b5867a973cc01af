// Little-endian field access in record bodies and guest structures (x86 is
// little endian; memcpy keeps unaligned access defined).
#pragma once

#include "stream/types.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace fastmig::xen {

template <class T> T load(std::span<const std::uint8_t> b, std::size_t off)
{
    if (off + sizeof(T) > b.size())
        throw Error("field at offset " + std::to_string(off) + " beyond a " + std::to_string(b.size()) +
                    "-byte structure");
    T v;
    std::memcpy(&v, b.data() + off, sizeof v);
    return v;
}

template <class T> void store(std::span<std::uint8_t> b, std::size_t off, T v)
{
    if (off + sizeof(T) > b.size())
        throw Error("field at offset " + std::to_string(off) + " beyond a " + std::to_string(b.size()) +
                    "-byte structure");
    std::memcpy(b.data() + off, &v, sizeof v);
}

template <class T> void append(std::vector<std::uint8_t>& out, T v)
{
    auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}

inline std::string hex(std::uint64_t v)
{
    char b[24];
    std::snprintf(b, sizeof b, "%#llx", (unsigned long long)v);
    return b;
}

} // namespace fastmig::xen
