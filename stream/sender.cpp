#include "stream/sender.hpp"

#include "stream/classify.hpp"
#include "stream/clock.hpp"
#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <cstdio>
#include <cstdlib>
#include <memory>

namespace fastmig {

namespace {

// Page buffer aligned for vector zero detection and O_DIRECT-friendly reads.
struct PageBuffer {
    explicit PageBuffer(std::size_t pages)
        : size(pages * kPageSize), data(static_cast<std::uint8_t*>(std::aligned_alloc(kPageSize, size)))
    {
        if (!data)
            throw Error("out of memory for a " + std::to_string(size) + "-byte page buffer");
    }
    ~PageBuffer() { std::free(data); }
    PageBuffer(const PageBuffer&) = delete;
    PageBuffer& operator=(const PageBuffer&) = delete;
    std::size_t size;
    std::uint8_t* data;
};

class Sender {
public:
    Sender(Domain& dom, int fd, const SendOptions& opt)
        : dom_(dom), fd_(fd), opt_(opt), policy_(opt.policy), buf_(opt.batch_pages),
          replies_(fd, opt.io_timeout), reader_(replies_)
    {
        if (opt_.batch_pages == 0 || opt_.batch_pages > wire::kMaxBatchPages)
            throw Error("batch size must be 1.." + std::to_string(wire::kMaxBatchPages) + " pages");
        pfns_.reserve(opt_.batch_pages);
    }

    SendResult run();

private:
    void negotiate();
    void send_all_pages(unsigned round);
    void send_dirty_pages(const DirtyBitmap& dirty, unsigned round);
    void queue(Pfn pfn, unsigned round);
    void flush(unsigned round);
    void send_state();
    void send_record(const std::vector<std::uint8_t>& rec);
    wire::Done wait_done();
    wire::Record next_reply(wire::RecordType want);
    void wait_round_ack(unsigned round);
    void report(bool force);
    void log(const std::string& line)
    {
        if (opt_.log)
            opt_.log(line);
    }
    std::string peer_reason();

