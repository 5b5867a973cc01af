// Handing a migration stream to the program that speaks its format: look
// at its first bytes without consuming them, then, if they are not
// fastmig's, replace this process by the stock program with the same
// command line and descriptors, which then reads the stream from its first
// byte.  No libxl (or emu-manager) specifics here: the caller names the
// program and decides what to log; libxl's helper uses it in
// helper_stock.cpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace fastmig::interop {

enum class StreamFormat {
    fastmig, // kSourceMagic (docs/stream-format.md)
    libxc,   // xc_domain_save's image header: eight 0xFF, then "XENF"
    unknown, // anything else, or a stream that ended first: fastmig's
             // receiver reports it (bad magic, truncated)
};
const char* format_name(StreamFormat f);

// Bytes needed to tell the formats apart: the libxc marker and id.
constexpr std::size_t kPeekBytes = 12;

// The format `prefix` (the stream's first bytes) belongs to, or nullopt
// while it is a proper prefix of a known magic and more bytes are needed.
std::optional<StreamFormat> classify_prefix(std::span<const std::uint8_t> prefix);

struct Peek {
    StreamFormat format = StreamFormat::unknown;
    std::string method;         // how it looked: "pipe (tee)", "socket (MSG_PEEK)", "file (pread at 32)"
    std::size_t bytes_seen = 0; // 0..kPeekBytes
    bool eof = false;           // the stream ended before it was decided
};

// Looks at fd's next bytes from its current position and consumes none:
// tee(2) into a private pipe for a pipe, recv(MSG_PEEK) for a stream
// socket, pread(2) at the current offset for a regular file.  Returns once
// classify_prefix decides or the stream ends (short data at EOF is
// `unknown`, eof set); throws fastmig::Error when nothing decisive arrived
// within `limit`, on a read error, or for a descriptor of another kind
// (a terminal, a datagram socket), naming the descriptor and the cause.
Peek peek_stream_format(int fd, std::chrono::milliseconds limit);

// Replaces this process by `program`, run with `args` (args[0] included)
// and this process's descriptors and environment.  Returns only if it
// could not: the reason, naming the program ("... does not exist",
// "... is not executable").
std::string exec_program(const std::string& program, const std::vector<std::string>& args);

} // namespace fastmig::interop
