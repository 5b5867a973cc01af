#include "libxl-plugin/helper_args.hpp"

#include "config.h"

#include <limits>

namespace fastmig::helper {

const char* const kHelperUsage =
    "usage: libxl-save-helper --save-domain IO_FD RECV_FD DOMID XCFLAGS CBFLAGS STREAM_TYPE\n"
    "       libxl-save-helper --restore-domain IO_FD SEND_BACK_FD DOMID STORE_EVTCHN STORE_DOMID\n"
    "                         CONSOLE_EVTCHN CONSOLE_DOMID CBFLAGS STREAM_TYPE\n"
    "fastmig's drop-in for Xen " FASTMIG_XEN_VERSION "'s libxl-save-helper: libxl runs it (see LIBXL_SAVE_HELPER)\n"
    "and talks to it on stdin/stdout in libxl's binary protocol; not for interactive use.\n"
    "Environment: FASTMIG_HELPER_BACKEND=xen|sim, FASTMIG_HELPER_OPTIONS='--threads 4 ...',\n"
    "FASTMIG_HELPER_SIM_DOMAIN=sim:N, FASTMIG_HELPER_SUSPEND=channel|libxl,\n"
    "FASTMIG_HELPER_SETTLE_MS=10000 (the worker's wait for libxl before its teardown),\n"
    "FASTMIG_CRC32C=auto|instruction|table, FASTMIG_PEER=fastmig|stock, FASTMIG_PEERS=FILE,\n"
    "FASTMIG_STOCK_HELPER=PATH (see fastmig's README.md, \"Rolling upgrade\").\n";

namespace {

// libxl prints every number with %lu; anything else did not come from libxl.
std::uint64_t number(const std::string& s, const char* what, std::uint64_t max)
{
    if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos)
        throw UsageError(std::string(what) + ": '" + s + "' is not a decimal number");
    std::uint64_t v = 0;
    for (char c : s) {
        unsigned d = unsigned(c - '0');
        if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10)
            throw UsageError(std::string(what) + ": '" + s + "' is out of range");
        v = v * 10 + d;
    }
    if (v > max)
        throw UsageError(std::string(what) + ": " + s + " is above " + std::to_string(max));
    return v;
}

// A descriptor libxl passed (it clears close-on-exec on it); -1 means none,
// which libxl writes for an absent back channel.
int fd_arg(const std::string& s, const char* what, bool may_be_absent)
{
    if (s == "-1") {
        if (!may_be_absent)
            throw UsageError(std::string(what) + ": -1 (no descriptor) where one is required");
        return -1;
    }
    return int(number(s, what, std::numeric_limits<int>::max()));
}

// Xen domids stop below DOMID_FIRST_RESERVED (0x7ff0).
constexpr std::uint64_t kMaxDomid = 0x7fef;
constexpr std::uint64_t kMaxU32 = std::numeric_limits<std::uint32_t>::max();

} // namespace

HelperArgs parse_helper_args(const std::vector<std::string>& a)
{
    if (a.empty())
        throw UsageError("no mode given (--save-domain or --restore-domain)");
    const std::string& mode = a[0];
    auto need = [&](std::size_t n) {
        if (a.size() != n + 1)
            throw UsageError(mode + " takes " + std::to_string(n) + " arguments, got " + std::to_string(a.size() - 1));
    };
    if (mode == "--save-domain") {
        need(6);
        SaveArgs s;
        s.io_fd = fd_arg(a[1], "io_fd", false);
        s.recv_fd = fd_arg(a[2], "recv_fd", true);
        s.domid = std::uint32_t(number(a[3], "domid", kMaxDomid));
        s.xcflags = std::uint32_t(number(a[4], "xcflags", kMaxU32));
        s.cbflags = unsigned(number(a[5], "cbflags", kMaxU32));
        s.stream_type = unsigned(number(a[6], "stream_type", kStreamColo));
        return s;
    }
    if (mode == "--restore-domain") {
        need(9);
        RestoreArgs r;
        r.io_fd = fd_arg(a[1], "io_fd", false);
        r.send_back_fd = fd_arg(a[2], "send_back_fd", true);
        r.domid = std::uint32_t(number(a[3], "domid", kMaxDomid));
        r.store_evtchn = std::uint32_t(number(a[4], "store_evtchn", kMaxU32));
        r.store_domid = std::uint32_t(number(a[5], "store_domid", kMaxDomid));
        r.console_evtchn = std::uint32_t(number(a[6], "console_evtchn", kMaxU32));
        r.console_domid = std::uint32_t(number(a[7], "console_domid", kMaxDomid));
        r.cbflags = unsigned(number(a[8], "cbflags", kMaxU32));
        r.stream_type = unsigned(number(a[9], "stream_type", kStreamColo));
        return r;
    }
    throw UsageError("unknown mode '" + mode + "' (expected --save-domain or --restore-domain)");
}

} // namespace fastmig::helper
