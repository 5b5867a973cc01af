// Real Xen domains (64-bit PV, PVH, HVM) behind the engine's Domain / IncomingDomain interfaces
// (libxenctrl, libxenforeignmemory, libxenevtchn, libxenstore, libxenguest).
// This header includes no Xen header: the libxl save helper and the command
// line include it; only the .cpp files of this folder see Xen's headers.
// Built only when configure finds the Xen libraries (FASTMIG_HAVE_XEN).
// See README.md in this folder for what is implemented and verified.
#pragma once

#include "stream/domain.hpp"
#include "stream/domain/xen/guest_checks.hpp"
#include "stream/domain/xen/guest_hints.hpp"
#include "stream/domain/xen/restore_platform.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace fastmig::xen {

using LogFn = std::function<void(const std::string&)>;

struct SaveOptions {
    // Progress and fallbacks ("suspend: event channel unavailable, polling");
    // empty: lines go to stderr.
    LogFn log;
    // When set, suspend() calls this instead of asking the guest itself (the
    // save helper passes libxl's suspend callback: libxl then does the
    // request and the wait, and returns true once the guest is suspended).
    // The backend still checks with Xen that the domain is suspended.
    std::function<bool()> suspend_request;
    // The same, for HVM guests (with a device model) only: their suspension
    // must go through the toolstack, which saves the device model's state
    // in that step.  PV and PVH guests are suspended by the backend itself
    // unless suspend_request is set.
    std::function<bool()> suspend_request_hvm;
    // Interval of the fallback that polls the domain's state when no event
    // channel could be set up for the suspend notification.
    std::chrono::microseconds poll_interval{500};
    // Free-page hints from the guest's fastmig agent (guest_hints.hpp):
    // whether to ask, and the bound on the whole exchange.
    GuestHintOptions hints;
};

// A source domain that says which guest it holds.
class XenSourceDomain : public Domain {
public:
    virtual GuestType guest_type() const = 0;
};

// Attaches to running domain `domid` as a migration source: PV, Xen's m2p
// and the guest's shared info and p2m mapped; HVM/PVH, its gfn range sized;
// the suspend event channel prepared (outside the downtime).  Errors name
// the domain ("xen:7"), the phase (setup) and the cause; a guest fastmig
// cannot move (guest_checks.hpp: 32-bit PV, nested virt, PCI passthrough,
// platform/nomigrate, PoD, paging/sharing) is refused before anything
// changes in it.
std::unique_ptr<XenSourceDomain> attach_save(std::uint32_t domid, SaveOptions opt = {});

// Waits until domain `domid` is gone (destroyed, dying) or, with
// until_running, runs (no longer paused or shut down), polling its state
// every `interval`, for at most `max`.  Says what it saw ("gone after
// 2310 ms", "running after ...", "unchanged after ..."); errors are reported
// in that string, never thrown: the caller is only deferring its own
// teardown.
std::string wait_domain_settled(std::uint32_t domid, bool until_running, std::chrono::milliseconds max,
                                std::chrono::milliseconds interval = std::chrono::milliseconds(50));

// What libxl's save helper is given for a restore (--restore-domain).
struct RestoreParams {
    std::uint32_t domid = 0;
    std::uint32_t store_evtchn = 0;
    std::uint32_t store_domid = 0;
    std::uint32_t console_evtchn = 0;
    std::uint32_t console_domid = 0;
    // false (libxl's case): destroy() leaves the paused domain to the
    // toolstack that created it; true: destroy() destroys it.
    bool destroy_on_failure = false;
    LogFn log;
};

// What the helper reports to libxl after a restore (restore_results): the
// store and console frames, mfns for a PV guest, gfns for HVM/PVH.
struct RestoreResult {
    std::uint64_t store_mfn = 0;
    std::uint64_t console_mfn = 0;
};

class XenIncomingDomain : public IncomingDomain {
public:
    // Valid after restore_state(); throws Error before.
    virtual RestoreResult result() const = 0;
};

// Builds domain `params.domid` (created empty and paused by the toolstack)
// from a stream of nr_pages pages of a PV guest or, with hvm, of an HVM/PVH
// guest; a domain of the other class is refused before anything is written.
std::unique_ptr<XenIncomingDomain> attach_restore(const RestoreParams& params, std::uint64_t nr_pages,
                                                  bool hvm = false);

// DomainProvider for the receiver: one restore into params.domid.
class XenProvider : public DomainProvider {
public:
    explicit XenProvider(RestoreParams p) : params_(std::move(p)) {}
    std::unique_ptr<IncomingDomain> create(std::uint64_t nr_pages, std::uint32_t kind,
                                           const std::string& source_name) override;
    // The domain the last create() returned (owned by the receiver).
    XenIncomingDomain* last() const { return last_; }

private:
    RestoreParams params_;
    XenIncomingDomain* last_ = nullptr;
};

// XenServer's restore side effects (restore_platform.hpp), for the
// emu-manager drop-in that stands in for xenguest under xenopsd:
// platform_keys reads the domain's platform/ keys from xenstore (Error if
// xenstore cannot be reached); apply_platform_before_stream sets the HPET
// param, the time offset, vCPU hard affinity and credit weight/cap, as
// xenguest does before xc_domain_restore; apply_platform_after_build writes
// the VM generation id into the restored guest, as xenguest does after it.
// Errors name the domain, the phase and the call.
PlatformKeyReader platform_keys(std::uint32_t domid);
void apply_platform_before_stream(std::uint32_t domid, const RestorePlatform& p, const LogFn& log);
void apply_platform_after_build(std::uint32_t domid, const RestorePlatform& p, const LogFn& log);

} // namespace fastmig::xen
