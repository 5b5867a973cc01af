// Fuzz target: the source as a whole, fed hostile answers.  A small
// in-memory domain is migrated by the real sender (send_domain, with its
// pipeline threads) over real sockets; the input is what the destination
// answers: magic, ACCEPT or a refusal, ROUND_ACK per round and channel,
// READY, DONE, or anything else.
//
// Input: cfg:u8, [len:u16 + the second connection's answers if cfg bit 0],
// then the first connection's answers.
//   cfg bit 0:    two channels (else one)
//   cfg bit 1:    recompute every record's CRC first (see fix_crcs)
//   cfg bit 2:    verify (the sender compares READY's digest)
//   cfg bit 3:    compress and XBZRLE on
//   cfg bits 4-5: precopy rounds (1..4); the policy is set so that exactly
//                 that many run, then stop-and-copy: the answers a correct
//                 destination gives are a function of cfg alone
// The first connection's answers are held back after the first READY
// record until the sender has sent COMMIT, as a destination would: the
// sender checks that the destination said nothing between READY and COMMIT.
//
// Checked beyond "no crash" (abort on violation), the rule the commit
// protocol exists for (docs/stream-format.md, Commit):
//   - success: the source was released, and no resume after the suspension;
//   - InDoubtError: the source stays paused and is not released;
//   - any other failure: the source runs and is not released;
//   - the sender fails only with fastmig::Error.
#include "tests/fuzz/fuzz_common.hpp"

#include "stream/sender.hpp"
#include "stream/transport.hpp"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include <unistd.h>

using namespace fastmig;
using namespace fastmig::fuzz;

namespace {

constexpr std::uint64_t kPages = 96; // spans regions 0 only: channel 1 carries no pages, only ROUND_ENDs

class SourceDomain : public Domain {
public:
    SourceDomain() : mem_(kPages * kPageSize)
    {
        // A mix: zero pages, text-like pages, pseudo-random pages.
        std::uint64_t x = 0x9e3779b97f4a7c15ull;
        for (std::uint64_t p = 0; p < kPages; ++p) {
            std::uint8_t* d = mem_.data() + p * kPageSize;
            if (p % 3 == 0)
                continue;
            for (std::size_t i = 0; i < kPageSize; ++i) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                d[i] = p % 3 == 1 ? static_cast<std::uint8_t>("page dirty round "[i % 17]) : static_cast<std::uint8_t>(x);
            }
        }
    }
    std::string name() const override { return "fuzz:0"; }
    std::uint64_t nr_pages() const override { return kPages; }
    std::uint32_t kind() const override { return kDomainKindSim; }
    void enable_dirty_log() override { logging_ = true; }
    void disable_dirty_log() override { logging_ = false; }
    std::uint64_t fetch_and_clear_dirty(DirtyBitmap& out) override
    {
        // A few pages changed a little between rounds (XBZRLE's case).
        out.clear_all();
        if (!paused)
            for (Pfn p = fetches_ % 5; p < kPages; p += 9) {
                mem_[p * kPageSize + fetches_ % kPageSize] ^= 0x5a;
                out.set(p);
            }
        ++fetches_;
        return out.count();
    }
    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override
    {
        FUZZ_ASSERT(!released && dst.size() == pfns.size() * kPageSize);
        for (std::size_t i = 0; i < pfns.size(); ++i) {
            FUZZ_ASSERT(pfns[i] < kPages);
            std::memcpy(dst.data() + i * kPageSize, mem_.data() + pfns[i] * kPageSize, kPageSize);
        }
    }
    void suspend(std::chrono::milliseconds) override
    {
        FUZZ_ASSERT(!paused && !released);
        paused = true;
    }
    void resume() override
    {
        FUZZ_ASSERT(paused && !released);
        paused = false;
        ++resumes;
    }
    bool running() const override { return !paused; }
    std::vector<StateBlob> save_state() override { return {{7, {1, 2, 3}}}; }
    DomainClock clock() const override { return {1, 0}; }
    void release() override
    {
        FUZZ_ASSERT(!released);
        released = true;
    }
    void set_orphan_policy(OrphanPolicy p) override { orphan = p; }

    bool paused = false, released = false;
    unsigned resumes = 0;
    OrphanPolicy orphan = OrphanPolicy::none;

private:
    std::vector<std::uint8_t> mem_;
    bool logging_ = false;
    unsigned fetches_ = 0;
};

