// The CRC-32C of records and the page checksums of verification, on ISA-L.
// Which of ISA-L's two CRC-32C routines runs is chosen here, by timing:
// a property of the host, not of the stream format.
#include "stream/checksum.hpp"
#include "stream/bytes.hpp"
#include "stream/types.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <isa-l/crc.h>
#include <isa-l/crc64.h>

namespace fastmig::wire {

namespace {

// Two ISA-L implementations of the same CRC.  crc32_iscsi dispatches on
// CPUID to the SSE4.2 crc32 instruction (with PCLMULQDQ folding), the right
// choice on real hardware.  But CPUID can claim an instruction that is
// emulated: under QEMU's TCG (the nested-Xen harness, or any emulated host)
// crc32 runs one bit at a time in a C helper, and there the byte-table
// crc32_iscsi_base was measured faster (116-175 MiB/s against 84-138).  So
// time both once, on a small buffer, and keep the faster (as Linux picks its
// RAID6 and xor routines at boot).  FASTMIG_CRC32C=instruction|table forces one.
using CrcFn = unsigned int (*)(unsigned char*, int, unsigned int);

struct CrcImpl {
    CrcFn fn;
    std::string description;
};

double best_ns(CrcFn fn, std::vector<unsigned char>& buf)
{
    double best = 1e300;
    for (int i = 0; i < 3; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        volatile unsigned sink = fn(buf.data(), int(buf.size()), 0xffffffffu);
        (void)sink;
        best = std::min(best, std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}

CrcImpl choose_crc()
{
    const char* env = std::getenv("FASTMIG_CRC32C");
    std::string force = env ? env : "";
    if (force == "instruction")
        return {crc32_iscsi, "ISA-L crc32_iscsi (forced by FASTMIG_CRC32C)"};
    if (force == "table")
        return {crc32_iscsi_base, "ISA-L crc32_iscsi_base (forced by FASTMIG_CRC32C)"};
    if (!force.empty() && force != "auto")
        throw Error("FASTMIG_CRC32C='" + force + "' is not auto, instruction or table");
    std::vector<unsigned char> buf(16 * 1024);
    for (std::size_t i = 0; i < buf.size(); ++i)
        buf[i] = static_cast<unsigned char>(i * 131 + 7);
    const double hw = best_ns(crc32_iscsi, buf), table = best_ns(crc32_iscsi_base, buf);
    char line[160];
    const double mib = double(buf.size()) / (1 << 20);
    std::snprintf(line, sizeof line, "%s (timed here: instruction %.0f MiB/s, table %.0f MiB/s)",
                  table < hw ? "ISA-L crc32_iscsi_base" : "ISA-L crc32_iscsi", mib / (hw * 1e-9),
                  mib / (table * 1e-9));
    return {table < hw ? crc32_iscsi_base : crc32_iscsi, line};
}

const CrcImpl& crc_impl()
{
    static const CrcImpl impl = choose_crc();
    return impl;
}

} // namespace

const std::string& crc32c_implementation() { return crc_impl().description; }

std::uint32_t crc32c(std::span<const std::uint8_t> data, std::uint32_t seed)
{
    // ISA-L takes an int length; feed it in pieces well below INT_MAX.
    constexpr std::size_t kChunk = std::size_t{1} << 30;
    const CrcFn fn = crc_impl().fn;
    std::uint32_t crc = seed;
    const std::uint8_t* p = data.data();
    for (std::size_t left = data.size(); left > 0;) {
        const std::size_t n = std::min(left, kChunk);
        crc = fn(const_cast<std::uint8_t*>(p), static_cast<int>(n), crc);
        p += n;
        left -= n;
    }
    return crc;
}

std::uint32_t crc32c_with(std::span<const std::uint8_t> data, bool table, std::uint32_t seed)
{
    return (table ? crc32_iscsi_base : crc32_iscsi)(const_cast<std::uint8_t*>(data.data()),
                                                   static_cast<int>(data.size()), seed);
}

std::uint64_t page_checksum(std::span<const std::uint8_t> page)
{
    return crc64_ecma_refl(0, page.data(), page.size());
}

std::uint64_t page_digest(std::span<const std::uint64_t> page_checksums)
{
    // crc64_ecma_refl chains: feeding the previous result as init continues
    // the same CRC, so the array can be converted in small pieces.
    if constexpr (std::endian::native == std::endian::little) {
        return crc64_ecma_refl(0, reinterpret_cast<const std::uint8_t*>(page_checksums.data()),
                               page_checksums.size() * sizeof(std::uint64_t));
    } else {
        std::uint64_t crc = 0;
        std::uint8_t buf[8 * 512];
        for (std::size_t i = 0; i < page_checksums.size();) {
            const std::size_t n = std::min<std::size_t>(512, page_checksums.size() - i);
            for (std::size_t j = 0; j < n; ++j)
                bytes::store_le<std::uint64_t>(buf + 8 * j, page_checksums[i + j]);
            crc = crc64_ecma_refl(crc, buf, 8 * n);
            i += n;
        }
        return crc;
    }
}

} // namespace fastmig::wire
