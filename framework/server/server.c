/*
 * ksf_server: lifecycle, the consumer thread (the thread that calls ksf_server_run),
 * the reply producer (its delivery reports served by the dispatcher's workers), and
 * the stop machinery.
 */
#include "server/server.h"

#include "kafka/consumer.h"
#include "kafka/produce.h"
#include "kafka/server_consumer.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/errinfo.h"
#include "codec/wire.h"
#include "obs/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* The consumer poll's longest wait; inline (server.workers=0), while replies wait for
 * their delivery reports, the longest those wait to be served and their offsets stored
 * (a report does not end the poll there: dispatch.c, reports_ready). */
#define POLL_MS 100
#define INLINE_REPORT_WAIT_MS 10
/* How long stop waits for in-flight handlers and their replies. */
#define KSFI_STOP_DRAIN_MS 30000
/* How long a revoke waits for the revoked partitions' started handlers. */
#define KSFI_REVOKE_WAIT_MS 10000
/* Blocking broker queries made while assigning partitions. */
#define KSFI_QUERY_TIMEOUT_MS 5000
/* How long start-up waits for its topics to exist (be auto-created) in all. */
#define KSFI_TOPIC_CREATE_WAIT_MS 5000
/* How long stop waits for replies still queued in the producer. */
#define KSFI_FLUSH_MS 5000
/* How long a commit may wait for the group coordinator (a synchronous commit waits for
 * as long as the coordinator stays unreachable), and how long leaving the group may
 * take; once a commit timed out the broker is taken as gone and the rest is short. */
#define KSFI_COMMIT_WAIT_MS 1500
#define KSFI_CLOSE_WAIT_MS 10000
#define KSFI_GONE_WAIT_MS 500
/* Per-message warnings: at most this many lines per kind per window (docs/logging.md). */
#define KSFI_LOG_BURST 10
#define KSFI_LOG_BURST_MS 1000

/* The reply sink (reply_sink.h): replies and dead letters on the reply producer,
 * refused once the server stopped taking them. */
static ksf_err
sink_produce(ksfi_reply_sink *self, const ksfi_kafka_out *m, ksf_errinfo *ei)
{
    ksf_server *srv = (ksf_server *)(void *)((char *)self - offsetof(ksf_server, sink));
    ksf_err e;
    pthread_rwlock_rdlock(&srv->replies_lock);
    if (!srv->replies_open) {
        e = ksfi_fail(ei, KSF_ECLOSED, "the server has stopped; reply to %s not sent",
                      m->topic);
    } else {
        ksfi_kafka_out out = *m;
        /* A full queue drains as delivery reports are served: a reply waits up to 5 s
         * for room rather than being lost, serving reports itself meanwhile (the
         * workers that serve them may all be producing). */
        out.queue_full_wait_ms = 5000;
        out.serve_while_full = true;
        out.topics = srv->reply_topics;
        e = ksfi_kafka_produce(srv->producer, &out, ei);
    }
    pthread_rwlock_unlock(&srv->replies_lock);
    return e;
}

ksf_err
ksf_server_new(ksf_server **out, const ksf_config *cfg, ksf_errinfo *ei)
{
    if (out) {
        *out = NULL;
    }
    if (!out || !cfg) {
        return ksfi_fail(ei, KSF_EINVAL, "ksf_server_new: out and cfg are required");
    }
    ksf_err e;
    ksf_server *srv = ksfi_calloc(1, sizeof *srv);
    if (!srv) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory creating a server");
    }
    srv->wake_fd = -1;
    pthread_mutex_init(&srv->run_lock, NULL);
    pthread_rwlock_init(&srv->replies_lock, NULL);
    pthread_mutex_init(&srv->resets.lock, NULL);
    pthread_cond_init(&srv->run_cond, NULL);
    ksfi_msg_pool_init(&srv->env.pool);
    if (ksf_config_dup(cfg, &srv->cfg) ||
        !(srv->client_id = ksfi_config_client_id(cfg, KSFI_SERVER_POSTFIX)) ||
        !(srv->group_id = ksfi_config_group_id(cfg, KSFI_SERVER_POSTFIX))) {
        e = ksfi_fail(ei, KSF_ENOMEM, "out of memory creating a server");
        goto fail;
    }
    srv->log = ksfi_logger_from_config(srv->cfg);
    ksfi_log_limiter_init(&srv->log_limit, KSFI_LOG_BURST, KSFI_LOG_BURST_MS, NULL);
    srv->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (srv->wake_fd < 0) {
        e = ksfi_fail(ei, KSF_EINVAL, "eventfd for the server's stop signal: %s",
                      strerror(errno));
        goto fail;
    }
    srv->sink.produce = sink_produce;
    if (ksfi_dispatch_new(&srv->dispatch, &srv->log, &ksfi_msg_dispatch_ops)) {
        e = ksfi_fail(ei, KSF_ENOMEM, "out of memory creating a server");
        goto fail;
    }
    atomic_init(&srv->state, KSFI_SRV_NEW);
    *out = srv;
    return KSF_OK;
fail:
    ksf_server_destroy(srv);
    return e; /* not ei->code: the same code whether or not the caller passed ei */
}

/* The server signal handlers stop; see ksf_server_stop_on_signals. */
static _Atomic(ksf_server *) signal_target;

