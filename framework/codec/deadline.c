#include "codec/deadline.h"

#include <time.h>

int64_t
ksfi_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool
ksfi_deadline_parse(const void *value, size_t len, int64_t *out)
{
    const unsigned char *v = value;
    uint64_t n = 0; /* 19 decimal digits fit: no overflow test per digit */
    if (!v || len == 0 || len > 19) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned)v[i] - '0'; /* wraps above 9 for anything below '0' */
        if (d > 9) {
            return false;
        }
        n = n * 10 + d;
    }
    if (n < (uint64_t)KSFI_DEADLINE_MIN_MS || n >= (uint64_t)KSFI_DEADLINE_MAX_MS) {
        return false;
    }
    *out = (int64_t)n;
    return true;
}

size_t
ksfi_deadline_format(int64_t ms, char out[21])
{
    char rev[21];
    size_t n = 0;
    uint64_t v = ms < 0 ? 0 : (uint64_t)ms; /* never negative: callers add to now */
    do {
        rev[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) {
        out[i] = rev[n - 1 - i];
    }
    out[n] = '\0';
    return n;
}

bool
ksfi_deadline_passed(int64_t deadline_ms, int64_t now_ms, int skew_ms, int64_t *late_ms)
{
    if (!deadline_ms) {
        return false;
    }
    int64_t late = now_ms - deadline_ms;
    if (late <= skew_ms) {
        return false;
    }
    *late_ms = late;
    return true;
}
