/*
 * The one clock for deadlines inside libksf: milliseconds on CLOCK_MONOTONIC, which
 * wall-clock changes do not move.
 */
#ifndef KSF_CLOCK_H
#define KSF_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t
ksfi_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
