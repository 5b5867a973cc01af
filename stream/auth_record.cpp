// Record tags: UMAC-128 (nettle) keyed per direction of a connection, with
// the record's sequence number as nonce (docs/stream-format.md, Record tags).
#include "stream/auth.hpp"

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
    for (int i = 0; i < 8; ++i)
        nonce[i] = static_cast<std::uint8_t>(seq_ >> (8 * i));
    umac128_set_nonce(&impl_->ctx, sizeof nonce, nonce);
    for (const iovec& v : record)
        umac128_update(&impl_->ctx, v.iov_len, static_cast<const std::uint8_t*>(v.iov_base));
    std::array<std::uint8_t, kTagSize> tag;
    umac128_digest(&impl_->ctx, tag.size(), tag.data());
    ++seq_;
    return tag;
}

void RecordTagVerifier::verify(const char* what, std::span<const std::uint8_t> header,
                               std::span<const std::uint8_t> rest, std::span<const std::uint8_t> tag)
{
    const std::uint64_t seq = mac_.seq();
    iovec v[2] = {{const_cast<std::uint8_t*>(header.data()), header.size()},
                  {const_cast<std::uint8_t*>(rest.data()), rest.size()}};
    auto want = mac_.next_tag(v);
    if (tag.size() != want.size() || !memeql_sec(tag.data(), want.data(), want.size()))
        throw AuthError(std::string(what) + ": authentication failed: the tag of record " + std::to_string(seq) +
                        " does not verify (record altered, replayed, reordered or dropped on the way)");
}

void RecordWriter::set_mac(std::unique_ptr<RecordMac> m)
{
    std::lock_guard<std::mutex> l(lock_);
    mac_ = std::move(m);
}

std::size_t RecordWriter::write(std::span<const iovec> record, std::span<const std::uint8_t> prefix)
{
    std::size_t bytes = prefix.size();
    for (const iovec& v : record)
        bytes += v.iov_len;
    std::lock_guard<std::mutex> l(lock_);
    if (!mac_ && prefix.empty()) {
        // The unauthenticated path: the record's iovecs go out as they are.
        if (bytes)
            write_all(fd_, record, timeout_);
        bytes_written_ += bytes;
        return bytes;
    }
    // Prefix, record, tag in one sendmsg; the array is reused (under the lock).
    iov_.clear();
    if (!prefix.empty())
        iov_.push_back({const_cast<std::uint8_t*>(prefix.data()), prefix.size()});
    iov_.insert(iov_.end(), record.begin(), record.end());
    std::array<std::uint8_t, kTagSize> tag;
    if (mac_ && !record.empty()) {
        tag = mac_->next_tag(record);
        iov_.push_back({tag.data(), tag.size()});
        bytes += tag.size();
    }
    if (!iov_.empty())
        write_all(fd_, iov_, timeout_);
    bytes_written_ += bytes;
    return bytes;
}

std::size_t RecordWriter::write(std::span<const std::uint8_t> record, std::span<const std::uint8_t> prefix)
{
    iovec v{const_cast<std::uint8_t*>(record.data()), record.size()};
    return write(record.empty() ? std::span<const iovec>() : std::span<const iovec>(&v, 1), prefix);
}

} // namespace fastmig::auth
