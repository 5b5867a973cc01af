// The Xen backend of the helper: libxl's domid is a real Xen domain, driven
// through stream/domain/xen/ (64-bit PV, PVH and HVM guests).  This file is
// only the adapter between libxl's view and that backend:
//
// * save, FASTMIG_HELPER_SUSPEND=channel (the default): the backend
//   suspends the guest itself.  It subscribes an event channel for the
//   suspension (xc_domain_subscribe_for_suspend; the guest's own suspend
//   channel when it has one), asks through control/shutdown, and wakes on
//   that channel: no @releaseDomain watch on the critical path.  libxl's
//   suspend callback is not sent; for a PV guest it does nothing more than
//   that request and that wait (libxl_dom_suspend.c: the device model step
//   is for HVM only).  Xen then signals our channel instead of
//   VIRQ_DOM_EXC, so libxl must not be waiting for the suspension too.
// * save, FASTMIG_HELPER_SUSPEND=libxl: attach_save(domid) with
//   SaveOptions::suspend_request set.  The request goes through libxl's
//   suspend callback, which the helper's LibxlSuspendedDomain
//   (helper_save.cpp) sends before it calls suspend() on this domain; so
//   the request here only reports "libxl did it", and the backend then
//   checks with Xen that the guest really stopped.  Setting it also keeps
//   the backend from subscribing a suspend event channel, which would take
//   VIRQ_DOM_EXC (and so libxl's own wait for the suspension) away from
//   libxl.
// * restore: a XenProvider building into the domain libxl created, with the
//   xenstore/console event channels from argv; destroy_on_failure is false
//   because libxl destroys the half-built domain itself after a failure.
//   restore_results are the store and console frames the backend set up.
// * HVM and PVH: the helper asks libxl to switch QEMU's log-dirty on before
//   round 0 and off at the end (libxl answers at once for PVH, which has no
//   QEMU), as libxc's HVM save does.  An HVM guest with a device model is
//   suspended through libxl whatever FASTMIG_HELPER_SUSPEND says, because
//   libxl saves QEMU in that step.
// * 32-bit PV guests, and guests the backend cannot move (nested virt,
//   passthrough, platform/nomigrate, PoD, paged or shared memory), are
//   refused with an error saying so (at attach on save, on the stream's kind
//   on restore), before libxl is asked to suspend anything.
//
// Without the Xen libraries (configure found none) the helper refuses Xen
// domains with a clear error instead, before touching the domain.
#include "libxl-plugin/helper_backend.hpp"

#include "config.h"

#include <cstdlib>

#ifdef FASTMIG_HAVE_XEN
#include "stream/domain/xen/xen_domain.hpp"
#endif

namespace fastmig::helper {

#ifdef FASTMIG_HAVE_XEN
namespace {

// libxc's XGR_SDD_MISSING_* bits (xenguest.h, struct restore_callbacks).
constexpr unsigned kMissingCpuid = 1u << 0;
constexpr unsigned kMissingMsr = 1u << 1;

class XenBackend : public HelperBackend {
public:
    // FASTMIG_HELPER_SUSPEND: who suspends the guest (see above).
    XenBackend()
    {
        const char* v = std::getenv("FASTMIG_HELPER_SUSPEND");
        std::string m = v && *v ? v : "channel";
        if (m != "channel" && m != "libxl")
            throw Error("FASTMIG_HELPER_SUSPEND=" + m + " is not a suspend mode (channel or libxl)");
        by_channel_ = m == "channel";
    }

    std::string name() const override { return "xen"; }
    // An HVM guest with a device model is suspended through libxl, which
    // saves QEMU's state in its suspend callback; PV and PVH guests by the
    // backend itself in channel mode.
    bool suspends_itself(const Domain& d) const override
    {
        auto* x = dynamic_cast<const xen::XenSourceDomain*>(&d);
        return by_channel_ && x && x->guest_type() != xen::GuestType::hvm;
    }
    // As libxc's HVM save: for HVM and PVH (libxl answers at once for PVH).
    bool needs_qemu_logdirty(const Domain& d) const override { return d.kind() == kDomainKindXenHvm; }

    std::unique_ptr<Domain> open_source(std::uint32_t domid) override
    {
        xen::SaveOptions o;
        o.log = domain_log(domid);
        o.hints = hints_;
        // libxl mode: helper_save.cpp has already asked libxl (and got
        // "suspended") when the engine's suspend() reaches the backend.
        if (!by_channel_)
            o.suspend_request = [] { return true; };
        else
            o.suspend_request_hvm = [] { return true; };
        return xen::attach_save(domid, std::move(o));
    }

    std::unique_ptr<DomainProvider> provider(const RestoreParams& p) override
    {
        xen::RestoreParams xp;
        xp.domid = p.domid;
        xp.store_evtchn = p.store_evtchn;
        xp.store_domid = p.store_domid;
        xp.console_evtchn = p.console_evtchn;
        xp.console_domid = p.console_domid;
        xp.destroy_on_failure = false;
        xp.log = domain_log(p.domid);
        return std::make_unique<xen::XenProvider>(std::move(xp));
    }

    std::vector<std::uint32_t> kinds() const override { return {kDomainKindXenPv, kDomainKindXenHvm}; }

    // static_data_done comes before the stream, and fastmig's CPU policy
    // records come at its end (platform state): so libxl is told they are
    // missing and applies its own policy first, as for a pre-4.14 libxc
    // stream (libxl__build_pre leaves CPUID to static_data_done on restore);
    // the backend then replaces it with the source's, before the vCPUs are
    // set (stream/domain/xen/README.md).
    unsigned static_data_missing(const IncomingDomain&) const override { return kMissingCpuid | kMissingMsr; }

    RestoreResults restore_results(IncomingDomain& d) override
    {
        auto* x = dynamic_cast<xen::XenIncomingDomain*>(&d);
        if (!x)
            throw Error(d.name(), Phase::restore, "internal: the restored domain is not a Xen domain");
        xen::RestoreResult r = x->result();
        return {r.store_mfn, r.console_mfn};
    }

    xen::PlatformKeyReader platform_keys(std::uint32_t domid) override { return xen::platform_keys(domid); }
    void apply_platform(std::uint32_t domid, const xen::RestorePlatform& p, PlatformStep step) override
    {
        if (step == PlatformStep::before_stream)
            xen::apply_platform_before_stream(domid, p, domain_log(domid));
        else
            xen::apply_platform_after_build(domid, p, domain_log(domid));
    }

    std::string wait_settled(std::uint32_t domid, bool source, std::chrono::milliseconds max) override
    {
        return xen::wait_domain_settled(domid, !source, max);
    }

private:
    // The backend's own lines ("attached: ...", suspend fallbacks) go to
    // libxl's log with the rest, not to xl's stderr.
    xen::LogFn domain_log(std::uint32_t domid) const
    {
        if (!log_)
            return {};
        auto log = log_;
        return [log, domid](const std::string& line) { log("domain " + std::to_string(domid) + " (xen): " + line); };
    }

    bool by_channel_ = true;
};

} // namespace
#endif

std::unique_ptr<HelperBackend> make_xen_backend()
{
#ifdef FASTMIG_HAVE_XEN
    return std::make_unique<XenBackend>();
#else
    throw Error("the Xen backend is not built/available in this fastmig (configured without the Xen libraries: "
                "apt-get install libxen-dev and rebuild); use the stock libxl-save-helper");
#endif
}

} // namespace fastmig::helper
