/*
 * The handler context (struct ksf_ctx): what a handler sees of one consumed message
 * (its topic, partition, offset, key, value, headers, trace and deadline) and the
 * reply it builds (value, raw bytes, key, extra headers, stream items, errors).
 *
 * The message's life (dispatching, retries, budgets, delivery reports, offsets) is
 * not here: it belongs to the dispatcher's record (record.h, message.c), which holds
 * the ctx. The ctx reaches its owner only through the ksfi_ctx_ops it was given, so
 * this file calls nothing above it.
 *
 * Locking: the view fields are written once before the handler runs and read-only
 * afterwards; the reply state is guarded by `lock`, because a deferred ctx is replied
 * to from any thread.
 */
#ifndef KSF_CTX_H
#define KSF_CTX_H

#include "base/log.h"
#include "codec/codec.h"
#include "kafka/produce.h"
#include "obs/trace.h"
#include "server/handler.h"

#include <pthread.h>

typedef enum ksfi_ctx_phase {
    KSFI_CTX_RUNNING,  /* the handler has not returned */
    KSFI_CTX_DEFERRED, /* ksf_ctx_defer was called; waiting for ksf_ctx_finish */
    KSFI_CTX_FINISHED, /* the handler's result has been processed */
} ksfi_ctx_phase;

/* What a ctx asks of its owner (the message lifecycle). Threads: any. */
typedef struct ksfi_ctx_ops {
    /* Produce one reply message @p m of @p ctx (m->delivery is the owner's to set);
     * @p error: an error reply (counted as one). Failures are logged and counted by
     * the owner; the error is returned for the handler. */
    ksf_err (*reply)(ksf_ctx *ctx, ksfi_kafka_out *m, bool error, ksf_errinfo *ei);
    /* ksf_ctx_finish of a deferred handler: act on its result (steals @p reply). */
    ksf_err (*finished)(ksf_ctx *ctx, ksf_err status, json_t *reply);
    /* pipeline: an error reply @p shape (borrowed) is about to be sent on a request;
     * the owner may keep it for its middleware afters instead. True when kept or
     * refused, with what the handler gets in *result; false: send it now. */
    bool (*keep_error)(ksf_ctx *ctx, const json_t *shape, ksf_err *result);
} ksfi_ctx_ops;

struct ksf_ctx {
    /* ---- the owner, set by ksfi_ctx_init ---- */
    const ksfi_ctx_ops *ops;
    const ksfi_logger *log;
    size_t max_bytes; /* message.max.bytes: the largest reply value */
    /* ---- the handler's view: written before the handler runs, read-only after
     * (ksfi_ctx_forget_message clears the message's part once the request settled) */
    const char *topic; /* borrowed from the record (a name that outlives its message) */
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* -1: not available */
    const void *key, *value;
    size_t key_len, value_len;
    /* The message's headers as views: names and values point into the consumed
     * message (valid while its record holds it); the array itself is `hdrs_cap`
     * entries kept across reuse of the record (message.c's pool). */
    ksfi_header *hdrs;
    size_t nhdrs;
    size_t hdrs_cap;
    ksfi_request_meta meta;
    /* NUL-terminated copies of the request headers the accessors hand out as text,
     * both in `text`, a buffer of `text_cap` bytes kept across reuse like `hdrs`. */
    char *correlation_id;
    char *reply_topic;
    char *text;
    size_t text_cap;
    /* The final reply's encoded value, `enc_cap` bytes kept across reuse like `hdrs`
     * (written only by the thread that claimed the reply's end, or, before the end,
     * under `lock` by ksf_ctx_set_reply_raw). */
    char *enc;
    size_t enc_cap;
    ksfi_scope scope; /* trace position and deadline, read from the headers */
    const ksfi_handler *handler;
    bool is_event;
    /* pipeline: the payload as the middleware befores left it, and whether the
     * handler's call is under way (ksf_ctx_data, ksf_ctx_unpack). Set by the owner
     * around each call, on the thread running it. */
    const json_t *data;
    bool in_call;
    /* A raw handler's call (ksfi_handler.raw): the value is not decoded yet, and
     * ksf_ctx_data / ksf_ctx_unpack / a before decode it on first use into `decoded`
     * (owned; `data` then points at it until a before replaces it). The owner drops
     * both after the call (ksfi_ctx_drop_decoded). Same thread as `data`. */
    bool lazy;
    json_t *decoded;
    /* ---- reply state, guarded by lock ---- */
    pthread_mutex_t lock;
    ksfi_ctx_phase phase;
    bool deferred; /* ksf_ctx_defer was called (cleared for a re-run only) */
    bool ended;    /* the final (or error) reply was sent: later replies are refused */
    /* ksf_ctx_finish came while the handler still ran (e.g. from the thread it handed
     * the work to, before `return ksf_ctx_defer(ctx)`): its result, acted on when the
     * handler returns. */
    bool early;
    ksf_err early_status;
    json_t *early_reply;
    /* ksf_ctx_set_reply_raw's bytes: the first raw_len bytes of `enc`. */
    size_t raw_len;
    bool has_raw;
    void *reply_key;
    size_t reply_key_len;
    ksfi_header *extra; /* the user's extra reply headers, names and values owned */
    size_t nextra;
    char *error_text;  /* an event handler's last error (for the dead-letter header) */
    bool budget_fired; /* the time budget's error reply was sent */
    /* pipeline: ksf_ctx_stream values sent, for the middleware afters' outcome. */
    atomic_uint_least64_t streamed;
};

