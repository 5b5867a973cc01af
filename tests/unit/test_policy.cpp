// PrecopyPolicy: the convergence rules, one test per rule.
#define BOOST_TEST_MODULE policy
#include <boost/test/unit_test.hpp>

#include "stream/precopy_policy.hpp"

using namespace fastmig;

namespace {
// A round that sent `pages` data pages of 4 KiB each at `bw` bytes/s.
RoundSample round(unsigned r, std::uint64_t pages, double bw, std::uint64_t dirty_after)
{
    RoundSample s;
    s.round = r;
    s.pages = pages;
    s.data_pages = pages;
    s.bytes = pages * 4104; // page + descriptor + share of headers
    s.seconds = double(s.bytes) / bw;
    s.dirty_after = dirty_after;
    return s;
}
} // namespace

BOOST_AUTO_TEST_CASE(converges_when_prediction_under_target)
{
    PolicyConfig cfg;
    cfg.downtime_target_ms = 10;
    cfg.fixed_cost_ms = 1;
    PrecopyPolicy p(cfg);
    // 1 GB/s: 100 dirty pages = ~0.4 ms + 1 ms fixed.
    auto d = p.after_round(round(0, 262144, 1e9, 100));
    BOOST_TEST(d.stop);
    BOOST_TEST((d.reason == StopReason::converged));
    BOOST_TEST(d.predicted_downtime_ms > 1.0);
    BOOST_TEST(d.predicted_downtime_ms < 2.0);
    BOOST_TEST(d.why.find("within") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(continues_when_dirty_set_too_large)
{
    PolicyConfig cfg;
    cfg.downtime_target_ms = 10;
    PrecopyPolicy p(cfg);
    // 100 MB/s: 10000 dirty pages = 410 ms.
    auto d = p.after_round(round(0, 262144, 100e6, 10000));
    BOOST_TEST(!d.stop);
    BOOST_TEST(d.predicted_downtime_ms > 300);
    BOOST_TEST(p.bandwidth_bytes_per_s() == 100e6, boost::test_tools::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(stops_on_no_progress)
{
    PolicyConfig cfg;
    cfg.stall_rounds = 3;
    cfg.max_rounds = 100;
    PrecopyPolicy p(cfg);
    BOOST_TEST(!p.after_round(round(0, 262144, 100e6, 50000)).stop);
    // The guest dirties as much as we send: no round shrinks the set by 10%.
    BOOST_TEST(!p.after_round(round(1, 50000, 100e6, 49000)).stop);
    BOOST_TEST(!p.after_round(round(2, 49000, 100e6, 48500)).stop);
    auto d = p.after_round(round(3, 48500, 100e6, 48000));
    BOOST_TEST(d.stop);
    BOOST_TEST((d.reason == StopReason::no_progress));
}

BOOST_AUTO_TEST_CASE(progress_resets_stall_count)
{
    PolicyConfig cfg;
    cfg.stall_rounds = 2;
    PrecopyPolicy p(cfg);
    p.after_round(round(0, 262144, 100e6, 50000));
    BOOST_TEST(!p.after_round(round(1, 50000, 100e6, 49000)).stop);  // stall 1
    BOOST_TEST(!p.after_round(round(2, 49000, 100e6, 20000)).stop);  // progress: reset
    BOOST_TEST(!p.after_round(round(3, 20000, 100e6, 19900)).stop);  // stall 1
    BOOST_TEST(p.after_round(round(4, 19900, 100e6, 19800)).stop);   // stall 2
}

BOOST_AUTO_TEST_CASE(stops_at_max_rounds)
{
    PolicyConfig cfg;
    cfg.max_rounds = 3;
    cfg.stall_rounds = 100;
    PrecopyPolicy p(cfg);
    BOOST_TEST(!p.after_round(round(0, 262144, 100e6, 60000)).stop);
    BOOST_TEST(!p.after_round(round(1, 60000, 100e6, 30000)).stop);
    auto d = p.after_round(round(2, 30000, 100e6, 15000));
    BOOST_TEST(d.stop);
    BOOST_TEST((d.reason == StopReason::max_rounds));
    BOOST_TEST(d.why.find("--max-rounds 3") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(small_rounds_do_not_distort_bandwidth)
{
    PolicyConfig cfg;
    PrecopyPolicy p(cfg);
    p.after_round(round(0, 262144, 1e9, 5000));
    // A 10-page round that took 1 ms (latency-bound) must not drag the
    // estimate to 40 MB/s.
    RoundSample tiny = round(1, 10, 1e9, 5000);
    tiny.seconds = 0.001;
    p.after_round(tiny);
    BOOST_TEST(p.bandwidth_bytes_per_s() > 0.9e9);
}

BOOST_AUTO_TEST_CASE(zero_dirty_converges_even_with_tiny_target)
{
    PolicyConfig cfg;
    cfg.downtime_target_ms = 1.5;
    cfg.fixed_cost_ms = 1;
    PrecopyPolicy p(cfg);
    auto d = p.after_round(round(0, 1000, 1e9, 0));
    BOOST_TEST(d.stop);
    BOOST_TEST((d.reason == StopReason::converged));
}

BOOST_AUTO_TEST_CASE(bytes_per_page_reflects_zero_pages)
{
    PolicyConfig cfg;
    PrecopyPolicy p(cfg);
    RoundSample s = round(0, 1000, 1e9, 0);
    s.pages = 100000; // 99000 zero pages cost only descriptors
    p.after_round(s);
    BOOST_TEST(p.bytes_per_dirty_page() == 4104.0, boost::test_tools::tolerance(1e-9));
}
