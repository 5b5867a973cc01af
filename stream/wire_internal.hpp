// Helpers shared by the wire*.cpp files and no one else: the descriptor
// layout, padding, the record header and the shape of a StreamError's text.
// Not part of the API (wire.hpp is): nothing outside stream/wire*.cpp
// includes this.
#pragma once

#include "stream/bytes.hpp"
#include "stream/wire.hpp"

#include <cstdint>
#include <cstdio>
#include <string>

namespace fastmig::wire::detail {

constexpr std::size_t pad_of(std::size_t len) { return (8 - len % 8) % 8; }

// Source of padding bytes for writev: padding is never longer than 7 bytes.
inline constexpr std::uint8_t kZeros[8] = {};

// A page descriptor: pfn:40 encoding:4 length:20 (docs/stream-format.md,
// PAGE_BATCH).
constexpr unsigned kPfnBits = 40;
constexpr unsigned kEncodingShift = 40;
constexpr unsigned kLengthShift = 44;
constexpr std::uint64_t kPfnMask = (std::uint64_t{1} << kPfnBits) - 1;
constexpr std::uint64_t kLengthLimit = std::uint64_t{1} << (64 - kLengthShift);
static_assert(kMaxPages - 1 <= kPfnMask, "every legal pfn must fit the descriptor");
static_assert(kMaxEncodedPage < kLengthLimit, "every legal page length must fit the descriptor");

// kMaxEncodedPage (wire.hpp): a compressed page may legally be a little
// larger than the page itself (a deflate stored block, an XBZRLE delta of a
// scattered change); the slack is what kMaxRecordBody was sized for.
static_assert(kMaxGroupPages * std::uint64_t{kMaxEncodedPage} < kLengthLimit,
              "the blob of a full deflate group must fit the descriptor");

// PAGE_BATCH body before its descriptors: round:u32 count:u32 reserved:u64.
constexpr std::size_t kBatchFixed = 16;

inline std::string hex(std::uint64_t v)
{
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
    return b;
}

inline std::string str(std::uint64_t v) { return std::to_string(v); }

[[noreturn]] inline void fail(const char* record, const std::string& what)
{
    throw StreamError(std::string(record) + ": " + what);
}

// type:u32 length:u32 crc:u32 reserved:u32, crc left 0 for the caller.
inline void fill_record_header(std::uint8_t* h, RecordType type, std::uint32_t length)
{
    bytes::store_le<std::uint32_t>(h, static_cast<std::uint32_t>(type));
    bytes::store_le<std::uint32_t>(h + 4, length);
    bytes::store_le<std::uint32_t>(h + 8, 0);
    bytes::store_le<std::uint32_t>(h + 12, 0);
}

} // namespace fastmig::wire::detail
