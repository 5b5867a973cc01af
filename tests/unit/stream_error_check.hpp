// CHECK_STREAM_ERROR(expr, needle): the check every decoder test uses -- expr
// must throw StreamError whose message contains needle; otherwise the test
// log says what was thrown instead.
#pragma once

#include <boost/test/unit_test.hpp>

#include "stream/types.hpp"

#include <functional>
#include <string>

namespace fastmig::test {

inline bool throws_stream(const std::function<void()>& f, const std::string& needle)
{
    try {
        f();
    } catch (const StreamError& e) {
        if (std::string(e.what()).find(needle) != std::string::npos)
            return true;
        BOOST_TEST_MESSAGE("StreamError without \"" << needle << "\": " << e.what());
        return false;
    } catch (const std::exception& e) {
        BOOST_TEST_MESSAGE("not a StreamError: " << e.what());
        return false;
    }
    BOOST_TEST_MESSAGE("no exception, expected \"" << needle << "\"");
    return false;
}

} // namespace fastmig::test

#define CHECK_STREAM_ERROR(expr, needle) BOOST_CHECK(::fastmig::test::throws_stream([&] { expr; }, needle))
