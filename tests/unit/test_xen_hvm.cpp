// The Xen backend's HVM/PVH logic without Xen (stream/domain/xen/hvm_*,
// guest_checks): HVM_PARAMS and HVM_CONTEXT bodies and their checks, the
// hole map, the whole platform state as a source sends it, the restore's
// order (a fake executes the plan), and what the source refuses.
#define BOOST_TEST_MODULE xen_hvm
#include <boost/test/unit_test.hpp>

#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/guest_checks.hpp"
#include "stream/domain/xen/hvm_state.hpp"
#include "stream/domain/xen/hvm_zero_pages.hpp"
#include "stream_error_check.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <thread>

using namespace fastmig;
using namespace fastmig::xen;
using fastmig::test::throws_stream;

namespace {

constexpr std::uint64_t kPages = 0x100000; // 4 GiB of gfns, as a 512 MiB guest below the special pages

std::vector<std::uint8_t> params_body(std::uint32_t count, std::uint32_t reserved,
                                      std::vector<std::pair<std::uint64_t, std::uint64_t>> entries)
{
    std::vector<std::uint8_t> b;
    append<std::uint32_t>(b, count);
    append<std::uint32_t>(b, reserved);
    for (auto [i, v] : entries) {
        append<std::uint64_t>(b, i);
        append<std::uint64_t>(b, v);
    }
    return b;
}

void descriptor(std::vector<std::uint8_t>& b, std::uint16_t code, std::uint16_t instance, std::uint32_t length)
{
    append<std::uint16_t>(b, code);
    append<std::uint16_t>(b, instance);
    append<std::uint32_t>(b, length);
    b.insert(b.end(), length, 0xcc);
}

// A context as Xen writes it: HEADER, CPU per vCPU, a PIC, END.
std::vector<std::uint8_t> context(unsigned vcpus, std::uint32_t magic = hvm_ctx::kMagic,
                                  std::uint32_t version = hvm_ctx::kVersion)
{
    std::vector<std::uint8_t> b;
    append<std::uint16_t>(b, hvm_ctx::kCodeHeader);
    append<std::uint16_t>(b, 0);
    append<std::uint32_t>(b, hvm_ctx::kHeaderSize);
    append<std::uint32_t>(b, magic);
    append<std::uint32_t>(b, version);
    append<std::uint64_t>(b, 0x1234);     // changeset
    append<std::uint32_t>(b, 0x800f12);   // cpuid
    append<std::uint32_t>(b, 2400000);    // gtsc_khz
    for (unsigned i = 0; i < vcpus; ++i)
        descriptor(b, hvm_ctx::kCodeCpu, std::uint16_t(i), 1024);
    descriptor(b, 3, 0, 8); // PIC
    descriptor(b, hvm_ctx::kCodeEnd, 0, 0);
    return b;
}

std::vector<std::uint8_t> hole_body(Pfn start, Pfn end, std::vector<std::pair<Pfn, std::uint64_t>> runs,
                                    std::uint32_t reserved = 0, int count_delta = 0)
{
    std::vector<std::uint8_t> b;
    append<std::uint64_t>(b, start);
    append<std::uint64_t>(b, end);
    append<std::uint32_t>(b, std::uint32_t(int(runs.size()) + count_delta));
    append<std::uint32_t>(b, reserved);
    for (auto [f, n] : runs) {
        append<std::uint64_t>(b, f);
        append<std::uint64_t>(b, n);
    }
    return b;
}

std::vector<std::uint8_t> cpuid_policy(std::uint32_t leaf1_ecx, std::uint32_t ext_ecx)
{
    std::vector<std::uint8_t> b;
    auto leaf = [&](std::uint32_t l, std::uint32_t sub, std::uint32_t ecx) {
        append<std::uint32_t>(b, l);
        append<std::uint32_t>(b, sub);
        append<std::uint32_t>(b, 0);
        append<std::uint32_t>(b, 0);
        append<std::uint32_t>(b, ecx);
        append<std::uint32_t>(b, 0);
    };
    leaf(0, ~0u, 0);
    leaf(1, ~0u, leaf1_ecx);
    leaf(7, 0, 0xffffffff); // other leaves' ECX bits mean nothing here
    leaf(0x80000001, ~0u, ext_ecx);
    return b;
}

// The platform state an HVM source sends: TSC, policy, context, params,
// holes (the MMIO hole 0xf0000-0xfeff7, the VGA hole 0xa0-0xbf, and the
// ioreq page 0xfeffd, out of the physmap while QEMU's ioreq server has it).
std::vector<StateBlob> source_state(unsigned vcpus = 2)
{
    std::vector<StateBlob> s;
    s.push_back(encode_tsc_info({0, 2400000, 99, 1}));
    s.push_back(encode_cpu_policy(rec::kX86CpuidPolicy, cpuid_policy(0, 0)));
    s.push_back({rec::kHvmContext, context(vcpus)});
    std::vector<HvmParam> p = {{hvm_param::kStorePfn, 0xfeffc},
                               {hvm_param::kIoreqPfn, 0xfeffd},
                               {hvm_param::kViridian, 1},
                               {hvm_param::kConsolePfn, 0xfefff}};
    s.push_back(encode_hvm_params(p));
    HoleMap h(kPages);
    for (Pfn g = 0xa0; g < 0xc0; ++g)
        h.set(g, true);
    h.set_holes(0xf0000, 0xfeff8 - 0xf0000);
    h.set(0xfeffd, true);
    for (auto& b : h.encode(1)) // one run per blob: several blobs
        s.push_back(std::move(b));
    return s;
}

} // namespace

