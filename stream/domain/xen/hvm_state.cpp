#include "stream/domain/xen/hvm_state.hpp"

#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/state_records.hpp"

#include <map>

namespace fastmig::xen {

HvmState parse_hvm_state(const std::vector<StateBlob>& blobs, std::uint64_t nr_pages, std::uint32_t max_vcpu_id)
{
    if (nr_pages == 0)
        throw StreamError("platform state for a guest of no pages");
    HvmState s;
    s.holes = HoleMap(nr_pages);
    std::map<std::uint32_t, unsigned> seen;
    Pfn covered = 0; // hole blobs cover [0, covered) so far
    for (const auto& b : blobs) {
        const char* name = check_state_record(b.type, true);
        if (b.type != rec::kFastmigHvmHoles && seen[b.type]++)
            throw StreamError(std::string("a second ") + name + " record");
        switch (b.type) {
        case rec::kX86TscInfo:
            s.tsc = parse_tsc_info(b.data);
            break;
        case rec::kHvmContext:
            s.context_summary = check_hvm_context(b.data, max_vcpu_id);
            s.context = b.data;
            break;
        case rec::kHvmParams:
            s.params = parse_hvm_params(b.data, nr_pages);
            break;
        case rec::kX86CpuidPolicy:
        case rec::kX86MsrPolicy:
            check_cpu_policy(b.type, b.data);
            (b.type == rec::kX86CpuidPolicy ? s.cpuid_policy : s.msr_policy) = b.data;
            break;
        case rec::kFastmigHvmHoles: {
            auto h = parse_hole_blob(b.data, nr_pages);
            if (h.start != covered)
                throw StreamError("FASTMIG_HVM_HOLES blob starts at " + hex(h.start) + ", the map so far ends at " +
                                  hex(covered));
            for (auto [first, n] : h.runs)
                s.holes.set_holes(first, n);
            covered = h.end;
            ++seen[b.type];
            break;
        }
        }
    }
    if (!seen.count(rec::kHvmContext))
        throw StreamError("the stream lacks HVM_CONTEXT");
    if (!seen.count(rec::kFastmigHvmHoles))
        throw StreamError("the stream lacks FASTMIG_HVM_HOLES");
    if (covered != nr_pages)
        throw StreamError("FASTMIG_HVM_HOLES covers " + std::to_string(covered) + " of the " +
                          std::to_string(nr_pages) + " pages");
    if (s.context_summary.nr_cpus == 0)
        throw StreamError("HVM_CONTEXT holds no vCPU");
    return s;
}

const char* hvm_step_name(HvmStep s)
{
    switch (s) {
    case HvmStep::set_cpu_policy:
        return "set_cpu_policy";
    case HvmStep::populate_missing:
        return "populate_missing";
    case HvmStep::set_tsc:
        return "set_tsc";
    case HvmStep::clear_page:
        return "clear_page";
    case HvmStep::set_param:
        return "set_param";
    case HvmStep::set_store_evtchn:
        return "set_store_evtchn";
    case HvmStep::set_console_evtchn:
        return "set_console_evtchn";
    case HvmStep::set_context:
        return "set_context";
    case HvmStep::seed_grant_table:
        return "seed_grant_table";
    }
    return "?";
}

std::vector<HvmRestoreStep> hvm_restore_plan(const HvmState& st)
{
    std::vector<HvmRestoreStep> plan;
    if (!st.cpuid_policy.empty() || !st.msr_policy.empty())
        plan.push_back({HvmStep::set_cpu_policy});
    plan.push_back({HvmStep::populate_missing});
    if (st.tsc)
        plan.push_back({HvmStep::set_tsc});
    for (const auto& p : st.params.params) {
        using namespace hvm_param;
        // These pages are the guest's rings with its backends: they start
        // empty at the destination, whose backends start afresh.  One the
        // source had no page at (the ioreq pages while an ioreq server has
        // them out of the physmap) stays a hole: libxc's clear fails there,
        // unchecked; here it is not tried.
        if ((p.index == kStorePfn || p.index == kConsolePfn || p.index == kIoreqPfn || p.index == kBufioreqPfn) &&
            !st.holes.hole(p.value))
            plan.push_back({HvmStep::clear_page, p.value});
        plan.push_back({HvmStep::set_param, p.index, p.value});
    }
    plan.push_back({HvmStep::set_store_evtchn});
    plan.push_back({HvmStep::set_console_evtchn});
    plan.push_back({HvmStep::set_context});
    plan.push_back({HvmStep::seed_grant_table, st.params.console_gfn().value_or(0), st.params.store_gfn().value_or(0)});
    return plan;
}

} // namespace fastmig::xen
