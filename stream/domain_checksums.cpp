// Per-page checksums of a whole domain (sender.hpp), read in batches: what
// --verify compares with the destination's digest after DONE.
#include "stream/sender.hpp"

#include "stream/wire.hpp"

#include <array>
#include <cstdlib>

namespace fastmig {

namespace {

// Same-size page buffer for verification reads.
struct PageBuffer {
    explicit PageBuffer(std::size_t pages)
        : data(static_cast<std::uint8_t*>(std::aligned_alloc(kPageSize, pages * kPageSize)))
    {
        if (!data)
            throw Error("out of memory for a page buffer");
    }
    ~PageBuffer() { std::free(data); }
    PageBuffer(const PageBuffer&) = delete;
    PageBuffer& operator=(const PageBuffer&) = delete;
    std::uint8_t* data;
};

} // namespace

std::vector<std::uint64_t> domain_checksums(Domain& dom, const DirtyBitmap* as_zero)
{
    std::array<std::uint8_t, kPageSize> zero{};
    const std::uint64_t zero_sum = wire::page_checksum(zero);
    constexpr std::size_t kBatch = 512;
    PageBuffer buf(kBatch);
    std::vector<std::uint64_t> sums(dom.nr_pages());
    std::vector<Pfn> pfns;
    for (Pfn base = 0; base < dom.nr_pages(); base += kBatch) {
        pfns.clear();
        for (Pfn p = base; p < std::min<Pfn>(base + kBatch, dom.nr_pages()); ++p)
            pfns.push_back(p);
        dom.read_pages(pfns, {buf.data, pfns.size() * kPageSize});
        for (std::size_t i = 0; i < pfns.size(); ++i)
            sums[pfns[i]] = as_zero && as_zero->test(pfns[i]) ? zero_sum
                                                               : wire::page_checksum({buf.data + i * kPageSize, kPageSize});
    }
    return sums;
}

} // namespace fastmig
