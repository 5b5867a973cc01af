#include "stream/domain/sim/sim_workload.hpp"

#include "stream/clock.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <unistd.h>

namespace fastmig::sim {

namespace {

constexpr std::uint64_t kMinPages = (1u << 20) / kPageSize; // 1 MiB, as `fastmig sim create` allows
constexpr std::uint64_t kCluster = 16;                       // pages with one kind

// DESIGN.md's dpdk scenario: 2013 Mbit/s of 64-byte packets.
constexpr double kDpdkPps = 2013e6 / (64 * 8);
constexpr unsigned kBurst = 32;
constexpr unsigned kMbufSize = 2048;
constexpr unsigned kMbufHeadroom = 128;
constexpr unsigned kRingEntries = 1024;
constexpr unsigned kDescSize = 16;

Region region(Pfn start, std::uint64_t count, unsigned t, unsigned b, unsigned r, bool free = false)
{
    Region g;
    g.start = start;
    g.count = count;
    g.text_pct = t;
    g.binary_pct = b;
    g.random_pct = r;
    g.free = free;
    return g;
}

} // namespace

std::vector<std::pair<std::string, std::string>> workload_names()
{
    return {
        {"idle", "4.9% live data (text/binary/random), rest zero and reported free; ~10 small writes/s"},
        {"after-load", "idle's live set + 87.5% stale data marked free; no writes"},
        {"dpdk", "idle + L2 forwarding: 64-byte packets at 2013 Mbit/s into 4096 mbufs and 2 rings"},
        {"web", "75% page cache (html/images), 5% heap; log appends, session and cache updates, ~1000 pages/s"},
        {"random", "87.5% random data, last 1/8 rewritten with random data at 200 MiB/s"},
    };
}

void validate_config(const SimConfig& cfg)
{
    bool known = false;
    for (auto& [n, d] : workload_names())
        known |= n == cfg.workload;
    if (!known)
        throw Error("unknown workload '" + cfg.workload + "' (idle, after-load, dpdk, web, random)");
    if (cfg.memory_bytes % kPageSize)
        throw Error("memory size " + std::to_string(cfg.memory_bytes) + " is not a multiple of 4 KiB");
    if (cfg.memory_bytes / kPageSize < kMinPages)
        throw Error("memory size " + std::to_string(cfg.memory_bytes) + " is below the 1 MiB minimum");
    if (cfg.memory_bytes / kPageSize > kMaxPages)
        throw Error("memory size " + std::to_string(cfg.memory_bytes) + " is too large");
    if (!std::isfinite(cfg.rate_scale) || cfg.rate_scale < 0 || cfg.rate_scale > 1000)
        throw Error("rate scale must be between 0 and 1000");
}

Layout make_layout(const SimConfig& cfg)
{
    validate_config(cfg);
    Layout l;
    const std::uint64_t n = cfg.memory_bytes / kPageSize;
    l.nr_pages = n;
    const std::uint64_t live_n = std::max<std::uint64_t>(kCluster, n * 49 / 1000);
    if (cfg.workload != "web" && cfg.workload != "random") {
        l.live = region(0, live_n, 45, 40, 15);
        l.regions.push_back(l.live);
    }
    if (cfg.workload == "after-load") {
        // A workload that exited: its data is still in memory, but freed.
        l.regions.push_back(region(live_n, n * 7 / 8, 20, 60, 20, true));
    } else if (cfg.workload == "dpdk") {
        l.mbuf_start = live_n;
        l.mbuf_pages = std::min<std::uint64_t>(4096 * kMbufSize / kPageSize, n / 8);
        l.rx_ring = l.mbuf_start + l.mbuf_pages;
        l.tx_ring = l.rx_ring + kRingEntries * kDescSize / kPageSize;
        // mbuf headers and descriptors are initialised at start: binary.
        l.regions.push_back(region(l.mbuf_start, l.mbuf_pages + 2 * kRingEntries * kDescSize / kPageSize, 0, 100, 0));
    } else if (cfg.workload == "web") {
        l.cache = region(0, n * 3 / 4, 80, 0, 20);
        l.heap = region(l.cache.count, n / 20, 0, 100, 0);
        l.log = region(l.heap.start + l.heap.count, std::max<std::uint64_t>(1, n / 100), 0, 0, 0);
        l.regions.push_back(l.cache);
        l.regions.push_back(l.heap);
    } else if (cfg.workload == "random") {
        l.regions.push_back(region(0, n, 0, 0, 100));
        l.hot = region(n - n / 8, n / 8, 0, 0, 100);
    }
    return l;
}

static PageKind kind_in(const Region& g, std::uint64_t seed, Pfn pfn)
{
    std::uint64_t h = mix(seed, pfn / kCluster, 0x5eed) % 100;
    if (h < g.text_pct)
        return PageKind::text;
    if (h < g.text_pct + g.binary_pct)
        return PageKind::binary;
    if (h < g.text_pct + g.binary_pct + g.random_pct)
        return PageKind::random;
    return PageKind::zero;
}

PageKind page_kind(const Layout& l, std::uint64_t seed, Pfn pfn)
{
    for (auto& g : l.regions)
        if (pfn >= g.start && pfn - g.start < g.count)
            return kind_in(g, seed, pfn);
    return PageKind::zero;
}

void fill_memory(int ram_fd, const Layout& l, std::uint64_t seed, std::uint64_t* free_bitmap, unsigned threads,
                 const std::atomic<bool>* cancel)
{
    constexpr std::uint64_t kChunk = 256; // pages per task: 1 MiB buffers
    struct Task {
        const Region* g;
        Pfn start;
        std::uint64_t count;
    };
    std::vector<Task> tasks;
    // Free pages, as a guest would report them: a freed region, and every
    // page no region uses (never allocated since boot).
    std::vector<bool> used(free_bitmap ? l.nr_pages : 0, false);
    for (auto& g : l.regions) {
        for (std::uint64_t off = 0; off < g.count; off += kChunk)
            tasks.push_back({&g, g.start + off, std::min(kChunk, g.count - off)});
        if (free_bitmap && !g.free)
            for (Pfn p = g.start; p < g.start + g.count; ++p)
                used[p] = true;
    }
    for (const Region* g : {&l.log, &l.hot})
        if (free_bitmap)
            for (Pfn p = g->start; p < g->start + g->count && p < l.nr_pages; ++p)
                used[p] = true;
    if (l.mbuf_pages && free_bitmap)
        for (Pfn p = l.mbuf_start; p < l.tx_ring + kRingEntries * kDescSize / kPageSize + 1 && p < l.nr_pages; ++p)
            used[p] = true;
    if (free_bitmap)
        for (Pfn p = 0; p < l.nr_pages; ++p)
            if (!used[p])
                free_bitmap[p / 64] |= std::uint64_t{1} << (p % 64);
    std::atomic<std::size_t> next{0};
    std::atomic<int> error{0};
    // Pages are generated in parallel but written one pwrite at a time:
    // shmem writes to one file contend, and measured on this class of VM two
    // concurrent writers are ~1.5x slower in total than one.
    std::mutex write_m;
    auto worker = [&] {
        std::vector<std::uint8_t> buf(kChunk * kPageSize);
        for (;;) {
            std::size_t i = next.fetch_add(1);
            if (i >= tasks.size() || error.load() || (cancel && cancel->load(std::memory_order_relaxed)))
                return;
            const Task& t = tasks[i];
            // Generate runs of non-zero pages and write each with one pwrite;
            // zero pages are skipped and stay holes (no memory used).
            std::uint64_t k = 0;
            while (k < t.count) {
                while (k < t.count && kind_in(*t.g, seed, t.start + k) == PageKind::zero)
                    ++k;
                std::uint64_t run = k;
                while (k < t.count) {
                    PageKind kind = kind_in(*t.g, seed, t.start + k);
                    if (kind == PageKind::zero)
                        break;
                    fill_page(kind, buf.data() + (k - run) * kPageSize, seed, t.start + k, 0);
                    ++k;
                }
                std::size_t len = (k - run) * kPageSize;
                std::size_t done = 0;
                std::lock_guard<std::mutex> wl(write_m);
                while (done < len) {
                    ssize_t w = ::pwrite(ram_fd, buf.data() + done, len - done,
                                         off_t((t.start + run) * kPageSize + done));
                    if (w < 0 && errno == EINTR)
                        continue;
                    if (w <= 0) {
                        error.store(w < 0 ? errno : EIO);
                        return;
                    }
                    done += std::size_t(w);
                }
            }
        }
    };
    std::vector<std::thread> ts;
    for (unsigned i = 1; i < std::max(1u, threads); ++i)
        ts.emplace_back(worker);
    worker();
    for (auto& t : ts)
        t.join();
    if (int e = error.load()) {
        errno = e;
        throw_errno("filling guest memory");
    }
    if (cancel && cancel->load())
        throw Error("filling guest memory: cancelled");
}

// ---------------------------------------------------------------------------
// Running workloads

namespace {

// What every agent writes through: the RAM mapping and the dirty log.
struct Guest {
    std::uint8_t* ram;
    ControlHeader* ctl;
    std::uint64_t* dirty;

