// Pre-shared-key authentication and encryption of direct connections
// (docs/stream-format.md, Authentication and Encryption): the key file, the
// three-record handshake every connection starts with, and what protects
// every record afterwards: a UMAC-128 tag (suite 1), or an AEAD that
// encrypts the body and tags the record (suites 2 and 3).  Crypto
// primitives come from nettle (HMAC-SHA256, HKDF, UMAC-128, AES-256-GCM,
// ChaCha20-Poly1305, constant-time compare); nothing here implements one.
#pragma once

#include "stream/auth/suite.hpp"
#include "stream/transport.hpp"
#include "stream/wire.hpp"
#include "stream/wire_writer.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <sys/uio.h>

namespace fastmig::auth {

constexpr std::uint32_t kSuitePskV1 = 1; // HMAC-SHA256 proofs, HKDF-SHA256, UMAC-128 tags
constexpr std::size_t kNonceSize = 32;
constexpr std::size_t kProofSize = 32;
constexpr std::size_t kTagSize = 16;
constexpr std::size_t kRecordKeySize = 16; // UMAC-128 (suite 1)
constexpr std::size_t kAeadKeySize = 32;   // AES-256-GCM, ChaCha20-Poly1305 (suites 2, 3)
// Every piece given to RecordAead but the last is a multiple of this
// (nettle's rule: GCM's block is 16, ChaCha20-Poly1305's 64).
constexpr std::size_t kAeadChunk = 64;
constexpr std::size_t kMinKeySize = 16;
constexpr std::size_t kMaxKeySize = 64;

using Key = std::vector<std::uint8_t>;

// ---- the key --------------------------------------------------------------

// Hex text (whitespace ignored) to 16..64 key bytes; Error naming `what`.
Key parse_key_hex(const std::string& text, const std::string& what);
// Reads a key file.  Refuses (Error) anything but a regular file that only
// its owner may read or write, like ssh does with private keys.
Key load_key_file(const std::string& path);
// Fills `out` from the kernel's CSPRNG (getrandom).
void random_bytes(std::span<std::uint8_t> out);
// A new random key as one line of hex.
std::string make_key_hex(std::size_t bytes = 32);
// Creates `path` (mode 0600, never overwriting) holding a new key.
void write_new_key_file(const std::string& path);

// ---- record tags ----------------------------------------------------------

// UMAC-128 over one direction of one connection: the nonce of record n is n
// (8 bytes little endian), so a replayed, reordered or dropped record gets
// the wrong nonce and fails.  Key set-up is done once per direction.
class RecordMac {
public:
    explicit RecordMac(std::span<const std::uint8_t> key); // kRecordKeySize bytes
    ~RecordMac();
    RecordMac(const RecordMac&) = delete;
    RecordMac& operator=(const RecordMac&) = delete;
    // Tag of the next record, given as its pieces in wire order.
    std::array<std::uint8_t, kTagSize> next_tag(std::span<const iovec> record);
    std::uint64_t seq() const { return seq_; }

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::uint64_t seq_ = 0;
};

// The reader side: plugs into wire::RecordReader.
class RecordTagVerifier : public wire::RecordVerifier {
public:
    explicit RecordTagVerifier(std::span<const std::uint8_t> key) : mac_(key) {}
    std::size_t tag_size() const override { return kTagSize; }
    void verify(const char* what, std::span<const std::uint8_t> header, std::span<std::uint8_t> rest,
                std::span<const std::uint8_t> tag) override;

private:
    RecordMac mac_;
};

// An AEAD over one direction of one connection (suites 2 and 3): the nonce
// of record n is n (12 bytes little endian), so, as with RecordMac, a
// replayed, reordered or dropped record fails.  One record is begin(), then
// encrypt() or decrypt() over its body and padding in pieces (each but the
// last a multiple of kAeadChunk), then a tag.
class RecordAead {
public:
    RecordAead(Suite suite, std::span<const std::uint8_t> key); // kAeadKeySize bytes
    ~RecordAead();
    RecordAead(const RecordAead&) = delete;
    RecordAead& operator=(const RecordAead&) = delete;
    // Starts the next record; `header` (authenticated, not encrypted) is
    // the record header as transmitted.
    void begin(std::span<const std::uint8_t> header);
    void encrypt(std::span<std::uint8_t> data);
    void encrypt(std::uint8_t* dst, const std::uint8_t* src, std::size_t n); // dst and src do not overlap
    void decrypt(std::span<std::uint8_t> data);
    // Ends the record: its tag (kTagSize bytes).
    std::array<std::uint8_t, kTagSize> tag();
    std::uint64_t seq() const { return seq_; }
    Suite suite() const { return suite_; }

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    Suite suite_;
    std::uint64_t seq_ = 0;
};

// The reader side of an AEAD: decrypts in place, then checks the tag
// (the body is only returned once it has verified).
class RecordOpener : public wire::RecordVerifier {
public:
    RecordOpener(Suite suite, std::span<const std::uint8_t> key) : aead_(suite, key) {}
    std::size_t tag_size() const override { return kTagSize; }
    void verify(const char* what, std::span<const std::uint8_t> header, std::span<std::uint8_t> rest,
                std::span<const std::uint8_t> tag) override;
    bool replaces_crc() const override { return true; }

private:
    RecordAead aead_;
};

// Suite 1: the record as it is (page data where it lies), then its tag.
class MacSealer : public wire::RecordSealer {
public:
    explicit MacSealer(std::unique_ptr<RecordMac> mac) : mac_(std::move(mac)) {}
    std::size_t seal(std::span<const iovec> record, std::vector<iovec>& out) override;

private:
    std::unique_ptr<RecordMac> mac_;
    std::array<std::uint8_t, kTagSize> tag_{};
};

// Suites 2 and 3: the record is encrypted from where its pieces lie into
// the sealer's buffer (encryption cannot leave the pages untouched in the
// domain, so this is the one pass over them); header in clear with crc 0.
class AeadSealer : public wire::RecordSealer {
public:
    AeadSealer(Suite suite, std::span<const std::uint8_t> key) : aead_(suite, key) {}
    std::size_t seal(std::span<const iovec> record, std::vector<iovec>& out) override;

private:
    RecordAead aead_;
    std::vector<std::uint8_t> buf_;
};

// ---- handshake --------------------------------------------------------------

// Source side, on a new connection: writes the source magic and
// AUTH_HELLO offering `suite`, reads the reply magic and AUTH_CHALLENGE,
// checks the destination's proof, answers AUTH_PROOF, then keys `w` and
// `r` for `suite` (a MacSealer or an AeadSealer for `w`).  Throws AuthError (wrong key, refusal, a destination
// that wants another suite) with a one-line cause.
void authenticate_to_destination(const Key& psk, wire::RecordWriter& w, wire::ByteSource& src, wire::RecordReader& r,
                                 Suite suite);

// Destination side, after the source magic and an AUTH_HELLO (`hello`, its
// body) were read: refuses (AuthError) a suite other than `suite`, answers
// the reply magic and AUTH_CHALLENGE, reads AUTH_PROOF, checks it, then
// keys `w` and `r`.
void authenticate_source(const Key& psk, std::span<const std::uint8_t> hello, wire::RecordWriter& w, wire::RecordReader& r,
                         Suite suite);

} // namespace fastmig::auth
