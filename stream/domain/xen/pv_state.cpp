#include "stream/domain/xen/pv_state.hpp"

#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/state_records.hpp"

namespace fastmig::xen {

PvState parse_pv_state(const std::vector<StateBlob>& blobs, std::uint64_t nr_pages, std::uint32_t max_vcpu_id)
{
    if (nr_pages == 0)
        throw StreamError("platform state for a guest of no pages");
    PvState s;
    s.types = PfnTypeMap(nr_pages);
    std::map<std::uint32_t, unsigned> seen;
    for (const auto& b : blobs) {
        const char* name = check_state_record(b.type, false);
        bool per_vcpu = b.type == rec::kX86PvVcpuBasic || b.type == rec::kX86PvVcpuExtended ||
                        b.type == rec::kX86PvVcpuXsave || b.type == rec::kX86PvVcpuMsrs;
        if (!per_vcpu && b.type != rec::kFastmigPfnTypes && seen[b.type]++)
            throw StreamError(std::string("a second ") + name + " record");
        switch (b.type) {
        case rec::kX86PvInfo:
            check_pv_info(b.data);
            break;
        case rec::kX86PvP2mFrames:
            s.p2m_frames = parse_p2m_frames(b.data, nr_pages - 1);
            break;
        case rec::kFastmigPfnTypes:
            s.types.apply(b.data);
            ++seen[b.type];
            break;
        case rec::kSharedInfo:
            if (b.data.size() != shinfo::kSize)
                throw StreamError("SHARED_INFO of " + std::to_string(b.data.size()) + " bytes, expected 4096");
            s.shared_info = b.data;
            break;
        case rec::kX86TscInfo:
            s.tsc = parse_tsc_info(b.data);
            break;
        case rec::kX86CpuidPolicy:
        case rec::kX86MsrPolicy:
            check_cpu_policy(b.type, b.data);
            (b.type == rec::kX86CpuidPolicy ? s.cpuid_policy : s.msr_policy) = b.data;
            break;
        default: {
            auto v = parse_vcpu_blob(b.type, b.data, max_vcpu_id);
            auto& slot = s.vcpus[v.vcpu_id];
            bool dup = b.type == rec::kX86PvVcpuBasic ? !slot.basic.empty() : slot.extra.count(b.type) > 0;
            if (dup)
                throw StreamError(std::string("a second ") + name + " record for vcpu" + std::to_string(v.vcpu_id));
            if (b.type == rec::kX86PvVcpuBasic)
                slot.basic.assign(v.context.begin(), v.context.end());
            else
                slot.extra[b.type].assign(v.context.begin(), v.context.end());
        }
        }
    }
    for (std::uint32_t need : {rec::kX86PvInfo, rec::kX86PvP2mFrames, rec::kSharedInfo, rec::kFastmigPfnTypes})
        if (!seen.count(need))
            throw StreamError(std::string("the stream lacks ") + state_record_name(need));
    for (const auto& [id, v] : s.vcpus)
        if (v.basic.empty())
            throw StreamError("vcpu" + std::to_string(id) + " has extended state but no basic context");
    if (!s.vcpus.count(0))
        throw StreamError("the stream lacks vcpu0's basic context");
    return s;
}

} // namespace fastmig::xen
