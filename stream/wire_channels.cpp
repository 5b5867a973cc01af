// CHANNELS and CHANNEL_HELLO bodies (see docs/stream-format.md, Channels).
#include "stream/wire.hpp"
#include "stream/bytes.hpp"

namespace fastmig::wire {

namespace {

// Both bodies are {u32, u32 reserved, u64}.
std::vector<std::uint8_t> body16(std::uint32_t a, std::uint64_t b)
{
    std::vector<std::uint8_t> v(16, 0);
    bytes::store_le(v.data(), a);
    bytes::store_le(v.data() + 8, b);
    return v;
}

void split16(const char* what, std::span<const std::uint8_t> body, std::uint32_t& a, std::uint64_t& b)
{
    if (body.size() != 16)
        throw StreamError(std::string(what) + ": body is " + std::to_string(body.size()) + " bytes, must be 16");
    a = bytes::load_le<std::uint32_t>(body.data());
    b = bytes::load_le<std::uint64_t>(body.data() + 8);
    if (bytes::load_le<std::uint32_t>(body.data() + 4) != 0)
        throw StreamError(std::string(what) + ": reserved field is not 0");
}

} // namespace

std::vector<std::uint8_t> encode_channels(const Channels& c)
{
    return encode_record(RecordType::channels, body16(c.count, c.session));
}

std::vector<std::uint8_t> encode_channel_hello(const ChannelHello& h)
{
    return encode_record(RecordType::channel_hello, body16(h.index, h.session));
}

Channels parse_channels(std::span<const std::uint8_t> body)
{
    Channels c;
    split16("channels", body, c.count, c.session);
    if (c.count < 1 || c.count > kMaxChannels)
        throw StreamError("channels: count " + std::to_string(c.count) + " is not 1.." + std::to_string(kMaxChannels));
    return c;
}

ChannelHello parse_channel_hello(std::span<const std::uint8_t> body)
{
    ChannelHello h;
    split16("channel_hello", body, h.index, h.session);
    if (h.index < 1 || h.index >= kMaxChannels)
        throw StreamError("channel_hello: index " + std::to_string(h.index) + " is not 1.." +
                          std::to_string(kMaxChannels - 1));
    return h;
}

} // namespace fastmig::wire
