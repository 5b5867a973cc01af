// The Domain interface: everything the engine needs from a guest, and nothing
// from any hypervisor header.  Two backends implement it: the simulated domain
// (stream/domain/sim/) and real Xen domains (stream/domain/xen/).  The engine
// cannot tell them apart.
//
// The source and destination roles are separate types, so that a domain being
// built cannot be asked for its dirty log and a running source cannot be
// written into by mistake.
#pragma once

#include "stream/dirty_bitmap.hpp"
#include "stream/types.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace fastmig {

// Platform state (vCPU registers, HVM context, workload state of a sim guest,
// ...) as the backend produces it.  The engine only carries it: the type
// number belongs to the backend and the bytes are opaque.
struct StateBlob {
    std::uint32_t type = 0;
    std::vector<std::uint8_t> data;
};

// Monotonic-clock instants a backend can report, in nanoseconds
// (CLOCK_MONOTONIC); 0 when unknown.  Used to measure downtime on one host.
struct DomainClock {
    std::uint64_t paused_at_ns = 0;   // source: the instant the guest stopped executing
    std::uint64_t resumed_at_ns = 0;  // destination: the instant it executed again
};

// What a backend does with a domain if the process migrating it dies before
// it lets go (SIGKILL, OOM, crash): the engine sets this as it moves through
// the protocol, so that a dead tool never leaves a domain paused forever,
// half-built, or running twice.  Backends whose toolstack already does this
// (libxl for Xen) may ignore it.
enum class OrphanPolicy : std::uint32_t {
    none,        // nothing to do (not held)
    resume,      // source before COMMIT: run again here
    keep_paused, // source once COMMIT may have left: in doubt, an admin decides
    destroy,     // destination before COMMIT: tear the copy down
};
const char* orphan_policy_name(OrphanPolicy p);

// The source side: a running domain to be migrated away.
class Domain {
public:
    virtual ~Domain() = default;

    // A short name for logs and errors, e.g. "sim:3" or "xen:7".
    virtual std::string name() const = 0;
    virtual std::uint64_t nr_pages() const = 0;
    // Backend kind written into the stream header, so a destination of the
    // other kind refuses early (see docs/stream-format.md, domain kinds).
    virtual std::uint32_t kind() const = 0;

    // Log-dirty mode.  enable_dirty_log() starts with an empty log: the first
    // fetch returns the pages written since enabling.
    virtual void enable_dirty_log() = 0;
    virtual void disable_dirty_log() = 0;

    // Atomically fetch and clear the dirty log (the semantics of Xen's
    // XEN_DOMCTL_SHADOW_OP_CLEAN): every page written after the previous
    // fetch is set in `out`, and no write is lost between two fetches.
    // `out` must have nr_pages() bits.  Returns the number of pages set.
    virtual std::uint64_t fetch_and_clear_dirty(DirtyBitmap& out) = 0;

    // Free-page hints: the pages the guest reports it does not use (their
    // contents do not matter to it).  Call after enable_dirty_log(): a page
    // the guest takes back later is written, so the dirty log sends it
    // again.  `out` must have nr_pages() bits; returns the count.  A backend
    // without hints reports none.
    virtual std::uint64_t free_page_hints(DirtyBitmap& out)
    {
        out.clear_all();
        return 0;
    }

    // Copy the given pages into dst (pfns.size() * kPageSize bytes), in order.
    // Pages of a running guest may be torn; the dirty log makes that harmless.
    virtual void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) = 0;

    // Stop the guest executing, within timeout; returns once it has stopped.
    virtual void suspend(std::chrono::milliseconds timeout) = 0;
    // Start it again on this host (the migration failed, or was a check).
    virtual void resume() = 0;
    virtual bool running() const = 0;

    // Only valid while suspended.
    virtual std::vector<StateBlob> save_state() = 0;

    // Early state: what the destination can prepare with while this source
    // suspends, so that less is left for the downtime (Xen PV: the page
    // types, so that page tables are localised before the stream ends).
    // Asked after every precopy round (the last one: before suspend()) of a
    // live migration on one channel; it describes the pages as the engine
    // last read them, and save_state() has the final word.
    virtual bool offers_early_state() const { return false; }
    virtual std::vector<StateBlob> early_state() { return {}; }

    virtual DomainClock clock() const = 0;

    // Release the source after the destination owns the guest (destroy the
    // sim process; on Xen, libxl destroys the domain itself).
    virtual void release() = 0;

    // One-way streams: END is out and the caller (libxl) takes the domain,
    // suspended.  Undo now what the migration changed in the domain itself
    // (log-dirty, a suspend notification): once the caller has it, another
    // migration of the same domain may start, and a late undo would break
    // that one.  Local resources (mappings, buffers) may go later, in
    // release() or the destructor.  Errors are thrown; the sender logs them.
    virtual void handed_over() {}

    // See OrphanPolicy.  The sender holds resume from the start and switches
    // to keep_paused just before COMMIT; a resume drops the hold.
    virtual void set_orphan_policy(OrphanPolicy) {}
};

// A Domain that wraps another and forwards every call to it: decorators
// derive from it and override only what they change, so that a call added
// to Domain later reaches the backend through them too (a hand-written
// wrapper that missed one would silently fall back to its default).
class ForwardingDomain : public Domain {
public:
    explicit ForwardingDomain(Domain& inner) : d_(inner) {}

