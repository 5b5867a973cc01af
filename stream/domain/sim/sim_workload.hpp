// Workloads of a sim guest: where its data lies (the layout), how its memory
// is filled at creation, and the threads that keep writing it like a guest.
//
// All sizes are fractions of the guest's memory, so the 8 GiB scenarios of
// DESIGN.md scale down to small test guests; rates are absolute (per second)
// times SimConfig::rate_scale.
#pragma once

#include "stream/domain/sim/sim.hpp"
#include "stream/domain/sim/sim_content.hpp"
#include "stream/domain/sim/sim_control.hpp"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace fastmig::sim {

// A run of pages with one content mix.  Kinds are chosen per cluster of 16
// pages (64 KiB), as allocations cluster in a real guest.
struct Region {
    Pfn start = 0;
    std::uint64_t count = 0;
    unsigned text_pct = 0, binary_pct = 0, random_pct = 0; // rest: zero
    bool free = false; // freed by the guest (reported in the free-page bitmap)
};

struct Layout {
    std::uint64_t nr_pages = 0;
    std::vector<Region> regions;   // disjoint; pages outside are zero
    // Workload-specific areas (0 pages when unused).
    Region live;                   // idle live set, target of small writes
    Pfn mbuf_start = 0;            // dpdk: mbuf pool, rx ring, tx ring
    std::uint64_t mbuf_pages = 0;
    Pfn rx_ring = 0, tx_ring = 0;
    Region cache, heap, log;       // web
    Region hot;                    // random: rewritten continuously
};

// Throws Error naming the problem for an unknown workload or bad sizes.
void validate_config(const SimConfig& cfg);
Layout make_layout(const SimConfig& cfg);
PageKind page_kind(const Layout& l, std::uint64_t seed, Pfn pfn);

// Writes the initial content into the RAM memfd with pwrite (zero pages stay
// holes), using `threads` threads; marks freed regions in free_bitmap.
// `cancel` is polled between chunks.
void fill_memory(int ram_fd, const Layout& l, std::uint64_t seed, std::uint64_t* free_bitmap,
                 unsigned threads, const std::atomic<bool>* cancel);

// The running workload: one or two threads writing through `ram` (an mmap of
// the RAM memfd), marking the dirty bitmap while log-dirty is on.
class Workload {
public:
    Workload(const SimConfig& cfg, std::uint8_t* ram, ControlHeader* ctl, std::uint64_t* dirty,
             std::uint64_t epoch, const std::uint64_t* cursors);
    ~Workload();
    Workload(const Workload&) = delete;
    Workload& operator=(const Workload&) = delete;

    // Starts the threads; resumed_at_ns is set when the first one runs.
    void start();
    // Returns once every thread is parked (paused_at_ns set by the last one);
    // false on timeout (threads may then still be writing).
    bool pause(std::chrono::milliseconds timeout);
    void resume();
    void stop();
    // Workload positions to carry in the platform state.  Call while paused.
    void save_cursors(std::uint64_t out[kMaxCursors]) const;
    std::size_t nr_threads() const { return nr_threads_; }

    struct Agent; // one periodic activity (idle writes, dpdk bursts, ...)

private:
    void thread_main(std::vector<Agent*> agents);
    // Sleeps until t or until pause/stop is requested; true to keep going.
    bool sleep_until(std::chrono::steady_clock::time_point t);
    // Parks while paused; false when stopping.
    bool park_if_paused();

    ControlHeader* ctl_;
    std::vector<std::unique_ptr<Agent>> agents_;
    std::vector<std::vector<Agent*>> plan_; // agents per thread
    std::vector<std::thread> threads_;
    std::mutex m_;
    std::condition_variable cv_;      // wakes workload threads (pause, resume, stop)
    std::condition_variable parked_cv_;
    std::atomic<bool> pause_req_{false};
    std::atomic<bool> stop_{false};
    unsigned parked_ = 0;
    std::size_t nr_threads_ = 0; // fixed before the threads start
    bool started_ = false;
};

} // namespace fastmig::sim
