// FirstError: the first failure of a group of threads is the one kept.
#define BOOST_TEST_MODULE first_error
#include <boost/test/unit_test.hpp>

#include "stream/first_error.hpp"
#include "stream/types.hpp"

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace fastmig;

namespace {
std::string message_of(const FirstError& fe)
{
    try {
        fe.rethrow_if_failed();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(nothing thrown)";
}
} // namespace

BOOST_AUTO_TEST_CASE(nothing_kept_nothing_thrown)
{
    FirstError fe;
    BOOST_TEST(!fe.failed());
    BOOST_CHECK_NO_THROW(fe.rethrow_if_failed());
    // A null error is not a failure: it would leave nothing to throw.
    BOOST_TEST(!fe.set(nullptr));
    BOOST_TEST(!fe.failed());
    BOOST_CHECK_NO_THROW(fe.rethrow_if_failed());
}

BOOST_AUTO_TEST_CASE(the_first_wins_and_later_ones_are_dropped)
{
    FirstError fe;
    BOOST_TEST(fe.set(std::make_exception_ptr(Error("first"))));
    BOOST_TEST(fe.failed());
    BOOST_TEST(!fe.set(std::make_exception_ptr(Error("second"))));
    BOOST_TEST(message_of(fe) == "first");
    // Thrown again on every call, not consumed.
    BOOST_TEST(message_of(fe) == "first");
}

BOOST_AUTO_TEST_CASE(thrown_as_the_class_it_was)
{
    FirstError fe;
    fe.set(std::make_exception_ptr(StreamError("bad CRC")));
    BOOST_CHECK_THROW(fe.rethrow_if_failed(), StreamError);
    FirstError in_doubt;
    in_doubt.set(std::make_exception_ptr(InDoubtError("d", Phase::commit, "no DONE")));
    try {
        in_doubt.rethrow_if_failed();
        BOOST_FAIL("nothing thrown");
    } catch (const InDoubtError& e) {
        BOOST_TEST(e.is_in_doubt());
        BOOST_TEST((e.phase() == Phase::commit));
    }
}

// Many threads fail at once: exactly one set() says it was first, and its
// error is the one thrown.
BOOST_AUTO_TEST_CASE(one_first_among_racing_threads)
{
    for (int trial = 0; trial < 50; ++trial) {
        FirstError fe;
        std::mutex m;
        std::condition_variable cv;
        bool go = false;
        std::vector<int> firsts;
        std::vector<std::thread> threads;
        for (int t = 0; t < 8; ++t)
            threads.emplace_back([&, t] {
                {
                    std::unique_lock<std::mutex> l(m);
                    cv.wait(l, [&] { return go; });
                }
                if (fe.set(std::make_exception_ptr(Error("thread " + std::to_string(t))))) {
                    std::lock_guard<std::mutex> l(m);
                    firsts.push_back(t);
                }
            });
        {
            std::lock_guard<std::mutex> l(m);
            go = true;
        }
        cv.notify_all();
        for (auto& th : threads)
            th.join();
        BOOST_REQUIRE(firsts.size() == 1u);
        BOOST_TEST(message_of(fe) == "thread " + std::to_string(firsts[0]));
    }
}
