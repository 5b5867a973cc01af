// Encrypted records (docs/stream-format.md, Encryption): AES-256-GCM or
// ChaCha20-Poly1305 from nettle, keyed per direction of a connection, with
// the record's sequence number as nonce.
#include "stream/auth.hpp"

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
    for (int i = 0; i < 8; ++i)
        nonce[i] = static_cast<std::uint8_t>(seq_ >> (8 * i));
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
    // Gather and encrypt in slices of ~64 KiB, so that each slice is still
    // in cache when it is encrypted: one pass over the pages, not two.
    constexpr std::size_t kSlice = 64 * 1024;
    std::uint8_t* b = buf_.data();
    std::size_t copied = 0, sealed = wire::kRecordHeaderSize;
    bool begun = false;
    auto crypt_upto = [&](std::size_t end) {
        if (!begun) {
            std::memset(b + 8, 0, 4); // crc: travels as 0 (see RecordVerifier::replaces_crc)
            aead_.begin({b, wire::kRecordHeaderSize});
            begun = true;
        }
        if (end > sealed) {
            aead_.encrypt({b + sealed, end - sealed});
            sealed = end;
        }
    };
    for (const iovec& v : record) {
        std::memcpy(b + copied, v.iov_base, v.iov_len);
        copied += v.iov_len;
        if (copied >= wire::kRecordHeaderSize && copied - sealed >= kSlice)
            crypt_upto(sealed + (copied - sealed) / kAeadChunk * kAeadChunk);
    }
    crypt_upto(bytes);
    const auto t = aead_.tag();
    std::memcpy(b + bytes, t.data(), t.size());
    out.push_back({b, bytes + kTagSize});
    return bytes + kTagSize;
}

} // namespace fastmig::auth
