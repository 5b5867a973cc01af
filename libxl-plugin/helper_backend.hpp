// Which domains the libxl-save-helper drives, behind the engine's Domain
// interface: real Xen domains (`xen`, the default: libxl's domid is a Xen
// domain) or simulated ones (`sim`, FASTMIG_HELPER_BACKEND=sim) so that the
// whole libxl protocol is tested on a host without Xen.
#pragma once

#include "stream/domain.hpp"
#include "stream/domain/xen/guest_hints.hpp"
#include "stream/domain/xen/restore_platform.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fastmig::helper {

// What libxl's --restore-domain says about the domain it created.
struct RestoreParams {
    std::uint32_t domid = 0;
    std::uint32_t store_evtchn = 0, store_domid = 0;
    std::uint32_t console_evtchn = 0, console_domid = 0;
};

// Frames libxl needs after a restore to connect xenstore and the console.
struct RestoreResults {
    std::uint64_t store_gfn = 0;
    std::uint64_t console_gfn = 0;
};

class HelperBackend {
public:
    virtual ~HelperBackend() = default;
    virtual std::string name() const = 0;

    // Where the backend's own progress lines go (libxl's log, set by the
    // helper before open_source/provider); unset: the backend's default.
    using LogFn = std::function<void(const std::string&)>;
    void set_log(LogFn log) { log_ = std::move(log); }
    // Free-page hints from the source guest's agent (the Xen backend asks
    // it; the sim has its own hints): FASTMIG_HELPER_OPTIONS
    // --no-agent-hints / --agent-timeout-ms.  Before open_source.
    void set_guest_hints(xen::GuestHintOptions h) { hints_ = h; }

    // The running domain libxl asked to save.
    virtual std::unique_ptr<Domain> open_source(std::uint32_t domid) = 0;
    // True: the source domain's suspend() asks the guest and learns of its
    // suspension itself (the Xen backend's event channel), and libxl's
    // suspend callback is not used.  False: the helper sends that callback
    // first (libxl asks the guest, saves an HVM guest's device model, and
    // waits through @releaseDomain).
    virtual bool suspends_itself(const Domain&) const { return false; }
    // HVM-class guests (HVM and PVH, as libxc does): libxl switches QEMU's
    // own log-dirty on before the first round and off at the end
    // (switch_qemu_logdirty; for PVH, which has no QEMU, libxl answers at
    // once).
    virtual bool needs_qemu_logdirty(const Domain&) const { return false; }

    // Builds the destination of a restore (libxl created the empty domain).
    virtual std::unique_ptr<DomainProvider> provider(const RestoreParams&) = 0;
    virtual std::vector<std::uint32_t> kinds() const = 0;
    // Static data the stream lacked, for libxl's static_data_done
    // (XGR_SDD_MISSING_CPUID = 1, XGR_SDD_MISSING_MSR = 2).
    virtual unsigned static_data_missing(const IncomingDomain&) const { return 0; }
    virtual RestoreResults restore_results(IncomingDomain&) = 0;

    // XenServer's restore side effects (stream/domain/xen/restore_platform.hpp),
    // for the emu-manager drop-in, which stands in for xenguest (libxl does
    // its own): the destination's platform/ keys, and applying them before
    // the stream (HPET, time offset, vCPU affinity, weight, cap) and once the
    // domain is built (the VM generation id).  Errors are thrown.
    enum class PlatformStep { before_stream, after_build };
    virtual xen::PlatformKeyReader platform_keys(std::uint32_t domid) = 0;
    virtual void apply_platform(std::uint32_t domid, const xen::RestorePlatform&, PlatformStep) = 0;

    // After the hand-over (`complete`): waits, at most `max`, until libxl is
    // done with the domain (source: destroyed, after the destination ran it
    // or after a save; destination: unpaused, or destroyed), so that the
    // worker's teardown (unmapping a guest-sized cache and buffers) does not
    // take dom0's CPU from libxl's own work on the guest, its devices on
    // the destination, inside the downtime.  Says what ended the wait.  By
    // default (sim) nothing to wait for.
    virtual std::string wait_settled(std::uint32_t /*domid*/, bool /*source*/, std::chrono::milliseconds)
    {
        return "";
    }

protected:
    LogFn log_;
    xen::GuestHintOptions hints_;
};

// FASTMIG_HELPER_BACKEND: "xen" (default) or "sim".  Throws Error with a
// clear cause (unknown name, Xen backend not built: no Xen libraries).
std::unique_ptr<HelperBackend> make_backend();
std::unique_ptr<HelperBackend> make_sim_backend();
std::unique_ptr<HelperBackend> make_xen_backend();

} // namespace fastmig::helper
