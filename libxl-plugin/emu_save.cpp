// -mode hvm_save: fastmig's one-way stream on -fd, in place of xenguest's
// xc_domain_save.  xenopsd has written the image's signature and Xenops
// record; `prepare:xenguest` makes it write the Libxc header (length 0: the
// body delimits itself, here by fastmig's END), then the body goes out.  The
// guest is suspended by xenopsd (`suspend:`, its `done`), not by fastmig:
// xenopsd also stops QEMU, varstored and swtpm and saves their state.  Once
// END is out, `result:0 0` tells xenopsd that it may write its records after
// the body (QEMU, varstored, swtpm, End).
#include "libxl-plugin/emu.hpp"

#include "libxl-plugin/caller_suspend.hpp"
#include "libxl-plugin/helper.hpp"
#include "libxl-plugin/helper_pipe.hpp"
#include "libxl-plugin/helper_supervisor.hpp"
#include "libxl-plugin/nonblocking.hpp"
#include "libxl-plugin/qmp_dirty_log.hpp"

#include "stream/failpoint.hpp"
#include "stream/sender.hpp"


namespace fastmig::emu {

namespace {

using namespace fastmig::helper;

// Progress as a user sees it in XenCenter or Xen Orchestra: pages sent so
// far over pages sent plus pages still to send in this round (the stock
// emu-manager's measure), capped at 99 until the result.  A new round adds
// its dirty pages to the total, so the raw figure can step back;
// XenopsdLink::progress sends only increases.
class ProgressMeter {
public:
    unsigned percent(const Progress& p)
    {
        if (p.round != round_) {
            before_ += round_pages_;
            round_ = p.round;
        }
        round_pages_ = p.pages_round;
        const double sent = double(before_ + p.pages_done);
        const double left = double(p.pages_round > p.pages_done ? p.pages_round - p.pages_done : 0);
        if (sent + left <= 0)
            return 0;
        return unsigned(std::min(99.0, 100.0 * sent / (sent + left)));
    }

private:
    unsigned round_ = 0;
    std::uint64_t before_ = 0, round_pages_ = 0;
};

// QEMU's dirty log is switched by QMP for a live save with `-dm qemu`, as
// the stock emu-manager does (argv takes no other device model but vgpu,
// which went to the stock path before).  No -dm is a guest without a device
// model (xenopsd's PVH): nothing to switch.  The backend answers "HVM
// class" for PVH too (right for libxl, which answers at once for PVH); the
// first run of make nested-xapi sent a PVH guest to the stock path here for
// want of -dm qemu.
void switch_qemu_dirty_log(const EmuArgs& a, helper::HelperBackend& backend, Domain& inner, const SendOptions& so,
                           const std::string& who)
{
    if (!(so.live && a.dm == "qemu" && backend.needs_qemu_logdirty(inner)))
        return;
    const std::string sock = qmp_socket_path(a.domid);
    try {
        qmp_enable_dirty_log(sock, std::chrono::seconds(10));
    } catch (const Error& e) {
        throw Error(who, Phase::setup, e.cause());
    }
    log_line(who + ": QEMU's dirty logging switched on (" + sock + ")");
}

// Progress to xenopsd, the engine's log lines to the log.
void report_to_xenopsd(SendOptions& so, XenopsdLink& xenopsd, const std::string& who)
{
    so.progress = [&xenopsd, meter = ProgressMeter()](const Progress& p) mutable {
        try {
            xenopsd.progress(meter.percent(p));
        } catch (const std::exception&) {
            // xenopsd gone: its reader has cancelled the stream already.
        }
    };
    so.log = [who](const std::string& line) { log_line(who + ": " + line); };
}

// Once END is out: `result:0 0` to xenopsd, which then writes its records
// after the body, and goes on when this process has closed the pipes and
// exited; the worker's teardown comes after.
struct HandOver {
    bool done = false;
    std::string error;

    void operator()(const SendResult& r, const CallerSuspendedDomain& dom, NonBlocking& nb, XenopsdLink& xenopsd,
                    const std::string& who)
    {
        try {
            if (dom.suspend_calls() != 1)
                throw Error("internal: suspend was asked " + std::to_string(dom.suspend_calls()) + " times");
            nb.restore(); // before xenopsd writes on the fd again
            log_line(saved_summary(who, r));
            xenopsd.progress(100);
            xenopsd.send("result:0 0");
            done = true;
            xenopsd.close();
            release_supervisor();
        } catch (const std::exception& e) {
            error = e.what();
        }
    }
};

} // namespace

int run_emu_save(const EmuArgs& a, XenopsdLink& xenopsd, helper::HelperBackend& backend, const ToStock& to_stock)
{
    using namespace fastmig::helper;
    std::string who = domain_label(a.domid, "");
    try {
        SendOptions so = one_way_save_options(backend, a.live);
        backend.set_log(log_line);
        // Nothing is written and no line exchanged yet: whatever fastmig
        // cannot take (a guest type the backend refuses, a domain it cannot
        // open) still goes to the stock emu-manager, so that installing
        // fastmig never makes a VM unmovable.
        std::unique_ptr<Domain> inner;
        try {
            inner = backend.open_source(a.domid);
        } catch (const std::exception& e) {
            to_stock(std::string("the ") + backend.name() + " backend cannot take it (" + e.what() + ")");
        }
        who = domain_label(a.domid, inner->name());
        xenopsd.start_reader();
        switch_qemu_dirty_log(a, backend, *inner, so, who);
        log_line(saving_line(who, *inner, so));
        // xenopsd suspends the guest; the backend only confirms (main()
        // set FASTMIG_HELPER_SUSPEND=libxl for the Xen backend).
        CallerSuspendedDomain dom(*inner, [&]() -> std::string {
            log_line(who + ": asking xenopsd to suspend the guest");
            xenopsd.round_trip("suspend:");
            return "";
        });
        if (auto line = widen_pipe(a.fd, kSourcePipeBytes); !line.empty())
            log_line(who + ": " + line);
        report_to_xenopsd(so, xenopsd, who);

        // xenopsd writes the Libxc header; the body follows it directly.
        xenopsd.round_trip("prepare:xenguest");
        NonBlocking nb(a.fd);
        HandOver handover;
        so.on_handover = [&](const SendResult& r) { handover(r, dom, nb, xenopsd, who); };
        try {
            send_domain(dom, a.fd, so);
        } catch (const std::exception& e) {
            if (!handover.done)
                throw;
            log_line(who + ": after the hand-over: " + e.what()); // xenopsd has the result
        }
        if (!handover.done)
            throw Error(who, Phase::finish,
                        handover.error.empty() ? "internal: END went out without a hand-over" : handover.error);
        failpoint("emu:after-handover"); // xenopsd has moved on; the teardown is ours
        return kExitOk;
    } catch (const std::exception& e) {
        std::string msg = error_line(a.domid, who, Phase::setup, e);
        log_line("save failed: " + msg);
        xenopsd.send_error("fastmig save " + msg);
        return kExitFailed;
    }
}

} // namespace fastmig::emu
