// MIGRATION_ID, OUTCOME_QUERY, OUTCOME and DONE_ACK bodies (see
// docs/stream-format.md, Resolving a lost COMMIT).
#include "stream/wire_outcome.hpp"
#include "stream/bytes.hpp"

#include <cstring>

namespace fastmig::wire {

namespace {

MigrationId id_body(const char* what, std::span<const std::uint8_t> body)
{
    if (body.size() != kMigrationIdSize)
        throw StreamError(std::string(what) + ": body is " + std::to_string(body.size()) + " bytes, must be " +
                          std::to_string(kMigrationIdSize));
    MigrationId id;
    std::memcpy(id.data(), body.data(), id.size());
    // All zeros is what an uninitialised id looks like: never a drawn one.
    if (id == MigrationId{})
        throw StreamError(std::string(what) + ": the migration id is all zeros");
    return id;
}

} // namespace

std::string migration_id_hex(const MigrationId& id)
{
    static const char digits[] = "0123456789abcdef";
    std::string s;
    for (std::uint8_t b : id) {
        s += digits[b >> 4];
        s += digits[b & 15];
    }
    return s;
}

const char* outcome_answer_name(OutcomeAnswer a)
{
    switch (a) {
    case OutcomeAnswer::committed: return "committed";
    case OutcomeAnswer::not_committed: return "not committed";
    case OutcomeAnswer::unknown: return "unknown";
    }
    return "invalid";
}

std::vector<std::uint8_t> encode_migration_id(const MigrationId& id)
{
    return encode_record(RecordType::migration_id, id);
}

MigrationId parse_migration_id(std::span<const std::uint8_t> body) { return id_body("migration_id", body); }

std::vector<std::uint8_t> encode_outcome_query(const MigrationId& id)
{
    return encode_record(RecordType::outcome_query, id);
}

MigrationId parse_outcome_query(std::span<const std::uint8_t> body) { return id_body("outcome_query", body); }

std::vector<std::uint8_t> encode_outcome(const OutcomeReply& r)
{
    const std::string m = r.message.substr(0, kMaxMessageLength);
    std::vector<std::uint8_t> b(kOutcomeFixed + m.size(), 0);
    bytes::store_le(b.data(), static_cast<std::uint32_t>(r.answer));
    bytes::store_le(b.data() + 4, static_cast<std::uint32_t>(m.size()));
    std::memcpy(b.data() + 8, r.id.data(), r.id.size());
    bytes::store_le(b.data() + 24, r.verify_digest);
    std::memcpy(b.data() + kOutcomeFixed, m.data(), m.size());
    return encode_record(RecordType::outcome, b);
}

OutcomeReply parse_outcome(std::span<const std::uint8_t> body)
{
    if (body.size() < kOutcomeFixed)
        throw StreamError("outcome: body is " + std::to_string(body.size()) + " bytes, at least " +
                          std::to_string(kOutcomeFixed) + " needed");
    OutcomeReply r;
    const std::uint32_t answer = bytes::load_le<std::uint32_t>(body.data());
    if (answer < 1 || answer > 3)
        throw StreamError("outcome: answer " + std::to_string(answer) + " is not 1..3");
    r.answer = static_cast<OutcomeAnswer>(answer);
    const std::uint32_t len = bytes::load_le<std::uint32_t>(body.data() + 4);
    if (len > kMaxMessageLength || body.size() != kOutcomeFixed + len)
        throw StreamError("outcome: message_length " + std::to_string(len) + " does not match a body of " +
                          std::to_string(body.size()) + " bytes");
    std::memcpy(r.id.data(), body.data() + 8, r.id.size());
    r.verify_digest = bytes::load_le<std::uint64_t>(body.data() + 24);
    r.message.assign(reinterpret_cast<const char*>(body.data()) + kOutcomeFixed, len);
    return r;
}

std::vector<std::uint8_t> encode_done_ack() { return encode_record(RecordType::done_ack, {}); }

void parse_done_ack(std::span<const std::uint8_t> body)
{
    if (!body.empty())
        throw StreamError("done_ack: body must be empty, is " + std::to_string(body.size()) + " bytes");
}

} // namespace fastmig::wire
