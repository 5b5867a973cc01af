// Telling a libxc stream from fastmig's without consuming a byte
// (libxl-plugin/stock_fallback.hpp): the prefix rules, and the peek on a
// pipe, a socket and a file, with data arriving in pieces, ending early or
// not at all.
#define BOOST_TEST_MODULE stock_fallback
#include <boost/test/unit_test.hpp>

#include "libxl-plugin/stock_fallback.hpp"
#include "stream/types.hpp"
#include "stream/wire.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

using namespace fastmig::interop;
using Bytes = std::vector<std::uint8_t>;
using namespace std::chrono_literals;

namespace {

const Bytes kLibxc = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'X', 'E', 'N', 'F', 0, 0, 0, 3};

Bytes fastmig_start()
{
    Bytes b(fastmig::wire::kSourceMagic.begin(), fastmig::wire::kSourceMagic.end());
    b.insert(b.end(), {1, 0, 0, 0, 0x40, 0, 0, 0});
    return b;
}

void put(int fd, const Bytes& b, std::size_t from = 0, std::size_t to = SIZE_MAX)
{
    to = std::min(to, b.size());
    BOOST_REQUIRE(::write(fd, b.data() + from, to - from) == ssize_t(to - from));
}

// Everything readable from fd until EOF: what the stock program would get.
Bytes drain(int fd)
{
    Bytes all;
    std::uint8_t buf[256];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        all.insert(all.end(), buf, buf + n);
    return all;
}

// Printable for Boost.Test: "undecided" or the format's name.
std::string classify(const Bytes& b)
{
    auto f = classify_prefix({b.data(), b.size()});
    return f ? format_name(*f) : "undecided";
}
std::string name(StreamFormat f)
{
    return format_name(f);
}
const std::string kXc = format_name(StreamFormat::libxc), kFm = format_name(StreamFormat::fastmig),
                  kUnknown = format_name(StreamFormat::unknown);

} // namespace

BOOST_AUTO_TEST_CASE(prefix_rules)
{
    BOOST_TEST(classify({}) == "undecided");
    BOOST_TEST(classify({0xff, 0xff}) == "undecided");
    BOOST_TEST(classify(Bytes(kLibxc.begin(), kLibxc.begin() + 11)) == "undecided");
    BOOST_TEST(classify(Bytes(kLibxc.begin(), kLibxc.begin() + 12)) == kXc);
    BOOST_TEST(classify(kLibxc) == kXc);
    Bytes fm = fastmig_start();
    BOOST_TEST(classify(Bytes(fm.begin(), fm.begin() + 7)) == "undecided");
    BOOST_TEST(classify(Bytes(fm.begin(), fm.begin() + 8)) == kFm);
    BOOST_TEST(classify(fm) == kFm);
    // Decided as soon as no magic can match any more.
    BOOST_TEST(classify({'X'}) == kUnknown);
    BOOST_TEST(classify({0xff, 0xff, 0}) == kUnknown);
    BOOST_TEST(classify({'F', 'M', 'I', 'G', '\r', '\n', 'D'}) == kUnknown); // a reply stream
}

BOOST_AUTO_TEST_CASE(pipe_in_pieces_consumes_nothing)
{
    int p[2];
    BOOST_REQUIRE(::pipe(p) == 0);
    put(p[1], kLibxc, 0, 5);
    std::thread late([&] {
        std::this_thread::sleep_for(30ms);
        put(p[1], kLibxc, 5, 9);
        std::this_thread::sleep_for(30ms);
        put(p[1], kLibxc, 9);
        ::close(p[1]);
    });
    Peek pk = peek_stream_format(p[0], 5s);
    late.join();
    BOOST_TEST(name(pk.format) == kXc);
    BOOST_TEST(pk.method == "pipe (tee)");
    BOOST_TEST(drain(p[0]) == kLibxc, boost::test_tools::per_element());
    ::close(p[0]);
}

BOOST_AUTO_TEST_CASE(pipe_ending_early_is_unknown)
{
    int p[2];
    BOOST_REQUIRE(::pipe(p) == 0);
    put(p[1], kLibxc, 0, 5);
    ::close(p[1]);
    Peek pk = peek_stream_format(p[0], 5s);
    BOOST_TEST(name(pk.format) == kUnknown);
    BOOST_TEST(pk.eof);
    BOOST_TEST(pk.bytes_seen == 5u);
    BOOST_TEST(drain(p[0]).size() == 5u);
    ::close(p[0]);

    BOOST_REQUIRE(::pipe(p) == 0); // empty, writer gone
    ::close(p[1]);
    pk = peek_stream_format(p[0], 5s);
    BOOST_TEST((name(pk.format) == kUnknown && pk.eof && pk.bytes_seen == 0u));
    ::close(p[0]);
}

