// How should an incoming sim guest get its memory (issue 16)?  Times landing
// N MiB of page data in a fresh memfd (the sim's guest RAM) by each way a
// destination could do it, with 1 or 2 writer threads (the receiver has one
// applier per channel), the methods interleaved within each repeat after an
// unreported warm-up; medians and ratios to today's way (`pwrite`).
//
//   guest-memory-bench [--mib N (512)] [--repeat N (5)] [--threads N (2)]
//
// Methods (each writer thread takes every other 4 MiB chunk):
//   pwrite           pwrite of 4 MiB runs into the holes (today's write_pages)
//   fallocate+pwrite fallocate the whole guest first (populated up front, as
//                    Xen's populate_physmap does), then pwrite
//   chunk-fallocate  fallocate each 4 MiB chunk just before writing it
//   mmap             one shared mapping, memcpy into it (page faults)
//   mmap-populate    MAP_POPULATE mapping, then memcpy
//   madv-populate    MADV_POPULATE_WRITE each 2 MiB, then memcpy
// The mapping methods are what receiving pages straight into guest memory
// would cost on the destination (the bytes must land in the mapping).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace {

constexpr std::size_t kChunk = 4u << 20;

enum Method { pwrite_m, fallocate_all, chunk_fallocate, mmap_m, mmap_populate, madv_populate, kMethods };
const char* const kNames[kMethods] = {"pwrite", "fallocate+pwrite", "chunk-fallocate", "mmap", "mmap-populate",
                                      "madv-populate"};

[[noreturn]] void die(const std::string& what)
{
    std::fprintf(stderr, "guest-memory-bench: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(1);
}

// Seconds to land `bytes` of `src` (repeated) in a fresh memfd with method m.
double run(Method m, std::size_t bytes, unsigned threads, const std::vector<unsigned char>& src)
{
    int fd = ::memfd_create("guest-memory-bench", MFD_CLOEXEC);
    if (fd < 0)
        die("memfd_create");
    if (::ftruncate(fd, off_t(bytes)) < 0)
        die("ftruncate");
    const auto t0 = std::chrono::steady_clock::now();
    unsigned char* map = nullptr;
    if (m == fallocate_all && ::fallocate(fd, 0, 0, off_t(bytes)) < 0)
        die("fallocate");
    if (m == mmap_m || m == mmap_populate || m == madv_populate) {
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | (m == mmap_populate ? MAP_POPULATE : 0),
                         fd, 0);
        if (p == MAP_FAILED)
            die("mmap");
        map = static_cast<unsigned char*>(p);
    }
    auto writer = [&](unsigned t) {
        for (std::size_t off = t * kChunk; off < bytes; off += threads * kChunk) {
            const std::size_t len = std::min(kChunk, bytes - off);
            switch (m) {
            case chunk_fallocate:
                if (::fallocate(fd, 0, off_t(off), off_t(len)) < 0)
                    die("fallocate");
                [[fallthrough]];
            case pwrite_m:
            case fallocate_all:
                if (::pwrite(fd, src.data(), len, off_t(off)) != ssize_t(len))
                    die("pwrite");
                break;
            case madv_populate:
                for (std::size_t c = 0; c < len; c += 2u << 20)
                    if (::madvise(map + off + c, std::min<std::size_t>(2u << 20, len - c), MADV_POPULATE_WRITE) < 0)
                        die("madvise(MADV_POPULATE_WRITE)");
                [[fallthrough]];
            default:
                std::memcpy(map + off, src.data(), len);
            }
        }
    };
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back(writer, t);
    for (auto& t : pool)
        t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (map)
        ::munmap(map, bytes);
    ::close(fd);
    return s;
}

} // namespace

int main(int argc, char** argv)
{
    std::size_t mib = 512;
    unsigned repeat = 5, threads = 2;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 < argc && a == "--mib")
            mib = std::strtoul(argv[++i], nullptr, 10);
        else if (i + 1 < argc && a == "--repeat")
            repeat = unsigned(std::strtoul(argv[++i], nullptr, 10));
        else if (i + 1 < argc && a == "--threads")
            threads = unsigned(std::strtoul(argv[++i], nullptr, 10));
        else {
            std::fprintf(stderr, "usage: guest-memory-bench [--mib N] [--repeat N] [--threads N]\n");
            return 2;
        }
    }
    if (mib < 4 || repeat < 1 || threads < 1 || threads > 64) {
        std::fprintf(stderr, "guest-memory-bench: --mib >= 4, --repeat >= 1, --threads 1..64\n");
        return 2;
    }
    const std::size_t bytes = mib << 20;
    std::vector<unsigned char> src(kChunk);
    for (std::size_t i = 0; i < src.size(); ++i)
        src[i] = static_cast<unsigned char>((i * 2654435761u) >> 13); // not zero: every page gets allocated
    run(pwrite_m, bytes, threads, src);                                    // warm-up, not reported
    std::vector<std::vector<double>> t(kMethods);
    for (unsigned r = 0; r < repeat; ++r)
        for (int m = 0; m < kMethods; ++m)
            t[m].push_back(run(Method(m), bytes, threads, src));
    std::printf("%zu MiB into a fresh memfd, %u writer thread(s), %u repeats interleaved (medians):\n", mib, threads,
                repeat);
    double base = 0;
    for (int m = 0; m < kMethods; ++m) {
        std::sort(t[m].begin(), t[m].end());
        const double med = t[m][t[m].size() / 2];
        if (m == pwrite_m)
            base = med;
        std::printf("  %-17s %8.1f ms  x%5.2f of pwrite   runs:", kNames[m], med * 1e3, med / base);
        for (double x : t[m])
            std::printf(" %.0f", x * 1e3);
        std::printf("\n");
    }
    return 0;
}
