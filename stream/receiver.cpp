#include "stream/receiver.hpp"

#include "stream/clock.hpp"
#include "stream/dirty_bitmap.hpp"
#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <algorithm>
#include <array>
#include <memory>

namespace fastmig {

namespace {

// Bound on platform state: a real PV guest has a few dozen blobs (one per
// vCPU plus a handful), so anything above this is a hostile stream.
constexpr std::size_t kMaxStateBlobs = 4096;
constexpr std::uint64_t kMaxStateBytes = 64ull << 20;

class Receiver {
public:
    Receiver(int fd, DomainProvider& provider, const ReceiveOptions& opt)
        : fd_(fd), provider_(provider), opt_(opt), in_(fd, opt.io_timeout), reader_(in_)
    {
    }
    ReceiveResult run();

private:
    void accept_or_refuse(const wire::StreamHeader& h);
    void refuse(std::uint32_t status, const std::string& why);
    void on_batch(std::span<const std::uint8_t> body);
    void write_run();
    void send_done(const wire::Done& d);
    // The reply magic goes before the first record this side sends.
    std::vector<std::uint8_t> reply(std::vector<std::uint8_t> rec);
    std::string label() const { return dom_ ? dom_->name() : (res_.source_name.empty() ? std::string("incoming") : "incoming " + res_.source_name); }

    int fd_;
    DomainProvider& provider_;
    const ReceiveOptions& opt_;
    SocketSource in_;
    wire::RecordReader reader_;
    std::unique_ptr<IncomingDomain> dom_;
    ReceiveResult res_;
    Phase phase_ = Phase::negotiate;
    bool reply_magic_sent_ = false;

    DirtyBitmap seen_;    // pfns received at least once (all must be, before resume)
    DirtyBitmap written_; // pfns holding data now (a later ZERO must clear them)
    std::vector<std::uint64_t> sums_;
    std::uint64_t zero_sum_ = 0;
    std::uint32_t open_round_ = 0; // the round whose batches may arrive now
    std::uint64_t round_pages_ = 0; // pages applied in the open round