// ---- HVM_PARAMS

BOOST_AUTO_TEST_CASE(params_round_trip)
{
    std::vector<HvmParam> in = {{hvm_param::kStorePfn, 0xfeffc}, {hvm_param::kMcaCap, 1}, {hvm_param::kConsolePfn, 7}};
    auto b = encode_hvm_params(in);
    BOOST_TEST(b.type == rec::kHvmParams);
    BOOST_TEST(b.data.size() == 8u + 3 * 16);
    auto out = parse_hvm_params(b.data, kPages);
    BOOST_TEST((out.params == in));
    BOOST_TEST(*out.store_gfn() == 0xfeffcu);
    BOOST_TEST(*out.console_gfn() == 7u);
    BOOST_TEST(!out.find(hvm_param::kViridian));
    // libxc skips an empty record; an empty one is still accepted (as libxc).
    BOOST_TEST(parse_hvm_params(encode_hvm_params({}).data, kPages).params.empty());
}

BOOST_AUTO_TEST_CASE(param_list_is_libxcs)
{
    // The 16 params libxc saves, none twice, none of the event channels
    // (they come from the destination's toolstack).
    BOOST_TEST(hvm_param::kSaved.size() == 16u);
    auto s = hvm_param::kSaved;
    std::sort(s.begin(), s.end());
    BOOST_TEST((std::adjacent_find(s.begin(), s.end()) == s.end()));
    for (auto i : s) {
        BOOST_TEST(i != hvm_param::kStoreEvtchn);
        BOOST_TEST(i != hvm_param::kConsoleEvtchn);
        BOOST_TEST(hvm_param_name(i).find("param (") == std::string::npos);
    }
    // Each one parses back.
    std::vector<HvmParam> all;
    for (auto i : hvm_param::kSaved)
        all.push_back({i, 1});
    BOOST_TEST(parse_hvm_params(encode_hvm_params(all).data, kPages).params.size() == 16u);
    BOOST_TEST(hvm_param_set_once(hvm_param::kViridian));
    BOOST_TEST(hvm_param_set_once(hvm_param::kIoreqServerPfn));
    BOOST_TEST(!hvm_param_set_once(hvm_param::kStorePfn));
}

