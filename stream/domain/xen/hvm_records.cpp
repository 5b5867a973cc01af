#include "stream/domain/xen/hvm_records.hpp"

#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/pv_abi.hpp"

#include <algorithm>

namespace fastmig::xen {

namespace {

constexpr std::size_t kParamsHeader = 8;
constexpr std::size_t kParamEntry = 16;
// Far above the 16 libxc saves: a bound for hostile counts.
constexpr std::uint32_t kMaxParams = 64;
// libxc gives a device model 8 ioreq server pages; Xen keeps them in one
// unsigned long mask, so never more than 64.
constexpr std::uint64_t kMaxIoreqServerPages = 64;

bool gfn_param(std::uint32_t index)
{
    using namespace hvm_param;
    switch (index) {
    case kStorePfn:
    case kIoreqPfn:
    case kBufioreqPfn:
    case kPagingRingPfn:
    case kMonitorRingPfn:
    case kSharingRingPfn:
    case kConsolePfn:
    case kIoreqServerPfn:
        return true;
    default:
        return false;
    }
}

} // namespace

std::string hvm_param_name(std::uint32_t index)
{
    using namespace hvm_param;
    const char* n = nullptr;
    switch (index) {
    case kCallbackIrq: n = "CALLBACK_IRQ"; break;
    case kStorePfn: n = "STORE_PFN"; break;
    case kStoreEvtchn: n = "STORE_EVTCHN"; break;
    case kPaeEnabled: n = "PAE_ENABLED"; break;
    case kIoreqPfn: n = "IOREQ_PFN"; break;
    case kBufioreqPfn: n = "BUFIOREQ_PFN"; break;
    case kViridian: n = "VIRIDIAN"; break;
    case kHpetEnabled: n = "HPET_ENABLED"; break;
    case kIdentPt: n = "IDENT_PT"; break;
    case kConsolePfn: n = "CONSOLE_PFN"; break;
    case kConsoleEvtchn: n = "CONSOLE_EVTCHN"; break;
    case kAcpiIoportsLocation: n = "ACPI_IOPORTS_LOCATION"; break;
    case kNestedHvm: n = "NESTEDHVM"; break;
    case kPagingRingPfn: n = "PAGING_RING_PFN"; break;
    case kMonitorRingPfn: n = "MONITOR_RING_PFN"; break;
    case kSharingRingPfn: n = "SHARING_RING_PFN"; break;
    case kIoreqServerPfn: n = "IOREQ_SERVER_PFN"; break;
    case kNrIoreqServerPages: n = "NR_IOREQ_SERVER_PAGES"; break;
    case kVmGenerationIdAddr: n = "VM_GENERATION_ID_ADDR"; break;
    case kX87FipWidth: n = "X87_FIP_WIDTH"; break;
    case kVm86TssSized: n = "VM86_TSS_SIZED"; break;
    case kMcaCap: n = "MCA_CAP"; break;
    default: break;
    }
    return std::string(n ? n : "param") + " (" + std::to_string(index) + ")";
}

bool hvm_param_set_once(std::uint32_t index)
{
    using namespace hvm_param;
    return index == kViridian || index == kIoreqPfn || index == kBufioreqPfn || index == kIoreqServerPfn ||
           index == kNrIoreqServerPages || index == kMcaCap;
}

StateBlob encode_hvm_params(std::span<const HvmParam> params)
{
    StateBlob b;
    b.type = rec::kHvmParams;
    append<std::uint32_t>(b.data, std::uint32_t(params.size()));
    append<std::uint32_t>(b.data, 0);
    for (const auto& p : params) {
        append<std::uint64_t>(b.data, p.index);
        append<std::uint64_t>(b.data, p.value);
    }
    return b;
}

std::optional<std::uint64_t> HvmParams::find(std::uint32_t index) const
{
    for (const auto& p : params)
        if (p.index == index)
            return p.value;
    return std::nullopt;
}

HvmParams parse_hvm_params(std::span<const std::uint8_t> body, std::uint64_t nr_pages)
{
    if (body.size() < kParamsHeader)
        throw StreamError("HVM_PARAMS of " + std::to_string(body.size()) + " bytes, shorter than its header");
    const auto count = load<std::uint32_t>(body, 0);
    if (load<std::uint32_t>(body, 4) != 0)
        throw StreamError("HVM_PARAMS reserved field is not 0");
    if (count > kMaxParams)
        throw StreamError("HVM_PARAMS with " + std::to_string(count) + " params, more than " +
                          std::to_string(kMaxParams));
    if (body.size() != kParamsHeader + std::size_t(count) * kParamEntry)
        throw StreamError("HVM_PARAMS of " + std::to_string(body.size()) + " bytes for " + std::to_string(count) +
                          " params");
    HvmParams out;
    for (std::uint32_t i = 0; i < count; ++i) {
        const auto index64 = load<std::uint64_t>(body, kParamsHeader + i * kParamEntry);
        const auto value = load<std::uint64_t>(body, kParamsHeader + i * kParamEntry + 8);
        if (index64 == hvm_param::kPaeEnabled)
            continue; // obsolete (libxc drops it too)
        const auto& saved = hvm_param::kSaved;
        if (index64 > 0xffffffffull || std::find(saved.begin(), saved.end(), std::uint32_t(index64)) == saved.end())
            throw StreamError("HVM_PARAMS entry " + std::to_string(i) + ": " +
                              (index64 > 0xffffffffull ? "index " + hex(index64)
                                                       : hvm_param_name(std::uint32_t(index64))) +
                              " is not a param an HVM stream carries");
        const auto index = std::uint32_t(index64);
        if (out.find(index))
            throw StreamError("HVM_PARAMS: " + hvm_param_name(index) + " twice");
        if (gfn_param(index) && value >= nr_pages)
            throw StreamError("HVM_PARAMS: " + hvm_param_name(index) + " = " + hex(value) + " beyond the guest's " +
                              std::to_string(nr_pages) + " pages");
        out.params.push_back({index, value});
    }
    if (auto n = out.find(hvm_param::kNrIoreqServerPages)) {
        auto base = out.find(hvm_param::kIoreqServerPfn);
        if (*n > kMaxIoreqServerPages || !base || *base + *n > nr_pages)
            throw StreamError("HVM_PARAMS: " + std::to_string(*n) + " ioreq server pages from " +
                              (base ? hex(*base) : std::string("no IOREQ_SERVER_PFN")) + " do not fit the guest's " +
                              std::to_string(nr_pages) + " pages");
    }
    return out;
}

HvmContextSummary check_hvm_context(std::span<const std::uint8_t> blob, std::uint32_t max_vcpu_id)
{
    if (blob.size() > hvm_ctx::kMaxSize)
        throw StreamError("HVM_CONTEXT of " + std::to_string(blob.size()) + " bytes, above the " +
                          std::to_string(hvm_ctx::kMaxSize) + "-byte bound");
    HvmContextSummary s;
    std::size_t off = 0;
    bool first = true;
    for (;;) {
        if (blob.size() - off < hvm_ctx::kDescriptorSize)
            throw StreamError("HVM_CONTEXT: no END descriptor (" + std::to_string(blob.size() - off) +
                              " bytes left at offset " + std::to_string(off) + ")");
        const auto code = load<std::uint16_t>(blob, off);
        const auto instance = load<std::uint16_t>(blob, off + 2);
        const auto length = load<std::uint32_t>(blob, off + 4);
        const std::size_t body = off + hvm_ctx::kDescriptorSize;
        const std::string at = "HVM_CONTEXT record at offset " + std::to_string(off) + " (type " +
                               std::to_string(code) + ", instance " + std::to_string(instance) + ")";
        if (length > blob.size() - body)
            throw StreamError(at + ": " + std::to_string(length) + " bytes run past the blob's end");
        if (first) {
            if (code != hvm_ctx::kCodeHeader || length != hvm_ctx::kHeaderSize)
                throw StreamError(at + ": the context must start with a " + std::to_string(hvm_ctx::kHeaderSize) +
                                  "-byte HEADER");
            auto h = blob.subspan(body, length);
            if (load<std::uint32_t>(h, 0) != hvm_ctx::kMagic || load<std::uint32_t>(h, 4) != hvm_ctx::kVersion)
                throw StreamError(at + ": bad magic " + hex(load<std::uint32_t>(h, 0)) + " or version " +
                                  std::to_string(load<std::uint32_t>(h, 4)));
            s.gtsc_khz = load<std::uint32_t>(h, 20);
            first = false;
        } else if (code == hvm_ctx::kCodeEnd) {
            if (length != 0)
                throw StreamError(at + ": END with " + std::to_string(length) + " bytes");
            if (body != blob.size())
                throw StreamError(at + ": " + std::to_string(blob.size() - body) + " bytes after END");
            return s;
        } else if (code == hvm_ctx::kCodeHeader) {
            throw StreamError(at + ": a second HEADER");
        } else if (code > hvm_ctx::kCodeMax) {
            throw StreamError(at + ": type unknown to Xen 4.17 (last is " + std::to_string(hvm_ctx::kCodeMax) + ")");
        } else if (code == hvm_ctx::kCodeCpu) {
            if (instance > max_vcpu_id)
                throw StreamError(at + ": vCPU beyond this domain's last (" + std::to_string(max_vcpu_id) + ")");
            ++s.nr_cpus;
        }
        if (code != hvm_ctx::kCodeHeader)
            ++s.nr_records;
        off = body + length;
    }
}

void HoleMap::set(Pfn pfn, bool hole)
{
    if (pfn >= holes_.size())
        throw Error("hole map: pfn " + hex(pfn) + " beyond the guest's " + std::to_string(holes_.size()) + " pages");
    holes_[pfn] = hole ? 1 : 0;
}

void HoleMap::set_holes(Pfn first, std::uint64_t n)
{
    if (first > holes_.size() || n > holes_.size() - first)
        throw Error("hole map: run of " + std::to_string(n) + " pages from " + hex(first) + " beyond the guest's " +
                    std::to_string(holes_.size()) + " pages");
    std::fill_n(holes_.begin() + std::ptrdiff_t(first), n, std::uint8_t{1});
}

std::uint64_t HoleMap::count() const { return std::uint64_t(std::count(holes_.begin(), holes_.end(), 1)); }

std::vector<StateBlob> HoleMap::encode(std::size_t max_runs) const
{
    if (max_runs == 0)
        throw Error("hole map: blobs of no runs");
    std::vector<StateBlob> out;
    std::vector<std::pair<Pfn, std::uint64_t>> runs;
    Pfn start = 0;
    auto flush = [&](Pfn end) {
        StateBlob b;
        b.type = rec::kFastmigHvmHoles;
        append<std::uint64_t>(b.data, start);
        append<std::uint64_t>(b.data, end);
        append<std::uint32_t>(b.data, std::uint32_t(runs.size()));
        append<std::uint32_t>(b.data, 0);
        for (auto [first, n] : runs) {
            append<std::uint64_t>(b.data, first);
            append<std::uint64_t>(b.data, n);
        }
        out.push_back(std::move(b));
        runs.clear();
        start = end;
    };
    const Pfn n = holes_.size();
    for (Pfn p = 0; p < n;) {
        if (!holes_[p]) {
            ++p;
            continue;
        }
        Pfn q = p;
        while (q < n && holes_[q])
            ++q;
        if (runs.size() == max_runs)
            flush(p); // this blob ends where the next run starts
        runs.emplace_back(p, q - p);
        p = q;
    }
    flush(n);
    return out;
}

HoleBlob parse_hole_blob(std::span<const std::uint8_t> body, std::uint64_t nr_pages)
{
    if (body.size() < kHoleBlobHeader)
        throw StreamError("FASTMIG_HVM_HOLES of " + std::to_string(body.size()) + " bytes, shorter than its header");
    HoleBlob h;
    h.start = load<std::uint64_t>(body, 0);
    h.end = load<std::uint64_t>(body, 8);
    const auto count = load<std::uint32_t>(body, 16);
    if (load<std::uint32_t>(body, 20) != 0)
        throw StreamError("FASTMIG_HVM_HOLES reserved field is not 0");
    if (h.start > h.end || h.end > nr_pages)
        throw StreamError("FASTMIG_HVM_HOLES range [" + hex(h.start) + ", " + hex(h.end) + ") is not within the " +
                          std::to_string(nr_pages) + " pages");
    if (body.size() != kHoleBlobHeader + std::size_t(count) * kHoleRunSize)
        throw StreamError("FASTMIG_HVM_HOLES of " + std::to_string(body.size()) + " bytes for " +
                          std::to_string(count) + " runs");
    Pfn next = h.start;
    h.runs.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
        const auto first = load<std::uint64_t>(body, kHoleBlobHeader + i * kHoleRunSize);
        const auto n = load<std::uint64_t>(body, kHoleBlobHeader + i * kHoleRunSize + 8);
        if (n == 0 || first < next || first >= h.end || n > h.end - first)
            throw StreamError("FASTMIG_HVM_HOLES run " + std::to_string(i) + " (" + hex(first) + ", " +
                              std::to_string(n) + " pages) is empty, out of order or outside [" + hex(h.start) +
                              ", " + hex(h.end) + ")");
        h.runs.emplace_back(first, n);
        next = first + n;
    }
    return h;
}

bool cpu_policy_offers_nested_virt(std::span<const std::uint8_t> cpuid_policy)
{
    using namespace cpuid_bits;
    for (std::size_t off = 0; off + cpu_policy::kLeafSize <= cpuid_policy.size(); off += cpu_policy::kLeafSize) {
        const auto leaf = load<std::uint32_t>(cpuid_policy, off);
        const auto subleaf = load<std::uint32_t>(cpuid_policy, off + 4);
        const auto ecx = load<std::uint32_t>(cpuid_policy, off + 16);
        if (subleaf != 0 && subleaf != ~0u)
            continue;
        if ((leaf == kLeafVmx && (ecx & kVmxEcx)) || (leaf == kLeafSvm && (ecx & kSvmEcx)))
            return true;
    }
    return false;
}

} // namespace fastmig::xen
