// The platform-state records of an HVM-class guest (HVM and PVH: to Xen and
// to libxc both are HVM domains), as the Xen backend produces and consumes
// them.  Each blob's state_type is the libxc record type and its bytes the
// libxc record body (HVM_CONTEXT, HVM_PARAMS), plus fastmig's hole map.
// Pure: no Xen header, unit-tested and fuzzed.
#pragma once

#include "stream/domain.hpp"
#include "stream/domain/xen/hvm_abi.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace fastmig::xen {

// ---- HVM_PARAMS: { u32 count, u32 reserved, { u64 index, u64 value }[count] }.
struct HvmParam {
    std::uint32_t index = 0;
    std::uint64_t value = 0;
    bool operator==(const HvmParam&) const = default;
};
StateBlob encode_hvm_params(std::span<const HvmParam> params);

// The destination's view: params in stream order, each checked.
struct HvmParams {
    std::vector<HvmParam> params;
    // The store and console gfns the guest uses (for libxl and the grant
    // table), when the stream has them.
    std::optional<std::uint64_t> store_gfn() const { return find(hvm_param::kStorePfn); }
    std::optional<std::uint64_t> console_gfn() const { return find(hvm_param::kConsolePfn); }
    std::optional<std::uint64_t> find(std::uint32_t index) const;
};
// Hostile input: the length must match the count, the reserved field is 0,
// every index is one libxc saves (PAE_ENABLED, obsolete, is dropped as
// libxc does), none twice, and the gfn-valued ones lie within the guest's
// nr_pages (the ioreq server range as a whole).  StreamError names the
// param.
HvmParams parse_hvm_params(std::span<const std::uint8_t> body, std::uint64_t nr_pages);
// "STORE_PFN (1)" for messages.
std::string hvm_param_name(std::uint32_t index);
// Xen lets these params be set once (hvm_allow_set_param: a second,
// different, non-zero value is refused with EEXIST).
bool hvm_param_set_once(std::uint32_t index);
// Params of `p` that the domain already holds with another non-zero value
// (current(index) reads the domain): Xen would refuse them part way through
// the restore, so the destination checks them all first.  One line each.
template <class Current>
std::vector<std::string> hvm_param_conflicts(const HvmParams& p, Current&& current);

// ---- HVM_CONTEXT: Xen's blob (xc_domain_hvm_getcontext), checked before it
// reaches xc_domain_hvm_setcontext.
struct HvmContextSummary {
    std::uint32_t nr_records = 0; // descriptors, END excluded
    std::uint32_t nr_cpus = 0;    // CPU records
    std::uint32_t gtsc_khz = 0;   // from the header
};
// Checks the descriptor chain: HEADER first (its size, magic and version),
// every descriptor and its payload inside the blob, type codes known to Xen
// 4.17, CPU instances within max_vcpu_id, and END (length 0) last with
// nothing after it.  StreamError names the offset.
HvmContextSummary check_hvm_context(std::span<const std::uint8_t> blob, std::uint32_t max_vcpu_id);

// ---- FASTMIG_HVM_HOLES: the pfns with no page (XTAB, BROKEN) of the range
// [start_pfn, end_pfn): { u64 start_pfn, u64 end_pfn, u32 count, u32
// reserved, { u64 first_pfn, u64 nr }[count] }.  Each blob speaks for its
// whole range (pfns of it not in a run have a page), so one blob is enough
// to act on; a full map is blobs covering [0, nr_pages) in order.
constexpr std::size_t kHoleBlobHeader = 24;
constexpr std::size_t kHoleRunSize = 16;

class HoleMap {
public:
    explicit HoleMap(std::uint64_t nr_pfns = 0) : holes_(nr_pfns, 0) {}
    std::uint64_t size() const { return holes_.size(); }
    // A byte per pfn: reader threads set different pfns concurrently.
    void set(Pfn pfn, bool hole);
    // [first, first + n) are holes (a run of a hole blob).
    void set_holes(Pfn first, std::uint64_t n);
    bool hole(Pfn pfn) const { return pfn < holes_.size() && holes_[pfn]; }
    std::uint64_t count() const;
    // Blobs of at most max_runs runs each, covering [0, size()): always at
    // least one.
    std::vector<StateBlob> encode(std::size_t max_runs) const;

private:
    std::vector<std::uint8_t> holes_;
};

// One blob, checked (ranges within nr_pages, runs sorted, disjoint, inside
// the blob's range, non-empty).
struct HoleBlob {
    Pfn start = 0, end = 0; // [start, end)
    std::vector<std::pair<Pfn, std::uint64_t>> runs;
};
HoleBlob parse_hole_blob(std::span<const std::uint8_t> body, std::uint64_t nr_pages);

// ---- Nested virtualisation from the CPU policy (X86_CPUID_POLICY body):
// true when the guest is offered VMX or SVM.
bool cpu_policy_offers_nested_virt(std::span<const std::uint8_t> cpuid_policy);

template <class Current>
std::vector<std::string> hvm_param_conflicts(const HvmParams& p, Current&& current)
{
    std::vector<std::string> out;
    for (const auto& e : p.params) {
        if (!hvm_param_set_once(e.index))
            continue;
        std::uint64_t now = current(e.index);
        if (now != 0 && now != e.value)
            out.push_back(hvm_param_name(e.index) + " is " + std::to_string(now) + " on this domain, the stream has " +
                          std::to_string(e.value) + " (Xen sets it once)");
    }
    return out;
}

} // namespace fastmig::xen
