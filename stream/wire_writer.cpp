// The write side of a connection's records (stream/wire_writer.hpp).
#include "stream/wire_writer.hpp"
#include "stream/transport.hpp"

namespace fastmig::wire {

void RecordWriter::set_sealer(std::unique_ptr<RecordSealer> s)
{
    std::lock_guard<std::mutex> l(lock_);
    sealer_ = std::move(s);
}

std::size_t RecordWriter::write(std::span<const iovec> record, std::span<const std::uint8_t> prefix)
{
    std::lock_guard<std::mutex> l(lock_);
    if (!sealer_ || record.empty()) {
        // Unkeyed, or the prefix alone: the iovecs go out as they are.
        std::size_t bytes = prefix.size();
        for (const iovec& v : record)
            bytes += v.iov_len;
        if (prefix.empty()) {
            if (bytes)
                write_all(fd_, record, timeout_);
        } else {
            iov_.clear();
            iov_.push_back({const_cast<std::uint8_t*>(prefix.data()), prefix.size()});
            iov_.insert(iov_.end(), record.begin(), record.end());
            write_all(fd_, iov_, timeout_);
        }
        bytes_written_ += bytes;
        return bytes;
    }
    // Prefix and sealed record in one sendmsg; the array is reused (under the lock).
    iov_.clear();
    if (!prefix.empty())
        iov_.push_back({const_cast<std::uint8_t*>(prefix.data()), prefix.size()});
    const std::size_t bytes = prefix.size() + sealer_->seal(record, iov_);
    write_all(fd_, iov_, timeout_);
    bytes_written_ += bytes;
    return bytes;
}

std::size_t RecordWriter::write(std::span<const std::uint8_t> record, std::span<const std::uint8_t> prefix)
{
    iovec v{const_cast<std::uint8_t*>(record.data()), record.size()};
    return write(record.empty() ? std::span<const iovec>() : std::span<const iovec>(&v, 1), prefix);
}

} // namespace fastmig::wire