BOOST_AUTO_TEST_CASE(params_hostile)
{
    using namespace hvm_param;
    CHECK_STREAM_ERROR(parse_hvm_params(std::vector<std::uint8_t>(7), kPages), "shorter than its header");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(0, 1, {}), kPages), "reserved");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(2, 0, {{kStorePfn, 1}}), kPages), "bytes for 2 params");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(1, 0, {{kStorePfn, 1}, {kConsolePfn, 2}}), kPages),
                       "bytes for 1 params");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(1000, 0, {}), kPages), "more than 64");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(1, 0, {{kStoreEvtchn, 5}}), kPages),
                       "STORE_EVTCHN (2) is not a param an HVM stream carries");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(1, 0, {{99, 5}}), kPages), "param (99) is not");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(1, 0, {{1ull << 32 | 1, 5}}), kPages), "index 0x100000001");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(2, 0, {{kViridian, 1}, {kViridian, 1}}), kPages),
                       "VIRIDIAN (9) twice");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(1, 0, {{kStorePfn, kPages}}), kPages),
                       "STORE_PFN (1) = 0x100000 beyond");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(1, 0, {{kConsolePfn, ~0ull}}), kPages), "CONSOLE_PFN");
    CHECK_STREAM_ERROR(
        parse_hvm_params(params_body(2, 0, {{kIoreqServerPfn, kPages - 4}, {kNrIoreqServerPages, 8}}), kPages),
        "8 ioreq server pages");
    CHECK_STREAM_ERROR(parse_hvm_params(params_body(1, 0, {{kNrIoreqServerPages, 8}}), kPages),
                       "no IOREQ_SERVER_PFN");
    CHECK_STREAM_ERROR(
        parse_hvm_params(params_body(2, 0, {{kIoreqServerPfn, 0xfeff0}, {kNrIoreqServerPages, 65}}), kPages),
        "65 ioreq server pages");
    // Fits: the ioreq server range below the special pages.
    auto ok = parse_hvm_params(params_body(2, 0, {{kIoreqServerPfn, 0xfeff0}, {kNrIoreqServerPages, 8}}), kPages);
    BOOST_TEST(ok.params.size() == 2u);
    // PAE_ENABLED (obsolete) is dropped, as libxc does.
    auto pae = parse_hvm_params(params_body(2, 0, {{kPaeEnabled, 1}, {kStorePfn, 3}}), kPages);
    BOOST_TEST(pae.params.size() == 1u);
    BOOST_TEST(pae.params[0].index == kStorePfn);
}

BOOST_AUTO_TEST_CASE(set_once_params_are_checked_against_the_domain)
{
    using namespace hvm_param;
    auto p = parse_hvm_params(params_body(3, 0, {{kViridian, 1}, {kMcaCap, 1}, {kStorePfn, 5}}), kPages);
    std::map<std::uint32_t, std::uint64_t> dom = {{kViridian, 0}, {kMcaCap, 1}, {kStorePfn, 9}};
    auto cur = [&](std::uint32_t i) { return dom[i]; };
    // Unset, or equal: fine; STORE_PFN is not set-once.
    BOOST_TEST(hvm_param_conflicts(p, cur).empty());
    dom[kViridian] = 0x1f;
    auto c = hvm_param_conflicts(p, cur);
    BOOST_TEST_REQUIRE(c.size() == 1u);
    BOOST_TEST(c[0].find("VIRIDIAN (9) is 31 on this domain, the stream has 1") == 0u);
}

// ---- HVM_CONTEXT

BOOST_AUTO_TEST_CASE(context_chain_is_walked)
{
    auto s = check_hvm_context(context(3), 3);
    BOOST_TEST(s.nr_cpus == 3u);
    BOOST_TEST(s.nr_records == 4u); // 3 CPUs and a PIC
    BOOST_TEST(s.gtsc_khz == 2400000u);
}

