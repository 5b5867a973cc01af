// `fastmig status`, XenServer / XCP-ng part: which emu-manager xenopsd runs
// for VM migrate, suspend and resume, and whether it is fastmig's.
#pragma once

#include <string>

namespace fastmig::cli {

// Every file is looked at under `root` (FASTMIG_STATUS_ROOT in tests).
void print_xenopsd_status(const std::string& root);

} // namespace fastmig::cli
