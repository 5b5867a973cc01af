// Starting a helper process that reports on a pipe: the sim backend's
// domain daemons (`fastmig sim serve`, which say "ok" when ready) and the
// demo's receiver (which says "port=N", then its result).  One fork/exec
// path, so that what a child inherits and how its first line is read are
// decided in one place.
#pragma once

#include "stream/transport.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>

namespace fastmig {

struct SpawnSpec {
    std::vector<std::string> argv; // argv[0] is run (execvp: a path, or a name looked up in PATH)
    // The descriptors the child gets, as (ours, its number): at most 16,
    // numbers below 64, none the report_fd.  Every other descriptor but 0, 1 and 2 is closed on exec: a child
    // must not hold its creator's sockets or pipes, or whoever waits for
    // their EOF waits for the child's whole life.
    std::vector<std::pair<int, int>> fds;
    int report_fd = 3;       // the child's number for the write end of the report pipe
    bool detach = false;     // setsid and a second fork: outlives its creator and its terminal, init reaps it
    std::string exec_failed; // written to the report pipe when exec fails (the child then exits 127)
};

struct Spawned {
    pid_t pid = -1; // the child to wait for; -1 when detached (nothing to wait for)
    Fd report;      // the read end of the report pipe
};

// Forks and execs `spec`.  Throws Error ("pipe: ...", "fork: ...").
Spawned spawn_reporting(const SpawnSpec& spec);

struct ReportLine {
    std::string text;       // without its '\n'
    bool timed_out = false; // nothing complete within the timeout
};

// Reads the report pipe up to the first '\n', end of file or `max` bytes,
// one byte at a time so that what follows the line stays in the pipe.
// No timeout (nullopt): waits as long as the pipe stays open.  Throws
// Error on a read or poll failure.
ReportLine read_report_line(int fd, std::optional<std::chrono::milliseconds> timeout, std::size_t max);

} // namespace fastmig