void
ksf_server_destroy(ksf_server *srv)
{
    if (!srv) {
        return;
    }
    ksf_server *self = srv;
    atomic_compare_exchange_strong(&signal_target, &self, NULL);
    ksf_server_stop(srv);
    pthread_mutex_lock(&srv->run_lock);
    while (srv->run_active) {
        pthread_cond_wait(&srv->run_cond, &srv->run_lock);
    }
    pthread_mutex_unlock(&srv->run_lock);
    /* Contexts hold consumer messages: free them before the consumer handle. */
    ksfi_dispatch_destroy(srv->dispatch);
    ksfi_msg_pool_free(&srv->env.pool); /* the records the dispatcher freed */
    ksfi_sc_destroy(srv->consumer);
    for (size_t i = 0; i < srv->nhandlers; i++) {
        ksfi_free(srv->handlers[i].pattern);
        ksfi_free(srv->handlers[i].metrics);
    }
    ksfi_free(srv->handlers);
    ksfi_pipeline_free(srv->pipeline); /* pipeline: registrations and chains */
    for (size_t i = 0; i < srv->nextra; i++) {
        ksfi_free(srv->extra_topics[i]);
    }
    ksfi_free(srv->extra_topics);
    if (srv->wake_fd >= 0) {
        close(srv->wake_fd);
    }
    ksfi_free(srv->client_id);
    ksfi_free(srv->group_id);
    ksf_config_destroy(srv->cfg);
    pthread_mutex_destroy(&srv->run_lock);
    pthread_rwlock_destroy(&srv->replies_lock);
    for (size_t i = 0; i < srv->resets.n; i++) {
        ksfi_free(srv->resets.v[i].topic);
    }
    ksfi_free(srv->resets.v);
    pthread_mutex_destroy(&srv->resets.lock);
    ksfi_log_limiter_destroy(&srv->log_limit);
    ksfi_reply_policy_free(&srv->reply_policy);
    pthread_cond_destroy(&srv->run_cond);
    ksfi_free(srv);
}

const ksfi_handler *
ksfi_server_find(const ksf_server *srv, const char *topic)
{
    for (size_t i = 0; i < srv->nhandlers; i++) {
        if (!strcmp(srv->handlers[i].pattern, topic)) {
            return &srv->handlers[i];
        }
    }
    return NULL;
}

ksf_err
ksfi_server_add_handler(ksf_server *srv, const char *pattern, ksf_handler_kind kind,
                        unsigned flags, ksf_handler_fn fn, void *user, const char *file,
                        int line, ksf_errinfo *ei)
{
    if (!srv || !fn) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "registering a handler: srv and fn are required");
    }
    if (atomic_load(&srv->state) != KSFI_SRV_NEW) {
        return ksfi_fail(ei, KSF_ESTATE,
                         "pattern \"%s\": handlers must be registered "
                         "before ksf_server_run",
                         pattern ? pattern : "(null)");
    }
    ksf_err e = ksfi_check_topic(pattern, false, ei);
    if (e) {
        return e;
    }
    const ksfi_handler *old = ksfi_server_find(srv, pattern);
    if (old) {
        return ksfi_fail(ei, KSF_EEXIST,
                         "pattern \"%s\" already has a handler (%s:%d); one "
                         "pattern, one handler",
                         pattern, old->file ? old->file : "registered by call",
                         old->line);
    }
    ksfi_handler *grown =
        ksfi_realloc(srv->handlers, (srv->nhandlers + 1) * sizeof *grown);
    if (!grown) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory registering \"%s\"", pattern);
    }
    srv->handlers = grown;
    char *copy = ksfi_strdup(pattern);
    if (!copy) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory registering \"%s\"", pattern);
    }
    /* Allocated now so that counting never allocates; a failure only costs metrics. */
    srv->handlers[srv->nhandlers++] = (ksfi_handler){
        .pattern = copy,
        .kind = kind,
        .fn = fn,
        .user = user,
        .file = file,
        .line = line,
        .metrics = ksfi_pmetrics_new(pattern),
        .raw = (flags & KSF_HANDLER_RAW) != 0,
    };
    return KSF_OK;
}

ksf_err
ksf_server_on_message(ksf_server *srv, const char *pattern, ksf_handler_fn fn, void *user,
                      ksf_errinfo *ei)
{
    return ksfi_server_add_handler(srv, pattern, KSF_HANDLER_MESSAGE, 0, fn, user, NULL,
                                   0, ei);
}

ksf_err
ksf_server_on_event(ksf_server *srv, const char *pattern, ksf_handler_fn fn, void *user,
                    ksf_errinfo *ei)
{
    return ksfi_server_add_handler(srv, pattern, KSF_HANDLER_EVENT, 0, fn, user, NULL, 0,
                                   ei);
}

ksf_err
ksf_server_on_message_raw(ksf_server *srv, const char *pattern, ksf_handler_fn fn,
                          void *user, ksf_errinfo *ei)
{
    return ksfi_server_add_handler(srv, pattern, KSF_HANDLER_MESSAGE, KSF_HANDLER_RAW, fn,
                                   user, NULL, 0, ei);
}

ksf_err
ksf_server_on_event_raw(ksf_server *srv, const char *pattern, ksf_handler_fn fn,
                        void *user, ksf_errinfo *ei)
{
    return ksfi_server_add_handler(srv, pattern, KSF_HANDLER_EVENT, KSF_HANDLER_RAW, fn,
                                   user, NULL, 0, ei);
}

ksf_err
ksfi_server_add_topic(ksf_server *srv, const char *topic, ksf_errinfo *ei)
{
    ksf_err e = ksfi_check_topic(topic, false, ei);
    if (e) {
        return e;
    }
    char **grown = ksfi_realloc(srv->extra_topics, (srv->nextra + 1) * sizeof *grown);
    if (!grown) {
        return KSF_ENOMEM;
    }
    srv->extra_topics = grown;
    if (!(srv->extra_topics[srv->nextra] = ksfi_strdup(topic))) {
        return KSF_ENOMEM;
    }
    srv->nextra++;
    return KSF_OK;
}

