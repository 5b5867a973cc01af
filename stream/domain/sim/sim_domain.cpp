// The engine-facing side of a sim domain: Domain (source) and IncomingDomain
// (destination) over an attachment to a sim process.
//
// Guest RAM is accessed with pread/pwrite on the RAM memfd, never through a
// mapping of the whole guest: on this kind of host a page fault on shared
// memory costs 1-3 us per page, while pread copies populated pages at
// ~9 GB/s and reads holes (never-written zero pages) at ~30 GB/s without
// allocating them.  Consecutive pfns are coalesced into one call.
//
// The destination was measured for issue 16 (`make bench-guest-memory`,
// 256 MiB, 5 interleaved repeats, medians relative to pwrite into holes):
// populating the memfd first (fallocate of the whole guest, as Xen's
// populate_physmap would; or per 4 MiB chunk) gave x0.76..x1.07, i.e. no
// gain beyond noise, while landing the pages through a shared mapping cost
// x5..x10 even when populated in the kernel (MAP_POPULATE x6.3..6.6,
// MADV_POPULATE_WRITE x5.1..6.3): installing page-table entries is what is
// slow in this VM, not allocating the pages.  So an incoming guest keeps
// taking its memory from pwrite, page runs at a time, and pages are not
// received straight into a mapping of it: the copy out of the socket buffer
// is the cheaper one (recv ~16% of the receiver's CPU, the shmem write ~64%
// in a perf profile of a raw 1 GiB web send/receive).
#include "stream/domain/sim/sim.hpp"
#include "stream/domain/sim/sim_control.hpp"
#include "stream/domain/sim/sim_internal.hpp"
#include "stream/domain/sim/sim_state.hpp"

#include "evtchn-ipc/doorbell.hpp"
#include "evtchn-ipc/shared_region.hpp"

#include <bit>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <mutex>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

namespace fastmig::sim {

namespace {

// What both roles hold: the RAM fd, the control page, the doorbells.
class Attachment {
public:
    explicit Attachment(int id) : id_(id), name_("sim:" + std::to_string(id))
    {
        ipc::Message m = request(id, "ATTACH");
        if (m.fds.size() != kAttachFds) {
            ipc::close_fds(m);
            throw Error(name_ + ": attach: expected " + std::to_string(kAttachFds) + " descriptors, got " +
                        std::to_string(m.fds.size()));
        }
        ram_fd_ = m.fds[kRamFdIndex];
        to_domain_ = ipc::Doorbell::adopt(m.fds[kToDomainFdIndex]);
        from_domain_ = ipc::Doorbell::adopt(m.fds[kFromDomainFdIndex]);
        int ctl_fd = m.fds[kControlFdIndex];
        auto kv = parse_kv(std::string(m.data.begin(), m.data.end()));
        nr_pages_ = std::strtoull(kv["pages"].c_str(), nullptr, 10);
        std::uint64_t ctl_size = std::strtoull(kv["control"].c_str(), nullptr, 10);
        ControlLayout lay = control_layout(nr_pages_);
        if (nr_pages_ == 0 || nr_pages_ > kMaxPages || ctl_size != lay.size) {
            ::close(ctl_fd);
            throw Error(name_ + ": attach: inconsistent sizes in reply");
        }
        ctl_region_ = ipc::SharedRegion::adopt(ctl_fd, ctl_size);
        ctl_ = control_header(ctl_region_.data());
        if (ctl_->magic != kControlMagic || ctl_->version != kControlVersion || ctl_->nr_pages != nr_pages_ ||
            ctl_->dirty_offset != lay.dirty_offset || ctl_->free_offset != lay.free_offset)
            throw Error(name_ + ": attach: control page has an unknown layout (different fastmig version?)");
        dirty_ = dirty_words(ctl_region_.data());
        free_ = free_words(ctl_region_.data());
    }
    ~Attachment()
    {
        if (ram_fd_ >= 0)
            ::close(ram_fd_);
    }

    const std::string& name() const { return name_; }
    std::uint64_t nr_pages() const { return nr_pages_; }
    std::uint32_t state() const { return ctl_->state.load(); }

