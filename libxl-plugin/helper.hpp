// The libxl-save-helper drop-in: save and restore paths (helper_save.cpp,
// helper_restore.cpp), each returning the `retval` of libxl's `complete`
// message (0 done, -1 failed, after an error log message to libxl).
#pragma once

#include "libxl-plugin/helper_args.hpp"
#include "libxl-plugin/helper_backend.hpp"
#include "libxl-plugin/libxl_link.hpp"

#include "stream/receiver.hpp"
#include "stream/sender.hpp"

#include <chrono>
#include <string>

namespace fastmig::helper {

int run_save(const SaveArgs& a, LibxlLink& libxl, HelperBackend& backend);
int run_restore(const RestoreArgs& a, LibxlLink& libxl, HelperBackend& backend);

// FASTMIG_HELPER_OPTIONS (the options of `fastmig send`, e.g.
// "--threads 4 --max-bandwidth 1gbit"), applied to `so`.  libxl passes no
// options of its own, so this is the helper's only configuration.  Two
// more words, for the source's guest agent (free-page hints, Xen backend),
// go to `hints` when given (both ends accept them: xl hands the same
// environment to the sender and the receiver):
//   --no-agent-hints         do not ask the guest's agent
//   --agent-timeout-ms MS    bound on the exchange with it (1..20000; 10000)
void helper_send_options(SendOptions& so, xen::GuestHintOptions* hints = nullptr);

// The options of a one-way save (libxl's helper, the emu-manager drop-in):
// helper_send_options, the guest agent's hints given to `backend`, no
// verification, the source kept for its caller to destroy, a 30 s bound on
// the caller's suspension.
SendOptions one_way_save_options(HelperBackend& backend, bool live);
// "saving domain 5 (sim:3), N pages, live, T threads"
std::string saving_line(const std::string& who, const Domain& dom, const SendOptions& so);

// FASTMIG_HELPER_SETTLE_MS (default 10000; 0: no wait): how long the worker
// waits after the hand-over for libxl to be done with the domain before it
// tears down (HelperBackend::wait_settled).  Error for a malformed value.
std::chrono::milliseconds settle_limit();
// That wait; never throws.
void settle_before_teardown(HelperBackend& backend, std::uint32_t domid, bool source, std::chrono::milliseconds max);

// What libxl hands over that fastmig's helper cannot take (save and
// restore alike): a checkpointed stream (Remus/COLO), a closed io_fd.
void check_plain_stream(std::uint32_t stream_type, int io_fd, const std::string& who);

// "domain 5 (sim:3)": libxl's domid and what it maps to.
std::string domain_label(std::uint32_t domid, const std::string& backend_name);

// The log line once a save or restore is final (handover_summary.cpp):
// "saved domain 5 (sim:3): N pages in R rounds (why), X MiB written in T
// ms, stop-and-copy S ms" and "restored domain 6 (sim:4) from sim:3: ...".
std::string saved_summary(const std::string& who, const SendResult& r);
std::string restored_summary(const std::string& who, const ReceiveResult& r);

// One line "domain 5 (sim:3): <phase>: <cause>" for libxl's log.
std::string error_line(std::uint32_t domid, const std::string& who, Phase phase, const std::exception& e);

} // namespace fastmig::helper