BOOST_AUTO_TEST_CASE(context_hostile)
{
    CHECK_STREAM_ERROR(check_hvm_context({}, 0), "no END descriptor");
    CHECK_STREAM_ERROR(check_hvm_context(context(1, 0xdeadbeef), 0), "bad magic 0xdeadbeef");
    CHECK_STREAM_ERROR(check_hvm_context(context(1, hvm_ctx::kMagic, 2), 0), "or version 2");
    CHECK_STREAM_ERROR(check_hvm_context(context(2), 0), "vCPU beyond this domain's last (0)");
    {
        std::vector<std::uint8_t> b; // no HEADER first
        descriptor(b, hvm_ctx::kCodeCpu, 0, 16);
        descriptor(b, hvm_ctx::kCodeEnd, 0, 0);
        CHECK_STREAM_ERROR(check_hvm_context(b, 0), "must start with a 24-byte HEADER");
    }
    {
        std::vector<std::uint8_t> b; // HEADER of the wrong size
        descriptor(b, hvm_ctx::kCodeHeader, 0, 16);
        descriptor(b, hvm_ctx::kCodeEnd, 0, 0);
        CHECK_STREAM_ERROR(check_hvm_context(b, 0), "24-byte HEADER");
    }
    auto base = context(1);
    {
        auto b = base; // END removed
        b.resize(b.size() - 8);
        CHECK_STREAM_ERROR(check_hvm_context(b, 0), "no END descriptor");
    }
    {
        auto b = base; // a CPU record whose length runs past the end
        store<std::uint32_t>(b, 32 + 4, 0x7fffffff);
        CHECK_STREAM_ERROR(check_hvm_context(b, 0), "run past the blob's end");
    }
    {
        auto b = base; // type unknown to 4.17
        store<std::uint16_t>(b, 32, 21);
        CHECK_STREAM_ERROR(check_hvm_context(b, 0), "type unknown to Xen 4.17");
    }
    {
        auto b = base; // a second HEADER
        store<std::uint16_t>(b, 32, hvm_ctx::kCodeHeader);
        CHECK_STREAM_ERROR(check_hvm_context(b, 0), "a second HEADER");
    }
    {
        auto b = base; // bytes after END
        b.push_back(0);
        CHECK_STREAM_ERROR(check_hvm_context(b, 0), "1 bytes after END");
    }
    {
        auto b = base; // END with a body
        store<std::uint32_t>(b, b.size() - 4, 4);
        b.insert(b.end(), 4, 0);
        CHECK_STREAM_ERROR(check_hvm_context(b, 0), "END with 4 bytes");
    }
    CHECK_STREAM_ERROR(check_hvm_context(std::vector<std::uint8_t>(hvm_ctx::kMaxSize + 1), 0), "bound");
}

// ---- FASTMIG_HVM_HOLES

BOOST_AUTO_TEST_CASE(hole_map_round_trip_in_several_blobs)
{
    HoleMap h(1000);
    for (Pfn p : {0, 1, 2, 10, 500, 501, 999})
        h.set(p, true);
    BOOST_TEST(h.count() == 7u);
    for (std::size_t max_runs : {1, 2, 100}) {
        auto blobs = h.encode(max_runs);
        BOOST_TEST(blobs.size() == (max_runs == 1 ? 4u : max_runs == 2 ? 2u : 1u));
        HoleMap back(1000);
        Pfn covered = 0;
        for (const auto& b : blobs) {
            BOOST_TEST(b.type == rec::kFastmigHvmHoles);
            auto hb = parse_hole_blob(b.data, 1000);
            BOOST_TEST(hb.start == covered);
            BOOST_TEST(hb.runs.size() <= max_runs);
            covered = hb.end;
            for (auto [f, n] : hb.runs)
                for (Pfn p = f; p < f + n; ++p)
                    back.set(p, true);
        }
        BOOST_TEST(covered == 1000u);
        for (Pfn p = 0; p < 1000; ++p)
            BOOST_TEST(back.hole(p) == h.hole(p));
    }
    // No hole at all: one blob, no runs, the whole range.
    auto none = HoleMap(64).encode(8);
    BOOST_TEST_REQUIRE(none.size() == 1u);
    auto hb = parse_hole_blob(none[0].data, 64);
    BOOST_TEST(hb.runs.empty());
    BOOST_TEST(hb.end == 64u);
    BOOST_CHECK_THROW(h.set(1000, true), Error);
    BOOST_CHECK_THROW(h.set_holes(999, 2), Error);
    h.set_holes(990, 10);
    BOOST_TEST(h.count() == 16u); // 999 was one already
}

