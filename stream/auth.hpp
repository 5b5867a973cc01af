// Pre-shared-key authentication of direct connections (docs/stream-format.md,
// Authentication): the key file, the three-record handshake every
// connection starts with, and the UMAC-128 tag that follows every record
// afterwards.  Crypto primitives come from nettle (HMAC-SHA256, HKDF,
// UMAC-128, constant-time compare); nothing here implements a primitive.
#pragma once

#include "stream/transport.hpp"
#include "stream/wire.hpp"

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
constexpr std::size_t kRecordKeySize = 16;
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
    void verify(const char* what, std::span<const std::uint8_t> header, std::span<const std::uint8_t> rest,
                std::span<const std::uint8_t> tag) override;

private:
    RecordMac mac_;
};

// One connection's write side: one record per call, followed by its tag
// (in the same sendmsg) once the connection is keyed.  Thread safe: the
// sequence number and the order on the wire advance under one lock.  Page
// data is tagged where it lies; nothing is copied.
class RecordWriter {
public:
    RecordWriter(int fd, std::chrono::milliseconds timeout) : fd_(fd), timeout_(timeout) {}
    int fd() const { return fd_; }
    void set_mac(std::unique_ptr<RecordMac> m);
    bool authenticated() const { return mac_ != nullptr; }
    // Writes `prefix` (a magic: never tagged), then the record (may be
    // empty: then only the prefix).  Returns the bytes written.
    std::size_t write(std::span<const iovec> record, std::span<const std::uint8_t> prefix = {});
    std::size_t write(std::span<const std::uint8_t> record, std::span<const std::uint8_t> prefix = {});
    std::uint64_t bytes_written()
    {
        std::lock_guard<std::mutex> l(lock_);
        return bytes_written_;
    }

private:
    int fd_;
    std::chrono::milliseconds timeout_;
    std::mutex lock_;
    std::uint64_t bytes_written_ = 0;
    std::vector<iovec> iov_; // prefix + record + tag, reused
    std::unique_ptr<RecordMac> mac_;
};

// ---- handshake --------------------------------------------------------------

// Source side, on a new connection: writes the source magic and
// AUTH_HELLO, reads the reply magic and AUTH_CHALLENGE, checks the
// destination's proof, answers AUTH_PROOF, then keys `w` and `r`.  Throws
// AuthError (wrong key, refusal) with a one-line cause.
void authenticate_to_destination(const Key& psk, RecordWriter& w, wire::ByteSource& src, wire::RecordReader& r);

// Destination side, after the source magic and an AUTH_HELLO (`hello`, its
// body) were read: answers the reply magic and AUTH_CHALLENGE, reads
// AUTH_PROOF, checks it, then keys `w` and `r`.  Throws AuthError.
void authenticate_source(const Key& psk, std::span<const std::uint8_t> hello, RecordWriter& w,
                         wire::RecordReader& r);

} // namespace fastmig::auth
