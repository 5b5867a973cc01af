// OUTCOME_QUERY on a new connection: see stream/reconnect.hpp.
#include "stream/reconnect.hpp"

#include "stream/auth/auth.hpp"
#include "stream/clock.hpp"
#include "stream/transport.hpp"

#include <algorithm>
#include <thread>

namespace fastmig {

namespace {

// One connection, one question, one answer.  Throws Error when the
// destination cannot be reached or does not answer properly.
wire::OutcomeReply ask_once(const wire::MigrationId& id, const std::vector<std::uint8_t>& psk,
                            const ResolveOptions& opt, std::chrono::milliseconds timeout)
{
    Fd fd(opt.connect(timeout));
    wire::RecordWriter w(fd.get(), timeout);
    SocketSource src(fd.get(), timeout);
    wire::RecordReader r(src);
    std::span<const std::uint8_t> prefix{wire::kSourceMagic.data(), wire::kSourceMagic.size()};
    if (!psk.empty()) {
        auth::authenticate_to_destination(psk, w, src, r, opt.suite);
        prefix = {};
    }
    w.write(wire::encode_outcome_query(id), prefix);
    if (psk.empty())
        wire::read_magic(src, wire::kReplyMagic);
    auto rec = r.read();
    if (rec.type == wire::RecordType::accept) {
        auto a = wire::parse_accept(rec.body);
        throw Error("the destination refused the query: " + a.message);
    }
    if (rec.type != wire::RecordType::outcome)
        throw StreamError(std::string("expected OUTCOME, got ") +
                          wire::record_type_name(static_cast<std::uint32_t>(rec.type)));
    auto reply = wire::parse_outcome(rec.body);
    if (reply.id != id)
        throw StreamError("the OUTCOME answers another migration id");
    return reply;
}

} // namespace

Resolution resolve_outcome(const wire::MigrationId& id, const std::vector<std::uint8_t>& psk,
                           const ResolveOptions& opt, const std::function<void(const std::string&)>& log)
{
    Resolution res;
    Stopwatch sw;
    if (!opt.connect) {
        res.detail = "no way to reconnect was given";
        return res;
    }
    const auto deadline = std::chrono::steady_clock::now() + opt.deadline;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (res.attempts >= opt.max_attempts || left.count() <= 0)
            break;
        ++res.attempts;
        try {
            auto reply = ask_once(id, psk, opt, std::min(opt.attempt_timeout, left));
            res.detail = reply.message;
            res.verify_digest = reply.verify_digest;
            res.kind = reply.answer == wire::OutcomeAnswer::committed       ? Resolution::committed
                       : reply.answer == wire::OutcomeAnswer::not_committed ? Resolution::not_committed
                                                                             : Resolution::unresolved;
            if (log)
                log("outcome of migration " + wire::migration_id_hex(id) + " asked of " + opt.destination +
                    " (attempt " + std::to_string(res.attempts) + "): " + wire::outcome_answer_name(reply.answer) +
                    " (" + reply.message + ")");
            if (res.kind == Resolution::unresolved)
                res.detail = "the destination answered 'unknown': " + reply.message;
            break;
        } catch (const std::exception& e) {
            res.detail = e.what();
            if (log)
                log("asking " + opt.destination + " for the outcome (attempt " + std::to_string(res.attempts) +
                    "): " + e.what());
        }
        if (res.attempts >= opt.max_attempts)
            break;
        const auto rest = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        std::this_thread::sleep_for(std::clamp(rest, std::chrono::milliseconds(0), opt.retry_interval));
    }
    res.seconds = sw.seconds();
    return res;
}

} // namespace fastmig