BOOST_AUTO_TEST_CASE(hole_blob_hostile)
{
    CHECK_STREAM_ERROR(parse_hole_blob(std::vector<std::uint8_t>(23), 100), "shorter than its header");
    CHECK_STREAM_ERROR(parse_hole_blob(hole_body(0, 100, {}, 1), 100), "reserved");
    CHECK_STREAM_ERROR(parse_hole_blob(hole_body(50, 10, {}), 100), "is not within");
    CHECK_STREAM_ERROR(parse_hole_blob(hole_body(0, 101, {}), 100), "is not within");
    CHECK_STREAM_ERROR(parse_hole_blob(hole_body(0, 100, {{1, 1}}, 0, 1), 100), "for 2 runs");
    CHECK_STREAM_ERROR(parse_hole_blob(hole_body(0, 100, {{1, 0}}), 100), "run 0");
    CHECK_STREAM_ERROR(parse_hole_blob(hole_body(0, 100, {{5, 5}, {7, 1}}), 100), "run 1");
    CHECK_STREAM_ERROR(parse_hole_blob(hole_body(0, 100, {{5, 5}, {2, 1}}), 100), "out of order");
    CHECK_STREAM_ERROR(parse_hole_blob(hole_body(10, 20, {{5, 1}}), 100), "outside");
    CHECK_STREAM_ERROR(parse_hole_blob(hole_body(10, 20, {{15, 6}}), 100), "outside");
    CHECK_STREAM_ERROR(parse_hole_blob(hole_body(0, 100, {{99, ~0ull}}), 100), "run 0");
    auto ok = parse_hole_blob(hole_body(10, 20, {{10, 2}, {15, 5}}), 100);
    BOOST_TEST(ok.runs.size() == 2u);
}

// ---- the destination's zero pages waiting for the hole map

BOOST_AUTO_TEST_CASE(zero_pages_wait_for_the_hole_map)
{
    WaitingZeroPages w(100);
    std::vector<Pfn> named = {1, 2, 3, 50, 51, 99};
    w.add(named);
    BOOST_TEST(w.count() == 6u);
    HoleMap holes(100);
    holes.set_holes(50, 10); // 50, 51 are holes
    std::vector<Pfn> written = {3};
    w.written(written); // data came for 3: it no longer waits
    std::vector<Pfn> got;
    auto populate = [&](std::span<const Pfn> ps) { got.insert(got.end(), ps.begin(), ps.end()); };
    // Only the blob's range [0, 60): 1 and 2; holes stay waiting.
    BOOST_TEST(w.resolve(0, 60, holes, populate) == 2u);
    BOOST_TEST((got == std::vector<Pfn>{1, 2}));
    BOOST_TEST(w.count() == 3u); // 50, 51 (holes), 99 (outside the range)
    got.clear();
    BOOST_TEST(w.resolve(0, 60, holes, populate) == 0u); // nothing twice
    BOOST_TEST(got.empty());
    // A later map where 51 is a page after all (the guest populated it).
    HoleMap later(100);
    later.set(50, true);
    BOOST_TEST(w.resolve(0, 100, later, populate) == 2u);
    BOOST_TEST((got == std::vector<Pfn>{51, 99}));
    BOOST_TEST(w.count() == 1u);
    BOOST_CHECK_THROW(w.add(std::vector<Pfn>{100}), Error);
    // An end beyond the map is clamped.
    BOOST_TEST(w.resolve(0, 1000, later, populate) == 0u);
}

BOOST_AUTO_TEST_CASE(a_write_during_resolution_waits_for_it)
{
    // The population clears the frames it allocates: a write of one of
    // those pages that raced with it must land after it, never before.
    WaitingZeroPages w(16);
    w.add(std::vector<Pfn>{5});
    HoleMap none(16);
    std::atomic<bool> populating{false}, populated{false}, write_done{false};
    bool populated_before_write = false;
    std::thread writer([&] {
        while (!populating)
            std::this_thread::yield();
        w.written(std::vector<Pfn>{5}); // blocks until resolve() is done
        populated_before_write = populated;
        write_done = true;
    });
    w.resolve(0, 16, none, [&](std::span<const Pfn>) {
        populating = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        BOOST_TEST(!write_done);
        populated = true;
    });
    writer.join();
    BOOST_TEST(populated_before_write);
    BOOST_TEST(w.count() == 0u);
}

// ---- the whole state, and the restore order

BOOST_AUTO_TEST_CASE(state_as_a_source_sends_it)
{
    auto st = parse_hvm_state(source_state(), kPages, 1);
    BOOST_TEST(st.tsc->khz == 2400000u);
    BOOST_TEST(st.context_summary.nr_cpus == 2u);
    BOOST_TEST(st.params.params.size() == 4u);
    BOOST_TEST(!st.cpuid_policy.empty());
    BOOST_TEST(st.msr_policy.empty());
    BOOST_TEST(st.holes.count() == 0x20u + (0xfeff8u - 0xf0000u) + 1);
    BOOST_TEST(st.holes.hole(0xa0));
    BOOST_TEST(!st.holes.hole(0x9f));
    BOOST_TEST(!st.holes.hole(0xfeffc)); // the store page is RAM
}

