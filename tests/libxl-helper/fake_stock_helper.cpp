// A stand-in for Xen's own libxl-save-helper, for the tests of fastmig's
// hand-over to it (libxl-plugin/helper_stock.hpp): it records the command
// line it was run with and does its job as the stock helper would, with
// libxl's pipe protocol written here independently of fastmig's encoder.
//
//   --restore-domain: reads a libxc stream from io_fd the way libxc does
//     (image header, domain header, then record by record up to END, never
//     past it), checking the header from the stream's very first byte; logs
//     the byte count and an FNV-1a hash of everything read; sends
//     restore_results and complete (retval 0, or -1 for a bad stream).
//   --save-domain: writes a small libxc stream (header, one record, END)
//     to io_fd and sends complete 0.
// The record goes to $FAKE_STOCK_LOG (appended), one line per field:
//   argv0=..., args=<the rest, space separated>, read=N hash=H records=R end=1
#include <cerrno>
#include "tests/libxl-helper/read_exact.hpp"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

FILE* g_log;

void write_all(int fd, const void* d, std::size_t n)
{
    auto* p = static_cast<const std::uint8_t*>(d);
    while (n) {
        ssize_t r = ::write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            std::fprintf(g_log, "error=write: %s\n", std::strerror(errno));
            std::exit(1);
        }
        p += r;
        n -= std::size_t(r);
    }
}

// libxl's framing: u16 body length, u16 message number, arguments.
void message(std::uint16_t type, const std::vector<std::uint8_t>& args)
{
    std::vector<std::uint8_t> m(4);
    std::uint16_t len = std::uint16_t(2 + args.size());
    std::memcpy(m.data(), &len, 2);
    std::memcpy(m.data() + 2, &type, 2);
    m.insert(m.end(), args.begin(), args.end());
    write_all(1, m.data(), m.size());
}

template <class T> void put(std::vector<std::uint8_t>& v, T x)
{
    std::uint8_t b[sizeof x];
    std::memcpy(b, &x, sizeof x);
    v.insert(v.end(), b, b + sizeof x);
}

int complete(int retval)
{
    std::vector<std::uint8_t> a;
    put<int>(a, retval);
    put<int>(a, 0);
    message(10, a);
    int reply;
    if (!read_exact(0, &reply, sizeof reply))
        std::fprintf(g_log, "error=no reply to complete\n");
    std::fclose(g_log);
    return 0;
}

struct Hash {
    std::uint64_t h = 1469598103934665603ull;
    std::uint64_t n = 0;
    void add(const std::uint8_t* p, std::size_t len)
    {
        for (std::size_t i = 0; i < len; ++i)
            h = (h ^ p[i]) * 1099511628211ull;
        n += len;
    }
};

const std::uint8_t kMarker[12] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'X', 'E', 'N', 'F'};

// libxc's restore: headers, then records up to END.  "" or the problem.
std::string read_libxc(int fd, Hash& hash, unsigned& records)
{
    std::uint8_t ihdr[24], dhdr[16];
    if (!read_exact(fd, ihdr, sizeof ihdr))
        return "short image header";
    hash.add(ihdr, sizeof ihdr);
    if (std::memcmp(ihdr, kMarker, sizeof kMarker) != 0)
        return "the stream does not start with the libxc marker and XENF";
    if (!read_exact(fd, dhdr, sizeof dhdr))
        return "short domain header";
    hash.add(dhdr, sizeof dhdr);
    while (true) {
        std::uint32_t h[2];
        if (!read_exact(fd, h, sizeof h))
            return "stream ended before END";
        hash.add(reinterpret_cast<std::uint8_t*>(h), sizeof h);
        if (h[1] > (16u << 20))
            return "record too long";
        std::vector<std::uint8_t> body((h[1] + 7u) & ~7u);
        if (!read_exact(fd, body.data(), body.size()))
            return "record body truncated";
        hash.add(body.data(), body.size());
        ++records;
        if (h[0] == 0)
            return "";
    }
}

} // namespace

int main(int argc, char** argv)
{
    const char* path = std::getenv("FAKE_STOCK_LOG");
    g_log = std::fopen(path && *path ? path : "/dev/null", "a");
    if (!g_log)
        return 1;
    std::setvbuf(g_log, nullptr, _IOLBF, 0);
    std::string args;
    for (int i = 1; i < argc; ++i)
        args += (i > 1 ? " " : "") + std::string(argv[i]);
    std::fprintf(g_log, "argv0=%s\nargs=%s\n", argv[0], args.c_str());
    if (argc < 3)
        return 2;
    int io = std::atoi(argv[2]);
    if (std::string(argv[1]) == "--restore-domain") {
        Hash hash;
        unsigned records = 0;
        std::string err = read_libxc(io, hash, records);
        std::fprintf(g_log, "read=%llu hash=%016llx records=%u end=%d%s%s\n", (unsigned long long)hash.n,
                     (unsigned long long)hash.h, records, err.empty(), err.empty() ? "" : " error=", err.c_str());
        std::vector<std::uint8_t> a;
        put<std::uint64_t>(a, err.empty() ? 0xfeffc : 0);
        put<std::uint64_t>(a, err.empty() ? 0xfeffd : 0);
        message(9, a);
        return complete(err.empty() ? 0 : -1);
    }
    if (std::string(argv[1]) == "--save-domain") {
        std::vector<std::uint8_t> s(kMarker, kMarker + 12);
        put<std::uint32_t>(s, 0x03000000); // version 3, big endian
        put<std::uint32_t>(s, 0);          // options (little endian), reserved
        put<std::uint32_t>(s, 0);          // reserved
        put<std::uint32_t>(s, 1); // x86 PV
        put<std::uint16_t>(s, 12);
        put<std::uint16_t>(s, 0);
        put<std::uint32_t>(s, 4);
        put<std::uint32_t>(s, 17);
        put<std::uint32_t>(s, 0xf0000001); // an optional record
        put<std::uint32_t>(s, 8);
        put<std::uint64_t>(s, 0x4b434f5453454b41ull);
        put<std::uint32_t>(s, 0); // END
        put<std::uint32_t>(s, 0);
        write_all(io, s.data(), s.size());
        std::fprintf(g_log, "wrote=%zu\n", s.size());
        return complete(0);
    }
    return 2;
}
