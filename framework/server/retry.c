/* Event retries' decisions: pure, unit-tested without a broker (tests/test_retry.c). */
#include "server/retry.h"

#include <stdlib.h>
#include <time.h>

int
ksfi_retry_backoff_ms(int backoff_ms, int max_ms, int attempt)
{
    long long d = backoff_ms;
    for (int i = 1; i < attempt && d < max_ms; i++) {
        d *= 2;
    }
    if (d > max_ms) {
        d = max_ms;
    }
    /* Jitter needs no quality, only spread; rand_r on a per-call seed keeps it
     * thread-safe without shared state. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned seed = (unsigned)ts.tv_nsec ^ (unsigned)attempt * 2654435761u;
    long long half = d / 2;
    return (int)(d - (half > 0 ? rand_r(&seed) % (half + 1) : 0));
}

ksfi_retry_step
ksfi_retry_next(const ksfi_policy *pol, int attempts, int *delay_ms)
{
    if (attempts <= pol->retries) {
        *delay_ms = ksfi_retry_backoff_ms(pol->backoff_ms, pol->backoff_max_ms, attempts);
        return KSFI_RETRY_STEP_RERUN;
    }
    *delay_ms = 0;
    return pol->dlq ? KSFI_RETRY_STEP_DEAD_LETTER : KSFI_RETRY_STEP_GIVE_UP;
}
