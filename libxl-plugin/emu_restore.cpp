// -mode hvm_restore: reads fastmig's one-way stream from -fd into the domain
// xenopsd created (build_pre: vCPUs, memory, the store and console event
// channels), in place of xenguest's xc_domain_restore.  xenopsd reads the
// image's framing itself and says `restore:xenguest` once it has read the
// Libxc header; the body is then ours up to and including its END, and not
// one byte more: xenopsd reads its next header (QEMU, varstored, swtpm, End)
// from the same fd as soon as `result:xenguest STORE CONSOLE` arrives.  The
// domain is left built and paused; xenopsd introduces it to xenstore
// (build_post) and unpauses it.
//
// xenguest's other restore side effects (the VM's platform/ keys: HPET, time
// offset, vCPU affinity, weight and cap before the body; the VM generation
// id after it, checked before it) go through the backend
// (stream/domain/xen/restore_platform.hpp).
//
// Progress: `info:` lines as on the save side, from the pages that have
// arrived (restore_progress.hpp), at most one per progress-interval-ms, and
// 100 right before the result.  xenopsd's restore loop logs them (its
// receive_success skips `info:` lines) and waits for the result.
#include "libxl-plugin/emu.hpp"

#include "libxl-plugin/emu_config.hpp"
#include "libxl-plugin/helper.hpp"
#include "libxl-plugin/helper_pipe.hpp"
#include "libxl-plugin/helper_supervisor.hpp"
#include "libxl-plugin/restore_progress.hpp"

#include "stream/failpoint.hpp"
#include "stream/receiver.hpp"


namespace fastmig::emu {

int run_emu_restore(const EmuArgs& a, XenopsdLink& xenopsd, helper::HelperBackend& backend)
{
    using namespace fastmig::helper;
    std::string who = domain_label(a.domid, "");
    bool handed_over = false;
    try {
        xenopsd.start_reader();
        // main() peeked at this line before choosing fastmig over the stock
        // emu-manager, so it is there already.
        std::string first = xenopsd.next_line(std::chrono::seconds(10), "the start of the restore");
        if (first != "restore:xenguest")
            throw Error(who, Phase::setup, "xenopsd sent '" + first + "', expected 'restore:xenguest'");

        RestoreParams params{a.domid, *a.store_port, 0, *a.console_port, 0};
        backend.set_log(log_line);
        // What xenguest does besides the memory (restore_platform.hpp): the
        // part before its xc_domain_restore now, outside the downtime.
        xen::RestorePlatform platform;
        try {
            // Refuses a malformed key, the generation id too (xenguest finds
            // that one only after the whole body, in set_genid): before any
            // page, so the source still runs the guest when the error comes.
            platform = xen::parse_restore_platform(backend.platform_keys(a.domid));
            log_line(who + ": platform: " + xen::describe(platform));
            backend.apply_platform(a.domid, platform, HelperBackend::PlatformStep::before_stream);
        } catch (const Error& e) {
            throw Error(who, Phase::setup, e.cause());
        }
        std::unique_ptr<DomainProvider> provider;
        try {
            provider = backend.provider(params);
        } catch (const Error& e) {
            throw Error(who, Phase::setup, e.cause());
        }
        ProgressProvider counted(*provider, progress_interval(), [&](unsigned percent) {
            try {
                xenopsd.progress(percent);
            } catch (const std::exception&) {
                // xenopsd gone: its reader has cancelled the stream already.
            }
        });
        ReceiveOptions ro;
        ro.one_way = true;
        ro.kinds = backend.kinds();
        SendOptions so; // FASTMIG_HELPER_OPTIONS: --timeout-ms applies here too
        helper_send_options(so);
        ro.io_timeout = so.io_timeout;
        ro.log = [&](const std::string& line) { log_line(who + ": " + line); };
        std::string handover_error;
        ro.built = [&](IncomingDomain& counting, const ReceiveResult& r) {
            IncomingDomain& d = ProgressProvider::backend_domain(counting);
            // The part xenguest does after xc_domain_restore: the memory is
            // the guest's now.  A failure here fails the restore without a
            // result; xenopsd destroys the paused domain, as after xenguest.
            backend.apply_platform(a.domid, platform, HelperBackend::PlatformStep::after_build);
            RestoreResults res = backend.restore_results(d);
            who = domain_label(a.domid, d.name());
            log_line(restored_summary(who, r) + "; paused, xenopsd starts it");
            xenopsd.progress(100);
            xenopsd.send("result:xenguest " + std::to_string(res.store_gfn) + " " + std::to_string(res.console_gfn));
            handed_over = true;
            xenopsd.close();
            release_supervisor();
        };
        if (auto line = widen_pipe(a.fd, kDestinationPipeBytes); !line.empty())
            log_line(who + ": " + line);
        xenopsd.progress(0);
        receive_domain(a.fd, counted, ro);
        if (!handed_over)
            throw Error(who, Phase::finish, "internal: the restored domain was never handed to xenopsd");
        failpoint("emu:after-handover"); // xenopsd has moved on; the teardown is ours
        return kExitOk;
    } catch (const std::exception& e) {
        if (handed_over) { // only the teardown failed: xenopsd has the domain
            log_line("after the hand-over: " + error_line(a.domid, who, Phase::finish, e));
            return kExitOk;
        }
        std::string msg = error_line(a.domid, who, Phase::receive, e);
        if (msg.find("closed the connection") != std::string::npos)
            msg += " (the stream ended before its END record: truncated image, or the source gave up)";
        log_line("restore failed: " + msg);
        xenopsd.send_error("fastmig restore " + msg);
        return kExitFailed;
    }
}

} // namespace fastmig::emu
