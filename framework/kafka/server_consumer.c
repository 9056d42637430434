#include "kafka/server_consumer.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/errinfo.h"
#include "kafka/kafka.h"
#include "kafka/reach.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

struct ksfi_server_consumer {
    ksfi_logger log; /* first member: librdkafka's log callback reads it (kafka.h) */
    const ksfi_sc_ops *ops;
    void *user;
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue; /* the consumer queue, yielded by wake */
    bool closed;             /* the group was left within the close's wait */
    char strategy[64];
};

/* How long the close waits for more rebalance events before it leaves: serving one may
 * bring the next at once (a cooperative revoke is followed by an assign). */
#define KSFI_SC_SETTLE_MS 100

static int64_t
now_ms(void)
{
    return ksfi_clock_ms();
}

/* @p l as parts (ksfi_malloc'd, topics borrowed from @p l); NULL for an empty list. */
static ksfi_sc_part *
parts_of(const rd_kafka_topic_partition_list_t *l, bool *oom)
{
    *oom = false;
    if (!l || l->cnt <= 0) {
        return NULL;
    }
    ksfi_sc_part *v = ksfi_calloc((size_t)l->cnt, sizeof *v);
    if (!v) {
        *oom = true;
        return NULL;
    }
    for (int i = 0; i < l->cnt; i++) {
        v[i] =
            (ksfi_sc_part){l->elems[i].topic, l->elems[i].partition, l->elems[i].offset};
    }
    return v;
}

static rd_kafka_topic_partition_list_t *
list_of(const ksfi_sc_part *parts, size_t n)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_topic_partition_list_add(l, parts[i].topic, parts[i].partition)->offset =
            parts[i].offset;
    }
    return l;
}

/*
 * librdkafka's rebalance callback: the server's op decides, then the assignment is
 * applied the way the group's protocol wants (cooperative: incremental; eager: the
 * whole assignment, or none).
 */
static void
rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
             rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    ksfi_server_consumer *c = opaque;
    bool coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    rd_kafka_error_t *error = NULL;
    bool oom;
    ksfi_sc_part *v = parts_of(parts, &oom);
    size_t n = oom ? 0 : (size_t)parts->cnt;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (oom) {
            ksfi_log(&c->log, KSF_LOG_ERROR, "server",
                     "out of memory tracking %d assigned partition(s); their messages "
                     "will not be served",
                     parts->cnt);
        } else {
            c->ops->assigned(c->user, v, n);
            for (size_t i = 0; i < n; i++) {
                parts->elems[i].offset = v[i].offset;
            }
        }
        if (coop) {
            error = rd_kafka_incremental_assign(rk, parts);
            err = RD_KAFKA_RESP_ERR_NO_ERROR;
        } else {
            err = rd_kafka_assign(rk, parts);
        }
    } else {
        if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
            ksfi_log(&c->log, KSF_LOG_ERROR, "server", "rebalance failed: %s",
                     rd_kafka_err2str(err));
        }
        if (oom) {
            ksfi_log(&c->log, KSF_LOG_ERROR, "server",
                     "out of memory revoking %d partition(s); their unfinished "
                     "messages are handled again by the next owner",
                     parts->cnt);
        } else if (c->ops->lost && rd_kafka_assignment_lost(rk)) {
            c->ops->lost(c->user, v, n);
        } else {
            c->ops->revoked(c->user, v, n);
        }
        if (coop) {
            error = rd_kafka_incremental_unassign(rk, parts);
        } else {
            err = rd_kafka_assign(rk, NULL);
        }
        err = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
    ksfi_free(v);
    if (error || err) {
        ksfi_log(&c->log, KSF_LOG_ERROR, "server", "applying an assignment: %s",
                 error ? rd_kafka_error_string(error) : rd_kafka_err2str(err));
        rd_kafka_error_destroy(error);
    }
}

/*
 * The consumer's log callback: librdkafka's line as usual, and its report of an offset
 * reset ("<topic> [<partition>]: offset reset (at offset <n>, ...) to ...", logged at
 * warning when the reset is due to an error: out of range, log truncation) handed to
 * the offset_reset op. librdkafka gives no other trace of an automatic reset
 * (auto.offset.reset=error would stop the partition for good: librdkafka 2.0.2 refuses
 * a seek on it). Runs on librdkafka's threads.
 */
static void
log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    ksfi_kafka_log_cb(rk, level, fac, buf);
    ksfi_server_consumer *c = rd_kafka_opaque(rk);
    char topic[256];
    int32_t partition;
    long long at;
    if (!c || !c->ops->offset_reset || strcmp(fac, "OFFSET") ||
        !strstr(buf, "offset reset (at offset ")) {
        return;
    }
    const char *thrd = "[thrd:"; /* librdkafka's prefix, "[thrd:main]: " */
    if (!strncmp(buf, thrd, strlen(thrd)) && strstr(buf, "]: ")) {
        buf = strstr(buf, "]: ") + 3;
    }
    if (sscanf(buf, "%255s [%" SCNd32 "]: offset reset (at offset %lld", topic,
               &partition, &at) != 3) {
        return;
    }
    c->ops->offset_reset(c->user, topic, partition, (int64_t)at);
}

