// In-process fake domains for engine tests: memory in a vector, a writer
// thread that dirties pages like a guest, and switches to make each
// destination step fail.  Lets the engine be tested without processes.
#pragma once

#include "stream/clock.hpp"
#include "stream/domain.hpp"

#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include <sys/socket.h>

namespace fastmig::test {

// A connected pair of stream sockets, standing in for a TCP connection.
struct Pair {
    Fd a, b;
    Pair()
    {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            throw_errno("socketpair");
        a.reset(sv[0]);
        b.reset(sv[1]);
    }
};

class FakeDomain : public Domain {
public:
    // A mix like a guest: ~half zero pages, the rest random bytes, or (with
    // text_regions) every other 2 MiB region filled with compressible text.
    FakeDomain(std::uint64_t pages, std::uint64_t seed, bool text_regions = false)
        : mem_(pages * kPageSize), dirty_(pages), rng_(seed), text_(text_regions), last_read_(pages, {false, 0})
    {
        for (std::uint64_t p = 0; p < pages; ++p)
            if (rng_() % 2)
                fill_page(p);
    }
    ~FakeDomain() override { stop_writer(); }

    // Dirty `pages_per_ms` random pages per millisecond until suspended, all
    // within a set of `hot` pages spread over the guest when hot > 0 (a hot
    // set, re-dirtied often).
    void start_writer(unsigned pages_per_ms, std::uint64_t hot = 0)
    {
        writer_ = std::thread([this, pages_per_ms, hot] {
            while (!stop_) {
                {
                    std::unique_lock<std::mutex> l(m_);
                    if (paused_) {
                        cv_.wait(l, [&] { return !paused_ || stop_; });
                        continue;
                    }
                    for (unsigned i = 0; i < pages_per_ms; ++i) {
                        // The hot set is spread over the whole guest (every channel's regions).
                        Pfn p = hot ? (rng_() % hot) * (nr_pages() / hot) : rng_() % nr_pages();
                        if (rng_() % 16 == 0)
                            std::memset(mem_.data() + p * kPageSize, 0, kPageSize); // guest frees a page
                        else
                            fill_page(p, /*small=*/hot > 0);
                        if (logging_)
                            dirty_.set(p);
                        ++writes_;
                    }
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
    }
    void stop_writer()
    {
        stop_ = true;
        cv_.notify_all();
        if (writer_.joinable())
            writer_.join();
    }

    std::string name() const override { return "fake:1"; }
    std::uint64_t nr_pages() const override { return mem_.size() / kPageSize; }
    std::uint32_t kind() const override { return kDomainKindSim; }
    void enable_dirty_log() override
    {
        std::lock_guard<std::mutex> l(m_);
        dirty_.clear_all();
        logging_ = true;
    }
    void disable_dirty_log() override
    {
        std::lock_guard<std::mutex> l(m_);
        logging_ = false;
    }
    std::uint64_t fetch_and_clear_dirty(DirtyBitmap& out) override
    {
        // Let the guest run a little between rounds, as a real round takes
        // long enough for a hot set to be dirtied again.
        if (fetch_delay_ms && !paused_)
            std::this_thread::sleep_for(std::chrono::milliseconds(fetch_delay_ms));
        std::lock_guard<std::mutex> l(m_);
        // Deterministic re-dirtying of a hot set between rounds (whatever the
        // scheduler does with the writer thread): small changes, as XBZRLE
        // expects.
        if (hot_on_fetch && !paused_ && logging_)
            for (std::uint64_t h = 0; h < hot_on_fetch; ++h) {
                Pfn p = h * (nr_pages() / hot_on_fetch);
                fill_page(p, true);
                dirty_.set(p);
            }
        out = dirty_;
        dirty_.clear_all();
        return out.count();
    }
    // Free-page hints: `free_hint` marks pages the guest reports free.
    std::uint64_t free_page_hints(DirtyBitmap& out) override
    {
        std::lock_guard<std::mutex> l(m_);
        if (free_hint.size() != out.size()) {
            out.clear_all();
            return 0;
        }
        out = free_hint;
        return out.count();
    }
    // The guest takes a free page back and writes it (dirty, as any write).
    void reuse_free_page(Pfn p)
    {
        std::lock_guard<std::mutex> l(m_);
        free_hint.clear(p);
        std::memset(mem_.data() + p * kPageSize, 0x5a, kPageSize);
        if (logging_)
            dirty_.set(p);
    }
    DirtyBitmap free_hint;
    std::uint64_t reads_of_free = 0; // pages read while hinted free and the guest ran

    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override
    {
        std::lock_guard<std::mutex> l(m_);
        if (free_hint.size() && !paused_) // verification reads everything once paused
            for (Pfn p : pfns)
                reads_of_free += free_hint.test(p);
        for (std::size_t i = 0; i < pfns.size(); ++i) {
            std::memcpy(dst.data() + i * kPageSize, mem_.data() + pfns[i] * kPageSize, kPageSize);
            if (early && !paused_)
                last_read_[pfns[i]] = {true, wire::page_checksum({dst.data() + i * kPageSize, kPageSize})};
        }
    }
    // Early state (with `early` set): the checksum of every page as the
    // engine last read it (u32 pfn, u32 0, u64 sum; pages never read left
    // out), so a destination can check it got them all before the blob.
    bool early = false;
    std::atomic<int> early_calls_{0}, suspends_at_early_{-1};
    bool offers_early_state() const override { return early; }
    std::vector<StateBlob> early_state() override
    {
        std::lock_guard<std::mutex> l(m_);
        ++early_calls_;
        suspends_at_early_ = suspends_.load();
        StateBlob b{kEarlyChecksums, {}};
        for (Pfn p = 0; p < last_read_.size(); ++p)
            if (last_read_[p].first) {
                std::uint64_t rec[2] = {p, last_read_[p].second};
                auto* r = reinterpret_cast<const std::uint8_t*>(rec);
                b.data.insert(b.data.end(), r, r + sizeof rec);
            }
        return {b};
    }
    static constexpr std::uint32_t kEarlyChecksums = 9;
    void suspend(std::chrono::milliseconds) override
    {
        std::lock_guard<std::mutex> l(m_);
        paused_ = true;
        paused_at_ = monotonic_ns();
        snapshot_ = mem_;
        ++suspends_;
    }
    void resume() override
    {
        {
            std::lock_guard<std::mutex> l(m_);
            paused_ = false;
            ++resumes_;
        }
        cv_.notify_all();
    }
    bool running() const override { return !paused_; }
    std::vector<StateBlob> save_state() override { return {{7, {1, 2, 3, 4, 5}}, {8, {}}}; }
    DomainClock clock() const override { return {paused_at_, 0}; }
    void release() override { released_ = true; }
    void handed_over() override
    {
        disable_dirty_log(); // what the Xen backend undoes there
        ++handed_over_;
    }
    bool logging() const
    {
        std::lock_guard<std::mutex> l(m_);
        return logging_;
    }
    void set_orphan_policy(OrphanPolicy p) override { orphan_ = p; }

    // Memory at the instant of the last suspend.
    std::vector<std::uint8_t> snapshot_;
    std::atomic<int> suspends_{0}, resumes_{0}, handed_over_{0};
    std::atomic<bool> released_{false};
    std::atomic<OrphanPolicy> orphan_{OrphanPolicy::none};
    std::atomic<std::uint64_t> writes_{0};
    unsigned fetch_delay_ms = 0;
    std::uint64_t hot_on_fetch = 0;

private:
    void fill_page(Pfn p, bool small = false)
    {
        auto* d = mem_.data() + p * kPageSize;
        if (text_ && (p >> 9) % 2 == 0) {
            static const char* words[] = {"migration ", "page ", "dirty ", "round ", "xen ", "guest ", "the ", "of "};
            std::size_t i = 0;
            while (i < kPageSize) {
                const char* w = words[rng_() % 8];
                for (; *w && i < kPageSize; ++w)
                    d[i++] = static_cast<std::uint8_t>(*w);
            }
            return;
        }
        // Small in-place change of an existing page (XBZRLE's case), or new random data.
        if ((small || rng_() % 2) && d[0] != 0) {
            for (int k = 0; k < 8; ++k)
                d[rng_() % kPageSize] = static_cast<std::uint8_t>(rng_());
            return;
        }
        for (std::size_t i = 0; i < kPageSize; i += 8) {
            std::uint64_t v = rng_();
            std::memcpy(d + i, &v, 8);
        }
    }

    std::vector<std::uint8_t> mem_;
    DirtyBitmap dirty_;
    std::mt19937_64 rng_;
    mutable std::mutex m_;
    std::condition_variable cv_;
    std::thread writer_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> paused_{false};
    bool logging_ = false;
    bool text_ = false;
    std::uint64_t paused_at_ = 0;
    std::vector<std::pair<bool, std::uint64_t>> last_read_; // read while running, and the checksum then
};

struct FailAt {
    bool create = false, restore = false, unpause = false;
    bool capacity = false; // check_capacity says the host cannot hold the guest
};

// What a fake destination domain holds; shared with the test so it outlives
// the receiver's handle.
struct IncomingState {
    std::vector<std::uint8_t> mem;
    std::vector<StateBlob> state;
    bool running = false, destroyed = false;
    std::uint64_t resumed_at = 0;
    OrphanPolicy orphan = OrphanPolicy::none;
    // zero_fresh_pages calls per page (sized with mem).
    std::vector<std::uint32_t> fresh_calls;
    // Early state: blobs received, and pages whose content then differed
    // from the source's last read (FakeDomain::early_state's checksums).
    int early_blobs = 0;
    std::uint64_t early_pages = 0, early_mismatches = 0;
    bool early_after_restore = false;
};

class FakeIncoming : public IncomingDomain {
public:
    FakeIncoming(std::shared_ptr<IncomingState> st, FailAt fail) : st_(std::move(st)), fail_(fail) {}
    std::string name() const override { return "fake:2"; }
    std::uint64_t nr_pages() const override { return st_->mem.size() / kPageSize; }
    void write_pages(std::span<const Pfn> pfns, std::span<const std::uint8_t> src) override
    {
        if (src.size() != pfns.size() * kPageSize)
            throw Error("write_pages: size mismatch");
        for (std::size_t i = 0; i < pfns.size(); ++i)
            std::memcpy(st_->mem.data() + pfns[i] * kPageSize, src.data() + i * kPageSize, kPageSize);
    }
    void zero_pages(std::span<const Pfn> pfns) override
    {
        for (Pfn p : pfns)
            zero_page(p);
    }
    void zero_page(Pfn p) { std::memset(st_->mem.data() + p * kPageSize, 0, kPageSize); }
    void zero_fresh_pages(std::span<const Pfn> pfns) override
    {
        for (Pfn p : pfns) {
            ++st_->fresh_calls.at(p);
            zero_page(p);
        }
    }
    void read_page(Pfn p, std::span<std::uint8_t> dst) override
    {
        std::memcpy(dst.data(), st_->mem.data() + p * kPageSize, kPageSize);
    }
    void early_state(const StateBlob& b) override
    {
        ++st_->early_blobs;
        st_->early_after_restore = !st_->state.empty();
        if (b.type != FakeDomain::kEarlyChecksums || b.data.size() % 16)
            throw Error("unexpected early state blob");
        for (std::size_t o = 0; o < b.data.size(); o += 16) {
            std::uint64_t rec[2];
            std::memcpy(rec, b.data.data() + o, sizeof rec);
            if (rec[0] >= nr_pages())
                throw Error("early state names a pfn beyond the domain");
            ++st_->early_pages;
            if (wire::page_checksum({st_->mem.data() + rec[0] * kPageSize, kPageSize}) != rec[1])
                ++st_->early_mismatches;
        }
    }
    void restore_state(const std::vector<StateBlob>& s) override
    {
        if (fail_.restore)
            throw Error("injected restore failure");
        st_->state = s;
    }
    void unpause() override
    {
        if (fail_.unpause)
            throw Error("injected unpause failure");
        st_->running = true;
        st_->orphan = OrphanPolicy::none; // a running domain belongs to nobody
        st_->resumed_at = monotonic_ns();
    }
    void set_orphan_policy(OrphanPolicy p) override { st_->orphan = p; }
    DomainClock clock() const override { return {0, st_->resumed_at}; }
    void destroy() override { st_->destroyed = true; }

private:
    std::shared_ptr<IncomingState> st_;
    FailAt fail_;
};

class FakeProvider : public DomainProvider {
public:
    // new_memory: the byte a new domain's memory holds (0 as for sim; not 0
    // plays Xen, whose new frames may hold what another guest left there).
    explicit FakeProvider(FailAt f = {}, std::uint8_t new_memory = 0) : fail_(f), fill_(new_memory) {}
    void check_capacity(std::uint64_t, std::uint32_t, const std::string&) override
    {
        ++capacity_checks;
        if (fail_.capacity)
            throw Error("cannot map the guest memory: Cannot allocate memory");
    }
    std::unique_ptr<IncomingDomain> create(std::uint64_t pages, std::uint32_t, const std::string&) override
    {
        if (fail_.create)
            throw Error("injected create failure");
        last = std::make_shared<IncomingState>();
        last->mem.assign(pages * kPageSize, fill_);
        last->fresh_calls.assign(pages, 0);
        return std::make_unique<FakeIncoming>(last, fail_);
    }
    std::shared_ptr<IncomingState> last;
    int capacity_checks = 0;

private:
    FailAt fail_;
    std::uint8_t fill_;
};

} // namespace fastmig::test
