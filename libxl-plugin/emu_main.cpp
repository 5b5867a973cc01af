// fastmig-emu-manager: fastmig's drop-in for XenServer 8 / XCP-ng 8.3's
// emu-manager.  xenopsd runs it through forkexecd with the command line of
// emu_args.hpp, two control pipes (xenopsd_link.hpp) and the stream fd it
// shares; stdin, stdout and stderr are /dev/null there, so lines also go to
// syslog.  docs/emu-manager.md has the whole protocol.
//
// What fastmig does not handle goes to the stock emu-manager, exec'd with
// the same argv before this process has read or written anything it would
// need: PV guests and vGPU (from argv alone), and on restore a stock libxc
// body (its first bytes peeked, not read, after xenopsd's `restore:xenguest`,
// which is peeked too and left for the stock emu-manager to read).
//
// Exit status: 0 done, 1 bad arguments or setup, 2 the operation failed
// (after an `error:` line to xenopsd).  As with the libxl helper, the
// process xenopsd waits for supervises a worker (helper_supervisor.hpp) and
// exits once xenopsd has the result; the worker's teardown comes after.
#include "libxl-plugin/cancel_signals.hpp"
#include "libxl-plugin/emu.hpp"
#include "libxl-plugin/emu_config.hpp"
#include "libxl-plugin/fd_peek.hpp"
#include "libxl-plugin/helper_supervisor.hpp"

#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

namespace fastmig::emu {

void log_line(const std::string& line)
{
    ::syslog(LOG_INFO, "%s", line.c_str());
    std::fprintf(stderr, "fastmig-emu-manager[%d]: %s\n", int(::getpid()), line.c_str());
}

} // namespace fastmig::emu

namespace {

using namespace fastmig::emu;

// An error before the protocol started: say it on the control pipe if we
// can (xenopsd logs `error:` lines), then exit `code`.
[[noreturn]] void early_exit(const EmuArgs& a, int code, const std::string& why)
{
    log_line("domain " + std::to_string(a.domid) + ": setup: " + why);
    if (a.control_out >= 0) {
        std::string l = "error:fastmig domain " + std::to_string(a.domid) + ": setup: " + why;
        if (l.size() > 127)
            l = l.substr(0, 124) + "...";
        l += '\n';
        (void)!::write(a.control_out, l.data(), l.size());
    }
    std::exit(code);
}

// The stock emu-manager in our place, same argv (argv[0] its own path).
// In the worker too: the supervisor then waits for the stock emu-manager,
// which has this pid, and exits with its status (the release pipe is
// close-on-exec: the supervisor sees EOF and waits).
[[noreturn]] void exec_stock(const EmuArgs& a, char** argv, const std::string& why)
{
    const std::string path = stock_emu_manager();
    log_line("domain " + std::to_string(a.domid) + ": " + why + ": running the stock emu-manager " + path);
    std::vector<char*> args(argv, argv + 1);
    args[0] = const_cast<char*>(path.c_str());
    for (char** p = argv + 1; *p; ++p)
        args.push_back(*p);
    args.push_back(nullptr);
    fastmig::helper::restore_sigpipe(); // as xenopsd left it
    ::execv(path.c_str(), args.data());
    early_exit(a, kExitFailed,
               why + ", which fastmig hands to the stock emu-manager, but exec " + path + " failed: " +
                   std::strerror(errno) + " (set stock-emu-manager in " + kDefaultConf + ")");
}

// emu-manager's own rule: a stream it never seeks (socket, pipe, or a file
// opened read-only to restore or append-only to save).
std::string stream_fd_problem(const EmuArgs& a)
{
    struct stat st {};
    int fl = ::fcntl(a.fd, F_GETFL);
    if (fl < 0 || ::fstat(a.fd, &st) < 0)
        return "-fd " + std::to_string(a.fd) + " is not an open descriptor";
    if (S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode))
        return "";
    if (S_ISREG(st.st_mode) && (a.save() ? (fl & O_APPEND) != 0 : (fl & O_ACCMODE) == O_RDONLY))
        return "";
    return "-fd " + std::to_string(a.fd) + " must be a socket, a pipe, or a file opened " +
           (a.save() ? "O_APPEND" : "O_RDONLY");
}

bool is_line(std::span<const std::uint8_t> b)
{
    return std::find(b.begin(), b.end(), std::uint8_t('\n')) != b.end();
}

