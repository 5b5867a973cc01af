/* memwriter: the test guest's workload, and its own stopwatch.
 *
 * It dirties memory at a chosen rate and notices when it was not running.
 *
 *   memwriter -m MIB -r MIB_PER_S [-p PERIOD_MS]
 *
 * -m  size of the buffer it owns (filled once with non-zero, non-repeating
 *     data, so a migration has to send it).
 * -r  how many MiB per second it rewrites (one 64-bit store per 4 KiB page,
 *     enough to dirty the page); 0 = fill once, then only keep time.
 * -p  report period on stdout (the guest console), default 1000 ms.
 *
 * Self-check: every page of the buffer carries its generation in its
 * first word and, in the other 511, a stream derived from (page, generation).
 * Before a page is rewritten its old content is checked, and a background
 * sweep checks the whole buffer once every VERIFY_PERIOD_S. Any mismatch
 * is printed at once as "CORRUPT page <n> ..." (the job fails on it) and
 * counted in STAT ("verified <pages> bad <pages>"). So a migration that
 * loses, mixes up or half-writes a page of the guest is caught, not only
 * one that stops it.
 *
 * Stopwatch: the loop reads CLOCK_BOOTTIME about every 1 ms (it
 * sleeps 1 ms between slices). Any gap between two consecutive reads
 * longer than 20 ms is printed at once as "GAP <us>", and the largest gap
 * of each period is in the periodic "STAT" line. A suspended or migrating
 * domain shows up as one large gap: its downtime seen from inside.
 * CLOCK_BOOTTIME, not CLOCK_MONOTONIC: a Linux PV guest goes through
 * timekeeping_suspend/resume around save/migrate, which hides the time it
 * was stopped from CLOCK_MONOTONIC (seen here: 35 ms "gap" for a 2.9 s
 * outage) but adds it to CLOCK_BOOTTIME (and REALTIME). The GAP line
 * prints both, so the difference stays visible.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define WORDS 512                /* 64-bit words per 4 KiB page */
#define VERIFY_PERIOD_S 10

/* The content of word j (1..511) of page idx at generation gen. */
static uint64_t seed_of(uint64_t idx, uint64_t gen)
{
    uint64_t z = idx * 0x9e3779b97f4a7c15ull + gen * 0xbf58476d1ce4e5b9ull + 1;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (z ^ (z >> 31)) | 1; /* xorshift must not start at 0 */
}

static void fill_page(uint64_t *p, uint64_t idx, uint64_t gen)
{
    uint64_t x = seed_of(idx, gen);
    p[0] = gen;
    for (unsigned j = 1; j < WORDS; j++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        p[j] = x;
    }
}

static uint64_t verified, bad;

/* Check page idx against the generation we last wrote into it. */
static void check_page(const uint64_t *p, uint64_t idx, uint64_t want_gen)
{
    verified++;
    unsigned first_bad = WORDS;
    if (p[0] != want_gen) {
        first_bad = 0;
    } else {
        uint64_t x = seed_of(idx, want_gen);
        for (unsigned j = 1; j < WORDS; j++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            if (p[j] != x) { first_bad = j; break; }
        }
    }
    if (first_bad == WORDS)
        return;
    if (bad++ < 20) {
        printf("CORRUPT page %llu word %u: generation %llu expected %llu, "
               "word 0x%016llx\n", (unsigned long long)idx, first_bad,
               (unsigned long long)p[0], (unsigned long long)want_gen,
               (unsigned long long)p[first_bad]);
        fflush(stdout);
    }
}