    Domain& dom_;
    int fd_;
    const SendOptions& opt_;
    PrecopyPolicy policy_;
    PageBuffer buf_;
    std::vector<Pfn> pfns_;
    wire::BatchEncoder enc_;
    SocketSource replies_;
    wire::RecordReader reader_;
    SendResult res_;
    Phase phase_ = Phase::setup;
    Stopwatch total_;
    Stopwatch last_progress_;
    RoundStats cur_;
    std::uint64_t round_target_ = 0;
    bool suspended_ = false;
};

void Sender::send_record(const std::vector<std::uint8_t>& rec)
{
    write_all(fd_, rec, opt_.io_timeout);
    res_.bytes_sent += rec.size();
}

void Sender::negotiate()
{
    phase_ = Phase::negotiate;
    wire::StreamHeader h;
    h.nr_pages = dom_.nr_pages();
    h.features = opt_.verify ? std::uint64_t{wire::kFeatureVerify} : 0;
    h.domain_kind = dom_.kind();
    h.domain_name = dom_.name();
    std::vector<std::uint8_t> out(wire::kSourceMagic.begin(), wire::kSourceMagic.end());
    auto hdr = wire::encode_header(h);
    out.insert(out.end(), hdr.begin(), hdr.end());
    send_record(out);

    try {
        wire::read_magic(replies_, wire::kReplyMagic);
    } catch (const StreamError& e) {
        throw Error("the peer is not a fastmig receiver (" + e.cause() + ")");
    }
    auto rec = reader_.read();
    if (rec.type != wire::RecordType::accept)
        throw StreamError(std::string("expected ACCEPT from the destination, got ") +
                          wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
    auto a = wire::parse_accept(rec.body);
    if (a.status != wire::kAcceptOk)
        throw Error("the destination refused the domain: " + a.message);
}

void Sender::report(bool force)
{
    if (!opt_.progress)
        return;
    if (!force && last_progress_.seconds() < 0.1)
        return;
    last_progress_.restart();
    Progress p;
    p.round = cur_.round;
    p.stop_copy = cur_.stop_copy;
    p.pages_done = cur_.pages;
    p.pages_round = round_target_;
    p.bytes_total = res_.bytes_sent;
    p.elapsed_s = total_.seconds();
    p.bandwidth = policy_.bandwidth_bytes_per_s();
    opt_.progress(p);
}

void Sender::flush(unsigned round)
{
    if (pfns_.empty())
        return;
    std::span<std::uint8_t> dst(buf_.data, pfns_.size() * kPageSize);
    dom_.read_pages(pfns_, dst);
    enc_.begin(round);
    for (std::size_t i = 0; i < pfns_.size(); ++i) {
        const std::uint8_t* page = buf_.data + i * kPageSize;
        if (is_zero_page(page)) {
            enc_.add_zero(pfns_[i]);
            ++cur_.zero_pages;
        } else {
            enc_.add(pfns_[i], wire::PageEncoding::raw, {page, kPageSize});
        }
    }
    auto iov = enc_.finish();
    write_all(fd_, iov, opt_.io_timeout);
    cur_.bytes += enc_.wire_size();
    res_.bytes_sent += enc_.wire_size();
    cur_.pages += pfns_.size();
    pfns_.clear();
    report(false);
}

void Sender::queue(Pfn pfn, unsigned round)
{
    pfns_.push_back(pfn);
    if (pfns_.size() >= opt_.batch_pages)
        flush(round);
}

void Sender::send_all_pages(unsigned round)
{
    round_target_ = dom_.nr_pages();
    for (Pfn p = 0; p < dom_.nr_pages(); ++p)
        queue(p, round);
    flush(round);
}

void Sender::send_dirty_pages(const DirtyBitmap& dirty, unsigned round)
{
    round_target_ = dirty.count();
    dirty.for_each_set([&](Pfn p) { queue(p, round); });
    flush(round);
}

void Sender::send_state()
{
    phase_ = Phase::state;
    for (const auto& blob : dom_.save_state()) {
        if (blob.data.size() > wire::kMaxStateBlob)
            throw Error("platform state blob of type " + std::to_string(blob.type) + " is " +
                        std::to_string(blob.data.size()) + " bytes, above the stream's limit");
        send_record(wire::encode_platform_state(blob.type, blob.data));
    }
}

std::string Sender::peer_reason()
{
    // After a failed send, the destination may have said why it gave up.
    try {
        replies_.set_timeout(std::chrono::milliseconds(1000));
        for (int i = 0; i < 4; ++i) { // acks of earlier rounds may come first
            auto rec = reader_.read();
            if (rec.type == wire::RecordType::done) {
                auto d = wire::parse_done(rec.body);
                return d.status != 0 ? d.message : std::string();
            }
        }
    } catch (...) {
    }
    return {};
}

// Reads the next reply; a DONE with an error status means the destination
// gave up, and its reason is the error.
wire::Record Sender::next_reply(wire::RecordType want)
{
    auto rec = reader_.read();
    if (rec.type == wire::RecordType::done && want != wire::RecordType::done) {
        auto d = wire::parse_done(rec.body);
        throw Error("the destination gave up: " + (d.message.empty() ? std::string("no reason given") : d.message));
    }
    if (rec.type != want)
        throw StreamError(std::string("expected ") + wire::record_type_name(static_cast<std::uint32_t>(want)) +
                          " from the destination, got " +
                          wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
    return rec;
}

void Sender::wait_round_ack(unsigned round)
{
    auto ack = wire::parse_round_ack(next_reply(wire::RecordType::round_ack).body);
    if (ack.round != round)
        throw StreamError("ROUND_ACK of round " + std::to_string(ack.round) + " while waiting for round " +
                          std::to_string(round));
}

wire::Done Sender::wait_done()
{
    phase_ = Phase::finish;
    replies_.set_timeout(opt_.done_timeout);
    // The last round is acknowledged like the others, before DONE.
    wait_round_ack(res_.rounds - 1);
    return wire::parse_done(next_reply(wire::RecordType::done).body);
}

SendResult Sender::run()
{
    res_.domain = dom_.name();
    res_.nr_pages = dom_.nr_pages();
    try {
        negotiate();

        phase_ = Phase::precopy;
        dom_.enable_dirty_log();
        DirtyBitmap dirty(dom_.nr_pages());
        unsigned round = 0;
        Stopwatch precopy;
        for (;;) {
            cur_ = RoundStats{};
            cur_.round = round;
            Stopwatch rt;
            if (round == 0)
                send_all_pages(round);
            else
                send_dirty_pages(dirty, round);
            send_record(wire::encode_round_end({round, cur_.pages}));
            // Wait until the destination has applied the round: the round's
            // time is then the end-to-end rate (not the rate at which the
            // socket buffers filled), and no backlog is left in the pipe to
            // be drained inside the downtime.
            wait_round_ack(round);
            cur_.seconds = rt.seconds();
            cur_.dirty_after = dom_.fetch_and_clear_dirty(dirty);

            RoundSample s{round, cur_.pages, cur_.pages - cur_.zero_pages, cur_.bytes, cur_.seconds,
                          cur_.dirty_after};
            Decision d = policy_.after_round(s);
            cur_.predicted_downtime_ms = d.predicted_downtime_ms;
            res_.round_stats.push_back(cur_);
            report(true);
            char line[200];
            std::snprintf(line, sizeof line, "round %u: %llu pages (%llu zero), %.1f MiB in %.1f ms; ", round,
                          (unsigned long long)cur_.pages, (unsigned long long)cur_.zero_pages,
                          double(cur_.bytes) / (1 << 20), cur_.seconds * 1e3);
            log(line + d.why);
            ++round;
            if (d.stop) {
                res_.stop_reason = d.reason;
                res_.stop_why = d.why;
                break;
            }
        }
        res_.precopy_ms = precopy.seconds() * 1e3;

        phase_ = Phase::stop_copy;
        Stopwatch sc;
        dom_.suspend(opt_.suspend_timeout);
        suspended_ = true;
        res_.paused_at_ns = dom_.clock().paused_at_ns;
        Stopwatch paused;
        cur_ = RoundStats{};
        cur_.round = round;
        cur_.stop_copy = true;
        // Left to send: the set fetched after the last precopy round (which
        // the policy judged small enough) plus whatever the guest dirtied
        // between that fetch and the suspension.
        {
            DirtyBitmap late(dom_.nr_pages());
            dom_.fetch_and_clear_dirty(late);
            dirty.merge(late);
        }
        send_dirty_pages(dirty, round);
        send_record(wire::encode_round_end({round, cur_.pages}));
        send_state();
        send_record(wire::encode_end());
        cur_.seconds = sc.seconds();
        res_.round_stats.push_back(cur_);
        res_.stop_copy_ms = sc.seconds() * 1e3;
        res_.rounds = round + 1;
        report(true);

        wire::Done done = wait_done();
        res_.source_downtime_ms = paused.seconds() * 1e3;
        if (done.status != 0)
            throw Error("the destination could not start the domain: " + done.message);
        res_.resumed_at_ns = done.resumed_at_ns;
        double to_done_ms = total_.seconds() * 1e3;
        // From here the destination runs the domain: the source must never
        // be resumed again, whatever happens below.
        suspended_ = false;

        if (opt_.verify) {
            phase_ = Phase::verify;
            auto sums = domain_checksums(dom_);
            res_.source_digest = wire::page_digest(sums);
            res_.destination_digest = done.verify_digest;
            res_.verified = res_.source_digest == res_.destination_digest;
        }
        Stopwatch rel;
        if (opt_.release_source)
            dom_.release();
        res_.total_ms = to_done_ms + rel.seconds() * 1e3;
        for (const auto& r : res_.round_stats) {
            res_.pages_zero += r.zero_pages;
            res_.pages_data += r.pages - r.zero_pages;
        }
        return res_;
    } catch (const Error& e) {
        std::string cause = e.cause();
        if (phase_ != Phase::finish && phase_ != Phase::negotiate) {
            std::string why = peer_reason();
            if (!why.empty())
                cause += " (destination: " + why + ")";
        }
        if (suspended_) {
            try {
                dom_.resume();
                cause += "; the domain was resumed on the source";
            } catch (const std::exception& r) {
                cause += std::string("; RESUMING THE SOURCE FAILED: ") + r.what();
            }
        } else if (phase_ != Phase::verify) {
            cause += "; the domain keeps running on the source";
        }
        if (e.has_context())
            throw Error(e.domain(), e.phase(), cause);
        throw Error(dom_.name(), phase_, cause);
    }
}

} // namespace

SendResult send_domain(Domain& dom, int fd, const SendOptions& opt)
{
    Sender s(dom, fd, opt);
    return s.run();
}

std::vector<std::uint64_t> domain_checksums(Domain& dom)
{
    constexpr std::size_t kBatch = 512;
    PageBuffer buf(kBatch);
    std::vector<std::uint64_t> sums(dom.nr_pages());
    std::vector<Pfn> pfns;
    for (Pfn base = 0; base < dom.nr_pages(); base += kBatch) {
        pfns.clear();
        for (Pfn p = base; p < std::min<Pfn>(base + kBatch, dom.nr_pages()); ++p)
            pfns.push_back(p);
        dom.read_pages(pfns, {buf.data, pfns.size() * kPageSize});
        for (std::size_t i = 0; i < pfns.size(); ++i)
            sums[pfns[i]] = wire::page_checksum({buf.data + i * kPageSize, kPageSize});
    }
    return sums;
}

} // namespace fastmig
