#include "kafka/produce.h"

#include "base/alloc.h"
#include "kafka/kafka.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* The pause between tries while librdkafka's queue is full. */
#define QUEUE_FULL_PAUSE_MS 10

static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    ksfi_kafka_delivery *d = m->_private;
    if (!d || !d->fn) {
        return;
    }
    ksfi_kafka_report r = {
        .err = m->err ? KSF_EKAFKA : KSF_OK,
        .error = m->err ? rd_kafka_err2str(m->err) : NULL,
        .topic = m->rkt ? rd_kafka_topic_name(m->rkt) : "",
        .partition = m->partition,
        .offset = m->err ? -1 : m->offset,
    };
    d->fn(d, &r);
}

struct ksfi_kafka_topics {
    pthread_mutex_t lock; /* serialises additions; lookups take no lock */
    /* Entries [0, n) are complete and never change until ksfi_kafka_topics_free: an
     * addition writes its entry, then publishes it by a release store of n. */
    atomic_size_t n;
    struct {
        char *name;
        rd_kafka_topic_t *rkt;
    } kept[KSFI_KAFKA_TOPICS_MAX];
};

ksf_err
ksfi_kafka_topics_new(ksfi_kafka_topics **out, ksf_errinfo *ei)
{
    ksfi_kafka_topics *t = ksfi_calloc(1, sizeof *t);
    if (!t) {
        *out = NULL;
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory keeping a producer's topics");
    }
    pthread_mutex_init(&t->lock, NULL);
    atomic_init(&t->n, 0);
    *out = t;
    return KSF_OK;
}

size_t
ksfi_kafka_topics_kept(ksfi_kafka_topics *t)
{
    return atomic_load_explicit(&t->n, memory_order_acquire);
}

void
ksfi_kafka_topics_free(ksfi_kafka_topics *t)
{
    if (!t) {
        return;
    }
    size_t n = atomic_load_explicit(&t->n, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_topic_destroy(t->kept[i].rkt);
        ksfi_free(t->kept[i].name);
    }
    pthread_mutex_destroy(&t->lock);
    ksfi_free(t);
}

static rd_kafka_topic_t *
kept_topic(ksfi_kafka_topics *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(t->kept[i].name, name) == 0) {
            return t->kept[i].rkt;
        }
    }
    return NULL;
}

/* Keep @p rkt (just created for @p name) in @p t. Returns false when it was not kept
 * (the set is full, out of memory, or another thread kept one first): the caller then
 * releases it after use. */
