// The peers table (libxl-plugin/peers.hpp): its format, every error with
// its line, the lookup, and how a destination is read from xl's command line.
#define BOOST_TEST_MODULE peers
#include <boost/test/unit_test.hpp>

#include "libxl-plugin/peers.hpp"
#include "stream/types.hpp"

#include <sstream>

using namespace fastmig::interop;

namespace {

PeerTable table(const std::string& text)
{
    std::istringstream in(text);
    return PeerTable::parse(in, "peers");
}

std::string error_of(const std::string& text)
{
    try {
        table(text);
    } catch (const fastmig::Error& e) {
        return e.what();
    }
    return "no error";
}

std::string dest(std::vector<std::string> cmd)
{
    return xl_migrate_destination(cmd).value_or("none");
}

} // namespace

BOOST_AUTO_TEST_CASE(lookup)
{
    auto t = table("# pool A\n\ndefault stock  # old hosts first\nHost1.example.org fastmig\n10.0.0.7\tfastmig\n"
                   "fe80::1 stock\n");
    BOOST_TEST(t.entries().size() == 3u);
    BOOST_TEST(t.default_entry()->line == 3u);
    auto c = t.choose("host1.EXAMPLE.org");
    BOOST_TEST((c.format == PeerFormat::fastmig && c.why == "peers:4"));
    c = t.choose("admin@10.0.0.7");
    BOOST_TEST((c.format == PeerFormat::fastmig && c.why == "peers:5"));
    c = t.choose("host9");
    BOOST_TEST((c.format == PeerFormat::stock && c.why == "'host9' not listed, default of peers:3"));
    c = t.choose("");
    BOOST_TEST((c.format == PeerFormat::stock && c.why == "destination unknown, default of peers:3"));
    c = table("h2 stock\n").choose("h3");
    BOOST_TEST((c.format == PeerFormat::fastmig && c.why == "'h3' not listed, no default in peers"));
}

BOOST_AUTO_TEST_CASE(errors_name_the_line)
{
    BOOST_TEST(error_of("default fastmig\nhost2 stok\n") == "peers:2: unknown format 'stok' (fastmig or stock)");
    BOOST_TEST(error_of("\n\nhost2\n") == "peers:3: expected 'DESTINATION fastmig|stock', got 1 word");
    BOOST_TEST(error_of("host2 stock fastmig\n") == "peers:1: expected 'DESTINATION fastmig|stock', got 3 words");
    BOOST_TEST(error_of("default stock\ndefault fastmig\n") ==
               "peers:2: a second 'default' (the first is on line 1)");
    BOOST_TEST(error_of("a stock\n# x\nA fastmig\n") == "peers:3: 'a' is already on line 1");
    BOOST_TEST(error_of("host/2 stock\n") == "peers:1: 'host/2' is not a host name or address");
    BOOST_TEST(error_of(std::string(2000, 'x') + " stock\n") == "peers:1: line longer than 1024 characters");
    BOOST_TEST(error_of("host2 Stock\n") == "peers:1: unknown format 'Stock' (fastmig or stock)");
}

BOOST_AUTO_TEST_CASE(missing_file_is_all_fastmig)
{
    auto t = PeerTable::load("/nonexistent/fastmig/peers");
    BOOST_TEST(!t.present());
    auto c = t.choose("host2");
    BOOST_TEST((c.format == PeerFormat::fastmig &&
                c.why == "'host2' not listed, no default in /nonexistent/fastmig/peers (no such file)"));
    BOOST_CHECK_THROW(PeerTable::load("/proc/self/mem/x"), fastmig::Error);
}

BOOST_AUTO_TEST_CASE(destination_from_xl)
{
    BOOST_TEST(dest({"xl", "migrate", "5", "host2"}) == "host2");
    BOOST_TEST(dest({"/usr/sbin/xl", "-vv", "migrate", "-C", "/etc/xen/g.cfg", "-s", "ssh -p 2222", "-e", "--debug",
                     "guest", "root@host2"}) == "host2");
    BOOST_TEST(dest({"xl", "migrate", "-Cg.cfg", "-p", "guest", "10.0.0.7"}) == "10.0.0.7");
    BOOST_TEST(dest({"xl", "save", "guest", "/var/lib/xen/save/guest"}) == "none");
    BOOST_TEST(dest({"xl", "migrate", "guest"}) == "none");
    BOOST_TEST(dest({"xl", "migrate", "-s", "", "guest", "nc host2 8002"}) == "none"); // HOST is a command
    BOOST_TEST(dest({"libvirtd", "--daemon"}) == "none");
    BOOST_TEST(dest({}) == "none");
}