    // Raw pages of a batch are written with one call: their data lies back to
    // back in the record body (zero pages carry none), so no copy is needed.
    wire::PageBatch batch_;
    std::vector<Pfn> run_pfns_;
    const std::uint8_t* run_data_ = nullptr;
};

std::vector<std::uint8_t> Receiver::reply(std::vector<std::uint8_t> rec)
{
    if (reply_magic_sent_)
        return rec;
    reply_magic_sent_ = true;
    rec.insert(rec.begin(), wire::kReplyMagic.begin(), wire::kReplyMagic.end());
    return rec;
}

void Receiver::send_done(const wire::Done& d) { write_all(fd_, reply(wire::encode_done(d)), opt_.io_timeout); }

void Receiver::refuse(std::uint32_t status, const std::string& why)
{
    try {
        write_all(fd_, reply(wire::encode_accept({status, why})), opt_.io_timeout);
    } catch (...) {
        // The refusal is also thrown below; a source that is gone cannot hear it.
    }
    throw Error("refused the domain: " + why);
}

void Receiver::accept_or_refuse(const wire::StreamHeader& h)
{
    if (h.features & ~wire::kKnownFeatures)
        refuse(wire::kAcceptBadFeatures, "unknown stream features 0x" + [&] {
            char b[32];
            std::snprintf(b, sizeof b, "%llx", (unsigned long long)(h.features & ~wire::kKnownFeatures));
            return std::string(b);
        }());
    if (std::find(opt_.kinds.begin(), opt_.kinds.end(), h.domain_kind) == opt_.kinds.end())
        refuse(wire::kAcceptBadKind, "this receiver cannot build domains of kind " + std::to_string(h.domain_kind));
    if (opt_.max_memory_bytes && h.nr_pages * kPageSize > opt_.max_memory_bytes)
        refuse(wire::kAcceptNoMemory, "domain of " + std::to_string(h.nr_pages * kPageSize >> 20) +
                                          " MiB exceeds the receiver's limit of " +
                                          std::to_string(opt_.max_memory_bytes >> 20) + " MiB");
    phase_ = Phase::restore;
    try {
        dom_ = provider_.create(h.nr_pages, h.domain_kind, h.domain_name);
    } catch (const std::exception& e) {
        refuse(wire::kAcceptNoMemory, std::string("cannot create the domain: ") + e.what());
    }
    res_.domain = dom_->name();
    res_.nr_pages = h.nr_pages;
    res_.verify = h.features & wire::kFeatureVerify;
    seen_.resize(h.nr_pages);
    written_.resize(h.nr_pages);
    if (res_.verify) {
        std::array<std::uint8_t, kPageSize> zero{};
        zero_sum_ = wire::page_checksum(zero);
        sums_.assign(h.nr_pages, zero_sum_);
    }
    write_all(fd_, reply(wire::encode_accept({wire::kAcceptOk, ""})), opt_.io_timeout);
}

void Receiver::write_run()
{
    if (run_pfns_.empty())
        return;
    dom_->write_pages(run_pfns_, {run_data_, run_pfns_.size() * kPageSize});
    run_pfns_.clear();
    run_data_ = nullptr;
}

void Receiver::on_batch(std::span<const std::uint8_t> body)
{
    wire::parse_page_batch(body, res_.nr_pages, batch_);
    // One connection delivers rounds in order (0, 1, 2... each closed by its
    // ROUND_END): a batch of another round would mean stale data could
    // overwrite fresh data.
    if (batch_.round != open_round_)
        throw StreamError("page batch of round " + std::to_string(batch_.round) + " while round " +
                          std::to_string(open_round_) + " is open");
    round_pages_ += batch_.pages.size();
    for (std::size_t i = 0; i < batch_.pages.size(); ++i) {
        const auto& d = batch_.pages[i];
        seen_.set(d.pfn);
        switch (d.encoding) {
        case wire::PageEncoding::zero:
            if (written_.test(d.pfn)) {
                write_run(); // the page may be in the pending run: keep stream order
                dom_->zero_page(d.pfn);
                written_.clear(d.pfn);
                ++res_.pages_zeroed;
            }
            if (res_.verify)
                sums_[d.pfn] = zero_sum_;
            break;
        case wire::PageEncoding::raw: {
            const std::uint8_t* data = batch_.data[i].data();
            if (!run_pfns_.empty() && data != run_data_ + run_pfns_.size() * kPageSize)
                write_run();
            if (run_pfns_.empty())
                run_data_ = data;
            run_pfns_.push_back(d.pfn);
            written_.set(d.pfn);
            ++res_.pages_written;
            if (res_.verify)
                sums_[d.pfn] = wire::page_checksum(batch_.data[i]);
            break;
        }
        default:
            throw StreamError(std::string("page encoding ") + std::to_string(unsigned(d.encoding)) +
                              " was not negotiated");
        }
    }
    write_run();
}

ReceiveResult Receiver::run()
{
    Stopwatch total;
    try {
        phase_ = Phase::negotiate;
        try {
            wire::read_magic(in_, wire::kSourceMagic);
        } catch (const StreamError& e) {
            throw StreamError("the peer is not a fastmig sender (" + e.cause() + ")");
        }
        auto rec = reader_.read();
        if (rec.type != wire::RecordType::header)
            throw StreamError(std::string("expected HEADER first, got ") +
                              wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
        // A source speaking another version gets a refusal it can report,
        // not a dropped connection: the version field never moves.
        if (rec.body.size() >= 4) {
            std::uint32_t v = std::uint32_t(rec.body[0]) | std::uint32_t(rec.body[1]) << 8 |
                              std::uint32_t(rec.body[2]) << 16 | std::uint32_t(rec.body[3]) << 24;
            if (v != wire::kVersion)
                refuse(wire::kAcceptBadVersion, "stream version " + std::to_string(v) +
                                                    " is not supported (this receiver speaks version " +
                                                    std::to_string(wire::kVersion) + ")");
        }
        auto h = wire::parse_header(rec.body);
        res_.source_name = h.domain_name;
        accept_or_refuse(h);

        phase_ = Phase::receive;
        std::vector<StateBlob> state;
        std::uint64_t state_bytes = 0;
        Stopwatch recv;
        for (bool end = false; !end;) {
            rec = reader_.read();
            switch (rec.type) {
            case wire::RecordType::page_batch:
                if (!state.empty())
                    throw StreamError("page batch after platform state");
                on_batch(rec.body);
                break;
            case wire::RecordType::round_end: {
                auto r = wire::parse_round_end(rec.body);
                if (r.round != open_round_)
                    throw StreamError("ROUND_END of round " + std::to_string(r.round) + " while round " +
                                      std::to_string(open_round_) + " is open");
                if (!state.empty())
                    throw StreamError("ROUND_END after platform state");
                ++open_round_;
                res_.rounds = open_round_;
                // Every page of the round is in the domain now (writes are
                // synchronous): tell the source, which paces itself on it.
                write_all(fd_, reply(wire::encode_round_ack({r.round, round_pages_})), opt_.io_timeout);
                round_pages_ = 0;
                break;
            }
            case wire::RecordType::platform_state: {
                auto ps = wire::parse_platform_state(rec.body);
                state_bytes += ps.data.size();
                if (state.size() >= kMaxStateBlobs || state_bytes > kMaxStateBytes)
                    throw StreamError("platform state exceeds " + std::to_string(kMaxStateBlobs) + " blobs or " +
                                      std::to_string(kMaxStateBytes >> 20) + " MiB");
                state.push_back({ps.state_type, {ps.data.begin(), ps.data.end()}});
                break;
            }
            case wire::RecordType::end:
                wire::parse_end(rec.body);
                end = true;
                break;
            default:
                throw StreamError(std::string("unexpected ") +
                                  wire::record_type_name(static_cast<std::uint32_t>(rec.type)) +
                                  " record from the source");
            }
        }
        res_.receive_ms = recv.seconds() * 1e3;
        res_.bytes_received = reader_.bytes_read() + wire::kSourceMagic.size();

        // Never start a domain with memory the stream did not cover.
        std::uint64_t seen = seen_.count();
        if (seen != res_.nr_pages)
            throw StreamError("the stream ended with " + std::to_string(res_.nr_pages - seen) +
                              " pages never sent");

        phase_ = Phase::restore;
        Stopwatch restore;
        dom_->restore_state(state);
        phase_ = Phase::resume;
        dom_->unpause();
        res_.resumed_at_ns = dom_->clock().resumed_at_ns;
        res_.restore_ms = restore.seconds() * 1e3;
        if (res_.verify)
            res_.verify_digest = wire::page_digest(sums_);

        wire::Done d;
        d.status = 0;
        d.resumed_at_ns = res_.resumed_at_ns;
        d.pages_written = res_.pages_written;
        d.bytes_received = res_.bytes_received;
        d.verify_digest = res_.verify_digest;
        phase_ = Phase::finish;
        send_done(d);
        return res_;
    } catch (const std::exception& ex) {
        std::string cause = ex.what();
        Phase ph = phase_;
        std::string who = label();
        if (auto* e = dynamic_cast<const Error*>(&ex)) {
            cause = e->cause();
            if (e->has_context()) {
                ph = e->phase();
                who = e->domain();
            }
            if (dynamic_cast<const StreamError*>(&ex))
                cause = "malformed stream: " + cause;
        }
        if (dom_ && phase_ != Phase::finish) {
            try {
                dom_->destroy();
                cause += "; the incoming domain was destroyed";
            } catch (const std::exception& d) {
                cause += std::string("; destroying the incoming domain failed: ") + d.what();
            }
            // Tell the source, which then keeps its domain running.
            try {
                wire::Done d;
                d.status = 1;
                d.message = cause.substr(0, wire::kMaxMessageLength);
                send_done(d);
            } catch (...) {
            }
        }
        throw Error(who, ph, cause);
    }
}

} // namespace

ReceiveResult receive_domain(int fd, DomainProvider& provider, const ReceiveOptions& opt)
{
    Receiver r(fd, provider, opt);
    return r.run();
}

} // namespace fastmig
