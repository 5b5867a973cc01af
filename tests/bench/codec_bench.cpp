// Micro-benchmark of the page codecs (`make bench-codec`): what each
// compressor costs and achieves on each kind of simulated page, at group
// sizes 1 and 16; zero detection; the entropy probe; XBZRLE.  One thread:
// the numbers are per core, which is what CompressionGate's rule
// counts (a rate per compressing thread); rates are per CPU second of the benchmark thread.  Prints a table, then one JSON line (prefix "JSON ").
//
//   codec-bench [--quick] [--pages N]
#include "stream/codec/codec.hpp"
#include "stream/domain/sim/sim_content.hpp"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <isa-l/mem_routines.h>
#include <time.h>

using namespace fastmig;
using namespace fastmig::codec;
using sim::PageKind;
namespace {

// The thread's CPU time, not the wall clock: the rates are per core (what
// CompressionGate's rule counts) and stay meaningful on a machine
// that is busy with other work, where wall-clock rates would measure the
// scheduler instead.
double cpu_seconds()
{
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Runs `pass` (one pass over the working set, returning bytes of input it
// processed) until at least `min_s` CPU seconds have passed; returns bytes
// per CPU second.
template <class F>
double rate(double min_s, F&& pass)
{
    std::size_t bytes = 0;
    const double t0 = cpu_seconds();
    double s;
    do {
        bytes += pass();
    } while ((s = cpu_seconds() - t0) < min_s);
    return static_cast<double>(bytes) / s;
}

struct Codec {
    const char* name;
    Algorithm algo;
    int level;
};

volatile std::size_t sink; // keeps results alive

} // namespace

int main(int argc, char** argv)
{
    bool quick = false;
    std::size_t nr_pages = 4096; // 16 MiB per kind: more than the caches
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (std::strcmp(argv[i], "--pages") == 0 && i + 1 < argc)
            nr_pages = std::stoul(argv[++i]);
        else {
            std::fprintf(stderr, "usage: codec-bench [--quick] [--pages N]\n");
            return 2;
        }
    }
    const double min_s = quick ? 0.05 : 0.25;
    nr_pages = (nr_pages + 15) / 16 * 16;

    const PageKind kinds[] = {PageKind::zero, PageKind::text, PageKind::binary, PageKind::random};
    const Codec codecs[] = {{"igzip-0", Algorithm::igzip, 0}, {"igzip-1", Algorithm::igzip, 1},
                            {"igzip-2", Algorithm::igzip, 2}, {"igzip-3", Algorithm::igzip, 3},
                            {"zlib-1", Algorithm::zlib, 1}};
    std::string json = "{\"bench\":\"codec\",\"pages\":" + std::to_string(nr_pages) + ",\"deflate\":[";
    bool first = true;

    std::printf("deflate groups, one core, %zu pages per kind (GB/s of page data per CPU second)\n", nr_pages);
    std::printf("%-7s %-8s %5s %10s %10s %7s %9s\n", "kind", "codec", "group", "comp GB/s", "decomp GB/s",
                "ratio", "us/page");
    for (PageKind kind : kinds) {
        std::vector<std::uint8_t> mem(nr_pages * kPageSize);
        for (std::size_t p = 0; p < nr_pages; ++p)
            sim::fill_page(kind, mem.data() + p * kPageSize, 42, p, 0);
        for (const Codec& c : codecs) {
            auto comp = make_compressor(c.algo, c.level);
            auto decomp = make_decompressor(c.algo);
            for (std::size_t group : {std::size_t{1}, kMaxGroupPages}) {
                const std::size_t groups = nr_pages / group;
                std::vector<std::uint8_t> blobs(groups * kMaxEncodedGroup);
                std::vector<std::size_t> sizes(groups);
                const std::size_t gbytes = group * kPageSize;
                // Limit = raw size, as the engine would (a group that does
                // not shrink goes raw).
                const double c_rate = rate(min_s, [&] {
                    for (std::size_t g = 0; g < groups; ++g)
                        sizes[g] = comp->compress({mem.data() + g * gbytes, gbytes},
                                                  {blobs.data() + g * kMaxEncodedGroup, kMaxEncodedGroup}, gbytes);
                    return nr_pages * kPageSize;
                });
                std::size_t wire = 0, compressed_groups = 0;
                for (std::size_t g = 0; g < groups; ++g) {
                    wire += sizes[g] ? sizes[g] : gbytes;
                    compressed_groups += sizes[g] != 0;
                }
                const double ratio = static_cast<double>(nr_pages * kPageSize) / static_cast<double>(wire);
                std::vector<std::uint8_t> out(gbytes);
                double d_rate = 0;
                if (compressed_groups) {
                    d_rate = rate(min_s, [&] {
                        std::size_t done = 0;
                        for (std::size_t g = 0; g < groups; ++g)
                            if (sizes[g]) {
                                decomp->decompress({blobs.data() + g * kMaxEncodedGroup, sizes[g]}, out);
                                done += gbytes;
                            }
                        sink = out[0];
                        return done;
                    });
                }
                std::printf("%-7s %-8s %5zu %10.3f %10.3f %7.2f %9.2f\n", sim::page_kind_name(kind), c.name, group,
                            c_rate / 1e9, d_rate / 1e9, ratio, kPageSize / c_rate * 1e6);
                char buf[256];
                std::snprintf(buf, sizeof buf,
                              "%s{\"kind\":\"%s\",\"codec\":\"%s\",\"group\":%zu,\"compress_gbps\":%.4f,"
                              "\"decompress_gbps\":%.4f,\"ratio\":%.4f}",
                              first ? "" : ",", sim::page_kind_name(kind), c.name, group, c_rate / 1e9, d_rate / 1e9,
                              ratio);
                json += buf;
                first = false;
            }
        }
    }
    json += "]";

    // Zero detection: the full scan of a zero page is the worst case (a
    // non-zero page usually exits in the first bytes).  Streaming over
    // 64 MiB measures memory bandwidth; one hot page measures the code.
    {
        std::vector<std::uint8_t> zeros(std::size_t{64} << 20, 0);
        const std::size_t pages = zeros.size() / kPageSize;
        std::size_t found = 0;
        const double stream = rate(min_s, [&] {
            for (std::size_t p = 0; p < pages; ++p)
                found += isal_zero_detect(zeros.data() + p * kPageSize, kPageSize) == 0;
            return pages;
        });
        const double hot = rate(min_s, [&] {
            for (std::size_t p = 0; p < 100000; ++p)
                found += isal_zero_detect(zeros.data(), kPageSize) == 0;
            return std::size_t{100000};
        });
        sink = found;
        std::printf("\nzero detect (isal_zero_detect, 4 KiB): %.2f Mpages/s streaming 64 MiB (%.1f GB/s), "
                    "%.2f Mpages/s on a cached page\n",
                    stream / 1e6, stream * kPageSize / 1e9, hot / 1e6);
        char buf[160];
        std::snprintf(buf, sizeof buf, ",\"zero_detect_pages_per_s\":%.0f,\"zero_detect_cached_pages_per_s\":%.0f",
                      stream, hot);
        json += buf;
    }

    // Entropy probe, per kind.
    {
        std::printf("entropy probe (us/page, bits/byte):");
        json += ",\"entropy_probe\":{";
        bool f = true;
        for (PageKind kind : kinds) {
            std::vector<std::uint8_t> mem(nr_pages * kPageSize);
            for (std::size_t p = 0; p < nr_pages; ++p)
                sim::fill_page(kind, mem.data() + p * kPageSize, 42, p, 0);
            double bits = 0;
            const double pps = rate(min_s, [&] {
                bits = 0;
                for (std::size_t p = 0; p < nr_pages; ++p)
                    bits += entropy_probe({mem.data() + p * kPageSize, kPageSize});
                return nr_pages;
            });
            std::printf("  %s %.3f us (%.2f)", sim::page_kind_name(kind), 1e6 / pps, bits / nr_pages);
            char buf[128];
            std::snprintf(buf, sizeof buf, "%s\"%s\":{\"us_per_page\":%.4f,\"bits\":%.3f}", f ? "" : ",",
                          sim::page_kind_name(kind), 1e6 / pps, bits / nr_pages);
            json += buf;
            f = false;
        }
        json += "}";
        std::printf("\n");
    }

    // XBZRLE: binary pages (a typical hot structure), 64 contiguous bytes
    // changed per page at a varying offset.  GB/s of page data.
    {
        std::vector<std::uint8_t> oldm(nr_pages * kPageSize), newm;
        for (std::size_t p = 0; p < nr_pages; ++p)
            sim::fill_page(PageKind::binary, oldm.data() + p * kPageSize, 42, p, 0);
        newm = oldm;
        for (std::size_t p = 0; p < nr_pages; ++p) {
            std::uint8_t* pg = newm.data() + p * kPageSize;
            const std::size_t at = (p * 977) % (kPageSize - 64);
            for (std::size_t i = 0; i < 64; ++i)
                pg[at + i] = static_cast<std::uint8_t>(~pg[at + i]);
        }
        std::vector<std::uint8_t> deltas(nr_pages * kMaxXbzrle);
        std::vector<std::size_t> sizes(nr_pages);
        const double enc = rate(min_s, [&] {
            for (std::size_t p = 0; p < nr_pages; ++p)
                sizes[p] = xbzrle_encode({oldm.data() + p * kPageSize, kPageSize},
                                         {newm.data() + p * kPageSize, kPageSize},
                                         {deltas.data() + p * kMaxXbzrle, kMaxXbzrle}, kPageSize / 2);
            return nr_pages * kPageSize;
        });
        std::size_t total = 0;
        for (auto s : sizes)
            total += s;
        std::vector<std::uint8_t> work = oldm;
        const double dec = rate(min_s, [&] {
            for (std::size_t p = 0; p < nr_pages; ++p)
                xbzrle_decode({deltas.data() + p * kMaxXbzrle, sizes[p]}, {work.data() + p * kPageSize, kPageSize});
            return nr_pages * kPageSize;
        });
        const bool exact = work == newm;
        // Bail-out cost: random vs random, limit kPageSize/2.
        std::vector<std::uint8_t> r1(nr_pages * kPageSize), r2(nr_pages * kPageSize);
        for (std::size_t p = 0; p < nr_pages; ++p) {
            sim::fill_page(PageKind::random, r1.data() + p * kPageSize, 1, p, 0);
            sim::fill_page(PageKind::random, r2.data() + p * kPageSize, 1, p, 1);
        }
        const double bail = rate(min_s, [&] {
            std::size_t z = 0;
            for (std::size_t p = 0; p < nr_pages; ++p)
                z += xbzrle_encode({r1.data() + p * kPageSize, kPageSize}, {r2.data() + p * kPageSize, kPageSize},
                                   {deltas.data(), kMaxXbzrle}, kPageSize / 2);
            sink = z;
            return nr_pages * kPageSize;
        });
        std::printf("xbzrle, 64-byte change: encode %.2f GB/s, decode %.2f GB/s, %.1f bytes/page%s; "
                    "random page bail-out %.2f GB/s\n",
                    enc / 1e9, dec / 1e9, double(total) / nr_pages, exact ? "" : " (MISMATCH)", bail / 1e9);
        char buf[256];
        std::snprintf(buf, sizeof buf,
                      ",\"xbzrle\":{\"encode_gbps\":%.4f,\"decode_gbps\":%.4f,\"bytes_per_page\":%.2f,"
                      "\"bailout_gbps\":%.4f,\"exact\":%s}",
                      enc / 1e9, dec / 1e9, double(total) / nr_pages, bail / 1e9, exact ? "true" : "false");
        json += buf;
        if (!exact)
            return 1;
    }
    json += "}";
    std::printf("JSON %s\n", json.c_str());
    return 0;
}
