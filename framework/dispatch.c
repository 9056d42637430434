#include "dispatch.h"

#include "alloc.h"
#include "ctx.h"
#include "errinfo.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

/*
 * One partition's state. Contexts form a list in offset order from the oldest
 * incomplete one (head) to the newest (tail); next_run is the first not yet started.
 * Partitions live until the pool is destroyed, so contexts may point at them safely;
 * `epoch` changes on every assign/revoke so that late completions of a revoked
 * generation store nothing.
 */
typedef struct ksfi_part {
    char *topic;
    int32_t partition;
    uint64_t epoch;
    bool assigned;
    bool busy; /* a worker runs one of its handlers now */
    bool in_ready;
    bool paused;         /* as last applied to the consumer */
    bool want_paused;    /* as decided from the queue length */
    int64_t next_offset; /* next offset expected from the consumer (dedup on refetch) */
    ksf_ctx *head, *tail, *next_run;
    size_t queued;  /* not yet started */
    size_t pending; /* started and not complete */
    struct ksfi_part *next_ready;
} ksfi_part;

struct ksfi_dispatch {
    const ksfi_logger *log;
    pthread_mutex_t lock; /* guards everything below and every ctx's dispatch fields */
    pthread_cond_t work;  /* a partition became ready, or stopping */
    pthread_cond_t idle;  /* a context completed or a handler returned */
    ksfi_part **parts;
    size_t nparts;
    ksfi_part *ready_head, *ready_tail;
    /* Started contexts of revoked partitions, not complete yet (linked by next): a
     * deferred one may never be finished, and destroy must still free it. */
    ksf_ctx *orphans;
    size_t queued_high;   /* the most messages one partition ever had queued */
    rd_kafka_t *consumer; /* NULL when not running: nothing is stored */
    pthread_t *threads;
    int nthreads;
    bool stopping;
};

ksf_err
ksfi_dispatch_new(ksfi_dispatch **out, const ksfi_logger *lg)
{
    ksfi_dispatch *d = ksfi_calloc(1, sizeof *d);
    if (!d) {
        return KSF_ENOMEM;
    }
    d->log = lg;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->work, NULL);
    pthread_cond_init(&d->idle, NULL);
    *out = d;
    return KSF_OK;
}

/* Unlink and free every context of @p p (pool teardown or dropped queue). */
static void
free_list(ksf_ctx *c)
{
    while (c) {
        ksf_ctx *next = c->next;
        ksfi_ctx_free(c);
        c = next;
    }
}

void
ksfi_dispatch_destroy(ksfi_dispatch *d)
{
    if (!d) {
        return;
    }
    for (size_t i = 0; i < d->nparts; i++) {
        free_list(d->parts[i]->head);
        ksfi_free(d->parts[i]->topic);
        ksfi_free(d->parts[i]);
    }
    free_list(d->orphans);
    ksfi_free(d->parts);
    ksfi_free(d->threads);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->work);
    pthread_cond_destroy(&d->idle);
    ksfi_free(d);
}

/* Find or create the partition; NULL on ENOMEM. Lock held. */
static ksfi_part *
part_get(ksfi_dispatch *d, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < d->nparts; i++) {
        if (d->parts[i]->partition == partition && !strcmp(d->parts[i]->topic, topic)) {
            return d->parts[i];
        }
    }
    ksfi_part **grown = ksfi_realloc(d->parts, (d->nparts + 1) * sizeof *grown);
    if (!grown) {
        return NULL;
    }
    d->parts = grown;
    ksfi_part *p = ksfi_calloc(1, sizeof *p);
    if (!p || !(p->topic = ksfi_strdup(topic))) {
        ksfi_free(p);
        return NULL;
    }
    p->partition = partition;
    p->next_offset = -1;
    d->parts[d->nparts++] = p;
    return p;
}

