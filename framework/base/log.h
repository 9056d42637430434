/*
 * Internal logging: formats a record and hands it to the configured sinks, if any: the
 * plain one (message with the fields appended as ` key=value`) and the structured one
 * (message and fields apart).
 */
#ifndef KSF_LOG_H
#define KSF_LOG_H

#include <ksf/ksf.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct ksfi_logger {
    ksf_log_fn fn;
    void *user;
    ksf_log_level max_level;
    ksf_log_structured_fn sfn;
    void *suser;
    ksf_log_level smax_level;
} ksfi_logger;

/* The most fields one record carries; extra ones are dropped. */
#define KSFI_LOG_FIELDS_MAX 16

/* True when a record at @p level would reach a sink: skip building costly fields. */
bool ksfi_log_enabled(const ksfi_logger *lg, ksf_log_level level);

/* Log a printf-formatted message (cheap no-op when the level is filtered out). */
void ksfi_log(const ksfi_logger *lg, ksf_log_level level, const char *component,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* As ksfi_log, with @p n key=value fields (borrowed for the call). */
void ksfi_logkv(const ksfi_logger *lg, ksf_log_level level, const char *component,
                const ksf_log_field *fields, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/*
 * Number-to-text for fields without a heap allocation: KSFI_LOG_NUM(buf, v) prints
 * @p v (any integer, as long long) into the char array @p buf and yields it.
 */
const char *ksfi_log_num(char *buf, size_t size, long long v);
#define KSFI_LOG_NUM(buf, v) ksfi_log_num((buf), sizeof(buf), (long long)(v))

/* ---- rate-limited lines ----------------------------------------------------------
 * A line logged per message (malformed input, a refused reply topic, no handler) is
 * what a hostile or broken producer controls: 10,000 bad messages made 3.3 MB of log.
 * A limiter lets at most `burst` lines per key through per window of `interval_ms`;
 * the first line of a later window is preceded by one saying how many the earlier
 * windows held back, and ksfi_log_limiter_flush says it for what is still held. */

/* Distinct keys one limiter tracks; a further key shares the last slot. */
#define KSFI_LOG_LIMITER_KEYS 8

typedef struct ksfi_log_limiter_slot {
    const char *key; /* static string, compared by content */
    int64_t window_start;
    int count;           /* lines let through in the window */
    uint64_t suppressed; /* lines held back since the last report */
} ksfi_log_limiter_slot;

typedef struct ksfi_log_limiter {
    pthread_mutex_t lock;
    int64_t (*clock)(void); /* milliseconds; injected by tests */
    int burst;
    int interval_ms;
    ksfi_log_limiter_slot slots[KSFI_LOG_LIMITER_KEYS];
} ksfi_log_limiter;

/* Set up @p l: @p burst lines per key per @p interval_ms; @p clock NULL: the
 * monotonic clock. */
void ksfi_log_limiter_init(ksfi_log_limiter *l, int burst, int interval_ms,
                           int64_t (*clock)(void));
void ksfi_log_limiter_destroy(ksfi_log_limiter *l);

/*
 * As ksfi_logkv, for a line of kind @p key (a static string, e.g. "malformed"): logged
 * when the key has room in the current window, else counted. When it is logged and
 * lines of that key were held back, a line "<key>: N similar line(s) suppressed in the
 * last <ms> ms" at the same level comes first. Returns true when the line was logged.
 * Threads: any.
 */
bool ksfi_logkv_limited(const ksfi_logger *lg, ksfi_log_limiter *l, const char *key,
                        ksf_log_level level, const char *component,
                        const ksf_log_field *fields, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

/* Log, at @p level, how many lines of each key are still held back, and reset them
 * (at stop, so a burst's count is never lost). */
void ksfi_log_limiter_flush(const ksfi_logger *lg, ksfi_log_limiter *l,
                            ksf_log_level level, const char *component);

/* At most one log line per interval, counting what it held back (a single kind of
 * line; ksfi_log_limiter is for several). */
typedef struct ksfi_ratelimit {
    _Atomic int64_t next_ms;    /* monotonic ms before which lines are held */
    atomic_uint_least64_t held; /* lines held back since the last one */
} ksfi_ratelimit;

/*
 * True when a line may be logged now (then *held gets how many were held back since
 * the previous one); false when it must be held (and is counted). Threads: any.
 */
bool ksfi_ratelimit_take(ksfi_ratelimit *rl, int interval_ms, uint64_t *held);

#endif
