#include "libxl-plugin/helper_stock.hpp"

#include "config.h"

#include "libxl-plugin/helper.hpp"
#include "libxl-plugin/peers.hpp"
#include "libxl-plugin/stock_fallback.hpp"

#include <climits>
#include <cstdlib>
#include <fstream>

#include <sys/stat.h>
#include <unistd.h>

namespace fastmig::helper {

namespace {

std::string real_path(const std::string& p)
{
    char buf[PATH_MAX];
    return ::realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}

bool is_file(const std::string& p)
{
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A candidate that resolves to this very program would exec it again,
// forever.
bool is_self(const std::string& p)
{
    std::string self = real_path("/proc/self/exe"), other = real_path(p);
    return !self.empty() && self == other;
}

// libxl's side of a failure found before fastmig's helper started: an error
// line, restore_results (libxl counts a restore without them as failed
// anyway, but waits for them), complete -1.
int report_failure(bool save, unsigned cbflags, const std::string& line)
{
    LibxlLink libxl(STDOUT_FILENO, STDIN_FILENO, cbflags, save);
    libxl.log(XtlLevel::error, line);
    try {
        if (!save)
            libxl.restore_results(0, 0);
        libxl.complete(-1, 0);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "libxl-save-helper (fastmig): %s; then: %s\n", line.c_str(), e.what());
        return 1;
    }
    return 0;
}

void log_line(bool save, unsigned cbflags, XtlLevel level, const std::string& line)
{
    LibxlLink(STDOUT_FILENO, STDIN_FILENO, cbflags, save).log(level, line);
}

// Never returns if the exec works.
int exec_stock(bool save, unsigned cbflags, const std::string& who, const std::string& why,
               const std::vector<std::string>& argv)
{
    std::string stock;
    try {
        stock = find_stock_helper(argv.empty() ? std::string() : argv[0]);
    } catch (const Error& e) {
        return report_failure(save, cbflags, "fastmig: " + who + ": " + why + ", but " + e.cause());
    }
    log_line(save, cbflags, XtlLevel::info,
             "fastmig: " + who + ": " + why + ": running the stock helper " + stock + " for this " +
                 (save ? "save" : "restore"));
    std::vector<std::string> args = argv;
    args[0] = stock;
    std::string failed = interop::exec_program(stock, args);
    return report_failure(save, cbflags, "fastmig: " + who + ": " + why + ", but " + failed);
}

std::optional<int> restore_hand_over(const RestoreArgs& a, const std::vector<std::string>& argv)
{
    const std::string who = domain_label(a.domid, "");
    SendOptions so; // --timeout-ms of FASTMIG_HELPER_OPTIONS bounds the wait too
    try {
        helper_send_options(so);
    } catch (const Error&) {
        // Reported by fastmig's restore if it comes to that; a libxc
        // stream does not need the options.
    }
    interop::Peek p;
    try {
        p = interop::peek_stream_format(a.io_fd, so.io_timeout);
    } catch (const Error& e) {
        return report_failure(false, a.cbflags,
                              "fastmig: restore failed: " + who + ": setup: looking at the stream: " + e.cause());
    }
    const std::string seen = "io_fd " + std::to_string(a.io_fd) + " holds a " + interop::format_name(p.format) +
                             " stream (looked at its first " + std::to_string(p.bytes_seen) + " bytes, " +
                             p.method + (p.eof ? ", then it ended" : "") + ")";
    if (p.format == interop::StreamFormat::libxc)
        return exec_stock(false, a.cbflags, who, seen, argv);
    log_line(false, a.cbflags, XtlLevel::detail, "fastmig: " + who + ": " + seen + ": fastmig's helper restores it");
    return std::nullopt;
}

// The command line of the process libxl runs in (xl), NUL-separated in /proc.
std::vector<std::string> parent_cmdline()
{
    std::ifstream in("/proc/" + std::to_string(::getppid()) + "/cmdline", std::ios::binary);
    std::vector<std::string> words;
    std::string w;
    while (words.size() < 256 && std::getline(in, w, '\0'))
        words.push_back(w);
    return words;
}

std::optional<int> save_hand_over(const SaveArgs& a, const std::vector<std::string>& argv)
{
    const std::string who = domain_label(a.domid, "");
    interop::PeerChoice choice;
    std::string dest;
    try {
        if (auto f = interop::peer_override()) {
            choice = {*f, std::string("FASTMIG_PEER=") + interop::peer_format_name(*f)};
        } else {
            auto host = interop::xl_migrate_destination(parent_cmdline());
            dest = host.value_or("");
            choice = interop::PeerTable::load(interop::peers_path()).choose(dest);
        }
    } catch (const Error& e) {
        // Before the guest is touched: it keeps running.
        return report_failure(true, a.cbflags,
                              "fastmig: save failed: " + who + ": setup: choosing the stream format: " + e.cause() +
                                  " (the guest was not touched)");
    }
    const std::string why = (dest.empty() ? "" : "destination " + dest + ": ") + choice.why;
    if (choice.format == interop::PeerFormat::stock)
        return exec_stock(true, a.cbflags, who, "the destination takes stock Xen streams (" + why + ")", argv);
    log_line(true, a.cbflags, XtlLevel::detail, "fastmig: " + who + ": writing fastmig's stream (" + why + ")");
    return std::nullopt;
}

} // namespace

std::string find_stock_helper(const std::string& argv0)
{
    if (const char* env = std::getenv("FASTMIG_STOCK_HELPER"); env && *env) {
        std::string p = env;
        if (!is_file(p))
            throw Error("FASTMIG_STOCK_HELPER=" + p + " does not name a file (it should be Xen's own "
                        "libxl-save-helper, e.g. " FASTMIG_XEN_LIBEXEC "/libxl-save-helper.distrib)");
        if (is_self(p))
            throw Error("FASTMIG_STOCK_HELPER=" + p + " is fastmig's helper itself, not Xen's");
        return p;
    }
    std::vector<std::string> tried;
    if (!argv0.empty() && argv0[0] == '/')
        tried.push_back(argv0 + ".distrib");
    const std::string libexec = FASTMIG_XEN_LIBEXEC;
    tried.push_back(libexec + "/libxl-save-helper.distrib");
    tried.push_back(libexec + "/libxl-save-helper");
    std::string list;
    for (const auto& p : tried) {
        if (is_file(p) && !is_self(p))
            return p;
        list += (list.empty() ? "" : ", ") + p;
    }
    throw Error("Xen's stock libxl-save-helper was not found (tried " + list +
                "): install Xen's tools (Debian: xen-utils-4.17 or xen-utils-4.20) and divert its helper with "
                "`make install-xl-helper` or the fastmig package, or set FASTMIG_STOCK_HELPER=/path/to/it");
}

std::optional<int> hand_over_to_stock(const HelperArgs& parsed, const std::vector<std::string>& argv)
{
    if (const auto* r = std::get_if<RestoreArgs>(&parsed))
        return restore_hand_over(*r, argv);
    return save_hand_over(std::get<SaveArgs>(parsed), argv);
}

} // namespace fastmig::helper
