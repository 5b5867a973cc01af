// The source side of a migration: precopy rounds driven by PrecopyPolicy,
// stop-and-copy, platform state, END, then the destination's DONE.
//
// Whatever fails before the destination reports the domain running, the
// source domain is left running here (resumed if it had been suspended).
#pragma once

#include "stream/domain.hpp"
#include "stream/precopy_policy.hpp"
#include "stream/reconnect.hpp"
#include "stream/send_pipeline.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace fastmig {

struct Progress {
    unsigned round = 0;
    bool stop_copy = false;
    std::uint64_t pages_done = 0;   // in this round
    std::uint64_t pages_round = 0;  // to send in this round
    std::uint64_t bytes_total = 0;  // sent so far, whole migration
    double elapsed_s = 0;
    double bandwidth = 0;           // bytes/s, policy estimate
};

struct SendResult;

struct SendOptions {
    PolicyConfig policy;
    PipelineConfig pipeline; // threads, batch size, codecs, XBZRLE, bandwidth cap
    bool verify = false; // destination checksums pages; source compares after DONE
    bool release_source = true; // destroy the source once the destination runs it
    // Skip the pages the guest reports free (Domain::free_page_hints): round 0
    // sends them as FREE descriptors without reading them.
    bool free_page_hints = true;
    // Extra channels: how many connections in all, and how to open one more
    // to the same destination (called after the destination's ACCEPT, so
    // nothing but the first connection is opened to a peer that refuses).
    unsigned channels = 1;
    std::function<int()> connect_channel;
    // One-way stream (docs/stream-format.md, One-way streams): the source
    // reads nothing back.  Stock libxl gives its save helper no channel from
    // the destination (`xl migrate`) or no destination at all (`xl save`).
    // The stream ends at END; the domain is then left suspended and handed to
    // the caller (libxl decides whether it is destroyed or resumed), so no
    // ACCEPT, ROUND_ACK, READY, COMMIT or DONE, one channel, no verify.
    bool one_way = false;
    // One-way only: called once END is out and the result is final, before
    // the pipeline's threads and buffers are torn down (freeing them is
    // not free).  The libxl helper tells libxl `complete` from here: on the
    // source, libxl's own END and so the guest's downtime wait for that.
    // Must not throw.
    std::function<void(const SendResult&)> on_handover;
    // false: suspend first and send every page once (`xl save`, whose
    // xcflags lack XCFLAGS_LIVE): no precopy rounds, no duplicate pages.
    bool live = true;
    // Pre-shared key (docs/stream-format.md, Authentication): every
    // connection authenticates the destination and itself, and every record
    // is tagged.  Empty: no authentication (a destination with a key refuses).
    std::vector<std::uint8_t> psk;
    // With a key: what protects the records (docs/stream-format.md,
    // Encryption); the destination must be set to the same suite.
    auth::Suite suite = auth::kDefaultSuite;
    // Resolving a lost COMMIT (docs/stream-format.md): with resolve.connect
    // the stream carries a migration id (feature OUTCOME), and a connection
    // lost after COMMIT is followed by OUTCOME queries on new connections
    // until the destination answers or resolve's deadline passes.  Without,
    // a lost COMMIT is in doubt at once.
    ResolveOptions resolve;
    // Called with the migration id (feature OUTCOME) right before COMMIT is
    // written: from then on a killed sender leaves the domain paused, and
    // this id is what `fastmig resolve` asks the destination about.  Must
    // not throw.
    std::function<void(const wire::MigrationId&)> on_commit;
    std::chrono::milliseconds io_timeout{30000};
    std::chrono::milliseconds suspend_timeout{5000};
    // From END to the destination's READY (it builds and checks the domain),
    // and from COMMIT to its DONE.
    std::chrono::milliseconds done_timeout{60000};
    // After a failure before END, how long to wait for the destination's
    // DONE that may say why (best effort; the fuzz harness uses 0 so that a
    // refused reply never costs a wait).
    std::chrono::milliseconds peer_reason_timeout{1000};
    // Called about every 100 ms and at each round boundary.
    std::function<void(const Progress&)> progress;
    // Called with one line per policy decision (rounds, why we stopped).
    std::function<void(const std::string&)> log;
};

