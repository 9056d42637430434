#include "kafka/kafka.h"

#include "kafka/consumer.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/errinfo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Defaults ksf applies before the user's properties (see docs/configuration.md). */
static const char *const common_defaults[][2] = {
    /* Request/reply is latency-bound: do not wait to batch. */
    {"socket.nagle.disable", "true"},
};
static const char *const producer_defaults[][2] = {
    {"linger.ms", "0"},
    /* A retried produce must not duplicate or reorder messages: a stream's values and
     * end marker arrive once and in order (idempotence implies acks=all). */
    {"enable.idempotence", "true"},
    {"acks", "all"},
};
static const char *const consumer_defaults[][2] = {
    /* ksf stores offsets itself after each reply is acknowledged. */
    {"enable.auto.offset.store", "false"},
    {"auto.offset.reset", "latest"},
    {"fetch.wait.max.ms", "100"},
    /* What a rebalance or crash hands to the next owner to run again is what was
     * answered since the last commit; librdkafka's 5 s default made that up to 5 s of
     * requests (the commit on revoke is refused by some brokers mid-rebalance). */
    {"auto.commit.interval.ms", "1000"},
    /* kafkajs (so NestJS) lets the broker create the topics a consumer names; so do we.
     * librdkafka 2.0.2's group subscription never asks for it, whatever this says, so
     * the server also names its topics in a Metadata request before subscribing. */
    {"allow.auto.create.topics", "true"},
};

void
ksfi_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    const ksfi_logger *lg = rd_kafka_opaque(rk);
    if (!lg) {
        return;
    }
    /* librdkafka speaks syslog levels; emergency, alert and critical become error. */
    int l = level < KSF_LOG_ERROR   ? KSF_LOG_ERROR
            : level > KSF_LOG_DEBUG ? KSF_LOG_DEBUG
                                    : level;
    ksf_log_field f[] = {{"facility", fac}, {"client", rd_kafka_name(rk)}};
    ksfi_logkv(lg, (ksf_log_level)l, "kafka", f, 2, "%s", buf);
}

static ksf_err
conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, ksf_errinfo *ei)
{
    char err[256];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
        return ksfi_fail(ei, KSF_EINVAL, "librdkafka property %s \"%s\": %s", key, value,
                         err);
    }
    return KSF_OK;
}

/* Was librdkafka property @p key set for consumers (kafka.* or consumer.*)? */
static const char *
consumer_prop(const ksf_config *cfg, const char *key)
{
    const char *v = NULL;
    for (size_t i = 0; i < cfg->nprops; i++) {
        if (cfg->props[i].role != KSF_KAFKA_PRODUCER && !strcmp(cfg->props[i].key, key)) {
            v = cfg->props[i].value;
        }
    }
    return v;
}

/* A session timeout set without a heartbeat interval brings the heartbeat down to a
 * third of it when librdkafka's 3000 ms would be more (Kafka's advice; below that a
 * member can miss its session after two lost heartbeats). */
static ksf_err
pair_heartbeat(const ksf_config *cfg, rd_kafka_conf_t *conf, ksf_errinfo *ei)
{
    const char *session = consumer_prop(cfg, "session.timeout.ms");
    if (!session || consumer_prop(cfg, "heartbeat.interval.ms")) {
        return KSF_OK;
    }
    long third = strtol(session, NULL, 10) / 3;
    if (third >= 3000 || third < 1) {
        return KSF_OK;
    }
    char v[24];
    snprintf(v, sizeof v, "%ld", third);
    return conf_set(conf, "heartbeat.interval.ms", v, ei);
}

