// What `fastmig send`, `receive`, `resolve` and `demo` share: the key and
// cipher options, the sender's channels, the progress line, this process's
// resources.
#pragma once

#include "libxl-plugin/cli.hpp"

#include "stream/auth/suite.hpp"
#include "stream/sender.hpp"
#include "stream/transport.hpp"

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <sys/resource.h>

namespace fastmig::cli {

// --psk-file FILE, else $FASTMIG_PSK_FILE, else no key (docs/stream-format.md,
// Authentication).  Returns the path too, so demo can hand it on.
std::vector<std::uint8_t> load_psk(const Options& o, std::string* path_out = nullptr);

// --cipher NAME (docs/stream-format.md, Encryption): what protects the
// records once a key is given; both ends must name the same one.
auth::Suite load_cipher(const Options& o, bool have_key);

// Channel 0 is connected here; the sender opens the others after the
// destination's ACCEPT, through this.
void set_channels(SendOptions& so, unsigned channels, const HostPort& dest);

double cpu_ms(const rusage& ru);
long self_rss_kib();
double self_cpu_ms();

// A one-line progress display on a terminal, rewritten in place.
class ProgressLine {
public:
    explicit ProgressLine(bool enabled) : on_(enabled) {}
    ~ProgressLine() { finish(); }
    void update(const Progress& p)
    {
        if (!on_)
            return;
        double pct = p.pages_round ? 100.0 * double(p.pages_done) / double(p.pages_round) : 100.0;
        double rate = p.elapsed_s > 0 ? double(p.bytes_total) / p.elapsed_s : 0;
        std::fprintf(stderr, "\r  %s %-3u %5.1f%%  %10s sent  %10s/s  %6.1f s   ", p.stop_copy ? "stop-copy" : "round    ",
                     p.round, pct, human_bytes(double(p.bytes_total)).c_str(), human_bytes(rate).c_str(), p.elapsed_s);
        dirty_ = true;
    }
    void finish()
    {
        if (on_ && dirty_)
            std::fprintf(stderr, "\r%80s\r", "");
        dirty_ = false;
    }

private:
    bool on_;
    bool dirty_ = false;
};

} // namespace fastmig::cli
