// The end of a migration at the source: COMMIT, the destination's DONE, and
// what happens when DONE never comes (docs/stream-format.md, Commit).
#include "stream/sender_internal.hpp"

#include "stream/failpoint.hpp"
#include "stream/reconnect.hpp"
#include "stream/wire_outcome.hpp"

#include <cstdio>

#include <poll.h>

namespace fastmig::sending {

// Between READY and COMMIT the destination says nothing.  If it already hung
// up (or sent anything), COMMIT must not go: the domain resumes here.  This
// turns "destination died after READY" into a clean fallback instead of an
// in-doubt outcome, except for a death in the microseconds after this check.
void Sender::check_peer_before_commit()
{
    pollfd p{fds_[0], POLLIN | POLLRDHUP, 0};
    int r = ::poll(&p, 1, 0);
    if (r > 0)
        throw Error("the destination hung up or spoke out of turn after READY; COMMIT not sent");
}

// Sends COMMIT and waits for DONE.  From the moment COMMIT may have left, a
// failure is in doubt: the destination may run the domain, so the source
// keeps it paused (InDoubtError) unless the destination said DONE with an
// error status (it destroyed its copy: resuming here is safe again).
wire::Done Sender::commit()
{
    phase_ = Phase::commit;
    // Write-ahead: if this process dies from now on, the domain stays paused.
    dom_.set_orphan_policy(OrphanPolicy::keep_paused);
    check_peer_before_commit();
    committing_ = true;
    if (mid_ && opt_.on_commit)
        opt_.on_commit(*mid_);
    wire::Done done;
    try {
        send_control(wire::encode_commit());
        failpoint("send:after-commit");
        replies_[0]->src.set_timeout(opt_.done_timeout);
        done = wire::parse_done(next_reply(0, wire::RecordType::done).body);
    } catch (const Error& e) {
        if (!mid_)
            throw InDoubtError(dom_.name(), Phase::commit,
                               "COMMIT was sent but the destination's DONE never came (" + e.cause() + ")");
        return resolve_lost_commit(e.cause());
    }
    if (done.status != 0) {
        committing_ = false; // the destination destroyed its copy
        throw Error("the destination could not start the domain after COMMIT: " + done.message);
    }
    if (mid_) {
        // The destination need not keep listening for our question.
        try {
            send_control(wire::encode_done_ack());
        } catch (const Error& e) {
            log(std::string("DONE_ACK not sent (") + e.cause() + "): the destination keeps listening a while");
        }
    }
    return done;
}

// DONE never came: ask the destination on a new connection (feature
// OUTCOME).  Only its definite answer moves the domain; anything else
// leaves it in doubt, paused here.
wire::Done Sender::resolve_lost_commit(const std::string& lost)
{
    const std::string& dest = opt_.resolve.destination;
    auto say = [this](const std::string& line) {
        log(line);
        if (opt_.resolve.log)
            opt_.resolve.log(line);
    };
    say("the connection was lost after COMMIT (" + lost + "); asking " + dest + " for the outcome of migration " +
        wire::migration_id_hex(*mid_));
    ResolveOptions ro = opt_.resolve;
    ro.suite = opt_.suite; // the query connection is keyed like the migration's
    Resolution r = resolve_outcome(*mid_, opt_.psk, ro, say);
    if (r.kind == Resolution::committed) {
        res_.resolved = "committed";
        wire::Done d;
        d.verify_digest = r.verify_digest;
        return d;
    }
    if (r.kind == Resolution::not_committed) {
        committing_ = false; // its copy is destroyed and can never start: resuming here is safe
        throw Error("the connection was lost after COMMIT (" + lost + "); asked again, the destination " + dest +
                    " confirmed the domain never ran there (" + r.detail + ")");
    }
    char took[64];
    std::snprintf(took, sizeof took, "%u attempt%s in %.1f s", r.attempts, r.attempts == 1 ? "" : "s", r.seconds);
    throw InDoubtError(dom_.name(), Phase::commit,
                       "COMMIT was sent but the destination's DONE never came (" + lost +
                           "), and asking " + dest + " for the outcome of migration " +
                           wire::migration_id_hex(*mid_) + " failed (" + took + ": " + r.detail + ")");
}

} // namespace fastmig::sending
