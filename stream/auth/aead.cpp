// Encrypted records (docs/stream-format.md, Encryption): AES-256-GCM or
// ChaCha20-Poly1305 from nettle, keyed per direction of a connection, with
// the record's sequence number as nonce.
#include "stream/auth/auth.hpp"
#include "stream/bytes.hpp"

#include <algorithm>
#include <cstring>

#include <nettle/chacha-poly1305.h>
#include <nettle/gcm.h>
#include <nettle/memops.h>

namespace fastmig::auth {

static_assert(kAeadChunk % GCM_BLOCK_SIZE == 0 && kAeadChunk % CHACHA_POLY1305_BLOCK_SIZE == 0);
static_assert(GCM_DIGEST_SIZE == kTagSize && CHACHA_POLY1305_DIGEST_SIZE == kTagSize);
static_assert(GCM_IV_SIZE == CHACHA_POLY1305_NONCE_SIZE);
static_assert(AES256_KEY_SIZE == kAeadKeySize && CHACHA_POLY1305_KEY_SIZE == kAeadKeySize);

struct RecordAead::Impl {
    gcm_aes256_ctx gcm;
    chacha_poly1305_ctx chacha;
};

RecordAead::RecordAead(Suite suite, std::span<const std::uint8_t> key) : impl_(std::make_unique<Impl>()), suite_(suite)
{
    if (key.size() != kAeadKeySize)
        throw Error("record key must be " + std::to_string(kAeadKeySize) + " bytes");
    switch (suite) {
    case Suite::aes256_gcm: gcm_aes256_set_key(&impl_->gcm, key.data()); break;
    case Suite::chacha20_poly1305: chacha_poly1305_set_key(&impl_->chacha, key.data()); break;
    default: throw Error(std::string("suite ") + suite_name(suite) + " does not encrypt");
    }
}

RecordAead::~RecordAead()
{
    // The expanded keys are as secret as the key.
    std::memset(impl_.get(), 0, sizeof *impl_);
}

void RecordAead::begin(std::span<const std::uint8_t> header)
{
    std::uint8_t nonce[GCM_IV_SIZE] = {};
    bytes::store_le<std::uint64_t>(nonce, seq_);
    if (suite_ == Suite::aes256_gcm) {
        gcm_aes256_set_iv(&impl_->gcm, sizeof nonce, nonce);
        gcm_aes256_update(&impl_->gcm, header.size(), header.data());
    } else {
        chacha_poly1305_set_nonce(&impl_->chacha, nonce);
        chacha_poly1305_update(&impl_->chacha, header.size(), header.data());
    }
}

void RecordAead::encrypt(std::span<std::uint8_t> data)
{
    if (suite_ == Suite::aes256_gcm)
        gcm_aes256_encrypt(&impl_->gcm, data.size(), data.data(), data.data());
    else
        chacha_poly1305_encrypt(&impl_->chacha, data.size(), data.data(), data.data());
}

void RecordAead::encrypt(std::uint8_t* dst, const std::uint8_t* src, std::size_t n)
{
    if (suite_ == Suite::aes256_gcm)
        gcm_aes256_encrypt(&impl_->gcm, n, dst, src);
    else
        chacha_poly1305_encrypt(&impl_->chacha, n, dst, src);
}

void RecordAead::decrypt(std::span<std::uint8_t> data)
{
    if (suite_ == Suite::aes256_gcm)
        gcm_aes256_decrypt(&impl_->gcm, data.size(), data.data(), data.data());
    else
        chacha_poly1305_decrypt(&impl_->chacha, data.size(), data.data(), data.data());
}

std::array<std::uint8_t, kTagSize> RecordAead::tag()
{
    std::array<std::uint8_t, kTagSize> t;
    if (suite_ == Suite::aes256_gcm)
        gcm_aes256_digest(&impl_->gcm, t.size(), t.data());
    else
        chacha_poly1305_digest(&impl_->chacha, t.size(), t.data());
    ++seq_;
    return t;
}

void RecordOpener::verify(const char* what, std::span<const std::uint8_t> header, std::span<std::uint8_t> rest,
                          std::span<const std::uint8_t> tag)
{
    const std::uint64_t seq = aead_.seq();
    aead_.begin(header);
    aead_.decrypt(rest);
    const auto want = aead_.tag();
    if (tag.size() != want.size() || !memeql_sec(tag.data(), want.data(), want.size())) {
        // What was decrypted is garbage: nobody may read it.
        std::fill(rest.begin(), rest.end(), 0);
        throw AuthError(std::string(what) + ": authentication failed: the tag of encrypted record " +
                        std::to_string(seq) +
                        " does not verify (record altered, replayed, reordered or dropped on the way)");
    }
}

std::size_t AeadSealer::seal(std::span<const iovec> record, std::vector<iovec>& out)
{
    std::size_t bytes = 0;
    for (const iovec& v : record)
        bytes += v.iov_len;
    if (bytes < wire::kRecordHeaderSize)
        throw Error("a record to seal is shorter than its header");
    if (buf_.size() < bytes + kTagSize)
        buf_.resize(bytes + kTagSize);
    std::uint8_t* b = buf_.data();

    // The header first: copied, crc zeroed (see RecordVerifier::replaces_crc), authenticated.
    std::size_t copied = 0, k = 0, skip = 0;
    while (copied < wire::kRecordHeaderSize) {
        const std::size_t n = std::min(record[k].iov_len - skip, wire::kRecordHeaderSize - copied);
        std::memcpy(b + copied, static_cast<const std::uint8_t*>(record[k].iov_base) + skip, n);
        copied += n;
        skip += n;
        if (skip == record[k].iov_len)
            ++k, skip = 0;
    }
    std::memset(b + 8, 0, 4);
    aead_.begin({b, wire::kRecordHeaderSize});

    // The body: encrypted straight from where it lies (the guest's pages)
    // into the buffer, one pass.  nettle wants every piece but the last in
    // whole chunks, so a piece's tail waits in the buffer, completed by the
    // next piece's head and encrypted in place.
    std::size_t sealed = copied; // b[sealed, copied) is copied, not yet encrypted (< kAeadChunk)
    for (; k < record.size(); ++k, skip = 0) {
        const std::uint8_t* src = static_cast<const std::uint8_t*>(record[k].iov_base) + skip;
        std::size_t n = record[k].iov_len - skip;
        if (copied > sealed) {
            const std::size_t take = std::min(n, kAeadChunk - (copied - sealed));
            std::memcpy(b + copied, src, take);
            copied += take, src += take, n -= take;
            if (copied - sealed == kAeadChunk) {
                aead_.encrypt({b + sealed, kAeadChunk});
                sealed = copied;
            }
        }
        if (copied == sealed && n >= kAeadChunk) {
            const std::size_t whole = n / kAeadChunk * kAeadChunk;
            aead_.encrypt(b + copied, src, whole);
            copied += whole, src += whole, n -= whole;
            sealed = copied;
        }
        std::memcpy(b + copied, src, n);
        copied += n;
    }
    aead_.encrypt({b + sealed, copied - sealed});
    const auto t = aead_.tag();
    std::memcpy(b + bytes, t.data(), t.size());
    out.push_back({b, bytes + kTagSize});
    return bytes + kTagSize;
}

} // namespace fastmig::auth
