// --save-domain: fastmig's stream on io_fd, in place of xc_domain_save.
//
// Stock libxl 4.17 gives the helper no reply channel from the destination
// (recv_fd is only set up for COLO; for `xl save` and `xl migrate` it is a
// copy of xl's stdin, see docs/libxl-helper.md), so the stream is one-way:
// no ACCEPT/ROUND_ACK/READY/COMMIT/DONE.  The commit decision is xl's own
// handshake after the stream ("ready" / "go" messages), which keeps the
// destination paused until the source gives it up, as with libxc.
#include "libxl-plugin/helper.hpp"
#include "libxl-plugin/caller_suspend.hpp"
#include "libxl-plugin/helper_pipe.hpp"
#include "libxl-plugin/nonblocking.hpp"

#include "libxl-plugin/cli.hpp"
#include "stream/failpoint.hpp"
#include "stream/transport.hpp"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include <fcntl.h>

namespace fastmig::helper {

std::string domain_label(std::uint32_t domid, const std::string& backend_name)
{
    return "domain " + std::to_string(domid) + (backend_name.empty() ? "" : " (" + backend_name + ")");
}

std::string error_line(std::uint32_t domid, const std::string& who, Phase phase, const std::exception& e)
{
    auto* err = dynamic_cast<const Error*>(&e);
    if (!err)
        return who + ": " + phase_name(phase) + ": " + e.what();
    if (!err->has_context())
        return who + ": " + phase_name(phase) + ": " + err->cause();
    // The engine names the backend's domain ("sim:3"); libxl's user knows the domid.
    std::string d = err->domain().rfind("domain ", 0) == 0 ? err->domain() : domain_label(domid, err->domain());
    return d + ": " + phase_name(err->phase()) + ": " + err->cause();
}

std::chrono::milliseconds settle_limit()
{
    const char* env = std::getenv("FASTMIG_HELPER_SETTLE_MS");
    if (!env || !*env)
        return std::chrono::milliseconds(10000);
    std::string v = env;
    if (v.size() > 7 || v.find_first_not_of("0123456789") != std::string::npos)
        throw Error("FASTMIG_HELPER_SETTLE_MS=" + v + " is not a number of milliseconds (0 to 9999999)");
    return std::chrono::milliseconds(std::stoul(v));
}

void settle_before_teardown(HelperBackend& backend, std::uint32_t domid, bool source, std::chrono::milliseconds max)
{
    if (max.count() == 0)
        return;
    try {
        backend.wait_settled(domid, source, max);
    } catch (...) {
        // Only the teardown's timing is at stake: go on with it.
    }
}

void helper_send_options(SendOptions& so, xen::GuestHintOptions* hints)
{
    std::vector<std::string> words;
    if (const char* env = std::getenv("FASTMIG_HELPER_OPTIONS")) {
        std::istringstream in(env);
        for (std::string w; in >> w;)
            words.push_back(w);
    }
    try {
        auto valued = cli::kSendValued;
        auto flags = cli::kSendFlags;
        valued.insert("agent-timeout-ms");
        flags.insert("no-agent-hints");
        cli::Options o(words, valued, flags);
        if (!o.positional().empty())
            throw cli::UsageError("unexpected word '" + o.positional()[0] + "'");
        unsigned channels = 1;
        cli::apply_send_options(o, so, channels);
        xen::GuestHintOptions h;
        h.enabled = !o.flag("no-agent-hints");
        const auto t = o.uint_or("agent-timeout-ms", std::uint64_t(h.timeout.count()));
        if (t < 1 || t > std::uint64_t(xen::kMaxAgentTimeout.count()))
            throw cli::UsageError("--agent-timeout-ms must be 1.." + std::to_string(xen::kMaxAgentTimeout.count()) +
                                  " (the destination hears nothing while the source waits)");
        h.timeout = std::chrono::milliseconds(t);
        if (hints)
            *hints = h;
        if (o.get("channels") && channels != 1)
            throw cli::UsageError("--channels: libxl gives its helper one stream fd, so one channel");
    } catch (const cli::UsageError& e) {
        throw Error(std::string("FASTMIG_HELPER_OPTIONS: ") + e.what());
    }
    so.channels = 1;
}

SendOptions one_way_save_options(HelperBackend& backend, bool live)
{
    SendOptions so;
    xen::GuestHintOptions hints;
    helper_send_options(so, &hints);
    backend.set_guest_hints(hints);
    so.one_way = true;
    so.live = live;
    so.verify = false;
    so.release_source = false; // the caller destroys it (xl save, after xl's handshake, or xenopsd)
    // The caller's suspension (libxl's suspend callback, whose reply timeout
    // bounds it; xenopsd's `done`) is awaited this long; the backend's own
    // confirmation afterwards is quick (libxl: 60 s).
    so.suspend_timeout = std::chrono::seconds(30);
    return so;
}

void check_plain_stream(std::uint32_t stream_type, int io_fd, const std::string& who)
{
    if (stream_type != kStreamPlain)
        throw Error(who, Phase::setup,
                    "checkpointed streams (Remus/COLO, stream_type " + std::to_string(stream_type) +
                        ") are not supported by fastmig's helper; use the stock libxl-save-helper");
    if (::fcntl(io_fd, F_GETFD) < 0)
        throw Error(who, Phase::setup, "io_fd " + std::to_string(io_fd) + " is not an open descriptor");
}

std::string saving_line(const std::string& who, const Domain& dom, const SendOptions& so)
{
    return "saving " + who + ", " + std::to_string(dom.nr_pages()) + " pages, " + (so.live ? "live" : "not live") +
           ", " + std::to_string(so.pipeline.threads) + " threads";
}

namespace {

// QEMU's log-dirty, once libxl switched it on, goes off on every way
// out (libxc's HVM cleanup does so on success and failure alike).
class QemuLogDirty {
public:
    QemuLogDirty(LibxlLink& libxl, std::uint32_t domid) : libxl_(libxl), domid_(domid) {}
    void on(const std::string& who)
    {
        if (libxl_.switch_qemu_logdirty(domid_, true) != 0)
            throw Error(who, Phase::setup, "libxl could not switch QEMU's log-dirty mode on");
        on_ = true;
    }
    void off(const std::string& who)
    {
        if (!on_)
            return;
        on_ = false;
        if (libxl_.switch_qemu_logdirty(domid_, false) != 0)
            libxl_.log(XtlLevel::warn, who + ": finish: libxl could not switch QEMU's log-dirty mode off");
    }

private:
    LibxlLink& libxl_;
    std::uint32_t domid_;
    bool on_ = false;
};

// Suspension goes through libxl's suspend callback (libxl asks the guest,
// saves the device model, records that the guest responded), unless the
// backend suspends the guest itself (then no ask).  xl resumes the domain
// after a failed save (libxl_domain_resume in xl save and xl migrate), and
// so does CallerSuspendedDomain when libxl refuses.
CallerSuspendedDomain::AskFn libxl_suspend(const SaveArgs& a, LibxlLink& libxl, bool self_suspend,
                                           const std::string& who)
{
    if (self_suspend)
        return {};
    if (!libxl.provides(Msg::suspend))
        throw Error(who, Phase::setup,
                    "libxl did not provide the suspend callback (cbflags " + std::to_string(a.cbflags) + ")");
    return [&libxl]() -> std::string {
        int r = libxl.suspend();
        return r == 1 ? std::string() : "libxl's suspend callback failed (answered " + std::to_string(r) + ", expected 1)";
    };
}

// Progress and the engine's log lines go to libxl.
void report_to_libxl(SendOptions& so, LibxlLink& libxl, const std::string& who)
{
    so.progress = [&libxl](const Progress& p) {
        libxl.progress(p.stop_copy ? "fastmig: stop-and-copy round " + std::to_string(p.round)
                                   : "Frames iteration " + std::to_string(p.round),
                       p.pages_done, p.pages_round);
    };
    so.log = [&libxl, who](const std::string& line) { libxl.log(XtlLevel::detail, who + ": " + line); };
}

} // namespace

int run_save(const SaveArgs& a, LibxlLink& libxl, HelperBackend& backend)
{
    std::string who = domain_label(a.domid, "");
    QemuLogDirty qemu(libxl, a.domid);
    try {
        check_plain_stream(a.stream_type, a.io_fd, who);
        SendOptions so = one_way_save_options(backend, a.xcflags & kXcflagsLive);
        const auto settle = settle_limit();
        backend.set_log([&](const std::string& line) { libxl.log(XtlLevel::detail, line); });
        std::unique_ptr<Domain> inner;
        try {
            inner = backend.open_source(a.domid);
        } catch (const Error& e) {
            throw Error(who, Phase::setup, e.cause());
        }
        who = domain_label(a.domid, inner->name());
        CallerSuspendedDomain dom(*inner, libxl_suspend(a, libxl, backend.suspends_itself(*inner), who));
        libxl.log(XtlLevel::info, "fastmig: " + saving_line(who, *inner, so));
        if (auto line = widen_pipe(a.io_fd, kSourcePipeBytes); !line.empty())
            libxl.log(XtlLevel::detail, who + ": " + line);
        report_to_libxl(so, libxl, who);
        if (backend.needs_qemu_logdirty(*inner))
            qemu.on(who);

        // The result is final once END is out: say so, switch QEMU's
        // log-dirty off (as libxc's cleanup does before it returns), and
        // tell libxl `complete` right there, before the pipeline's buffers,
        // the m2p and the p2m are unmapped and log-dirty goes off: libxl's
        // END, which the destination waits for before it can start the
        // guest, follows the helper's exit (helper_supervisor.hpp).
        auto saved = [&](const SendResult& r) {
            if (dom.suspend_calls() != 1)
                throw Error(who, Phase::finish,
                            "internal: suspend was asked " + std::to_string(dom.suspend_calls()) + " times");
            libxl.log(XtlLevel::info, "fastmig: " + saved_summary(who, r) +
                                          "; the domain is suspended, libxl takes it from here");
        };
        NonBlocking nb(a.io_fd);
        bool completed_early = false, failed = false;
        so.on_handover = [&](const SendResult& r) {
            try {
                saved(r);
                qemu.off(who);
                nb.restore();
                libxl.complete(0, 0);
                completed_early = true;
                settle_before_teardown(backend, a.domid, true, settle);
            } catch (const std::exception& e) {
                // Not handed over: main tells libxl (complete, -1).
                libxl.log(XtlLevel::error, "fastmig: save failed: " + error_line(a.domid, who, Phase::finish, e));
                failed = true;
            }
        };
        SendResult r = send_domain(dom, a.io_fd, so);
        nb.restore();
        if (completed_early)
            failpoint("helper:after-handover"); // libxl has moved on; the teardown is ours
        qemu.off(who);
        if (completed_early || failed)
            return completed_early ? 0 : -1;
        saved(r);
        return 0;
    } catch (const std::exception& e) {
        libxl.log(XtlLevel::error, "fastmig: save failed: " + error_line(a.domid, who, Phase::setup, e));
        try {
            qemu.off(who);
        } catch (const std::exception& e2) {
            libxl.log(XtlLevel::warn, who + ": QEMU's log-dirty mode not switched off: " + e2.what());
        }
        return -1;
    }
}

} // namespace fastmig::helper
