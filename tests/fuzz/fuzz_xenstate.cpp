// Fuzz target: the Xen backend's platform-state parsers (stream/domain/xen/),
// which read the PLATFORM_STATE and EARLY_STATE blobs a peer sends: HVM_PARAMS,
// the HVM context's descriptor chain, FASTMIG_HVM_HOLES, and the whole HVM
// and PV states.  No Xen: the parsers are pure.
//
// Input: mode:u8, then
//   mode % 6 == 0: an HVM_PARAMS body           (guest of 2^20 pages)
//             1: an HVM_CONTEXT blob            (last vCPU 3)
//             2: a FASTMIG_HVM_HOLES body       (guest of 2^20 pages)
//             3: blobs { u32 type, u16 length, bytes } -> parse_hvm_state (2^20 pages, last vCPU 3)
//             4: the same blobs -> parse_pv_state (4096 pages, last vCPU 3)
//             5: `key=value` lines -> parse_restore_platform (and the
//                generation id's bytes, when there is one)
// Checked beyond "no crash, only StreamError": what is accepted is what
// the format says (params re-encode to the same entries, hole runs lie in
// their range and in order, an accepted state gives a restore plan that
// ends by seeding the grant table after the context; platform keys give
// vCPUs in order below the bound, cpumaps within their bound).
#include "tests/fuzz/fuzz_common.hpp"

#include "stream/domain/xen/hvm_state.hpp"
#include "stream/domain/xen/pv_state.hpp"
#include "stream/domain/xen/restore_platform.hpp"

#include <map>
#include <string>

using namespace fastmig;
using namespace fastmig::fuzz;
using namespace fastmig::xen;

namespace {

constexpr std::uint64_t kHvmPages = 1u << 20;
constexpr std::uint64_t kPvPages = 4096;
constexpr std::uint32_t kMaxVcpu = 3;

std::vector<StateBlob> blobs(Input& in)
{
    std::vector<StateBlob> out;
    while (in.left() >= 6 && out.size() < 64) {
        StateBlob b;
        b.type = std::uint32_t(in.u16()) | std::uint32_t(in.u16()) << 16;
        auto body = in.take(in.u16());
        b.data.assign(body.begin(), body.end());
        out.push_back(std::move(b));
    }
    return out;
}

void params(std::span<const std::uint8_t> body)
{
    auto p = parse_hvm_params(body, kHvmPages);
    FUZZ_ASSERT(p.params.size() <= 64);
    auto again = parse_hvm_params(encode_hvm_params(p.params).data, kHvmPages);
    FUZZ_ASSERT(again.params == p.params);
}

void holes(std::span<const std::uint8_t> body)
{
    auto h = parse_hole_blob(body, kHvmPages);
    FUZZ_ASSERT(h.start <= h.end && h.end <= kHvmPages);
    Pfn next = h.start;
    for (auto [first, n] : h.runs) {
        FUZZ_ASSERT(n > 0 && first >= next && first + n <= h.end);
        next = first + n;
    }
}

void hvm_state(const std::vector<StateBlob>& b)
{
    auto st = parse_hvm_state(b, kHvmPages, kMaxVcpu);
    FUZZ_ASSERT(st.holes.size() == kHvmPages && !st.context.empty());
    auto plan = hvm_restore_plan(st);
    FUZZ_ASSERT(plan.size() >= 5 && plan.back().step == HvmStep::seed_grant_table);
    FUZZ_ASSERT(plan[plan.size() - 2].step == HvmStep::set_context);
    for (const auto& s : plan)
        if (s.step == HvmStep::clear_page)
            FUZZ_ASSERT(s.a < kHvmPages && !st.holes.hole(s.a));
}

void platform_keys(std::span<const std::uint8_t> text)
{
    std::map<std::string, std::string> keys;
    std::string all(text.begin(), text.end());
    for (std::size_t at = 0; at < all.size();) {
        std::size_t nl = all.find('\n', at);
        if (nl == std::string::npos)
            nl = all.size();
        std::string line = all.substr(at, nl - at);
        if (auto eq = line.find('='); eq != std::string::npos)
            keys[line.substr(0, eq)] = line.substr(eq + 1);
        at = nl + 1;
    }
    try {
        RestorePlatform p = parse_restore_platform([&](const std::string& k) {
            auto i = keys.find(k);
            return i == keys.end() ? std::string() : i->second;
        });
        unsigned next = 0;
        for (const auto& a : p.affinity) {
            FUZZ_ASSERT(a.vcpu >= next && a.vcpu < 4096);
            FUZZ_ASSERT(a.cpus.size() <= 1024);
            next = a.vcpu + 1;
        }
        FUZZ_ASSERT(!describe(p).empty());
        if (!p.generation_id.empty())
            (void)generation_id_bytes(p.generation_id);
    } catch (const Error& e) {
        verbose("refused (platform keys)", &e);
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    Input in(data, size);
    const unsigned mode = in.u8() % 6;
    try {
        switch (mode) {
        case 0:
            params(in.rest());
            break;
        case 1: {
            auto s = check_hvm_context(in.rest(), kMaxVcpu);
            FUZZ_ASSERT(s.nr_cpus <= s.nr_records);
            break;
        }
        case 2:
            holes(in.rest());
            break;
        case 3:
            hvm_state(blobs(in));
            break;
        case 5:
            platform_keys(in.rest());
            break;
        default:
            try {
                parse_pv_state(blobs(in), kPvPages, kMaxVcpu);
            } catch (const Error& e) {
                // The PV parsers' field reader refuses with a plain Error;
                // the receiver reports both alike.
                verbose("refused (PV)", &e);
            }
            break;
        }
    } catch (const StreamError& e) {
        verbose("refused", &e);
    }
    return 0;
}
