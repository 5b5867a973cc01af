// Suspending a PV guest and learning that it is suspended without the
// @releaseDomain xenstore watch (xenstored turns VIRQ_DOM_EXC into that
// watch, which can take seconds under load).
//
// Set-up (before the downtime): a port is chosen in the guest's event
// channel table and bound to a port of ours, then subscribed with
// xc_domain_subscribe_for_suspend(): Xen then signals that port, instead of
// VIRQ_DOM_EXC, when the guest shuts down with reason "suspend".  The port
// is the guest's own suspend channel when it advertises one
// (device/suspend/event-channel; the request is then a notification on it),
// else one we allocate unbound in the guest's table for dom0 (the request
// then goes through xenstore: control/shutdown = "suspend", which is all an
// upstream Linux guest watches).
//
// If any step fails, suspend falls back to polling the domain's state every
// poll interval, and says so in the log.  Waits are bounded.
//
// The event channel itself is evtchn-ipc's XenDoorbell (bind, notify,
// wait): one place in fastmig speaks libxenevtchn.  What stays here is
// what only a toolstack does: allocating a port in the guest's table and
// the suspend subscription (libxenctrl), and the xenstore request.
#pragma once

#include "evtchn-ipc/xen_channel.hpp"
#include "stream/domain/xen/xen_handles.hpp"

#include <chrono>
#include <string>

namespace fastmig::xen {

class SuspendChannel {
public:
    // subscribe = false: no channel, no xenstore (someone else, libxl,
    // requests the suspension and owns VIRQ_DOM_EXC); wait_suspended() polls.
    SuspendChannel(xc_interface* xch, std::uint32_t domid, std::string who, LogFn log,
                   std::chrono::microseconds poll_interval, bool subscribe);
    ~SuspendChannel();
    SuspendChannel(const SuspendChannel&) = delete;
    SuspendChannel& operator=(const SuspendChannel&) = delete;

    // Asks the guest to suspend and waits until Xen reports it suspended,
    // up to timeout.  Returns the CLOCK_MONOTONIC instant the suspension was
    // observed.  Error (phase stop_copy) on timeout, with what was seen.
    std::uint64_t suspend(std::chrono::milliseconds timeout);
    // Waits, without asking, for a suspension someone else requested.
    std::uint64_t wait_suspended(std::chrono::milliseconds timeout);
    // Drops the subscription (Xen notifies VIRQ_DOM_EXC again) and our port.
    void close();
    // "guest channel", "toolstack channel" or "polling" (for the log).
    const char* mode() const;

private:
    void setup();
    void request();
    void withdraw_request();

    xc_interface* xch_;
    std::uint32_t domid_;
    std::string who_;
    LogFn log_;
    std::chrono::microseconds poll_;
    ipc::XenDoorbell bell_; // bound to guest_port_ once set up
    xs_handle* xs_ = nullptr;
    evtchn_port_t guest_port_ = 0;
    bool guest_channel_ = false; // the guest advertised its own channel
    bool subscribed_ = false;
};

} // namespace fastmig::xen
