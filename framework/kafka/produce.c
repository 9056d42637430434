#include "kafka/produce.h"

#include "kafka/kafka.h"

#include <stdio.h>
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
    /* rd_kafka_topic_new, unlike producev's own lookup by name, asks for the metadata
     * of a topic the producer does not know yet at once: otherwise the first message to
     * a new topic waits for librdkafka 2.0.2's 1 s topic scan (~800 ms cold start). */
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, m->topic, NULL);
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
    rd_kafka_topic_destroy(rkt);
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