// Restore: who reads this body?  Waits (peeking) for xenopsd's first line;
// after `restore:xenguest` the body's first 8 bytes are there to look at.
std::string stock_reason_from_body(const EmuArgs& a, std::chrono::milliseconds wait)
{
    auto line = peek_fd(a.control_in, 128, wait, is_line);
    if (std::string(line.begin(), line.end()) != "restore:xenguest\n")
        return ""; // fastmig's restore reports whatever it is
    auto magic = peek_fd(a.fd, 8, wait, [](auto) { return false; });
    if (magic.size() == 8 && std::all_of(magic.begin(), magic.end(), [](std::uint8_t b) { return b == 0xff; }))
        return "a stock libxc stream (its image header starts with 8 bytes 0xff)";
    return "";
}

} // namespace

int main(int argc, char** argv)
{
    ::openlog("fastmig-emu-manager", LOG_PID, LOG_DAEMON);
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
        std::fputs(kEmuUsage, stdout);
        return 0;
    }
    EmuArgs a;
    try {
        a = parse_emu_args(args);
    } catch (const UsageError& e) {
        std::fprintf(stderr, "fastmig-emu-manager: %s\n%s", e.what(), kEmuUsage);
        ::syslog(LOG_ERR, "bad command line: %s", e.what());
        return kExitUsage;
    }
    if (!a.supports.empty()) {
        // The framed image (XenSavedDomv2) is xenopsd's; the body is ours.
        std::puts(a.supports == "migration-v2" ? "true" : "false");
        return kExitOk;
    }
    std::chrono::milliseconds wait{};
    try {
        load_config();
        wait = done_timeout();
        (void)progress_interval(); // a bad value is the configuration's error (exit 1), not the restore's
    } catch (const std::exception& e) {
        early_exit(a, kExitUsage, e.what());
    }
    if (auto why = stock_reason_from_args(a); !why.empty())
        exec_stock(a, argv, why);
    if (auto bad = stream_fd_problem(a); !bad.empty())
        early_exit(a, kExitUsage, bad);
    if (!a.save()) {
        try {
            if (auto why = stock_reason_from_body(a, wait); !why.empty())
                exec_stock(a, argv, why);
        } catch (const std::exception& e) {
            early_exit(a, kExitFailed, e.what());
        }
    }
    if (a.compress)
        log_line("domain " + std::to_string(a.domid) + ": -compress true: fastmig's stream compresses by itself");

    fastmig::helper::split_supervisor(); // from here on: the worker
    // forkexecd's kill of a cancelled task; like `abort`.
    fastmig::helper::install_cancelling_signals("SIGTERM (xenopsd cancelled the task)");
    try {
        fastmig::enable_io_cancellation();
        XenopsdLink xenopsd(a.control_out, a.control_in, wait);
        std::unique_ptr<fastmig::helper::HelperBackend> backend;
        try {
            log_line("record checksums (CRC-32C): " + fastmig::wire::crc32c_implementation());
            // xenopsd suspends the guest (`suspend:`): the Xen backend only
            // confirms, and subscribes no suspend event channel, which would
            // take VIRQ_DOM_EXC from xenopsd's own wait for the suspension.
            ::setenv("FASTMIG_HELPER_SUSPEND", "libxl", 1);
            backend = fastmig::helper::make_backend();
        } catch (const std::exception& e) {
            if (a.save()) // nothing written yet (a restore's body is fastmig's: only fastmig reads it)
                exec_stock(a, argv, std::string("no fastmig backend (") + e.what() + ")");
            std::string msg = "domain " + std::to_string(a.domid) + ": setup: " + e.what();
            log_line(msg);
            xenopsd.send_error("fastmig " + msg);
            return kExitFailed;
        }
        log_line("domain " + std::to_string(a.domid) + ": " + mode_name(*a.mode) + (a.live ? ", live" : "") +
                 "; worker pid " + std::to_string(::getpid()) +
                 (fastmig::helper::supervised() ? " (its teardown continues after xenopsd has the result)"
                                                : " (unsupervised: fork failed)"));
        auto to_stock = [&](const std::string& why) { exec_stock(a, argv, why); };
        return a.save() ? run_emu_save(a, xenopsd, *backend, to_stock) : run_emu_restore(a, xenopsd, *backend);
    } catch (const std::exception& e) {
        early_exit(a, kExitFailed, e.what());
    }
}
