// The simulated domain: content, workloads, the process boundary (pause,
// resume, dirty log, attach), incoming domains, and the registry.  Every
// test runs with a private FASTMIG_SIM_DIR and destroys what it creates;
// sim processes are started through $FASTMIG_BIN (`fastmig`, or the test
// helper tests/unit/sim_serve_main).
#define BOOST_TEST_MODULE sim
#include <boost/test/unit_test.hpp>

#include "stream/clock.hpp"
#include "stream/domain/sim/sim.hpp"
#include "stream/domain/sim/sim_content.hpp"
#include "stream/domain/sim/sim_state.hpp"
#include "stream/domain/sim/sim_workload.hpp"

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>
#include <unistd.h>
#include <zlib.h>

using namespace fastmig;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kMiB = 1 << 20;

// A private registry for the whole run; every domain left over is destroyed
// at the end (and SIGKILLed if it does not answer).
struct SimDirFixture {
    std::string dir;
    SimDirFixture()
    {
        char tmpl[] = "/tmp/fastmig-test-sim-XXXXXX";
        if (!::mkdtemp(tmpl))
            throw std::runtime_error("mkdtemp failed");
        dir = tmpl;
        ::setenv("FASTMIG_SIM_DIR", dir.c_str(), 1);
        if (!std::getenv("FASTMIG_BIN"))
            throw std::runtime_error("FASTMIG_BIN is not set: point it at fastmig or tests/unit/sim_serve_main");
    }
    ~SimDirFixture()
    {
        try {
            for (auto& i : sim::list_domains()) {
                try {
                    sim::destroy_domain(i.id);
                } catch (...) {
                    ::kill(i.pid, SIGKILL);
                }
            }
        } catch (...) {
        }
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
};
BOOST_TEST_GLOBAL_FIXTURE(SimDirFixture);

// Destroys a domain at scope exit unless released.
struct Guard {
    int id;
    ~Guard()
    {
        if (id > 0) {
            try {
                sim::destroy_domain(id);
            } catch (...) {
            }
        }
    }
};

double deflate_ratio(const std::uint8_t* p, std::size_t n)
{
    std::vector<std::uint8_t> out(compressBound(uLong(n)));
    uLongf ol = uLongf(out.size());
    BOOST_REQUIRE(compress2(out.data(), &ol, p, uLong(n), 6) == Z_OK);
    return double(n) / double(ol);
}

std::vector<std::uint8_t> read_all(Domain& d)
{
    std::vector<std::uint8_t> mem(d.nr_pages() * kPageSize);
    std::vector<Pfn> pfns(d.nr_pages());
    for (Pfn p = 0; p < d.nr_pages(); ++p)
        pfns[p] = p;
    d.read_pages(pfns, mem);
    return mem;
}

int create(const std::string& workload, std::uint64_t mib, double scale = 1.0, std::uint64_t seed = 1)
{
    sim::SimConfig c;
    c.memory_bytes = mib * kMiB;
    c.workload = workload;
    c.seed = seed;
    c.rate_scale = scale;
    return sim::create_domain(c, 60s);
}

template <class F> bool eventually(F&& f, std::chrono::milliseconds limit = 3000ms)
{
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (f())
            return true;
        std::this_thread::sleep_for(20ms);
    }
    return f();
}

} // namespace

