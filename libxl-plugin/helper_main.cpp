// libxl-save-helper: fastmig's drop-in for Xen 4.17's helper of the same
// name.  libxl runs it with the command line of helper_args.hpp, its stdin
// and stdout as the message pipes (libxl_link.hpp), stderr inherited.
//
// Exit status: 0 once `complete` was delivered (its retval carries success
// or failure, as with the stock helper), 2 for a command line libxl would
// never produce (usage on stderr, nothing on stdout), 1 when libxl could not
// be told (its pipes are gone).  The process libxl started supervises a
// worker that does the job (helper_supervisor.hpp): it exits as soon as
// libxl has `complete`, and the worker's teardown runs after that.
#include "libxl-plugin/cancel_signals.hpp"
#include "libxl-plugin/helper.hpp"
#include "libxl-plugin/helper_stock.hpp"
#include "libxl-plugin/helper_supervisor.hpp"

#include "stream/transport.hpp"
#include "stream/wire.hpp"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

int main(int argc, char** argv)
{
    using namespace fastmig::helper;
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
        std::fputs(kHelperUsage, stdout);
        return 0;
    }
    HelperArgs parsed;
    try {
        parsed = parse_helper_args(args);
    } catch (const UsageError& e) {
        std::fprintf(stderr, "libxl-save-helper (fastmig): %s\n%s", e.what(), kHelperUsage);
        return 2;
    }
    // A stream or a destination for Xen's own helper: it does the whole job.
    if (auto rc = hand_over_to_stock(parsed, std::vector<std::string>(argv, argv + argc)))
        return *rc;
    split_supervisor(); // from here on: the worker
    // libxl's abort (helper_stop) sends SIGTERM.
    install_cancelling_signals("SIGTERM (libxl aborted the operation)");
    try {
        fastmig::enable_io_cancellation();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "libxl-save-helper (fastmig): %s\n", e.what());
        return 1;
    }

    const bool save = std::holds_alternative<SaveArgs>(parsed);
    const unsigned cbflags = save ? std::get<SaveArgs>(parsed).cbflags : std::get<RestoreArgs>(parsed).cbflags;
    const std::uint32_t domid = save ? std::get<SaveArgs>(parsed).domid : std::get<RestoreArgs>(parsed).domid;
    LibxlLink libxl(STDOUT_FILENO, STDIN_FILENO, cbflags, save);
    libxl.log(XtlLevel::debug, std::string("fastmig libxl-save-helper: starting ") + (save ? "save" : "restore") +
                                   " of domain " + std::to_string(domid) +
                                   (supervised() ? "; worker pid " + std::to_string(::getpid()) +
                                                       " (its teardown continues after libxl has complete)"
                                                 : std::string("; unsupervised (fork failed)")));
    libxl.set_on_complete(release_supervisor);

    int retval = -1;
    try {
        // Throws on a bad FASTMIG_CRC32C (reported below like any setup error).
        libxl.log(XtlLevel::detail, "record checksums (CRC-32C): " + fastmig::wire::crc32c_implementation());
        auto backend = make_backend();
        retval = save ? run_save(std::get<SaveArgs>(parsed), libxl, *backend)
                      : run_restore(std::get<RestoreArgs>(parsed), libxl, *backend);
    } catch (const std::exception& e) {
        libxl.log(XtlLevel::error, std::string("fastmig: ") + (save ? "save" : "restore") + " failed: domain " +
                                       std::to_string(domid) + ": setup: " + e.what());
        if (!save) {
            try {
                libxl.restore_results(0, 0);
            } catch (...) {
            }
        }
        retval = -1;
    }
    try {
        if (!libxl.completed()) // completed early at the hand-over (helper_save.cpp, helper_restore.cpp)
            libxl.complete(retval, 0);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "libxl-save-helper (fastmig): domain %u: complete: %s\n", domid, e.what());
        return 1;
    }
    return 0;
}