ksf_err
ksfi_kafka_conf(const ksf_config *cfg, ksf_kafka_role role, const char *client_id,
                const char *group_id, rd_kafka_conf_t **out, ksf_errinfo *ei)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ksf_err e;
    if ((e = conf_set(conf, "bootstrap.servers", cfg->brokers, ei)) ||
        (e = conf_set(conf, "client.id", client_id, ei))) {
        goto fail;
    }
    if (group_id && (e = conf_set(conf, "group.id", group_id, ei))) {
        goto fail;
    }
    for (size_t i = 0; i < sizeof common_defaults / sizeof common_defaults[0]; i++) {
        if ((e = conf_set(conf, common_defaults[i][0], common_defaults[i][1], ei))) {
            goto fail;
        }
    }
    const char *const(*defaults)[2] =
        role == KSF_KAFKA_PRODUCER ? producer_defaults : consumer_defaults;
    size_t ndefaults = role == KSF_KAFKA_PRODUCER
                           ? sizeof producer_defaults / sizeof producer_defaults[0]
                           : sizeof consumer_defaults / sizeof consumer_defaults[0];
    for (size_t i = 0; i < ndefaults; i++) {
        if ((e = conf_set(conf, defaults[i][0], defaults[i][1], ei))) {
            goto fail;
        }
    }
    /* "kafka." properties first, then the role's, so the more specific one wins. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < cfg->nprops; i++) {
            const ksfi_kprop *p = &cfg->props[i];
            bool applies = pass == 0 ? p->role == KSF_KAFKA_ALL : p->role == role;
            if (applies && (e = conf_set(conf, p->key, p->value, ei))) {
                goto fail;
            }
        }
    }
    if (role == KSF_KAFKA_CONSUMER && (e = pair_heartbeat(cfg, conf, ei))) {
        goto fail;
    }
    rd_kafka_conf_set_log_cb(conf, ksfi_kafka_log_cb);
    *out = conf;
    return KSF_OK;
fail:
    rd_kafka_conf_destroy(conf);
    return e;
}

ksf_err
ksfi_kafka_header_views(const rd_kafka_message_t *msg, ksfi_header **buf, size_t *cap,
                        size_t *count)
{
    rd_kafka_headers_t *hdrs = NULL;
    *count = 0;
    if (rd_kafka_message_headers(msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR || !hdrs) {
        return KSF_OK;
    }
    size_t n = rd_kafka_header_cnt(hdrs);
    if (n == 0) {
        return KSF_OK;
    }
    if (n > *cap) {
        /* realloc would copy views nobody reads any more: a fresh array instead. */
        ksfi_header *grown = ksfi_malloc(n * sizeof *grown);
        if (!grown) {
            return KSF_ENOMEM;
        }
        ksfi_free(*buf);
        *buf = grown;
        *cap = n;
    }
    ksfi_header *h = *buf;
    for (size_t i = 0; i < n; i++) {
        const void *value;
        size_t len;
        if (rd_kafka_header_get_all(hdrs, i, &h[i].name, &value, &len)) {
            n = i;
            break;
        }
        h[i].value = value;
        h[i].len = value ? len : 0;
    }
    *count = n;
    return KSF_OK;
}

ksf_err
ksfi_kafka_add_headers(rd_kafka_headers_t *hdrs, const ksfi_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (rd_kafka_header_add(hdrs, h[i].name, -1, h[i].value,
                                h[i].value ? (ssize_t)h[i].len : -1)) {
            return KSF_EKAFKA;
        }
    }
    return KSF_OK;
}

ksf_err
ksfi_kafka_fail(ksf_errinfo *ei, rd_kafka_resp_err_t err, const char *what)
{
    return ksfi_fail_kafka(ei, (int)err, "%s: %s", what, rd_kafka_err2str(err));
}

ksf_err
ksfi_kafka_consumer_new(rd_kafka_conf_t *conf, const char *what, rd_kafka_t **rk,
                        rd_kafka_queue_t **queue, ksf_errinfo *ei)
{
    char err[256];
    *queue = NULL;
    /* rd_kafka_new owns the configuration only when it succeeds. */
    if (!(*rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err))) {
        rd_kafka_conf_destroy(conf);
        return ksfi_fail(ei, KSF_EKAFKA, "%s: %s", what, err);
    }
    rd_kafka_poll_set_consumer(*rk);
    *queue = rd_kafka_queue_get_consumer(*rk);
    return KSF_OK;
}

