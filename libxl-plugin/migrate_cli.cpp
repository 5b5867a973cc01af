// What the migrate commands share (migrate_cli.hpp).
#include "libxl-plugin/migrate_cli.hpp"

#include "stream/auth/auth.hpp"

#include <cstdlib>

namespace fastmig::cli {

std::vector<std::uint8_t> load_psk(const Options& o, std::string* path_out)
{
    std::string path;
    if (auto p = o.get("psk-file"))
        path = *p;
    else if (const char* e = std::getenv("FASTMIG_PSK_FILE"); e && *e)
        path = e;
    if (path.empty())
        return {};
    if (path_out)
        *path_out = path;
    try {
        return auth::load_key_file(path);
    } catch (const Error& e) {
        throw UsageError((o.get("psk-file") ? "--psk-file: " : "FASTMIG_PSK_FILE: ") + e.cause());
    }
}

auth::Suite load_cipher(const Options& o, bool have_key)
{
    auto name = o.get("cipher");
    if (!name)
        return auth::kDefaultSuite;
    auto s = auth::parse_suite_name(*name);
    if (!s)
        throw UsageError("--cipher: '" + *name + "' is not one of aes-256-gcm, chacha20-poly1305, none");
    if (!have_key && auth::encrypts(*s))
        throw UsageError("--cipher " + *name + " needs a key (--psk-file): the encryption keys are derived from it");
    return *s;
}

void set_channels(SendOptions& so, unsigned channels, const HostPort& dest)
{
    so.channels = channels;
    so.connect_channel = [dest, t = so.io_timeout] { return tcp_connect(dest, t).release(); };
}

double cpu_ms(const rusage& ru)
{
    return (double(ru.ru_utime.tv_sec) + double(ru.ru_stime.tv_sec)) * 1e3 +
           (double(ru.ru_utime.tv_usec) + double(ru.ru_stime.tv_usec)) / 1e3;
}

long self_rss_kib()
{
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

double self_cpu_ms()
{
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return cpu_ms(ru);
}

} // namespace fastmig::cli
