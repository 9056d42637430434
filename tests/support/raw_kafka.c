#include "raw_kafka.h"

#include "broker.h"
#include "codec/wire.h"
#include "service.h"

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ksft_producer {
    rd_kafka_t *rk;
    char *known[64]; /* topics whose metadata was fetched */
    size_t nknown;
    int failed; /* deliveries that failed; touched only by poll/flush on the test thread
                 */
    char last_error[256];
};

static void
dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    ksft_producer *p = opaque;
    if (m->err) {
        p->failed++;
        snprintf(p->last_error, sizeof p->last_error, "%s", rd_kafka_err2str(m->err));
    }
    if (m->_private) {
        *(rd_kafka_resp_err_t *)m->_private = m->err;
    }
}

static void
set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char err[256];
    ck_assert_msg(rd_kafka_conf_set(conf, k, v, err, sizeof err) == RD_KAFKA_CONF_OK,
                  "librdkafka property %s \"%s\": %s", k, v, err);
}

rd_kafka_conf_t *
ksft_rd_conf(const char *brokers, const char *const kv[][2], size_t n)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (brokers) {
        set(conf, "bootstrap.servers", brokers);
    }
    for (size_t i = 0; i < n; i++) {
        set(conf, kv[i][0], kv[i][1]);
    }
    return conf;
}

rd_kafka_t *
ksft_rd_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, const char *what)
{
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);
    ck_assert_msg(rk != NULL, "%s: rd_kafka_new: %s", what, err);
    return rk;
}

ksft_producer *
ksft_producer_new(const char *brokers)
{
    ksft_producer *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    static const char *const kv[][2] = {{"linger.ms", "0"}, {"log_level", "3"}};
    rd_kafka_conf_t *conf = ksft_rd_conf(brokers, kv, 2);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = ksft_rd_new(RD_KAFKA_PRODUCER, conf, "test producer");
    return p;
}

void
ksft_producer_flush(ksft_producer *p, int timeout_ms)
{
    rd_kafka_resp_err_t err = rd_kafka_flush(p->rk, timeout_ms);
    ck_assert_msg(err == RD_KAFKA_RESP_ERR_NO_ERROR, "test producer flush: %s (%d left)",
                  rd_kafka_err2str(err), rd_kafka_outq_len(p->rk));
    ck_assert_msg(p->failed == 0, "test producer: %d deliveries failed, last: %s",
                  p->failed, p->last_error);
}

void
ksft_producer_destroy(ksft_producer *p)
{
    if (!p) {
        return;
    }
    ksft_producer_flush(p, 10000);
    rd_kafka_destroy(p->rk);
    for (size_t i = 0; i < p->nknown; i++) {
        free(p->known[i]);
    }
    free(p);
}

/* librdkafka looks up a new topic's metadata on a 1 s timer; ask at once instead. */
static void
learn_topic(ksft_producer *p, const char *topic)
{
    for (size_t i = 0; i < p->nknown; i++) {
        if (!strcmp(p->known[i], topic)) {
            return;
        }
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(p->rk, 0, rkt, &md, 5000);
    ck_assert_msg(err == RD_KAFKA_RESP_ERR_NO_ERROR, "metadata of %s: %s", topic,
                  rd_kafka_err2str(err));
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    if (p->nknown < sizeof p->known / sizeof p->known[0]) {
        p->known[p->nknown++] = strdup(topic);
    }
}

void
ksft_produce(ksft_producer *p, const char *topic, int32_t partition, const void *key,
             size_t key_len, const void *value, size_t len, const ksfi_header *hdrs,
             size_t nhdrs, bool wait)
{
    learn_topic(p, topic);
    rd_kafka_headers_t *h = rd_kafka_headers_new(nhdrs);
    for (size_t i = 0; i < nhdrs; i++) {
        rd_kafka_header_add(h, hdrs[i].name, -1, hdrs[i].value,
                            hdrs[i].value ? (ssize_t)hdrs[i].len : -1);
    }
    rd_kafka_resp_err_t result = RD_KAFKA_RESP_ERR__IN_PROGRESS;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY((void *)key, key_len),
        RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_HEADERS(h),
        RD_KAFKA_V_OPAQUE(wait ? &result : NULL), RD_KAFKA_V_END);
    if (err) {
        rd_kafka_headers_destroy(h);
    }
    ck_assert_msg(err == RD_KAFKA_RESP_ERR_NO_ERROR, "produce to %s: %s", topic,
                  rd_kafka_err2str(err));
    if (wait) {
        int64_t until = ksft_now_ms() + 10000;
        while (result == RD_KAFKA_RESP_ERR__IN_PROGRESS && ksft_now_ms() < until) {
            rd_kafka_poll(p->rk, 50);
        }
        ck_assert_msg(result == RD_KAFKA_RESP_ERR_NO_ERROR, "produce to %s: %s", topic,
                      rd_kafka_err2str(result));
    } else {
        rd_kafka_poll(p->rk, 0);
    }
}

