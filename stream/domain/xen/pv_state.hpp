// The destination's view of a PV guest's platform state: every
// PLATFORM_STATE blob of the stream checked and sorted, before any of it
// touches the domain (hostile input: each record once, known types only,
// sizes and ranges checked, nothing required missing).
#pragma once

#include "stream/domain.hpp"
#include "stream/domain/xen/pv_page_types.hpp"
#include "stream/domain/xen/pv_records.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace fastmig::xen {

struct PvVcpuState {
    std::vector<std::uint8_t> basic;                              // vcpu_guest_context
    std::map<std::uint32_t, std::vector<std::uint8_t>> extra;     // record type -> context
};

struct PvState {
    P2mFrames p2m_frames;
    std::optional<TscInfo> tsc;
    std::vector<std::uint8_t> shared_info; // 4096 bytes
    PfnTypeMap types;
    std::map<std::uint32_t, PvVcpuState> vcpus; // by vCPU id
    // Empty when the source sent none (a stream of an older fastmig): libxl
    // then keeps the policy it gave the domain (static_data_done).
    std::vector<std::uint8_t> cpuid_policy;
    std::vector<std::uint8_t> msr_policy;
};

// nr_pages: the stream's page count (the p2m has nr_pages entries);
// max_vcpu_id: the destination domain's last vCPU.  StreamError names the
// record for anything wrong or missing.
PvState parse_pv_state(const std::vector<StateBlob>& blobs, std::uint64_t nr_pages, std::uint32_t max_vcpu_id);

} // namespace fastmig::xen
