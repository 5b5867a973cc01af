// Record tags: UMAC-128 (nettle) keyed per direction of a connection, with
// the record's sequence number as nonce (docs/stream-format.md, Record
// tags): the verifier and the sealer that plug into wire::RecordReader and
// wire::RecordWriter.
#include "stream/auth/auth.hpp"
#include "stream/bytes.hpp"

#include <nettle/memops.h>
#include <nettle/umac.h>

namespace fastmig::auth {

struct RecordMac::Impl {
    umac128_ctx ctx;
};

RecordMac::RecordMac(std::span<const std::uint8_t> key) : impl_(std::make_unique<Impl>())
{
    if (key.size() != kRecordKeySize)
        throw Error("record key must be " + std::to_string(kRecordKeySize) + " bytes");
    umac128_set_key(&impl_->ctx, key.data());
}

RecordMac::~RecordMac() = default;

std::array<std::uint8_t, kTagSize> RecordMac::next_tag(std::span<const iovec> record)
{
    std::uint8_t nonce[8];
    bytes::store_le<std::uint64_t>(nonce, seq_);
    umac128_set_nonce(&impl_->ctx, sizeof nonce, nonce);
    for (const iovec& v : record)
        umac128_update(&impl_->ctx, v.iov_len, static_cast<const std::uint8_t*>(v.iov_base));
    std::array<std::uint8_t, kTagSize> tag;
    umac128_digest(&impl_->ctx, tag.size(), tag.data());
    ++seq_;
    return tag;
}

void RecordTagVerifier::verify(const char* what, std::span<const std::uint8_t> header, std::span<std::uint8_t> rest,
                               std::span<const std::uint8_t> tag)
{
    const std::uint64_t seq = mac_.seq();
    iovec v[2] = {{const_cast<std::uint8_t*>(header.data()), header.size()},
                  {const_cast<std::uint8_t*>(rest.data()), rest.size()}};
    auto want = mac_.next_tag(v);
    if (tag.size() != want.size() || !memeql_sec(tag.data(), want.data(), want.size()))
        throw AuthError(std::string(what) + ": authentication failed: the tag of record " + std::to_string(seq) +
                        " does not verify (record altered, replayed, reordered or dropped on the way)");
}

std::size_t MacSealer::seal(std::span<const iovec> record, std::vector<iovec>& out)
{
    std::size_t bytes = 0;
    for (const iovec& v : record)
        bytes += v.iov_len;
    out.insert(out.end(), record.begin(), record.end());
    tag_ = mac_->next_tag(record);
    out.push_back({tag_.data(), tag_.size()});
    return bytes + tag_.size();
}

} // namespace fastmig::auth