void
ksft_send_request(ksft_producer *p, const char *topic, int32_t partition,
                  const char *correlation_id, const char *reply_topic,
                  int32_t reply_partition, const void *value, size_t len, bool wait)
{
    char part[16];
    snprintf(part, sizeof part, "%" PRId32, reply_partition);
    ksfi_header h[3] = {
        {KSFI_HDR_CORRELATION_ID, correlation_id, strlen(correlation_id)},
        {KSFI_HDR_REPLY_TOPIC, reply_topic, strlen(reply_topic)},
        {KSFI_HDR_REPLY_PARTITION, part, strlen(part)},
    };
    ksft_produce(p, topic, partition, NULL, 0, value, len, h, reply_partition < 0 ? 2 : 3,
                 wait);
}

/* ---- collector ------------------------------------------------------------------- */

struct ksft_collector {
    rd_kafka_t *rk;
    ksft_msg *msgs;
    size_t count, cap;
};

ksft_collector *
ksft_collector_new(const char *brokers, const char *topic, int32_t partition)
{
    ksft_collector *c = calloc(1, sizeof *c);
    ck_assert_ptr_nonnull(c);
    static const char *const kv[][2] = {{"group.id", "ksft-collector"},
                                        {"enable.auto.commit", "false"},
                                        {"fetch.wait.max.ms", "5"},
                                        {"log_level", "3"}};
    c->rk = ksft_rd_new(RD_KAFKA_CONSUMER, ksft_rd_conf(brokers, kv, 4), "collector");
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(c->rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);
    return c;
}

static void *
dup_bytes(const void *p, size_t n)
{
    if (!p) {
        return NULL;
    }
    void *d = malloc(n + 1);
    ck_assert_ptr_nonnull(d);
    memcpy(d, p, n);
    ((char *)d)[n] = '\0';
    return d;
}

static void
keep(ksft_collector *c, const rd_kafka_message_t *m)
{
    if (c->count == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->msgs = realloc(c->msgs, c->cap * sizeof *c->msgs);
        ck_assert_ptr_nonnull(c->msgs);
    }
    ksft_msg *k = &c->msgs[c->count++];
    memset(k, 0, sizeof *k);
    k->partition = m->partition;
    k->offset = m->offset;
    k->key = dup_bytes(m->key, m->key_len);
    k->key_len = m->key ? m->key_len : 0;
    k->value = dup_bytes(m->payload, m->len);
    k->len = m->payload ? m->len : 0;
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(m, &h) || !h) {
        return;
    }
    k->nhdrs = rd_kafka_header_cnt(h);
    k->hdrs = calloc(k->nhdrs ? k->nhdrs : 1, sizeof *k->hdrs);
    for (size_t i = 0; i < k->nhdrs; i++) {
        const char *name;
        const void *v;
        size_t n;
        rd_kafka_header_get_all(h, i, &name, &v, &n);
        k->hdrs[i] = (ksfi_header){strdup(name), dup_bytes(v, n), v ? n : 0};
    }
}

