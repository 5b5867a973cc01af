// MIGRATION_ID, OUTCOME_QUERY, OUTCOME and DONE_ACK bodies (see
// docs/stream-format.md, Resolving a lost COMMIT).
#include "stream/wire_outcome.hpp"

#include <cstring>

namespace fastmig::wire {

namespace {

std::uint32_t le32(const std::uint8_t* p)
{
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

void put_le(std::uint8_t* p, std::uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; ++i)
        p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

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
    put_le(b.data(), static_cast<std::uint32_t>(r.answer), 4);
    put_le(b.data() + 4, m.size(), 4);
    std::memcpy(b.data() + 8, r.id.data(), r.id.size());
    put_le(b.data() + 24, r.verify_digest, 8);
    std::memcpy(b.data() + kOutcomeFixed, m.data(), m.size());
    return encode_record(RecordType::outcome, b);
}

OutcomeReply parse_outcome(std::span<const std::uint8_t> body)
{
    if (body.size() < kOutcomeFixed)
        throw StreamError("outcome: body is " + std::to_string(body.size()) + " bytes, at least " +
                          std::to_string(kOutcomeFixed) + " needed");
    OutcomeReply r;
    const std::uint32_t answer = le32(body.data());
    if (answer < 1 || answer > 3)
        throw StreamError("outcome: answer " + std::to_string(answer) + " is not 1..3");
    r.answer = static_cast<OutcomeAnswer>(answer);
    const std::uint32_t len = le32(body.data() + 4);
    if (len > kMaxMessageLength || body.size() != kOutcomeFixed + len)
        throw StreamError("outcome: message_length " + std::to_string(len) + " does not match a body of " +
                          std::to_string(body.size()) + " bytes");
    std::memcpy(r.id.data(), body.data() + 8, r.id.size());
    r.verify_digest = std::uint64_t(le32(body.data() + 24)) | std::uint64_t(le32(body.data() + 28)) << 32;
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
