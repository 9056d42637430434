/*
 * The server's innards, shared by server.c (lifecycle, Kafka handles, the reply
 * sink), registry.c (macro-defined handlers) and server_metrics_export.c. Nothing
 * below the server includes this: the message lifecycle gets what it needs through
 * struct ksfi_msg_env (message.h).
 *
 * Locking: registration fields are written before run on one thread and read
 * unlocked afterwards; `replies_open` under replies_lock; run_active under run_lock;
 * the consumer-thread-only fields are marked so; counters are atomic.
 */
#ifndef KSF_SERVER_H
#define KSF_SERVER_H

#include "base/config.h"
#include "base/log.h"
#include "kafka/produce.h"
#include "kafka/server_consumer.h"
#include "server/handler.h"
#include "server/message.h"
#include "server/pipeline.h"

#include <pthread.h>
#include <stdatomic.h>

/* A partition whose offset librdkafka reset, until its first message says where to. */
typedef struct ksfi_offset_reset {
    char *topic;
    int32_t partition;
    int64_t at; /* the out-of-range offset */
} ksfi_offset_reset;

/* The resets seen by librdkafka's thread, resolved by the consumer thread. Tiny: one
 * entry per partition reset and not yet consumed from. */
typedef struct ksfi_offset_resets {
    pthread_mutex_t lock;
    ksfi_offset_reset *v;
    size_t n, cap;
    atomic_size_t pending; /* n, read without the lock on every message */
} ksfi_offset_resets;

/* Messages polled without waiting before they are queued together (one acquisition
 * of the pool's lock, one wake-up per partition); inline (server.workers=0), before
 * the handlers run, so that a fetched batch's replies leave together. */
#define KSFI_GATHER_MAX 64

enum ksfi_server_state { KSFI_SRV_NEW, KSFI_SRV_RUNNING, KSFI_SRV_DONE };

struct ksf_server {
    ksfi_logger log; /* first member: the reply producer's log callback reads it */
    ksf_config *cfg;
    char *client_id;
    char *group_id;
    /* Registration happens before run, on one thread; run reads them unlocked. */
    ksfi_handler *handlers;
    size_t nhandlers;
    char **extra_topics; /* subscribed without a handler (tests of the no-handler path) */
    size_t nextra;
    ksf_ready_fn ready_fn;
    void *ready_user;

    atomic_int state;           /* enum ksfi_server_state */
    atomic_bool stop_requested; /* set by ksf_server_stop, possibly in a signal handler */
    int wake_fd;                /* eventfd written by ksf_server_stop */
    /* replies_open: the producer accepts replies (false outside run). Read-held while
     * producing, write-held while the producer is being shut down. */
    pthread_rwlock_t replies_lock;
    bool replies_open;
    pthread_t watcher;
    bool watcher_started;
    atomic_bool threads_exit; /* tells the watcher thread to end */
    /* The reply producer's "delivery reports wait" hook: the dispatcher's workers
     * serve them (no poll thread of its own); on while the workers run. */
    ksfi_kafka_reports_hook reports_hook;
    bool reports_hooked;

    ksfi_server_consumer *consumer; /* kafka/server_consumer.h */
    ksfi_kafka_handle *producer;
    ksfi_kafka_topics *reply_topics; /* the producer's kept topic handles */
    /* Consumer thread only: messages polled and not yet handed to the dispatcher
     * (consume gathers a fetched batch, up to KSFI_GATHER_MAX). */
    ksfi_record *gathered[KSFI_GATHER_MAX];
    size_t ngathered;
    bool ready_pending; /* consumer thread only: call ready_fn after this poll */
    bool ready_done;    /* consumer thread only */
    /* A partition without a committed offset starts at its end (auto.offset.reset not
     * set by the user, or latest). */
    bool pin_new;
    int commit_wait_ms;   /* consumer thread only: shortened once the broker is gone */
    bool consumer_closed; /* the group was left within its deadline */
    ksfi_dispatch *dispatch;
    ksfi_server_counters counters;
    ksfi_offset_resets resets;
    ksfi_reply_policy reply_policy; /* set up by run, before the first message */
    /* The per-message warnings (malformed, reply refused, no handler): a hostile
     * producer controls how many there are. */
    ksfi_log_limiter log_limit;
    /* Where replies and dead letters leave (server.c, on the producer). */
    ksfi_reply_sink sink;
    /* What the message lifecycle sees of this server (set up by run). */
    ksfi_msg_env env;
    /* The consumer's partition.assignment.strategy, named when the group refuses it. */
    char assignment_strategy[64];
    /* Guards run_active, which ksf_server_destroy waits on. */
    pthread_mutex_t run_lock;
    pthread_cond_t run_cond;
    bool run_active;
    /* pipeline: the ksf_server_use* registrations and, from run on, the chains. */
    ksfi_pipeline *pipeline;
};

/* The handler for @p topic, or NULL. Threads: any, while the server runs. */
const ksfi_handler *ksfi_server_find(const ksf_server *srv, const char *topic);

/*
 * Register a handler; @p flags are ksf_handler_flag bits (KSF_HANDLER_RAW); @p file /
 * @p line name its definition for error messages.
 * Errors: KSF_EEXIST naming the pattern and both definitions, KSF_EINVAL, KSF_ESTATE,
 * KSF_ENOMEM.
 */
ksf_err ksfi_server_add_handler(ksf_server *srv, const char *pattern,
                                ksf_handler_kind kind, unsigned flags, ksf_handler_fn fn,
                                void *user, const char *file, int line, ksf_errinfo *ei);

/*
 * Subscribe to @p topic too, without a handler: messages on it take the no-handler
 * path. A test hook (NestJS meets this only with regex subscriptions). Before run only.
 */
ksf_err ksfi_server_add_topic(ksf_server *srv, const char *topic, ksf_errinfo *ei);

/*
 * pipeline: resolve every handler's middleware chain (registry.c, at ksf_server_run
 * once the handlers are final). Errors: KSF_ENOENT for a controller or pattern
 * middleware without a handler, KSF_ENOMEM.
 */
ksf_err ksfi_server_freeze_pipeline(ksf_server *srv, ksf_errinfo *ei);

#endif
