/*
 * The ksf_deadline header as pure functions: a client writes the absolute time its
 * caller stops waiting (ASCII decimal Unix epoch milliseconds); servers and handlers
 * read it (docs/deadlines.md). Wall-clock based, so hosts need synchronised clocks
 * (NTP); server.deadline.skew.ms absorbs the rest. What a server does with a passed
 * deadline is the server's (server/message.c); passing the rest of a handler's time on
 * is the trace scope's (obs/trace.h, ksfi_deadline_outgoing).
 */
#ifndef KSF_CODEC_DEADLINE_H
#define KSF_CODEC_DEADLINE_H

#include <ksf/ksf.h>

#include <stdint.h>

/* Not kafka_*: that prefix is NestJS's; NestJS passes any other header through. */
#define KSFI_HDR_DEADLINE "ksf_deadline"

/* Deadlines outside [2000-01-01, 2100-01-01) are absurd: a unit or clock mix-up. */
#define KSFI_DEADLINE_MIN_MS 946684800000LL
#define KSFI_DEADLINE_MAX_MS 4102444800000LL

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
 * How far past @p deadline_ms (epoch ms; 0: none) @p now_ms is, when that is more than
 * @p skew_ms: then true and *late_ms gets it. False for no deadline or one within skew.
 */
bool ksfi_deadline_passed(int64_t deadline_ms, int64_t now_ms, int skew_ms,
                          int64_t *late_ms);

#endif
