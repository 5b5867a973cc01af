// The Xen PV backend's pure logic (stream/domain/xen/pv_*): page types,
// page-table normalisation both ways, vCPU / start_info / shared_info
// fix-ups and the record bodies.  No Xen needed: frame tables are fakes.
#define BOOST_TEST_MODULE xen_pv
#include <boost/test/unit_test.hpp>

#include "stream/domain/xen/bytes.hpp"
#include "stream/domain/xen/pv_early_tables.hpp"
#include "stream/domain/xen/pv_page_types.hpp"
#include "stream/domain/xen/pv_pagetable.hpp"
#include "stream/domain/xen/pv_records.hpp"
#include "stream/domain/xen/pv_save_page.hpp"
#include "stream/domain/xen/pv_state.hpp"
#include "stream_error_check.hpp"

#include <map>

using namespace fastmig;
using namespace fastmig::xen;
using fastmig::test::throws_stream;

namespace {

// A guest of 16 pfns whose mfns are 0x1000 + 3 * pfn; pfn 9 is ballooned
// out.  The m2p also knows mfn 0x5000 (another domain's frame, m2p says pfn
// 2 but p2m[2] is not 0x5000) and mfn 0x6000 (m2p beyond max_pfn).
struct FakeFrames : FrameTranslation {
    std::vector<Mfn> p2m_;
    std::map<Mfn, Pfn> m2p_;
    FakeFrames()
    {
        for (Pfn p = 0; p < 16; ++p) {
            p2m_.push_back(p == 9 ? kInvalidFrame : 0x1000 + 3 * p);
            if (p != 9)
                m2p_[0x1000 + 3 * p] = p;
        }
        m2p_[0x5000] = 2;
        m2p_[0x6000] = 100;
    }
    Pfn max_pfn() const override { return p2m_.size() - 1; }
    Mfn p2m(Pfn p) const override { return p < p2m_.size() ? p2m_[p] : kInvalidFrame; }
    Pfn m2p(Mfn m) const override
    {
        auto it = m2p_.find(m);
        return it == m2p_.end() ? kInvalidFrame : it->second;
    }
};

// The destination: pfn -> 0x9000 + pfn for populated pfns.
struct DestFrames : FrameTranslation {
    std::vector<Mfn> p2m_ = std::vector<Mfn>(16, kInvalidFrame);
    void populate(Pfn p) { p2m_[p] = 0x9000 + p; }
    Pfn max_pfn() const override { return p2m_.size() - 1; }
    Mfn p2m(Pfn p) const override { return p2m_[p]; }
    Pfn m2p(Mfn) const override { throw Error("no m2p at the destination"); }
};

using Page = std::vector<std::uint8_t>;
Page page() { return Page(kPageSize, 0); }
std::uint64_t pte(const Page& p, unsigned i) { return load<std::uint64_t>(p, i * 8); }
void set_pte(Page& p, unsigned i, std::uint64_t v) { store<std::uint64_t>(p, i * 8, v); }

bool throws_with(const std::function<void()>& f, const std::string& needle)
{
    try {
        f();
    } catch (const std::exception& e) {
        if (std::string(e.what()).find(needle) != std::string::npos)
            return true;
        BOOST_TEST_MESSAGE("error without \"" << needle << "\": " << e.what());
        return false;
    }
    BOOST_TEST_MESSAGE("no exception, expected \"" << needle << "\"");
    return false;
}

constexpr std::uint64_t kFlags = 0x8000000000000067ull; // NX, dirty, accessed, user, rw, present

} // namespace

BOOST_AUTO_TEST_CASE(page_type_classification)
{
    BOOST_TEST(page_type_has_data(kPfinfoNotab));
    BOOST_TEST(page_type_has_data(kPfinfoL3 | kPfinfoPinned));
    BOOST_TEST(!page_type_has_data(kPfinfoXtab));
    BOOST_TEST(!page_type_has_data(kPfinfoBroken));
    BOOST_TEST(!page_type_has_data(kPfinfoXalloc));
    BOOST_TEST(page_type_to_populate(kPfinfoXalloc));
    BOOST_TEST(!page_type_to_populate(kPfinfoXtab));
    BOOST_TEST(!page_type_to_populate(kPfinfoBroken));
    BOOST_TEST(page_type_level(kPfinfoL4 | kPfinfoPinned) == 4u);
    BOOST_TEST(page_type_level(kPfinfoXtab) == 0u);
    BOOST_TEST(page_type_pinned(kPfinfoL1 | kPfinfoPinned));
    BOOST_TEST(!page_type_pinned(kPfinfoXtab));
    // Not types: a pinned plain page, level 5, bits below 28.
    BOOST_TEST(!page_type_known(kPfinfoPinned));
    BOOST_TEST(!page_type_known(0x5u << 28));
    BOOST_TEST(!page_type_known(kPfinfoL1 | 1));
    BOOST_TEST(page_type_name(kPfinfoL2 | kPfinfoPinned) == "L2 (pinned)");
}