void
ksf_server_set_ready_cb(ksf_server *srv, ksf_ready_fn fn, void *user)
{
    if (srv) {
        srv->ready_fn = fn;
        srv->ready_user = user;
    }
}

void
ksf_server_stop(ksf_server *srv)
{
    if (!srv) {
        return;
    }
    /* Only async-signal-safe operations: a lock-free atomic store and write(2). */
    atomic_store(&srv->stop_requested, true);
    uint64_t one = 1;
    ssize_t rc = write(srv->wake_fd, &one, sizeof one);
    (void)rc; /* EAGAIN means a wake-up is already pending: good enough */
}

static void
on_signal(int sig)
{
    (void)sig;
    ksf_server *srv = atomic_load(&signal_target);
    if (srv) {
        ksf_server_stop(srv);
    }
}

ksf_err
ksf_server_stop_on_signals(ksf_server *srv, ksf_errinfo *ei)
{
    if (!srv) {
        return ksfi_fail(ei, KSF_EINVAL, "ksf_server_stop_on_signals: srv is NULL");
    }
    atomic_store(&signal_target, srv);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL)) {
        return ksfi_fail(ei, KSF_EINVAL, "sigaction(SIGINT/SIGTERM): %s",
                         strerror(errno));
    }
    return KSF_OK;
}

void
ksf_server_get_stats(ksf_server *srv, ksf_server_stats *out)
{
    if (!srv || !out) {
        return;
    }
    const ksfi_server_counters *c = &srv->counters;
#define COPY_COUNTER(name) out->name = atomic_load(&c->name);
    KSFI_SERVER_COUNTERS(COPY_COUNTER)
#undef COPY_COUNTER
    out->throttled = ksfi_dispatch_throttled(srv->dispatch);
    out->partition_pauses = ksfi_dispatch_pauses(srv->dispatch);
}

/* ---- the reply producer ------------------------------------------------------------ */

/* The dispatcher's serve op: the reply producer's delivery reports, on a worker
 * after its run (the floor's loop polls its producer the same way). */
static void
serve_reports(void *user)
{
    ksf_server *srv = user;
    ksfi_kafka_poll(srv->producer, 0);
}

/* librdkafka's thread: reports wait (the producer's queue was empty). */
static void
reports_waiting(ksfi_kafka_reports_hook *hook)
{
    ksf_server *srv =
        (ksf_server *)(void *)((char *)hook - offsetof(ksf_server, reports_hook));
    ksfi_dispatch_reports_ready(srv->dispatch);
}

/* Turns ksf_server_stop's eventfd write into a wake-up of the consumer poll. */
static void *
watcher_main(void *arg)
{
    ksf_server *srv = arg;
    while (!atomic_load(&srv->threads_exit)) {
        struct pollfd pfd = {.fd = srv->wake_fd, .events = POLLIN};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR) {
            break;
        }
        uint64_t v;
        ssize_t rc = read(srv->wake_fd, &v, sizeof v);
        (void)rc;
        if (atomic_load(&srv->stop_requested)) {
            ksfi_sc_wake(srv->consumer);
        }
    }
    return NULL;
}

/* ---- the consumer ---------------------------------------------------------------- */

/* Commit the stored offsets, waiting at most srv->commit_wait_ms (consumer thread). */
static void
commit_bounded(ksf_server *srv, const char *when)
{
    ksf_errinfo ei = {0};
    ksf_err e = ksfi_sc_commit(srv->consumer, NULL, 0, srv->commit_wait_ms, &ei);
    /* A slow revoke commit must not shorten a later stop for good: only the latest
     * outcome counts. */
    srv->commit_wait_ms = e == KSF_ETIMEDOUT ? KSFI_GONE_WAIT_MS : KSFI_COMMIT_WAIT_MS;
    if (e) {
        ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
                 "committing %s: %s; the uncommitted messages will be delivered again",
                 when, ei.text);
    }
}

/*
 * Commit the offsets pin_new_partitions chose, at once and bounded: a member that
 * gives such a partition away before answering anything on it commits nothing, and
 * the next owner would pin at the end as it is then, skipping what was produced in
 * between. Cooperative rebalancing does exactly that when a second server joins: the
 * first one is handed every partition, then gives half away (issue 17).
 */
static void
commit_pins(ksf_server *srv, const ksfi_sc_part *pinned, size_t n)
{
    if (n == 0) {
        return;
    }
    ksf_errinfo ei = {0};
    if (ksfi_sc_commit(srv->consumer, pinned, n, KSFI_COMMIT_WAIT_MS, &ei)) {
        ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
                 "committing the start of %zu new partition(s): %s; if they move before "
                 "this server answers on them, the next owner starts at their end then",
                 n, ei.text);
    }
}

/*
 * A partition without a committed offset (a new group) starts at its end: a new service
 * does not answer the history of its topics (docs/server.md). librdkafka's
 * auto.offset.reset cannot say so, since it also decides where an out-of-range offset
 * goes (ksf: earliest), and with latest a partition would start at whatever the end is
 * when the fetcher gets round to asking, so a request produced just after the ready
 * callback could be skipped. Pin such partitions at their end now, before ready:
 * parts[i].offset is where the adapter starts them.
 */
