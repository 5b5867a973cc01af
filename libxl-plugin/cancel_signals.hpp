// The drop-ins' signals.  The toolstack aborts a helper with SIGTERM (libxl's
// helper_stop; forkexecd's kill of emu-manager), a shell with ^C: either
// unwinds through the engine's error path (resume the source, destroy a
// half-built domain), then reports, because a signal alone does not wake
// the pipeline's threads blocked in poll() and cancel_all_io does.  A
// vanished reader is an error to report, not a silent death: SIGPIPE is
// ignored.
#pragma once

namespace fastmig::helper {

// `term_why`: what a SIGTERM means, a string literal (cancel_all_io keeps
// the pointer).  Also unblocks both signals, whatever the parent left.
void install_cancelling_signals(const char* term_why);

// SIGPIPE as it was before install_cancelling_signals, for an exec: an
// ignored signal stays ignored across exec.
void restore_sigpipe();

} // namespace fastmig::helper
