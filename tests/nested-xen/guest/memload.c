/* memload: the "after-load" workload of the test guest.  A job that used
 * most of the guest's memory and ended: it maps MIB MiB, writes every page
 * with data no codec can shrink, prints what it did, and exits, so that
 * the kernel gets all of it back in its free lists (where
 * fastmig-guest-agent finds it) while every freed page still holds data
 * (what a migration without hints has to send).
 *
 *   memload MIB     prints "LOADED <mib> MiB in <ms> ms" and exits 0
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    char *end = NULL;
    unsigned long mib = argc == 2 ? strtoul(argv[1], &end, 10) : 0;
    if (argc != 2 || !end || *end || mib == 0 || mib > (1ul << 20)) {
        fprintf(stderr, "usage: memload MIB (1..1048576)\n");
        return 2;
    }
    double t0 = now_ms();
    size_t bytes = mib << 20;
    uint64_t *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        perror("memload: mmap");
        return 1;
    }
    /* xorshift64: incompressible, different on every run */
    uint64_t x = (uint64_t)(t0 * 1e3) | 1;
    for (size_t i = 0; i < bytes / 8; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = x;
    }
    printf("LOADED %lu MiB in %.0f ms\n", mib, now_ms() - t0);
    fflush(stdout);
    return 0;
}