static void
pin_new_partitions(ksf_server *srv, ksfi_sc_part *parts, size_t n)
{
    ksfi_sc_part *c = ksfi_calloc(n, sizeof *c);
    ksfi_sc_part *pinned = ksfi_calloc(n, sizeof *pinned);
    size_t npinned = 0;
    ksf_errinfo ei = {0};
    ksf_err err = KSF_ENOMEM;
    if (c && pinned) {
        memcpy(c, parts, n * sizeof *c);
        err = ksfi_sc_committed(srv->consumer, c, n, KSFI_QUERY_TIMEOUT_MS, &ei);
    } else {
        ksfi_fail(&ei, KSF_ENOMEM, "reading committed offsets: out of memory");
    }
    int64_t deadline = ksfi_clock_ms() + KSFI_QUERY_TIMEOUT_MS;
    for (size_t i = 0; !err && i < n; i++) {
        int64_t hi;
        ksf_errinfo hei = {0};
        if (c[i].offset >= 0) {
            continue;
        }
        if (ksfi_sc_high_watermark(srv->consumer, c[i].topic, c[i].partition, deadline,
                                   &hi, &hei)) {
            ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
                     "%s; the partition starts where auto.offset.reset says (ksf: "
                     "earliest)",
                     hei.text);
            continue;
        }
        parts[i].offset = hi;
        pinned[npinned++] = (ksfi_sc_part){c[i].topic, c[i].partition, hi};
    }
    if (err) {
        ksfi_log(&srv->log, KSF_LOG_WARNING, "server", "%s", ei.text);
    }
    commit_pins(srv, pinned, npinned);
    ksfi_free(pinned);
    ksfi_free(c);
}

/* The reset partitions' first messages are not coming (they were revoked before): an
 * assignment starts from the committed offset, and a reset after it is noted anew. */
static void forget_resets(ksf_server *srv, const ksfi_sc_part *parts, size_t n);

static void
log_partitions(ksf_server *srv, const char *what, const ksfi_sc_part *parts, size_t n)
{
    char buf[512];
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && o < sizeof buf - 64; i++) {
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%.40s[%d]", i ? " " : "",
                              parts[i].topic, (int)parts[i].partition);
    }
    char nb[24];
    ksf_log_field f[] = {
        {"group", srv->group_id}, {"count", KSFI_LOG_NUM(nb, n)}, {"partitions", buf}};
    ksfi_logkv(&srv->log, KSF_LOG_INFO, "server", f, 3, "partitions %s", what);
}

/* The server's partition.assignment.strategy unless the user set one (kafka.* or
 * consumer.*): librdkafka's cooperative-sticky, so a member joining or leaving moves
 * only the partitions that change owner and the others keep being served (issue 17;
 * docs/server.md, "Rebalancing"). librdkafka's own default, range,roundrobin, is eager:
 * every rebalance revokes every partition of every member first. */
#define KSFI_SERVER_ASSIGNMENT "cooperative-sticky"

static bool
strategy_is_set(const ksf_config *cfg)
{
    for (size_t i = 0; i < cfg->nprops; i++) {
        if (cfg->props[i].role != KSF_KAFKA_PRODUCER &&
            !strcmp(cfg->props[i].key, "partition.assignment.strategy")) {
            return true;
        }
    }
    return false;
}

/* The partitions as plain (topic, partition) pairs for the pool (kafka/consumer.h),
 * or NULL when out of memory. */
static ksfi_kafka_tp *
pool_tps(const ksfi_sc_part *parts, size_t n)
{
    ksfi_kafka_tp *tps = ksfi_calloc(n ? n : 1, sizeof *tps);
    if (!tps) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        tps[i] = (ksfi_kafka_tp){parts[i].topic, parts[i].partition};
    }
    return tps;
}

/* Hand the messages gathered since the last call to the dispatcher, in their order.
 * Consumer thread; also before a rebalance is applied, so that what was polled before
 * it is queued (or dropped, for a revoked partition) as it would have been at once. */
static void
submit_gathered(ksf_server *srv)
{
    if (srv->ngathered) {
        ksfi_dispatch_submit_many(srv->dispatch, srv->gathered, srv->ngathered);
        srv->ngathered = 0;
    }
}

/* The adapter's assigned op (kafka/server_consumer.h), on the consumer thread. */
static void
on_assigned(void *user, ksfi_sc_part *parts, size_t n)
{
    ksf_server *srv = user;
    submit_gathered(srv);
    forget_resets(srv, parts, n);
    /* A cooperative rebalance hands members that keep what they have an empty
     * list: nothing to look up, and the poll loop waits for this callback. */
    if (srv->pin_new && n > 0) {
        pin_new_partitions(srv, parts, n);
    }
    ksfi_kafka_tp *tps = pool_tps(parts, n);
    if (tps) {
        ksfi_dispatch_assign(srv->dispatch, tps, n);
        ksfi_free(tps);
    } else {
        ksfi_log(&srv->log, KSF_LOG_ERROR, "server",
                 "out of memory tracking %zu assigned partition(s); their messages will "
                 "not be served",
                 n);
    }
    log_partitions(srv, "assigned", parts, n);
    srv->ready_pending = !srv->ready_done;
}

/* The adapter's revoked (and lost) op: finish what runs on the partitions (bounded)
 * and forget them, so their offsets are committed before another member takes over:
 * that is what keeps a rebalance from answering twice. Lost partitions are treated
 * alike; their commit is refused by the group, and logged. */
static void
on_revoked(void *user, const ksfi_sc_part *parts, size_t n)
{
    ksf_server *srv = user;
    submit_gathered(srv);
    ksfi_kafka_tp *tps = pool_tps(parts, n);
    if (tps) {
        ksfi_dispatch_revoke(srv->dispatch, tps, n, KSFI_REVOKE_WAIT_MS);
        ksfi_free(tps);
    } else {
        ksfi_log(&srv->log, KSF_LOG_ERROR, "server",
                 "out of memory revoking %zu partition(s); their unfinished messages are "
                 "handled again by the next owner",
                 n);
    }
    commit_bounded(srv, "on revoke");
    log_partitions(srv, "revoked", parts, n);
}

