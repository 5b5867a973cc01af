// The helper as two processes, so that its teardown is not in the downtime.
//
// libxl goes on only when the helper *exits* (libxl_save_callout.c: the
// completion callback runs from helper_exited), and on the source that wait
// is inside the guest's downtime: libxl's own END record follows it, and the
// destination cannot start the guest before reading that.  Tearing a
// migration down is not free: the pipeline's buffers and the XBZRLE cache
// unmapped, log-dirty switched off, the guest's p2m and Xen's m2p unmapped,
// the rest of the address space freed at exit.  In the nested harness that
// took 250-300 ms after END on a writing guest, longer than all of the
// destination's restore.
//
// So the process libxl started only supervises.  The worker it forks does
// the whole job; once libxl has its `complete` (and answered it), the
// worker releases the supervisor, which exits 0 at once, and the teardown
// goes on in the worker, which libxl does not wait for.
//
// Until then nothing differs for libxl: the supervisor forwards SIGTERM and
// SIGINT (libxl's abort, ^C) to the worker and exits with the worker's exit
// status; if libxl SIGKILLs the supervisor, the kernel kills the worker too
// (PR_SET_PDEATHSIG), as it would have killed a single-process helper.
#pragma once

#include <sys/types.h>

namespace fastmig::helper {

// Forks.  Returns in the worker; in the supervisor it never returns (it
// exits as described above).  If fork fails, returns in the only process,
// which then works unsupervised (teardown inside the wait again) and
// `supervised()` is false.  Call before any thread exists.
void split_supervisor() noexcept;

// True in a worker whose supervisor waits for it.
bool supervised() noexcept;

// In the worker, after libxl answered `complete`: the supervisor exits 0
// now.  From here the worker is on its own: libxl reads nothing more, and
// the calling thread (which tears down) runs as SCHED_IDLE.  Idempotent; a
// no-op when unsupervised.
void release_supervisor() noexcept;

} // namespace fastmig::helper