BOOST_AUTO_TEST_CASE(state_refused)
{
    auto without = [](std::uint32_t type) {
        auto s = source_state();
        s.erase(std::remove_if(s.begin(), s.end(), [&](const StateBlob& b) { return b.type == type; }), s.end());
        return s;
    };
    CHECK_STREAM_ERROR(parse_hvm_state(without(rec::kHvmContext), kPages, 1), "lacks HVM_CONTEXT");
    CHECK_STREAM_ERROR(parse_hvm_state(without(rec::kFastmigHvmHoles), kPages, 1), "lacks FASTMIG_HVM_HOLES");
    // Optional: TSC, params, policy (as in libxc's stream).
    BOOST_TEST(!parse_hvm_state(without(rec::kX86TscInfo), kPages, 1).tsc);
    BOOST_TEST(parse_hvm_state(without(rec::kHvmParams), kPages, 1).params.params.empty());
    BOOST_TEST(parse_hvm_state(without(rec::kX86CpuidPolicy), kPages, 1).cpuid_policy.empty());
    {
        auto s = source_state();
        s.push_back({rec::kHvmContext, context(1)});
        CHECK_STREAM_ERROR(parse_hvm_state(s, kPages, 1), "a second HVM_CONTEXT");
    }
    {
        auto s = source_state();
        s.push_back(encode_pv_info(8, 4));
        CHECK_STREAM_ERROR(parse_hvm_state(s, kPages, 1), "is a PV record");
    }
    {
        auto s = source_state();
        s.push_back({0x4242, {}});
        CHECK_STREAM_ERROR(parse_hvm_state(s, kPages, 1), "0x4242 is not one the Xen HVM backend knows");
    }
    {
        auto s = source_state();
        s.pop_back(); // the last hole blob: the map ends short
        CHECK_STREAM_ERROR(parse_hvm_state(s, kPages, 1), "FASTMIG_HVM_HOLES covers");
    }
    {
        auto s = source_state();
        std::swap(s[s.size() - 1], s[s.size() - 2]); // out of order
        CHECK_STREAM_ERROR(parse_hvm_state(s, kPages, 1), "the map so far ends at");
    }
    {
        auto s = source_state();
        s.push_back(HoleMap(kPages).encode(8)[0]); // a second full map
        CHECK_STREAM_ERROR(parse_hvm_state(s, kPages, 1), "the map so far ends at");
    }
    CHECK_STREAM_ERROR(parse_hvm_state(source_state(4), kPages, 1), "vCPU beyond");
    {
        std::vector<StateBlob> s = {{rec::kHvmContext, context(0)}};
        for (auto& b : HoleMap(kPages).encode(8))
            s.push_back(b);
        CHECK_STREAM_ERROR(parse_hvm_state(s, kPages, 0), "holds no vCPU");
    }
    CHECK_STREAM_ERROR(parse_hvm_state(source_state(), 0, 1), "no pages");
}

namespace {

// Executes a plan on a fake domain that enforces what Xen and libxc need:
// memory and params before the context, each special page cleared before
// its param is set, the event channels after the params, the grant table
// last; and records the calls.
struct FakeHvmDomain {
    const HoleMap& holes;
    std::vector<std::string> calls;
    std::map<std::uint32_t, std::uint64_t> params;
    std::vector<std::uint64_t> cleared;
    bool populated = false, context = false, seeded = false;

