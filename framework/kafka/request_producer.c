/*
 * The client's request producer (request_producer.h) on librdkafka: the producer
 * handle and its main queue, where its delivery reports wait for the client's delivery
 * thread.
 */
#include "kafka/request_producer.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "kafka/kafka.h"
#include "kafka/reach.h"

#include <string.h>

struct ksfi_request_producer {
    rd_kafka_t *rk;
    ksfi_kafka_topics *topics; /* kept topic handles (produce.h) */
    rd_kafka_queue_t *q; /* the main queue: delivery reports; yielded to wake serve */
    void (*on_report)(void *arg); /* ksfi_request_producer_on_report's */
    void *on_report_arg;
};

ksf_err
ksfi_request_producer_new(const ksf_config *cfg, const char *client_id,
                          const ksfi_logger *log, ksfi_request_producer **out,
                          ksf_errinfo *ei)
{
    char err[256];
    rd_kafka_conf_t *conf = NULL;
    ksfi_request_producer *p = ksfi_calloc(1, sizeof *p);
    if (!p) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    ksf_err e = ksfi_kafka_conf(cfg, KSF_KAFKA_PRODUCER, client_id, NULL, &conf, ei);
    if (e) {
        ksfi_free(p);
        return e;
    }
    /* ksfi_kafka_log_cb reads the logger from the opaque. */
    rd_kafka_conf_set_opaque(conf, (void *)log);
    ksfi_kafka_conf_delivery(conf);
    if (!(p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err))) {
        rd_kafka_conf_destroy(conf);
        ksfi_free(p);
        return ksfi_fail(ei, KSF_EKAFKA, "cannot create the request producer: %s", err);
    }
    if ((e = ksfi_kafka_topics_new(&p->topics, ei))) {
        rd_kafka_destroy(p->rk);
        ksfi_free(p);
        return e;
    }
    p->q = rd_kafka_queue_get_main(p->rk);
    *out = p;
    return KSF_OK;
}

void
ksfi_request_producer_destroy(ksfi_request_producer *p, int flush_ms)
{
    if (!p) {
        return;
    }
    /* The reports that follow are served here, by the flush: nobody is to be woken. */
    rd_kafka_queue_cb_event_enable(p->q, NULL, NULL);
    /* Whatever is still queued fails now; its reports free what they carry. */
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(p->rk, flush_ms);
    rd_kafka_queue_destroy(p->q);
    ksfi_kafka_topics_free(p->topics);
    rd_kafka_destroy(p->rk);
    ksfi_free(p);
}

ksf_err
ksfi_request_producer_produce(ksfi_request_producer *p, const ksfi_kafka_out *m,
                              ksf_errinfo *ei)
{
    ksfi_kafka_out out = *m;
    out.topics = p->topics;
    return ksfi_kafka_produce(p->rk, &out, ei);
}

int
ksfi_request_producer_queued(ksfi_request_producer *p)
{
    return rd_kafka_outq_len(p->rk);
}

void
ksfi_request_producer_serve(ksfi_request_producer *p, int timeout_ms)
{
    rd_kafka_queue_poll_callback(p->q, timeout_ms);
}

/* librdkafka's queue event: the main queue was empty and has an event now. */
static void
report_event(rd_kafka_t *rk, void *opaque)
{
    (void)rk;
    ksfi_request_producer *p = opaque;
    p->on_report(p->on_report_arg);
}

void
ksfi_request_producer_on_report(ksfi_request_producer *p, void (*fn)(void *arg),
                                void *arg)
{
    p->on_report = fn;
    p->on_report_arg = arg;
    rd_kafka_queue_cb_event_enable(p->q, fn ? report_event : NULL, fn ? p : NULL);
}

void
ksfi_request_producer_wake(ksfi_request_producer *p)
{
    rd_kafka_queue_yield(p->q);
}

ksf_err
ksfi_request_producer_reach(ksfi_request_producer *p, const ksf_config *cfg,
                            int timeout_ms, atomic_bool *stop, ksf_errinfo *ei)
{
    return ksfi_reach_brokers(p->rk, cfg, timeout_ms, stop, ei);
}

bool
ksfi_request_producer_topic_exists(ksfi_request_producer *p, const char *topic,
                                   int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(p->rk, 1, NULL, &md, timeout_ms) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
        return true;
    }
    bool found = false;
    for (int i = 0; i < md->topic_cnt && !found; i++) {
        found = !strcmp(md->topics[i].topic, topic) &&
                md->topics[i].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    }
    rd_kafka_metadata_destroy(md);
    return found;
}