static int
ms_until(int64_t deadline)
{
    int64_t left = deadline - ksfi_clock_ms();
    return left > 0 ? (int)left : 0;
}

/*
 * The partition count of @p topic. A Metadata request naming the topic makes the
 * broker auto-create it when it does not exist; a real broker may answer
 * LEADER_NOT_AVAILABLE while it does, so that is retried until the deadline.
 */
ksf_err
ksfi_kafka_partition_count(rd_kafka_t *rk, const char *topic, int64_t deadline,
                           int *count, ksf_errinfo *ei)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt) {
        return ksfi_kafka_fail(ei, rd_kafka_last_error(), "topic handle");
    }
    ksf_err e = KSF_OK;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, ms_until(deadline));
        bool transient = err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
                         err == RD_KAFKA_RESP_ERR__TRANSPORT ||
                         err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN;
        if (transient && ms_until(deadline) > 0) {
            nanosleep(&(struct timespec){0, 100 * 1000 * 1000},
                      NULL); /* brokers may return */
            continue;
        }
        if (transient) {
            e = ksfi_fail(ei, KSF_ETIMEDOUT,
                          "topic %s: no metadata from the brokers in time (%s); "
                          "check that the brokers are reachable",
                          topic, rd_kafka_err2str(err));
            break;
        }
        if (err) {
            e = ksfi_kafka_fail(ei, err, "topic metadata");
            break;
        }
        rd_kafka_resp_err_t terr = md->topic_cnt == 1 ? md->topics[0].err : err;
        *count = md->topic_cnt == 1 ? md->topics[0].partition_cnt : 0;
        rd_kafka_metadata_destroy(md);
        if (!terr && *count > 0) {
            break;
        }
        if (ms_until(deadline) == 0) {
            e = ksfi_fail(ei, KSF_ENOPARTITION,
                          "topic %s has no partitions yet (%s); create it or "
                          "enable topic auto-creation on the brokers",
                          topic, rd_kafka_err2str(terr));
            break;
        }
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    rd_kafka_topic_destroy(rkt);
    return e;
}

/* Errors a partition's leader gives while it is being elected or the topic created. */
static bool
leader_settling(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
           err == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
           err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
           err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
           err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__TIMED_OUT;
}

ksf_err
ksfi_kafka_high_watermark(rd_kafka_t *rk, const char *topic, int32_t partition,
                          int64_t deadline, int64_t *hi, ksf_errinfo *ei)
{
    for (;;) {
        int64_t lo = 0;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            rk, topic, partition, &lo, hi,
            ms_until(deadline) > 0 ? ms_until(deadline) : 1);
        if (!err) {
            return KSF_OK;
        }
        if (!leader_settling(err) || ms_until(deadline) <= 50) {
            return ksfi_fail_kafka(ei, (int)err, "%s [%d]: high watermark: %s", topic,
                                   (int)partition, rd_kafka_err2str(err));
        }
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
}

ksf_err
ksfi_kafka_conf_value(const rd_kafka_conf_t *conf, const char *key, char **out)
{
    size_t n = 0;
    *out = NULL;
    if (rd_kafka_conf_get(conf, key, NULL, &n) != RD_KAFKA_CONF_OK || n <= 1) {
        return KSF_OK;
    }
    if (!(*out = ksfi_malloc(n))) {
        return KSF_ENOMEM;
    }
    if (rd_kafka_conf_get(conf, key, *out, &n) != RD_KAFKA_CONF_OK) {
        ksfi_free(*out);
        *out = NULL;
    }
    return KSF_OK;
}

bool
ksfi_kafka_conf_value_in(const rd_kafka_conf_t *conf, const char *key, char *buf,
                         size_t size)
{
    size_t n = size;
    return rd_kafka_conf_get(conf, key, buf, &n) == RD_KAFKA_CONF_OK;
}

void
ksfi_kafka_conf_free(rd_kafka_conf_t *conf)
{
    if (conf) {
        rd_kafka_conf_destroy(conf);
    }
}
