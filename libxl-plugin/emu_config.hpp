// fastmig-emu-manager's configuration.  forkexecd starts emu-manager with an
// environment of xenopsd's choosing, so a host sets it in a file:
// FASTMIG_EMU_MANAGER_CONF, default /etc/fastmig/emu-manager.conf, lines
// `key = value` ('#' starts a comment).  Each key stands for an environment
// variable, and a variable already set wins over the file (tests set them):
//
//   stock-emu-manager   FASTMIG_STOCK_EMU_MANAGER  the stock emu-manager
//                       (default /usr/lib64/xen/bin/emu-manager)
//   backend             FASTMIG_HELPER_BACKEND     xen (default) or sim
//   options             FASTMIG_HELPER_OPTIONS     fastmig send options
//   done-timeout-ms     FASTMIG_EMU_DONE_TIMEOUT_MS  wait for each `done` (120000)
//   progress-interval-ms  FASTMIG_EMU_PROGRESS_MS  restore: at most one progress
//                       line per interval (500, xenguest's; 0: every change)
//
// A missing file is no error; an unknown key or a malformed line is.
#pragma once

#include <chrono>
#include <string>

namespace fastmig::emu {

constexpr const char* kDefaultConf = "/etc/fastmig/emu-manager.conf";
constexpr const char* kDefaultStock = "/usr/lib64/xen/bin/emu-manager";

// Reads the file and sets the variables it names that are not set yet.
// Throws Error naming the file and line.
void load_config();

std::string stock_emu_manager();
std::chrono::milliseconds done_timeout();
std::chrono::milliseconds progress_interval();

} // namespace fastmig::emu