BOOST_AUTO_TEST_CASE(silence_is_a_bounded_wait)
{
    int p[2];
    BOOST_REQUIRE(::pipe(p) == 0);
    auto t0 = std::chrono::steady_clock::now();
    try {
        peek_stream_format(p[0], 200ms);
        BOOST_FAIL("no error for a silent pipe");
    } catch (const fastmig::Error& e) {
        BOOST_TEST(std::string(e.what()).find("no data within 200 ms") != std::string::npos);
    }
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < 5s));
    put(p[1], kLibxc, 0, 3); // a partial magic that never completes
    try {
        peek_stream_format(p[0], 200ms);
        BOOST_FAIL("no error for a partial magic");
    } catch (const fastmig::Error& e) {
        BOOST_TEST(std::string(e.what()).find("only 3 bytes within 200 ms") != std::string::npos);
    }
    ::close(p[0]);
    ::close(p[1]);
}

BOOST_AUTO_TEST_CASE(socket_consumes_nothing)
{
    int s[2];
    BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, s) == 0);
    Bytes fm = fastmig_start();
    std::thread late([&] {
        put(s[1], fm, 0, 2);
        std::this_thread::sleep_for(30ms);
        put(s[1], fm, 2);
        ::shutdown(s[1], SHUT_WR);
    });
    Peek pk = peek_stream_format(s[0], 5s);
    late.join();
    BOOST_TEST(name(pk.format) == kFm);
    BOOST_TEST(pk.method == "socket (MSG_PEEK)");
    BOOST_TEST(drain(s[0]) == fm, boost::test_tools::per_element());
    ::close(s[0]);
    ::close(s[1]);

    BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, s) == 0); // short, then the peer shuts down
    put(s[1], kLibxc, 0, 9);
    ::shutdown(s[1], SHUT_WR);
    pk = peek_stream_format(s[0], 5s);
    BOOST_TEST((name(pk.format) == kUnknown && pk.eof && pk.bytes_seen == 9u));
    ::close(s[0]);
    ::close(s[1]);
}

BOOST_AUTO_TEST_CASE(file_at_its_offset)
{
    char path[] = "/tmp/fastmig-peek.XXXXXX";
    int fd = ::mkstemp(path);
    BOOST_REQUIRE(fd >= 0);
    ::unlink(path);
    put(fd, Bytes(32, 'L'));
    put(fd, kLibxc);
    BOOST_REQUIRE(::lseek(fd, 32, SEEK_SET) == 32);
    Peek pk = peek_stream_format(fd, 5s);
    BOOST_TEST(name(pk.format) == kXc);
    BOOST_TEST(pk.method == "file (pread at 32)");
    BOOST_TEST(::lseek(fd, 0, SEEK_CUR) == 32); // the offset libxl left is the stock helper's start
    BOOST_REQUIRE(::ftruncate(fd, 40) == 0);
    pk = peek_stream_format(fd, 5s); // 8 bytes of 0xff, then the end: not enough to decide
    BOOST_TEST((name(pk.format) == kUnknown && pk.eof && pk.bytes_seen == 8u));
    ::close(fd);
}

BOOST_AUTO_TEST_CASE(other_descriptors_are_refused_by_name)
{
    int fd = ::open("/dev/null", O_RDONLY);
    BOOST_REQUIRE(fd >= 0);
    try {
        peek_stream_format(fd, 1s);
        BOOST_FAIL("no error for a character device");
    } catch (const fastmig::Error& e) {
        BOOST_TEST(std::string(e.what()).find("neither a pipe, a stream socket nor a regular file") != std::string::npos);
    }
    ::close(fd);
    BOOST_TEST(exec_program("/nonexistent/stock-helper", {"x"}) == "/nonexistent/stock-helper does not exist");
    char path[] = "/tmp/fastmig-noexec.XXXXXX";
    int f = ::mkstemp(path); // mode 0600
    BOOST_REQUIRE(f >= 0);
    ::close(f);
    BOOST_TEST(exec_program(path, {"x"}) == std::string(path) + " is not an executable file");
    ::unlink(path);
}
