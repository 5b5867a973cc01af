// One migration between a FakeDomain and a FakeProvider over socket pairs,
// the sender and the receiver each in its own thread: what the engine and
// authentication tests share.
#pragma once

#include "fake_domain.hpp"
#include "stream/receiver.hpp"
#include "stream/sender.hpp"

#include <future>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

namespace fastmig::test {

struct Outcome {
    std::optional<SendResult> sent;
    std::string send_error;
    std::optional<ReceiveResult> received;
    std::string receive_error;
};

// With channels > 1, the extra connections are socket pairs too, handed to
// both sides through connect_channel / accept_channel; with 1, the options'
// own channel settings are left as the caller made them.
inline Outcome migrate_over_pairs(FakeDomain& src, FakeProvider& prov, SendOptions so, ReceiveOptions ro,
                                  unsigned channels = 1)
{
    std::vector<Pair> pairs(channels);
    std::size_t next_send = 1, next_recv = 1;
    if (channels > 1) {
        so.channels = channels;
        so.connect_channel = [&] { return ::dup(pairs.at(next_send++).a.get()); };
        ro.accept_channel = [&](std::chrono::milliseconds) { return ::dup(pairs.at(next_recv++).b.get()); };
    }
    Outcome out;
    auto rx = std::async(std::launch::async, [&] {
        try {
            out.received = receive_domain(pairs[0].b.get(), prov, ro);
        } catch (const std::exception& e) {
            out.receive_error = e.what();
        }
        pairs[0].b.reset();
    });
    try {
        out.sent = send_domain(src, pairs[0].a.get(), so);
    } catch (const std::exception& e) {
        out.send_error = e.what();
    }
    pairs[0].a.reset();
    rx.get();
    return out;
}

} // namespace fastmig::test
