// Failpoints: named places in the engine where a test can make this process
// die, stall or fail on purpose, so the fault matrix (tests/faults/) hits each
// phase of the protocol exactly instead of racing a kill against a timer.
//
// Armed only through the environment, never by the stream:
//   FASTMIG_FAILPOINTS="name=action[,name=action...]"
// actions: kill (SIGKILL to itself: no cleanup runs, as after an OOM kill),
//          exit (_exit(99)), sleep:MS, error (throws Error "failpoint NAME").
// Names are listed in docs/stream-format.md (Commit) and tests/faults/README.md.
// Unset (the normal case), a failpoint costs one load of a cached flag.
#pragma once

namespace fastmig {

void failpoint(const char* name);

} // namespace fastmig
