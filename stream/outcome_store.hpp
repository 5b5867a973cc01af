// The destination's memory of its decisions (docs/stream-format.md,
// Resolving a lost COMMIT): one small file per migration id in a
// directory, so that a source which lost its connection after COMMIT can
// ask, later and on a new connection, whether the domain runs here.
//
// A record moves only along
//
//     pending ──COMMIT──▶ committed ──started──▶ started
//        │                    │ (the start failed: owner only)
//        └──failure/query──▶ destroyed ◀─┘
//
// and the step out of `pending` is decided once: whichever of COMMIT (the
// receiver) and a query or a failure comes first wins, and the other is
// refused.  Every change happens under an flock on the directory's lock
// file, and is on disk before the receiver acts on it.
//
// The file is made once, at `announce` (before READY, outside the
// downtime): written to a temporary file, fsync'd, renamed into place and
// the directory fsync'd.  Every later change has the same length (only the
// state, the time and the digest change) and is written over it in place,
// one record of at most 307 bytes at offset 0, i.e. inside one disk sector,
// then fdatasync'd: no new inode, no directory entry, no journal commit in
// the downtime.  A write torn by a crash of the host fails the record's CRC
// and reads as `corrupt`, which every caller treats as "do not know" (a
// query answers UNKNOWN, decisions refuse it), never as "not committed".
#pragma once

#include "stream/wire_outcome.hpp"

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fastmig {

enum class OutcomeState : std::uint32_t {
    pending = 1,   // the domain is being received; not decided
    committed = 2, // COMMIT won: the receiver is starting the domain
    started = 3,   // the domain runs here (the migration succeeded)
    destroyed = 4, // it never ran here and never will (copy destroyed)
};
const char* outcome_state_name(OutcomeState s);

struct OutcomeEntry {
    wire::MigrationId id{};
    OutcomeState state = OutcomeState::pending;
    std::uint64_t updated_unix_ms = 0;
    std::uint64_t verify_digest = 0; // started, with VERIFY
    std::string domain;              // the destination's domain, for the admin
};

struct OutcomeLookup {
    enum Kind { found, missing, expired, corrupt } kind = missing;
    OutcomeEntry entry;
    std::string why; // corrupt: what is wrong with the file
};

class OutcomeStore {
public:
    // Creates `dir` (mode 0700, parents too) if needed, removes the temporary
    // files of writers that died and the records older than `keep`.
    // Error if the directory cannot be created or locked.
    OutcomeStore(std::string dir, std::chrono::seconds keep);
    const std::string& dir() const { return dir_; }
    std::chrono::seconds keep() const { return keep_; }
    std::string path_of(const wire::MigrationId& id) const;

    OutcomeLookup lookup(const wire::MigrationId& id) const;
    // A new migration, `pending`.  Error if the id has a record already (an
    // id is drawn once: a repeat is a replay or a bug).
    void announce(const wire::MigrationId& id, const std::string& domain);
    // COMMIT arrived: pending -> committed.  false if the migration was
    // decided `destroyed` first (by a query or a failure): the domain must
    // not start.  Error if the record is missing or unreadable.
    bool decide_commit(const wire::MigrationId& id);
    // The domain runs: committed -> started.  Written but not yet flushed
    // (a query sees it at once, and so does a restarted receiver): call
    // flush() once DONE is sent.  Losing it to a crash of the host leaves
    // `committed`, answered UNKNOWN: never a wrong answer.
    void mark_started(const wire::MigrationId& id, std::uint64_t verify_digest);
    // Makes the last in-place change of `id` durable (fdatasync).
    void flush(const wire::MigrationId& id);
    // The receiver failed or its start failed: pending or committed ->
    // destroyed.  A missing record is left missing (the failure came before
    // announce).  Returns the state after the call.
    OutcomeState decide_destroyed_by_owner(const wire::MigrationId& id);
    // A source asks: pending becomes destroyed (the query wins over a COMMIT
    // that never arrived); every other state is returned as it is.
    OutcomeLookup resolve_for_query(const wire::MigrationId& id);
    // Removes records older than keep() and stale temporary files; returns
    // how many records went.
    std::size_t prune();

private:
    class Locked;
    enum class Sync { none, data };
    OutcomeLookup read(const wire::MigrationId& id) const;
    void create(const OutcomeEntry& e);             // a new file: temp, fsync, rename, directory fsync
    void overwrite(const OutcomeEntry& e, Sync s);  // the existing file, in place

    std::string dir_;
    std::chrono::seconds keep_;
};

// The bytes of one record file: magic "FMOUTC1\n", id[16], state:u32,
// name_length:u32, updated_unix_ms:u64, verify_digest:u64, name, then the
// CRC-32C of all of it (u32).  parse: StreamError on anything else (a torn,
// truncated or damaged file).
std::vector<std::uint8_t> encode_outcome_entry(const OutcomeEntry& e);
OutcomeEntry parse_outcome_entry(std::span<const std::uint8_t> bytes);

// The answer to an OUTCOME_QUERY, from the store (which it may update: a
// pending migration is destroyed by the asking).  `store` may be null: a
// receiver that keeps no records answers `unknown`.
wire::OutcomeReply answer_outcome_query(OutcomeStore* store, const wire::MigrationId& id);

// The default directory: $FASTMIG_OUTCOME_DIR, else /var/lib/fastmig/outcomes
// for root, else $XDG_STATE_HOME (or ~/.local/state)/fastmig/outcomes.
std::string default_outcome_dir();

} // namespace fastmig