BOOST_AUTO_TEST_CASE(content_is_deterministic_unique_and_compresses_as_specified)
{
    using sim::PageKind;
    std::vector<std::uint8_t> a(kPageSize), b(kPageSize);
    for (PageKind k : {PageKind::text, PageKind::binary, PageKind::random}) {
        sim::fill_page(k, a.data(), 42, 7, 0);
        sim::fill_page(k, b.data(), 42, 7, 0);
        BOOST_TEST((a == b), "deterministic " << sim::page_kind_name(k));
        sim::fill_page(k, b.data(), 42, 8, 0);
        BOOST_TEST((a != b), "unique per pfn " << sim::page_kind_name(k));
        sim::fill_page(k, b.data(), 43, 7, 0);
        BOOST_TEST((a != b), "depends on seed " << sim::page_kind_name(k));
        sim::fill_page(k, b.data(), 42, 7, 1);
        BOOST_TEST((a != b), "depends on version " << sim::page_kind_name(k));
    }
    // Per-page deflate ratios, averaged over many pages (the engine
    // compresses page by page).
    auto avg = [&](PageKind k) {
        double sum = 0;
        for (Pfn p = 0; p < 64; ++p) {
            sim::fill_page(k, a.data(), 5, p, 0);
            sum += deflate_ratio(a.data(), kPageSize);
        }
        return sum / 64;
    };
    double text = avg(PageKind::text), bin = avg(PageKind::binary), rnd = avg(PageKind::random);
    BOOST_TEST_MESSAGE("deflate ratios: text " << text << " binary " << bin << " random " << rnd);
    BOOST_TEST(text >= 3.0);
    BOOST_TEST(bin >= 1.5);
    BOOST_TEST(bin <= 2.5);
    BOOST_TEST(rnd <= 1.01);
    sim::fill_page(PageKind::zero, a.data(), 5, 1, 0);
    BOOST_TEST(std::all_of(a.begin(), a.end(), [](std::uint8_t x) { return x == 0; }));
}

BOOST_AUTO_TEST_CASE(layouts_follow_the_scenarios)
{
    sim::SimConfig c;
    c.memory_bytes = 8ull << 30;
    const std::uint64_t n = c.memory_bytes / kPageSize;
    auto count = [&](const sim::Layout& l) {
        std::uint64_t nz = 0;
        for (auto& g : l.regions)
            for (Pfn p = g.start; p < g.start + g.count; p += 16)
                nz += sim::page_kind(l, c.seed, p) != sim::PageKind::zero ? 16 : 0;
        return double(nz) / double(l.nr_pages);
    };
    c.workload = "idle";
    double idle = count(sim::make_layout(c));
    BOOST_TEST(idle > 0.045);
    BOOST_TEST(idle < 0.053);
    c.workload = "after-load";
    double al = count(sim::make_layout(c));
    BOOST_TEST(al > 0.90);
    BOOST_TEST(al < 0.94);
    c.workload = "random";
    auto lr = sim::make_layout(c);
    BOOST_TEST(lr.hot.count == n / 8);
    c.workload = "web";
    c.memory_bytes = 2ull << 30;
    double web = count(sim::make_layout(c));
    BOOST_TEST(web > 0.78);
    BOOST_TEST(web < 0.81);
    c.workload = "nope";
    BOOST_CHECK_THROW(sim::make_layout(c), Error);
    c.workload = "idle";
    c.memory_bytes = 4096 * 3 + 1;
    BOOST_CHECK_THROW(sim::make_layout(c), Error);
    BOOST_TEST(sim::workload_names().size() == 5u);
}

BOOST_AUTO_TEST_CASE(state_blob_round_trips_and_rejects_garbage)
{
    sim::SimSavedState s;
    s.cfg.memory_bytes = 64 * kMiB;
    s.cfg.workload = "web";
    s.cfg.seed = 99;
    s.cfg.rate_scale = 0.5;
    s.epoch = 3;
    s.cursors[0] = 12345;
    s.cursors[1] = 7;
    StateBlob b = sim::encode_state(s);
    auto d = sim::decode_state(b);
    BOOST_TEST(d.cfg.workload == "web");
    BOOST_TEST(d.cfg.memory_bytes == s.cfg.memory_bytes);
    BOOST_TEST(d.cfg.seed == 99u);
    BOOST_TEST(d.cfg.rate_scale == 0.5);
    BOOST_TEST(d.epoch == 3u);
    BOOST_TEST(d.cursors[0] == 12345u);
    BOOST_TEST(d.cursors[1] == 7u);

    auto bad = [&](auto mutate) {
        StateBlob x = b;
        mutate(x);
        BOOST_CHECK_THROW(sim::decode_state(x), Error);
    };
    bad([](StateBlob& x) { x.data.resize(10); });
    bad([](StateBlob& x) { x.data.pop_back(); });
    bad([](StateBlob& x) { x.data.push_back(0); });
    bad([](StateBlob& x) { x.data[0] ^= 1; });                    // magic
    bad([](StateBlob& x) { x.data[4] = 9; });                     // version
    bad([](StateBlob& x) { x.type = 2; });
    bad([](StateBlob& x) { x.data.back() = 'X'; });               // unknown workload "weX"
    bad([](StateBlob& x) { std::memset(x.data.data() + 24, 0xff, 8); }); // rate NaN
    bad([](StateBlob& x) { x.data[8] = 1; });                     // memory not page aligned
    bad([](StateBlob& x) { x.data.assign(4096, 0xab); });
}

