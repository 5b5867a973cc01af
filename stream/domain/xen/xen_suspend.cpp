#include "stream/domain/xen/xen_suspend.hpp"

#include "stream/clock.hpp"

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
    try {
        bell_ = ipc::XenDoorbell::bind(domid_, guest_port_);
    } catch (const ipc::ChannelError& e) {
        log_(std::string("suspend: ") + e.what() + "; falling back to polling");
        guest_channel_ = false;
        return;
    }
    if (xc_domain_subscribe_for_suspend(xch_, domid_, guest_port_) < 0) {
        log_("suspend: cannot subscribe port " + std::to_string(guest_port_) + " for suspend (" +
             std::strerror(errno) + "); falling back to polling");
        bell_ = ipc::XenDoorbell();
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
    bell_ = ipc::XenDoorbell(); // unbinds our port
}

void SuspendChannel::request()
{
    if (subscribed_ && guest_channel_) {
        try {
            bell_.notify();
        } catch (const ipc::ChannelError& e) {
            throw Error(who_, Phase::stop_copy, std::string("the guest's suspend event channel: ") + e.what());
        }
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
            const auto ms = std::chrono::milliseconds(std::min<std::uint64_t>((deadline - now + 999999) / 1000000, 1000));
            try {
                bell_.wait(ms);
            } catch (const ipc::ChannelError& e) {
                throw Error(who_, Phase::stop_copy, std::string("waiting on the suspend event channel: ") + e.what());
            }
            // Either way the loop re-reads the state: a notification says
            // "look now", the state says what happened.
        } else {
            std::this_thread::sleep_for(poll_);
        }
    }
}

} // namespace fastmig::xen
