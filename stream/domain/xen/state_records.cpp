#include "stream/domain/xen/state_records.hpp"

#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/hvm_abi.hpp"
#include "stream/domain/xen/pv_abi.hpp"
#include "stream/types.hpp"

#include <string>

namespace fastmig::xen {

namespace {

enum Class { pv = 1, hvm = 2, both = 3 };

struct Known {
    std::uint32_t type;
    const char* name;
    Class cls;
};

constexpr Known kKnown[] = {
    {rec::kX86PvInfo, "X86_PV_INFO", pv},
    {rec::kX86PvP2mFrames, "X86_PV_P2M_FRAMES", pv},
    {rec::kX86PvVcpuBasic, "X86_PV_VCPU_BASIC", pv},
    {rec::kX86PvVcpuExtended, "X86_PV_VCPU_EXTENDED", pv},
    {rec::kX86PvVcpuXsave, "X86_PV_VCPU_XSAVE", pv},
    {rec::kX86PvVcpuMsrs, "X86_PV_VCPU_MSRS", pv},
    {rec::kSharedInfo, "SHARED_INFO", pv},
    {rec::kFastmigPfnTypes, "FASTMIG_PFN_TYPES", pv},
    {rec::kX86TscInfo, "X86_TSC_INFO", both},
    {rec::kX86CpuidPolicy, "X86_CPUID_POLICY", both},
    {rec::kX86MsrPolicy, "X86_MSR_POLICY", both},
    {rec::kHvmContext, "HVM_CONTEXT", hvm},
    {rec::kHvmParams, "HVM_PARAMS", hvm},
    {rec::kFastmigHvmHoles, "FASTMIG_HVM_HOLES", hvm},
};

const Known* find(std::uint32_t type)
{
    for (const auto& k : kKnown)
        if (k.type == type)
            return &k;
    return nullptr;
}

} // namespace

const char* state_record_name(std::uint32_t type)
{
    const Known* k = find(type);
    return k ? k->name : nullptr;
}

const char* check_state_record(std::uint32_t type, bool for_hvm)
{
    const Known* k = find(type);
    if (k && (k->cls & (for_hvm ? hvm : pv)))
        return k->name;
    const char* name = state_record_name(type);
    throw StreamError("platform state record of type " + hex(type) +
                      (name ? std::string(" (") + name +
                                  (for_hvm ? ") is a PV record: the stream is not an HVM/PVH guest's"
                                           : ") is an HVM record: the stream is not a PV guest's")
                            : std::string(" is not one the Xen ") + (for_hvm ? "HVM" : "PV") + " backend knows"));
}

} // namespace fastmig::xen