BOOST_AUTO_TEST_CASE(type_map_round_trip_and_split)
{
    PfnTypeMap m(1000);
    m.set(3, kPfinfoL1);
    m.set(4, kPfinfoL4 | kPfinfoPinned);
    m.set(500, kPfinfoXtab);
    m.set(999, kPfinfoBroken);
    BOOST_TEST(m.count_not_plain() == 4u);
    auto blobs = m.encode(3);
    BOOST_TEST(blobs.size() == 2u);
    BOOST_TEST(blobs[0].type == rec::kFastmigPfnTypes);
    BOOST_TEST(blobs[0].data.size() == 8u + 3 * 8);
    // libxc's PAGE_DATA encoding: type in bits 60..63.
    BOOST_TEST(load<std::uint64_t>(blobs[0].data, 16) == (4ull | (std::uint64_t(kPfinfoL4 | kPfinfoPinned) << 32)));
    PfnTypeMap back(1000);
    for (auto& b : blobs)
        back.apply(b.data);
    for (Pfn p = 0; p < 1000; ++p)
        BOOST_TEST(back.get(p) == m.get(p));
    // An all-plain guest still yields one (empty) blob.
    BOOST_TEST(PfnTypeMap(10).encode(100).size() == 1u);
    BOOST_CHECK_THROW(m.set(1000, kPfinfoL1), Error);
    BOOST_CHECK_THROW(m.set(1, 0x5u << 28), Error);
}

BOOST_AUTO_TEST_CASE(type_map_rejects_hostile_blobs)
{
    PfnTypeMap m(16);
    auto blob = [](std::uint32_t count, std::vector<std::uint64_t> e) {
        std::vector<std::uint8_t> b;
        append<std::uint32_t>(b, count);
        append<std::uint32_t>(b, 0);
        for (auto v : e)
            append<std::uint64_t>(b, v);
        return b;
    };
    BOOST_TEST(throws_stream([&] { m.apply(std::vector<std::uint8_t>(4)); }, "truncated"));
    BOOST_TEST(throws_stream([&] { m.apply(blob(2, {1})); }, "2 entries but 16 bytes"));
    BOOST_TEST(throws_stream([&] { m.apply(blob(1, {16 | (std::uint64_t(kPfinfoL1) << 32)})); }, "pfn 0x10"));
    BOOST_TEST(throws_stream([&] { m.apply(blob(1, {1 | (std::uint64_t(0x5u << 28) << 32)})); }, "unknown type"));
    BOOST_TEST(throws_stream([&] { m.apply(blob(1, {1 | (1ull << 40)})); }, "malformed"));
}

BOOST_AUTO_TEST_CASE(normalise_translates_present_entries_only)
{
    FakeFrames f;
    Page src = page(), dst = page();
    set_pte(src, 0, (Mfn(0x1000 + 3 * 5) << 12) | kFlags);
    set_pte(src, 1, (Mfn(0x1000 + 3 * 15) << 12) | 0x1); // read-only, present
    set_pte(src, 2, 0xdeadbeef000ull);                     // not present: swap entry, kept as is
    set_pte(src, 3, (Mfn(0x1000) << 12) | 0x80 | 1);       // bit 7 in L1 is PAT, not PSE
    BOOST_TEST((normalise_pagetable(1, src, dst, f, nullptr) == Normalised::ok));
    BOOST_TEST(pte(dst, 0) == ((5ull << 12) | kFlags));
    BOOST_TEST(pte(dst, 1) == ((15ull << 12) | 1));
    BOOST_TEST(pte(dst, 2) == 0xdeadbeef000ull);
    BOOST_TEST(pte(dst, 3) == ((0ull << 12) | 0x81));
    for (unsigned i = 4; i < 512; ++i)
        BOOST_TEST(pte(dst, i) == 0u);
}

BOOST_AUTO_TEST_CASE(normalise_clears_xen_l4_slots)
{
    FakeFrames f;
    Page src = page(), dst = page();
    set_pte(src, 255, (Mfn(0x1000 + 3) << 12) | 0x67);
    set_pte(src, 256, (Mfn(0x777777) << 12) | 0x63); // Xen's: not the guest's, dropped
    set_pte(src, 271, (Mfn(0x777778) << 12) | 0x63);
    set_pte(src, 272, (Mfn(0x1000 + 6) << 12) | 0x67);
    BOOST_TEST((normalise_pagetable(4, src, dst, f, nullptr) == Normalised::ok));
    BOOST_TEST(pte(dst, 255) == ((1ull << 12) | 0x67));
    BOOST_TEST(pte(dst, 256) == 0u);
    BOOST_TEST(pte(dst, 271) == 0u);
    BOOST_TEST(pte(dst, 272) == ((2ull << 12) | 0x67));
    // The same slots in a lower level are ordinary entries.
    Page l3 = page();
    set_pte(l3, 256, (Mfn(0x777777) << 12) | 0x63);
    std::string why;
    BOOST_TEST((normalise_pagetable(3, l3, dst, f, &why) == Normalised::retry));
}

