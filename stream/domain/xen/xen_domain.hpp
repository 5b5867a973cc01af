// Real Xen PV domains behind the engine's Domain / IncomingDomain interfaces
// (libxenctrl, libxenforeignmemory, libxenevtchn, libxenstore, libxenguest).
// This header includes no Xen header: the libxl save helper and the command
// line include it; only the .cpp files of this folder see Xen's headers.
// Built only when configure finds the Xen libraries (FASTMIG_HAVE_XEN).
// See README.md in this folder for what is implemented and verified.
#pragma once

#include "stream/domain.hpp"

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
    // Interval of the fallback that polls the domain's state when no event
    // channel could be set up for the suspend notification.
    std::chrono::microseconds poll_interval{500};
};

// Attaches to running PV domain `domid` as a migration source: maps Xen's
// m2p, the guest's shared info and p2m, and prepares the suspend event
// channel (outside the downtime).  Errors name the domain ("xen:7"), the
// phase (setup) and the cause; HVM and 32-bit PV guests are refused.
std::unique_ptr<Domain> attach_save(std::uint32_t domid, SaveOptions opt = {});

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

// What the helper reports to libxl after a restore (restore_results).
struct RestoreResult {
    std::uint64_t store_mfn = 0;
    std::uint64_t console_mfn = 0;
};

class XenIncomingDomain : public IncomingDomain {
public:
    // Valid after restore_state(); throws Error before.
    virtual RestoreResult result() const = 0;
};

// Builds PV domain `params.domid` (created empty and paused by the
// toolstack) from a stream of nr_pages pages.
std::unique_ptr<XenIncomingDomain> attach_restore(const RestoreParams& params, std::uint64_t nr_pages);

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

} // namespace fastmig::xen
