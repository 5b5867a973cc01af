#include "stream/domain/xen/restore_platform.hpp"

#include "stream/types.hpp"

#include <cerrno>
#include <cstdlib>
#include <limits>
#include <strings.h>

namespace fastmig::xen {

namespace {

// Bounds that keep a hostile value from costing memory: Xen itself refuses
// more vCPUs than this (HVM guests: 128 in 4.17) and more pCPUs than
// NR_CPUS (at most 8192 in any build).
constexpr std::uint64_t kMaxVcpus = 4096;
constexpr std::size_t kMaxAffinityChars = 8192;

[[noreturn]] void bad(const std::string& key, const std::string& value, const std::string& why)
{
    std::string shown = value.size() > 64 ? value.substr(0, 64) + "..." : value;
    throw Error("platform/" + key + " = \"" + shown + "\": " + why);
}

// An unsigned number as xenguest's xenstore_get reads it (decimal, 0x hex
// or 0 octal; "true" is 1), but whole: trailing garbage is refused.
std::uint64_t number(const std::string& key, const std::string& v, std::uint64_t max)
{
    if (strcasecmp(v.c_str(), "true") == 0)
        return 1;
    if (strcasecmp(v.c_str(), "false") == 0)
        return 0;
    if (v.empty() || v.size() > 24 || v[0] == '-' || v[0] == '+' || v[0] == ' ')
        bad(key, v, "not a number");
    errno = 0;
    char* end = nullptr;
    unsigned long long n = std::strtoull(v.c_str(), &end, 0);
    if (errno || end == v.c_str() || *end != '\0')
        bad(key, v, "not a number");
    if (n > max)
        bad(key, v, "more than " + std::to_string(max));
    return n;
}

std::int32_t seconds(const std::string& key, const std::string& v)
{
    const bool neg = !v.empty() && v[0] == '-';
    const std::string digits = neg ? v.substr(1) : v;
    if (digits.empty() || digits.size() > 11 || digits.find_first_not_of("0123456789") != std::string::npos)
        bad(key, v, "not a number of seconds");
    long long n = std::stoll(digits);
    if (neg)
        n = -n;
    if (n < std::numeric_limits<std::int32_t>::min() || n > std::numeric_limits<std::int32_t>::max())
        bad(key, v, "beyond Xen's 32-bit time offset");
    return std::int32_t(n);
}

CpuMap cpu_map(const std::string& key, const std::string& v)
{
    if (v.size() > kMaxAffinityChars)
        bad(key, v, "longer than " + std::to_string(kMaxAffinityChars) + " pCPUs");
    if (v.find_first_not_of("01") != std::string::npos)
        bad(key, v, "not a string of 0 and 1 (one per pCPU)");
    CpuMap m((v.size() + 7) / 8, 0);
    for (std::size_t j = 0; j < v.size(); ++j)
        if (v[j] == '1')
            m[j / 8] |= std::uint8_t(1u << (j % 8));
    return m;
}

std::string cpus_text(const CpuMap& m)
{
    std::string out;
    const std::size_t n = m.size() * 8;
    for (std::size_t j = 0; j < n;) {
        if (!(m[j / 8] >> (j % 8) & 1)) {
            ++j;
            continue;
        }
        std::size_t k = j;
        while (k + 1 < n && (m[(k + 1) / 8] >> ((k + 1) % 8) & 1))
            ++k;
        out += (out.empty() ? "" : ",") + std::to_string(j) + (k > j ? "-" + std::to_string(k) : "");
        j = k + 1;
    }
    return out.empty() ? "none" : out;
}

} // namespace

RestorePlatform parse_restore_platform(const PlatformKeyReader& read)
{
    RestorePlatform p;
    if (std::string v = read("hpet"); !v.empty())
        p.hpet = number("hpet", v, std::numeric_limits<std::uint64_t>::max()) != 0;
    if (std::string v = read("timeoffset"); !v.empty())
        p.time_offset = seconds("timeoffset", v);
    std::uint64_t vcpus = 0;
    if (std::string v = read("vcpu/number"); !v.empty())
        vcpus = number("vcpu/number", v, kMaxVcpus);
    for (unsigned n = 0; n < vcpus; ++n) {
        const std::string key = "vcpu/" + std::to_string(n) + "/affinity";
        if (std::string v = read(key); !v.empty())
            p.affinity.push_back({n, cpu_map(key, v)});
    }
    if (std::string v = read("vcpu/weight"); !v.empty())
        p.weight = std::uint16_t(number("vcpu/weight", v, 65535));
    if (std::string v = read("vcpu/cap"); !v.empty())
        p.cap = std::uint16_t(number("vcpu/cap", v, 65535));
    p.generation_id = read("generation-id");
    if (!p.generation_id.empty())
        parse_generation_id(p.generation_id); // refused here, with the other keys, before any page
    return p;
}

std::array<std::uint64_t, 2> parse_generation_id(const std::string& text)
{
    const auto colon = text.find(':');
    if (colon == std::string::npos)
        bad("generation-id", text, "not two numbers A:B");
    std::array<std::uint64_t, 2> g{};
    const std::string parts[2] = {text.substr(0, colon), text.substr(colon + 1)};
    for (int i = 0; i < 2; ++i) {
        const std::string& s = parts[i];
        if (s.empty() || s.size() > 24 || s[0] == '-' || s[0] == '+' || s[0] == ' ')
            bad("generation-id", text, "not two numbers A:B");
        errno = 0;
        char* end = nullptr;
        g[i] = std::strtoull(s.c_str(), &end, 0);
        if (errno || *end != '\0')
            bad("generation-id", text, "not two numbers A:B");
        if (g[i] == 0)
            bad("generation-id", text, "not a valid generation id (a half is 0)");
    }
    return g;
}

std::array<std::uint8_t, 16> generation_id_bytes(const std::string& text)
{
    auto g = parse_generation_id(text);
    std::array<std::uint8_t, 16> out{};
    for (int i = 0; i < 2; ++i)
        for (int b = 0; b < 8; ++b)
            out[std::size_t(i * 8 + b)] = std::uint8_t(g[std::size_t(i)] >> (8 * b));
    return out;
}

std::string describe(const RestorePlatform& p)
{
    std::string s = "hpet " + std::string(p.hpet ? "on" : "off") + ", time offset " + std::to_string(p.time_offset) +
                    " s";
    for (const auto& a : p.affinity)
        s += ", vcpu " + std::to_string(a.vcpu) + " on pcpus " + cpus_text(a.cpus);
    if (p.weight)
        s += ", weight " + std::to_string(p.weight);
    if (p.cap)
        s += ", cap " + std::to_string(p.cap);
    if (!p.generation_id.empty())
        s += ", generation id " + (p.generation_id.size() > 64 ? p.generation_id.substr(0, 64) + "..." : p.generation_id);
    return s;
}

} // namespace fastmig::xen
