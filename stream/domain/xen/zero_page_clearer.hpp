// A PV destination's zero and free pages, cleared in the background.
//
// A page the stream names zero or free for the first time needs a frame,
// cleared: Xen scrubs only a dying domain's freed pages, so a frame from
// populate_physmap may hold what another, live domain freed.  Done inline,
// an after-load guest's ~100k free pages (a few small records) cost the
// applier seconds of populate + map + memset while its queue was full and
// the reader stopped reading: the source's silence limit failed the
// migration (issue 19).  Here one thread, started with the first page,
// clears them in chunks, releasing the lock between chunks, and the
// stream goes on.
//
// The rules (WaitingZeroPages, hvm_zero_pages.hpp, holds the pending set
// and its lock; `clear` runs with it held):
//   - written(): a page written while pending stops pending first; it waits
//     for a chunk in progress, so a clear never lands after the write;
//   - settle(): a page about to be read while pending is cleared first, by
//     the caller, so it reads as zeros and never as a half-cleared frame;
//   - drain(): before the domain's state is restored, the thread stops and
//     what is left is cleared by the caller (it adds to the downtime);
//   - the clearer's first error is kept and thrown by the next call of the
//     applier or by drain(); the thread then clears nothing more.
// The applier's calls come first: the thread starts a chunk only when no
// applier is inside one of them.
#pragma once

#include "stream/domain/xen/hvm_zero_pages.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <span>
#include <thread>

namespace fastmig::xen {

class ZeroPageClearer {
public:
    // Populates and clears the pages given (a sorted chunk); may throw.
    using ClearFn = std::function<void(std::span<const Pfn>)>;

    ZeroPageClearer(std::uint64_t nr_pfns, ClearFn clear, std::size_t chunk = 1024);
    ~ZeroPageClearer(); // stops the thread (after its chunk) and joins it
    ZeroPageClearer(const ZeroPageClearer&) = delete;
    ZeroPageClearer& operator=(const ZeroPageClearer&) = delete;

    // Named zero or free for the first time: to be cleared.  Error beyond
    // the guest, or after drain().
    void add(std::span<const Pfn> pfns);
    // Written (or cleared) by the caller now: never cleared by the thread.
    void written(std::span<const Pfn> pfns);
    // The pending pages among pfns cleared now, by the caller: read next.
    void settle(std::span<const Pfn> pfns);

    // f() while the thread clears nothing: every frame number in the p2m
    // is settled (none half-populated), e.g. for a page-table localisation
    // that reads the p2m for every entry.  f must not call this object.
    template <class F> void quiet(F&& f)
    {
        rethrow();
        Turn t(*this);
        pages_.locked(f);
    }

    struct Drained {
        std::uint64_t background = 0; // pages the thread cleared
        std::uint64_t at_end = 0;     // pages drain() cleared itself
        std::uint64_t ns = 0;         // what drain() took
    };
    // Stops the thread and clears the rest.  Throws the clearer's error.
    // Once.
    Drained drain();

    // The thread stops after its chunk and is joined; what is left stays
    // pending (a failed restore: the domain is destroyed next).
    void stop();

    std::uint64_t pending() const { return pages_.count(); }

private:
    // An applier call in progress: the thread yields to it.
    class Turn {
    public:
        explicit Turn(ZeroPageClearer& c);
        ~Turn();
        Turn(const Turn&) = delete;
        Turn& operator=(const Turn&) = delete;

    private:
        ZeroPageClearer& c_;
    };

    void run();
    void rethrow(); // the thread's error, if any (m_ not held)

    WaitingZeroPages pages_;
    const ClearFn clear_;
    const std::size_t chunk_;
    std::atomic<int> in_applier_{0};
    std::atomic<std::uint64_t> background_{0};
    std::mutex m_; // the fields below; taken before pages_' lock, never inside it
    std::condition_variable cv_;
    bool stop_ = false;
    bool drained_ = false;
    std::exception_ptr error_;
    std::thread thread_;
};

} // namespace fastmig::xen