BOOST_AUTO_TEST_CASE(every_workload_starts_and_its_writes_reach_the_dirty_log)
{
    for (auto& [w, desc] : sim::workload_names()) {
        BOOST_TEST_CONTEXT("workload " << w)
        {
            // idle writes ~10 times a second: scale it up so 400 ms sees some.
            Stopwatch sw;
            int id = create(w, w == "dpdk" ? 128 : 64, w == "idle" ? 10.0 : 1.0);
            Guard g{id};
            BOOST_TEST_MESSAGE(w << ": created in " << sw.seconds() << " s");
            auto info = sim::domain_info(id);
            BOOST_TEST(info.workload == w);
            BOOST_TEST(info.state == "running");
            BOOST_TEST(info.memory_bytes == (w == "dpdk" ? 128 : 64) * kMiB);
            auto d = sim::attach(id);
            BOOST_TEST(d->name() == "sim:" + std::to_string(id));
            BOOST_TEST(d->kind() == kDomainKindSim);
            BOOST_TEST(d->running());
            d->enable_dirty_log();
            std::this_thread::sleep_for(400ms);
            DirtyBitmap bm(d->nr_pages());
            std::uint64_t n = d->fetch_and_clear_dirty(bm);
            BOOST_TEST(n == bm.count());
            BOOST_TEST_MESSAGE(w << ": " << n << " pages dirtied in 400 ms");
            if (w == "after-load")
                BOOST_TEST(n == 0u);
            else
                BOOST_TEST(n > 0u);
            // Memory is not all zero (content was filled).
            std::vector<Pfn> first = {0, 1, 2, 3};
            std::vector<std::uint8_t> buf(4 * kPageSize);
            d->read_pages(first, buf);
            BOOST_TEST(std::any_of(buf.begin(), buf.end(), [](std::uint8_t x) { return x != 0; }));
        }
    }
}

BOOST_AUTO_TEST_CASE(a_paused_domain_really_stops_writing_and_resumes)
{
    int id = create("dpdk", 64);
    Guard g{id};
    auto d = sim::attach(id);
    d->enable_dirty_log();
    std::uint64_t before = monotonic_ns();
    Stopwatch sw;
    d->suspend(1000ms);
    BOOST_TEST_MESSAGE("suspend took " << sw.seconds() * 1e3 << " ms");
    BOOST_TEST(!d->running());
    BOOST_TEST(sim::domain_info(id).state == "paused");
    auto clk = d->clock();
    BOOST_TEST(clk.paused_at_ns >= before);
    BOOST_TEST(clk.paused_at_ns <= monotonic_ns());
    DirtyBitmap bm(d->nr_pages());
    d->fetch_and_clear_dirty(bm); // writes before the pause
    auto m1 = read_all(*d);
    std::this_thread::sleep_for(200ms);
    auto m2 = read_all(*d);
    BOOST_TEST((m1 == m2), "memory changed while paused");
    BOOST_TEST(d->fetch_and_clear_dirty(bm) == 0u);
    d->suspend(1000ms); // idempotent
    auto st = d->save_state();
    BOOST_TEST(st.size() == 1u);
    BOOST_TEST(st[0].type == sim::kSimStateType);

    d->resume();
    BOOST_TEST(d->running());
    BOOST_TEST(d->clock().resumed_at_ns >= clk.paused_at_ns);
    std::this_thread::sleep_for(100ms);
    BOOST_TEST(d->fetch_and_clear_dirty(bm) > 0u);
    BOOST_CHECK_THROW(d->save_state(), Error); // only while paused
    auto m3 = read_all(*d);
    BOOST_TEST((m3 != m2), "memory did not change after resume");
}

