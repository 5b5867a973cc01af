// The control page of a sim domain: a shared region both the sim process and
// an attacher map.  It plays the role of the hypervisor's per-domain state:
// the run state, a one-slot command mailbox (the fast path for pause/resume,
// rung with a doorbell), the pause/resume instants, the log-dirty switch and
// the dirty bitmap itself, plus a free-page bitmap (pages a guest freed, for
// free-page hints later) and the workload configuration that travels as the
// domain's platform state.
//
// Layout: ControlHeader at offset 0, then the dirty bitmap at
// header.dirty_offset and the free bitmap at header.free_offset, each
// nr_pages bits in 64-bit words (Xen's x86_64 log-dirty layout).  Fields that
// change while both sides run are std::atomic (lock-free, hence address-free:
// valid across processes); the rest is written once before the region is
// handed out.  Bump kControlVersion on any change.
#pragma once

#include "stream/types.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace fastmig::sim {

constexpr std::uint64_t kControlMagic = 0x4c52544353494d46ull; // "FMISCTRL" little endian
constexpr std::uint32_t kControlVersion = 2;

enum SimState : std::uint32_t {
    kStateStarting = 0,
    kStateRunning = 1,
    kStatePaused = 2,
    kStateIncoming = 3, // empty, waiting for a stream; unpause starts it
};

enum SimCommand : std::uint32_t {
    kCmdNone = 0,
    kCmdPause = 1,
    kCmdResume = 2,  // a paused source, or an incoming domain (restored config)
    kCmdLease = 3,   // take, change or drop the lease (lease_pid, lease_policy)
};

// A lease: the migration tool that holds the domain names itself (pid) and
// says what the domain does if that process dies before it lets go, so a
// killed tool never leaves a guest paused forever or half-built (on Xen,
// libxl plays this part for its save/restore helper).  Any successful
// resume drops the lease: a running guest belongs to nobody.
enum SimLeasePolicy : std::uint32_t {
    kLeaseNone = 0,
    kLeaseResume = 1,     // source before COMMIT: run again (log-dirty off)
    kLeaseKeepPaused = 2, // source once COMMIT may be out: stay paused (in doubt)
    kLeaseDestroy = 3,    // destination before COMMIT: tear down
};

// Results in the mailbox ack (0 = done).
enum SimCmdResult : std::int32_t {
    kCmdOk = 0,
    kCmdBadCommand = 1,
    kCmdBadState = 2,       // e.g. resume of a running domain
    kCmdNoConfig = 3,       // incoming domain unpaused before restore_state
    kCmdBadConfig = 4,      // restored config failed validation in the domain
    kCmdPauseTimeout = 5,   // a workload thread did not park in time
    kCmdNoSuchHolder = 6,   // lease: the holder process does not exist
};

constexpr std::size_t kWorkloadNameMax = 32;
constexpr std::size_t kMaxCursors = 8;

// The workload configuration and progress that make up a sim guest's
// "platform state": enough for a destination to continue the same workload.
struct ControlConfig {
    std::uint64_t memory_bytes;
    std::uint64_t seed;
    double rate_scale;
    std::uint64_t epoch;                 // times this guest was migrated
    std::uint64_t cursors[kMaxCursors];  // workload positions (log offset, mbuf index...)
    char workload[kWorkloadNameMax];     // NUL-terminated; empty = none
};

struct ControlHeader {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t header_size;
    std::uint64_t nr_pages;
    std::uint64_t dirty_offset; // bytes from the start of the region
    std::uint64_t free_offset;
    std::uint64_t bitmap_words; // per bitmap
    std::uint64_t region_size;
    std::int64_t pid;

    std::atomic<std::uint32_t> state;
    std::atomic<std::uint32_t> logdirty; // 1: writers mark the dirty bitmap

    // Mailbox: the attacher writes cmd, then bumps cmd_seq and rings the
    // to-domain doorbell; the domain acts, writes ack_result, sets ack_seq to
    // the seq it handled and rings the from-domain doorbell.
    std::atomic<std::uint32_t> cmd;
    std::atomic<std::int32_t> ack_result;
    std::atomic<std::uint64_t> cmd_seq;
    std::atomic<std::uint64_t> ack_seq;

    std::atomic<std::uint64_t> paused_at_ns;  // CLOCK_MONOTONIC; last thread parked
    std::atomic<std::uint64_t> resumed_at_ns; // CLOCK_MONOTONIC; workload runs again
    std::atomic<std::uint64_t> writes;        // write units done by the workload (for tests)

    // Written by the domain when it pauses (cursors) and at start; written by
    // an attacher of an incoming domain (restore_state) before it unpauses.
    std::atomic<std::uint32_t> config_valid;
    std::atomic<std::uint32_t> lease_policy; // SimLeasePolicy; argument of kCmdLease, then current
    std::atomic<std::int64_t> lease_pid;     // holder; argument of kCmdLease, then current
    ControlConfig config;
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "cross-process atomics need lock-free u64");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "cross-process atomics need lock-free u32");

struct ControlLayout {
    std::uint64_t nr_pages;
    std::uint64_t words;
    std::uint64_t dirty_offset;
    std::uint64_t free_offset;
    std::uint64_t size;
};

inline ControlLayout control_layout(std::uint64_t nr_pages)
{
    auto align = [](std::uint64_t v) { return (v + kPageSize - 1) & ~std::uint64_t(kPageSize - 1); };
    ControlLayout l;
    l.nr_pages = nr_pages;
    l.words = (nr_pages + 63) / 64;
    l.dirty_offset = align(sizeof(ControlHeader));
    l.free_offset = l.dirty_offset + align(l.words * 8);
    l.size = l.free_offset + align(l.words * 8);
    return l;
}

inline ControlHeader* control_header(void* region) { return static_cast<ControlHeader*>(region); }
inline std::uint64_t* dirty_words(void* region)
{
    return reinterpret_cast<std::uint64_t*>(static_cast<char*>(region) + control_header(region)->dirty_offset);
}
inline std::uint64_t* free_words(void* region)
{
    return reinterpret_cast<std::uint64_t*>(static_cast<char*>(region) + control_header(region)->free_offset);
}

const char* state_name(std::uint32_t s);
const char* cmd_result_text(std::int32_t r);

} // namespace fastmig::sim