static uint64_t now_us(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int main(int argc, char **argv)
{
    long mib = 64, period_ms = 1000;
    double rate_mib = 0;
    int opt;
    while ((opt = getopt(argc, argv, "m:r:p:")) != -1) {
        switch (opt) {
        case 'm': mib = atol(optarg); break;
        case 'r': rate_mib = atof(optarg); break;
        case 'p': period_ms = atol(optarg); break;
        default:
            fprintf(stderr, "usage: memwriter -m MIB -r MIB_PER_S [-p MS]\n");
            return 2;
        }
    }
    const size_t page = WORDS * 8, npages = (size_t)mib * 256;
    uint64_t *buf = mmap(NULL, npages * page, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (buf == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    /* The generation of each page, kept apart from the page itself. */
    uint64_t *gens = calloc(npages, sizeof *gens);
    if (!gens) {
        perror("calloc");
        return 1;
    }
    /* Fill with xorshift streams: non-zero and not compressible, so
     * neither zero-page detection nor compression can skip it. */
    for (size_t i = 0; i < npages; i++)
        fill_page(buf + i * WORDS, i, 0);
    printf("MEMWRITER start mib=%ld rate_mib_s=%.1f\n", mib, rate_mib);
    fflush(stdout);

    const double pages_per_us = rate_mib * 256.0 / 1e6;
    uint64_t t0 = now_us(CLOCK_BOOTTIME), last = t0, period_start = t0;
    uint64_t last_mono = now_us(CLOCK_MONOTONIC);
    uint64_t written = 0, counter = 0, max_gap = 0, total_max_gap = 0;
    size_t next = 0, sweep = 0;
    const double sweep_pages_per_us = (double)npages / (VERIFY_PERIOD_S * 1e6);
    uint64_t swept = 0;
    for (;;) {
        uint64_t t = now_us(CLOCK_BOOTTIME), mono = now_us(CLOCK_MONOTONIC);
        uint64_t gap = t - last, mono_gap = mono - last_mono;
        if (gap > max_gap)
            max_gap = gap;
        if (gap > total_max_gap)
            total_max_gap = gap;
        if (gap > 20000) {
            printf("GAP %llu us (monotonic %llu us) at boottime_us %llu "
                   "realtime_us %llu\n",
                   (unsigned long long)gap, (unsigned long long)mono_gap,
                   (unsigned long long)t,
                   (unsigned long long)now_us(CLOCK_REALTIME));
            fflush(stdout);
        }
        last = t;
        last_mono = mono;
        /* Catch up to the rate: write the pages due by now, at most one
         * buffer's worth at a time so a long gap does not stall us. */
        uint64_t due = (uint64_t)((double)(t - t0) * pages_per_us);
        uint64_t todo = due > written ? due - written : 0;
        if (todo > npages)
            todo = npages, written = due - npages;
        for (uint64_t i = 0; i < todo; i++) {
            counter++;
            uint64_t *p = buf + next * WORDS;
            check_page(p, next, gens[next]);
            fill_page(p, next, ++gens[next]);
            if (++next == npages)
                next = 0;
        }
        written += todo;
        /* The sweep: the whole buffer checked every VERIFY_PERIOD_S. */
        uint64_t sweep_due = (uint64_t)((double)(t - t0) * sweep_pages_per_us);
        uint64_t sweep_todo = sweep_due > swept ? sweep_due - swept : 0;
        if (sweep_todo > npages)
            sweep_todo = npages, swept = sweep_due - npages;
        for (uint64_t i = 0; i < sweep_todo; i++) {
            check_page(buf + sweep * WORDS, sweep, gens[sweep]);
            if (++sweep == npages)
                sweep = 0;
        }
        swept += sweep_todo;
        if (t - period_start >= (uint64_t)period_ms * 1000) {
            printf("STAT boottime_us %llu pages_written %llu max_gap_us %llu "
                   "all_time_max_gap_us %llu verified %llu bad %llu\n",
                   (unsigned long long)t, (unsigned long long)written,
                   (unsigned long long)max_gap,
                   (unsigned long long)total_max_gap,
                   (unsigned long long)verified, (unsigned long long)bad);
            fflush(stdout);
            period_start = t;
            max_gap = 0;
        }
        usleep(1000);
    }
}