/* The auto.offset.reset the user set for the server's consumer, or NULL. */
static const char *
user_reset(const ksf_config *cfg)
{
    const char *v = NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < cfg->nprops; i++) {
            const ksfi_kprop *p = &cfg->props[i];
            if ((pass == 0 ? p->role == KSF_KAFKA_ALL : p->role == KSF_KAFKA_CONSUMER) &&
                !strcmp(p->key, "auto.offset.reset")) {
                v = p->value;
            }
        }
    }
    return v;
}

/* The partition @p topic [@p partition] in the pending resets, or NULL (lock held). */
static ksfi_offset_reset *
find_reset(ksf_server *srv, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < srv->resets.n; i++) {
        if (srv->resets.v[i].partition == partition &&
            !strcmp(srv->resets.v[i].topic, topic)) {
            return &srv->resets.v[i];
        }
    }
    return NULL;
}

/*
 * The adapter's offset_reset op (librdkafka's threads): librdkafka reset
 * @p topic [@p partition] from the out-of-range offset @p at. Noted, so that the first
 * message after it tells how far the partition jumped (resolve_reset).
 */
static void
on_offset_reset(void *user, const char *topic, int32_t partition, int64_t at)
{
    ksf_server *srv = user;
    atomic_fetch_add(&srv->counters.offset_resets, 1);
    pthread_mutex_lock(&srv->resets.lock);
    ksfi_offset_reset *r = find_reset(srv, topic, partition);
    if (r) {
        r->at =
            at < r->at ? at : r->at; /* reset again before a message: from the first */
        pthread_mutex_unlock(&srv->resets.lock);
        return;
    }
    if (srv->resets.n == srv->resets.cap) {
        size_t cap = srv->resets.cap * 2 + 4;
        ksfi_offset_reset *v = ksfi_realloc(srv->resets.v, cap * sizeof *v);
        if (v) {
            srv->resets.v = v;
            srv->resets.cap = cap;
        }
    }
    char *t = srv->resets.n < srv->resets.cap ? ksfi_strdup(topic) : NULL;
    if (t) { /* else out of memory: the reset stays counted, its size unknown */
        srv->resets.v[srv->resets.n++] = (ksfi_offset_reset){t, partition, at};
        atomic_store(&srv->resets.pending, srv->resets.n);
    }
    pthread_mutex_unlock(&srv->resets.lock);
}

static void
forget_resets(ksf_server *srv, const ksfi_sc_part *parts, size_t n)
{
    pthread_mutex_lock(&srv->resets.lock);
    for (size_t i = 0; i < n; i++) {
        ksfi_offset_reset *r = find_reset(srv, parts[i].topic, parts[i].partition);
        if (r) {
            ksfi_free(r->topic);
            *r = srv->resets.v[--srv->resets.n];
        }
    }
    atomic_store(&srv->resets.pending, srv->resets.n);
    pthread_mutex_unlock(&srv->resets.lock);
}

/*
 * Consumer thread, for each message while resets are pending: the first message of a
 * reset partition at or past the out-of-range offset says how many were skipped
 * (offsets are consecutive in a request topic; what lay between is gone: deleted by
 * retention before anyone read it). Counted and logged once per reset, at error.
 * Messages below the offset are the ones fetched before the reset, or a reset back
 * (the committed offset was past the end): nothing was skipped then, and the entry
 * resolves when the partition reaches the offset again.
 */
static void
resolve_reset(ksf_server *srv, const ksfi_kafka_msg *msg)
{
    ksfi_kafka_in m = ksfi_kafka_in_of(msg);
    const char *topic = m.topic;
    pthread_mutex_lock(&srv->resets.lock);
    ksfi_offset_reset *r = find_reset(srv, topic, m.partition);
    if (!r || m.offset < r->at) {
        pthread_mutex_unlock(&srv->resets.lock);
        return;
    }
    int64_t at = r->at, skipped = m.offset - r->at;
    ksfi_free(r->topic);
    *r = srv->resets.v[--srv->resets.n];
    atomic_store(&srv->resets.pending, srv->resets.n);
    pthread_mutex_unlock(&srv->resets.lock);
    atomic_fetch_add(&srv->counters.offset_reset_skipped, (uint64_t)skipped);
    char pa[16], a[24], to[24], sk[24];
    ksf_log_field f[] = {{"topic", topic},
                         {"partition", KSFI_LOG_NUM(pa, m.partition)},
                         {"committed", KSFI_LOG_NUM(a, at)},
                         {"resumed", KSFI_LOG_NUM(to, m.offset)},
                         {"skipped", KSFI_LOG_NUM(sk, skipped)}};
    ksfi_logkv(&srv->log, KSF_LOG_ERROR, "server", f, 5,
               "offset out of range: %lld message(s) were deleted by the broker "
               "(retention) before this server read them; they are lost, unanswered",
               (long long)skipped);
}

static const ksfi_sc_ops server_consumer_ops = {
    .assigned = on_assigned,
    .revoked = on_revoked,
    .lost = on_revoked,
    .offset_reset = on_offset_reset,
};

