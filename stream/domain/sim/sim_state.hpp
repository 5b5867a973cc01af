// The platform state of a sim guest: one StateBlob of type kSimStateType
// ("sim workload") holding the workload configuration and its progress, so
// the destination continues the same workload.  Versioned; decoding is
// strict because the blob arrives from the network.
#pragma once

#include "stream/domain.hpp"
#include "stream/domain/sim/sim.hpp"
#include "stream/domain/sim/sim_control.hpp"

namespace fastmig::sim {

constexpr std::uint32_t kSimStateType = 1;
constexpr std::uint32_t kSimStateMagic = 0x57534d46; // "FMSW"
constexpr std::uint32_t kSimStateVersion = 1;

struct SimSavedState {
    SimConfig cfg;
    std::uint64_t epoch = 0;
    std::uint64_t cursors[kMaxCursors] = {};
};

StateBlob encode_state(const SimSavedState& s);
// Throws Error describing the first problem found.
SimSavedState decode_state(const StateBlob& b);

} // namespace fastmig::sim