    void check_pfns(std::span<const Pfn> pfns, std::size_t bytes, const char* what) const
    {
        if (bytes != pfns.size() * kPageSize)
            throw Error(name_ + ": " + what + ": buffer of " + std::to_string(bytes) + " bytes for " +
                        std::to_string(pfns.size()) + " pages");
        for (Pfn p : pfns)
            if (p >= nr_pages_)
                throw Error(name_ + ": " + what + ": pfn " + std::to_string(p) + " beyond the guest's " +
                            std::to_string(nr_pages_) + " pages");
    }

    // Calls io(first_index, run_length) for each run of consecutive pfns.
    template <class F> static void for_runs(std::span<const Pfn> pfns, F&& io)
    {
        std::size_t i = 0;
        while (i < pfns.size()) {
            std::size_t j = i + 1;
            while (j < pfns.size() && pfns[j] == pfns[j - 1] + 1)
                ++j;
            io(i, j - i);
            i = j;
        }
    }

    void pread_all(std::uint8_t* dst, std::size_t len, std::uint64_t off) const
    {
        while (len) {
            ssize_t n = ::pread(ram_fd_, dst, len, off_t(off));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                throw_errno(name_ + ": reading guest memory");
            if (n == 0)
                throw Error(name_ + ": reading guest memory: unexpected end of memory at " + std::to_string(off));
            dst += n;
            len -= std::size_t(n);
            off += std::uint64_t(n);
        }
    }

    void pwrite_all(const std::uint8_t* src, std::size_t len, std::uint64_t off) const
    {
        while (len) {
            ssize_t n = ::pwrite(ram_fd_, src, len, off_t(off));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                throw_errno(name_ + ": writing guest memory");
            src += n;
            len -= std::size_t(n);
            off += std::uint64_t(n);
        }
    }

    // Posts a command in the mailbox, rings, and waits for the ack.
    std::int32_t command(std::uint32_t cmd, std::chrono::milliseconds timeout, const char* what)
    {
        std::lock_guard<std::mutex> l(cmd_m_);
        ctl_->cmd.store(cmd, std::memory_order_relaxed);
        std::uint64_t seq = ctl_->cmd_seq.load() + 1;
        ctl_->cmd_seq.store(seq, std::memory_order_release);
        to_domain_.notify();
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (ctl_->ack_seq.load(std::memory_order_acquire) >= seq)
                return ctl_->ack_result.load(std::memory_order_relaxed);
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !from_domain_.wait(left)) {
                if (ctl_->ack_seq.load(std::memory_order_acquire) >= seq)
                    continue;
                // Nobody listening on the control socket: the process is gone
                // (its pid may linger as a zombie, so kill(pid, 0) can't tell).
                int s = ipc::connect_seqpacket(sock_path(id_));
                if (s < 0 && (errno == ENOENT || errno == ECONNREFUSED)) {
                    clean_stale();
                    throw Error(name_ + ": " + what + ": the sim process has exited");
                }
                if (s >= 0)
                    ::close(s);
                throw Error(name_ + ": did not " + what + " within " + std::to_string(timeout.count()) + " ms");
            }
        }
    }

    void set_lease(OrphanPolicy p)
    {
        std::uint32_t policy = kLeaseNone;
        switch (p) {
        case OrphanPolicy::none: policy = kLeaseNone; break;
        case OrphanPolicy::resume: policy = kLeaseResume; break;
        case OrphanPolicy::keep_paused: policy = kLeaseKeepPaused; break;
        case OrphanPolicy::destroy: policy = kLeaseDestroy; break;
        }
        {
            std::lock_guard<std::mutex> l(cmd_m_);
            ctl_->lease_pid.store(::getpid());
            ctl_->lease_policy.store(policy);
        }
        check_result(command(kCmdLease, std::chrono::seconds(10), "take the lease"), "lease");
    }

    void check_result(std::int32_t r, const char* what)
    {
        if (r != kCmdOk)
            throw Error(name_ + ": " + what + ": " + cmd_result_text(r));
    }

