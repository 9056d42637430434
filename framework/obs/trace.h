/*
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) for ksf messages, and the
 * per-message "scope" a handler runs in: the message's trace position plus its
 * deadline (deadline.h), which a client sending from the handler's thread continues.
 *
 * Wire: `traceparent` = "00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>",
 * lowercase; `tracestate` = the vendor list, copied along unchanged.
 */
#ifndef KSF_TRACE_H
#define KSF_TRACE_H

#include "base/log.h"
#include "codec/codec.h"

#include <stdatomic.h>

/* The header names (not kafka_*: NestJS neither reserves nor interprets them). */
#define KSFI_HDR_TRACEPARENT "traceparent"
#define KSFI_HDR_TRACESTATE "tracestate"

/* "00-" + 32 + "-" + 16 + "-" + 2 */
#define KSFI_TRACEPARENT_LEN 55
/* The spec lets vendors drop a tracestate longer than 512 characters. */
#define KSFI_TRACESTATE_MAX 512
/* The spec's member limit for tracestate. */
#define KSFI_TRACESTATE_MEMBERS_MAX 32
/* Trace headers a message gets on top of the protocol's: traceparent, tracestate. */
#define KSFI_TRACE_HEADERS_MAX 2

/* A parsed traceparent. */
typedef struct ksfi_traceparent {
    uint8_t trace_id[16];
    uint8_t span_id[8]; /* the header's parent-id: the span that sent the message */
    uint8_t flags;      /* bit 0: sampled */
} ksfi_traceparent;

/*
 * Parse a traceparent header value as the spec's section 3.2 asks: version 00 must be
 * exactly 55 characters; a later version (not ff) may be longer when character 55 is
 * '-' and its first 55 parse as version 00 would. Hex must be lowercase; an all-zero
 * trace-id or parent-id is invalid. Returns false for anything invalid.
 */
bool ksfi_traceparent_parse(const void *value, size_t len, ksfi_traceparent *out);

/* Format @p tp as version 00 ("00-...-...-..", 55 characters + NUL). */
void ksfi_traceparent_format(const ksfi_traceparent *tp,
                             char out[KSFI_TRACEPARENT_LEN + 1]);

/* Lowercase hex of @p len bytes into @p out (2 * len + 1 bytes). */
void ksfi_hex(const uint8_t *bytes, size_t len, char *out);

/*
 * A tracestate value worth carrying: 1..512 printable ASCII characters (0x20-0x7e),
 * at most 32 comma-separated members, each "key=value" with a non-empty key. Returns
 * false otherwise (the spec lets a receiver drop a tracestate it cannot parse).
 */
bool ksfi_tracestate_valid(const void *value, size_t len);

/* A new trace: random trace-id and parent-id (getrandom(2), never all zero), sampled. */
void ksfi_trace_new(ksfi_traceparent *out);

/* The next hop of @p parent's trace: same trace-id and flags, a new random span id. */
void ksfi_trace_child(const ksfi_traceparent *parent, ksfi_traceparent *out);

/*
 * Where a message sits in its trace and how long its sender waits: read from its
 * headers when it arrives (ksfi_scope_init), and current on the handler's thread while
 * the handler runs (ksfi_scope_enter), so sends from there continue the trace and
 * inherit the deadline.
 *
 * The deadline is read at once (it decides whether the handler runs); the trace part
 * is worked out on first use (ksfi_scope_resolve: the traceparent parsed, a new random
 * span id, the tracestate copied, ~1.1k instructions), which a reply with its trace
 * headers, a ksf_ctx_trace* accessor or a traced send from the handler asks for. A
 * handler that replies without trace headers (trace.headers=false), or an event
 * handler, and asks for none of it pays nothing.
 *
 * Threads: resolving is once-only and safe from any thread (a deferred handler's ctx
 * may be read by several); the fields below `resolved` are valid after it, read-only.
 */