// The invariant the engine relies on: a page not reported dirty since it was
// last read has not changed.  Snapshot, then repeatedly fetch and re-read
// what was reported; after the pause the snapshot must equal memory.
BOOST_AUTO_TEST_CASE(fetch_and_clear_loses_no_write)
{
    for (std::string w : {"random", "dpdk", "web"}) {
        BOOST_TEST_CONTEXT("workload " << w)
        {
            int id = create(w, 64, w == "web" ? 20.0 : 1.0, 7);
            Guard g{id};
            auto d = sim::attach(id);
            d->enable_dirty_log();
            auto snap = read_all(*d);
            DirtyBitmap bm(d->nr_pages());
            std::vector<std::uint8_t> page(kPageSize);
            std::uint64_t reported = 0;
            auto refresh = [&] {
                reported += d->fetch_and_clear_dirty(bm);
                bm.for_each_set([&](Pfn p) {
                    Pfn one[1] = {p};
                    d->read_pages(one, std::span(snap.data() + p * kPageSize, kPageSize));
                });
            };
            for (int i = 0; i < 30; ++i) {
                std::this_thread::sleep_for(10ms);
                refresh();
            }
            d->suspend(1000ms);
            refresh();
            auto now = read_all(*d);
            std::uint64_t lost = 0;
            for (Pfn p = 0; p < d->nr_pages(); ++p)
                lost += std::memcmp(now.data() + p * kPageSize, snap.data() + p * kPageSize, kPageSize) != 0;
            BOOST_TEST_MESSAGE(w << ": " << reported << " dirty pages reported, " << lost << " lost");
            BOOST_TEST(reported > 0u);
            BOOST_TEST(lost == 0u);
        }
    }
}

BOOST_AUTO_TEST_CASE(incoming_domain_write_read_zero_restore_unpause)
{
    sim::SimProvider prov;
    BOOST_CHECK_THROW(prov.create(16384, kDomainKindXenHvm, "xen:3"), Error);
    const std::uint64_t pages = 64 * kMiB / kPageSize;
    auto in = prov.create(pages, kDomainKindSim, "sim:test");
    int id = std::atoi(in->name().substr(4).c_str());
    Guard g{id};
    BOOST_TEST(in->nr_pages() == pages);
    BOOST_TEST(sim::domain_info(id).state == "incoming");
    BOOST_CHECK_THROW(sim::attach(id), Error); // not a source

    // A batch with runs and gaps, out of order.
    std::vector<Pfn> pfns = {5, 6, 7, 100, 3, 4, pages - 1};
    std::vector<std::uint8_t> src(pfns.size() * kPageSize);
    for (std::size_t i = 0; i < pfns.size(); ++i)
        sim::fill_page(sim::PageKind::random, src.data() + i * kPageSize, 1, pfns[i], 0);
    in->write_pages(pfns, src);
    std::vector<std::uint8_t> page(kPageSize);
    for (std::size_t i = 0; i < pfns.size(); ++i) {
        in->read_page(pfns[i], page);
        BOOST_TEST(std::memcmp(page.data(), src.data() + i * kPageSize, kPageSize) == 0);
    }
    in->read_page(8, page);
    BOOST_TEST(std::all_of(page.begin(), page.end(), [](std::uint8_t x) { return x == 0; }));
    const Pfn six[] = {6};
    in->zero_pages(six);
    in->read_page(6, page);
    BOOST_TEST(std::all_of(page.begin(), page.end(), [](std::uint8_t x) { return x == 0; }));
    in->read_page(7, page);
    BOOST_TEST(std::memcmp(page.data(), src.data() + 2 * kPageSize, kPageSize) == 0);
    std::vector<Pfn> beyond = {pages};
    BOOST_CHECK_THROW(in->write_pages(beyond, std::span(src.data(), kPageSize)), Error);
    BOOST_CHECK_THROW(in->read_page(pages, page), Error);
    const Pfn past[] = {pages};
    BOOST_CHECK_THROW(in->zero_pages(past), Error);

    // State from the network: garbage is refused, the domain stays incoming.
    BOOST_CHECK_THROW(in->restore_state({}), Error);
    BOOST_CHECK_THROW(in->restore_state({StateBlob{1, {1, 2, 3}}}), Error);
    BOOST_CHECK_THROW(in->restore_state({StateBlob{77, {}}}), Error);
    sim::SimSavedState s;
    s.cfg.memory_bytes = 128 * kMiB; // wrong size for this domain
    s.cfg.workload = "dpdk";
    BOOST_CHECK_THROW(in->restore_state({sim::encode_state(s)}), Error);
    BOOST_CHECK_THROW(in->unpause(), Error); // nothing restored yet
    BOOST_TEST(sim::domain_info(id).state == "incoming");

    s.cfg.memory_bytes = pages * kPageSize;
    s.epoch = 1;
    in->restore_state({sim::encode_state(s)});
    std::uint64_t before = monotonic_ns();
    in->unpause();
    BOOST_TEST(in->clock().resumed_at_ns >= before);
    auto info = sim::domain_info(id);
    BOOST_TEST(info.state == "running");
    BOOST_TEST(info.workload == "dpdk");
    // It runs: attach as a source and see it write.
    auto d = sim::attach(id);
    BOOST_TEST(d->running());
    d->enable_dirty_log();
    std::this_thread::sleep_for(100ms);
    DirtyBitmap bm(pages);
    BOOST_TEST(d->fetch_and_clear_dirty(bm) > 0u);
    in->destroy();
    g.id = 0;
    BOOST_CHECK_THROW(sim::domain_info(id), Error);
}