    ControlHeader* ctl() const { return ctl_; }
    std::uint64_t* dirty() const { return dirty_; }
    std::uint64_t* free_bits() const { return free_; }
    int ram_fd() const { return ram_fd_; }
    int id() const { return id_; }

    void close_all()
    {
        if (ram_fd_ >= 0)
            ::close(ram_fd_);
        ram_fd_ = -1;
    }

private:
    int id_;
    std::string name_;
    std::uint64_t nr_pages_ = 0;
    int ram_fd_ = -1;
    ipc::SharedRegion ctl_region_;
    ControlHeader* ctl_ = nullptr;
    std::uint64_t* dirty_ = nullptr;
    std::uint64_t* free_ = nullptr;
    ipc::Doorbell to_domain_, from_domain_;
    std::mutex cmd_m_;
};

class SimDomain : public Domain {
public:
    explicit SimDomain(int id) : a_(id)
    {
        if (a_.state() == kStateIncoming)
            throw Error(a_.name() + ": is an incoming domain waiting for a stream; it cannot be a source");
    }

    std::string name() const override { return a_.name(); }
    std::uint64_t nr_pages() const override { return a_.nr_pages(); }
    std::uint32_t kind() const override { return kDomainKindSim; }

    void enable_dirty_log() override
    {
        // Empty the log, then switch it on (seq_cst store: pairs with the
        // writers' fence, see Guest::commit in sim_workload.cpp).
        std::uint64_t* d = a_.dirty();
        for (std::uint64_t i = 0; i < a_.ctl()->bitmap_words; ++i)
            std::atomic_ref<std::uint64_t>(d[i]).store(0, std::memory_order_relaxed);
        a_.ctl()->logdirty.store(1, std::memory_order_seq_cst);
    }
    void disable_dirty_log() override { a_.ctl()->logdirty.store(0, std::memory_order_seq_cst); }

    std::uint64_t free_page_hints(DirtyBitmap& out) override
    {
        if (out.size() != a_.nr_pages())
            throw Error(a_.name() + ": free-page bitmap of " + std::to_string(out.size()) + " bits for " +
                        std::to_string(a_.nr_pages()) + " pages");
        std::uint64_t* f = a_.free_bits();
        std::uint64_t n = 0;
        for (std::size_t i = 0; i < out.nr_words(); ++i) {
            std::uint64_t v = std::atomic_ref<std::uint64_t>(f[i]).load(std::memory_order_acquire);
            if (i + 1 == out.nr_words() && out.size() % 64)
                v &= (std::uint64_t{1} << (out.size() % 64)) - 1;
            out.words()[i] = v;
            n += std::popcount(v);
        }
        return n;
    }

    std::uint64_t fetch_and_clear_dirty(DirtyBitmap& out) override
    {
        if (out.size() != a_.nr_pages())
            throw Error(a_.name() + ": dirty bitmap of " + std::to_string(out.size()) + " bits for " +
                        std::to_string(a_.nr_pages()) + " pages");
        std::uint64_t* d = a_.dirty();
        std::uint64_t* o = out.words();
        std::uint64_t n = 0;
        for (std::size_t i = 0; i < out.nr_words(); ++i) {
            std::atomic_ref<std::uint64_t> w(d[i]);
            // A plain load first: most words are clean, and an exchange on
            // them would pull every cache line of the bitmap exclusive.
            std::uint64_t v = w.load(std::memory_order_relaxed) ? w.exchange(0, std::memory_order_acq_rel) : 0;
            o[i] = v;
            n += std::popcount(v);
        }
        return n;
    }

    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override
    {
        a_.check_pfns(pfns, dst.size(), "read_pages");
        Attachment::for_runs(pfns, [&](std::size_t i, std::size_t n) {
            a_.pread_all(dst.data() + i * kPageSize, n * kPageSize, pfns[i] * kPageSize);
        });
    }

    void suspend(std::chrono::milliseconds timeout) override
    {
        a_.check_result(a_.command(kCmdPause, timeout, "pause"), "pause");
    }
    void resume() override { a_.check_result(a_.command(kCmdResume, std::chrono::seconds(10), "resume"), "resume"); }
    bool running() const override { return a_.state() == kStateRunning; }

