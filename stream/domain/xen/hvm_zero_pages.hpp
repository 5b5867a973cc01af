// The destination's HVM/PVH zero pages that wait for the hole map: a zero
// page the stream names may be a gfn the guest has no page at (an MMIO
// hole), so it is populated only once the source's hole map says it is
// not a hole.  A page written in the meantime stops waiting first, under
// the same lock as the population, so that a late population (which
// clears the frame) never wipes what was written.  Pure: the population is
// the caller's.
#pragma once

#include "stream/domain/xen/hvm_records.hpp"

#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

namespace fastmig::xen {

class WaitingZeroPages {
public:
    explicit WaitingZeroPages(std::uint64_t nr_pfns = 0) : waiting_(nr_pfns, 0) {}

    std::uint64_t size() const { return waiting_.size(); }
    // Named zero (or free) for the first time.  Error beyond size().
    void add(std::span<const Pfn> pfns);
    // Written or zeroed now: no longer waiting.  Blocks while a resolve()
    // runs.
    void written(std::span<const Pfn> pfns);
    std::uint64_t count() const;

    // The waiting pfns of [start, end) that are not holes: populate(pfns)
    // (a sorted vector) is called with the lock held, and they stop waiting
    // once it returns.  Returns how many.  Holes keep waiting: a later map
    // may say otherwise.
    template <class Populate> std::size_t resolve(Pfn start, Pfn end, const HoleMap& holes, Populate&& populate)
    {
        std::lock_guard<std::mutex> g(m_);
        std::vector<Pfn> todo;
        end = std::min<Pfn>(end, waiting_.size());
        for (Pfn p = start; p < end; ++p)
            if (waiting_[p] && !holes.hole(p))
                todo.push_back(p);
        if (!todo.empty())
            populate(std::span<const Pfn>(todo));
        for (Pfn p : todo)
            waiting_[p] = 0;
        return todo.size();
    }

private:
    mutable std::mutex m_;
    std::vector<std::uint8_t> waiting_;
};

} // namespace fastmig::xen
