// The destination's page tables localised early, from the page types the
// source sends before it suspends the guest (Domain::early_state): libxc
// localises each page table as it arrives, because its stream carries the
// type with every page; fastmig's types come in one map, so without this
// every page table would be localised at the end, inside the downtime.
//
// A page localised early holds the destination's mfns.  The stream may
// still write it again (the guest changed it after the early map): then it
// holds the stream's bytes (pfns) again and is localised at the end, with
// its final type.  An XBZRLE delta for it applies to the bytes the stream
// last sent, not to the localised page, so those are kept here.  A page
// left local at the end whose final type is plain keeps local frame numbers:
// the stale contents of a former page table, which the guest does not read
// as pfns (libxc leaves such a page the same way).
#pragma once

#include "stream/domain/xen/pv_page_types.hpp"
#include "stream/types.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

namespace fastmig::xen {

class EarlyTables {
public:
    // The page tables of `types` (one early blob's map) not local yet, in
    // pfn order: the ones to localise now.
    std::vector<Pfn> to_localise(const PfnTypeMap& types) const;
    // The same at the end, against the final map: the page tables that do
    // not hold local frames.
    std::vector<Pfn> left_at_end(const PfnTypeMap& final_types) const { return to_localise(final_types); }

    // pfn is about to be localised in place; `sent` is what it holds now
    // (the stream's bytes).  Once per pfn until forget().
    void keep(Pfn pfn, std::span<const std::uint8_t> sent);
    // The stream wrote or cleared these pages: they hold its bytes again.
    void forget(std::span<const Pfn> pfns);
    bool local(Pfn pfn) const;
    // The stream's bytes of a local page, into dst (one page); false when
    // the page is not local (read it from the domain).
    bool sent_bytes(Pfn pfn, std::span<std::uint8_t> dst) const;
    std::size_t size() const;

private:
    mutable std::mutex m_;
    std::unordered_map<Pfn, std::unique_ptr<std::uint8_t[]>> sent_;
};

} // namespace fastmig::xen
