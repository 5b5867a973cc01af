// The command line libxl 4.17 gives its save helper (libxl_save_callout.c,
// run_helper): a mode, the stream fd, the back-channel fd, then numbers.
// Parsed strictly: a wrong argument is a usage error, never a guess.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace fastmig::helper {

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// --save-domain <io_fd> <recv_fd> <domid> <xcflags> <cbflags> <stream_type>
struct SaveArgs {
    int io_fd = -1;
    int recv_fd = -1;           // only meaningful for COLO: see README.md
    std::uint32_t domid = 0;
    std::uint32_t xcflags = 0;  // XCFLAGS_LIVE = 1, XCFLAGS_DEBUG = 2
    unsigned cbflags = 0;       // OR of 1 << message number of each callback libxl provides
    unsigned stream_type = 0;   // 0 plain, 1 Remus, 2 COLO
};

// --restore-domain <io_fd> <send_back_fd> <domid> <store_evtchn> <store_domid>
//                  <console_evtchn> <console_domid> <cbflags> <stream_type>
struct RestoreArgs {
    int io_fd = -1;
    int send_back_fd = -1;
    std::uint32_t domid = 0;
    std::uint32_t store_evtchn = 0;
    std::uint32_t store_domid = 0;
    std::uint32_t console_evtchn = 0;
    std::uint32_t console_domid = 0;
    unsigned cbflags = 0;
    unsigned stream_type = 0;
};

constexpr std::uint32_t kXcflagsLive = 1u << 0;
constexpr std::uint32_t kXcflagsDebug = 1u << 1;
constexpr unsigned kStreamPlain = 0, kStreamRemus = 1, kStreamColo = 2;

using HelperArgs = std::variant<SaveArgs, RestoreArgs>;

// argv without the program name.  Throws UsageError naming the bad argument.
HelperArgs parse_helper_args(const std::vector<std::string>& args);

extern const char* const kHelperUsage;

} // namespace fastmig::helper
