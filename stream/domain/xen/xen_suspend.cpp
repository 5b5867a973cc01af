#include "stream/domain/xen/xen_suspend.hpp"

#include "stream/clock.hpp"

#include <poll.h>

#include <cstdlib>
#include <thread>

namespace fastmig::xen {

SuspendChannel::SuspendChannel(xc_interface* xch, std::uint32_t domid, std::string who, LogFn log,
                               std::chrono::microseconds poll_interval, bool subscribe)
    : xch_(xch), domid_(domid), who_(std::move(who)), log_(std::move(log)), poll_(poll_interval)
{
    if (!subscribe)
        return;
    xs_ = xs_open(0);
    if (!xs_)
        log_("suspend: cannot connect to xenstore (" + std::string(std::strerror(errno)) +
             "): the guest cannot be asked to suspend through control/shutdown");
    setup();
    log_(std::string("suspend: notification by ") + mode());
}

SuspendChannel::~SuspendChannel()
{
    close();
    if (xs_)
        xs_close(xs_);
}

const char* SuspendChannel::mode() const
{
    if (!subscribed_)
        return "polling the domain state";
    return guest_channel_ ? "the guest's suspend event channel" : "a toolstack event channel";
}

void SuspendChannel::setup()
{
    xce_ = xenevtchn_open(nullptr, 0);
    if (!xce_) {
        log_("suspend: cannot open the event channel device (" + std::string(std::strerror(errno)) +
             "); falling back to polling");
        return;
    }
    // The guest's own channel, if it offers one.
    if (xs_) {
        std::string path = "/local/domain/" + std::to_string(domid_) + "/device/suspend/event-channel";
        unsigned len = 0;
        if (char* v = static_cast<char*>(xs_read(xs_, XBT_NULL, path.c_str(), &len))) {
            char* end = nullptr;
            unsigned long p = std::strtoul(v, &end, 10);
            if (end != v && *end == '\0' && p > 0 && p < (1ul << 20)) {
                guest_port_ = evtchn_port_t(p);
                guest_channel_ = true;
            }
            std::free(v);
        }
    }
    if (!guest_channel_) {
        int p = xc_evtchn_alloc_unbound(xch_, domid_, 0);
        if (p < 0) {
            log_("suspend: cannot allocate an event channel in the guest (" + std::string(std::strerror(errno)) +
                 "); falling back to polling");
            return;
        }
        guest_port_ = evtchn_port_t(p);
    }
    xenevtchn_port_or_error_t local = xenevtchn_bind_interdomain(xce_, domid_, guest_port_);
    if (local < 0) {
        log_("suspend: cannot bind to the guest's port " + std::to_string(guest_port_) + " (" +
             std::strerror(errno) + "); falling back to polling");
        guest_channel_ = false;
        return;
    }
    local_port_ = evtchn_port_t(local);
    if (xc_domain_subscribe_for_suspend(xch_, domid_, guest_port_) < 0) {
        log_("suspend: cannot subscribe port " + std::to_string(guest_port_) + " for suspend (" +
             std::strerror(errno) + "); falling back to polling");
        xenevtchn_unbind(xce_, local_port_);
        local_port_ = 0;
        guest_channel_ = false;
        return;
    }
    subscribed_ = true;
}

void SuspendChannel::close()
{
    if (subscribed_) {
        // Port 0: Xen notifies VIRQ_DOM_EXC again, so a later suspend by
        // libxl is seen by xenstored as usual.
        if (xc_domain_subscribe_for_suspend(xch_, domid_, 0) < 0)
            log_("suspend: cannot drop the suspend subscription: " + std::string(std::strerror(errno)));
        subscribed_ = false;
    }
    if (xce_) {
        if (local_port_)
            xenevtchn_unbind(xce_, local_port_);
        xenevtchn_close(xce_);
        xce_ = nullptr;
        local_port_ = 0;
    }
}

void SuspendChannel::request()
{
    if (subscribed_ && guest_channel_) {
        if (xenevtchn_notify(xce_, local_port_) < 0)
            fail_errno(who_, Phase::stop_copy, "cannot notify the guest's suspend event channel");
        return;
    }
    if (!xs_)
        throw Error(who_, Phase::stop_copy,
                    "cannot ask the guest to suspend: no xenstore connection and no guest suspend channel");
    std::string path = "/local/domain/" + std::to_string(domid_) + "/control/shutdown";
    if (!xs_write(xs_, XBT_NULL, path.c_str(), "suspend", 7))
        fail_errno(who_, Phase::stop_copy, "cannot write " + path);
}

// After a timeout: take back a request the guest never acknowledged, so that
// it does not suspend later behind our back (libxl does the same).
void SuspendChannel::withdraw_request()
{
    if (!xs_ || (subscribed_ && guest_channel_))
        return;
    std::string path = "/local/domain/" + std::to_string(domid_) + "/control/shutdown";
    unsigned len = 0;
    char* v = static_cast<char*>(xs_read(xs_, XBT_NULL, path.c_str(), &len));
    if (v && std::string(v, len) == "suspend")
        xs_write(xs_, XBT_NULL, path.c_str(), "", 0);
    std::free(v);
}

std::uint64_t SuspendChannel::suspend(std::chrono::milliseconds timeout)
{
    request();
    try {
        return wait_suspended(timeout);
    } catch (...) {
        withdraw_request();
        throw;
    }
}

std::uint64_t SuspendChannel::wait_suspended(std::chrono::milliseconds timeout)
{
    const std::uint64_t deadline = monotonic_ns() + std::uint64_t(timeout.count()) * 1000000ull;
    for (;;) {
        auto info = domain_info(xch_, domid_, who_, Phase::stop_copy);
        if (is_suspended(info))
            return monotonic_ns();
        if (info.flags & (XEN_DOMINF_dying | XEN_DOMINF_shutdown))
            throw Error(who_, Phase::stop_copy, "the domain is " + describe_state(info) + " instead of suspending");
        std::uint64_t now = monotonic_ns();
        if (now >= deadline)
            throw Error(who_, Phase::stop_copy,
                        "the guest did not suspend within " + std::to_string(timeout.count()) + " ms (it is " +
                            describe_state(info) + "; notification by " + mode() +
                            "): does it handle control/shutdown?");
        if (subscribed_) {
            pollfd p{xenevtchn_fd(xce_), POLLIN, 0};
            int ms = int(std::min<std::uint64_t>((deadline - now + 999999) / 1000000, 1000));
            int r = ::poll(&p, 1, ms);
            if (r < 0 && errno != EINTR)
                fail_errno(who_, Phase::stop_copy, "poll on the suspend event channel");
            if (r > 0) {
                xenevtchn_port_or_error_t port = xenevtchn_pending(xce_);
                if (port < 0)
                    fail_errno(who_, Phase::stop_copy, "reading the pending event channel");
                xenevtchn_unmask(xce_, evtchn_port_t(port));
            }
            // Either way the loop re-reads the state: a notification says
            // "look now", the state says what happened.
        } else {
            std::this_thread::sleep_for(poll_);
        }
    }
}

} // namespace fastmig::xen