    std::vector<StateBlob> save_state() override
    {
        if (a_.state() != kStatePaused)
            throw Error(a_.name() + ": save_state: the domain is " + state_name(a_.state()) + ", not paused");
        const ControlConfig& c = a_.ctl()->config;
        SimSavedState s;
        if (!std::memchr(c.workload, 0, sizeof c.workload))
            throw Error(a_.name() + ": save_state: corrupt workload name in the control page");
        s.cfg.workload = c.workload;
        s.cfg.memory_bytes = c.memory_bytes;
        s.cfg.seed = c.seed;
        s.cfg.rate_scale = c.rate_scale;
        s.epoch = c.epoch + 1;
        std::memcpy(s.cursors, c.cursors, sizeof s.cursors);
        return {encode_state(s)};
    }

    DomainClock clock() const override
    {
        return {a_.ctl()->paused_at_ns.load(), a_.ctl()->resumed_at_ns.load()};
    }

    void release() override
    {
        a_.close_all();
        destroy_domain(a_.id());
    }

    void set_orphan_policy(OrphanPolicy p) override { a_.set_lease(p); }

private:
    Attachment a_;
};

class SimIncoming : public IncomingDomain {
public:
    explicit SimIncoming(int id) : a_(id)
    {
        if (a_.state() != kStateIncoming)
            throw Error(a_.name() + ": is " + state_name(a_.state()) + ", not an incoming domain");
    }

    std::string name() const override { return a_.name(); }
    std::uint64_t nr_pages() const override { return a_.nr_pages(); }

    void write_pages(std::span<const Pfn> pfns, std::span<const std::uint8_t> src) override
    {
        a_.check_pfns(pfns, src.size(), "write_pages");
        Attachment::for_runs(pfns, [&](std::size_t i, std::size_t n) {
            a_.pwrite_all(src.data() + i * kPageSize, n * kPageSize, pfns[i] * kPageSize);
        });
    }

    void zero_pages(std::span<const Pfn> pfns) override
    {
        a_.check_pfns(pfns, pfns.size() * kPageSize, "zero_pages");
        // A hole reads as zeros and frees the page's memory.
        Attachment::for_runs(pfns, [&](std::size_t i, std::size_t n) {
            if (::fallocate(a_.ram_fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(pfns[i] * kPageSize),
                            off_t(n * kPageSize)) < 0)
                throw_errno(a_.name() + ": zeroing pfns " + std::to_string(pfns[i]) + ".." +
                            std::to_string(pfns[i] + n - 1));
        });
    }

    void read_page(Pfn pfn, std::span<std::uint8_t> dst) override
    {
        Pfn one[1] = {pfn};
        a_.check_pfns(one, dst.size(), "read_page");
        a_.pread_all(dst.data(), kPageSize, pfn * kPageSize);
    }

    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override
    {
        a_.check_pfns(pfns, dst.size(), "read_pages");
        Attachment::for_runs(pfns, [&](std::size_t i, std::size_t n) {
            a_.pread_all(dst.data() + i * kPageSize, n * kPageSize, pfns[i] * kPageSize);
        });
    }

    void restore_state(const std::vector<StateBlob>& state) override
    {
        const StateBlob* blob = nullptr;
        for (auto& b : state) {
            if (b.type != kSimStateType)
                throw Error(a_.name() + ": restore: unknown state record type " + std::to_string(b.type));
            if (blob)
                throw Error(a_.name() + ": restore: more than one sim workload record");
            blob = &b;
        }
        if (!blob)
            throw Error(a_.name() + ": restore: no sim workload record in the state");
        SimSavedState s;
        try {
            s = decode_state(*blob);
        } catch (const Error& e) {
            throw Error(a_.name() + ": restore: " + e.what());
        }
        if (s.cfg.memory_bytes != a_.nr_pages() * kPageSize)
            throw Error(a_.name() + ": restore: state is for a guest of " + std::to_string(s.cfg.memory_bytes) +
                        " bytes, this one has " + std::to_string(a_.nr_pages() * kPageSize));
        if (a_.state() != kStateIncoming)
            throw Error(a_.name() + ": restore: the domain already runs");
        ControlHeader* h = a_.ctl();
        h->config_valid.store(0);
        ControlConfig& c = h->config;
        c.memory_bytes = s.cfg.memory_bytes;
        c.seed = s.cfg.seed;
        c.rate_scale = s.cfg.rate_scale;
        c.epoch = s.epoch;
        std::memcpy(c.cursors, s.cursors, sizeof c.cursors);
        std::memset(c.workload, 0, sizeof c.workload);
        std::memcpy(c.workload, s.cfg.workload.data(), s.cfg.workload.size());
        h->config_valid.store(1, std::memory_order_release);
    }

