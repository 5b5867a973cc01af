// Xen's own libxl-save-helper beside fastmig's, for pools where some hosts
// run fastmig and some do not yet (README.md, "Rolling upgrade"): a libxc
// stream arriving here, or a save towards a stock host, is handed whole to
// the stock helper, which libxl cannot tell from a helper it ran itself
// (same command line, same descriptors, same pipes).
#pragma once

#include "libxl-plugin/helper_args.hpp"

#include <optional>
#include <string>
#include <vector>

namespace fastmig::helper {

// Xen's own helper, first found of:
//   FASTMIG_STOCK_HELPER (must exist when set);
//   <argv0>.distrib: libxl runs its stock path, which the dpkg diversion
//     of xl-helper-divert.sh (make install-xl-helper, the Debian package)
//     renamed to .distrib;
//   <XEN_LIBEXEC>/libxl-save-helper.distrib (the path configured at build);
//   <XEN_LIBEXEC>/libxl-save-helper, unless it is this program (with
//     LIBXL_SAVE_HELPER pointing libxl at fastmig nothing is diverted).
// Throws fastmig::Error naming every path tried and the fix.
std::string find_stock_helper(const std::string& argv0);

// Runs first, before any fork or thread: if the stock helper must do this
// job (restore: io_fd holds a libxc stream; save: the destination takes
// stock streams, peers.hpp), execs it with `argv` (argv[0] replaced) and
// does not return.  Returns nullopt when fastmig's helper goes on (after
// logging which path was taken), or the exit status after a failure was
// reported to libxl (log, restore_results, complete retval -1).
std::optional<int> hand_over_to_stock(const HelperArgs& parsed, const std::vector<std::string>& argv);

} // namespace fastmig::helper
