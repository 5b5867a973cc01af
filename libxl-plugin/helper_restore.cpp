// --restore-domain: reads fastmig's one-way stream from io_fd into the
// domain libxl created, in place of xc_domain_restore.  Reads exactly up to
// the stream's END (libxl reads its own records after it on the same fd),
// leaves the domain built and paused (libxl unpauses it: `xl restore`, or
// xl migrate-receive after the source's "go"), then reports restore_results
// and complete.  On a failure the backend's destroy() runs: the sim backend
// destroys its half-built guest; the Xen backend leaves the paused domain to
// libxl, which created it and destroys it after a failed restore.
#include "libxl-plugin/helper.hpp"
#include "libxl-plugin/helper_pipe.hpp"

#include "stream/failpoint.hpp"
#include "stream/receiver.hpp"

#include <cstdio>

#include <fcntl.h>

namespace fastmig::helper {

namespace {

// Names the new domain to libxl's log as soon as it exists.
class LoggingProvider : public DomainProvider {
public:
    LoggingProvider(DomainProvider& inner, LibxlLink& libxl, std::uint32_t domid)
        : inner_(inner), libxl_(libxl), domid_(domid)
    {
    }
    std::unique_ptr<IncomingDomain> create(std::uint64_t nr_pages, std::uint32_t kind,
                                           const std::string& source_name) override
    {
        auto d = inner_.create(nr_pages, kind, source_name);
        libxl_.log(XtlLevel::info, "fastmig: restoring " + source_name + " into " + domain_label(domid_, d->name()) +
                                       ", " + std::to_string(nr_pages) + " pages");
        name = d->name();
        return d;
    }
    void check_capacity(std::uint64_t nr_pages, std::uint32_t kind, const std::string& source_name) override
    {
        inner_.check_capacity(nr_pages, kind, source_name);
    }
    std::string name;

private:
    DomainProvider& inner_;
    LibxlLink& libxl_;
    std::uint32_t domid_;
};

} // namespace

int run_restore(const RestoreArgs& a, LibxlLink& libxl, HelperBackend& backend)
{
    std::string who = domain_label(a.domid, "");
    RestoreResults results;
    int rc = -1;
    bool results_sent = false, completed_early = false;
    try {
        check_plain_stream(a.stream_type, a.io_fd, who);

        RestoreParams params{a.domid, a.store_evtchn, a.store_domid, a.console_evtchn, a.console_domid};
        backend.set_log([&](const std::string& line) { libxl.log(XtlLevel::detail, line); });
        std::unique_ptr<DomainProvider> inner;
        try {
            inner = backend.provider(params);
        } catch (const Error& e) {
            throw Error(who, Phase::setup, e.cause());
        }
        LoggingProvider provider(*inner, libxl, a.domid);

        ReceiveOptions ro;
        ro.one_way = true;
        ro.kinds = backend.kinds();
        SendOptions so; // the same FASTMIG_HELPER_OPTIONS: --timeout-ms applies here too
        helper_send_options(so);
        const auto settle = settle_limit();
        ro.io_timeout = so.io_timeout;
        ro.log = [&](const std::string& line) { libxl.log(XtlLevel::detail, who + ": " + line); };
        ro.accepted = [&](IncomingDomain& d) {
            // libxc calls it at STATIC_DATA_END, before any page; fastmig's
            // header plays that part.
            if (libxl.provides(Msg::static_data_done)) {
                int r = libxl.static_data_done(backend.static_data_missing(d));
                if (r != 0)
                    throw Error("libxl's static_data_done callback failed (answered " + std::to_string(r) + ")");
            }
        };
        // Built and restored: hand it to libxl right here (restore_results,
        // complete), so that the receiver's and the backend's teardown
        // (mappings, handles, buffers) runs after libxl has moved on, as on
        // the save side: the receiving libxl starts the guest only after its
        // helper has exited.
        ro.built = [&](IncomingDomain& d, const ReceiveResult& r) {
            results = backend.restore_results(d);
            who = domain_label(a.domid, d.name());
            libxl.log(XtlLevel::info, "fastmig: " + restored_summary(who, r) + "; paused, libxl starts it");
            results_sent = true; // tried: never twice
            libxl.restore_results(results.store_gfn, results.console_gfn);
            libxl.complete(0, 0);
            completed_early = true;
            settle_before_teardown(backend, a.domid, false, settle);
        };

        if (auto line = widen_pipe(a.io_fd, kDestinationPipeBytes); !line.empty())
            libxl.log(XtlLevel::detail, who + ": " + line);
        receive_domain(a.io_fd, provider, ro);
        if (!completed_early)
            throw Error(who, Phase::finish, "internal: the restored domain was never handed to libxl");
        failpoint("helper:after-handover"); // libxl has moved on; the teardown is ours
        return 0;
    } catch (const std::exception& e) {
        if (completed_early) { // only the teardown failed: libxl has the domain
            libxl.log(XtlLevel::warn, "fastmig: after the hand-over: " + error_line(a.domid, who, Phase::finish, e));
            return 0;
        }
        std::string msg = error_line(a.domid, who, Phase::receive, e);
        if (msg.find("closed the connection") != std::string::npos)
            msg += " (the stream ended before its END record: truncated image, or the source gave up)";
        libxl.log(XtlLevel::error, "fastmig: restore failed: " + msg);
        results = {};
    }
    // Sent whatever happened, as the stock helper does: libxl counts a
    // restore helper that exits without results as failed.
    try {
        if (!results_sent)
            libxl.restore_results(results.store_gfn, results.console_gfn);
    } catch (const std::exception& e) {
        libxl.log(XtlLevel::error, std::string("fastmig: restore_results: ") + e.what());
        rc = -1;
    }
    return rc;
}

} // namespace fastmig::helper