static ksf_err
set_prop(rd_kafka_conf_t *conf, const char *key, const char *value, ksf_errinfo *ei)
{
    char err[256];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
        return ksfi_fail(ei, KSF_EINVAL, "%s: %s", key, err);
    }
    return KSF_OK;
}

ksf_err
ksfi_sc_new(const ksfi_sc_config *sc, ksfi_server_consumer **out, ksf_errinfo *ei)
{
    *out = NULL;
    ksfi_server_consumer *c = ksfi_calloc(1, sizeof *c);
    if (!c) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory creating the server's consumer");
    }
    c->log = *sc->log;
    c->ops = sc->ops;
    c->user = sc->user;
    rd_kafka_conf_t *conf = NULL;
    ksf_err e = ksfi_kafka_conf(sc->cfg, KSF_KAFKA_CONSUMER, sc->client_id, sc->group_id,
                                &conf, ei);
    /* KIP-345: librdkafka's group.instance.id makes the server a static member. */
    if (!e && sc->group_instance_id) {
        e = set_prop(conf, "group.instance.id", sc->group_instance_id, ei);
    }
    if (!e && sc->assignment_strategy) {
        e = set_prop(conf, "partition.assignment.strategy", sc->assignment_strategy, ei);
    }
    size_t slen = sizeof c->strategy;
    if (!e && rd_kafka_conf_get(conf, "partition.assignment.strategy", c->strategy,
                                &slen) != RD_KAFKA_CONF_OK) {
        snprintf(c->strategy, sizeof c->strategy, "?");
    }
    if (!e && sc->offset_reset) {
        e = set_prop(conf, "auto.offset.reset", sc->offset_reset, ei);
    }
    if (e) {
        if (conf) { /* NULL when ksfi_kafka_conf failed */
            rd_kafka_conf_destroy(conf);
        }
        ksfi_free(c);
        return e;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, c);
    e = ksfi_kafka_consumer_new(conf, "creating the server's consumer", &c->rk, &c->queue,
                                ei);
    if (e) {
        ksfi_free(c);
        return e;
    }
    *out = c;
    return KSF_OK;
}

const char *
ksfi_sc_strategy(const ksfi_server_consumer *c)
{
    return c->strategy;
}

ksfi_kafka_handle *
ksfi_sc_handle(ksfi_server_consumer *c)
{
    return c->rk;
}

ksf_err
ksfi_sc_reach(ksfi_server_consumer *c, const ksf_config *cfg, int timeout_ms,
              atomic_bool *stop, ksf_errinfo *ei)
{
    return ksfi_reach_brokers(c->rk, cfg, timeout_ms, stop, ei);
}

ksf_err
ksfi_sc_subscribe(ksfi_server_consumer *c, const char *const *topics, size_t n,
                  int64_t deadline, ksf_errinfo *ei)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        int count = 0;
        ksf_errinfo mei = {0};
        /* Failing here only costs the wait, which the consumer's "does not exist
         * (yet)" warning reports. */
        if (ksfi_kafka_partition_count(c->rk, topics[i], deadline, &count, &mei)) {
            ksfi_log(&c->log, KSF_LOG_WARNING, "server", "%s", mei.text);
        }
        rd_kafka_topic_partition_list_add(l, topics[i], RD_KAFKA_PARTITION_UA);
    }
    rd_kafka_resp_err_t err = rd_kafka_subscribe(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        return ksfi_kafka_fail(ei, err, "subscribing to the handler patterns");
    }
    return KSF_OK;
}

void
ksfi_sc_poll(ksfi_server_consumer *c, int timeout_ms, ksfi_sc_event *ev)
{
    ev->kind = KSFI_SC_NOTHING;
    ev->msg = NULL;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    if (!m) {
        return;
    }
    if (!m->err) {
        ev->kind = KSFI_SC_MESSAGE;
        ev->msg = m;
        return;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        rd_kafka_message_destroy(m);
        return;
    }
    ev->kind = KSFI_SC_ERROR;
    ev->kafka_err = m->err;
    snprintf(ev->topic, sizeof ev->topic, "%s",
             m->rkt ? rd_kafka_topic_name(m->rkt) : "?");
    snprintf(ev->text, sizeof ev->text, "%s", rd_kafka_message_errstr(m));
    switch (m->err) {
    case RD_KAFKA_RESP_ERR__FATAL: {
        char reason[256];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(c->rk, reason, sizeof reason);
        ev->kafka_err = orig;
        snprintf(ev->text, sizeof ev->text, "%s", reason);
        ev->error = orig == RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID ? KSFI_SC_ERR_FENCED
                                                                 : KSFI_SC_ERR_FATAL;
        break;
    }
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
        ev->error = KSFI_SC_ERR_UNKNOWN_TOPIC;
        break;
    case RD_KAFKA_RESP_ERR_INCONSISTENT_GROUP_PROTOCOL:
        ev->error = KSFI_SC_ERR_INCONSISTENT_PROTOCOL;
        break;
    default:
        ev->error = KSFI_SC_ERR_OTHER;
    }
    rd_kafka_message_destroy(m);
}

