// Looking at the next bytes of a descriptor without taking them, so that
// the stock emu-manager, exec'd afterwards in our place, reads them itself:
// MSG_PEEK on a socket, tee(2) on a pipe (into a scratch pipe), pread at the
// current offset on a file (the offset is read, never moved).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace fastmig::emu {

// Peeks up to `max` bytes, waiting at most `timeout` until `enough` says the
// bytes seen so far suffice (or `max` are there, or the writer is gone: then
// fewer).  Throws Error on a timeout, a descriptor that cannot be peeked
// (a character device) or an I/O error.
std::vector<std::uint8_t> peek_fd(int fd, std::size_t max, std::chrono::milliseconds timeout,
                                  const std::function<bool(std::span<const std::uint8_t>)>& enough);

} // namespace fastmig::emu
