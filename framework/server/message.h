/*
 * One message's life on the server: consumed -> record (record.h) -> dispatcher queue
 * -> headers read, checks (malformed, deadline passed, reply topic refused, shed, no
 * handler) -> the handler runs with its ctx -> replies through the reply sink ->
 * delivery reports -> complete -> the dispatcher stores the offset. Event failures
 * take the retry/dead-letter road (retry.h decides, this file acts).
 *
 * This is the single owner of that life: the ctx (ctx.h) only builds replies and
 * asks this file through its ops; the dispatcher (dispatch.h) only orders records and
 * calls this file through its ops; the server (server.h) only creates records and
 * provides the environment below, including the reply sink.
 */
#ifndef KSF_MESSAGE_H
#define KSF_MESSAGE_H

#include "base/config.h"
#include "base/log.h"
#include "kafka/consumer.h"
#include "server/dispatch.h"
#include "server/record.h"
#include "server/reply_policy.h"
#include "server/reply_sink.h"

#include <pthread.h>
#include <stdatomic.h>

/*
 * The counters behind ksf_server_stats, each named as its ksf_server_stats field: the
 * one list that declares them and that ksf_server_get_stats copies (throttled is the
 * dispatcher's, not a counter here).
 */
#define KSFI_SERVER_COUNTERS(X)                                                          \
    X(requests)                                                                          \
    X(events)                                                                            \
    X(replies)                                                                           \
    X(errors)                                                                            \
    X(no_handler)                                                                        \
    X(malformed)                                                                         \
    X(reply_failures)                                                                    \
    X(expired)                                                                           \
    X(shed)                                                                              \
    /* isolation.md and retries.md */                                                    \
    X(budget_exceeded)                                                                   \
    X(late_discarded)                                                                    \
    X(event_retries)                                                                     \
    X(dead_lettered)                                                                     \
    X(dlq_failures)                                                                      \
    /* server.md, "Offsets out of range" */                                              \
    X(offset_resets)                                                                     \
    X(offset_reset_skipped)                                                              \
    /* security.md, "What a caller can make a server do" */                              \
    X(reply_refused)                                                                     \
    /* pipeline.md: messages a middleware's before refused (guards, pipes) */            \
    X(refused)

/* Updated from any thread. */
typedef struct ksfi_server_counters {
#define KSFI_COUNTER_FIELD(name) atomic_uint_least64_t name;
    KSFI_SERVER_COUNTERS(KSFI_COUNTER_FIELD)
#undef KSFI_COUNTER_FIELD
} ksfi_server_counters;

/*
 * Finished records kept for the next messages (message.c): a record and its ctx's
 * header array, text and reply-encoding buffers are allocated once and reused, instead
 * of about five allocations and frees per message. Records come back from whichever
 * thread completes them (a delivery report, a worker, the consumer dropping one) and
 * leave on the consumer thread, hence the lock; at most KSFI_MSG_POOL_MAX are kept. Every
 * field is the pool's own: ksfi_msg_pool_init / ksfi_msg_pool_free.
 */
typedef struct ksfi_msg_pool {
    pthread_mutex_t lock;
    struct ksfi_record *free; /* linked through `next` */
    size_t count;
    /* The consumer thread's own list, between ksfi_msg_pool_enter and _leave: it takes
     * every record, and in inline mode (server.workers=0) also gives them back, without
     * a round of `lock` each. Only that thread touches it. */
    struct ksfi_record *own_free;
    size_t own_count;
} ksfi_msg_pool;

/* Records the pool keeps at most (more in flight are freed when they finish), the
 * consumer thread's own list included: it keeps up to KSFI_MSG_POOL_OWN_MAX of them,
 * the shared list the rest. */
#define KSFI_MSG_POOL_MAX 1024
#define KSFI_MSG_POOL_OWN_MAX 256

/*
 * What the message lifecycle needs of its server, handed over once. Everything is
 * borrowed from the server (which outlives its records); fields are set before the
 * first record and not changed while the server runs, except the counters (atomic)
 * and the rate limits (atomic) and limiter (its own lock).
 */
typedef struct ksfi_msg_env {
    const ksfi_logger *log;
    const ksf_config *cfg;
    const ksfi_handler *handlers; /* registration is over when records exist */
    size_t nhandlers;
    ksfi_server_counters *counters;
    ksfi_reply_policy *reply_policy;
    ksfi_log_limiter *log_limit; /* malformed, reply refused, no handler */
    ksfi_reply_sink *sink;       /* replies and dead letters leave here */
    ksfi_ratelimit expired_log;  /* the "skipped, deadline passed" debug line */
    ksfi_ratelimit shed_log;     /* the "request shed" warning */
    ksfi_msg_pool pool;          /* set up at server creation, freed at its destroy */
} ksfi_msg_env;

/* Set up @p pool, empty (at server creation). */
void ksfi_msg_pool_init(ksfi_msg_pool *pool);

/* Free the records @p pool keeps (at server destroy, once no record is in use). */
void ksfi_msg_pool_free(ksfi_msg_pool *pool);

/* The calling thread, the server's consumer thread, takes records from @p pool (and
 * gives back those it completes) on the pool's own list until ksfi_msg_pool_leave,
 * which hands that list to the shared one. Called by the consume loop around itself. */
void ksfi_msg_pool_enter(ksfi_msg_pool *pool);
void ksfi_msg_pool_leave(ksfi_msg_pool *pool);

/* The pool operations of the lifecycle: ksfi_dispatch_new takes them. */
extern const ksfi_dispatch_ops ksfi_msg_dispatch_ops;

/*
 * Wrap a consumed message into a record (ownership of @p msg moves on success); the
 * caller submits it to the dispatcher. Errors: KSF_ENOMEM.
 */
ksf_err ksfi_msg_new(ksfi_msg_env *env, ksfi_kafka_msg *msg, ksfi_record **out);

#endif
