// XenServer's restore side effects as fastmig's emu-manager drop-in reads
// them (stream/domain/xen/restore_platform.hpp): the platform/ keys xenguest
// reads on restore, its defaults, and the values it would silently take as
// 0 that fastmig refuses by name.
#define BOOST_TEST_MODULE restore_platform
#include <boost/test/unit_test.hpp>

#include "stream/domain/xen/restore_platform.hpp"
#include "stream/types.hpp"

#include <map>

using namespace fastmig::xen;

namespace {

PlatformKeyReader keys(std::map<std::string, std::string> m)
{
    return [m](const std::string& k) {
        auto i = m.find(k);
        return i == m.end() ? std::string() : i->second;
    };
}

// Error whose text contains `part`.
void refused(std::map<std::string, std::string> m, const std::string& part)
{
    try {
        parse_restore_platform(keys(m));
        BOOST_FAIL("accepted; expected an error with: " + part);
    } catch (const fastmig::Error& e) {
        BOOST_TEST_INFO(e.what());
        BOOST_TEST(std::string(e.what()).find(part) != std::string::npos);
    }
}

} // namespace

BOOST_AUTO_TEST_CASE(defaults_as_xenguest)
{
    RestorePlatform p = parse_restore_platform(keys({}));
    BOOST_TEST(p.hpet); // absent: on (a migrated VM may lack the key)
    BOOST_TEST(p.time_offset == 0);
    BOOST_TEST(p.affinity.empty());
    BOOST_TEST(p.weight == 0);
    BOOST_TEST(p.cap == 0);
    BOOST_TEST(p.generation_id.empty());
    BOOST_TEST(parse_restore_platform(keys({{"hpet", ""}})).hpet); // empty: on too
}

BOOST_AUTO_TEST_CASE(every_key_read)
{
    RestorePlatform p = parse_restore_platform(keys({{"hpet", "0"},
                                                     {"timeoffset", "-3600"},
                                                     {"vcpu/number", "3"},
                                                     {"vcpu/0/affinity", "0110"},
                                                     {"vcpu/2/affinity", "000000001"},
                                                     {"vcpu/3/affinity", "1"}, // beyond vcpu/number: not read
                                                     {"vcpu/weight", "512"},
                                                     {"vcpu/cap", "0x32"},
                                                     {"generation-id", "123:456"}}));
    BOOST_TEST(!p.hpet);
    BOOST_TEST(p.time_offset == -3600);
    BOOST_REQUIRE(p.affinity.size() == 2u);
    BOOST_TEST(p.affinity[0].vcpu == 0u);
    BOOST_TEST(p.affinity[0].cpus == (CpuMap{0x06}), boost::test_tools::per_element());
    BOOST_TEST(p.affinity[1].vcpu == 2u);
    BOOST_TEST(p.affinity[1].cpus == (CpuMap{0x00, 0x01}), boost::test_tools::per_element());
    BOOST_TEST(p.weight == 512);
    BOOST_TEST(p.cap == 50);
    BOOST_TEST(p.generation_id == "123:456");
    BOOST_TEST(describe(p) == "hpet off, time offset -3600 s, vcpu 0 on pcpus 1-2, vcpu 2 on pcpus 8, weight 512, "
                              "cap 50, generation id 123:456");
    BOOST_TEST(parse_restore_platform(keys({{"hpet", "true"}})).hpet);
    BOOST_TEST(!parse_restore_platform(keys({{"hpet", "false"}})).hpet);
}

BOOST_AUTO_TEST_CASE(malformed_values_are_refused_by_name)
{
    refused({{"hpet", "yes"}}, "platform/hpet = \"yes\": not a number");
    refused({{"timeoffset", "3600s"}}, "platform/timeoffset = \"3600s\": not a number of seconds");
    refused({{"timeoffset", "4294967296"}}, "beyond Xen's 32-bit time offset");
    refused({{"vcpu/number", "100000"}}, "platform/vcpu/number = \"100000\": more than 4096");
    refused({{"vcpu/number", "2"}, {"vcpu/1/affinity", "01x1"}}, "platform/vcpu/1/affinity = \"01x1\": not a string");
    refused({{"vcpu/number", "1"}, {"vcpu/0/affinity", std::string(9000, '1')}}, "longer than 8192 pCPUs");
    refused({{"vcpu/weight", "70000"}}, "platform/vcpu/weight = \"70000\": more than 65535");
    refused({{"vcpu/cap", "-1"}}, "platform/vcpu/cap = \"-1\": not a number");
    // A long value is cut in the message.
    refused({{"vcpu/weight", std::string(100, '9')}}, "99999...\": not a number");
    refused({{"generation-id", "12:x"}}, "platform/generation-id = \"12:x\": not two numbers A:B");
    refused({{"generation-id", "0:5"}}, "a half is 0");
}

BOOST_AUTO_TEST_CASE(generation_id_as_xenguest_checks_it)
{
    auto g = parse_generation_id("18446744073709551615:0x10");
    BOOST_TEST(g[0] == 18446744073709551615ull);
    BOOST_TEST(g[1] == 16u);
    auto b = generation_id_bytes("1:0x0102");
    BOOST_TEST(b == (std::array<std::uint8_t, 16>{1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0}),
               boost::test_tools::per_element());
    for (const char* bad : {"", "12", "0:5", "5:0", "a:b", "1:2:3", "-1:2", "1:18446744073709551616"}) {
        BOOST_TEST_INFO(bad);
        BOOST_CHECK_THROW(parse_generation_id(bad), fastmig::Error);
        BOOST_CHECK_THROW(generation_id_bytes(bad), fastmig::Error);
    }
}
