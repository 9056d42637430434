/*
 * Request deadlines end to end. A client writes the absolute time its caller stops
 * waiting into the `ksf_deadline` header (ASCII decimal Unix epoch milliseconds); a
 * server skips work whose deadline passed before a worker got to it, and a handler
 * sending on from its thread passes the rest of its time on. Wall-clock based, so
 * hosts need synchronised clocks (NTP); server.deadline.skew.ms absorbs the rest.
 */
#ifndef KSF_DEADLINE_H
#define KSF_DEADLINE_H

#include <ksf/ksf.h>

#include <stdatomic.h>

/* Not kafka_*: that prefix is NestJS's; NestJS passes any other header through. */
#define KSFI_HDR_DEADLINE "ksf_deadline"

/* Deadlines outside [2000-01-01, 2100-01-01) are absurd: a unit or clock mix-up. */
#define KSFI_DEADLINE_MIN_MS 946684800000LL
#define KSFI_DEADLINE_MAX_MS 4102444800000LL

/* The default server.deadline.skew.ms (docs/deadlines.md says why). */
#define KSFI_DEADLINE_SKEW_DEFAULT_MS 1000

/* The first word of the error a shed request gets (docs/deadlines.md, "Shedding"),
 * so callers can tell overload from a handler's own errors. */
#define KSFI_OVERLOADED "overloaded"

/* Milliseconds since the Unix epoch (CLOCK_REALTIME): what ksf_deadline holds. */
int64_t ksfi_wall_ms(void);

/*
 * Parse a ksf_deadline value: 1..19 ASCII digits whose value lies in
 * [KSFI_DEADLINE_MIN_MS, KSFI_DEADLINE_MAX_MS). Returns false otherwise.
 */
bool ksfi_deadline_parse(const void *value, size_t len, int64_t *out);

/* Format @p ms as decimal digits; returns the length (out holds >= 21 bytes). */
size_t ksfi_deadline_format(int64_t ms, char out[21]);

/*
 * The timeout and deadline of an outgoing request: @p timeout_ms (> 0), shortened to
 * the current handler's remaining time when that is less (deadline propagation).
 * *deadline_out gets wall now + the result. Errors: KSF_ETIMEDOUT when the handler's
 * own deadline has already passed (sending would only make work nobody waits for).
 */
ksf_err ksfi_deadline_outgoing(int timeout_ms, int *timeout_out, int64_t *deadline_out,
                               ksf_errinfo *ei);

/* At most one log line per interval, counting what it held back. */
typedef struct ksfi_ratelimit {
    _Atomic int64_t next_ms;    /* monotonic ms before which lines are held */
    atomic_uint_least64_t held; /* lines held back since the last one */
} ksfi_ratelimit;

/*
 * True when a line may be logged now (then *held gets how many were held back since
 * the previous one); false when it must be held (and is counted).
 */
bool ksfi_ratelimit_take(ksfi_ratelimit *rl, int interval_ms, uint64_t *held);

/*
 * Server side (ctx.c): true when @p ctx carries a deadline that passed more than
 * server.deadline.skew.ms ago. The skip is counted in `expired` and logged at debug
 * (at most once a second per server).
 */
bool ksfi_ctx_expired(ksf_ctx *ctx);

#endif
