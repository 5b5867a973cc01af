// The receiver's line for a page batch that took long to apply
// (stream/page_applier.hpp, SlowBatchLog): logged over the threshold only,
// at most once per interval, with a count of the ones left out.  Times are
// given, so no test waits.
#define BOOST_TEST_MODULE slow_batch_log
#include <boost/test/unit_test.hpp>

#include "stream/page_applier.hpp"

using namespace fastmig;

namespace {
constexpr std::uint64_t kMs = 1'000'000;
}

BOOST_AUTO_TEST_CASE(below_the_threshold_nothing)
{
    SlowBatchLog slow;
    BOOST_TEST(!slow.note(0, 1024, 1999 * kMs, 5000 * kMs));
    BOOST_TEST(!slow.note(0, 1024, 0, 5000 * kMs));
}

BOOST_AUTO_TEST_CASE(a_slow_batch_is_one_line_with_round_pages_and_time)
{
    SlowBatchLog slow;
    auto line = slow.note(0, 99703, 2345 * kMs + 600'000, 7000 * kMs);
    BOOST_REQUIRE(line);
    BOOST_TEST_MESSAGE(*line);
    BOOST_TEST(line->find("receive: slow page batch: round 0, 99703 pages applied in 2345.6 ms") == 0u);
    BOOST_TEST(line->find("over 2000 ms") != std::string::npos);
    BOOST_TEST(line->find("more slow batches") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(at_most_one_line_per_interval_and_the_rest_counted)
{
    SlowBatchLog slow(2000 * kMs, 10'000 * kMs);
    BOOST_TEST(bool(slow.note(0, 1, 3000 * kMs, 100'000 * kMs)));
    int logged = 0;
    for (std::uint64_t t = 100'001; t < 110'000; t += 1000) // 10 slow batches in the next 10 s
        logged += bool(slow.note(0, 1, 3000 * kMs, t * kMs));
    BOOST_TEST(logged == 0);
    BOOST_TEST(!slow.note(1, 1, 10 * kMs, 111'000 * kMs)); // fast: neither logged nor counted
    auto next = slow.note(1, 512, 2500 * kMs, 111'000 * kMs);
    BOOST_REQUIRE(next);
    BOOST_TEST(next->find("round 1, 512 pages") != std::string::npos);
    BOOST_TEST(next->find("; 10 more slow batches since the last such line") != std::string::npos);
    auto again = slow.note(2, 1, 2500 * kMs, 121'000 * kMs);
    BOOST_REQUIRE(again);
    BOOST_TEST(again->find("more slow batches") == std::string::npos); // the count starts again
}