struct RoundStats {
    unsigned round = 0;
    bool stop_copy = false;
    std::uint64_t pages = 0;
    std::uint64_t zero_pages = 0;
    std::uint64_t free_pages = 0;
    std::uint64_t deflate_pages = 0;
    std::uint64_t xbzrle_pages = 0;
    std::uint64_t bytes = 0;
    double seconds = 0;
    std::uint64_t dirty_after = 0;
    double predicted_downtime_ms = 0;
    // At the round's end: whether the workers compress and why (nullopt
    // without a compressor, e.g. --compress none).
    std::optional<codec::GateVerdict> compression;
};

struct SendResult {
    std::string domain;
    std::uint64_t nr_pages = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t pages_zero = 0;   // zero descriptors sent (all rounds)
    std::uint64_t pages_free = 0;   // FREE descriptors sent (round 0: the guest's free-page hints)
    std::uint64_t pages_data = 0;   // pages sent with data (all rounds)
    std::uint64_t pages_deflate = 0; // of pages_data: sent in deflate groups
    std::uint64_t pages_xbzrle = 0;  // of pages_data: sent as XBZRLE deltas
    std::uint64_t deflate_in = 0, deflate_out = 0;
    std::uint64_t xbzrle_hits = 0, xbzrle_misses = 0;
    unsigned channels = 1, threads = 1;
    unsigned rounds = 0;            // precopy rounds + the stop-and-copy round
    unsigned early_state_blobs = 0; // EARLY_STATE records sent before the suspension
    StopReason stop_reason = StopReason::none;
    std::string stop_why;
    double total_ms = 0;            // connect to DONE received and source released
    double precopy_ms = 0;
    double stop_copy_ms = 0;        // suspend requested to END written
    double source_downtime_ms = 0;  // source paused to DONE received (upper bound of downtime)
    // Where the rest of total_ms goes (each from this process's clock):
    double negotiate_ms = 0;        // connect..ACCEPT and every extra channel opened
    double setup_ms = 0;            // dirty log enabled, free-page hints read
    double ready_wait_ms = 0;       // END written..READY (the destination builds the domain)
    double commit_ms = 0;           // COMMIT sent..DONE (the destination starts the domain)
    double release_ms = 0;          // the source domain destroyed
    std::uint64_t paused_at_ns = 0;
    std::uint64_t resumed_at_ns = 0; // destination's clock, from DONE
    std::optional<bool> verified;    // set when verify was asked
    // "committed": DONE was lost and the destination's answer to an outcome
    // query said the domain runs there (resumed_at_ns is then unknown: 0).
    std::string resolved;
    std::uint64_t source_digest = 0, destination_digest = 0;
    std::vector<RoundStats> round_stats;
};

// Migrates `dom` over the connected socket `fd`.  On success the source is
// released if opt.release_source (after verification, which reads it).
// Throws Error (with domain and phase) on failure, after making sure the
// source domain runs; except InDoubtError: COMMIT went out and no DONE came
// back, so the domain is left paused here (see docs/stream-format.md, Commit).
// With opt.channels > 1, opt.connect_channel opens the other connections;
// `fd` (channel 0) carries the control records, every channel carries pages
// (docs/stream-format.md, Channels).  The sender owns what connect_channel
// returns and closes it.
SendResult send_domain(Domain& dom, int fd, const SendOptions& opt);

// Per-page checksums of a suspended domain, for verification.  Pages in
// `as_zero` (sent as FREE and never since) count as zero pages: the
// destination holds zeros there, and the guest declared their contents moot.
std::vector<std::uint64_t> domain_checksums(Domain& dom, const DirtyBitmap* as_zero = nullptr);

} // namespace fastmig