BOOST_AUTO_TEST_CASE(normalise_foreign_frames_are_a_race_with_a_reason)
{
    FakeFrames f;
    Page src = page(), dst = page();
    std::string why;
    set_pte(src, 7, (Mfn(0x5000) << 12) | 1); // m2p says pfn 2, p2m[2] disagrees
    BOOST_TEST((normalise_pagetable(2, src, dst, f, &why) == Normalised::retry));
    BOOST_TEST(why.find("L2[7]") != std::string::npos);
    BOOST_TEST(why.find("not the guest's") != std::string::npos);
    set_pte(src, 7, (Mfn(0x6000) << 12) | 1); // m2p beyond max_pfn
    BOOST_TEST((normalise_pagetable(2, src, dst, f, &why) == Normalised::retry));
    BOOST_TEST(why.find("beyond the guest's last pfn") != std::string::npos);
    set_pte(src, 7, (Mfn(0xabcdef) << 12) | 1); // not in the m2p at all
    BOOST_TEST((normalise_pagetable(2, src, dst, f, &why) == Normalised::retry));
    BOOST_TEST(why.find("beyond the machine's m2p") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(superpages_and_bad_levels_are_errors)
{
    FakeFrames f;
    Page src = page(), dst = page();
    set_pte(src, 0, (Mfn(0x1000) << 12) | 0x80 | 1);
    BOOST_TEST(throws_with([&] { normalise_pagetable(2, src, dst, f, nullptr); }, "superpage"));
    BOOST_TEST(throws_with([&] { normalise_pagetable(3, src, dst, f, nullptr); }, "L3[0]"));
    BOOST_TEST(throws_with([&] { normalise_pagetable(5, src, dst, f, nullptr); }, "level 5"));
    DestFrames d;
    d.populate(0);
    Page n = page();
    set_pte(n, 0, (0ull << 12) | 0x80 | 1);
    BOOST_TEST(throws_with([&] { localise_pagetable(2, n, d); }, "superpage"));
    // Not present: PSE ignored.
    Page q = page();
    set_pte(q, 0, 0x80);
    BOOST_TEST((normalise_pagetable(2, q, dst, f, nullptr) == Normalised::ok));
}

BOOST_AUTO_TEST_CASE(localise_is_the_inverse_after_population)
{
    FakeFrames f;
    Page src = page(), norm = page();
    for (unsigned i = 0; i < 16; ++i)
        if (i != 9)
            set_pte(src, i * 3, (Mfn(0x1000 + 3 * i) << 12) | kFlags);
    BOOST_TEST((normalise_pagetable(1, src, norm, f, nullptr) == Normalised::ok));
    DestFrames d;
    d.populate(0);
    d.populate(4);
    auto need = unpopulated_references(1, norm, d);
    BOOST_TEST(need.size() == 13u); // 15 referenced, 2 already there
    BOOST_TEST(throws_with([&] { Page c = norm; localise_pagetable(1, c, d); }, "no page at the destination"));
    for (auto p : need)
        d.populate(p);
    BOOST_TEST(unpopulated_references(1, norm, d).empty());
    localise_pagetable(1, norm, d);
    for (unsigned i = 0; i < 16; ++i)
        if (i != 9)
            BOOST_TEST(pte(norm, i * 3) == ((Mfn(0x9000 + i) << 12) | kFlags));
    Page bad = page();
    set_pte(bad, 0, (16ull << 12) | 1);
    BOOST_TEST(throws_with([&] { unpopulated_references(1, bad, d); }, "beyond the guest's last pfn"));
    BOOST_TEST(throws_with([&] { localise_pagetable(1, bad, d); }, "L1[0]"));
}

// The destination's early page tables: localised once each, the stream's
// bytes kept for deltas, forgotten when the stream writes the page again;
// at the end only the page tables not local are left to localise.
BOOST_AUTO_TEST_CASE(early_tables_track_what_the_stream_wrote)
{
    const auto l1 = PageType(kPfinfoL1), l2 = PageType(kPfinfoL2);
    PfnTypeMap early(16);
    early.set(3, l1);
    early.set(5, l2);
    EarlyTables et;
    BOOST_TEST((et.to_localise(early) == std::vector<Pfn>{3, 5}));

    // What the stream sent for pfn 3 (pfns), localised in place afterwards.
    FakeFrames f;
    Page src = page(), sent = page();
    set_pte(src, 0, (Mfn(0x1000 + 3 * 4) << 12) | kFlags);
    BOOST_REQUIRE((normalise_pagetable(1, src, sent, f, nullptr) == Normalised::ok));
    DestFrames d;
    d.populate(4);
    Page held = sent;
    et.keep(3, held);
    localise_pagetable(1, held, d);
    BOOST_TEST(pte(held, 0) == ((Mfn(0x9000 + 4) << 12) | kFlags));
    et.keep(5, page());
    BOOST_TEST(et.local(3));
    BOOST_TEST(et.size() == 2u);
    BOOST_TEST(throws_with([&] { et.keep(3, sent); }, "already local"));
    BOOST_TEST(throws_with([&] { et.keep(4, Page(100)); }, "not one page"));
    BOOST_TEST(et.to_localise(early).empty()); // a second early map localises nothing twice

    // A delta's base is what the stream sent, not the localised page.
    Page base = page();
    BOOST_TEST(et.sent_bytes(3, base));
    BOOST_TEST((base == sent));
    BOOST_TEST(!et.sent_bytes(4, base));

    // The stream writes pfn 3 again: its bytes are the stream's now.
    const Pfn again[] = {3, 9};
    et.forget(again);
    BOOST_TEST(!et.local(3));
    BOOST_TEST(!et.sent_bytes(3, base));
    BOOST_TEST(et.local(5));

    // Final types: 3 (written again) and 6 (new) need localising; 5 is local.
    PfnTypeMap final_types(16);
    final_types.set(3, l1);
    final_types.set(5, l2);
    final_types.set(6, l1);
    BOOST_TEST((et.left_at_end(final_types) == std::vector<Pfn>{3, 6}));
}

BOOST_AUTO_TEST_CASE(prepare_page_per_type)
{
    FakeFrames f;
    Page mapped = page(), out = page();
    mapped[0] = 0x42;
    BOOST_TEST((prepare_page(1, kPfinfoNotab, mapped, out, f, false, nullptr) == PageOutcome::copied));
    BOOST_TEST(out[0] == 0x42);
    BOOST_TEST((prepare_page(1, kPfinfoXtab, {}, out, f, false, nullptr) == PageOutcome::no_data));
    BOOST_TEST(out[0] == 0);
    BOOST_TEST((prepare_page(1, kPfinfoBroken, {}, out, f, true, nullptr) == PageOutcome::no_data));
    BOOST_TEST(throws_with([&] { prepare_page(1, kPfinfoNotab, {}, out, f, false, nullptr); }, "not mapped"));
    BOOST_TEST(throws_with([&] { prepare_page(1, 0x5u << 28, mapped, out, f, false, nullptr); }, "unknown type"));
    Page pt = page();
    set_pte(pt, 0, (Mfn(0x1000 + 3 * 2) << 12) | 1);
    BOOST_TEST((prepare_page(1, kPfinfoL1 | kPfinfoPinned, pt, out, f, false, nullptr) == PageOutcome::normalised));
    BOOST_TEST(pte(out, 0) == ((2ull << 12) | 1));
    // A race while running defers; while paused it is an error naming the entry.
    set_pte(pt, 5, (Mfn(0x5000) << 12) | 1);
    std::string why;
    BOOST_TEST((prepare_page(1, kPfinfoL1, pt, out, f, false, &why) == PageOutcome::deferred));
    BOOST_TEST(why.find("L1[5]") != std::string::npos);
    BOOST_TEST(pte(out, 0) == 0u);
    BOOST_TEST(throws_with([&] { prepare_page(1, kPfinfoL1, pt, out, f, true, nullptr); }, "suspended: L1[5]"));
}

BOOST_AUTO_TEST_CASE(deferred_pages_come_back_once)
{
    DeferredPages d(100);
    d.add(7);
    d.add(99);
    d.add(7);
    d.add(1000); // beyond the guest: ignored, never a crash
    DirtyBitmap b(100);
    b.set(3);
    BOOST_TEST(d.drain_into(b) == 2u);
    BOOST_TEST(b.count() == 3u);
    BOOST_TEST(b.test(99));
    DirtyBitmap c(100);
    BOOST_TEST(d.drain_into(c) == 0u);
    BOOST_TEST(c.count() == 0u);
}

namespace {
Page vcpu_ctx_for(FakeFrames&)
{
    Page c(vcpu_ctx::kSize, 0);
    store<std::uint64_t>(c, vcpu_ctx::kRdx, 0x1000 + 3 * 1);     // start_info at pfn 1
    store<std::uint64_t>(c, vcpu_ctx::kGdtEnts, 513);            // two frames
    store<std::uint64_t>(c, vcpu_ctx::kGdtFrames, 0x1000 + 3 * 2);
    store<std::uint64_t>(c, vcpu_ctx::kGdtFrames + 8, 0x1000 + 3 * 3);
    store<std::uint64_t>(c, vcpu_ctx::kGdtFrames + 16, 0x123456); // beyond gdt_ents: untouched
    store<std::uint64_t>(c, vcpu_ctx::kCtrlreg + 24, Mfn(0x1000 + 3 * 4) << 12);
    store<std::uint64_t>(c, vcpu_ctx::kCtrlreg + 8, Mfn(0x1000 + 3 * 5) << 12);
    return c;
}
} // namespace

BOOST_AUTO_TEST_CASE(vcpu_basic_round_trip)
{
    FakeFrames f;
    Page c = vcpu_ctx_for(f);
    normalise_vcpu_basic(c, 0, f);
    BOOST_TEST(load<std::uint64_t>(c, vcpu_ctx::kRdx) == 1u);
    BOOST_TEST(load<std::uint64_t>(c, vcpu_ctx::kGdtFrames) == 2u);
    BOOST_TEST(load<std::uint64_t>(c, vcpu_ctx::kGdtFrames + 8) == 3u);
    BOOST_TEST(load<std::uint64_t>(c, vcpu_ctx::kGdtFrames + 16) == 0x123456u);
    BOOST_TEST(load<std::uint64_t>(c, vcpu_ctx::kCtrlreg + 24) == (4ull << 12));
    BOOST_TEST(load<std::uint64_t>(c, vcpu_ctx::kCtrlreg + 8) == (1 | (5ull << 12)));

    DestFrames d;
    for (Pfn p = 0; p < 16; ++p)
        d.populate(p);
    PfnTypeMap types(16);
    types.set(4, kPfinfoL4 | kPfinfoPinned);
    types.set(5, kPfinfoL4);
    auto blob = encode_vcpu_blob(rec::kX86PvVcpuBasic, 0, c);
    auto v = parse_vcpu_blob(rec::kX86PvVcpuBasic, blob.data, 3);
    Page back(v.context.begin(), v.context.end());
    BOOST_TEST(localise_vcpu_basic(back, 0, d, types) == 1u);
    BOOST_TEST(load<std::uint64_t>(back, vcpu_ctx::kRdx) == 0x9001u);
    BOOST_TEST(load<std::uint64_t>(back, vcpu_ctx::kGdtFrames + 8) == 0x9003u);
    BOOST_TEST(load<std::uint64_t>(back, vcpu_ctx::kCtrlreg + 24) == (0x9004ull << 12));
    BOOST_TEST(load<std::uint64_t>(back, vcpu_ctx::kCtrlreg + 8) == (0x9005ull << 12));
    BOOST_TEST((load<std::uint64_t>(back, vcpu_ctx::kFlags) & vcpu_ctx::kFlagOnline));

    // cr3 naming a plain page, a GDT frame that is a page table: refused.
    Page wrong(v.context.begin(), v.context.end());
    PfnTypeMap plain(16);
    BOOST_TEST(throws_with([&] { localise_vcpu_basic(wrong, 0, d, plain); }, "cr3 names pfn 0x4 of type NOTAB"));
    Page wrong2(v.context.begin(), v.context.end());
    types.set(2, kPfinfoL1);
    BOOST_TEST(throws_with([&] { localise_vcpu_basic(wrong2, 0, d, types); }, "GDT frame 0"));
}

BOOST_AUTO_TEST_CASE(vcpu_basic_errors)
{
    FakeFrames f;
    Page c = vcpu_ctx_for(f);
    store<std::uint64_t>(c, vcpu_ctx::kGdtEnts, 7169);
    BOOST_TEST(throws_with([&] { normalise_vcpu_basic(c, 0, f); }, "above Xen's limit"));
    c = vcpu_ctx_for(f);
    store<std::uint64_t>(c, vcpu_ctx::kCtrlreg + 24, Mfn(0x5000) << 12);
    BOOST_TEST(throws_with([&] { normalise_vcpu_basic(c, 2, f); }, "vcpu2's cr3 names mfn 0x5000"));
    // Only vCPU 0 carries start_info in rdx: others keep rdx as a register.
    c = vcpu_ctx_for(f);
    store<std::uint64_t>(c, vcpu_ctx::kRdx, 0xabcdef);
    normalise_vcpu_basic(c, 1, f);
    BOOST_TEST(load<std::uint64_t>(c, vcpu_ctx::kRdx) == 0xabcdefu);
    BOOST_TEST(throws_with([&] { normalise_vcpu_basic(c, 0, f); }, "start_info"));
    BOOST_TEST(throws_with([&] { Page s(100); normalise_vcpu_basic(s, 0, f); }, "expected 5168"));
    // Records: header and size checks on hostile input.
    BOOST_TEST(throws_stream([&] { parse_vcpu_blob(rec::kX86PvVcpuBasic, std::vector<std::uint8_t>(4), 0); },
                             "truncated"));
    auto b = encode_vcpu_blob(rec::kX86PvVcpuBasic, 5, Page(vcpu_ctx::kSize));
    BOOST_TEST(throws_stream([&] { parse_vcpu_blob(rec::kX86PvVcpuBasic, b.data, 3); }, "last vCPU is 3"));
    auto s = encode_vcpu_blob(rec::kX86PvVcpuBasic, 0, Page(100));
    BOOST_TEST(throws_stream([&] { parse_vcpu_blob(rec::kX86PvVcpuBasic, s.data, 3); }, "expected 5168"));
    auto e = encode_vcpu_blob(rec::kX86PvVcpuXsave, 0, {});
    BOOST_TEST(throws_stream([&] { parse_vcpu_blob(rec::kX86PvVcpuXsave, e.data, 3); }, "empty"));
}

BOOST_AUTO_TEST_CASE(start_info_and_shared_info)
{
    DestFrames d;
    for (Pfn p = 0; p < 16; ++p)
        d.populate(p);
    Page si = page();
    store<std::uint64_t>(si, start_info::kStoreMfn, 14);
    store<std::uint64_t>(si, start_info::kConsoleMfn, 15);
    store<std::uint32_t>(si, start_info::kFlags, 3);
    auto r = localise_start_info(si, d, 7, 8, 0xabc000);
    BOOST_TEST(r.store_mfn == 0x900eu);
    BOOST_TEST(r.console_mfn == 0x900fu);
    BOOST_TEST(load<std::uint64_t>(si, start_info::kStoreMfn) == 0x900eu);
    BOOST_TEST(load<std::uint32_t>(si, start_info::kStoreEvtchn) == 7u);
    BOOST_TEST(load<std::uint32_t>(si, start_info::kConsoleEvtchn) == 8u);
    BOOST_TEST(load<std::uint64_t>(si, start_info::kNrPages) == 16u);
    BOOST_TEST(load<std::uint64_t>(si, start_info::kSharedInfo) == 0xabc000u);
    BOOST_TEST(load<std::uint32_t>(si, start_info::kFlags) == 0u);
    Page bad = page();
    store<std::uint64_t>(bad, start_info::kStoreMfn, 99);
    BOOST_TEST(throws_with([&] { localise_start_info(bad, d, 1, 2, 0); }, "xenstore page names pfn 0x63"));

    Page saved(kPageSize, 0x11), cur(kPageSize, 0x22);
    store<std::uint64_t>(saved, shinfo::kMaxPfn, 16);
    store<std::uint64_t>(saved, shinfo::kFrameListList, 0x1234);
    merge_shared_info(saved, cur);
    BOOST_TEST(cur[0] == 0x11);                                   // vcpu_info copied
    BOOST_TEST(load<std::uint64_t>(cur, shinfo::kVcpuPendingSel) == 0u);
    BOOST_TEST(cur[shinfo::kEvtchnPending] == 0);                 // nothing pending
    BOOST_TEST(cur[shinfo::kEvtchnMask + 511] == 0xff);           // all masked
    BOOST_TEST(cur[3072] == 0x22);                                 // wallclock: the new host's
    BOOST_TEST(load<std::uint64_t>(cur, shinfo::kMaxPfn) == 16u); // arch copied
    BOOST_TEST(load<std::uint64_t>(cur, shinfo::kFrameListList) == 0u);
    BOOST_TEST(cur[shinfo::kArch + shinfo::kArchSize] == 0x22);
    auto root = p2m_root(saved);
    BOOST_TEST(root.max_pfn == 15u);
    BOOST_TEST(root.frame_list_list == 0x1234u);
    BOOST_TEST(throws_with([&] { merge_shared_info(Page(10), cur); }, "expected 4096"));
}

BOOST_AUTO_TEST_CASE(pv_info_p2m_frames_tsc_records)
{
    auto info = encode_pv_info(8, 4);
    BOOST_TEST(info.type == rec::kX86PvInfo);
    check_pv_info(info.data);
    BOOST_TEST(throws_stream([&] { check_pv_info(encode_pv_info(4, 3).data); }, "32-bit PV guest"));
    BOOST_TEST(throws_stream([&] { check_pv_info(encode_pv_info(8, 3).data); }, "not a valid combination"));

    BOOST_TEST(p2m_frame_count(511) == 1u);
    BOOST_TEST(p2m_frame_count(512) == 2u);
    FakeFrames f;
    std::vector<Mfn> mfns{0x1000 + 3 * 6};
    P2mFrames fr;
    fr.end_pfn = 15;
    fr.frame_pfns = p2m_frame_pfns(mfns, f);
    BOOST_TEST(fr.frame_pfns[0] == 6u);
    auto blob = encode_p2m_frames(fr);
    BOOST_TEST(blob.data.size() == 16u);
    auto back = parse_p2m_frames(blob.data, 15);
    BOOST_TEST(back.frame_pfns == fr.frame_pfns);
    BOOST_TEST(throws_stream([&] { parse_p2m_frames(blob.data, 1000); }, "expected the whole p2m"));
    auto longer = blob.data;
    append<std::uint64_t>(longer, 1);
    BOOST_TEST(throws_stream([&] { parse_p2m_frames(longer, 15); }, "expected 16"));
    P2mFrames far = fr;
    far.frame_pfns[0] = 99;
    BOOST_TEST(throws_stream([&] { parse_p2m_frames(encode_p2m_frames(far).data, 15); }, "beyond"));
    std::vector<Mfn> foreign{0x5000};
    BOOST_TEST(throws_with([&] { p2m_frame_pfns(foreign, f); }, "p2m frame 0 names mfn 0x5000"));

    TscInfo t{1, 2400000, 123456789, 3};
    auto tb = encode_tsc_info(t);
    BOOST_TEST(tb.data.size() == 24u);
    auto t2 = parse_tsc_info(tb.data);
    BOOST_TEST(t2.khz == 2400000u);
    BOOST_TEST(t2.nsec == 123456789u);
    BOOST_TEST(t2.incarnation == 3u);
    tb.data[20] = 1;
    BOOST_TEST(throws_stream([&] { parse_tsc_info(tb.data); }, "reserved"));
}

namespace {
// What a source sends for a 16-page guest with two vCPUs.
std::vector<StateBlob> full_state()
{
    std::vector<StateBlob> s;
    s.push_back(encode_pv_info(8, 4));
    P2mFrames f;
    f.end_pfn = 15;
    f.frame_pfns = {6};
    s.push_back(encode_p2m_frames(f));
    s.push_back(encode_tsc_info({0, 1000000, 5, 1}));
    StateBlob sh;
    sh.type = rec::kSharedInfo;
    sh.data.assign(kPageSize, 0);
    s.push_back(sh);
    s.push_back(encode_vcpu_blob(rec::kX86PvVcpuBasic, 0, Page(vcpu_ctx::kSize, 1)));
    s.push_back(encode_vcpu_blob(rec::kX86PvVcpuXsave, 0, Page(64, 2)));
    s.push_back(encode_vcpu_blob(rec::kX86PvVcpuBasic, 1, Page(vcpu_ctx::kSize, 3)));
    PfnTypeMap t(16);
    t.set(4, kPfinfoL4 | kPfinfoPinned);
    t.set(9, kPfinfoXtab);
    for (auto& b : t.encode(1))
        s.push_back(b);
    return s;
}
} // namespace

BOOST_AUTO_TEST_CASE(pv_state_parses_what_the_source_sends)
{
    auto st = parse_pv_state(full_state(), 16, 3);
    BOOST_TEST(st.p2m_frames.frame_pfns.size() == 1u);
    BOOST_TEST(st.tsc.has_value());
    BOOST_TEST(st.tsc->khz == 1000000u);
    BOOST_TEST(st.shared_info.size() == kPageSize);
    BOOST_TEST(st.vcpus.size() == 2u);
    BOOST_TEST(st.vcpus[0].basic[0] == 1);
    BOOST_TEST(st.vcpus[0].extra.at(rec::kX86PvVcpuXsave).size() == 64u);
    BOOST_TEST(st.vcpus[1].basic[0] == 3);
    BOOST_TEST(st.types.get(4) == (kPfinfoL4 | kPfinfoPinned));
    BOOST_TEST(st.types.get(9) == kPfinfoXtab);
    BOOST_TEST(st.types.get(5) == kPfinfoNotab);
}

BOOST_AUTO_TEST_CASE(cpu_policy_records)
{
    Page leaves(3 * cpu_policy::kLeafSize, 7);
    auto b = encode_cpu_policy(rec::kX86CpuidPolicy, leaves);
    BOOST_TEST(b.type == rec::kX86CpuidPolicy);
    BOOST_TEST(b.data == leaves);
    BOOST_TEST(check_cpu_policy(b.type, b.data) == 3u);
    BOOST_TEST(check_cpu_policy(rec::kX86MsrPolicy, Page(2 * cpu_policy::kMsrSize, 0)) == 2u);
    BOOST_TEST(throws_stream([&] { check_cpu_policy(rec::kX86CpuidPolicy, Page(25, 0)); },
                             "X86_CPUID_POLICY of 25 bytes, not a whole number of 24-byte entries"));
    BOOST_TEST(throws_stream([&] { check_cpu_policy(rec::kX86MsrPolicy, Page{}); }, "X86_MSR_POLICY of 0 bytes"));
    BOOST_TEST(throws_stream(
        [&] { check_cpu_policy(rec::kX86MsrPolicy, Page((cpu_policy::kMaxMsrs + 1) * cpu_policy::kMsrSize, 0)); },
        "4097 entries, more than 4096"));
    BOOST_TEST(throws_with([&] { check_cpu_policy(rec::kX86TscInfo, Page(24, 0)); }, "not a CPU policy"));

    // In the platform state: optional (an older source sends none), once
    // each, kept byte for byte, checked like the rest.
    auto s = full_state();
    BOOST_TEST(parse_pv_state(s, 16, 3).cpuid_policy.empty());
    BOOST_TEST(parse_pv_state(s, 16, 3).msr_policy.empty());
    s.push_back(b);
    s.push_back(encode_cpu_policy(rec::kX86MsrPolicy, Page(cpu_policy::kMsrSize, 9)));
    auto st = parse_pv_state(s, 16, 3);
    BOOST_TEST(st.cpuid_policy == leaves);
    BOOST_TEST(st.msr_policy == Page(cpu_policy::kMsrSize, 9));
    s.push_back(b);
    BOOST_TEST(throws_stream([&] { parse_pv_state(s, 16, 3); }, "a second X86_CPUID_POLICY"));
    auto bad = full_state();
    bad.push_back(StateBlob{rec::kX86MsrPolicy, Page(10, 0)});
    BOOST_TEST(throws_stream([&] { parse_pv_state(bad, 16, 3); }, "X86_MSR_POLICY of 10 bytes"));
}

BOOST_AUTO_TEST_CASE(pv_state_refuses_missing_duplicate_and_unknown_records)
{
    auto without = [](std::uint32_t type) {
        auto s = full_state();
        std::erase_if(s, [&](const StateBlob& b) { return b.type == type; });
        return s;
    };
    BOOST_TEST(throws_stream([&] { parse_pv_state(without(rec::kX86PvInfo), 16, 3); }, "lacks X86_PV_INFO"));
    BOOST_TEST(throws_stream([&] { parse_pv_state(without(rec::kX86PvP2mFrames), 16, 3); }, "lacks X86_PV_P2M"));
    BOOST_TEST(throws_stream([&] { parse_pv_state(without(rec::kSharedInfo), 16, 3); }, "lacks SHARED_INFO"));
    BOOST_TEST(throws_stream([&] { parse_pv_state(without(rec::kFastmigPfnTypes), 16, 3); }, "lacks FASTMIG_PFN"));
    // TSC info is optional, as in libxc.
    BOOST_TEST(!parse_pv_state(without(rec::kX86TscInfo), 16, 3).tsc.has_value());

    auto dup = full_state();
    dup.push_back(encode_pv_info(8, 4));
    BOOST_TEST(throws_stream([&] { parse_pv_state(dup, 16, 3); }, "a second X86_PV_INFO"));
    auto dupv = full_state();
    dupv.push_back(encode_vcpu_blob(rec::kX86PvVcpuXsave, 0, Page(8, 0)));
    BOOST_TEST(throws_stream([&] { parse_pv_state(dupv, 16, 3); }, "a second X86_PV_VCPU_XSAVE record for vcpu0"));
    auto unknown = full_state();
    unknown.push_back(StateBlob{0x09, {}}); // HVM_CONTEXT
    BOOST_TEST(throws_stream([&] { parse_pv_state(unknown, 16, 3); }, "type 0x9 (HVM_CONTEXT) is an HVM record"));
    auto strange = full_state();
    strange.push_back(StateBlob{0x4242, {}});
    BOOST_TEST(throws_stream([&] { parse_pv_state(strange, 16, 3); }, "type 0x4242 is not one the Xen PV backend knows"));
    auto orphan = full_state();
    orphan.push_back(encode_vcpu_blob(rec::kX86PvVcpuMsrs, 2, Page(16, 0)));
    BOOST_TEST(throws_stream([&] { parse_pv_state(orphan, 16, 3); }, "vcpu2 has extended state but no basic"));
    auto no0 = full_state();
    std::erase_if(no0, [](const StateBlob& b) { return b.type == rec::kX86PvVcpuBasic && b.data[0] == 0; });
    BOOST_TEST(throws_stream([&] { parse_pv_state(no0, 16, 3); }, "vcpu0"));
    // Sizes checked against the destination: p2m of another size, vCPU beyond.
    BOOST_TEST(throws_stream([&] { parse_pv_state(full_state(), 32, 3); }, "expected the whole p2m"));
    BOOST_TEST(throws_stream([&] { parse_pv_state(full_state(), 16, 0); }, "last vCPU is 0"));
}
