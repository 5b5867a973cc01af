// fastmig: the command.  Exit status 0 on success, 1 on failure at run time,
// 2 on bad usage, 3 when a migration ended in doubt (COMMIT sent, no DONE:
// the source domain is kept paused); every error is one line naming the
// domain, phase and cause.
#include "libxl-plugin/cli.hpp"

#include "config.h"
#include "stream/types.hpp"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

const char* kUsage =
    "usage: fastmig COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  demo     create a sim domain, migrate it over loopback to a receiver process,\n"
    "           verify every page, print the figures\n"
    "           [--memory SIZE (1G)] [--workload NAME (idle)] [--downtime-ms N (10)]\n"
    "           [--max-rounds N (30)] [--seed N] [--rate-scale X] [--warmup-ms N (500)]\n"
    "           [--json] [--keep] [--no-verify]\n"
    "           [--sender-netns NS --receiver-netns NS --receiver-address IP]\n"
    "           [--psk-file FILE [--cipher NAME]]\n"
    "  send     migrate a domain: fastmig send DOMAIN HOST:PORT\n"
    "           [--downtime-ms N] [--max-rounds N] [--verify] [--json] [--no-release]\n"
    "           [--psk-file FILE [--cipher NAME]]\n"
    "           [--resolve-deadline-ms N (120000)] [--resolve-interval-ms N (2000)]\n"
    "           [--resolve-attempts N (60)] [--no-resolve]: connection lost after COMMIT:\n"
    "           ask the destination for the outcome (README.md, 'When a migration fails')\n"
    "  receive  receive one migration: fastmig receive --listen HOST:PORT\n"
    "           [--max-memory SIZE (host RAM; 0: none)] [--timeout-ms N] [--commit-timeout-ms N (30000)]\n"
    "           [--keep-listening] [--netns NS] [--psk-file FILE [--cipher NAME]]\n"
    "           [--outcome-dir DIR|none] [--outcome-keep-ms N (86400000)]\n"
    "           [--outcome-linger-ms N (300000: stay up for a source that may ask)]\n"
    "  resolve  after a send that was killed or ended in doubt after COMMIT: ask the\n"
    "           destination what became of the migration and act on the paused source:\n"
    "           fastmig resolve DOMAIN HOST:PORT MIGRATION_ID (send's 'commit:' line names them)\n"
    "           [--psk-file F] [--timeout-ms N] [--resolve-deadline-ms N (120000)]\n"
    "           [--resolve-interval-ms N (2000)] [--resolve-attempts N (60)]; exit 0: it runs\n"
    "           there (source destroyed), 1: it never ran there (source resumed), 3: still in doubt\n"
    "  keygen   make a pre-shared key: fastmig keygen FILE (mode 0600; never overwrites)\n"
    "           or fastmig keygen (prints one)\n"
    "  sim      simulated domains: create, list, info, pause, resume, checksum,\n"
    "           destroy, workloads\n"
    "  status   which libxl-save-helper libxl runs (LIBXL_SAVE_HELPER, the stock path,\n"
    "           its dpkg diversion to fastmig's)\n"
    "  version  print the version\n"
    "\n"
    "pipeline options (demo and send):\n"
    "  --threads N (cores)  --channels N (2)  --compress igzip|zlib|none (igzip)\n"
    "  --min-ratio X (compress a region only while it achieves X:1)  --always-compress\n"
    "  --xbzrle-cache SIZE (64M, 0 = off)  --no-zero-detect  --batch-pages N (512)\n"
    "  --no-free-hints (read and send the pages the guest reports free)\n"
    "  --max-bandwidth RATE (e.g. 1gbit, 500mbit, 100M bytes/s)  --timeout-ms N (30000)\n"
    "  --done-timeout-ms N (60000: END to READY, COMMIT to DONE)\n"
    "\n"
    "authentication and encryption (demo, send, receive): --psk-file FILE (or\n"
    "  FASTMIG_PSK_FILE): both ends prove they hold the key, and every record is\n"
    "  authenticated and, by default, encrypted; recommended on any network but loopback.\n"
    "  --cipher aes-256-gcm|chacha20-poly1305|none (aes-256-gcm): with a key, what\n"
    "  protects the records; none = authenticated but readable on the wire. Both ends\n"
    "  must name the same. See README.md, 'Encryption', and docs/stream-format.md.\n"
    "\n"
    "FASTMIG_CRC32C=auto|instruction|table: the records' CRC-32C routine (default:\n"
    "  the faster here, timed once; the same CRC either way).\n"
    "\n"
    "exit status: 0 done, 1 failed (the domain runs on the source), 2 bad usage,\n"
    "  3 in doubt (COMMIT sent, DONE lost, and the destination could not be asked\n"
    "  in time: the source keeps the domain paused; see README.md, 'When a migration fails')\n"
    "\n"
    "See README.md and docs/ for details.\n";

} // namespace

int main(int argc, char** argv)
{
    // A peer that goes away must be an error we report, not a silent death.
    std::signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    std::string cmd = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    const bool asks_help = std::any_of(args.begin(), args.end(), [](const std::string& a) { return a == "--help"; });
    if (asks_help && (cmd == "demo" || cmd == "send" || cmd == "receive")) {
        std::fputs(kUsage, stdout);
        return 0;
    }
    try {
        if (cmd == "demo")
            return fastmig::cli::cmd_demo(args);
        if (cmd == "send")
            return fastmig::cli::cmd_send(args);
        if (cmd == "receive")
            return fastmig::cli::cmd_receive(args);
        if (cmd == "resolve")
            return fastmig::cli::cmd_resolve(args);
        if (cmd == "keygen")
            return fastmig::cli::cmd_keygen(args);
        if (cmd == "sim")
            return fastmig::cli::cmd_sim(args, argc, argv);
        if (cmd == "status")
            return fastmig::cli::cmd_status(args);
        if (cmd == "version" || cmd == "--version") {
            std::printf("fastmig %s\n", PACKAGE_VERSION);
            return 0;
        }
        if (cmd == "help" || cmd == "--help" || cmd == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        }
        std::fprintf(stderr, "fastmig: unknown command '%s' (try 'fastmig help')\n", cmd.c_str());
        return 2;
    } catch (const fastmig::cli::UsageError& e) {
        std::fprintf(stderr, "fastmig %s: %s\n", cmd.c_str(), e.what());
        return 2;
    } catch (const fastmig::InDoubtError& e) {
        std::fprintf(stderr, "fastmig %s: IN DOUBT: %s\n", cmd.c_str(), e.what());
        return 3;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fastmig %s: %s\n", cmd.c_str(), e.what());
        return 1;
    }
}
