/*
 * The handler context (struct ksf_ctx): one consumed message on its way through a
 * handler to its replies. A context is complete when its handler finished (or the
 * deferred finish came) and every reply it produced was acknowledged; completion is
 * counted in `pending`, and at zero the dispatcher may store the offset.
 */
#ifndef KSF_CTX_H
#define KSF_CTX_H

#include "kafka/kafka.h"
#include "obs/trace.h"
#include "server/pipeline.h"

#include <pthread.h>
#include <stdatomic.h>

struct ksfi_part;
struct ksfi_handler;

typedef enum ksfi_ctx_phase {
    KSFI_CTX_RUNNING,  /* the handler has not returned */
    KSFI_CTX_DEFERRED, /* ksf_ctx_defer was called; waiting for ksf_ctx_finish */
    KSFI_CTX_FINISHED, /* the handler's result has been processed */
} ksfi_ctx_phase;

struct ksf_ctx {
    ksf_server *srv;
    rd_kafka_message_t *msg;
    const char *topic; /* borrowed from msg */
    ksfi_header *hdrs;
    size_t nhdrs;
    ksfi_request_meta meta;
    char *correlation_id; /* NUL-terminated copies of the request headers */
    char *reply_topic;
    ksfi_scope scope; /* trace position and deadline, read from the headers */
    const struct ksfi_handler *handler;
    bool is_event;
    uint64_t started_us; /* when the handler was called: its latency metric */
    /* Reply state; guarded by lock because a deferred ctx is used from any thread. */
    pthread_mutex_t lock;
    ksfi_ctx_phase phase;
    bool deferred; /* ksf_ctx_defer was called (never cleared) */
    bool ended;    /* the final (or error) reply was sent: later replies are refused */
    /* ksf_ctx_finish came while the handler still ran (e.g. from the thread it handed
     * the work to, before `return ksf_ctx_defer(ctx)`): its result, acted on when the
     * handler returns. */
    bool early;
    ksf_err early_status;
    json_t *early_reply;
    void *raw;
    size_t raw_len;
    bool has_raw;
    void *key;
    size_t key_len;
    ksfi_header *extra; /* the user's extra reply headers, names and values owned */
    size_t nextra;
    /* References: the handler (until it returns or finishes), the worker running it,
     * and one per reply in flight. At zero the context is complete. */
    atomic_int pending;
    /* The dispatcher's bookkeeping, guarded by its lock. */
    struct ksfi_dispatch *dispatch;
    struct ksfi_part *part;
    uint64_t epoch;
    ksf_ctx *next;
    bool started;
    bool done;
    /* Isolation and retries (dispatch.c, retry.c), guarded by the dispatcher's lock. */
    bool slot;      /* holds one of its pattern's concurrency slots */
    bool holding;   /* holds its partition: a failed event awaiting its retry */
    bool throttled; /* waited for a slot (counted once) */
    bool parked; /* deferred after its handler returned: counts in server.deferred.max */
    bool handler_done; /* ksfi_dispatch_handler_done ran */
    bool abandoned;    /* a retry given up at revoke or stop: never stored */
    int retry_state;   /* KSFI_RETRY_* of dispatch.h */
    int retry_kind;    /* what to do when due (retry.h) */
    int64_t retry_at_ms;
    ksf_ctx *retry_next;  /* the partition's list of due retries */
    int64_t budget_at_ms; /* the time budget's deadline (monotonic ms); 0: none */
    int budget_ms;
    bool budget_sent; /* the dispatcher fired the budget (or found it moot) */
    /* retry.c's count of handler runs, touched only by the thread finishing a run
     * (runs of one context never overlap). */
    int attempts;
    /* Guarded by lock: the event handler's last error (for the dead-letter header)
     * and whether the time-budget error reply was sent. */
    char *error_text;
    bool budget_fired;
    /* pipeline: the message's walk through its middleware chain (pipeline.h). */
    ksfi_pipeline_ctx pl;
};

/* Wrap a consumed message (ownership moves on success). Errors: KSF_ENOMEM. */
ksf_err ksfi_ctx_new(ksf_server *srv, rd_kafka_message_t *msg, ksf_ctx **out);

/* Run the message through its handler (a worker thread) and release the worker's
 * and (unless deferred) the handler's references. */
void ksfi_ctx_run(ksf_ctx *ctx);

/* Drop one reference; the last one tells the dispatcher the context is complete. */
void ksfi_ctx_release(ksf_ctx *ctx);

/* A reply's delivery report arrived (producer poll thread). */
void ksfi_ctx_delivered(ksf_ctx *ctx, rd_kafka_resp_err_t err, const char *topic);

/* The request's time budget ran out (the dispatcher's watch thread, holding a
 * reference): send the budget error unless the reply already ended. */
void ksfi_ctx_budget_expired(ksf_ctx *ctx);

/* Run the handler of an already prepared context again (an event retry; a worker). */
void ksfi_ctx_rerun(ksf_ctx *ctx);

/* Free the context and its message (the dispatcher, once complete or dropped). */
void ksfi_ctx_free(ksf_ctx *ctx);

#endif
