// fastmig-emu-manager: the save and restore paths (emu_save.cpp,
// emu_restore.cpp), each returning the process's exit status (0 done, 2 the
// operation failed, after an `error:` line to xenopsd).  The engine, the
// backends and the one-way stream are the libxl-save-helper's (helper.hpp).
#pragma once

#include "libxl-plugin/emu_args.hpp"
#include "libxl-plugin/helper_backend.hpp"
#include "libxl-plugin/xenopsd_link.hpp"

#include <functional>
#include <string>

namespace fastmig::emu {

constexpr int kExitOk = 0, kExitUsage = 1, kExitFailed = 2;

// Runs the stock emu-manager in this process's place (never returns).
using ToStock = std::function<void(const std::string& why)>;

// Save: a domain the backend cannot open (a guest type it does not handle,
// say) goes to `to_stock` before a byte is written or a line exchanged.
// Both start xenopsd's reader themselves, once nothing can go to the stock
// path any more.
int run_emu_save(const EmuArgs& a, XenopsdLink& xenopsd, helper::HelperBackend& backend, const ToStock& to_stock);
int run_emu_restore(const EmuArgs& a, XenopsdLink& xenopsd, helper::HelperBackend& backend);

// One line to syslog (xenopsd sends the emu-manager's stderr to /dev/null)
// and to stderr (tests, a shell).
void log_line(const std::string& line);

} // namespace fastmig::emu
