// XenRestoreDomain (xen_restore_domain.hpp) at the end of the stream: the
// platform state, PV or HVM-class, and what a PV guest needs before it runs
// (its free pages cleared, vCPUs, pinned tables, its p2m).  All of it is
// downtime.
#include "stream/domain/xen/xen_restore_domain.hpp"

#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/guest_checks.hpp"
#include "stream/domain/xen/hvm_state.hpp"
#include "stream/domain/xen/pv_pagetable.hpp"
#include "stream/domain/xen/pv_state.hpp"

#include "stream/clock.hpp"

#include <sys/mman.h>

#include <cstdio>

#include <algorithm>

namespace fastmig::xen {

namespace {

// Each step of a restore with its time, for the "restored" line: all of it
// is downtime.
class StepLog {
public:
    void lap(const std::string& what)
    {
        const std::uint64_t now = monotonic_ns();
        char ms[32];
        std::snprintf(ms, sizeof ms, " %.1f ms", double(now - t_) / 1e6);
        line_ += (line_.empty() ? "" : ", ") + what + ms;
        t_ = now;
    }
    const std::string& str() const { return line_; }

private:
    std::string line_;
    std::uint64_t t_ = monotonic_ns();
};

} // namespace

void XenRestoreDomain::restore_state(const std::vector<StateBlob>& state)
{
    in_phase(who_, Phase::restore, [&] { hvm_ ? restore_hvm(state) : restore(state); });
}

// libxc's HVM restore (xg_sr_restore_x86_hvm.c), as hvm_restore_plan
// orders it, after every record and every set-once param was checked.
void XenRestoreDomain::restore_hvm(const std::vector<StateBlob>& state)
{
    StepLog steps;
    auto lap = [&](const std::string& what) { steps.lap(what); };
    HvmState st = parse_hvm_state(state, p2m_.size(), info_.max_vcpu_id);
    auto conflicts = hvm_param_conflicts(st.params, [&](std::uint32_t index) {
        std::uint64_t v = 0;
        if (xc_hvm_param_get(h_.xch, p_.domid, index, &v) < 0)
            fail_errno(who_, Phase::restore, "cannot read " + hvm_param_name(index));
        return v;
    });
    if (!conflicts.empty()) {
        std::string all;
        for (const auto& c : conflicts)
            all += (all.empty() ? "" : "; ") + c;
        throw Error("the stream's HVM params do not fit this domain: " + all);
    }
    lap("checked");
    for (const auto& step : hvm_restore_plan(st)) {
        using namespace hvm_param;
        switch (step.step) {
        case HvmStep::set_cpu_policy:
            if (set_cpu_policy(st.cpuid_policy, st.msr_policy, Phase::restore))
                lap("CPU policy");
            break;
        case HvmStep::populate_missing: {
            // Every gfn with a page at the source and none here yet (a
            // zero page still waiting, or one never named).
            std::vector<Pfn> missing;
            for (Pfn p = 0; p < p2m_.size(); ++p)
                if (!st.holes.hole(p) && p2m(p) == kInvalidFrame)
                    missing.push_back(p);
            waiting_->add(missing);
            const std::size_t n = waiting_->resolve(0, p2m_.size(), st.holes, [&](std::span<const Pfn> ps) {
                populate_zeroed(ps, Phase::restore);
            });
            lap(std::to_string(n) + " zero pages populated");
            break;
        }
        case HvmStep::set_tsc:
            if (xc_domain_set_tsc_info(h_.xch, p_.domid, st.tsc->mode, st.tsc->nsec, st.tsc->khz,
                                       st.tsc->incarnation) < 0)
                fail_errno(who_, Phase::restore, "cannot set the TSC info");
            break;
        case HvmStep::clear_page:
            if (xc_clear_domain_page(h_.xch, p_.domid, step.a) < 0)
                fail_errno(who_, Phase::restore, "cannot clear the special page at gfn " + hex(step.a));
            break;
        case HvmStep::set_param:
            set_param(std::uint32_t(step.a), step.b);
            break;
        case HvmStep::set_store_evtchn:
            set_param(kStoreEvtchn, p_.store_evtchn);
            break;
        case HvmStep::set_console_evtchn:
            set_param(kConsoleEvtchn, p_.console_evtchn);
            lap("TSC and " + std::to_string(st.params.params.size()) + " params");
            break;
        case HvmStep::set_context: {
            std::vector<std::uint8_t> ctx = st.context;
            if (xc_domain_hvm_setcontext(h_.xch, p_.domid, ctx.data(), std::uint32_t(ctx.size())) < 0)
                fail_errno(who_, Phase::restore, "Xen refused the HVM context (" + std::to_string(ctx.size()) +
                                                     " bytes, " + std::to_string(st.context_summary.nr_cpus) +
                                                     " vCPUs)");
            lap("HVM context");
            break;
        }
        case HvmStep::seed_grant_table:
            if (xc_dom_gnttab_seed(h_.xch, p_.domid, true, step.a, step.b, p_.console_domid, p_.store_domid) < 0)
                fail_errno(who_, Phase::restore, "cannot seed the grant table");
            lap("grant table");
            break;
        }
    }
    result_.store_mfn = st.params.store_gfn().value_or(0);
    result_.console_mfn = st.params.console_gfn().value_or(0);
    restored_ = true;
    log_("restored: " + std::to_string(p2m_.size()) + " gfns, " + std::to_string(st.holes.count()) + " holes, " +
         std::to_string(st.context_summary.nr_cpus) + " vCPUs, store gfn " + hex(result_.store_mfn) +
         ", console gfn " + hex(result_.console_mfn) + "; " + steps.str());
}

void XenRestoreDomain::set_param(std::uint32_t index, std::uint64_t value)
{
    if (xc_hvm_param_set(h_.xch, p_.domid, index, value) < 0)
        fail_errno(who_, Phase::restore, "cannot set " + hvm_param_name(index) + " = " + hex(value));
}

// Everything that xc_domain_restore does at the end of a PV stream.
void XenRestoreDomain::restore(const std::vector<StateBlob>& state)
{
    // Each step's time goes in the "restored" line: this all happens in
    // the downtime.
    StepLog steps;
    auto lap = [&](const std::string& what) { steps.lap(what); };
    PvState st = parse_pv_state(state, p2m_.size(), info_.max_vcpu_id);
    drain_clearer();
    lap("free pages cleared");
    // First, as libxc does it with the static data: the vCPUs' xsave
    // and MSR state below are checked against this policy.
    if (set_cpu_policy(st.cpuid_policy, st.msr_policy, Phase::restore))
        lap("CPU policy");
    const auto& tsc = st.tsc;
    const auto& types = st.types;
    auto& vcpus = st.vcpus;
    if (tsc && xc_domain_set_tsc_info(h_.xch, p_.domid, tsc->mode, tsc->nsec, tsc->khz, tsc->incarnation) < 0)
        fail_errno(who_, Phase::restore, "cannot set the TSC info");
    {
        auto sh = map_frames(h_.fmem, p_.domid, PROT_READ | PROT_WRITE, {xen_pfn_t(info_.shared_info_frame)},
                             who_, Phase::restore, "the shared info page");
        merge_shared_info(st.shared_info, {sh.page(0), kPageSize});
    }
    lap("state and shared info");

    // Zero and free pages got their frames as they arrived
    // (zero_fresh_pages); a page the stream never named at all but whose
    // type says it exists still needs one, cleared.
    std::vector<Pfn> missing;
    for (Pfn p = 0; p < p2m_.size(); ++p)
        if (p2m_[p] == kInvalidFrame && page_type_to_populate(types.get(p)))
            missing.push_back(p);
    if (!missing.empty()) {
        log_("restore: " + std::to_string(missing.size()) + " pages the stream never named get cleared frames");
        clear_pages(missing, Phase::restore);
        lap(std::to_string(missing.size()) + " unnamed pages");
    }

    {
        auto tables = early_.left_at_end(types);
        localise(tables, types, Phase::restore, nullptr);
        const std::size_t early = early_.size();
        lap(std::to_string(tables.size()) + " page tables localised" +
            (early ? " (" + std::to_string(early) + " more before the suspension)" : std::string()));
    }

    for (auto& [id, v] : vcpus)
        set_vcpu(id, v.basic, v.extra, types);
    {
        char sc[48];
        std::snprintf(sc, sizeof sc, "vCPUs (setcontext %.1f ms)", double(setcontext_ns_) / 1e6);
        lap(sc);
    }

    pin_pagetables(types);
    lap("pinned");
    write_guest_p2m(st.p2m_frames, types);
    lap("guest p2m");

    if (xc_dom_gnttab_seed(h_.xch, p_.domid, false, result_.console_mfn, result_.store_mfn, p_.console_domid,
                           p_.store_domid) < 0)
        fail_errno(who_, Phase::restore, "cannot seed the grant table");
    lap("grant table");
    restored_ = true;
    log_("restored: " + std::to_string(p2m_.size()) + " pfns, " + std::to_string(types.count_not_plain()) +
         " typed pages, " + std::to_string(vcpus.size()) + " vCPUs; " + steps.str());
}

void XenRestoreDomain::set_vcpu(std::uint32_t id, std::vector<std::uint8_t>& basic,
                                const std::map<std::uint32_t, std::vector<std::uint8_t>>& extra,
                                const PfnTypeMap& types)
{
    const std::string who = "vcpu" + std::to_string(id);
    Pfn si = localise_vcpu_basic(basic, id, *this, types);
    if (id == 0) {
        auto map = map_frames(h_.fmem, p_.domid, PROT_READ | PROT_WRITE, {xen_pfn_t(p2m(si))}, who_,
                              Phase::restore, "the start_info page");
        auto r = localise_start_info({map.page(0), kPageSize}, *this, p_.store_evtchn, p_.console_evtchn,
                                     std::uint64_t(info_.shared_info_frame) << kPageShift);
        result_.store_mfn = r.store_mfn;
        result_.console_mfn = r.console_mfn;
    }
    vcpu_guest_context_any_t ctx{};
    std::memcpy(&ctx.x64, basic.data(), sizeof ctx.x64);
    // Xen validates the whole page-table tree under the new CR3 here
    // (vCPU 0's, at least): timed apart in the "restored" line.
    const std::uint64_t t0 = monotonic_ns();
    const int rc = xc_vcpu_setcontext(h_.xch, p_.domid, id, &ctx);
    setcontext_ns_ += monotonic_ns() - t0;
    if (rc < 0)
        fail_errno(who_, Phase::restore, "cannot set " + who + "'s context");
    for (auto& [type, body] : extra) {
        xen_domctl domctl{};
        domctl.domain = p_.domid;
        if (type == rec::kX86PvVcpuExtended) {
            if (body.size() > sizeof domctl.u.ext_vcpucontext)
                throw StreamError(who + "'s extended context of " + std::to_string(body.size()) + " bytes");
            domctl.cmd = XEN_DOMCTL_set_ext_vcpucontext;
            std::memcpy(&domctl.u.ext_vcpucontext, body.data(), body.size());
            domctl.u.ext_vcpucontext.vcpu = id;
            domctl.u.ext_vcpucontext.size = std::uint32_t(body.size());
            if (xc_domctl(h_.xch, &domctl) < 0)
                fail_errno(who_, Phase::restore, "cannot set " + who + "'s extended context");
            continue;
        }
        if (type == rec::kX86PvVcpuMsrs && body.size() % sizeof(xen_domctl_vcpu_msr_t))
            throw StreamError(who + "'s MSR record of " + std::to_string(body.size()) +
                              " bytes is not a whole number of MSRs");
        HypercallBuffer hb(h_.xch, body.size(), who_, Phase::restore, who + "'s state");
        std::memcpy(hb.get(), body.data(), body.size());
        if (type == rec::kX86PvVcpuXsave) {
            domctl.cmd = XEN_DOMCTL_setvcpuextstate;
            domctl.u.vcpuextstate.vcpu = id;
            domctl.u.vcpuextstate.size = body.size();
            set_xen_guest_handle_raw(domctl.u.vcpuextstate.buffer, hb.get<std::uint64_t>());
        } else {
            domctl.cmd = XEN_DOMCTL_set_vcpu_msrs;
            domctl.u.vcpu_msrs.vcpu = id;
            domctl.u.vcpu_msrs.msr_count = std::uint32_t(body.size() / sizeof(xen_domctl_vcpu_msr_t));
            set_xen_guest_handle_raw(domctl.u.vcpu_msrs.msrs, hb.get<xen_domctl_vcpu_msr_t>());
        }
        if (xc_domctl(h_.xch, &domctl) < 0)
            fail_errno(who_, Phase::restore,
                       "cannot set " + who + (type == rec::kX86PvVcpuXsave ? "'s xsave state" : "'s MSRs"));
    }
}

void XenRestoreDomain::pin_pagetables(const PfnTypeMap& types)
{
    std::vector<mmuext_op> ops;
    auto flush = [&] {
        if (!ops.empty() && xc_mmuext_op(h_.xch, ops.data(), unsigned(ops.size()), p_.domid) < 0)
            fail_errno(who_, Phase::restore, "cannot pin a batch of " + std::to_string(ops.size()) +
                                                 " page tables (a table Xen refuses as invalid?)");
        ops.clear();
    };
    static const unsigned cmd[] = {0, MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_PIN_L3_TABLE,
                                   MMUEXT_PIN_L4_TABLE};
    for (Pfn p = 0; p < p2m_.size(); ++p) {
        PageType t = types.get(p);
        if (!page_type_pinned(t))
            continue;
        mmuext_op op{};
        op.cmd = cmd[page_type_level(t)];
        op.arg1.mfn = p2m(p);
        ops.push_back(op);
        if (ops.size() == kPinBatch)
            flush();
    }
    flush();
}

// The guest finds its memory through its own p2m: overwrite it with the
// frames this host gave (the frames holding it are plain guest pages).
void XenRestoreDomain::write_guest_p2m(const P2mFrames& f, const PfnTypeMap& types)
{
    std::vector<Pfn> pfns;
    for (std::size_t i = 0; i < f.frame_pfns.size(); ++i) {
        Pfn p = f.frame_pfns[i];
        if (types.get(p) != kPfinfoNotab)
            throw StreamError("p2m frame " + std::to_string(i) + " at pfn " + hex(p) + " has type " +
                              page_type_name(types.get(p)));
        dest_mfn_of(*this, p, "p2m frame " + std::to_string(i));
        pfns.push_back(p);
    }
    auto map = map_pfns(pfns, PROT_READ | PROT_WRITE, Phase::restore);
    std::lock_guard<std::mutex> g(m_);
    for (Pfn p = 0; p < p2m_.size(); ++p) {
        std::uint64_t v = p2m_[p];
        std::memcpy(map.page(p / (kPageSize / 8)) + (p % (kPageSize / 8)) * 8, &v, 8);
    }
}

// The PV clearer's pages not cleared yet are cleared now: the guest
// must not run on a frame another domain freed.  In the downtime, so
// its time is logged.
void XenRestoreDomain::drain_clearer()
{
    clear_phase_ = Phase::restore;
    auto d = clearer_->drain();
    char line[160];
    std::snprintf(line, sizeof line,
                  "free pages: %llu cleared in the background, %llu at the end in %.1f ms",
                  (unsigned long long)d.background, (unsigned long long)d.at_end, double(d.ns) / 1e6);
    log_(line);
}

} // namespace fastmig::xen