ksf_err
ksfi_sc_committed(ksfi_server_consumer *c, ksfi_sc_part *parts, size_t n, int timeout_ms,
                  ksf_errinfo *ei)
{
    rd_kafka_topic_partition_list_t *l = list_of(parts, n);
    rd_kafka_resp_err_t err = rd_kafka_committed(c->rk, l, timeout_ms);
    for (size_t i = 0; !err && i < n; i++) {
        parts[i].offset = l->elems[i].offset;
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        return ksfi_fail_kafka(ei, err, "reading committed offsets: %s",
                               rd_kafka_err2str(err));
    }
    return KSF_OK;
}

ksf_err
ksfi_sc_high_watermark(ksfi_server_consumer *c, const char *topic, int32_t partition,
                       int64_t deadline, int64_t *hi, ksf_errinfo *ei)
{
    return ksfi_kafka_high_watermark(c->rk, topic, partition, deadline, hi, ei);
}

ksf_err
ksfi_sc_commit(ksfi_server_consumer *c, const ksfi_sc_part *parts, size_t n, int wait_ms,
               ksf_errinfo *ei)
{
    rd_kafka_topic_partition_list_t *l = parts ? list_of(parts, n) : NULL;
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_resp_err_t err = rd_kafka_commit_queue(c->rk, l, q, NULL, NULL);
    if (!err) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, wait_ms);
        err = ev ? rd_kafka_event_error(ev) : RD_KAFKA_RESP_ERR__TIMED_OUT;
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(q);
    if (l) {
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (!err || err == RD_KAFKA_RESP_ERR__NO_OFFSET) {
        return KSF_OK;
    }
    if (err == RD_KAFKA_RESP_ERR__TIMED_OUT) {
        return ksfi_fail(ei, KSF_ETIMEDOUT, "%s", rd_kafka_err2str(err));
    }
    return ksfi_fail_kafka(ei, err, "%s", rd_kafka_err2str(err));
}

void
ksfi_sc_wake(ksfi_server_consumer *c)
{
    rd_kafka_queue_yield(c->queue);
}

/*
 * Serve one event of @p q, waiting at most @p wait_ms: a rebalance through rebalance_cb;
 * fetched messages and other events are dropped (unstored: a stopping server drops
 * every queued message, the next owner gets them). Events, not callbacks: the queue
 * also carries fetched messages, which rd_kafka_queue_poll_callback refuses (an
 * assertion in librdkafka). Returns true when it served a rebalance.
 */
static bool
serve_event(ksfi_server_consumer *c, rd_kafka_queue_t *q, int64_t wait_ms)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, wait_ms > 0 ? (int)wait_ms : 0);
    bool rebalance = ev && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE;
    if (rebalance) {
        rebalance_cb(c->rk, rd_kafka_event_error(ev),
                     rd_kafka_event_topic_partition_list(ev), c);
    }
    rd_kafka_event_destroy(ev);
    return rebalance;
}

bool
ksfi_sc_close(ksfi_server_consumer *c, int wait_ms, const char **why, char *buf,
              size_t size)
{
    int64_t until = now_ms() + wait_ms;
    /* The rebalances that came while the server stopped (it polls no more once stop is
     * asked for, and draining its handlers may take seconds) are served first, as
     * ordinary ones. Left for the close, they hang it for good in librdkafka 2.0.2: the
     * close turns a waiting assign into a full unassign, the group terminates on it,
     * and the incremental_unassign of the revoke that follows never returns (seen when
     * the member's assignment was lost meanwhile; tests/test_server_consumer.c). */
    int64_t settled = now_ms() + KSFI_SC_SETTLE_MS; /* fetched messages do not count */
    for (int64_t t = now_ms(); t < settled && t < until; t = now_ms()) {
        if (serve_event(c, c->queue, (settled < until ? settled : until) - t)) {
            settled = now_ms() + KSFI_SC_SETTLE_MS;
        }
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(c->rk, q);
    while (!error && !rd_kafka_consumer_closed(c->rk) && now_ms() < until) {
        serve_event(c, q, 50);
    }
    c->closed = !error && rd_kafka_consumer_closed(c->rk);
    *why = "broker unreachable?";
    if (error) {
        snprintf(buf, size, "%s", rd_kafka_error_string(error));
        *why = buf;
    }
    rd_kafka_error_destroy(error);
    rd_kafka_queue_destroy(q);
    return c->closed;
}

void
ksfi_sc_destroy(ksfi_server_consumer *c)
{
    if (!c) {
        return;
    }
    rd_kafka_queue_destroy(c->queue);
    /* An unfinished close is not retried: it would block as long as it did. */
    rd_kafka_destroy_flags(c->rk, c->closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    ksfi_free(c);
}