    std::string name() const override { return d_.name(); }
    std::uint64_t nr_pages() const override { return d_.nr_pages(); }
    std::uint32_t kind() const override { return d_.kind(); }
    void enable_dirty_log() override { d_.enable_dirty_log(); }
    void disable_dirty_log() override { d_.disable_dirty_log(); }
    std::uint64_t fetch_and_clear_dirty(DirtyBitmap& out) override { return d_.fetch_and_clear_dirty(out); }
    std::uint64_t free_page_hints(DirtyBitmap& out) override { return d_.free_page_hints(out); }
    void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst) override { d_.read_pages(pfns, dst); }
    void suspend(std::chrono::milliseconds timeout) override { d_.suspend(timeout); }
    void resume() override { d_.resume(); }
    bool running() const override { return d_.running(); }
    std::vector<StateBlob> save_state() override { return d_.save_state(); }
    bool offers_early_state() const override { return d_.offers_early_state(); }
    std::vector<StateBlob> early_state() override { return d_.early_state(); }
    DomainClock clock() const override { return d_.clock(); }
    void release() override { d_.release(); }
    void handed_over() override { d_.handed_over(); }
    void set_orphan_policy(OrphanPolicy p) override { d_.set_orphan_policy(p); }

protected:
    Domain& d_;
};

// The destination side: a domain being built from a stream.
class IncomingDomain {
public:
    virtual ~IncomingDomain() = default;

    virtual std::string name() const = 0;
    virtual std::uint64_t nr_pages() const = 0;

    // Write pages (pfns.size() * kPageSize bytes from src, in order).
    virtual void write_pages(std::span<const Pfn> pfns, std::span<const std::uint8_t> src) = 0;
    // Write pages whose bytes lie anywhere: srcs[i] is the page of pfns[i]
    // (kPageSize bytes).  The receiver gathers a whole batch into one call;
    // a backend where every call costs (Xen maps and unmaps the pages)
    // overrides it.  By default: write_pages for each run of pages that lie
    // back to back.
    virtual void write_pages_gather(std::span<const Pfn> pfns, std::span<const std::uint8_t* const> srcs)
    {
        if (pfns.size() != srcs.size())
            throw Error("write_pages_gather: " + std::to_string(pfns.size()) + " pfns but " +
                        std::to_string(srcs.size()) + " pages");
        for (std::size_t i = 0; i < pfns.size();) {
            std::size_t j = i + 1;
            while (j < pfns.size() && srcs[j] == srcs[j - 1] + kPageSize)
                ++j;
            write_pages(pfns.subspan(i, j - i), {srcs[i], (j - i) * kPageSize});
            i = j;
        }
    }
    // Make pages read as zeros.  The engine calls this for pages it wrote
    // before (one call per batch); pages it never wrote go through
    // zero_fresh_pages.
    virtual void zero_pages(std::span<const Pfn> pfns) = 0;
    // Pages the stream names zero (or free) the first time it names them,
    // while they were never written: once per page, as the records arrive.
    // The sim's new memory reads as zeros already (nothing to do).  A backend
    // that must allocate the page, or whose new memory may hold old data
    // (Xen hands out frames a running guest freed without scrubbing), does
    // it here: during the receive, not in the downtime at restore_state.
    virtual void zero_fresh_pages(std::span<const Pfn>) {}
    // Read back a page as it now is in the domain (XBZRLE bases, tests).
    virtual void read_page(Pfn pfn, std::span<std::uint8_t> dst) = 0;
    // The same for several pages (pfns.size() * kPageSize bytes); backends
    // override it to read runs of pages with one call.
    virtual void read_pages(std::span<const Pfn> pfns, std::span<std::uint8_t> dst)
    {
        for (std::size_t i = 0; i < pfns.size(); ++i)
            read_page(pfns[i], dst.subspan(i * kPageSize, kPageSize));
    }

    // Early state from the source (Domain::early_state), one blob at a
    // time, with every page sent before it already written here.  Pages may
    // be written again afterwards; restore_state() gets the final word.  A
    // backend whose sources offer none ignores it.
    virtual void early_state(const StateBlob&) {}

    virtual void restore_state(const std::vector<StateBlob>& state) = 0;
    // Start the guest; it runs from here on, and belongs to nobody: this
    // drops any orphan policy in the same step (no instant where a running
    // guest would be destroyed with its builder).
    virtual void unpause() = 0;
    // See OrphanPolicy: the receiver holds destroy until COMMIT.
    virtual void set_orphan_policy(OrphanPolicy) {}
    virtual DomainClock clock() const = 0;
    // Tear the half-built domain down (the migration failed).
    virtual void destroy() = 0;
};

// Creates destination domains.  The receiver learns the size and kind from
// the stream header and asks the provider for a domain to fill.
class DomainProvider {
public:
    virtual ~DomainProvider() = default;
    // Asked before ACCEPT, while a refusal still reaches the source before
    // any page: throws Error naming what is short if this host cannot hold a
    // guest of nr_pages of this kind (address space, memory).  create()
    // builds it after ACCEPT, overlapped with the first pages; a failure
    // there costs the source a wasted round.  A backend with nothing to
    // check keeps this default.
    virtual void check_capacity(std::uint64_t /*nr_pages*/, std::uint32_t /*kind*/,
                                const std::string& /*source_name*/)
    {
    }
    virtual std::unique_ptr<IncomingDomain> create(std::uint64_t nr_pages, std::uint32_t kind,
                                                   const std::string& source_name) = 0;
};

// Backend kinds carried in the stream header.
enum DomainKind : std::uint32_t {
    kDomainKindSim = 1,
    kDomainKindXenPv = 2,
    kDomainKindXenHvm = 3,
};

} // namespace fastmig
