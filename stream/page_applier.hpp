// The destination's page work: a parsed PAGE_BATCH into the incoming domain.
//
// DestinationPages is what the whole destination knows of each pfn: seen
// (received at least once; all must be, before resume), written (holds data
// now, so a later ZERO must clear it) and, with VERIFY, its checksum.  One
// PageApplier per channel writes into it, from that channel's applier thread
// (batch_applier.hpp) and no other; its decompressor and scratch vectors are
// its own.  Channels carry disjoint 2 MiB regions (wire::channel_of), and a
// region is a whole number of bitmap words, so two appliers never write the
// same word: no lock.
#pragma once

#include "stream/codec/codec.hpp"
#include "stream/dirty_bitmap.hpp"
#include "stream/domain.hpp"
#include "stream/types.hpp"
#include "stream/wire.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fastmig {

struct DestinationPages {
    // Sized once, from HEADER, before any channel reads a page.
    void reset(std::uint64_t nr_pages, bool verify);

    bool verify = false;
    DirtyBitmap seen;
    DirtyBitmap written;
    std::vector<std::uint64_t> sums; // with verify: page_checksum of each pfn as it is here
    std::uint64_t zero_sum = 0;      // page_checksum of a zero page
};

// Counters of one channel; summed at the end.
struct ChannelCounts {
    std::uint64_t written = 0, zeroed = 0, deflate = 0, xbzrle = 0, bytes = 0;
    std::uint64_t domain_calls = 0; // writes, reads and zeroings asked of the domain (applier's thread)
};

// A batch that takes long to go into the domain holds its channel: once
// the applier's queue is full the reader stops reading, and the source's
// silence limit (--timeout-ms) counts that time (issue 19: 30 s of clearing
// free pages failed a migration).  Such a batch is logged, with its round,
// page count and time, at most one line per `every` per channel so that a
// slow host does not flood the log; the line counts the ones left out.
class SlowBatchLog {
public:
    static constexpr std::uint64_t kThresholdNs = 2'000'000'000, kEveryNs = 10'000'000'000;
    explicit SlowBatchLog(std::uint64_t threshold_ns = kThresholdNs, std::uint64_t every_ns = kEveryNs)
        : threshold_ns_(threshold_ns), every_ns_(every_ns)
    {
    }

    // A batch of `round` with `pages` pages took `took_ns`, ending at
    // `now_ns` (monotonic): the line to log (after the domain), if any.
    std::optional<std::string> note(std::uint32_t round, std::uint64_t pages, std::uint64_t took_ns,
                                    std::uint64_t now_ns);

private:
    const std::uint64_t threshold_ns_, every_ns_;
    std::optional<std::uint64_t> last_ns_; // the last line's time
    std::uint64_t left_out_ = 0;           // slow batches since, not logged
};

class PageApplier {
public:
    // features: the HEADER's bits this destination accepted; a batch that
    // uses another encoding is refused.
    PageApplier(DestinationPages& pages, ChannelCounts& counts, std::uint64_t features);

    // Writes one batch into `dom` (see page_applier.cpp for the order).
    void apply(IncomingDomain& dom, wire::PageBatch& b);

private:
    void apply_descriptors(IncomingDomain& dom, wire::PageBatch& b, std::size_t lo, std::size_t hi);
    void zero_or_free(const wire::PageDesc& d);
    void put(Pfn pfn, const std::uint8_t* page);
    void call_domain(IncomingDomain& dom);

    DestinationPages& pages_;
    ChannelCounts& counts_;
    const std::uint64_t features_;
    std::unique_ptr<codec::Decompressor> inflater_;
    // Decoded pages (XBZRLE bases then results, inflated groups), sized per
    // call before any pointer into it is taken.
    std::vector<std::uint8_t> buf_;
    std::vector<Pfn> bases_;                 // XBZRLE pages, read from the domain first
    std::vector<Pfn> pfns_;                  // pages with data, written in one gathered call
    std::vector<const std::uint8_t*> srcs_;  // their data
    std::vector<Pfn> rezero_;                // zero or free pages that held data
    std::vector<Pfn> fresh_;                 // zero or free pages named for the first time
};

} // namespace fastmig
