// What the source does with one page it read for the engine, given the type
// Xen reported for it: copy it, normalise it (page tables), or give zeros
// for a page without data; and the set of pages deferred to a later round
// (a page table caught mid-update while the guest runs, a pfn without a
// frame), which the next dirty-log fetch hands back to the engine.
#pragma once

#include "stream/dirty_bitmap.hpp"
#include "stream/domain/xen/pv_frames.hpp"
#include "stream/domain/xen/pv_page_types.hpp"

#include <mutex>
#include <span>
#include <string>

namespace fastmig::xen {

enum class PageOutcome {
    copied,     // plain page
    normalised, // page table, mfns rewritten as pfns
    no_data,    // XTAB / XALLOC / BROKEN: zeros, the type tells the destination
    deferred,   // zeros for now; must be sent again (see DeferredPages)
};

// mapped: the page as the foreign mapping shows it (ignored for types
// without data).  out: one page.  paused: the guest cannot run, so a page
// table that does not translate is a real error (Error, with the entry),
// not a race.  Unknown types are errors.
PageOutcome prepare_page(Pfn pfn, PageType type, std::span<const std::uint8_t> mapped, std::span<std::uint8_t> out,
                         const FrameTranslation& t, bool paused, std::string* why);

// Pages to send again; filled by reader threads, drained by the dirty-log
// fetch (one thread).
class DeferredPages {
public:
    explicit DeferredPages(std::uint64_t nr_pfns) : bits_(nr_pfns) {}
    void add(Pfn pfn)
    {
        std::lock_guard<std::mutex> g(m_);
        if (pfn < bits_.size())
            bits_.set(pfn);
    }
    // out |= deferred; deferred = {}.  Returns how many were deferred.
    std::uint64_t drain_into(DirtyBitmap& out)
    {
        std::lock_guard<std::mutex> g(m_);
        std::uint64_t n = bits_.count();
        out.merge(bits_);
        bits_.clear_all();
        return n;
    }

private:
    std::mutex m_;
    DirtyBitmap bits_;
};

} // namespace fastmig::xen
