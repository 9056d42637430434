/*
 * Clocks and latency figures shared by `ksf bench` and the programs in bench/ (the
 * floor, goodput, kafka_reset), header-only so that bench/ programs linking only
 * librdkafka can use it. One definition keeps the floor's JSON line and ksf bench's
 * comparable: the same clocks, the same nearest-rank percentiles, the same CPU and
 * memory figures.
 */
#ifndef KSF_TOOLS_MEASURE_H
#define KSF_TOOLS_MEASURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>

/* bench/callgrind counts the instructions of the run alone: it starts the client (ksf
 * bench, bench/floor) with instrumentation off and CALLGRIND_START_INSTRUMENTATION turns
 * it on (for every thread) just before the first request. Outside valgrind, or without
 * valgrind's headers, it is a few no-op instructions or nothing. */
#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#endif
#endif
#ifndef CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_START_INSTRUMENTATION
#endif

/* CLOCK_MONOTONIC in nanoseconds: for durations. */
static inline int64_t
ksf_tool_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CLOCK_MONOTONIC in milliseconds: for deadlines. */
static inline int64_t
ksf_tool_mono_ms(void)
{
    return ksf_tool_mono_ns() / 1000000;
}

/* The wall clock in microseconds since the epoch: comparable across processes. */
static inline int64_t
ksf_tool_real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Sleep @p ms milliseconds (a signal may end it early). */
static inline void
ksf_tool_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* User plus system CPU time of this process so far, in milliseconds. */
static inline double
ksf_tool_cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/* This process's peak resident set so far, in KiB (Linux reports ru_maxrss in KiB).
 * Reported by the process itself: bench/run cannot read it once the process exited. */
static inline long
ksf_tool_peak_rss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
}

/* qsort comparator for uint32_t latencies. */
static inline int
ksf_tool_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The nearest-rank percentile @p q (0..1] of @p n sorted latencies; 0 when n is 0. */
static inline uint32_t
ksf_tool_percentile(const uint32_t *sorted, size_t n, double q)
{
    if (n == 0) {
        return 0;
    }
    size_t rank = (size_t)(q * (double)n + 0.999999);
    rank = rank < 1 ? 1 : rank > n ? n : rank;
    return sorted[rank - 1];
}

#endif