// A source's state makes the destination continue the same workload.
BOOST_AUTO_TEST_CASE(state_moves_a_workload_to_a_new_domain)
{
    int src_id = create("web", 64, 1.0, 11);
    Guard gs{src_id};
    auto src = sim::attach(src_id);
    src->suspend(1000ms);
    auto state = src->save_state();
    auto mem = read_all(*src);
    sim::SimProvider prov;
    auto dst = prov.create(src->nr_pages(), src->kind(), src->name());
    Guard gd{std::atoi(dst->name().substr(4).c_str())};
    std::vector<Pfn> pfns;
    for (Pfn p = 0; p < src->nr_pages(); ++p)
        pfns.push_back(p);
    dst->write_pages(pfns, mem);
    dst->restore_state(state);
    dst->unpause();
    auto info = sim::domain_info(gd.id);
    BOOST_TEST(info.workload == "web");
    BOOST_TEST(info.state == "running");
    auto d2 = sim::attach(gd.id);
    auto st2 = (d2->suspend(1000ms), d2->save_state());
    auto decoded = sim::decode_state(st2[0]);
    BOOST_TEST(decoded.epoch == 2u);          // migrated once, saved again
    BOOST_TEST(decoded.cfg.seed == 11u);
    BOOST_TEST(decoded.cursors[0] >= sim::decode_state(state[0]).cursors[0]); // log continues
    src->release();
    gs.id = 0;
    BOOST_CHECK_THROW(sim::domain_info(src_id), Error);
}

BOOST_AUTO_TEST_CASE(list_info_destroy_and_lowest_free_id)
{
    int a = create("idle", 32);
    Guard ga{a};
    int b = create("after-load", 32);
    Guard gb{b};
    BOOST_TEST(a != b);
    auto l = sim::list_domains();
    auto has = [&](int id) { return std::any_of(l.begin(), l.end(), [&](auto& i) { return i.id == id; }); };
    BOOST_TEST(has(a));
    BOOST_TEST(has(b));
    auto ia = sim::domain_info(a);
    BOOST_TEST(ia.pid > 0);
    BOOST_TEST(ia.workload == "idle");
    sim::destroy_domain(a);
    ga.id = 0;
    BOOST_CHECK_THROW(sim::domain_info(a), Error);
    BOOST_CHECK_THROW(sim::destroy_domain(a), Error);
    int c = create("idle", 32);
    Guard gc{c};
    BOOST_TEST(c == a); // the lowest free id is reused
}

