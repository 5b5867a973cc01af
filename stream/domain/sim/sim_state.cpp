#include "stream/domain/sim/sim_state.hpp"

#include "stream/domain/sim/sim_workload.hpp"

#include <bit>
#include <cstring>

namespace fastmig::sim {

static_assert(std::endian::native == std::endian::little, "the state blob is little endian");

// Layout (little endian, packed):
//   u32 magic, u32 version, u64 memory_bytes, u64 seed, f64 rate_scale,
//   u64 epoch, u32 nr_cursors (= kMaxCursors), u32 name_len (1..31),
//   u64 cursors[nr_cursors], name bytes (no NUL).
namespace {
constexpr std::size_t kFixed = 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4;

template <class T> void put(std::vector<std::uint8_t>& v, T x)
{
    std::uint8_t b[sizeof x];
    std::memcpy(b, &x, sizeof x);
    v.insert(v.end(), b, b + sizeof x);
}
template <class T> T get(const std::uint8_t*& p)
{
    T x;
    std::memcpy(&x, p, sizeof x);
    p += sizeof x;
    return x;
}
} // namespace

StateBlob encode_state(const SimSavedState& s)
{
    StateBlob b;
    b.type = kSimStateType;
    put(b.data, kSimStateMagic);
    put(b.data, kSimStateVersion);
    put(b.data, s.cfg.memory_bytes);
    put(b.data, s.cfg.seed);
    put(b.data, s.cfg.rate_scale);
    put(b.data, s.epoch);
    put(b.data, std::uint32_t(kMaxCursors));
    put(b.data, std::uint32_t(s.cfg.workload.size()));
    for (auto c : s.cursors)
        put(b.data, c);
    b.data.insert(b.data.end(), s.cfg.workload.begin(), s.cfg.workload.end());
    return b;
}

SimSavedState decode_state(const StateBlob& b)
{
    const std::string what = "sim workload state: ";
    if (b.type != kSimStateType)
        throw Error(what + "record type " + std::to_string(b.type) + " is not a sim workload");
    if (b.data.size() < kFixed)
        throw Error(what + "truncated (" + std::to_string(b.data.size()) + " bytes)");
    const std::uint8_t* p = b.data.data();
    if (get<std::uint32_t>(p) != kSimStateMagic)
        throw Error(what + "bad magic");
    if (auto v = get<std::uint32_t>(p); v != kSimStateVersion)
        throw Error(what + "unsupported version " + std::to_string(v));
    SimSavedState s;
    s.cfg.memory_bytes = get<std::uint64_t>(p);
    s.cfg.seed = get<std::uint64_t>(p);
    s.cfg.rate_scale = get<double>(p);
    s.epoch = get<std::uint64_t>(p);
    auto nc = get<std::uint32_t>(p);
    auto nl = get<std::uint32_t>(p);
    if (nc != kMaxCursors)
        throw Error(what + "bad cursor count " + std::to_string(nc));
    if (nl == 0 || nl >= kWorkloadNameMax)
        throw Error(what + "bad workload name length " + std::to_string(nl));
    if (b.data.size() != kFixed + 8 * std::size_t(nc) + nl)
        throw Error(what + "length " + std::to_string(b.data.size()) + " does not match its contents");
    for (auto& c : s.cursors)
        c = get<std::uint64_t>(p);
    s.cfg.workload.assign(reinterpret_cast<const char*>(p), nl);
    if (s.cfg.workload.find('\0') != std::string::npos)
        throw Error(what + "workload name contains NUL");
    try {
        validate_config(s.cfg);
    } catch (const Error& e) {
        throw Error(what + e.what());
    }
    return s;
}

} // namespace fastmig::sim
