// QEMU's own dirty logging for a live save of an HVM guest with an upstream
// QEMU (`-dm qemu`): the stock emu-manager switches it on over QMP before
// the live phase (`xen-set-global-dirty-log {"enable": true}`), so that
// pages QEMU writes (DMA of emulated devices) reach Xen's dirty log too.
// xenopsd stops QEMU at `suspend:`; nobody switches it off (the source's
// QEMU goes away with the domain, or a failed migration's QEMU keeps
// logging, as with the stock emu-manager).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace fastmig::emu {

// QEMU's QMP socket for a domain as xenopsd starts it:
// /var/run/xen/qmp-libxl-DOMID (FASTMIG_QMP_DIR names another directory).
std::string qmp_socket_path(std::uint32_t domid);

// Connects, reads the greeting, negotiates (qmp_capabilities) and switches
// the dirty log on; events in between are skipped.  Throws Error naming
// the socket and QEMU's own error text, or the timeout.
void qmp_enable_dirty_log(const std::string& socket_path, std::chrono::milliseconds timeout);

} // namespace fastmig::emu
