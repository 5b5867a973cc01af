// The destination's view of an HVM-class guest's platform state (HVM and
// PVH), every PLATFORM_STATE blob checked before any of it touches the
// domain, and the order in which the restore applies it: the steps of
// libxc's HVM restore (xg_sr_restore_x86_hvm.c), as a list that the backend
// executes and the unit tests check without Xen.
#pragma once

#include "stream/domain.hpp"
#include "stream/domain/xen/hvm_records.hpp"
#include "stream/domain/xen/pv_records.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fastmig::xen {

struct HvmState {
    std::optional<TscInfo> tsc;
    std::vector<std::uint8_t> context; // HVM_CONTEXT, checked
    HvmContextSummary context_summary;
    HvmParams params;
    HoleMap holes; // the final map, covering every pfn
    // Empty when the source sent none: libxl's policy stays.
    std::vector<std::uint8_t> cpuid_policy;
    std::vector<std::uint8_t> msr_policy;
};

// nr_pages: the stream's page count; max_vcpu_id: the destination domain's
// last vCPU.  Refused (StreamError naming the record): unknown or PV
// records, a record twice, HVM_CONTEXT or the hole map missing, hole blobs
// that do not cover [0, nr_pages) in order, and whatever each record's own
// check refuses.
HvmState parse_hvm_state(const std::vector<StateBlob>& blobs, std::uint64_t nr_pages, std::uint32_t max_vcpu_id);

// One step of the restore, in libxc's order.
enum class HvmStep {
    set_cpu_policy,    // the source's CPUID/MSR policy (when sent)
    populate_missing,  // every pfn with a page at the source and none here yet: a cleared frame
    set_tsc,           // X86_TSC_INFO (when sent)
    clear_page,        // gfn = a: the store, console, ioreq and bufioreq pages start empty (holes excepted)
    set_param,         // index a = value b (from HVM_PARAMS, stream order)
    set_store_evtchn,  // HVM_PARAM_STORE_EVTCHN = the port libxl allocated
    set_console_evtchn,
    set_context,       // xc_domain_hvm_setcontext: vCPUs and devices, after all memory and params
    seed_grant_table,  // console gfn a, store gfn b
};
const char* hvm_step_name(HvmStep s);

struct HvmRestoreStep {
    HvmStep step;
    std::uint64_t a = 0;
    std::uint64_t b = 0;
};

std::vector<HvmRestoreStep> hvm_restore_plan(const HvmState& st);

} // namespace fastmig::xen
