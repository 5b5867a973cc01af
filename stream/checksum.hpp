// Checksums: the CRC-32C that every record carries (docs/stream-format.md,
// Records) and the CRC-64 page checksums and domain digest of verification
// (kFeatureVerify).  wire.hpp includes this header: the record CRC is part
// of the format, the choice of routine that computes it is not.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace fastmig::wire {

// CRC32C (ISA-L crc32_iscsi) used for records.  Returns the running,
// un-complemented value so that it chains: crc32c(b, crc32c(a)) equals
// crc32c(a followed by b).  The standard CRC-32C, as stored in a record, is
// ~crc32c(data) (0xe3069283 for "123456789").
// The implementation is ISA-L's instruction-based one or its table, whichever
// runs faster on this machine (timed once; see checksum.cpp; FASTMIG_CRC32C
// forces one): they compute the same CRC.
std::uint32_t crc32c(std::span<const std::uint8_t> data, std::uint32_t seed = 0xffffffffu);
// Which one, and the rates that chose it (for logs).
const std::string& crc32c_implementation();
// One of them by name (tests: both must agree); data below 2 GiB.
std::uint32_t crc32c_with(std::span<const std::uint8_t> data, bool table, std::uint32_t seed = 0xffffffffu);
// Per-page checksum used by verification (ISA-L crc64 ECMA reflected).
std::uint64_t page_checksum(std::span<const std::uint8_t> page);
// Digest of a whole domain: CRC64 over the little-endian array of per-page
// checksums in pfn order.  Source and destination compute it the same way.
std::uint64_t page_digest(std::span<const std::uint64_t> page_checksums);

} // namespace fastmig::wire