/* Set up @p ctx (zeroed by the caller, except the reusable buffers `hdrs`, `text` and
 * `enc` with their capacities, which may be kept from a previous message) for an
 * owner. */
void ksfi_ctx_init(ksf_ctx *ctx, const ksfi_ctx_ops *ops, const ksfi_logger *log,
                   size_t max_bytes);

/* Free what @p ctx owns for its message (the reply state, the trace scope, the lock),
 * keeping the reusable buffers (`hdrs`, `text`, `enc`) for the next message; the caller
 * then zeroes everything else before ksfi_ctx_init, or frees the buffers with the
 * record that holds the ctx (message.c). */
void ksfi_ctx_reset(ksf_ctx *ctx);

/*
 * True once a request is settled: its handler returned (not deferred, or finished
 * since), its result was acted on and its final or error reply was produced. Nothing
 * then reads the request's message through @p ctx: no reply can follow, a time budget
 * finds the reply ended, and handlers may not keep the ctx past that point.
 */
bool ksfi_ctx_settled(ksf_ctx *ctx);

/*
 * Forget @p ctx's views into the request's message (value, key, headers and what was
 * read from them: the request meta, the trace headers) so that the owner may free the
 * message before the ctx itself goes (ksfi_ctx_settled first). The text copies
 * (correlation id, reply topic), the handler and the reply state stay.
 */
void ksfi_ctx_forget_message(ksf_ctx *ctx);

/* Copy the correlation id (@p id_len bytes; text, already converted when binary) and
 * the reply topic (@p topic_len bytes; NULL for none) into the ctx's text buffer, and
 * point ctx->correlation_id / ctx->reply_topic at them (NULL when empty). Errors:
 * KSF_ENOMEM. */
ksf_err ksfi_ctx_set_text(ksf_ctx *ctx, const char *id, size_t id_len, const char *topic,
                          size_t topic_len);

/* A raw handler's payload, on first use (ctx->lazy): decode the value once into
 * ctx->decoded and point ctx->data at it (NULL for a binary value). No-op when not
 * lazy. Errors: KSF_ENOMEM (logged; still lazy, so a later call tries again). */
ksf_err ksfi_ctx_decode(ksf_ctx *ctx);

/* After a raw handler's call: forget the payload and free what ksfi_ctx_decode made. */
void ksfi_ctx_drop_decoded(ksf_ctx *ctx);

/* Claim the right to send the final reply; false when it was already sent. */
bool ksfi_ctx_claim_end(ksf_ctx *ctx);

/* Claim the time budget's error reply: false when the reply already ended. */
bool ksfi_ctx_claim_budget(ksf_ctx *ctx);

/* Send @p error (borrowed) as the final reply: null value, kafka_nest-err, disposed.
 * The caller claimed the end. */
ksf_err ksfi_ctx_send_error(ksf_ctx *ctx, const json_t *error, bool disposed);

/* Send {"status":"error","message":<text>} as the final reply (end claimed). */
void ksfi_ctx_send_error_text(ksf_ctx *ctx, const char *text);

/* Send the handler's final reply (@p reply borrowed; raw bytes win), unless ended;
 * @p claimed: the caller already claimed the end (ksfi_ctx_returned's `claimed`). */
void ksfi_ctx_send_final(ksf_ctx *ctx, const json_t *reply, bool claimed);

/* The handler's result as seen when it returned (ksfi_ctx_returned) ... */
typedef struct ksfi_ctx_outcome {
    bool deferred; /* ksf_ctx_defer was called */
    bool early;    /* ksf_ctx_finish came before the return */
    ksf_err early_status;
    json_t *early_reply; /* owned by the caller now */
    /* A final result (neither early nor deferred) was marked finished in the same
     * critical section, as ksfi_ctx_mark_finished does (`ended`, `late` as it reports
     * them), and with `claim` the end was claimed for its reply (`claimed`): one lock
     * round where a synchronous handler's return took three. */
    bool finished, ended, late, claimed;
} ksfi_ctx_outcome;

/* ... taken under the lock. @p status is what the handler returned; @p claim asks to
 * claim the end for the reply too (nothing may change the result any more: no
 * middleware afters, not an event). */
ksfi_ctx_outcome ksfi_ctx_returned(ksf_ctx *ctx, ksf_err status, bool claim);

/* Mark the handler's result processed. *ended: a final reply was already sent;
 * *late: the budget's error reply was. Returns false when it already was. */
bool ksfi_ctx_mark_finished(ksf_ctx *ctx, bool *ended, bool *late);

/* Ready @p ctx for another run of its handler (an event retry). */
void ksfi_ctx_rearm(ksf_ctx *ctx);

/* The event handler's last error text (a copy, ksfi_malloc'd; NULL when none). */
char *ksfi_ctx_error_text(ksf_ctx *ctx);

/* Record @p status as the event handler's error unless it reported one itself. */
void ksfi_ctx_note_error(ksf_ctx *ctx, ksf_err status);

#endif