static void
make_ready(ksfi_dispatch *d, ksfi_part *p)
{
    if (p->in_ready || p->busy || !p->next_run || !p->assigned || d->stopping) {
        return;
    }
    p->in_ready = true;
    p->next_ready = NULL;
    if (d->ready_tail) {
        d->ready_tail->next_ready = p;
    } else {
        d->ready_head = p;
    }
    d->ready_tail = p;
    pthread_cond_signal(&d->work);
}

static void
update_pause(ksfi_part *p)
{
    if (p->queued >= KSFI_DISPATCH_PAUSE_AT) {
        p->want_paused = true;
    } else if (p->queued <= KSFI_DISPATCH_RESUME_AT) {
        p->want_paused = false;
    }
}

void
ksfi_dispatch_submit(ksfi_dispatch *d, ksf_ctx *ctx)
{
    const rd_kafka_message_t *m = ctx->msg;
    pthread_mutex_lock(&d->lock);
    ksfi_part *p = part_get(d, ctx->topic, m->partition);
    /* Not ours (any more), or already seen (a refetch after pause/resume): drop it
     * unstored; the owner of the partition will get it from the committed offset. */
    if (!p || !p->assigned || (p->next_offset >= 0 && m->offset < p->next_offset)) {
        pthread_mutex_unlock(&d->lock);
        ksfi_log(d->log, KSF_LOG_DEBUG, "server", "dropping %s[%d]@%lld: %s", ctx->topic,
                 (int)m->partition, (long long)m->offset,
                 p ? "not assigned or already queued" : "out of memory");
        ksfi_ctx_free(ctx);
        return;
    }
    p->next_offset = m->offset + 1;
    ctx->dispatch = d;
    ctx->part = p;
    ctx->epoch = p->epoch;
    ctx->next = NULL;
    if (p->tail) {
        p->tail->next = ctx;
    } else {
        p->head = ctx;
    }
    p->tail = ctx;
    if (!p->next_run) {
        p->next_run = ctx;
    }
    p->queued++;
    if (p->queued > d->queued_high) {
        d->queued_high = p->queued;
    }
    update_pause(p);
    make_ready(d, p);
    pthread_mutex_unlock(&d->lock);
}

size_t
ksfi_dispatch_queued_high(ksfi_dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    size_t n = d->queued_high;
    pthread_mutex_unlock(&d->lock);
    return n;
}

