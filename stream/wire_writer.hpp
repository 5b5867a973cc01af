// The write side of a connection's records (docs/stream-format.md, Record
// framing), beside wire::RecordReader: one record per call, in one
// sendmsg.  What a keyed connection adds to each record (a tag, or an
// encryption and a tag: docs, Authentication and Encryption) is a
// RecordSealer that stream/auth/ implements, so this header needs no
// crypto library and the engine's files that only write records need not
// know about keys.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include <sys/uio.h>

namespace fastmig::wire {

// What a keyed RecordWriter does to each record: appends to `out` the
// pieces that carry it on the wire, tag included (they may point into the
// sealer's own buffer, valid until the next call), returns their bytes.
// The reader's counterpart is wire::RecordVerifier.
class RecordSealer {
public:
    virtual ~RecordSealer() = default;
    virtual std::size_t seal(std::span<const iovec> record, std::vector<iovec>& out) = 0;
};

// One connection's write side: one record per call, as it is until the
// connection is keyed, then sealed in the same sendmsg.
// Thread safe: the sequence number and the order on the wire advance under
// one lock, so sealing happens on the thread that writes, which for page
// batches is the channel's own writer stage (channels seal in parallel).
class RecordWriter {
public:
    RecordWriter(int fd, std::chrono::milliseconds timeout) : fd_(fd), timeout_(timeout) {}
    int fd() const { return fd_; }
    // From the next record on, every record goes out through `s`.
    void set_sealer(std::unique_ptr<RecordSealer> s);
    bool authenticated() const { return sealer_ != nullptr; }
    // Writes `prefix` (a magic: never sealed), then the record (may be
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
    std::vector<iovec> iov_; // prefix + sealed record, reused
    std::unique_ptr<RecordSealer> sealer_;
};

} // namespace fastmig::wire
