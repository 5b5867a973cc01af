// Fuzz target: the Xen backend's platform-state parsers (stream/domain/xen/),
// which read the PLATFORM_STATE and EARLY_STATE blobs a peer sends: HVM_PARAMS,
// the HVM context's descriptor chain, FASTMIG_HVM_HOLES, and the whole HVM
// and PV states.  No Xen: the parsers are pure.
//
// Input: mode:u8, then
//   mode % 5 == 0: an HVM_PARAMS body           (guest of 2^20 pages)
//             1: an HVM_CONTEXT blob            (last vCPU 3)
//             2: a FASTMIG_HVM_HOLES body       (guest of 2^20 pages)
//             3: blobs { u32 type, u16 length, bytes } -> parse_hvm_state (2^20 pages, last vCPU 3)
//             4: the same blobs -> parse_pv_state (4096 pages, last vCPU 3)
// Checked beyond "no crash, only StreamError": what is accepted is what
// the format says (params re-encode to the same entries, hole runs lie in
// their range and in order, an accepted state gives a restore plan that
// ends by seeding the grant table after the context).
#include "tests/fuzz/fuzz_common.hpp"

#include "stream/domain/xen/hvm_state.hpp"
#include "stream/domain/xen/pv_state.hpp"

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

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    Input in(data, size);
    const unsigned mode = in.u8() % 5;
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