    std::uint8_t* page(Pfn p) const { return ram + p * kPageSize; }

    // Publishes a write unit: the data is written first, THEN the dirty bit
    // is set.  The seq_cst fence keeps the data stores ahead of the loads of
    // the log-dirty flag and of the bitmap word (on x86 it drains the store
    // buffer), so when an attacher's atomic exchange clears a word after our
    // load saw the bit still set, our data is already visible to its next
    // read; and if the exchange came first, our fetch_or sets the bit again
    // for the next round.  Either way no write is lost.  Skipping words whose
    // bit is already set keeps the hot set from bouncing the bitmap's cache
    // lines at millions of writes per second.
    void commit(const Pfn* pages, std::size_t n) const
    {
        // A page the guest writes is in use: take it off the free list
        // (free-page hints), as an allocator would.  If hints were already
        // read, the dirty bit set below sends the page again.
        std::uint64_t* free = free_words(ctl);
        for (std::size_t i = 0; i < n; ++i) {
            std::atomic_ref<std::uint64_t> f(free[pages[i] / 64]);
            std::uint64_t bit = std::uint64_t{1} << (pages[i] % 64);
            if (f.load(std::memory_order_relaxed) & bit)
                f.fetch_and(~bit, std::memory_order_relaxed);
        }
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (ctl->logdirty.load(std::memory_order_relaxed)) {
            for (std::size_t i = 0; i < n; ++i) {
                std::atomic_ref<std::uint64_t> w(dirty[pages[i] / 64]);
                std::uint64_t bit = std::uint64_t{1} << (pages[i] % 64);
                if (!(w.load(std::memory_order_relaxed) & bit))
                    w.fetch_or(bit, std::memory_order_relaxed);
            }
        }
        ctl->writes.fetch_add(1, std::memory_order_relaxed);
    }
};

} // namespace

struct Workload::Agent {
    Guest g;
    Rng rng;
    double rate = 0; // units per second
    explicit Agent(const Guest& guest, std::uint64_t seed) : g(guest), rng(seed) {}
    virtual ~Agent() = default;
    virtual void unit() = 0;
    virtual void save(std::uint64_t*) const {}
};

namespace {

// A few small writes a second to random live pages (a quiet OS).
struct IdleAgent : Workload::Agent {
    Region live;
    std::uint64_t seed;
    IdleAgent(const Guest& g, std::uint64_t s, const Layout& l, std::uint64_t cseed)
        : Agent(g, s), live(l.live), seed(cseed) {}
    void unit() override
    {
        Pfn p = live.start + rng.below(live.count);
        std::size_t off = 64 + rng.below((kPageSize - 128) / 8) * 8;
        std::uint8_t* d = g.page(p) + off;
        switch (kind_in(live, seed, p)) {
        case PageKind::text: write_text(d, 64, rng); break;
        case PageKind::random: write_random(d, 64, rng); break;
        default: write_binary(d, 64, rng); break;
        }
        g.commit(&p, 1);
    }
};

// L2 forwarding: each burst receives 32 packets into the next mbufs of the
// pool, fills an RX descriptor per packet, and a TX descriptor per packet
// (the forward), like testpmd's io/mac forwarding over a recycled pool.
struct DpdkAgent : Workload::Agent {
    Pfn mbuf_start;
    std::uint64_t nr_mbufs;
    Pfn rx, tx;
    std::uint64_t pkt = 0; // packets forwarded (cursor 0)
    DpdkAgent(const Guest& g, std::uint64_t s, const Layout& l, std::uint64_t cursor)
        : Agent(g, s), mbuf_start(l.mbuf_start), nr_mbufs(l.mbuf_pages * kPageSize / kMbufSize), rx(l.rx_ring),
          tx(l.tx_ring), pkt(cursor) {}
    void unit() override
    {
        Pfn touched[kBurst * 3];
        std::size_t nt = 0;
        auto touch = [&](Pfn p) {
            if (nt == 0 || touched[nt - 1] != p)
                touched[nt++] = p;
        };
        std::uint64_t r = rng.next();
        for (unsigned i = 0; i < kBurst; ++i, ++pkt) {
            std::uint64_t m = pkt % nr_mbufs;
            std::uint64_t off = mbuf_start * kPageSize + m * kMbufSize + kMbufHeadroom;
            std::uint8_t* d = g.ram + off;
            // Ethernet header (swapped MACs), then a payload with a sequence.
            static const std::uint8_t hdr[14] = {0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00};
            std::memcpy(d, hdr, 14);
            std::memcpy(d + 14, &pkt, 8);
            std::memcpy(d + 22, &r, 8);
            std::memset(d + 30, 0x5a, 34);
            touch(off / kPageSize);
            std::uint64_t desc[2] = {off, (std::uint64_t{64} << 32) | (pkt & 0xffff)};
            std::uint64_t slot = pkt % kRingEntries;
            std::memcpy(g.page(rx) + slot * kDescSize, desc, kDescSize);
            std::memcpy(g.page(tx) + slot * kDescSize, desc, kDescSize);
        }
        // The ring pages written in this burst.
        std::uint64_t first = (pkt - kBurst) % kRingEntries, last = (pkt - 1) % kRingEntries;
        for (Pfn base : {rx, tx}) {
            touch(base + first * kDescSize / kPageSize);
            touch(base + last * kDescSize / kPageSize);
        }
        g.commit(touched, nt);
    }
    void save(std::uint64_t* c) const override { c[0] = pkt; }
};

// A web server, per tick: access-log appends (sequential text), session
// updates in the heap (small random writes), page-cache refreshes (whole
// pages rewritten with new text).
struct WebAgent : Workload::Agent {
    Layout l;
    std::uint64_t seed;
    std::uint64_t log_off;  // cursor 0: bytes appended to the log region
    std::uint64_t version;  // cursor 1: page-cache refreshes done
    WebAgent(const Guest& g, std::uint64_t s, const Layout& lay, std::uint64_t cseed, const std::uint64_t* c)
        : Agent(g, s), l(lay), seed(cseed), log_off(c[0]), version(c[1]) {}
    void unit() override
    {
        Pfn touched[64];
        std::size_t nt = 0;
        for (int i = 0; i < 6; ++i) { // sessions
            Pfn p = l.heap.start + rng.below(l.heap.count);
            std::size_t len = 32 + rng.below(97);
            write_binary(g.page(p) + 16 + rng.below(kPageSize - 16 - len), len, rng);
            touched[nt++] = p;
        }
        for (int i = 0; i < 3; ++i) { // cache refresh
            Pfn p = l.cache.start + rng.below(l.cache.count);
            fill_page(PageKind::text, g.page(p), seed, p, ++version);
            touched[nt++] = p;
        }
        const std::uint64_t log_bytes = l.log.count * kPageSize;
        for (int i = 0; i < 27; ++i) { // access log lines
            std::size_t len = 120 + rng.below(60);
            std::uint64_t o = log_off % log_bytes;
            len = std::min<std::uint64_t>(len, log_bytes - o);
            std::uint8_t* d = g.ram + l.log.start * kPageSize + o;
            write_text(d, len - 1, rng);
            d[len - 1] = '\n';
            Pfn a = l.log.start + o / kPageSize, b = l.log.start + (o + len - 1) / kPageSize;
            if (nt == 0 || touched[nt - 1] != a)
                touched[nt++] = a;
            if (b != a)
                touched[nt++] = b;
            log_off += len;
        }
        g.commit(touched, nt);
    }
    void save(std::uint64_t* c) const override
    {
        c[0] = log_off;
        c[1] = version;
    }
};

// Rewrites the hot region sequentially with random data, 16 pages a unit.
struct RandomAgent : Workload::Agent {
    static constexpr std::uint64_t kUnit = 16;
    Region hot;
    std::uint64_t pos; // cursor 0: pages rewritten
    RandomAgent(const Guest& g, std::uint64_t s, const Layout& l, std::uint64_t c)
        : Agent(g, s), hot(l.hot), pos(c) {}
    void unit() override
    {
        Pfn touched[kUnit];
        for (std::uint64_t i = 0; i < kUnit; ++i) {
            Pfn p = hot.start + (pos++ % hot.count);
            write_random(g.page(p), kPageSize, rng);
            touched[i] = p;
        }
        g.commit(touched, kUnit);
    }
    void save(std::uint64_t* c) const override { c[0] = pos; }
};

} // namespace

Workload::Workload(const SimConfig& cfg, std::uint8_t* ram, ControlHeader* ctl, std::uint64_t* dirty,
                   std::uint64_t epoch, const std::uint64_t* cursors)
    : ctl_(ctl)
{
    Layout l = make_layout(cfg);
    Guest g{ram, ctl, dirty};
    std::uint64_t zero[kMaxCursors] = {};
    const std::uint64_t* c = cursors ? cursors : zero;
    // Each migration (epoch) continues with fresh randomness, so a guest
    // does not replay the writes it made before it moved.
    auto s = [&](std::uint64_t k) { return mix(cfg.seed, epoch, k); };
    const double scale = cfg.rate_scale;
    auto add = [&](std::unique_ptr<Agent> a, double rate) -> Agent* {
        a->rate = rate * scale;
        if (a->rate <= 0)
            return nullptr;
        agents_.push_back(std::move(a));
        return agents_.back().get();
    };
    if (cfg.workload == "idle" || cfg.workload == "dpdk") {
        if (Agent* a = add(std::make_unique<IdleAgent>(g, s(1), l, cfg.seed), 10))
            plan_.push_back({a});
    }
    if (cfg.workload == "dpdk") {
        if (Agent* a = add(std::make_unique<DpdkAgent>(g, s(2), l, c[0]), kDpdkPps / kBurst))
            plan_.push_back({a});
    } else if (cfg.workload == "web") {
        if (Agent* a = add(std::make_unique<WebAgent>(g, s(3), l, cfg.seed, c), 100))
            plan_.push_back({a});
    } else if (cfg.workload == "random") {
        double units = 200.0 * (1 << 20) / (RandomAgent::kUnit * kPageSize);
        if (Agent* a = add(std::make_unique<RandomAgent>(g, s(4), l, c[0]), units))
            plan_.push_back({a});
    }
}

Workload::~Workload() { stop(); }

void Workload::start()
{
    if (started_)
        return;
    started_ = true;
    nr_threads_ = plan_.size();
    ctl_->resumed_at_ns.store(monotonic_ns());
    for (auto& agents : plan_)
        threads_.emplace_back([this, agents] { thread_main(agents); });
}

bool Workload::park_if_paused()
{
    if (!pause_req_.load(std::memory_order_acquire) && !stop_.load(std::memory_order_relaxed))
        return true;
    std::unique_lock<std::mutex> l(m_);
    if (stop_)
        return false;
    if (!pause_req_)
        return true;
    if (++parked_ == nr_threads_) {
        // The last writer has finished its unit: the guest is stopped now.
        ctl_->paused_at_ns.store(monotonic_ns());
        parked_cv_.notify_all();
    }
    cv_.wait(l, [&] { return !pause_req_ || stop_; });
    --parked_;
    return !stop_;
}

bool Workload::sleep_until(std::chrono::steady_clock::time_point t)
{
    std::unique_lock<std::mutex> l(m_);
    cv_.wait_until(l, t, [&] { return pause_req_.load() || stop_.load(); });
    return !stop_;
}

void Workload::thread_main(std::vector<Agent*> agents)
{
    using clock = std::chrono::steady_clock;
    // Pacing: each agent has a due time advanced by 1/rate per unit; the
    // thread sleeps when every agent is ahead of schedule by more than
    // 200 us, so CPU use follows the rate.  A backlog is not caught up
    // beyond 100 ms (after a pause, the guest does not burst).
    std::vector<clock::time_point> due(agents.size(), clock::now());
    std::vector<clock::duration> period;
    for (Agent* a : agents)
        period.push_back(std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(1.0 / a->rate)));
    for (;;) {
        if (pause_req_.load(std::memory_order_acquire) || stop_.load(std::memory_order_relaxed)) {
            if (!park_if_paused())
                return;
            std::fill(due.begin(), due.end(), clock::now());
        }
        std::size_t k = std::min_element(due.begin(), due.end()) - due.begin();
        auto now = clock::now();
        if (due[k] > now + std::chrono::microseconds(200)) {
            if (!sleep_until(due[k]))
                return;
            continue;
        }
        agents[k]->unit();
        due[k] += period[k];
        if (due[k] < now - std::chrono::milliseconds(100))
            due[k] = now;
    }
}

bool Workload::pause(std::chrono::milliseconds timeout)
{
    std::unique_lock<std::mutex> l(m_);
    pause_req_.store(true, std::memory_order_release);
    cv_.notify_all(); // wakes pacing sleeps
    if (nr_threads_ == 0) {
        ctl_->paused_at_ns.store(monotonic_ns());
        return true;
    }
    return parked_cv_.wait_for(l, timeout, [&] { return parked_ == nr_threads_; });
}

void Workload::resume()
{
    std::lock_guard<std::mutex> l(m_);
    pause_req_.store(false, std::memory_order_release);
    ctl_->resumed_at_ns.store(monotonic_ns());
    cv_.notify_all();
}

void Workload::stop()
{
    {
        std::lock_guard<std::mutex> l(m_);
        stop_.store(true);
        cv_.notify_all();
    }
    for (auto& t : threads_)
        if (t.joinable())
            t.join();
    threads_.clear();
}

void Workload::save_cursors(std::uint64_t out[kMaxCursors]) const
{
    std::fill(out, out + kMaxCursors, 0);
    for (auto& a : agents_)
        a->save(out);
}

} // namespace fastmig::sim