static ksf_err
create_consumer(ksf_server *srv, ksf_errinfo *ei)
{
    /* An out-of-range offset (retention deleted what this group had not read yet)
     * resumes at the oldest message still there, not the end: what waits is handled
     * (or skipped as expired by its deadline), and what was deleted is counted. */
    const char *reset = user_reset(srv->cfg);
    srv->pin_new = !reset || !strcmp(reset, "latest") || !strcmp(reset, "largest") ||
                   !strcmp(reset, "end");
    ksfi_sc_config sc = {
        .cfg = srv->cfg,
        .client_id = srv->client_id,
        .group_id = srv->group_id,
        /* KIP-345: group.instance.id makes the server a static member. It then sends
         * no LeaveGroup at close, so its partitions wait for the same id up to
         * session.timeout.ms (docs/server.md, "Static membership"). */
        .group_instance_id = srv->cfg->group_instance_id,
        .assignment_strategy = strategy_is_set(srv->cfg) ? NULL : KSFI_SERVER_ASSIGNMENT,
        .offset_reset = reset ? NULL : "earliest",
        .log = &srv->log,
        .ops = &server_consumer_ops,
        .user = srv,
    };
    ksf_err e = ksfi_sc_new(&sc, &srv->consumer, ei);
    if (e) {
        return e;
    }
    snprintf(srv->assignment_strategy, sizeof srv->assignment_strategy, "%s",
             ksfi_sc_strategy(srv->consumer));
    srv->commit_wait_ms = KSFI_COMMIT_WAIT_MS;
    return KSF_OK;
}

static ksf_err
create_producer(ksf_server *srv, ksf_errinfo *ei)
{
    ksf_err e = ksfi_kafka_producer_new(
        srv->cfg, srv->client_id, srv, "the server's reply producer", &srv->producer, ei);
    return e ? e : ksfi_kafka_topics_new(&srv->reply_topics, ei);
}

static ksf_err
subscribe(ksf_server *srv, ksf_errinfo *ei)
{
    size_t n = srv->nhandlers + srv->nextra;
    const char **topics = ksfi_calloc(n, sizeof *topics);
    if (!topics) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory subscribing");
    }
    for (size_t i = 0; i < srv->nhandlers; i++) {
        topics[i] = srv->handlers[i].pattern;
    }
    for (size_t i = 0; i < srv->nextra; i++) {
        topics[srv->nhandlers + i] = srv->extra_topics[i];
    }
    /* The topics are named to the broker first, so that one that creates topics on
     * demand does so now rather than at the next metadata refresh (the adapter says
     * why). */
    ksf_err e = ksfi_sc_subscribe(srv->consumer, topics, n,
                                  ksfi_clock_ms() + KSFI_TOPIC_CREATE_WAIT_MS, ei);
    ksfi_free(topics);
    return e;
}

/* Handle a consumer error event. Returns KSF_EKAFKA when it is fatal. */
static ksf_err
consumer_error(ksf_server *srv, const ksfi_sc_event *ev, ksf_errinfo *ei)
{
    switch (ev->error) {
    case KSFI_SC_ERR_FENCED:
        return ksfi_fail_kafka(
            ei, ev->kafka_err,
            "group %s: fenced (FENCED_INSTANCE_ID): another server took over "
            "group.instance.id \"%s\"; ids are unique per group (two servers must "
            "not share one, in one process or two): give each instance its own id "
            "(%s)",
            srv->group_id, srv->cfg->group_instance_id, ev->text);
    case KSFI_SC_ERR_FATAL:
        return ksfi_fail_kafka(ei, ev->kafka_err,
                               "fatal Kafka error in the server's consumer: %s",
                               ev->text);
    case KSFI_SC_ERR_UNKNOWN_TOPIC:
        ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
                 "pattern topic %s does not exist (yet): create it, or enable "
                 "auto.create.topics.enable on the broker (%s)",
                 ev->topic, ev->text);
        return KSF_OK;
    case KSFI_SC_ERR_INCONSISTENT_PROTOCOL:
        /* Measured on Kafka 4.4: a NestJS (kafkajs) server in the group, or a ksf
         * server with an eager strategy, makes the broker refuse every JoinGroup of
         * this one, which then serves nothing (docs/server.md, "Rebalancing"). */
        ksfi_log(
            &srv->log, KSF_LOG_ERROR, "server",
            "group %s refused this server (INCONSISTENT_GROUP_PROTOCOL): its members "
            "use another partition assignment protocol (NestJS/kafkajs servers, or "
            "servers with another consumer.partition.assignment.strategy than this "
            "one's %s); it gets no partitions until they leave: give it its own "
            "group.id, or stop the others (see docs/server.md, Rebalancing)",
            srv->group_id, srv->assignment_strategy);
        return KSF_OK;
    case KSFI_SC_ERR_OTHER:
        break;
    }
    ksfi_log(&srv->log, KSF_LOG_WARNING, "server", "consumer: %s", ev->text);
    return KSF_OK;
}

/* Poll and dispatch until stopped. Runs on the caller's thread. The messages of one
 * fetched batch (polled without waiting, up to KSFI_GATHER_MAX) are queued together;
 * in inline mode (server.workers=0) the handlers then run on this thread, and also
 * whenever a poll returns nothing (woken for a due retry, a deferred finish or
 * delivery reports, or at its timeout). */