    void run(const HvmRestoreStep& s)
    {
        BOOST_TEST(!seeded); // nothing after the grant table
        std::string c = hvm_step_name(s.step);
        switch (s.step) {
        case HvmStep::set_cpu_policy:
            BOOST_TEST(!populated);
            break;
        case HvmStep::populate_missing:
            populated = true;
            break;
        case HvmStep::set_tsc:
        case HvmStep::set_param:
        case HvmStep::set_store_evtchn:
        case HvmStep::set_console_evtchn:
            BOOST_TEST(populated);
            BOOST_TEST(!context);
            if (s.step == HvmStep::set_param) {
                using namespace hvm_param;
                if ((s.a == kStorePfn || s.a == kConsolePfn || s.a == kIoreqPfn || s.a == kBufioreqPfn) &&
                    !holes.hole(s.b))
                    BOOST_TEST((std::find(cleared.begin(), cleared.end(), s.b) != cleared.end()));
                params[std::uint32_t(s.a)] = s.b;
                c += " " + std::to_string(s.a);
            }
            if (s.step == HvmStep::set_store_evtchn || s.step == HvmStep::set_console_evtchn)
                BOOST_TEST(params.size() == 4u); // every stream param first
            break;
        case HvmStep::clear_page:
            BOOST_TEST(populated);
            BOOST_TEST(!holes.hole(s.a)); // Xen cannot clear a gfn with no page
            cleared.push_back(s.a);
            c += " " + hex(s.a);
            break;
        case HvmStep::set_context:
            BOOST_TEST(populated);
            BOOST_TEST((std::find(calls.begin(), calls.end(), "set_console_evtchn") != calls.end()));
            context = true;
            break;
        case HvmStep::seed_grant_table:
            BOOST_TEST(context);
            seeded = true;
            c += " " + hex(s.a) + " " + hex(s.b);
            break;
        }
        calls.push_back(c);
    }
};

} // namespace

BOOST_AUTO_TEST_CASE(restore_order_is_libxcs)
{
    auto st = parse_hvm_state(source_state(), kPages, 1);
    FakeHvmDomain d{st.holes};
    for (const auto& s : hvm_restore_plan(st))
        d.run(s);
    std::vector<std::string> want = {"set_cpu_policy",
                                     "populate_missing",
                                     "set_tsc",
                                     "clear_page 0xfeffc",
                                     "set_param 1",
                                     "set_param 5", // the ioreq page is a hole: set, not cleared
                                     "set_param 9",
                                     "clear_page 0xfefff",
                                     "set_param 17",
                                     "set_store_evtchn",
                                     "set_console_evtchn",
                                     "set_context",
                                     "seed_grant_table 0xfefff 0xfeffc"};
    BOOST_TEST(d.calls == want, boost::test_tools::per_element());
    BOOST_TEST(d.seeded);
}

BOOST_AUTO_TEST_CASE(restore_order_without_optional_records)
{
    std::vector<StateBlob> s = {{rec::kHvmContext, context(1)}};
    for (auto& b : HoleMap(kPages).encode(8))
        s.push_back(b);
    auto plan = hvm_restore_plan(parse_hvm_state(s, kPages, 0));
    std::vector<std::string> names;
    for (const auto& p : plan)
        names.push_back(hvm_step_name(p.step));
    std::vector<std::string> want = {"populate_missing", "set_store_evtchn", "set_console_evtchn", "set_context",
                                     "seed_grant_table"};
    BOOST_TEST(names == want, boost::test_tools::per_element());
    BOOST_TEST(plan.back().a == 0u); // no console/store gfn in the stream: 0, as libxc
}

// ---- what the source refuses

BOOST_AUTO_TEST_CASE(guest_types)
{
    BOOST_TEST((classify_guest(false, 0) == GuestType::pv));
    BOOST_TEST((classify_guest(true, 0) == GuestType::pvh));
    BOOST_TEST((classify_guest(true, kX86EmuLapic) == GuestType::pvh));
    BOOST_TEST((classify_guest(true, 0x7ff) == GuestType::hvm)); // XEN_X86_EMU_ALL
    BOOST_TEST((classify_guest(true, 0x3ff) == GuestType::hvm));
    BOOST_TEST(std::string(guest_type_name(GuestType::pvh)) == "PVH");
}

