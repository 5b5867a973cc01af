// The helper's message encoder and argv parser against hand-written bytes
// (layout of libxl 4.17's libxl_save_msgs_gen.pl, native x86_64 sizes).
#define BOOST_TEST_MODULE libxl_msgs
#include <boost/test/unit_test.hpp>

#include "libxl-plugin/helper_args.hpp"
#include "libxl-plugin/helper_pipe.hpp"
#include "libxl-plugin/libxl_msgs.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

using namespace fastmig::helper;
using Bytes = std::vector<std::uint8_t>;

BOOST_AUTO_TEST_CASE(callback_flags_match_libxl)
{
    // 136 is what libxl passes for a plain save (suspend + switch_qemu_logdirty),
    // 768 for a plain restore (static_data_done + restore_results).
    BOOST_TEST((cbflag(Msg::suspend) | cbflag(Msg::switch_qemu_logdirty)) == 136u);
    BOOST_TEST((cbflag(Msg::static_data_done) | cbflag(Msg::restore_results)) == 768u);
}

BOOST_AUTO_TEST_CASE(suspend_is_length_then_number)
{
    BOOST_TEST(encode_no_args(Msg::suspend) == (Bytes{2, 0, 3, 0}), boost::test_tools::per_element());
    BOOST_CHECK_THROW(encode_no_args(Msg::complete), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(complete_and_results)
{
    BOOST_TEST(encode_complete(-1, 5) == (Bytes{10, 0, 10, 0, 0xff, 0xff, 0xff, 0xff, 5, 0, 0, 0}),
               boost::test_tools::per_element());
    Bytes rr = {18, 0, 9, 0, 0x34, 0x12, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x80};
    BOOST_TEST(encode_restore_results(0x1234, 0x8000000000000001ull) == rr, boost::test_tools::per_element());
    BOOST_TEST(encode_switch_qemu_logdirty(7, 1) == (Bytes{10, 0, 7, 0, 7, 0, 0, 0, 1, 0, 0, 0}),
               boost::test_tools::per_element());
    BOOST_TEST(encode_static_data_done(3) == (Bytes{6, 0, 8, 0, 3, 0, 0, 0}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(strings_carry_their_nul)
{
    Bytes want = {24, 0, 1, 0, 8, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 'x', 0, 4, 0, 0, 0, 'a', 'b', 'c', 0};
    BOOST_TEST(encode_log(XtlLevel::error, 2, "x", "abc") == want, boost::test_tools::per_element());
    // An inner NUL ends the string (libxl reads a C string); never an empty
    // frame either: "" is one NUL byte.
    Bytes p = encode_progress("", std::string("ab\0cd", 5), 1, 2);
    Bytes wantp = {30, 0, 2, 0, 1, 0, 0, 0, 0, 3, 0, 0, 0, 'a', 'b', 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0};
    BOOST_TEST(p == wantp, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(long_log_text_is_cut_to_fit)
{
    Bytes f = encode_log(XtlLevel::info, 0, "ctx", std::string(100000, 'y'));
    std::size_t len = f[0] | (f[1] << 8);
    BOOST_TEST(len + 2 == f.size());
    BOOST_TEST(len < kMaxLogText + 64);
}

BOOST_AUTO_TEST_CASE(argv_as_libxl_writes_it)
{
    auto s = std::get<SaveArgs>(parse_helper_args({"--save-domain", "11", "12", "5", "1", "136", "0"}));
    BOOST_TEST(s.io_fd == 11);
    BOOST_TEST(s.recv_fd == 12);
    BOOST_TEST(s.domid == 5u);
    BOOST_TEST(s.xcflags == kXcflagsLive);
    BOOST_TEST(s.cbflags == 136u);
    auto r = std::get<RestoreArgs>(parse_helper_args({"--restore-domain", "10", "-1", "6", "1", "0", "2", "0", "768", "0"}));
    BOOST_TEST(r.send_back_fd == -1);
    BOOST_TEST(r.store_evtchn == 1u);
    BOOST_TEST(r.console_evtchn == 2u);
    BOOST_TEST(r.cbflags == 768u);
}

BOOST_AUTO_TEST_CASE(argv_errors_name_the_argument)
{
    auto fails = [](std::vector<std::string> a, const std::string& what) {
        try {
            parse_helper_args(a);
        } catch (const UsageError& e) {
            return std::string(e.what()).find(what) != std::string::npos;
        }
        return false;
    };
    BOOST_TEST(fails({}, "no mode"));
    BOOST_TEST(fails({"--save-domain", "3", "-1", "5", "1", "136"}, "takes 6 arguments"));
    BOOST_TEST(fails({"--save-domain", "3", "-1", "x", "1", "136", "0"}, "domid"));
    BOOST_TEST(fails({"--save-domain", "3", "-1", "32752", "1", "136", "0"}, "domid"));
    BOOST_TEST(fails({"--save-domain", "-1", "-1", "5", "1", "136", "0"}, "io_fd"));
    BOOST_TEST(fails({"--save-domain", "3", "-1", "5", "1", "136", "3"}, "stream_type"));
    BOOST_TEST(fails({"--save-domain", "3", "-1", "5", "1", "99999999999999999999", "0"}, "cbflags"));
    BOOST_TEST(fails({"--restore", "3"}, "unknown mode"));
}

BOOST_AUTO_TEST_CASE(stream_pipe_is_widened_other_fds_untouched)
{
    int p[2];
    BOOST_REQUIRE(::pipe(p) == 0);
    const int before = ::fcntl(p[0], F_GETPIPE_SZ);
    std::string line = fastmig::helper::widen_pipe(p[0], 1 << 20);
    const int after = ::fcntl(p[1], F_GETPIPE_SZ); // one buffer for both ends
    BOOST_TEST(line.find("is a pipe") != std::string::npos, line);
    BOOST_TEST(after > before, before << " -> " << after << ": " << line);
    ::close(p[0]);
    ::close(p[1]);

    int s[2];
    BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, s) == 0);
    BOOST_TEST(fastmig::helper::widen_pipe(s[0], 1 << 20).empty());
    ::close(s[0]);
    ::close(s[1]);
    BOOST_TEST(fastmig::helper::widen_pipe(-1, 1 << 20).empty());
}
