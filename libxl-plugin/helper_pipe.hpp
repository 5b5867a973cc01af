// libxl hands the helper its stream as a pipe more often than not: xl
// migrate's ssh (or `-s ""`'s shell) and xl migrate-receive's stdin.  A pipe
// holds 64 KiB by default, so a stream of hundreds of MiB goes through it in
// 16-page steps, each a wake-up of the process on the other side.  A larger
// buffer lets the writer run ahead by whole records.
//
// Not too far at the destination, though: whatever sits in its pipe when the
// source suspends the guest is applied inside the downtime, and a one-way
// stream has no acknowledgement to pace the source on.  So the source's pipe
// (drained by ssh) is made large, the destination's only a few records.
#pragma once

#include <string>

namespace fastmig::helper {

constexpr int kSourcePipeBytes = 4 << 20;
constexpr int kDestinationPipeBytes = 256 << 10;

// If fd is a pipe (or FIFO), grow its buffer to `bytes`, or as far as the
// system allows (pipe-max-size for an unprivileged process).  Returns a line
// for the log saying what happened ("" when fd is not a pipe, or already
// holds that much).  Never fails:
// a pipe left at its size still works.
std::string widen_pipe(int fd, int bytes);

} // namespace fastmig::helper