static ksf_err
consume(ksf_server *srv, ksf_errinfo *ei)
{
    ksfi_sc_event ev;
    bool run_inline = srv->cfg->server_workers == 0;
    bool more = false; /* inline: the last pass left work for the next */
    ksf_err e = KSF_OK;
    ksfi_msg_pool_enter(&srv->env.pool);
    while (!e && !atomic_load(&srv->stop_requested)) {
        int wait_ms = srv->ngathered || more ? 0 : POLL_MS;
        /* Inline, delivery reports do not end the poll (dispatch.c, reports_ready):
         * while replies wait for theirs, it is as long as the reports may wait. */
        if (wait_ms && run_inline && ksfi_kafka_queued(srv->producer) > 0) {
            wait_ms = INLINE_REPORT_WAIT_MS;
        }
        ksfi_sc_poll(srv->consumer, wait_ms, &ev);
        if (srv->ready_pending) {
            srv->ready_pending = false;
            srv->ready_done = true;
            ksfi_log(&srv->log, KSF_LOG_NOTICE, "server",
                     "ready: group %s, %zu pattern(s)", srv->group_id, srv->nhandlers);
            if (srv->ready_fn) {
                srv->ready_fn(srv, srv->ready_user);
            }
        }
        if (ev.kind == KSFI_SC_MESSAGE) {
            if (atomic_load(&srv->resets.pending)) {
                resolve_reset(srv, ev.msg);
            }
            ksfi_record *rec;
            if (ksfi_msg_new(&srv->env, ev.msg, &rec)) {
                ksfi_kafka_message_free(ev.msg);
                e = ksfi_fail(ei, KSF_ENOMEM,
                              "out of memory queueing a message; stopping "
                              "(it will be delivered again)");
                break;
            }
            srv->gathered[srv->ngathered++] = rec;
            if (srv->ngathered < KSFI_GATHER_MAX) {
                continue; /* the rest of the batch first */
            }
        }
        submit_gathered(srv);
        ksfi_dispatch_sync_pause(srv->dispatch);
        if (ev.kind == KSFI_SC_ERROR) {
            e = consumer_error(srv, &ev, ei);
        } else if (run_inline) {
            more = ksfi_dispatch_run_inline(srv->dispatch);
            /* Its reports may have made a paused partition resumable: a paused one
             * fetches nothing that would end the next poll early. */
            ksfi_dispatch_sync_pause(srv->dispatch);
        }
    }
    /* Stopping: what was polled is queued, and the drain decides its fate as it
     * does for what was queued before. */
    submit_gathered(srv);
    ksfi_msg_pool_leave(&srv->env.pool);
    return e;
}

/* The dispatcher has work for the consumer thread from another thread (a partition
 * to resume; inline: anything ready); end the poll now. */
static void
wake_consumer(void *user)
{
    ksf_server *srv = user;
    ksfi_sc_wake(srv->consumer);
}

/* The reply-topic policy: never the server's own topics (its patterns, the topics it
 * subscribes to, their dead-letter topics). */
static ksf_err
init_reply_policy(ksf_server *srv, ksf_errinfo *ei)
{
    size_t n = srv->nhandlers + srv->nextra, k = 0;
    char **own = ksfi_calloc(2 * n, sizeof *own);
    ksf_err e = own ? KSF_OK : KSF_ENOMEM;
    for (size_t i = 0; !e && i < srv->nhandlers; i++) {
        const char *pattern = srv->handlers[i].pattern;
        own[k++] = ksfi_strdup(pattern);
        ksfi_policy pol = ksfi_policy_for(&srv->cfg->policy, pattern);
        own[k++] = ksfi_policy_dlq_topic(pol.dlq ? pol.dlq : "{pattern}.dlq", pattern);
        e = own[k - 1] && own[k - 2] ? KSF_OK : KSF_ENOMEM;
    }
    for (size_t i = 0; !e && i < srv->nextra; i++) {
        e = (own[k++] = ksfi_strdup(srv->extra_topics[i])) ? KSF_OK : KSF_ENOMEM;
    }
    if (!e) {
        e = ksfi_reply_policy_init(&srv->reply_policy, srv->cfg->server_reply_topics,
                                   srv->cfg->server_reply_topics_max,
                                   (const char *const *)own, k);
    }
    for (size_t i = 0; own && i < k; i++) {
        ksfi_free(own[i]);
    }
    ksfi_free(own);
    return e ? ksfi_fail(ei, KSF_ENOMEM, "out of memory setting up the reply policy")
             : KSF_OK;
}

static ksf_err
start(ksf_server *srv, ksf_errinfo *ei)
{
    ksf_err e;
    if ((e = init_reply_policy(srv, ei)) || (e = create_producer(srv, ei)) ||
        (e = create_consumer(srv, ei))) {
        return e;
    }
    /* Registration is over: the message lifecycle may read the handlers unlocked. */
    srv->env.log = &srv->log;
    srv->env.cfg = srv->cfg;
    srv->env.handlers = srv->handlers;
    srv->env.nhandlers = srv->nhandlers;
    srv->env.counters = &srv->counters;
    srv->env.reply_policy = &srv->reply_policy;
    srv->env.log_limit = &srv->log_limit;
    srv->env.sink = &srv->sink;
    pthread_rwlock_wrlock(&srv->replies_lock);
    srv->replies_open = true;
    pthread_rwlock_unlock(&srv->replies_lock);
    atomic_store(&srv->threads_exit, false);
    /* Delivery reports are served by the workers, from the loop that produced the
     * replies: no poll thread to wake per report, and the offsets they complete are
     * stored once per batch of reports. */
    ksfi_dispatch_set_serve(srv->dispatch, serve_reports, srv);
    ksfi_dispatch_set_wake(srv->dispatch, wake_consumer, srv);
    srv->reports_hook.fn = reports_waiting;
    ksfi_kafka_on_reports(srv->producer, &srv->reports_hook);
    srv->reports_hooked = true;
    if (pthread_create(&srv->watcher, NULL, watcher_main, srv)) {
        return ksfi_fail(ei, KSF_EINVAL, "cannot start the server's stop watcher thread");
    }
    srv->watcher_started = true;
    ksfi_dispatch_set_policy(srv->dispatch, &srv->cfg->policy, srv->cfg->server_workers,
                             srv->nhandlers + srv->nextra);
    ksfi_dispatch_set_deferred_max(srv->dispatch, srv->cfg->server_deferred_max);
    ksfi_dispatch_set_window(srv->dispatch, (size_t)srv->cfg->server_partition_window,
                             (size_t)srv->cfg->server_partition_window_bytes);
    if ((e = ksfi_dispatch_start(srv->dispatch, srv->cfg->server_workers,
                                 ksfi_sc_handle(srv->consumer), ei))) {
        return e;
    }
    /* A wrong address or a broker that is not up is reported now, not never: the
     * consumer would retry quietly while run waits for a group join. */
    e = ksfi_sc_reach(srv->consumer, srv->cfg, srv->cfg->broker_unreachable_ms,
                      &srv->stop_requested, ei);
    if (e) {
        srv->commit_wait_ms = KSFI_GONE_WAIT_MS; /* nothing to commit, nobody to tell */
        return e == KSF_ECLOSED ? KSF_OK : e;
    }
    return subscribe(srv, ei);
}

