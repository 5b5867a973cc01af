// The destination's zero pages that wait for their frame: a page the
// stream names zero (or free) for the first time needs a frame, cleared,
// because Xen does not scrub what a live domain freed.
//   HVM/PVH: the page may be a gfn the guest has no page at (an MMIO hole),
//   so it is populated only once the source's hole map says it is not a
//   hole (resolve).
//   PV: a background thread clears them in chunks (zero_page_clearer.hpp,
//   resolve_next), off the stream's reading path.
// A page written in the meantime stops waiting first, under the same lock
// as the population, so that a late population (which clears the frame)
// never wipes what was written; a page read in the meantime is populated
// first (settle), so it reads as zeros and never as a half-cleared frame.
// Pure: the population is the caller's, and runs with the lock held.
#pragma once

#include "stream/domain/xen/hvm_records.hpp"

#include <algorithm>
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
    // Written or zeroed now: no longer waiting.  Blocks while a population
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
        return done(todo, populate);
    }

    // Up to `max` waiting pfns, lowest first, populated (no hole map: PV).
    template <class Populate> std::size_t resolve_next(std::size_t max, Populate&& populate)
    {
        std::lock_guard<std::mutex> g(m_);
        std::vector<Pfn> todo;
        for (; cursor_ < waiting_.size() && todo.size() < max; ++cursor_)
            if (waiting_[cursor_])
                todo.push_back(cursor_);
        try {
            return done(todo, populate);
        } catch (...) {
            if (!todo.empty())
                cursor_ = todo.front(); // they still wait
            throw;
        }
    }

    // The waiting pfns among `pfns` populated now: read next, they read as
    // the zeros they are.  Returns how many.
    template <class Populate> std::size_t settle(std::span<const Pfn> pfns, Populate&& populate)
    {
        std::lock_guard<std::mutex> g(m_);
        std::vector<Pfn> todo;
        for (Pfn p : pfns)
            if (p < waiting_.size() && waiting_[p])
                todo.push_back(p);
        std::sort(todo.begin(), todo.end()); // a pfn twice in pfns goes once
        todo.erase(std::unique(todo.begin(), todo.end()), todo.end());
        return done(todo, populate);
    }

    // f() with the lock held: no population runs meanwhile (f must not
    // call this object).
    template <class F> void locked(F&& f)
    {
        std::lock_guard<std::mutex> g(m_);
        f();
    }

private:
    // With m_ held.
    template <class Populate> std::size_t done(const std::vector<Pfn>& todo, Populate& populate)
    {
        if (todo.empty())
            return 0;
        populate(std::span<const Pfn>(todo));
        for (Pfn p : todo)
            if (waiting_[p]) {
                waiting_[p] = 0;
                --count_;
            }
        return todo.size();
    }

    mutable std::mutex m_;
    std::vector<std::uint8_t> waiting_;
    std::uint64_t count_ = 0;
    Pfn cursor_ = 0; // resolve_next: no waiting pfn below it
};

} // namespace fastmig::xen
