// The command line xenopsd gives emu-manager (ocaml/xenopsd/xc/emu_manager.ml
// `connect`, domain.ml `suspend_emu_manager` and `with_emu_manager_restore`),
// parsed as the stock emu-managers parse it: getopt_long_only, so `-fd 5`,
// `--fd 5`, `-fd=5` and an unambiguous prefix all work.  Unknown options are
// usage errors (exit 1); options fastmig has no use for (tracing, -fork,
// -mem_pnode, -compress) are accepted and kept only for the stock path.
#pragma once

#include "libxl-plugin/helper_args.hpp" // UsageError

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fastmig::emu {

using helper::UsageError;

enum class Mode { hvm_save, save, hvm_restore, restore };

struct EmuArgs {
    int control_out = -1; // lines to xenopsd
    int control_in = -1;  // lines from xenopsd
    int fd = -1;          // the image or migration stream, shared with xenopsd
    std::optional<Mode> mode;
    std::uint32_t domid = 0;
    bool live = false;
    std::string dm; // "", "qemu", "vgpu" or "vgpu:FD"
    std::optional<std::uint32_t> store_port, console_port;
    bool debug = false;
    bool compress = false; // xenopsd's migration-compressor=xenguest: fastmig compresses anyway
    std::string supports;  // `-supports FEATURE`: answer and exit, nothing else is needed

    bool save() const { return mode == Mode::hvm_save || mode == Mode::save; }
};

// argv without the program name.  Throws UsageError naming the bad option.
EmuArgs parse_emu_args(const std::vector<std::string>& args);

// Why this invocation goes to the stock emu-manager ("" when fastmig runs
// it): decided from argv alone, before anything is read or written.
std::string stock_reason_from_args(const EmuArgs& a);

const char* mode_name(Mode m);

extern const char* const kEmuUsage;

} // namespace fastmig::emu