/* Store the offset after the contiguous completed prefix and free that prefix. */
static void
advance(ksfi_dispatch *d, ksfi_part *p)
{
    int64_t last = -1;
    while (p->head && p->head->done) {
        ksf_ctx *c = p->head;
        last = c->msg->offset;
        p->head = c->next;
        if (p->tail == c) {
            p->tail = NULL;
        }
        ksfi_ctx_free(c);
    }
    if (last < 0 || !d->consumer) {
        return;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = last + 1;
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(d->consumer, l);
    if (err) {
        ksfi_log(d->log, KSF_LOG_WARNING, "server", "storing offset %s[%d]@%lld: %s",
                 p->topic, (int)p->partition, (long long)(last + 1),
                 rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

void
ksfi_dispatch_done(ksf_ctx *ctx)
{
    ksfi_part *p = ctx->part;
    if (!p) { /* never submitted */
        ksfi_ctx_free(ctx);
        return;
    }
    /* The pool outlives every context: destroy frees those still held. */
    ksfi_dispatch *d = ctx->dispatch;
    pthread_mutex_lock(&d->lock);
    if (ctx->epoch != p->epoch) {
        /* Revoked while it ran: unlinked from the window, kept among the orphans. */
        ksf_ctx **link = &d->orphans;
        while (*link && *link != ctx) {
            link = &(*link)->next;
        }
        if (*link) {
            *link = ctx->next;
        }
        ksfi_ctx_free(ctx);
    } else {
        ctx->done = true;
        p->pending--;
        advance(d, p);
    }
    pthread_cond_broadcast(&d->idle);
    pthread_mutex_unlock(&d->lock);
}

static void *
worker_main(void *arg)
{
    ksfi_dispatch *d = arg;
    pthread_mutex_lock(&d->lock);
    for (;;) {
        while (!d->ready_head && !d->stopping) {
            pthread_cond_wait(&d->work, &d->lock);
        }
        if (!d->ready_head) {
            break; /* stopping, and nothing left that may run */
        }
        ksfi_part *p = d->ready_head;
        d->ready_head = p->next_ready;
        if (!d->ready_head) {
            d->ready_tail = NULL;
        }
        p->in_ready = false;
        ksf_ctx *c = p->next_run;
        p->next_run = c->next;
        c->started = true;
        p->queued--;
        p->pending++;
        p->busy = true;
        update_pause(p);
        pthread_mutex_unlock(&d->lock);

        ksfi_ctx_run(c); /* c may be freed when this returns */

        pthread_mutex_lock(&d->lock);
        p->busy = false;
        make_ready(d, p);
        pthread_cond_broadcast(&d->idle);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

ksf_err
ksfi_dispatch_start(ksfi_dispatch *d, int workers, rd_kafka_t *consumer, ksf_errinfo *ei)
{
    d->threads = ksfi_calloc((size_t)workers, sizeof *d->threads);
    if (!d->threads) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory starting %d workers", workers);
    }
    d->consumer = consumer;
    d->stopping = false;
    for (int i = 0; i < workers; i++) {
        int rc = pthread_create(&d->threads[i], NULL, worker_main, d);
        if (rc) {
            ksfi_dispatch_stop(d);
            return ksfi_fail(ei, KSF_EINVAL, "cannot start worker thread %d of %d: %s",
                             i + 1, workers, strerror(rc));
        }
        d->nthreads = i + 1;
    }
    return KSF_OK;
}

void
ksfi_dispatch_assign(ksfi_dispatch *d, const rd_kafka_topic_partition_list_t *parts)
{
    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < parts->cnt; i++) {
        ksfi_part *p = part_get(d, parts->elems[i].topic, parts->elems[i].partition);
        if (!p) {
            ksfi_log(d->log, KSF_LOG_ERROR, "server",
                     "out of memory tracking %s[%d]; its messages will not be served",
                     parts->elems[i].topic, (int)parts->elems[i].partition);
            continue;
        }
        p->assigned = true;
        p->epoch++;
        p->next_offset = -1;
        p->paused = p->want_paused = false;
    }
    pthread_mutex_unlock(&d->lock);
}

/* Absolute deadline @p ms from now on CLOCK_REALTIME (pthread_cond_timedwait's). */
static struct timespec
deadline_in(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Forget @p p's window: queued contexts are freed, started ones become orphans, freed
 * by ksfi_dispatch_done when they complete (their epoch no longer matches) or by
 * ksfi_dispatch_destroy. */
static void
detach(ksfi_dispatch *d, ksfi_part *p)
{
    if (p->in_ready) { /* unlink from the ready list */
        ksfi_part **pp = &d->ready_head, *prev = NULL;
        while (*pp != p) {
            prev = *pp;
            pp = &(*pp)->next_ready;
        }
        *pp = p->next_ready;
        if (d->ready_tail == p) {
            d->ready_tail = prev;
        }
        p->in_ready = false;
    }
    ksf_ctx *c = p->head;
    while (c) {
        ksf_ctx *next = c->next;
        if (!c->started || c->done) {
            ksfi_ctx_free(c);
        } else {
            c->next = d->orphans;
            d->orphans = c;
        }
        c = next;
    }
    p->head = p->tail = p->next_run = NULL;
    p->queued = p->pending = 0;
    p->assigned = false;
    p->epoch++;
}

/* Cut the not-yet-started tail off @p p's window and free it: the next owner of the
 * partition gets those messages again from the committed offset. */
static void
drop_queued(ksfi_part *p)
{
    if (!p->next_run) {
        return;
    }
    ksf_ctx *prev = NULL;
    for (ksf_ctx *c = p->head; c != p->next_run; c = c->next) {
        prev = c;
    }
    if (prev) {
        prev->next = NULL;
    } else {
        p->head = NULL;
    }
    p->tail = prev;
    free_list(p->next_run);
    p->next_run = NULL;
    p->queued = 0;
}

size_t
ksfi_dispatch_revoke(ksfi_dispatch *d, const rd_kafka_topic_partition_list_t *parts,
                     int timeout_ms)
{
    struct timespec until = deadline_in(timeout_ms);
    size_t left = 0;
    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < parts->cnt; i++) {
        ksfi_part *p = part_get(d, parts->elems[i].topic, parts->elems[i].partition);
        if (!p || !p->assigned) {
            continue;
        }
        drop_queued(p);
        int rc = 0;
        while (p->pending > 0 && rc != ETIMEDOUT) {
            rc = pthread_cond_timedwait(&d->idle, &d->lock, &until);
        }
        if (p->pending > 0) {
            ksfi_log(d->log, KSF_LOG_WARNING, "server",
                     "%s[%d] revoked with %zu message(s) still unfinished; the next "
                     "owner will handle them again",
                     p->topic, (int)p->partition, p->pending);
            left += p->pending;
        }
        detach(d, p);
    }
    pthread_mutex_unlock(&d->lock);
    return left;
}

void
ksfi_dispatch_sync_pause(ksfi_dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    for (size_t i = 0; i < d->nparts; i++) {
        ksfi_part *p = d->parts[i];
        if (!p->assigned || p->paused == p->want_paused || !d->consumer) {
            continue;
        }
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        rd_kafka_resp_err_t err = p->want_paused
                                      ? rd_kafka_pause_partitions(d->consumer, l)
                                      : rd_kafka_resume_partitions(d->consumer, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (err) {
            ksfi_log(d->log, KSF_LOG_WARNING, "server", "%s %s[%d]: %s",
                     p->want_paused ? "pausing" : "resuming", p->topic, (int)p->partition,
                     rd_kafka_err2str(err));
            continue;
        }
        p->paused = p->want_paused;
        ksfi_log(d->log, KSF_LOG_DEBUG, "server", "%s %s[%d] (%zu queued)",
                 p->paused ? "paused" : "resumed", p->topic, (int)p->partition,
                 p->queued);
    }
    pthread_mutex_unlock(&d->lock);
}

/* Messages queued or started and not complete, over all partitions. Lock held. */
static size_t
unfinished(const ksfi_dispatch *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->nparts; i++) {
        n += d->parts[i]->queued + d->parts[i]->pending;
    }
    return n;
}

/* Stop starting handlers: drop every queued message (lock held). */
static void
quiesce(ksfi_dispatch *d)
{
    d->stopping = true;
    for (size_t i = 0; i < d->nparts; i++) {
        drop_queued(d->parts[i]);
        d->parts[i]->in_ready = false;
    }
    d->ready_head = d->ready_tail = NULL;
    pthread_cond_broadcast(&d->work);
}

size_t
ksfi_dispatch_drain(ksfi_dispatch *d, int timeout_ms)
{
    struct timespec until = deadline_in(timeout_ms);
    pthread_mutex_lock(&d->lock);
    quiesce(d);
    int rc = 0;
    size_t left;
    while ((left = unfinished(d)) > 0 && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&d->idle, &d->lock, &until);
    }
    pthread_mutex_unlock(&d->lock);
    return left;
}

void
ksfi_dispatch_stop(ksfi_dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    quiesce(d);
    pthread_mutex_unlock(&d->lock);
    for (int i = 0; i < d->nthreads; i++) {
        pthread_join(d->threads[i], NULL);
    }
    ksfi_free(d->threads);
    d->threads = NULL;
    d->nthreads = 0;
    pthread_mutex_lock(&d->lock);
    d->consumer = NULL;
    for (size_t i = 0; i < d->nparts; i++) {
        d->parts[i]->assigned = false;
    }
    pthread_mutex_unlock(&d->lock);
}