BOOST_AUTO_TEST_CASE(nonexistent_domain_is_a_clear_error)
{
    try {
        sim::attach(4242);
        BOOST_FAIL("attach to a missing domain succeeded");
    } catch (const Error& e) {
        BOOST_TEST(std::string(e.what()).find("sim domain 4242 does not exist") != std::string::npos);
    }
    BOOST_CHECK_THROW(sim::attach_incoming(4242), Error);
    BOOST_CHECK_THROW(sim::domain_info(0), Error);
    BOOST_CHECK_THROW(sim::destroy_domain(4242), Error);
    sim::SimConfig c;
    c.workload = "no-such-workload";
    c.memory_bytes = 32 * kMiB;
    try {
        sim::create_domain(c, 10s);
        BOOST_FAIL("created a domain with an unknown workload");
    } catch (const Error& e) {
        BOOST_TEST_MESSAGE("unknown workload: " << e.what());
        BOOST_TEST(std::string(e.what()).find("unknown workload") != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(a_killed_domain_is_reported_gone_and_cleaned)
{
    int id = create("idle", 32);
    Guard g{id};
    auto info = sim::domain_info(id);
    auto d = sim::attach(id);
    BOOST_REQUIRE(::kill(info.pid, SIGKILL) == 0);
    BOOST_TEST(eventually([&] {
        try {
            sim::domain_info(id);
            return false;
        } catch (const Error& e) {
            return std::string(e.what()).find("does not exist") != std::string::npos;
        }
    }));
    auto l = sim::list_domains();
    BOOST_TEST(std::none_of(l.begin(), l.end(), [&](auto& i) { return i.id == id; }));
    BOOST_TEST(!std::filesystem::exists(std::string(std::getenv("FASTMIG_SIM_DIR")) + "/" + std::to_string(id) + ".sock"));
    // The attachment notices too: suspend fails fast with a clear cause.
    try {
        d->suspend(300ms);
        BOOST_FAIL("suspend of a dead domain succeeded");
    } catch (const Error& e) {
        BOOST_TEST_MESSAGE("suspend of a killed domain: " << e.what());
        BOOST_TEST(std::string(e.what()).find("sim:" + std::to_string(id)) != std::string::npos);
    }
    g.id = 0;
}

BOOST_AUTO_TEST_CASE(suspend_times_out_with_a_clear_error)
{
    int id = create("idle", 32);
    Guard g{id};
    auto d = sim::attach(id);
    auto info = sim::domain_info(id);
    ::kill(info.pid, SIGSTOP); // a domain that cannot answer
    try {
        d->suspend(150ms);
        BOOST_FAIL("suspend of a stopped process succeeded");
    } catch (const Error& e) {
        BOOST_TEST(std::string(e.what()) == "sim:" + std::to_string(id) + ": did not pause within 150 ms");
    }
    ::kill(info.pid, SIGCONT);
    // The late command is still executed; a new one succeeds.
    d->suspend(1000ms);
    BOOST_TEST(!d->running());
    d->resume();
    BOOST_TEST(d->running());
}

BOOST_AUTO_TEST_CASE(sigterm_exits_cleanly_and_removes_the_entry)
{
    int id = create("random", 16);
    Guard g{id};
    auto info = sim::domain_info(id);
    BOOST_CHECK_THROW(sim::attach_incoming(id), Error); // a running source is not incoming
    const std::string dir = std::getenv("FASTMIG_SIM_DIR");
    BOOST_REQUIRE(::kill(info.pid, SIGTERM) == 0);
    // The process removes its own socket and lock file on the way out.
    BOOST_TEST(eventually([&] {
        return !std::filesystem::exists(dir + "/" + std::to_string(id) + ".sock") &&
               !std::filesystem::exists(dir + "/" + std::to_string(id) + ".lock");
    }));
    BOOST_CHECK_THROW(sim::domain_info(id), Error);
    g.id = 0;
}