size_t
ksft_collector_poll(ksft_collector *c, int timeout_ms)
{
    int64_t until = ksft_now_ms() + timeout_ms;
    do {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 20);
        if (m && !m->err) {
            keep(c, m);
        }
        if (m) {
            rd_kafka_message_destroy(m);
        }
    } while (ksft_now_ms() < until);
    return c->count;
}

size_t
ksft_collector_count(const ksft_collector *c)
{
    return c->count;
}

const ksft_msg *
ksft_collector_at(const ksft_collector *c, size_t i)
{
    return i < c->count ? &c->msgs[i] : NULL;
}

bool
ksft_msg_header(const ksft_msg *m, const char *name, const void **value, size_t *len)
{
    for (size_t i = m->nhdrs; i > 0; i--) {
        if (!strcmp(m->hdrs[i - 1].name, name)) {
            if (value) {
                *value = m->hdrs[i - 1].value;
            }
            if (len) {
                *len = m->hdrs[i - 1].len;
            }
            return true;
        }
    }
    return false;
}

static bool
has_id(const ksft_msg *m, const char *id)
{
    const void *v;
    size_t n;
    return ksft_msg_header(m, KSFI_HDR_CORRELATION_ID, &v, &n) && v && n == strlen(id) &&
           !memcmp(v, id, n);
}

size_t
ksft_collector_count_id(const ksft_collector *c, const char *id)
{
    size_t n = 0;
    for (size_t i = 0; i < c->count; i++) {
        n += has_id(&c->msgs[i], id);
    }
    return n;
}

const ksft_msg *
ksft_collector_get_id(const ksft_collector *c, const char *id, size_t nth)
{
    for (size_t i = 0; i < c->count; i++) {
        if (has_id(&c->msgs[i], id) && nth-- == 0) {
            return &c->msgs[i];
        }
    }
    return NULL;
}

size_t
ksft_collector_wait_id(ksft_collector *c, const char *id, size_t n, int timeout_ms)
{
    int64_t until = ksft_now_ms() + ksft_scaled_ms(timeout_ms);
    size_t seen;
    while ((seen = ksft_collector_count_id(c, id)) < n && ksft_now_ms() < until) {
        ksft_collector_poll(c, 20);
    }
    return seen;
}

void
ksft_collector_destroy(ksft_collector *c)
{
    if (!c) {
        return;
    }
    for (size_t i = 0; i < c->count; i++) {
        ksft_msg *m = &c->msgs[i];
        free(m->key);
        free(m->value);
        for (size_t j = 0; j < m->nhdrs; j++) {
            free((void *)m->hdrs[j].name);
            free((void *)m->hdrs[j].value);
        }
        free(m->hdrs);
    }
    free(c->msgs);
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
    free(c);
}

int64_t
ksft_committed(const char *brokers, const char *group, const char *topic,
               int32_t partition)
{
    const char *const kv[][2] = {{"group.id", group}, {"log_level", "3"}};
    rd_kafka_t *rk =
        ksft_rd_new(RD_KAFKA_CONSUMER, ksft_rd_conf(brokers, kv, 2), "offset reader");
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 10000);
    ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR, "committed(%s): %s", group,
                  rd_kafka_err2str(e));
    int64_t offset = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return offset;
}

int64_t
ksft_wait_committed(const char *brokers, const char *group, const char *topic,
                    int32_t partitions, int64_t want, int timeout_ms)
{
    int64_t sum = 0, until = ksft_now_ms() + ksft_scaled_ms(timeout_ms);
    for (;;) {
        sum = 0;
        for (int32_t p = 0; p < partitions; p++) {
            int64_t c = ksft_committed(brokers, group, topic, p);
            sum += c > 0 ? c : 0; /* RD_KAFKA_OFFSET_INVALID (-1001): nothing yet */
        }
        if (sum >= want || ksft_now_ms() >= until) {
            return sum;
        }
        ksft_sleep_ms(100); /* each read is a new consumer handle: do not spin */
    }
}
