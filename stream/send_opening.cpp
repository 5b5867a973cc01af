// The opening of a migration at the source: the key handshake or the magic
// on each connection, HEADER and the records that go before the
// destination's ACCEPT, then the other channels.
#include "stream/sender_internal.hpp"

#include "stream/auth/auth.hpp"

#include <random>

namespace fastmig::sending {

void Sender::authenticate(unsigned c)
{
    phase_ = Phase::authenticate;
    auto& rc = *replies_[c];
    const std::uint64_t before = writers_[c]->bytes_written();
    try {
        auth::authenticate_to_destination(opt_.psk, *writers_[c], rc.src, rc.reader, opt_.suite);
    } catch (const Error& e) {
        throw Error(dom_.name(), Phase::authenticate,
                    (c ? "channel " + std::to_string(c) + ": " : std::string()) + e.cause());
    }
    control_bytes_ += writers_[c]->bytes_written() - before;
}

std::span<const std::uint8_t> Sender::open_connection(unsigned c)
{
    if (opt_.psk.empty())
        return {wire::kSourceMagic.data(), wire::kSourceMagic.size()};
    authenticate(c);
    return {};
}

void Sender::read_reply_magic(unsigned c)
{
    if (replies_[c]->reader.authenticated())
        return; // read during the handshake
    try {
        wire::read_magic(replies_[c]->src, wire::kReplyMagic);
    } catch (const StreamError& e) {
        throw Error("the peer is not a fastmig receiver (" + e.cause() + ")");
    }
}

// The header and the records that must reach the destination before its
// ACCEPT: channel count and session, the migration id.
void Sender::send_opening(std::span<const std::uint8_t> prefix)
{
    wire::StreamHeader h;
    h.nr_pages = dom_.nr_pages();
    h.features = features();
    h.domain_kind = dom_.kind();
    h.domain_name = dom_.name();
    control_bytes_ += writers_[0]->write(wire::encode_header(h), prefix);
    session_ = std::random_device{}() | (std::uint64_t(std::random_device{}()) << 32);
    if (opt_.channels > 1)
        send_control(wire::encode_channels({opt_.channels, session_}));
    if (h.features & wire::kFeatureOutcome) {
        mid_.emplace();
        auth::random_bytes(*mid_);
        send_control(wire::encode_migration_id(*mid_));
    }
}

void Sender::check_accept(const wire::Accept& a)
{
    if (a.status == wire::kAcceptAuth)
        throw Error(dom_.name(), Phase::authenticate, "the destination refused: " + a.message);
    if (a.status != wire::kAcceptOk)
        throw Error("the destination refused the domain: " + a.message);
}

// After a failed send of the opening: throws what the destination answered
// if it refused (or names a peer that is not fastmig); returns when nothing
// readable came back, and the failed send is all there is to say.
void Sender::explain_failed_opening()
{
    if (opt_.one_way)
        return;
    if (!replies_[0]->reader.authenticated()) {
        try {
            wire::read_magic(replies_[0]->src, wire::kReplyMagic);
        } catch (const StreamError& e) {
            throw Error("the peer is not a fastmig receiver (" + e.cause() + ")");
        } catch (const Error&) {
            return;
        }
    }
    wire::Accept a;
    try {
        a = wire::parse_accept(next_reply(0, wire::RecordType::accept).body);
    } catch (const Error&) {
        return;
    }
    check_accept(a);
}

void Sender::negotiate()
{
    auto prefix = open_connection(0);
    phase_ = Phase::negotiate;
    try {
        send_opening(prefix);
    } catch (const Error&) {
        // A destination that refuses answers ACCEPT and hangs up, possibly
        // before this side has written its whole opening: the send then
        // fails (EPIPE, ECONNRESET), and the answer says more than that.
        explain_failed_opening();
        throw;
    }
    if (opt_.one_way)
        return; // nobody answers: the destination checks the header on its own

    read_reply_magic(0);
    check_accept(wire::parse_accept(next_reply(0, wire::RecordType::accept).body));

    // The destination took the domain: open the other channels.
    for (std::uint32_t c = 1; c < opt_.channels; ++c) {
        owned_.emplace_back(opt_.connect_channel());
        int fd = owned_.back().get();
        fds_.push_back(fd);
        replies_.push_back(std::make_unique<ReplyChannel>(fd, opt_.io_timeout));
        writers_.push_back(std::make_unique<wire::RecordWriter>(fd, opt_.io_timeout));
        auto hello_prefix = open_connection(c);
        phase_ = Phase::negotiate;
        control_bytes_ += writers_[c]->write(wire::encode_channel_hello({c, session_}), hello_prefix);
        read_reply_magic(c);
    }
}

} // namespace fastmig::sending