typedef struct ksfi_scope {
    int64_t deadline_ms; /* absolute, Unix epoch ms; 0: none */
    bool reply_headers;  /* replies carry traceparent/tracestate (trace.headers) */
    /* The incoming headers' values, borrowed from the message (valid while it is held):
     * NULL with has_* false when absent. */
    const void *in_tp, *in_ts;
    size_t in_tp_len, in_ts_len;
    bool has_tp, has_ts;
    const ksfi_logger *lg; /* borrowed, for resolve's debug lines */
    const char *where;     /* borrowed, names the message in them */
    atomic_int resolved;   /* 0 not yet, 1 being resolved, 2 resolved */
    /* ---- valid once resolved ---- */
    ksfi_traceparent span; /* the receiving span: the incoming trace-id, a new span id */
    bool has_parent;       /* a valid traceparent arrived (else a new trace began) */
    uint8_t parent_id[8];  /* its parent-id when has_parent */
    char *tracestate;      /* owned copy, NULL when none (or dropped as invalid) */
    char traceparent[KSFI_TRACEPARENT_LEN + 1]; /* span, formatted */
    char trace_id[33];
    char span_id[17];
    char parent_span_id[17]; /* "" when !has_parent */
} ksfi_scope;

/*
 * Read ksf_deadline from @p hdrs and note where traceparent and tracestate are (the
 * last of each wins); @p hdrs' values must outlive @p s, @p lg and @p where too. An
 * invalid deadline is treated as absent and logged at debug, naming @p where.
 * @p reply_headers: whether ksfi_scope_reply_headers writes any (trace.headers).
 * Never fails.
 */
void ksfi_scope_init(ksfi_scope *s, const ksfi_header *hdrs, size_t n,
                     const ksfi_logger *lg, const char *where, bool reply_headers);

/*
 * Work out @p s's trace part once (later calls return at once): the incoming
 * traceparent continued with a new span id, or a new trace when it is absent or
 * invalid (logged at debug); the tracestate copied when valid and with a valid
 * traceparent (an out-of-memory copy is dropped with a log line). Returns @p s. The
 * scope is logically const: this fills a cache. Threads: any.
 */
const ksfi_scope *ksfi_scope_resolve(const ksfi_scope *s);

/* Forget the incoming traceparent and tracestate values @p s points at, before the
 * message holding them is freed: a scope resolved already keeps what it resolved; one
 * resolved later begins a new trace, as for a message without them. */
void ksfi_scope_forget_headers(ksfi_scope *s);

/* Free what ksfi_scope_init and ksfi_scope_resolve allocated. */
void ksfi_scope_clear(ksfi_scope *s);

/*
 * The trace headers of a reply in @p s's span (traceparent, then tracestate if any;
 * none when trace.headers is false, without resolving). Values borrow @p s. Returns
 * the count written.
 */
size_t ksfi_scope_reply_headers(const ksfi_scope *s,
                                ksfi_header out[KSFI_TRACE_HEADERS_MAX]);

/* Make @p s (borrowed) the calling thread's current scope; NULL clears it. */
void ksfi_scope_enter(const ksfi_scope *s);

/* The calling thread's current scope, or NULL outside handlers. */
const ksfi_scope *ksfi_scope_current(void);

/*
 * The trace headers of an outgoing request or event. @p traceparent / @p tracestate
 * are the caller's own (ksf_send_opts), sent verbatim after validation; without them
 * the current scope's trace continues (same trace-id, new span id, its tracestate), or
 * a new trace starts. @p tp_buf holds the formatted traceparent the result borrows.
 * Errors: KSF_EINVAL for an invalid caller traceparent or tracestate, or a tracestate
 * without a traceparent.
 */
ksf_err ksfi_trace_outgoing(const char *traceparent, const char *tracestate,
                            char tp_buf[KSFI_TRACEPARENT_LEN + 1],
                            ksfi_header out[KSFI_TRACE_HEADERS_MAX], size_t *count,
                            ksf_errinfo *ei);

/*
 * The timeout and deadline of an outgoing request: @p timeout_ms (> 0), shortened to
 * the current handler's remaining time (ksfi_scope_current) when that is less
 * (deadline propagation). *deadline_out gets wall now + the result. Errors:
 * KSF_ETIMEDOUT when the handler's own deadline has already passed (sending would only
 * make work nobody waits for).
 */
ksf_err ksfi_deadline_outgoing(int timeout_ms, int *timeout_out, int64_t *deadline_out,
                               ksf_errinfo *ei);

#endif
