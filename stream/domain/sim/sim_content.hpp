// Deterministic page content for sim guests.  A guest's memory is a mix of
// page kinds whose compressibility matters to the engine (zero pages are
// skipped, text compresses well, binary data somewhat, random data not at
// all), so each kind is generated to resemble the real thing:
//   text   - words and HTML from a built-in vocabulary (deflate >= ~3:1)
//   binary - arrays of structs: small ints, pointers, flags, padding (~2:1)
//   random - wyrand output (incompressible)
// Every generated page starts with its pfn and a version tag, so no two
// non-zero pages are equal (a dedup or "already sent" shortcut in the
// engine can never be right by accident).
#pragma once

#include "stream/types.hpp"

#include <cstddef>
#include <cstdint>

namespace fastmig::sim {

enum class PageKind : std::uint8_t { zero, text, binary, random };

const char* page_kind_name(PageKind k);

// wyrand: tiny, fast, good enough for content and workload decisions.
struct Rng {
    std::uint64_t s;
    explicit Rng(std::uint64_t seed) : s(seed) {}
    std::uint64_t next()
    {
        s += 0xa0761d6478bd642full;
        __uint128_t t = static_cast<__uint128_t>(s) * (s ^ 0xe7037ed1a0b428dbull);
        return std::uint64_t(t >> 64) ^ std::uint64_t(t);
    }
    // Uniform in [0, n) (n > 0); the bias is irrelevant here.
    std::uint64_t below(std::uint64_t n) { return next() % n; }
};

// A well-mixed 64-bit hash of a few values (splitmix64 finaliser).
std::uint64_t mix(std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0);

// Fills one kPageSize page of the given kind.  `version` distinguishes the
// contents a page has over time (0 = initial fill).  zero -> all zeros.
void fill_page(PageKind kind, std::uint8_t* page, std::uint64_t seed, Pfn pfn, std::uint64_t version);

// Small in-place writes a running guest makes.
void write_text(std::uint8_t* dst, std::size_t len, Rng& rng);
void write_binary(std::uint8_t* dst, std::size_t len, Rng& rng);
void write_random(std::uint8_t* dst, std::size_t len, Rng& rng);

} // namespace fastmig::sim
