/*
 * The ksf_client object and the types its files share. Private to libksf; included by
 * every client_*.c, and it includes none of their headers (so the files form layers,
 * not a circle: see client.c's comment for which file does what).
 *
 * Locking: one mutex, cli->lock, guards the fields below it in struct ksf_client and
 * everything reachable from them (topics, slots, the in-flight table, queued sends);
 * cli->cond signals topic state changes, new queued sends, first fetches and (while a
 * flush waits) delivery reports served. Every function takes and releases the lock
 * itself, or is named *_locked and is called with it held; none returns holding a lock it
 * took. Callbacks to the user (reply, emit) and calls into librdkafka that may block run
 * without it.
 */
#ifndef KSF_CLIENT_INTERNAL_H
#define KSF_CLIENT_INTERNAL_H

#include "base/alloc.h"
#include "base/clock.h"
#include "base/errinfo.h"
#include "client/inflight.h"
#include "client/reply_provider.h"
#include "codec/codec.h"
#include "codec/deadline.h"
#include "codec/wire.h"
#include "kafka/produce.h"
#include "kafka/reply_consumer.h"
#include "kafka/request_producer.h"
#include "obs/metrics.h"
#include "obs/trace.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define RECENT_IDS 4096    /* finished ids remembered for late/duplicate counts */
#define IDLE_PAUSE_MS 1000 /* idle time before the reply partitions are paused */
#define LATE_GRACE_MS                                                                    \
    10000                     /* fetching goes on this long after a timeout, so a late   \
                               * reply is seen and counted in late_replies */
#define POLL_CAP_MS 1000      /* longest reply-thread sleep */
#define POOL_MAX 1024         /* finished requests and tickets kept for reuse, each */
#define POOL_RT_MAX 256       /* of POOL_MAX, on the reply thread's own lists */
#define DESTROY_FLUSH_MS 5000 /* how long destroy waits for queued emits */
/* The longest reply-thread sleep while delivery reports are owed: a request's report
 * does not wake it (client.c, on_reports). */
#define REPORT_WAIT_MS 10

/* A reply partition the client advertises, or drains after a revoke. */
typedef struct reply_slot {
    struct reply_slot *next;
    char *topic;
    int32_t partition;
    uint32_t outstanding;   /* requests in flight that advertised it */
    bool revoked;           /* draining: released when outstanding reaches 0 */
    ksfi_pmetrics *metrics; /* its topic's pattern metrics (owned by the topic) */
    int64_t next_offset;    /* where fetching stands: past the last reply consumed or at
                             * the last end-of-partition; -1 until the first fetch ends */
} reply_slot;

typedef enum { TOPIC_NEW, TOPIC_ACQUIRING, TOPIC_READY } topic_state;

/* The headers a message will carry, in wire order (client_produce.h). Who owns the
 * bytes depends on the holder: borrowed while a send runs, one owned block in a
 * queued send. */
typedef struct ksfi_client_hdrs {
    ksfi_header *h;
    size_t n, cap;
} ksfi_client_hdrs;

/* A request whose send returned before it could be produced: its reply topic had no
 * partition yet, or it is the first to its pattern (see client_sender.c).
 * Owns a copy of everything the produce needs; found again by correlation id. */
typedef struct queued_send {
    struct queued_send *next;
    char id[KSFI_ID_SIZE];
    char *pattern;
    void *value; /* NULL: a null value */
    size_t len;
    void *key;
    size_t key_len;
    ksfi_client_hdrs hdrs; /* user and context headers, one owned block with room
                            * for the kafka_* ones, which come later */
} queued_send;

/* A reply topic this client consumes or will consume; never freed before destroy. */
typedef struct reply_topic {
    struct reply_topic *next;
    char *name;
    topic_state state;
    reply_slot *slot;      /* READY: the partition advertised in new requests */
    int32_t revoked_early; /* ACQUIRING: a partition revoked before it was recorded */
    queued_send *waiting, **waiting_tail; /* sends for the sender thread, in order */
    bool checked;           /* the sender thread looked whether the pattern's topic
                             * exists (before the first request to it was produced) */
    bool missing;           /* ...and it did not: nothing had subscribed to it */
    ksfi_pmetrics *metrics; /* the pattern's; NULL when it could not be allocated */
} reply_topic;

