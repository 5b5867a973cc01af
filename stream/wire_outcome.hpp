// Records of feature OUTCOME (docs/stream-format.md, Resolving a lost
// COMMIT): the migration id the destination records its decision under,
// the query a source sends on a new connection when it lost the first one
// after COMMIT, the destination's answer, and DONE_ACK.
#pragma once

#include "stream/wire.hpp"

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fastmig::wire {

constexpr std::size_t kMigrationIdSize = 16;
// 16 random bytes drawn by the source (getrandom): unique per migration, and
// not guessable by a third party on an unauthenticated stream.
using MigrationId = std::array<std::uint8_t, kMigrationIdSize>;
std::string migration_id_hex(const MigrationId& id);

// OUTCOME body: answer:u32 message_length:u32 id[16] verify_digest:u64 message.
constexpr std::size_t kOutcomeFixed = 32;

enum class OutcomeAnswer : std::uint32_t {
    committed = 1,     // the domain was started here: destroy the source
    not_committed = 2, // it never ran here and never will (its copy is destroyed): resume the source
    unknown = 3,       // no usable record (expired, lost, never here, a start cut short): stay in doubt
};
const char* outcome_answer_name(OutcomeAnswer a);

struct OutcomeReply {
    OutcomeAnswer answer = OutcomeAnswer::unknown;
    MigrationId id{};
    std::uint64_t verify_digest = 0; // committed, with VERIFY: the digest DONE would have carried
    std::string message;             // <= kMaxMessageLength bytes
};

std::vector<std::uint8_t> encode_migration_id(const MigrationId& id);
MigrationId parse_migration_id(std::span<const std::uint8_t> body);
std::vector<std::uint8_t> encode_outcome_query(const MigrationId& id);
MigrationId parse_outcome_query(std::span<const std::uint8_t> body);
std::vector<std::uint8_t> encode_outcome(const OutcomeReply& r);
OutcomeReply parse_outcome(std::span<const std::uint8_t> body);
std::vector<std::uint8_t> encode_done_ack();
void parse_done_ack(std::span<const std::uint8_t> body);

} // namespace fastmig::wire