// Where the first READY record of a reply stream ends (0: none), framing the
// records as the reader does (8-byte magic, then 16-byte headers, bodies
// padded to 8).  Where this framing and the reader's disagree the reader has
// already refused the stream, so the split point never matters then.
std::size_t end_of_first_ready(const Bytes& s)
{
    std::size_t at = 8;
    while (at + wire::kRecordHeaderSize <= s.size()) {
        const std::uint32_t type = rd32(s.data() + at);
        const std::uint64_t len = rd32(s.data() + at + 4);
        const std::uint64_t next = at + wire::kRecordHeaderSize + len + (8 - len % 8) % 8;
        if (next > s.size())
            return 0;
        if (type == static_cast<std::uint32_t>(wire::RecordType::ready))
            return static_cast<std::size_t>(next);
        at = static_cast<std::size_t>(next);
    }
    return 0;
}

// Reads what the sender writes on one connection: a record reader over the
// harness's end of the socket, so it can tell when COMMIT went out.
class FdSource : public wire::ByteSource {
public:
    explicit FdSource(int fd) : fd_(fd) {}
    void read_exact(std::span<std::uint8_t> buf) override
    {
        std::size_t off = 0;
        while (off < buf.size()) {
            ssize_t r = ::read(fd_, buf.data() + off, buf.size() - off);
            if (r <= 0)
                throw Error("closed");
            off += static_cast<std::size_t>(r);
        }
    }

private:
    int fd_;
};

// Starts the fake destination's side of one connection: its answers, all
// at once, or (hold_after_ready) up to the first READY and the rest once
// the sender has sent COMMIT (or gave up).
std::unique_ptr<PeerConn> destination(Bytes answers, bool hold_after_ready)
{
    auto c = std::make_unique<PeerConn>(std::move(answers));
    const std::size_t split = hold_after_ready ? end_of_first_ready(c->bytes) : 0;
    PeerConn* p = c.get();
    p->io = std::thread([p, split] {
        p->put(0, split ? split : p->bytes.size());
        if (split) {
            try {
                FdSource src(p->ours);
                wire::read_magic(src, wire::kSourceMagic);
                wire::RecordReader r(src);
                while (r.read().type != wire::RecordType::commit) {
                }
                p->put(split, p->bytes.size());
            } catch (const Error&) {
            }
        }
        p->finish();
    });
    return c;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    Input in(data, size);
    const std::uint8_t cfg = in.u8();
    const unsigned channels = (cfg & 1) ? 2 : 1;
    Bytes second;
    if (channels == 2) {
        auto s = in.take(in.u16());
        second.assign(s.begin(), s.end());
    }
    auto f = in.rest();
    Bytes first(f.begin(), f.end());
    if (cfg & 2) {
        fix_crcs(first, 8);
        fix_crcs(second, 8);
    }

    auto c0 = destination(std::move(first), true);
    std::unique_ptr<PeerConn> c1;
    if (channels == 2)
        c1 = destination(std::move(second), false);

    SourceDomain dom;
    SendOptions opt;
    opt.verify = cfg & 4;
    opt.pipeline.threads = 1;
    opt.pipeline.batch_pages = 16;
    opt.pipeline.compression.algorithm = (cfg & 8) ? codec::Algorithm::igzip : codec::Algorithm::none;
    opt.pipeline.compression.always = true;
    opt.pipeline.xbzrle_cache_bytes = (cfg & 8) ? 64 * kPageSize : 0;
    opt.free_page_hints = false;
    // Exactly 1..4 precopy rounds: never "converged" (the target is below
    // any prediction), never "no progress".
    opt.policy.max_rounds = 1 + ((cfg >> 4) & 3);
    opt.policy.downtime_target_ms = -1;
    opt.policy.stall_rounds = 1000;
    opt.channels = channels;
    opt.connect_channel = [&]() -> int {
        FUZZ_ASSERT(c1 && c1->theirs >= 0);
        int fd = c1->theirs; // the sender owns and closes it
        c1->theirs = -1;
        return fd;
    };
    opt.io_timeout = std::chrono::milliseconds(5000);
    opt.done_timeout = std::chrono::milliseconds(5000);
    opt.peer_reason_timeout = std::chrono::milliseconds(0);

    enum { ok, in_doubt, failed } outcome = ok;
    try {
        send_domain(dom, c0->theirs, opt);
        verbose("sender: migrated");
    } catch (const InDoubtError& e) {
        outcome = in_doubt;
        verbose("sender: in doubt", &e);
    } catch (const Error& e) {
        outcome = failed;
        verbose("sender", &e);
    }
    switch (outcome) {
    case ok: FUZZ_ASSERT(dom.released && dom.paused && dom.resumes == 0); break;
    case in_doubt: FUZZ_ASSERT(dom.paused && !dom.released && dom.orphan == OrphanPolicy::keep_paused); break;
    case failed: FUZZ_ASSERT(!dom.paused && !dom.released); break;
    }
    c0.reset();
    c1.reset();
    return 0;
}
