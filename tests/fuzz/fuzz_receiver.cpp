// Fuzz target: the destination as a whole.  The input is what a hostile
// source sends; it goes through real sockets into the real receiver
// (receive_domain: record framing, HEADER, CHANNELS, CHANNEL_HELLO on extra
// connections, PAGE_BATCH with every encoding, ROUND_END, PLATFORM_STATE,
// END, COMMIT) which builds a checked in-memory domain.
//
// Input: flags:u8, then for each extra connection len:u16 + its bytes, then
// the bytes of the first connection (magic and records, as a source sends).
//   flags bit 0:    recompute every record's CRC first (see fix_crcs)
//   flags bits 1-2: number of extra connections the harness holds ready
//                   for the receiver's accept_channel (0..3)
//
// Checked beyond "no crash" (abort on violation):
//   - every page the receiver writes, zeroes or reads has pfn < nr_pages,
//     and every write or read is exactly pages * 4096 bytes (the domain's
//     memory ends in a PROT_NONE guard page as well);
//   - nothing touches the domain after it was destroyed or once it runs;
//   - on failure the domain (if one was created) is destroyed, never
//     started; on success it runs and is not destroyed;
//   - the receiver fails only with fastmig::Error.
// The provider refuses domains above kMaxFuzzPages, as a host without the
// memory would: the receiver's own allocations are then bounded by what it
// was willing to build, and -malloc_limit_mb catches any other large one.
#include "tests/fuzz/fuzz_common.hpp"

#include "stream/receiver.hpp"
#include "stream/transport.hpp"

#include <memory>
#include <thread>

#include <sys/mman.h>

using namespace fastmig;
using namespace fastmig::fuzz;

namespace {

// 4 regions of 512 pages, so that pages reach up to 4 channels
// (wire::channel_of), in 8 MiB of lazily mapped memory.
constexpr std::uint64_t kMaxFuzzPages = 2048;

struct Mapping {
    explicit Mapping(std::size_t pages) : bytes((pages + 1) * kPageSize)
    {
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            fuzz_fail("mmap");
        mem = static_cast<std::uint8_t*>(p);
        // Guard page: a write one page past the end faults at once.
        ::mprotect(mem + pages * kPageSize, kPageSize, PROT_NONE);
    }
    ~Mapping() { ::munmap(mem, bytes); }
    std::size_t bytes;
    std::uint8_t* mem;
};

struct DomainLog {
    bool created = false, destroyed = false, running = false, restored = false;
};

class CheckedIncoming : public IncomingDomain {
public:
    CheckedIncoming(std::uint64_t pages, DomainLog& log) : pages_(pages), map_(pages), log_(log) {}
    std::string name() const override { return "fuzz:1"; }
    std::uint64_t nr_pages() const override { return pages_; }
    void write_pages(std::span<const Pfn> pfns, std::span<const std::uint8_t> src) override
    {
        usable();
        FUZZ_ASSERT(!pfns.empty());
        FUZZ_ASSERT(src.size() == pfns.size() * kPageSize);
        for (std::size_t i = 0; i < pfns.size(); ++i) {
            FUZZ_ASSERT(pfns[i] < pages_);
            std::memcpy(map_.mem + pfns[i] * kPageSize, src.data() + i * kPageSize, kPageSize);
        }
    }
    void zero_pages(std::span<const Pfn> pfns) override
    {
        usable();
        for (Pfn pfn : pfns) {
            FUZZ_ASSERT(pfn < pages_);
            std::memset(map_.mem + pfn * kPageSize, 0, kPageSize);
        }
    }
    void read_page(Pfn pfn, std::span<std::uint8_t> dst) override
    {
        usable();
        FUZZ_ASSERT(pfn < pages_ && dst.size() == kPageSize);
        std::memcpy(dst.data(), map_.mem + pfn * kPageSize, kPageSize);
    }
    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override
    {
        usable();
        FUZZ_ASSERT(dst.size() == pfns.size() * kPageSize);
        IncomingDomain::read_pages(pfns, dst);
    }
    void restore_state(const std::vector<StateBlob>& state) override
    {
        usable();
        FUZZ_ASSERT(!log_.restored);
        log_.restored = true;
        std::size_t bytes = 0;
        for (const auto& b : state)
            bytes += b.data.size();
        // The receiver's promise: bounded platform state.
        FUZZ_ASSERT(state.size() <= 4096 && bytes <= (64u << 20));
    }
    void unpause() override
    {
        usable();
        FUZZ_ASSERT(log_.restored);
        log_.running = true;
    }
    DomainClock clock() const override { return {0, 1}; }
    void destroy() override
    {
        FUZZ_ASSERT(!log_.running && !log_.destroyed);
        log_.destroyed = true;
    }

private:
    void usable() const { FUZZ_ASSERT(!log_.destroyed && !log_.running); }
    std::uint64_t pages_;
    Mapping map_;
    DomainLog& log_;
};

class CheckedProvider : public DomainProvider {
public:
    explicit CheckedProvider(DomainLog& log) : log_(log) {}
    std::unique_ptr<IncomingDomain> create(std::uint64_t pages, std::uint32_t, const std::string& name) override
    {
        FUZZ_ASSERT(!log_.created);
        FUZZ_ASSERT(pages >= 1 && pages <= kMaxPages && name.size() <= wire::kMaxNameLength);
        if (pages > kMaxFuzzPages)
            throw Error("not enough memory for " + std::to_string(pages) + " pages");
        log_.created = true;
        return std::make_unique<CheckedIncoming>(pages, log_);
    }

private:
    DomainLog& log_;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    Input in(data, size);
    const std::uint8_t flags = in.u8();
    const unsigned extra = (flags >> 1) & 3;
    std::vector<Bytes> streams;
    for (unsigned k = 0; k < extra; ++k) {
        auto s = in.take(in.u16());
        streams.emplace_back(s.begin(), s.end());
    }
    auto first = in.rest();
    streams.emplace(streams.begin(), first.begin(), first.end());
    if (flags & 1)
        for (auto& s : streams)
            fix_crcs(s, 8);