static bool
keep_topic(ksfi_kafka_topics *t, const char *name, rd_kafka_topic_t *rkt)
{
    bool kept = false;
    pthread_mutex_lock(&t->lock);
    size_t n = atomic_load_explicit(&t->n, memory_order_relaxed);
    if (n < KSFI_KAFKA_TOPICS_MAX && !kept_topic(t, n, name)) {
        char *copy = ksfi_strdup(name);
        if (copy) {
            t->kept[n].name = copy;
            t->kept[n].rkt = rkt;
            atomic_store_explicit(&t->n, n + 1, memory_order_release);
            kept = true;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return kept;
}

/* The topic handle for @p name: a kept one, or a new one (*release set: the caller
 * releases it after producing). NULL: librdkafka refused the topic. */
static rd_kafka_topic_t *
topic_handle(rd_kafka_t *rk, ksfi_kafka_topics *t, const char *name, bool *release)
{
    *release = false;
    if (t) {
        rd_kafka_topic_t *rkt =
            kept_topic(t, atomic_load_explicit(&t->n, memory_order_acquire), name);
        if (rkt) {
            return rkt;
        }
    }
    /* rd_kafka_topic_new, unlike producev's own lookup by name, asks for the metadata
     * of a topic the producer does not know yet at once: otherwise the first message to
     * a new topic waits for librdkafka 2.0.2's 1 s topic scan (~800 ms cold start). */
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, name, NULL);
    if (rkt && !(t && keep_topic(t, name, rkt))) {
        *release = true;
    }
    return rkt;
}

void
ksfi_kafka_conf_delivery(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
}

ksf_err
ksfi_kafka_produce(rd_kafka_t *rk, const ksfi_kafka_out *m, ksf_errinfo *ei)
{
    const char *what = m->what ? m->what : "a message";
    if (!m->topic) {
        return ksfi_fail(ei, KSF_EINVAL, "producing %s: no topic given", what);
    }
    rd_kafka_headers_t *h = NULL;
    if (m->nhdrs) {
        h = rd_kafka_headers_new(m->nhdrs);
        if (ksfi_kafka_add_headers(h, m->hdrs, m->nhdrs)) {
            rd_kafka_headers_destroy(h);
            return ksfi_fail(ei, KSF_EKAFKA, "building the headers of %s to %s", what,
                             m->topic);
        }
    }
    bool release;
    rd_kafka_topic_t *rkt = topic_handle(rk, m->topics, m->topic, &release);
    char why[300];
    if (!rkt) {
        if (h) {
            rd_kafka_headers_destroy(h);
        }
        snprintf(why, sizeof why, "%s to topic %s", what, m->topic);
        return ksfi_kafka_fail(ei, rd_kafka_last_error(), why);
    }
    int32_t partition = m->partition < 0 ? RD_KAFKA_PARTITION_UA : m->partition;
    int tries_left = m->queue_full_wait_ms / QUEUE_FULL_PAUSE_MS;
    rd_kafka_resp_err_t err;
    for (;;) {
        err = rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(partition),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_VALUE((void *)m->value, m->value ? m->len : 0),
                                RD_KAFKA_V_KEY((void *)m->key, m->key ? m->key_len : 0),
                                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(m->delivery),
                                RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries_left-- <= 0) {
            break;
        }
        if (m->serve_while_full) {
            /* Returns as soon as reports were served: the queue has room again. */
            rd_kafka_poll(rk, QUEUE_FULL_PAUSE_MS);
        } else {
            struct timespec ts = {0, QUEUE_FULL_PAUSE_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (release) {
        rd_kafka_topic_destroy(rkt);
    }
    if (err) {
        /* On failure the headers stay ours. */
        if (h) {
            rd_kafka_headers_destroy(h);
        }
        snprintf(why, sizeof why, "producing %s to %s%s", what, m->topic,
                 err == RD_KAFKA_RESP_ERR__QUEUE_FULL
                     ? " (producer queue full: retry later or flush)"
                     : "");
        return ksfi_kafka_fail(ei, err, why);
    }
    return KSF_OK;
}

ksf_err
ksfi_kafka_producer_new(const ksf_config *cfg, const char *client_id, void *opaque,
                        const char *what, rd_kafka_t **out, ksf_errinfo *ei)
{
    rd_kafka_conf_t *conf = NULL;
    char err[256];
    ksf_err e = ksfi_kafka_conf(cfg, KSF_KAFKA_PRODUCER, client_id, NULL, &conf, ei);
    if (e) {
        return e;
    }
    ksfi_kafka_conf_delivery(conf);
    rd_kafka_conf_set_opaque(conf, opaque);
    *out = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!*out) {
        rd_kafka_conf_destroy(conf);
        return ksfi_fail(ei, KSF_EKAFKA, "creating %s: %s", what, err);
    }
    return KSF_OK;
}

void
ksfi_kafka_poll(rd_kafka_t *rk, int timeout_ms)
{
    rd_kafka_poll(rk, timeout_ms);
}

static void
on_queue_event(rd_kafka_t *rk, void *qev_opaque)
{
    (void)rk;
    ksfi_kafka_reports_hook *hook = qev_opaque;
    hook->fn(hook);
}

void
ksfi_kafka_on_reports(rd_kafka_t *rk, ksfi_kafka_reports_hook *hook)
{
    /* The main queue is where a producer's delivery reports wait for rd_kafka_poll;
     * librdkafka 2.0.2 calls the event when an op lands in it while it is empty. */
    rd_kafka_queue_t *q = rd_kafka_queue_get_main(rk);
    rd_kafka_queue_cb_event_enable(q, hook ? on_queue_event : NULL, hook);
    rd_kafka_queue_destroy(q);
}

int
ksfi_kafka_queued(rd_kafka_t *rk)
{
    return rd_kafka_outq_len(rk);
}

int
ksfi_kafka_flush(rd_kafka_t *rk, int timeout_ms)
{
    return rd_kafka_flush(rk, timeout_ms) ? rd_kafka_outq_len(rk) : 0;
}

void
ksfi_kafka_purge(rd_kafka_t *rk)
{
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(rk, 0); /* the purged messages' delivery reports */
}

void
ksfi_kafka_producer_destroy(rd_kafka_t *rk)
{
    if (rk) {
        rd_kafka_destroy(rk);
    }
}
