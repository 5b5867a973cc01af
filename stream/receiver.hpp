// The destination side: reads a stream, builds the domain through a
// DomainProvider, starts it, and answers DONE.  Every byte from the network is
// checked by the wire decoders; on any failure the half-built domain is
// destroyed and the source is told why (DONE with an error status).
#pragma once

#include "stream/auth/suite.hpp"
#include "stream/domain.hpp"
#include "stream/wire_outcome.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace fastmig {

struct ReceiveResult;
class OutcomeStore;

struct ReceiveOptions {
    std::chrono::milliseconds io_timeout{30000};
    // From READY to the source's COMMIT.  Without COMMIT in time the copy is
    // destroyed: the source still holds the domain and resumes it.
    std::chrono::milliseconds commit_timeout{30000};
    // Refuse domains larger than this (0: no limit).  The destination's own
    // memory check, answered in ACCEPT before any page is sent.
    std::uint64_t max_memory_bytes = 0;
    // Destination kinds this receiver can build.
    std::vector<std::uint32_t> kinds = {kDomainKindSim};
    std::function<void(const std::string&)> log;
    // Accepts one more connection (an extra channel of the same stream),
    // waiting at most the given time.  Without it, a multi-channel stream is
    // refused.
    std::function<int(std::chrono::milliseconds)> accept_channel;
    // One-way stream (docs/stream-format.md, One-way streams; libxl's
    // restore helper): send nothing back, read no byte past END (libxl reads
    // its own records after it on the same fd), and leave the domain built
    // and paused for the caller to start; no READY/COMMIT.  A one-way
    // receiver refuses a two-way stream and a two-way receiver a one-way one.
    bool one_way = false;
    // Called once the header is accepted and the domain created, before any
    // page (libxl's static_data_done callback goes here).  Throwing fails the
    // migration: the domain is destroyed.
    std::function<void(IncomingDomain&)> accepted;
    // One-way only: called with the domain built and paused, after its state
    // is restored, with the result as it will be returned; throwing destroys
    // the domain.  The receiver has dropped its hold (orphan policy) by then:
    // the caller may hand the domain over from here (libxl's helper tells
    // libxl, so that the receiver's and the backend's teardown happens after
    // libxl has moved on, not in the guest's downtime).
    std::function<void(IncomingDomain&, const ReceiveResult&)> built;
    // Pre-shared key (docs/stream-format.md, Authentication): every
    // connection must authenticate before any record is trusted.  Empty:
    // unauthenticated sources only (a source that asks is refused).
    std::vector<std::uint8_t> psk;
    // With a key: what protects the records (docs/stream-format.md,
    // Encryption).  A source that asks for another suite is refused.
    auth::Suite suite = auth::kDefaultSuite;
    // Outcome records (docs/stream-format.md, Resolving a lost COMMIT):
    // with a store, this receiver accepts feature OUTCOME, records each
    // migration's decision there before it acts on it, and answers
    // OUTCOME_QUERY connections.  Without, it refuses the feature and
    // answers every query `unknown`.
    OutcomeStore* outcomes = nullptr;
    // Called with (id, true) when READY went out on a migration with an id
    // (its source may come back and ask from then on), and (id, false) when
    // the source's DONE_ACK says it knows the outcome.
    std::function<void(const wire::MigrationId&, bool)> outcome_pending;
    // How long to wait after DONE for the source's DONE_ACK.
    std::chrono::milliseconds done_ack_timeout{5000};
    // Answer outcome queries only: a migration's HEADER is refused (a
    // receiver that stays up for queries after its one migration).
    bool queries_only = false;
};

struct ReceiveResult {
    std::string source_name;       // as the source named itself
    std::string domain;            // the new domain's name
    std::uint64_t nr_pages = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t pages_written = 0; // data pages written (all rounds)
    std::uint64_t pages_zeroed = 0;  // pages re-zeroed after an earlier write
    std::uint64_t pages_deflate = 0; // of pages_written: arrived in deflate groups
    std::uint64_t pages_xbzrle = 0;  // of pages_written: arrived as XBZRLE deltas
    unsigned channels = 1;
    unsigned rounds = 0;
    std::uint64_t resumed_at_ns = 0;
    std::uint64_t verify_digest = 0;
    bool verify = false;
    double receive_ms = 0;           // first byte to END
    double restore_ms = 0;           // END to running
    // DONE could not be written after the domain started (the source then
    // keeps its copy paused, in doubt): the domain runs here regardless.
    bool done_delivered = true;
    std::string done_error;
    // The connection was an OUTCOME_QUERY, not a migration: what was asked
    // and answered (the other fields are empty).
    std::optional<wire::MigrationId> query_id;
    wire::OutcomeAnswer query_answer = wire::OutcomeAnswer::unknown;
};

// Receives one migration on the connected socket `fd`: builds the domain,
// answers READY, and starts it only on the source's COMMIT (then DONE).
// Throws Error with domain and phase on failure; the new domain is destroyed
// by then, which is every failure before COMMIT arrived.
ReceiveResult receive_domain(int fd, DomainProvider& provider, const ReceiveOptions& opt);

} // namespace fastmig