/* What every produced message carries to its delivery report, which frees it (all but
 * the client's plain_event ticket). */
typedef struct dr_ticket {
    ksfi_kafka_delivery delivery; /* first: the report's pointer is the ticket's */
    ksf_client *cli;
    bool request;
    char id[KSFI_ID_SIZE];
    ksf_emit_fn cb;
    void *user;
    struct dr_ticket *next; /* in the client's free list */
} dr_ticket;

struct ksf_client {
    ksfi_logger log;
    ksf_config *cfg;
    ksfi_request_producer *producer;
    ksfi_reply_consumer *consumer;
    dr_ticket plain_event; /* shared by events without a callback: nothing to allocate */
    ksfi_reply_provider *provider;
    pthread_t reply_thread, sender_thread;
    bool sender_started;
    atomic_bool stop_sender; /* also read by ksfi_reach_brokers, outside the lock */
    atomic_int flushing;     /* flushes waiting: the reply thread signals `cond` after it
                              * served delivery reports only while one does */
    atomic_bool reports;     /* delivery reports arrived since the reply thread last
                              * served them (set by the producer's on_report callback) */
    atomic_int callbacks_owed; /* events with an emit callback whose delivery report is
                                * not served yet: reports then wake the reply thread */
    atomic_bool closing;       /* destroy began; written under `lock`, and read under it
                                * too except by emit, which takes no other lock round */
    /* `lock` guards every field below; `cond` signals topic state changes and
     * (while a flush waits) delivery reports served. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ksfi_inflight *inflight;
    reply_topic *topics;
    reply_slot *slots;
    bool stop_reply;
    bool reply_started; /* the reply thread runs: it serves the delivery reports */
    bool reached;       /* a broker answered once: later sends skip the check */
    int in_hand;        /* queued sends the sender thread took and has not produced */
    bool paused;        /* reply partitions paused because idle */
    int64_t idle_since; /* when in-flight last dropped to 0 */
    _Atomic int64_t wake_at; /* when the reply thread plans to wake up (ms); written
                              * under the lock, also read without it (on_reports) */
    ksfi_idgen ids;          /* correlation ids: no syscall per request */
    ksf_client_stats stats;
    /* Outside the lock: counted per acknowledged event, read by get_stats. */
    _Atomic uint64_t sent; /* requests produced (stats.sent): a lock round each was
                            * a visible cost per request */
    _Atomic uint64_t emitted;
    _Atomic uint64_t emit_failures; /* events whose delivery report was an error */
    _Atomic uint64_t rebalances;    /* reply-group assignments received (metrics) */
    /* Finished requests' records and tickets kept for the next requests: a calloc and
     * a free each cost about 700 instructions per request (client_requests.c). Their
     * own lock: a ticket comes back with its delivery report, a record with its reply
     * (both on the reply thread, or a ticket on a destroying or flushing one), neither
     * holding `lock`. */
    pthread_mutex_t pool_lock;
    ksfi_pending *free_pending; /* linked by hnext */
    dr_ticket *free_tickets;
    size_t n_free_pending, n_free_tickets;
    /* The reply thread's own lists, without pool_lock: it frees most records and
     * tickets, and sends from reply and delivery callbacks take them back there. Only
     * the reply thread touches them (and destroy, once it has been joined). */
    ksfi_pending *rt_free_pending;
    dr_ticket *rt_free_tickets;
    size_t rt_n_free_pending, rt_n_free_tickets;
};

static inline int64_t
ksfi_client_now_ms(void)
{
    return ksfi_clock_ms();
}

/* Wait on cli->cond until @p deadline_ms (monotonic). Returns false on timeout. */
static inline bool
ksfi_client_wait_until(ksf_client *cli, int64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = deadline_ms / 1000,
                          .tv_nsec = (long)(deadline_ms % 1000) * 1000000};
    return pthread_cond_timedwait(&cli->cond, &cli->lock, &ts) == 0;
}

#endif
