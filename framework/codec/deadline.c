#include "codec/deadline.h"

#include <string.h>
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

/* "00" to "99": the formatter writes two digits per division (one per division cost
 * the client about 280 instructions per request for a 13-digit deadline). */
static const char digit_pairs[201] = "00010203040506070809"
                                     "10111213141516171819"
                                     "20212223242526272829"
                                     "30313233343536373839"
                                     "40414243444546474849"
                                     "50515253545556575859"
                                     "60616263646566676869"
                                     "70717273747576777879"
                                     "80818283848586878889"
                                     "90919293949596979899";

size_t
ksfi_deadline_format(int64_t ms, char out[21])
{
    uint64_t v = ms < 0 ? 0 : (uint64_t)ms; /* never negative: callers add to now */
    char tmp[20];                           /* UINT64_MAX has 20 digits */
    size_t i = sizeof tmp;                  /* written from the end */
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        i -= 2;
        memcpy(tmp + i, digit_pairs + 2 * r, 2);
    }
    if (v >= 10) {
        i -= 2;
        memcpy(tmp + i, digit_pairs + 2 * v, 2);
    } else {
        tmp[--i] = (char)('0' + v);
    }
    size_t n = sizeof tmp - i;
    memcpy(out, tmp + i, n);
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