    void unpause() override
    {
        a_.check_result(a_.command(kCmdResume, std::chrono::seconds(30), "unpause"), "unpause");
    }

    DomainClock clock() const override
    {
        return {a_.ctl()->paused_at_ns.load(), a_.ctl()->resumed_at_ns.load()};
    }

    void set_orphan_policy(OrphanPolicy p) override { a_.set_lease(p); }

    void destroy() override
    {
        a_.close_all();
        destroy_domain(a_.id());
    }

private:
    Attachment a_;
};

} // namespace

std::unique_ptr<Domain> attach(int id) { return std::make_unique<SimDomain>(id); }
std::unique_ptr<IncomingDomain> attach_incoming(int id) { return std::make_unique<SimIncoming>(id); }

namespace {

// What the kernel could give now without swapping anything out
// (MemAvailable, plus free swap); 0 if /proc/meminfo says nothing.
std::uint64_t available_memory_bytes()
{
    std::ifstream in("/proc/meminfo");
    std::string key;
    std::uint64_t kib = 0, total = 0;
    std::string unit;
    while (in >> key >> kib) {
        std::getline(in, unit);
        if (key == "MemAvailable:" || key == "SwapFree:")
            total += kib << 10;
    }
    return total;
}

std::string mib(std::uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

} // namespace

void SimProvider::check_capacity(std::uint64_t nr_pages, std::uint32_t kind, const std::string& source_name)
{
    if (kind != kDomainKindSim)
        return; // the receiver refuses other kinds itself
    if (nr_pages == 0 || nr_pages > kMaxPages)
        throw Error("incoming sim domain for " + source_name + ": bad size of " + std::to_string(nr_pages) + " pages");
    const std::uint64_t bytes = nr_pages * kPageSize;
    // The guest process maps its RAM and control pages whole, under the
    // limits it inherits from us: a trial mapping of that size (no memory
    // behind it) fails here exactly as it would there (RLIMIT_AS, vm.max_map_count,
    // a 32-bit address space), but before ACCEPT.
    const std::uint64_t need = bytes + control_layout(nr_pages).size;
    void* p = ::mmap(nullptr, need, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        const int err = errno;
        std::string limit;
        rlimit rl{};
        if (::getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
            limit = " (address space limit " + mib(rl.rlim_cur) + ")";
        throw Error("cannot map the " + mib(bytes) + " of guest memory" + limit + ": " + std::strerror(err));
    }
    ::munmap(p, need);
    if (std::uint64_t avail = available_memory_bytes(); avail && bytes > avail)
        throw Error("a guest of " + mib(bytes) + " does not fit in the " + mib(avail) +
                    " this host has available (MemAvailable + SwapFree)");
}

std::unique_ptr<IncomingDomain> SimProvider::create(std::uint64_t nr_pages, std::uint32_t kind,
                                                    const std::string& source_name)
{
    if (kind != kDomainKindSim)
        throw Error("sim backend cannot receive " + source_name + ": domain kind " + std::to_string(kind) +
                    " is not a sim domain");
    int id = create_incoming_domain(nr_pages);
    try {
        return attach_incoming(id);
    } catch (...) {
        try {
            destroy_domain(id);
        } catch (const Error&) {
        }
        throw;
    }
}

} // namespace fastmig::sim