    // Each connection: everything the source says is written at once, then
    // its sending side is closed; the receiver's answers are dropped.
    std::vector<std::unique_ptr<PeerConn>> conns;
    for (auto& s : streams) {
        conns.push_back(std::make_unique<PeerConn>(std::move(s)));
        PeerConn* c = conns.back().get();
        c->io = std::thread([c] {
            c->put(0, c->bytes.size());
            c->finish();
        });
    }

    DomainLog log;
    CheckedProvider provider(log);
    ReceiveOptions opt;
    // Generous: every byte is written before the receiver waits, so these
    // only bound a hang (which libFuzzer's -timeout reports).
    opt.io_timeout = std::chrono::milliseconds(5000);
    opt.commit_timeout = std::chrono::milliseconds(5000);
    std::size_t next = 1;
    opt.accept_channel = [&](std::chrono::milliseconds) -> int {
        if (next < conns.size()) {
            // The receiver owns (and closes) what this returns.
            int fd = conns[next]->theirs;
            conns[next++]->theirs = -1;
            return fd;
        }
        // No more connections: one that closes at once.
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            fuzz_fail("socketpair");
        ::close(sv[0]);
        return sv[1];
    };
    bool ok = false;
    try {
        receive_domain(conns[0]->theirs, provider, opt);
        ok = true;
        verbose("receiver: domain built and running");
    } catch (const Error& e) {
        // Refused or failed: the expected outcome for most inputs.
        verbose("receiver", &e);
    }
    if (ok)
        FUZZ_ASSERT(log.created && log.running && !log.destroyed);
    else if (log.created)
        FUZZ_ASSERT(log.destroyed && !log.running);
    conns.clear();
    return 0;
}