/* Leave the group (the revoked op runs here), for a bounded time: with the broker
 * gone, leaving would wait for it for tens of seconds. */
static void
close_bounded(ksf_server *srv)
{
    int wait_ms =
        srv->commit_wait_ms == KSFI_GONE_WAIT_MS ? KSFI_GONE_WAIT_MS : KSFI_CLOSE_WAIT_MS;
    const char *why;
    char buf[256];
    srv->consumer_closed = ksfi_sc_close(srv->consumer, wait_ms, &why, buf, sizeof buf);
    if (!srv->consumer_closed) {
        ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
                 "leaving group %s did not finish within %d ms (%s); the group will "
                 "notice after session.timeout.ms",
                 srv->group_id, wait_ms, why);
    }
}

/* Stop in the documented order; safe after a partial start. */
static void
shut_down(ksf_server *srv)
{
    if (srv->consumer) {
        size_t left = ksfi_dispatch_drain(srv->dispatch, KSFI_STOP_DRAIN_MS);
        if (left) {
            ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
                     "stopping with %zu message(s) unfinished after %d ms; they will be "
                     "delivered again",
                     left, KSFI_STOP_DRAIN_MS);
        }
    }
    ksfi_dispatch_stop(srv->dispatch);
    ksfi_log_limiter_flush(&srv->log, &srv->log_limit, KSF_LOG_WARNING, "server");
    if (srv->consumer) {
        commit_bounded(srv, "at stop");
        close_bounded(srv);
    }
    pthread_rwlock_wrlock(&srv->replies_lock);
    srv->replies_open = false;
    pthread_rwlock_unlock(&srv->replies_lock);
    atomic_store(&srv->threads_exit, true);
    ksf_server_stop(srv); /* wakes the watcher */
    if (srv->reports_hooked) {
        /* The workers are gone: flush below serves what is left. */
        ksfi_kafka_on_reports(srv->producer, NULL);
        srv->reports_hooked = false;
    }
    if (srv->watcher_started) {
        pthread_join(srv->watcher, NULL);
    }
    if (srv->producer) {
        /* Their offsets were not committed when the broker is gone: no long wait. */
        int flush_ms = srv->consumer_closed ? KSFI_FLUSH_MS : KSFI_GONE_WAIT_MS;
        int left = ksfi_kafka_flush(srv->producer, flush_ms);
        if (left) {
            ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
                     "%d reply message(s) not delivered within %d ms; dropping them",
                     left, flush_ms);
            ksfi_kafka_purge(srv->producer); /* delivery reports release the records */
        }
        ksfi_kafka_topics_free(srv->reply_topics);
        srv->reply_topics = NULL;
        ksfi_kafka_producer_destroy(srv->producer);
        srv->producer = NULL;
    }
}

ksf_err
ksf_server_run(ksf_server *srv, ksf_errinfo *ei)
{
    if (!srv) {
        return ksfi_fail(ei, KSF_EINVAL, "ksf_server_run: srv is NULL");
    }
    int expected = KSFI_SRV_NEW;
    if (!atomic_compare_exchange_strong(&srv->state, &expected, KSFI_SRV_RUNNING)) {
        return ksfi_fail(ei, KSF_ESTATE, "ksf_server_run: the server %s",
                         expected == KSFI_SRV_RUNNING
                             ? "is already running"
                             : "has already run; create a new one");
    }
    pthread_mutex_lock(&srv->run_lock);
    srv->run_active = true;
    pthread_mutex_unlock(&srv->run_lock);
    ksf_err e = KSF_OK;
    if (atomic_load(&srv->stop_requested)) {
        goto out;
    }
    if (srv->nhandlers + srv->nextra == 0) {
        e = ksfi_fail(ei, KSF_EINVAL,
                      "no handler is registered; call ksf_server_mount, "
                      "ksf_server_on_message or ksf_server_on_event first");
        goto out;
    }
    /* pipeline: the handlers are final now; resolve their middleware chains. */
    if ((e = ksfi_server_freeze_pipeline(srv, ei))) {
        goto out;
    }
    char nw[24];
    ksf_log_field f[] = {{"client", srv->client_id},
                         {"group", srv->group_id},
                         {"workers", KSFI_LOG_NUM(nw, srv->cfg->server_workers)}};
    ksfi_logkv(&srv->log, KSF_LOG_INFO, "server", f, 3, "starting");
    if (!(e = start(srv, ei))) {
        e = consume(srv, ei);
    }
    shut_down(srv);
    ksfi_logkv(&srv->log, KSF_LOG_INFO, "server", f, 2, "stopped");
out:
    atomic_store(&srv->state, KSFI_SRV_DONE);
    pthread_mutex_lock(&srv->run_lock);
    srv->run_active = false;
    pthread_cond_broadcast(&srv->run_cond);
    pthread_mutex_unlock(&srv->run_lock);
    return e;
}
