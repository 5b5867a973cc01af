// Fuzz target: resolving a lost COMMIT (docs/stream-format.md).  The
// destination's side of an outcome query, end to end, and every parser of
// the feature: the OUTCOME_QUERY/MIGRATION_ID bodies, the OUTCOME answer a
// source reads, and the record files a receiver reads back from its disk.
//
// Input: flags:u8, then
//   flags & 3 == 0: a connection (magic + records) given to receive_domain
//                   with an outcome store holding four records: ids
//                   01.. (started), 02.. (destroyed), 03.. (committed, not
//                   started), 04.. (pending); flags bit 2: fix the CRCs
//   flags & 3 == 1: an OUTCOME body (parse_outcome)
//   flags & 3 == 2: a record file (parse_outcome_entry)
//   flags & 3 == 3: an OUTCOME_QUERY body, then the same as MIGRATION_ID
// Checked beyond "no crash": the answer to a query is the one its record
// allows (never "committed" unless started, never "not committed" unless
// pending or destroyed), the records no query may change stay as they
// were, and whatever a parser accepts re-encodes to the same bytes.
#include "tests/fuzz/fuzz_common.hpp"

#include "stream/outcome_store.hpp"
#include "stream/receiver.hpp"
#include "stream/wire_outcome.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <memory>
#include <string>

using namespace fastmig;
using namespace fastmig::fuzz;

namespace {

wire::MigrationId id_of(std::uint8_t n)
{
    wire::MigrationId id{};
    id[0] = n;
    return id;
}

// Never asked to build a domain: a query connection builds nothing.
class NoProvider : public DomainProvider {
public:
    std::unique_ptr<IncomingDomain> create(std::uint64_t, std::uint32_t, const std::string&) override
    {
        fuzz_fail("an outcome query connection created a domain");
    }
};

// The store's directory, removed when the process exits.
struct ScratchDir {
    ScratchDir()
    {
        char t[] = "/tmp/fastmig-fuzz-outcome.XXXXXX";
        if (!::mkdtemp(t))
            fuzz_fail("mkdtemp");
        path = t;
    }
    ~ScratchDir() { std::filesystem::remove_all(path); }
    std::string path;
};

OutcomeStore& store()
{
    static ScratchDir dir;
    static std::unique_ptr<OutcomeStore> s = [] {
        auto st = std::make_unique<OutcomeStore>(dir.path, std::chrono::seconds(3600));
        st->announce(id_of(1), "sim:1");
        st->decide_commit(id_of(1));
        st->mark_started(id_of(1), 77);
        st->announce(id_of(2), "sim:2");
        st->decide_destroyed_by_owner(id_of(2));
        st->announce(id_of(3), "sim:3");
        st->decide_commit(id_of(3));
        st->announce(id_of(4), "sim:4");
        return st;
    }();
    return *s;
}

// The pending record goes back to pending for the next input (a query
// destroys it).
void reset_pending()
{
    auto l = store().lookup(id_of(4));
    if (l.kind == OutcomeLookup::found && l.entry.state == OutcomeState::pending)
        return;
    std::remove(store().path_of(id_of(4)).c_str());
    store().announce(id_of(4), "sim:4");
}

void query_connection(Bytes stream)
{
    reset_pending();
    PeerConn c(std::move(stream));
    c.io = std::thread([&c] {
        c.put(0, c.bytes.size());
        c.finish();
    });
    NoProvider provider;
    ReceiveOptions opt;
    opt.io_timeout = std::chrono::milliseconds(200);
    opt.outcomes = &store();
    opt.queries_only = true;
    std::optional<ReceiveResult> r;
    try {
        r = receive_domain(c.theirs, provider, opt);
    } catch (const Error& e) {
        verbose("refused", &e);
    }
    ::shutdown(c.theirs, SHUT_RDWR);
    if (r) {
        FUZZ_ASSERT(r->query_id.has_value());
        const std::uint8_t n = (*r->query_id)[0];
        const bool known = *r->query_id == id_of(n) && n >= 1 && n <= 4;
        const auto a = r->query_answer;
        if (!known)
            FUZZ_ASSERT(a == wire::OutcomeAnswer::unknown);
        else if (n == 1)
            FUZZ_ASSERT(a == wire::OutcomeAnswer::committed);
        else if (n == 3)
            FUZZ_ASSERT(a == wire::OutcomeAnswer::unknown);
        else
            FUZZ_ASSERT(a == wire::OutcomeAnswer::not_committed);
    }
    // No query moves a decided record.
    FUZZ_ASSERT(store().lookup(id_of(1)).entry.state == OutcomeState::started);
    FUZZ_ASSERT(store().lookup(id_of(2)).entry.state == OutcomeState::destroyed);
    FUZZ_ASSERT(store().lookup(id_of(3)).entry.state == OutcomeState::committed);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size > 8192)
        return 0;
    Input in(data, size);
    const std::uint8_t flags = in.u8();
    auto rest = in.rest();
    Fenced fence(8192);
    auto body = fence.copy(rest);
    switch (flags & 3) {
    case 0: {
        Bytes s(rest.begin(), rest.end());
        if (flags & 4)
            fix_crcs(s, 8);
        query_connection(std::move(s));
        break;
    }
    case 1:
        try {
            auto r = wire::parse_outcome(body);
            FUZZ_ASSERT(r.message.size() <= wire::kMaxMessageLength);
            auto again = wire::encode_outcome(r);
            FUZZ_ASSERT(again.size() >= 16 + body.size() && std::equal(body.begin(), body.end(), again.begin() + 16));
        } catch (const StreamError& e) {
            verbose("outcome", &e);
        }
        break;
    case 2:
        try {
            auto e = parse_outcome_entry(body);
            FUZZ_ASSERT(e.domain.size() <= wire::kMaxNameLength);
            auto again = encode_outcome_entry(e);
            FUZZ_ASSERT(again.size() == body.size() && std::equal(body.begin(), body.end(), again.begin()));
        } catch (const StreamError& e) {
            verbose("record", &e);
        }
        break;
    case 3:
        for (int k = 0; k < 2; ++k)
            try {
                auto id = k ? wire::parse_migration_id(body) : wire::parse_outcome_query(body);
                FUZZ_ASSERT(body.size() == wire::kMigrationIdSize && id != wire::MigrationId{});
            } catch (const StreamError& e) {
                verbose("query", &e);
            }
        break;
    }
    return 0;
}