// xapi-pvh-2109: a domain created without XEN_DOMCTL_max_vcpus took the
// whole stream, then Xen refused its CPU record with a bare EINVAL.
BOOST_AUTO_TEST_CASE(restore_targets_refused_before_the_body)
{
    auto why = [](auto tweak) {
        TargetFacts f{true, true, kX86EmuLapic, 0};
        tweak(f);
        return target_refusal(f).value_or("");
    };
    auto has = [](const std::string& s, const char* n) { return s.find(n) != std::string::npos; };
    BOOST_TEST(why([](TargetFacts&) {}).empty());
    BOOST_TEST(why([](TargetFacts& f) { f.max_vcpu_id = 127; }).empty());
    BOOST_TEST(why([](TargetFacts& f) { f.stream_hvm = f.domain_hvm = false; }).empty());
    BOOST_TEST(has(why([](TargetFacts& f) { f.max_vcpu_id = kNoVcpu; }), "the target domain has no vCPUs"));
    BOOST_TEST(has(why([](TargetFacts& f) { f.max_vcpu_id = kNoVcpu; }), "XEN_DOMCTL_max_vcpus"));
    BOOST_TEST(has(why([](TargetFacts& f) { f.stream_hvm = false; }), "holds a PV guest but the target domain is PVH"));
    BOOST_TEST(has(why([](TargetFacts& f) { f.domain_hvm = false; }), "holds an HVM/PVH guest but the target domain is PV"));
    BOOST_TEST(has(why([](TargetFacts& f) { f.emulation_flags = 0x7ff, f.stream_hvm = false; }), "domain is HVM"));
}

BOOST_AUTO_TEST_CASE(nested_virt_from_the_cpu_policy)
{
    BOOST_TEST(!cpu_policy_offers_nested_virt(cpuid_policy(0, 0)));
    BOOST_TEST(!cpu_policy_offers_nested_virt(cpuid_policy(~cpuid_bits::kVmxEcx, ~cpuid_bits::kSvmEcx)));
    BOOST_TEST(cpu_policy_offers_nested_virt(cpuid_policy(cpuid_bits::kVmxEcx, 0)));
    BOOST_TEST(cpu_policy_offers_nested_virt(cpuid_policy(0, cpuid_bits::kSvmEcx)));
    BOOST_TEST(!cpu_policy_offers_nested_virt({}));
}

BOOST_AUTO_TEST_CASE(refusals_name_the_cause)
{
    auto why = [](auto tweak) {
        GuestFacts f;
        f.type = GuestType::hvm;
        tweak(f);
        return refusal(f).value_or("");
    };
    BOOST_TEST(why([](GuestFacts&) {}).empty());
    BOOST_TEST(why([](GuestFacts& f) { f.type = GuestType::pv; }).empty());
    BOOST_TEST(why([](GuestFacts& f) { f.type = GuestType::pvh; }).empty());
    auto has = [](const std::string& s, const char* n) { return s.find(n) != std::string::npos; };
    BOOST_TEST(has(why([](GuestFacts& f) { f.type = GuestType::pv, f.pv_width_bytes = 4; }), "32-bit PV"));
    // pv_width_bytes means nothing for HVM.
    BOOST_TEST(why([](GuestFacts& f) { f.pv_width_bytes = 4; }).empty());
    BOOST_TEST(has(why([](GuestFacts& f) { f.xs_nomigrate = "1"; }), "platform/nomigrate = \"1\""));
    BOOST_TEST(why([](GuestFacts& f) { f.xs_nomigrate = "0"; }).empty());
    BOOST_TEST(has(why([](GuestFacts& f) { f.cpuid_offers_nested_virt = true; }), "VMX/SVM in its CPU policy"));
    BOOST_TEST(has(why([](GuestFacts& f) { f.nestedhvm_param = 1; }), "HVM_PARAM_NESTEDHVM"));
    BOOST_TEST(has(why([](GuestFacts& f) { f.xs_nested_virt = "true"; }), "platform/nested-virt"));
    BOOST_TEST(has(why([](GuestFacts& f) { f.pci_path = "/local/domain/0/backend/pci/7/0/num_devs = 1"; }),
                   "PCI devices passed through (/local/domain/0/backend/pci/7"));
    BOOST_TEST(has(why([](GuestFacts& f) { f.pod_entries = 12; }), "12 populate-on-demand"));
    BOOST_TEST(has(why([](GuestFacts& f) { f.paged_pages = 3; }), "3 pages paged out"));
    BOOST_TEST(has(why([](GuestFacts& f) { f.shared_pages = 2; }), "2 shared"));
    BOOST_TEST(xs_flag_set("1"));
    BOOST_TEST(!xs_flag_set(""));
    BOOST_TEST(!xs_flag_set("0"));
}
