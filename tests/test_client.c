/*
 * ksf_client against the mock broker. The server side is a small responder written
 * with plain librdkafka in this file: it reads requests on one topic and answers as
 * the request value tells it ("null", "errobj", "stream3", ... ; anything else is
 * echoed), the way a NestJS server would shape each reply.
 */
#include "broker.h"
#include "codec/codec.h"
#include "codec/deadline.h"
#include "codec/wire.h"
#include "obs/trace.h"

#include "proc.h"
#include "raw_kafka.h"
#include "service.h"
#include "suite.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#define PATTERN "svc.do"

/* ---- the responder ----------------------------------------------------------------- */

typedef struct request {
    char id[128];
    unsigned char id_raw[128]; /* the kafka_correlationId bytes, as a Spring service sees
                                * them (id stops at a NUL byte) */
    size_t id_len;
    unsigned char partition_raw[16]; /* the kafka_replyPartition bytes */
    size_t partition_len;
    char reply_topic[256];
    int32_t partition;
    char value[256];
    bool null_value;
    /* The raw headers of the request, "name=value" joined by '\n'. */
    char headers[1024];
} request;

typedef struct responder {
    rd_kafka_t *consumer, *producer;
    pthread_t thread;
    atomic_bool stop;
    atomic_int requests;
    pthread_mutex_t m; /* guards last */
    request last;
} responder;

static rd_kafka_t *
plain_handle(ksft_broker *b, rd_kafka_type_t type)
{
    static const char *const producer[][2] = {{"log_level", "2"}, {"linger.ms", "1"}};
    static const char *const consumer[][2] = {{"log_level", "2"},
                                              {"fetch.wait.max.ms", "5"},
                                              {"group.id", "test-responder"},
                                              {"enable.auto.commit", "false"}};
    const char *brokers = ksft_broker_address(b);
    rd_kafka_conf_t *conf = type == RD_KAFKA_PRODUCER
                                ? ksft_rd_conf(brokers, producer, KSFT_NKV(producer))
                                : ksft_rd_conf(brokers, consumer, KSFT_NKV(consumer));
    return ksft_rd_new(type, conf, "test responder");
}

/* Fetch partition 0 of @p topic from the start. */
static void
assign_from_start(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
}

static void
reply(responder *r, const request *q, const char *id, const char *value, const char *err,
      bool disposed)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, KSFI_HDR_CORRELATION_ID, -1, id, -1);
    if (err) {
        rd_kafka_header_add(h, KSFI_HDR_NEST_ERR, -1, err, -1);
    }
    if (disposed) {
        rd_kafka_header_add(h, KSFI_HDR_NEST_IS_DISPOSED, -1, "\0", 1);
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        r->producer, RD_KAFKA_V_TOPIC(q->reply_topic), RD_KAFKA_V_PARTITION(q->partition),
        RD_KAFKA_V_VALUE((void *)value, value ? strlen(value) : 0),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    ck_assert_int_eq(e, 0);
}

/* A reply as Spring's @SendTo sends it: the raw id bytes echoed, no end marker. */
static void
reply_spring(responder *r, const request *q, const char *value)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, KSFI_HDR_CORRELATION_ID, -1, q->id_raw, (ssize_t)q->id_len);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        r->producer, RD_KAFKA_V_TOPIC(q->reply_topic), RD_KAFKA_V_PARTITION(q->partition),
        RD_KAFKA_V_VALUE((void *)value, strlen(value)),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    ck_assert_int_eq(e, 0);
}

/* Answer @p q as its value asks. */
static void
behave(responder *r, const request *q)
{
    const char *v = q->value, *id = q->id;
    if (!strcmp(v, "silent")) {
        return;
    } else if (!strcmp(v, "spring")) {
        reply_spring(r, q, "spring reply");
    } else if (!strcmp(v, "null")) {
        reply(r, q, id, NULL, NULL, true);
    } else if (!strcmp(v, "string")) {
        reply(r, q, id, "hello", NULL, true);
    } else if (!strcmp(v, "number")) {
        reply(r, q, id, "3", NULL, true);
    } else if (!strcmp(v, "errobj")) {
        reply(r, q, id, NULL, "{\"code\":42,\"message\":\"x\"}", true);
    } else if (!strcmp(v, "errstr")) {
        reply(r, q, id, NULL, "bad thing", true);
    } else if (!strcmp(v, "nohandler")) {
        reply(r, q, id, NULL, KSFI_NO_MESSAGE_HANDLER, false);
    } else if (!strcmp(v, "stream3") || !strcmp(v, "stream3end")) {
        bool end = !strcmp(v, "stream3end");
        reply(r, q, id, "{\"i\":1}", NULL, false);
        reply(r, q, id, "{\"i\":2}", NULL, false);
        reply(r, q, id, "{\"i\":3}", NULL, !end);
        if (end) {
            reply(r, q, id, NULL, NULL, true);
        }
    } else if (!strcmp(v, "stream40")) {
        /* produced back to back: fetched together, more than one poll's batch */
        for (int i = 1; i <= 40; i++) {
            char val[16];
            snprintf(val, sizeof val, "{\"i\":%d}", i);
            reply(r, q, id, val, NULL, false);
        }
        reply(r, q, id, NULL, NULL, true);
    } else if (!strcmp(v, "late")) {
        ksft_sleep_ms(400); /* a slow server, not synchronisation */
        reply(r, q, id, "\"late\"", NULL, true);
    } else if (!strcmp(v, "dup")) {
        reply(r, q, id, "1", NULL, true);
        reply(r, q, id, "2", NULL, true);
    } else if (!strcmp(v, "unknown")) {
        reply(r, q, "0123456789abcdef-not-ours", "x", NULL, true);
        reply(r, q, id, "ok", NULL, true);
    } else {
        reply(r, q, id, q->null_value ? NULL : v, NULL, true);
    }
}

static void
parse_request(const rd_kafka_message_t *msg, request *q)
{
    memset(q, 0, sizeof *q);
    q->partition = -1;
    rd_kafka_headers_t *h = NULL;
    if (rd_kafka_message_headers(msg, &h) == 0) {
        const char *name;
        const void *val;
        size_t len;
        for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &val, &len); i++) {
            size_t used = strlen(q->headers);
            snprintf(q->headers + used, sizeof q->headers - used, "%s%s=%.*s",
                     i ? "\n" : "", name, (int)len, (const char *)val);
            char *dst = !strcmp(name, KSFI_HDR_CORRELATION_ID) ? q->id
                        : !strcmp(name, KSFI_HDR_REPLY_TOPIC)  ? q->reply_topic
                                                               : NULL;
            if (dst) {
                snprintf(dst, 128, "%.*s", (int)len, (const char *)val);
            } else if (!strcmp(name, KSFI_HDR_REPLY_PARTITION)) {
                /* decimal text (NestJS) or a 4-byte big-endian int (Spring) */
                ck_assert(ksfi_parse_reply_partition(val, len, &q->partition));
                q->partition_len = len < sizeof q->partition_raw ? len : 0;
                memcpy(q->partition_raw, val, q->partition_len);
            }
            if (!strcmp(name, KSFI_HDR_CORRELATION_ID) && len <= sizeof q->id_raw) {
                memcpy(q->id_raw, val, len);
                q->id_len = len;
            }
        }
    }
    q->null_value = !msg->payload;
    snprintf(q->value, sizeof q->value, "%.*s", (int)msg->len,
             (const char *)msg->payload);
}

static void *
responder_main(void *arg)
{
    responder *r = arg;
    while (!atomic_load(&r->stop)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(r->consumer, 50);
        if (!msg) {
            continue;
        }
        if (!msg->err) {
            request q;
            parse_request(msg, &q);
            pthread_mutex_lock(&r->m);
            r->last = q;
            pthread_mutex_unlock(&r->m);
            atomic_fetch_add(&r->requests, 1);
            if (q.id_len > 0) {
                behave(r, &q);
            }
        }
        rd_kafka_message_destroy(msg);
        rd_kafka_poll(r->producer, 0);
    }
    return NULL;
}

static responder *
responder_start(ksft_broker *b)
{
    responder *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    ksft_broker_create_topic(b, PATTERN, 1);
    r->consumer = plain_handle(b, RD_KAFKA_CONSUMER);
    r->producer = plain_handle(b, RD_KAFKA_PRODUCER);
    rd_kafka_poll_set_consumer(r->consumer);
    assign_from_start(r->consumer, PATTERN);
    pthread_mutex_init(&r->m, NULL);
    ck_assert_int_eq(pthread_create(&r->thread, NULL, responder_main, r), 0);
    return r;
}

static void
responder_stop(responder *r)
{
    atomic_store(&r->stop, true);
    pthread_join(r->thread, NULL);
    rd_kafka_flush(r->producer, 2000);
    rd_kafka_consumer_close(r->consumer);
    rd_kafka_destroy(r->consumer);
    rd_kafka_destroy(r->producer);
    pthread_mutex_destroy(&r->m);
    free(r);
}

/* ---- the environment: broker, responder, client ------------------------------------ */

typedef struct env {
    ksft_broker *b;
    responder *r;
    ksf_client *cli;
} env;

/* Start everything; @p extra is NULL or {key, value, key, value, ..., NULL}. Tests
 * about one client's own behaviour use the static reply provider (a reply-group join
 * costs 3 s on the mock); the others run on the default, the reply group. */
static env
env_start_with(const char *provider, const char *const *extra)
{
    env v = {0};
    ksf_errinfo ei = {0};
    v.b = ksft_broker_start();
    v.r = responder_start(v.b);
    ksf_config *cfg = ksft_config(v.b);
    if (provider) {
        ck_assert_int_eq(ksf_config_set(cfg, "client.reply.provider", provider, &ei),
                         KSF_OK);
    }
    for (size_t i = 0; extra && extra[i]; i += 2) {
        ck_assert_msg(ksf_config_set(cfg, extra[i], extra[i + 1], &ei) == KSF_OK, "%s",
                      ei.text);
    }
    ck_assert_msg(ksf_client_new(&v.cli, cfg, &ei) == KSF_OK, "%s", ei.text);
    ksf_config_destroy(cfg);
    return v;
}

static env
env_start(const char *const *extra)
{
    return env_start_with(NULL, extra);
}

static void
env_stop(env *v)
{
    ksf_client_destroy(v->cli);
    responder_stop(v->r);
    ksft_broker_stop(v->b);
}

static ksf_client_stats
stats(ksf_client *cli)
{
    ksf_client_stats s;
    ksf_client_get_stats(cli, &s);
    return s;
}

/* A call whose request value is the text @p cmd; returns the reply (new reference). */
static ksf_err
call_cmd(ksf_client *cli, const char *cmd, int timeout_ms, json_t **out, ksf_errinfo *ei)
{
    json_t *data = json_string(cmd);
    ksf_err e = ksf_client_call(cli, PATTERN, data, timeout_ms, out, ei);
    json_decref(data);
    return e;
}

static void
assert_json(const json_t *v, const char *expect)
{
    ck_assert_ptr_nonnull(v);
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    ck_assert_str_eq(s, expect);
    free(s);
}

/* ---- collecting async deliveries ------------------------------------------------------
 */

typedef struct delivery {
    ksf_err err;
    bool done;
    char value[128]; /* compact JSON, "(none)" for NULL */
    pthread_t thread;
} delivery;

typedef struct collector {
    pthread_mutex_t m;
    delivery d[64];
    int n;
} collector;

static void
collect(const ksf_reply *r, void *user)
{
    collector *c = user;
    pthread_mutex_lock(&c->m);
    if (c->n < 64) {
        delivery *d = &c->d[c->n++];
        d->err = r->err;
        d->done = r->done;
        d->thread = pthread_self();
        char *s = r->value ? json_dumps(r->value, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        snprintf(d->value, sizeof d->value, "%s", s ? s : "(none)");
        free(s);
    }
    pthread_mutex_unlock(&c->m);
}

static int
collected(collector *c)
{
    pthread_mutex_lock(&c->m);
    int n = c->n;
    pthread_mutex_unlock(&c->m);
    return n;
}

/* Wait until @p c holds @p n deliveries; false after @p ms. */
static bool
wait_collected(collector *c, int n, int ms)
{
    ksft_deadline end = ksft_deadline_in(ms);
    while (collected(c) < n) {
        if (!ksft_deadline_wait(&end)) {
            return false;
        }
    }
    return true;
}

static void
send_cmd(ksf_client *cli, const char *cmd, unsigned flags, int timeout_ms, collector *c)
{
    ksf_errinfo ei = {0};
    json_t *data = json_string(cmd);
    ksf_send_opts o = {.timeout_ms = timeout_ms, .flags = flags};
    ck_assert_msg(ksf_client_send(cli, PATTERN, data, &o, collect, c, &ei) == KSF_OK,
                  "%s", ei.text);
    json_decref(data);
}

#define STAT_WAIT(cli, field, want, ms)                                                  \
    do {                                                                                 \
        ksft_deadline end_ = ksft_deadline_in(ms);                                       \
        while (stats(cli).field != (want) && ksft_deadline_wait(&end_)) {                \
            ksft_sleep_ms(5);                                                            \
        }                                                                                \
        ck_assert_uint_eq(stats(cli).field, (want));                                     \
    } while (0)

/* ---- tests
 * ------------------------------------------------------------------------------ */

KSFT_TEST(test_client_reply_shapes, 30)
{
    env v = env_start(NULL);
    ksf_errinfo ei = {0};
    json_t *out = NULL;
    json_t *obj = json_pack("{s:i,s:i}", "heroId", 1, "dragonId", 7);
    ck_assert_msg(ksf_client_call(v.cli, PATTERN, obj, 10000, &out, &ei) == KSF_OK, "%s",
                  ei.text);
    json_decref(obj);
    assert_json(out, "{\"heroId\":1,\"dragonId\":7}");
    json_decref(out);
    static const struct {
        const char *cmd;
        ksf_err err;
        const char *json;
    } cases[] = {
        {"null", KSF_OK, "null"},
        {"string", KSF_OK, "\"hello\""},
        {"number", KSF_OK, "\"3\""}, /* NestJS revives no numbers: "3" stays a string */
        {"errobj", KSF_EREMOTE, "{\"code\":42,\"message\":\"x\"}"},
        {"errstr", KSF_EREMOTE, "\"bad thing\""},
        {"nohandler", KSF_EREMOTE, "\"" KSFI_NO_MESSAGE_HANDLER "\""},
        {"stream3", KSF_OK, "{\"i\":3}"},
        {"stream3end", KSF_OK, "{\"i\":3}"}, /* a bare end keeps the last value */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        out = NULL;
        ksf_err e = call_cmd(v.cli, cases[i].cmd, 10000, &out, &ei);
        ck_assert_msg(e == cases[i].err, "%s: %s (%s)", cases[i].cmd, ksf_strerror(e),
                      ei.text);
        assert_json(out, cases[i].json);
        json_decref(out);
    }
    ck_assert_str_eq(ei.text, PATTERN ": remote error: " KSFI_NO_MESSAGE_HANDLER);
    ksf_client_stats s = stats(v.cli);
    ck_assert_uint_eq(s.sent, 9);
    ck_assert_uint_eq(s.replies, 6);
    ck_assert_uint_eq(s.remote_errors, 3);
    ck_assert_uint_eq(s.in_flight, 0);
    ck_assert_uint_eq(s.unknown_replies + s.late_replies + s.duplicate_replies, 0);
    env_stop(&v);
}
END_TEST

/* Each reply of a stream as it came, "(done)" on the last: see ksft_stream_expect. */
static void
stream_expect(env *v, const char *cmd, const char *want)
{
    json_t *data = json_string(cmd);
    ksf_send_opts o = {.timeout_ms = 10000, .flags = KSF_SEND_STREAM};
    ksft_stream_expect(v->cli, PATTERN, data, &o, KSF_OK, want, 10000);
    json_decref(data);
    ck_assert_uint_eq(stats(v->cli).in_flight, 0); /* nothing more is due */
}

KSFT_TEST(test_client_stream, 30)
{
    env v = env_start(NULL);
    stream_expect(&v, "stream3", "{\"i\":1}|{\"i\":2}|{\"i\":3}(done)|");
    /* A bare end keeps the last value: the end itself has none. */
    stream_expect(&v, "stream3end", "{\"i\":1}|{\"i\":2}|{\"i\":3}|(null)(done)|");
    env_stop(&v);
}
END_TEST

/* ---- KSF_SEND_RAW_REPLY ------------------------------------------------------------ */

/* Every delivery of a raw-reply request as text: "<err>:<value>:<raw>" with "-" for a
 * NULL value and "~" for NULL raw bytes, "(done)" on the last, each ending in '|'. */
typedef struct raw_log {
    pthread_mutex_t m;
    char text[1024];
    atomic_int done;
} raw_log;

static void
raw_collect(const ksf_reply *r, void *user)
{
    raw_log *l = user;
    char *v = r->value ? json_dumps(r->value,
                                    JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER)
                       : NULL;
    pthread_mutex_lock(&l->m);
    size_t used = strlen(l->text);
    if (r->raw) {
        snprintf(l->text + used, sizeof l->text - used, "%d:%s:%.*s%s|", (int)r->err,
                 v ? v : "-", (int)r->raw_len, (const char *)r->raw,
                 r->done ? "(done)" : "");
    } else {
        snprintf(l->text + used, sizeof l->text - used, "%d:%s:~%s|", (int)r->err,
                 v ? v : "-", r->done ? "(done)" : "");
    }
    pthread_mutex_unlock(&l->m);
    atomic_fetch_add(&l->done, r->done); /* last: the test reads l once it is set */
    free(v);
}

/* Send @p data (or the text @p cmd) with @p flags | KSF_SEND_RAW_REPLY and compare
 * every delivery with @p want (raw_collect's format). */
static void
raw_expect(env *v, const json_t *data, const char *cmd, unsigned flags, const char *want)
{
    raw_log l = {.m = PTHREAD_MUTEX_INITIALIZER};
    json_t *text = cmd ? json_string(cmd) : NULL;
    ksf_send_opts o = {.timeout_ms = 10000, .flags = flags | KSF_SEND_RAW_REPLY};
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_client_send(v->cli, PATTERN, cmd ? text : data, &o, raw_collect, &l,
                                  &ei) == KSF_OK,
                  "%s", ei.text);
    json_decref(text);
    KSFT_WAIT_UNTIL(atomic_load(&l.done) == 1, 10000, "the final delivery of %s",
                    cmd ? cmd : "an object");
    pthread_mutex_lock(&l.m);
    ck_assert_str_eq(l.text, want);
    pthread_mutex_unlock(&l.m);
}

KSFT_TEST(test_client_raw_reply, 30)
{
    env v = env_start_with("static", NULL);
    /* An object reply: its JSON text exactly as the server produced it, no tree. */
    json_t *obj = json_pack("{s:i,s:i}", "heroId", 1, "dragonId", 7);
    raw_expect(&v, obj, NULL, 0, "0:-:{\"heroId\":1,\"dragonId\":7}(done)|");
    json_decref(obj);
    /* A string reply: its bytes unquoted (NestJS's encoding); a null reply: none. */
    raw_expect(&v, NULL, "string", 0, "0:-:hello(done)|");
    raw_expect(&v, NULL, "number", 0, "0:-:3(done)|");
    raw_expect(&v, NULL, "null", 0, "0:-:~(done)|");
    /* A remote error is still decoded; raw holds the kafka_nest-err bytes. */
    raw_expect(&v, NULL, "errobj", 0,
               "6:{\"code\":42,\"message\":\"x\"}:{\"code\":42,\"message\":\"x\"}"
               "(done)|");
    /* Streams: every value raw; without KSF_SEND_STREAM the last one, also when a bare
     * end follows it. */
    raw_expect(&v, NULL, "stream3", KSF_SEND_STREAM,
               "0:-:{\"i\":1}|0:-:{\"i\":2}|0:-:{\"i\":3}(done)|");
    raw_expect(&v, NULL, "stream3end", KSF_SEND_STREAM,
               "0:-:{\"i\":1}|0:-:{\"i\":2}|0:-:{\"i\":3}|0:-:~(done)|");
    raw_expect(&v, NULL, "stream3end", 0, "0:-:{\"i\":3}(done)|");
    ksf_client_stats s = stats(v.cli);
    ck_assert_uint_eq(s.sent, 8);
    ck_assert_uint_eq(s.replies, 7);
    ck_assert_uint_eq(s.remote_errors, 1);
    ck_assert_uint_eq(s.in_flight, 0);
    env_stop(&v);
}
END_TEST

/* 40 stream values and the end arrive together: the reply consumer hands them out in
 * batches (kafka/reply_consumer.c); every one must come once, in order. */
KSFT_TEST(test_client_stream_batch, 30)
{
    env v = env_start_with("static", NULL);
    char want[1024] = "";
    for (int i = 1; i <= 40; i++) {
        size_t len = strlen(want);
        snprintf(want + len, sizeof want - len, "{\"i\":%d}|", i);
    }
    strcat(want, "(null)(done)|");
    stream_expect(&v, "stream40", want);
    env_stop(&v);
}
END_TEST

KSFT_TEST(test_client_timeouts, 30)
{
    env v = env_start_with("static", NULL);
    collector c = {.m = PTHREAD_MUTEX_INITIALIZER};
    json_t *out = NULL;
    ck_assert_int_eq(call_cmd(v.cli, "null", 10000, &out, NULL), KSF_OK); /* warm up */
    json_decref(out);
    int64_t t0 = ksft_now_ms();
    for (int i = 0; i < 10; i++) {
        send_cmd(v.cli, "silent", 0, 200, &c);
    }
    ck_assert(wait_collected(&c, 10, 5000));
    int64_t took = ksft_now_ms() - t0;
    ck_assert_msg(took >= 200 && took < 1000, "10 timeouts of 200 ms took %lld ms",
                  (long long)took);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(c.d[i].err, KSF_ETIMEDOUT);
        ck_assert(c.d[i].done);
    }
    ksf_client_stats s = stats(v.cli);
    ck_assert_uint_eq(s.timeouts, 10);
    ck_assert_uint_eq(s.in_flight, 0);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(call_cmd(v.cli, "silent", 100, &out, &ei), KSF_ETIMEDOUT);
    ck_assert_ptr_null(out);
    ck_assert_uint_eq(stats(v.cli).timeouts, 11);
    ck_assert_int_eq(collected(&c), 10); /* exactly once each */
    env_stop(&v);
}
END_TEST

KSFT_TEST(test_client_late_unknown_duplicate, 30)
{
    env v = env_start_with("static", NULL);
    json_t *out = NULL;
    ck_assert_int_eq(call_cmd(v.cli, "null", 10000, &out, NULL), KSF_OK); /* warm up */
    json_decref(out);
    out = NULL;
    ck_assert_int_eq(call_cmd(v.cli, "late", 100, &out, NULL), KSF_ETIMEDOUT);
    STAT_WAIT(v.cli, late_replies, 1, 5000);
    ck_assert_int_eq(call_cmd(v.cli, "unknown", 10000, &out, NULL), KSF_OK);
    assert_json(out, "\"ok\"");
    json_decref(out);
    STAT_WAIT(v.cli, unknown_replies, 1, 5000);
    ck_assert_int_eq(call_cmd(v.cli, "dup", 10000, &out, NULL), KSF_OK);
    assert_json(out, "\"1\"");
    json_decref(out);
    STAT_WAIT(v.cli, duplicate_replies, 1, 5000);
    ksf_client_stats s = stats(v.cli);
    ck_assert_uint_eq(s.late_replies, 1);
    ck_assert_uint_eq(s.unknown_replies, 1);
    ck_assert_uint_eq(s.timeouts, 1);
    ck_assert_uint_eq(s.replies, 3);
    env_stop(&v);
}
END_TEST

KSFT_TEST(test_client_destroy_in_flight, 30)
{
    env v = env_start(NULL);
    collector c = {.m = PTHREAD_MUTEX_INITIALIZER};
    for (int i = 0; i < 5; i++) {
        send_cmd(v.cli, "silent", 0, 60000, &c);
    }
    ck_assert_uint_eq(stats(v.cli).in_flight, 5);
    ksf_client_destroy(v.cli);
    v.cli = NULL;
    ck_assert_int_eq(collected(&c), 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(c.d[i].err, KSF_ECLOSED);
        ck_assert(c.d[i].done);
        ck_assert(pthread_equal(c.d[i].thread, pthread_self()));
    }
    env_stop(&v);
}
END_TEST

enum { THREADS = 8, TOTAL = THREADS * 1000 };

KSFT_TEST(test_client_concurrent_sends, 60)
{
    env v = env_start(NULL);
    ck_assert_int_eq(ksf_client_connect(v.cli, 10000, NULL), KSF_OK);
    ck_assert_int_eq(ksf_client_subscribe_to_response_of(v.cli, PATTERN, NULL), KSF_OK);
    ck_assert_int_eq(ksf_client_connect(v.cli, 10000, NULL), KSF_OK);
    /* The responder echoes each {"i": n}: the tally checks every value is its own. */
    ksft_tally t;
    ksft_tally_init(&t, TOTAL);
    ck_assert_uint_eq(ksft_tally_send_threads(&t, v.cli, PATTERN, THREADS, 0), 0);
    ck_assert_uint_eq(ksft_tally_wait(&t, TOTAL, 40000), TOTAL);
    ck_assert_uint_eq(atomic_load(&t.ok), TOTAL);
    ck_assert_uint_eq(atomic_load(&t.extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&t.wrong_value), 0);
    ck_assert_uint_eq(atomic_load(&t.other), 0);
    ksf_client_stats s = stats(v.cli);
    ck_assert_uint_eq(s.sent, TOTAL);
    ck_assert_uint_eq(s.replies, TOTAL);
    ck_assert_uint_eq(s.in_flight, 0);
    ck_assert_uint_eq(s.unknown_replies + s.duplicate_replies + s.late_replies, 0);
    env_stop(&v);
    ksft_tally_free(&t);
}
END_TEST

static void
never_called(const ksf_reply *r, void *user)
{
    (void)r;
    (void)user;
    ck_abort_msg("callback ran for a refused send");
}

KSFT_TEST(test_client_bad_input, 30)
{
    const char *const extra[] = {"message.max.bytes", "100", "client.max.in.flight", "2",
                                 NULL};
    env v = env_start_with("static", extra);
    ksf_errinfo ei = {0};
    json_t *data = json_string("silent");
    ck_assert_int_eq(
        ksf_client_send(v.cli, "bad topic!", data, NULL, never_called, NULL, &ei),
        KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "bad topic!"));
    ck_assert_int_eq(ksf_client_send(v.cli, "", data, NULL, never_called, NULL, &ei),
                     KSF_EINVAL);
    ck_assert_int_eq(ksf_client_send(v.cli, PATTERN, data, NULL, NULL, NULL, &ei),
                     KSF_EINVAL);
    ck_assert_int_eq(ksf_client_send(NULL, PATTERN, data, NULL, never_called, NULL, &ei),
                     KSF_EINVAL);
    ksf_send_opts neg = {.timeout_ms = -5};
    ck_assert_int_eq(ksf_client_send(v.cli, PATTERN, data, &neg, never_called, NULL, &ei),
                     KSF_EINVAL);
    json_t *hdr = json_pack("{s:s}", "kafka_replyTopic", "x");
    ksf_send_opts ho = {.headers = hdr};
    ck_assert_int_eq(ksf_client_send(v.cli, PATTERN, data, &ho, never_called, NULL, &ei),
                     KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "reserved"));
    json_decref(hdr);
    char big[201];
    memset(big, 'a', 200);
    big[200] = '\0';
    json_t *bigj = json_string(big);
    ck_assert_int_eq(ksf_client_send(v.cli, PATTERN, bigj, NULL, never_called, NULL, &ei),
                     KSF_EMSGSIZE);
    ck_assert_str_eq(ei.text,
                     "the value is 200 bytes, more than message.max.bytes (100); "
                     "send less or raise message.max.bytes");
    ck_assert_int_eq(ksf_client_emit(v.cli, PATTERN, bigj, NULL, NULL, NULL, &ei),
                     KSF_EMSGSIZE);
    json_decref(bigj);
    ck_assert_uint_eq(stats(v.cli).sent, 0);
    /* client.max.in.flight = 2: the third fails fast. */
    collector c = {.m = PTHREAD_MUTEX_INITIALIZER};
    send_cmd(v.cli, "silent", 0, 60000, &c);
    send_cmd(v.cli, "silent", 0, 60000, &c);
    ck_assert_int_eq(ksf_client_send(v.cli, PATTERN, data, NULL, never_called, NULL, &ei),
                     KSF_EBUSY);
    ck_assert_str_eq(ei.text, "2 requests are in flight, the client.max.in.flight limit; "
                              "retry when some have finished");
    json_decref(data);
    ksf_client_destroy(v.cli);
    v.cli = NULL;
    ck_assert_int_eq(collected(&c), 2);
    ck_assert_int_eq(c.d[0].err, KSF_ECLOSED);
    ck_assert_int_eq(c.d[1].err, KSF_ECLOSED);
    env_stop(&v);
}
END_TEST

KSFT_TEST(test_client_reply_partition_out_of_range, 30)
{
    const char *const extra[] = {"client.reply.partition", "7", NULL};
    env v = env_start_with("static", extra);
    ksf_errinfo ei = {0};
    json_t *data = json_string("null");
    int64_t t0 = ksft_now_ms();
    /* send never waits: the failure comes through the callback, with the sentence. */
    json_t *out = NULL;
    ck_assert_int_eq(ksf_client_call(v.cli, PATTERN, data, 10000, &out, &ei),
                     KSF_ENOPARTITION);
    ck_assert_int_lt(ksft_now_ms() - t0, 5000);
    ck_assert_str_eq(ei.text, PATTERN
                     ": The client consumer did not subscribe to the corresponding "
                     "reply topic (" PATTERN ".reply). It has 4 partitions; "
                     "client.reply.partition is 7.");
    ck_assert_ptr_null(out);
    ck_assert_int_eq(ksf_client_subscribe_to_response_of(v.cli, PATTERN, &ei), KSF_OK);
    ck_assert_int_eq(ksf_client_connect(v.cli, 5000, &ei), KSF_ENOPARTITION);
    json_decref(data);
    ck_assert_uint_eq(stats(v.cli).sent, 0);
    env_stop(&v);
}
END_TEST

KSFT_TEST(test_client_broker_down, 30)
{
    KSFT_NEEDS_MOCK("stopping and restarting the broker");
    env v = env_start_with("static", NULL);
    json_t *out = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(call_cmd(v.cli, "null", 10000, &out, &ei), KSF_OK); /* topic ready */
    json_decref(out);
    ksft_broker_set_down(v.b, true);
    int64_t t0 = ksft_now_ms();
    ck_assert_int_eq(call_cmd(v.cli, "null", 500, &out, &ei), KSF_ETIMEDOUT);
    ck_assert_int_lt(ksft_now_ms() - t0, 3000);
    ck_assert_ptr_null(out);
    ck_assert_ptr_nonnull(strstr(ei.text, PATTERN ": "));
    /* A pattern whose reply topic is not known yet: no metadata, a clear sentence. */
    json_t *data = json_string("x");
    t0 = ksft_now_ms();
    ksf_err e = ksf_client_call(v.cli, "other.pattern", data, 500, &out, &ei);
    ck_assert_msg(e == KSF_ETIMEDOUT, "%s: %s", ksf_strerror(e), ei.text);
    ck_assert_int_lt(ksft_now_ms() - t0, 3000);
    ck_assert_str_eq(ei.text, "other.pattern: not sent: no reply partition of "
                              "other.pattern.reply was assigned before the request's "
                              "deadline (are the brokers up? a reply-group join takes "
                              "seconds; call ksf_client_connect first, or give the "
                              "request more time)");
    json_decref(data);
    ck_assert_int_eq(ksf_client_flush(v.cli, 200, &ei), KSF_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(ei.text, "still queued"));
    env_stop(&v);
}
END_TEST

KSFT_TEST(test_client_request_header_bytes, 30)
{
    env v = env_start(NULL);
    json_t *obj = json_pack("{s:i,s:i}", "heroId", 1, "dragonId", 7), *out = NULL;
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_client_call(v.cli, PATTERN, obj, 10000, &out, &ei) == KSF_OK, "%s",
                  ei.text);
    json_decref(out);
    json_decref(obj);
    request q;
    pthread_mutex_lock(&v.r->m);
    q = v.r->last;
    pthread_mutex_unlock(&v.r->m);
    ck_assert_str_eq(q.value, "{\"heroId\":1,\"dragonId\":7}");
    ck_assert_uint_eq(strlen(q.id), 36);
    ck_assert_uint_eq(strspn(q.id, "0123456789abcdef-"), 36);
    char want[512];
    snprintf(want, sizeof want,
             "\nkafka_correlationId=%s\nkafka_replyTopic=" PATTERN ".reply\n"
             "kafka_replyPartition=0",
             q.id);
    /* ksf_deadline (13 digits) and traceparent (55 characters, whose bytes
     * tests/test_trace.c checks) come first. */
    ck_assert_int_eq(strncmp(q.headers, "ksf_deadline=", 13), 0);
    ck_assert_uint_eq(strspn(q.headers + 13, "0123456789"), 13);
    ck_assert_int_eq(strncmp(q.headers + 26, "\ntraceparent=00-", 16), 0);
    ck_assert_str_eq(q.headers + 26 + 13 + 55, want);
    /* Extra headers and a key ride along; the protocol headers come last. */
    json_t *hdrs = json_pack("{s:s}", "x-trace", "abc"), *data = json_string("null");
    ksf_send_opts o = {.headers = hdrs, .key = "k1", .key_len = 2};
    collector c = {.m = PTHREAD_MUTEX_INITIALIZER};
    ck_assert_int_eq(ksf_client_send(v.cli, PATTERN, data, &o, collect, &c, &ei), KSF_OK);
    ck_assert(wait_collected(&c, 1, 10000));
    ck_assert_str_eq(c.d[0].value, "null");
    pthread_mutex_lock(&v.r->m);
    q = v.r->last;
    pthread_mutex_unlock(&v.r->m);
    ck_assert_ptr_eq(strstr(q.headers, "x-trace=abc\nksf_deadline="), q.headers);
    json_decref(hdrs);
    json_decref(data);
    env_stop(&v);
}
END_TEST

/* ---- trace.headers=false, client.deadline.header=false ------------------------------
 */

#define TP_SPEC "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

/* The headers of the last message the responder saw, once it saw @p n in all. */
static request
nth_request(env *v, int n)
{
    KSFT_WAIT_UNTIL(atomic_load(&v->r->requests) >= n, 10000, "%d messages (saw %d)", n,
                    atomic_load(&v->r->requests));
    ck_assert_int_eq(atomic_load(&v->r->requests), n);
    pthread_mutex_lock(&v->r->m);
    request q = v->r->last;
    pthread_mutex_unlock(&v->r->m);
    return q;
}

/* NestJS's three request headers for @p q, in ClientKafka's order, after @p before. */
static void
assert_request_headers(const request *q, const char *before)
{
    char want[512];
    snprintf(want, sizeof want,
             "%skafka_correlationId=%s\nkafka_replyTopic=" PATTERN ".reply\n"
             "kafka_replyPartition=0",
             before, q->id);
    ck_assert_str_eq(q->headers, want);
}

/* An echo call of "x" (echoed as x), and the request it sent. */
static request
lean_call(env *v, const ksf_send_opts *o, int n)
{
    collector c = {.m = PTHREAD_MUTEX_INITIALIZER};
    ksf_errinfo ei = {0};
    json_t *data = json_string("x");
    ck_assert_msg(ksf_client_send(v->cli, PATTERN, data, o, collect, &c, &ei) == KSF_OK,
                  "%s", ei.text);
    json_decref(data);
    ck_assert(wait_collected(&c, 1, 10000));
    ck_assert_int_eq(c.d[0].err, KSF_OK);
    ck_assert_str_eq(c.d[0].value, "\"x\"");
    return nth_request(v, n);
}

/* Both off: a request carries exactly NestJS's headers; the caller's own trace context
 * still goes as given; an event carries nothing, or only the deadline it asked for. */
KSFT_TEST(test_client_lean_headers, 30)
{
    const char *const lean[] = {"trace.headers", "false", "client.deadline.header",
                                "false", NULL};
    env v = env_start_with("static", lean);
    request q = lean_call(&v, NULL, 1);
    assert_request_headers(&q, "");
    ksf_send_opts own = {.traceparent = TP_SPEC};
    q = lean_call(&v, &own, 2);
    assert_request_headers(&q, "traceparent=" TP_SPEC "\n");
    ksf_send_opts own_state = {.traceparent = TP_SPEC, .tracestate = "k=v"};
    q = lean_call(&v, &own_state, 3);
    assert_request_headers(&q, "traceparent=" TP_SPEC "\ntracestate=k=v\n");
    /* A tracestate alone is refused as ever. */
    ksf_send_opts bad = {.tracestate = "k=v"};
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_send(v.cli, PATTERN, NULL, &bad, collect, NULL, &ei),
                     KSF_EINVAL);
    ck_assert_str_eq(ei.text, "opts.tracestate needs opts.traceparent: a tracestate "
                              "belongs to one trace position");
    /* Events (the responder records them, without answering): no headers at all; one
     * with an explicit timeout still carries its ksf_deadline (the caller asked). */
    json_t *ev = json_string("event");
    ck_assert_int_eq(ksf_client_emit(v.cli, PATTERN, ev, NULL, NULL, NULL, &ei), KSF_OK);
    q = nth_request(&v, 4);
    ck_assert_str_eq(q.value, "event");
    ck_assert_str_eq(q.headers, "");
    ksf_send_opts timed = {.timeout_ms = 60000};
    int64_t t0 = ksfi_wall_ms();
    ck_assert_int_eq(ksf_client_emit(v.cli, PATTERN, ev, &timed, NULL, NULL, &ei),
                     KSF_OK);
    q = nth_request(&v, 5);
    ck_assert_int_eq(strncmp(q.headers, "ksf_deadline=", 13), 0);
    int64_t dl = strtoll(q.headers + 13, NULL, 10);
    ck_assert_uint_eq(strlen(q.headers), 13 + 13);
    ck_assert(dl >= t0 + 60000 && dl <= ksfi_wall_ms() + 60000);
    json_decref(ev);
    ksf_client_stats st = stats(v.cli);
    ck_assert_uint_eq(st.sent, 3);
    ck_assert_uint_eq(st.replies, 3);
    env_stop(&v);
}
END_TEST

/* Each switch alone takes away only its own header. */
KSFT_TEST(test_client_lean_header_each, 30)
{
    const char *const no_trace[] = {"trace.headers", "false", NULL};
    env v = env_start_with("static", no_trace);
    int64_t t0 = ksfi_wall_ms();
    request q = lean_call(&v, NULL, 1);
    ck_assert_int_eq(strncmp(q.headers, "ksf_deadline=", 13), 0);
    int64_t dl = strtoll(q.headers + 13, NULL, 10);
    ck_assert(dl >= t0 + 30000 && dl <= ksfi_wall_ms() + 30000); /* client.timeout.ms */
    char before[48];
    snprintf(before, sizeof before, "ksf_deadline=%lld\n", (long long)dl);
    assert_request_headers(&q, before);
    env_stop(&v);

    const char *const no_deadline[] = {"client.deadline.header", "false", NULL};
    v = env_start_with("static", no_deadline);
    q = lean_call(&v, NULL, 1);
    ck_assert_int_eq(strncmp(q.headers, "traceparent=00-", 15), 0);
    ksfi_traceparent tp;
    ck_assert(ksfi_traceparent_parse(q.headers + 12, 55, &tp));
    char tp_text[128];
    snprintf(tp_text, sizeof tp_text, "traceparent=%.55s\n", q.headers + 12);
    assert_request_headers(&q, tp_text);
    /* The client's own timeout still ends a request nobody answers. */
    collector c = {.m = PTHREAD_MUTEX_INITIALIZER};
    send_cmd(v.cli, "silent", 0, 300, &c);
    ck_assert(wait_collected(&c, 1, 10000));
    ck_assert_int_eq(c.d[0].err, KSF_ETIMEDOUT);
    env_stop(&v);
}
END_TEST

/* A fresh client's first send waits for the sender thread (no reply partition yet, its
 * topic not looked up): the send copies the extra headers, so changing them after it
 * returned changes nothing, and they go out in order before ksf_deadline, traceparent
 * and the protocol headers. */
KSFT_TEST(test_client_queued_header_bytes, 60)
{
    env v = env_start(NULL);
    json_t *hdrs = json_pack("{s:s,s:s}", "x-a", "1", "x-bee", "two");
    json_t *data = json_string("queued");
    ksf_send_opts o = {.headers = hdrs, .timeout_ms = 20000};
    collector c = {.m = PTHREAD_MUTEX_INITIALIZER};
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_send(v.cli, PATTERN, data, &o, collect, &c, &ei), KSF_OK);
    /* A reply-group join takes seconds: the request is still queued here. */
    ck_assert_int_eq(atomic_load(&v.r->requests), 0);
    json_string_set(json_object_get(hdrs, "x-a"), "changed after the send");
    json_decref(hdrs);
    json_decref(data);
    ck_assert(wait_collected(&c, 1, 20000));
    ck_assert_int_eq(c.d[0].err, KSF_OK);
    ck_assert_str_eq(c.d[0].value, "\"queued\"");
    request q;
    pthread_mutex_lock(&v.r->m);
    q = v.r->last;
    pthread_mutex_unlock(&v.r->m);
    ck_assert_ptr_eq(strstr(q.headers, "x-a=1\nx-bee=two\nksf_deadline="), q.headers);
    char want[512];
    snprintf(want, sizeof want,
             "\nkafka_correlationId=%s\nkafka_replyTopic=" PATTERN ".reply\n"
             "kafka_replyPartition=0",
             q.id);
    size_t hl = strlen(q.headers), wl = strlen(want);
    ck_assert_uint_gt(hl, wl);
    ck_assert_str_eq(q.headers + hl - wl, want);
    ck_assert_ptr_nonnull(strstr(q.headers, "\ntraceparent=00-"));
    env_stop(&v);
}
END_TEST

/* client.wire.dialect=spring: the request headers a Spring @SendTo listener reads, and
 * its single reply (raw id bytes, no kafka_nest-is-disposed) ends the call. */
KSFT_TEST(test_client_spring_dialect, 30)
{
    const char *const extra[] = {"client.wire.dialect", "spring",
                                 "client.reply.partition", "2", NULL};
    env v = env_start_with("static", extra);
    json_t *out = NULL;
    ksf_errinfo ei = {0};
    ck_assert_msg(call_cmd(v.cli, "spring", 10000, &out, &ei) == KSF_OK, "%s", ei.text);
    assert_json(out, "\"spring reply\"");
    json_decref(out);
    request q;
    pthread_mutex_lock(&v.r->m);
    q = v.r->last;
    pthread_mutex_unlock(&v.r->m);
    ck_assert_uint_eq(q.id_len, 16);
    ck_assert_int_eq(q.id_raw[6] >> 4, 4); /* a version-4 UUID, as Spring's default */
    ck_assert_str_eq(q.reply_topic, PATTERN ".reply");
    ck_assert_uint_eq(q.partition_len, 4);
    ck_assert(!memcmp(q.partition_raw, "\0\0\0\x02", 4));
    ck_assert_int_eq(q.partition, 2);
    /* A second call gets a new id and its own answer. */
    unsigned char first[16];
    memcpy(first, q.id_raw, 16);
    ck_assert_int_eq(call_cmd(v.cli, "spring", 10000, &out, &ei), KSF_OK);
    json_decref(out);
    pthread_mutex_lock(&v.r->m);
    q = v.r->last;
    pthread_mutex_unlock(&v.r->m);
    ck_assert(q.id_len == 16 && memcmp(q.id_raw, first, 16) != 0);
    ksf_client_stats st = stats(v.cli);
    ck_assert_uint_eq(st.replies, 2);
    ck_assert_uint_eq(st.unknown_replies, 0);
    env_stop(&v);
}
END_TEST

typedef struct emit_seen {
    atomic_int n, ok;
} emit_seen;

static void
emit_done(ksf_err err, const char *text, void *user)
{
    emit_seen *s = user;
    (void)text;
    atomic_fetch_add(&s->ok, err == KSF_OK);
    atomic_fetch_add(&s->n, 1);
}

KSFT_TEST(test_client_emit_bytes, 30)
{
    env v = env_start_with("static", NULL);
    ksft_broker_create_topic(v.b, "ev.topic", 1);
    static const char *const inputs[] = {"{\"heroId\":1,\"dragonId\":7}", "\"plain\"",
                                         "42", "true", "null"};
    static const char *const wire[] = {"{\"heroId\":1,\"dragonId\":7}", "plain", "42",
                                       "true", NULL};
    emit_seen seen = {0};
    ksf_errinfo ei = {0};
    for (int i = 0; i < 5; i++) {
        json_t *d = json_loads(inputs[i], JSON_DECODE_ANY, NULL);
        ck_assert_int_eq(
            ksf_client_emit(v.cli, "ev.topic", d, NULL, emit_done, &seen, &ei), KSF_OK);
        json_decref(d);
    }
    ck_assert_int_eq(ksf_client_flush(v.cli, 10000, &ei), KSF_OK);
    ck_assert_int_eq(atomic_load(&seen.n), 5);
    ck_assert_int_eq(atomic_load(&seen.ok), 5);
    ck_assert_uint_eq(stats(v.cli).emitted, 5);
    ck_assert_uint_eq(stats(v.cli).sent, 0);
    rd_kafka_t *rk = plain_handle(v.b, RD_KAFKA_CONSUMER);
    rd_kafka_poll_set_consumer(rk);
    assign_from_start(rk, "ev.topic");
    int got = 0;
    ksft_deadline end = ksft_deadline_in(10000);
    while (got < 5 && ksft_deadline_wait(&end)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            continue;
        }
        if (!m->err) {
            rd_kafka_headers_t *h = NULL;
            const void *tp = NULL;
            size_t tp_len = 0;
            /* Only a traceparent: no reply headers, no deadline for an event. */
            ck_assert_int_eq(rd_kafka_message_headers(m, &h), 0);
            ck_assert_uint_eq(rd_kafka_header_cnt(h), 1);
            ck_assert_int_eq(rd_kafka_header_get_last(h, "traceparent", &tp, &tp_len), 0);
            ck_assert_uint_eq(tp_len, 55);
            if (wire[got]) {
                ck_assert_uint_eq(m->len, strlen(wire[got]));
                ck_assert_int_eq(memcmp(m->payload, wire[got], m->len), 0);
            } else {
                ck_assert_ptr_null(m->payload);
            }
            ck_assert_ptr_null(m->key);
            got++;
        }
        rd_kafka_message_destroy(m);
    }
    ck_assert_int_eq(got, 5);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    env_stop(&v);
}
END_TEST

/* Delivery reports are served by the reply thread, which an idle client leaves asleep
 * in its consumer poll for up to a second: a report must wake it. Five events one
 * after another on an idle client, each acknowledged before the next is emitted; a
 * report served only when the poll times out would take ~0.5 s each. */
KSFT_TEST(test_client_reports_wake_reply_thread, 30)
{
    env v = env_start_with("static", NULL);
    ksft_broker_create_topic(v.b, "ev.topic", 1);
    emit_seen seen = {0};
    ksf_errinfo ei = {0};
    json_t *d = json_pack("{s:i}", "n", 1);
    /* the first one also looks the topic up */
    ck_assert_int_eq(ksf_client_emit(v.cli, "ev.topic", d, NULL, emit_done, &seen, &ei),
                     KSF_OK);
    ck_assert_int_eq(ksft_wait_atomic(&seen.n, 1, 10000), 1);
    ksft_sleep_ms(300); /* the reply thread is asleep again */
    int64_t t0 = ksft_now_ms();
    for (int i = 2; i <= 6; i++) {
        ck_assert_int_eq(
            ksf_client_emit(v.cli, "ev.topic", d, NULL, emit_done, &seen, &ei), KSF_OK);
        ck_assert_int_eq(ksft_wait_atomic(&seen.n, i, 10000), i);
    }
    int64_t took = ksft_now_ms() - t0;
    ck_assert_msg(took < ksft_scaled_ms(1500), "5 acknowledgements took %lld ms",
                  (long long)took);
    ck_assert_int_eq(atomic_load(&seen.ok), 6);
    ck_assert_uint_eq(stats(v.cli).emitted, 6);
    json_decref(d);
    env_stop(&v);
}
END_TEST

/* An event emitted from an emit callback (the reply thread) is acknowledged at once:
 * a request's report does not wake that thread, which then sleeps up to 10 ms while
 * reports are owed, but one an emit callback waits for does. 40 events, each emitted
 * by the previous one's callback: without that wake-up at least 0.4 s. */
#define CHAIN_N 40

typedef struct emit_chain {
    ksf_client *cli;
    json_t *d;
    atomic_int n, ok;
} emit_chain;

static void
chain_next(ksf_err err, const char *text, void *user)
{
    emit_chain *c = user;
    (void)text;
    atomic_fetch_add(&c->ok, err == KSF_OK);
    if (atomic_fetch_add(&c->n, 1) + 1 < CHAIN_N) {
        ksf_errinfo ei = {0};
        ck_assert_int_eq(
            ksf_client_emit(c->cli, "ev.topic", c->d, NULL, chain_next, c, &ei), KSF_OK);
    }
}

KSFT_TEST(test_client_emit_chain_in_callbacks, 30)
{
    env v = env_start_with("static", NULL);
    ksft_broker_create_topic(v.b, "ev.topic", 1);
    emit_seen seen = {0};
    ksf_errinfo ei = {0};
    emit_chain c = {.cli = v.cli, .d = json_pack("{s:i}", "n", 1)};
    /* the first one also looks the topic up */
    ck_assert_int_eq(ksf_client_emit(v.cli, "ev.topic", c.d, NULL, emit_done, &seen, &ei),
                     KSF_OK);
    ck_assert_int_eq(ksft_wait_atomic(&seen.n, 1, 10000), 1);
    int64_t t0 = ksft_now_ms();
    ck_assert_int_eq(ksf_client_emit(v.cli, "ev.topic", c.d, NULL, chain_next, &c, &ei),
                     KSF_OK);
    ck_assert_int_eq(ksft_wait_atomic(&c.n, CHAIN_N, 10000), CHAIN_N);
    int64_t took = ksft_now_ms() - t0;
    ck_assert_msg(took < ksft_scaled_ms(250), "%d chained events took %lld ms", CHAIN_N,
                  (long long)took);
    ck_assert_int_eq(atomic_load(&c.ok), CHAIN_N);
    ck_assert_uint_eq(stats(v.cli).emitted, CHAIN_N + 1);
    json_decref(c.d);
    env_stop(&v);
}
END_TEST

typedef struct flush_in_cb {
    ksf_client *cli;
    emit_seen seen;
    ksf_err emit_err, flush_err;
    int acked_at_flush; /* emit callbacks run when the flush returned */
    atomic_int done;
} flush_in_cb;

static void
emit_then_flush(const ksf_reply *r, void *user)
{
    flush_in_cb *f = user;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(r->err, KSF_OK);
    json_t *d = json_string("from a reply callback");
    f->emit_err = ksf_client_emit(f->cli, "ev.topic", d, NULL, emit_done, &f->seen, &ei);
    json_decref(d);
    /* On the reply thread, which serves the reports: the flush must serve them. */
    f->flush_err = ksf_client_flush(f->cli, 10000, &ei);
    f->acked_at_flush = atomic_load(&f->seen.n);
    atomic_store(&f->done, 1);
}

/* ksf_client_flush inside a reply callback: the reply thread serves the delivery
 * reports, so the flush serves them itself instead of waiting for itself. */
KSFT_TEST(test_client_flush_in_reply_callback, 30)
{
    env v = env_start_with("static", NULL);
    ksft_broker_create_topic(v.b, "ev.topic", 1);
    flush_in_cb f = {.cli = v.cli, .emit_err = -1, .flush_err = -1};
    ksf_errinfo ei = {0};
    json_t *d = json_string("null");
    ck_assert_int_eq(ksf_client_send(v.cli, PATTERN, d,
                                     &(ksf_send_opts){.timeout_ms = 10000},
                                     emit_then_flush, &f, &ei),
                     KSF_OK);
    json_decref(d);
    ck_assert_int_eq(ksft_wait_atomic(&f.done, 1, 20000), 1);
    ck_assert_int_eq(f.emit_err, KSF_OK);
    ck_assert_int_eq(f.flush_err, KSF_OK);
    ck_assert_int_eq(f.acked_at_flush, 1);
    ck_assert_int_eq(atomic_load(&f.seen.ok), 1);
    env_stop(&v);
}
END_TEST

KSFT_TEST(test_client_idle_pauses, 30)
{
    env v = env_start_with("static", NULL);
    json_t *out = NULL;
    ck_assert_int_eq(call_cmd(v.cli, "string", 10000, &out, NULL), KSF_OK);
    json_decref(out);
    /* After the idle delay the reply partition is paused; a send resumes it. */
    ksft_sleep_ms(1500); /* the idle delay itself is what is tested */
    ck_assert_int_eq(call_cmd(v.cli, "number", 10000, &out, NULL), KSF_OK);
    assert_json(out, "\"3\"");
    json_decref(out);
    ck_assert_uint_eq(stats(v.cli).replies, 2);
    env_stop(&v);
}
END_TEST

KSFT_TEST(test_client_destroy_null, 5)
{
    ksf_client_destroy(NULL);
    ksf_client_stats s = {.sent = 99};
    ksf_client_get_stats(NULL, &s);
    ck_assert_uint_eq(s.sent, 99);
}
END_TEST

KSFT_TEST(test_client_cli, 60)
{
    if (!getenv("KSF_TOOL")) {
        fprintf(stderr, "test_client_cli: KSF_TOOL not set (run through meson test)\n");
        return;
    }
    env v = env_start_with("static", NULL);
    ksft_broker_create_topic(v.b, "ev.cli", 1);
    const char *b = ksft_broker_address(v.b);
    char args[512], out[1024];
    static const struct {
        const char *args;
        const char *redirect; /* which stream is compared */
        int rc;
        const char *out;
    } cases[] = {
        {"call " PATTERN " string --raw --timeout-ms 10000", "2>/dev/null", 0,
         "\"hello\"\n"},
        /* Text that is not JSON is refused, not sent as a string by surprise. */
        {"call " PATTERN " string", "2>&1 >/dev/null", 2,
         "ksf call: the payload is not valid JSON (invalid token near 'string', at "
         "line 1 column 6); quote a string as '\"string\"', or pass --raw to send the "
         "text as it is\n(ksf call --help for usage)\n"},
        {"call " PATTERN " '{\"heroId\":1}'", "2>/dev/null", 0, "{\"heroId\":1}\n"},
        {"call " PATTERN " '\"stream3\"'", "2>/dev/null", 0,
         "{\"i\":1}\n{\"i\":2}\n{\"i\":3}\n"},
        {"call " PATTERN " errobj --raw", "2>&1 >/dev/null", 1,
         "{\"code\":42,\"message\":\"x\"}\n"},
        {"call " PATTERN " '\"silent\"' --timeout-ms 300", "2>/dev/null", 3, ""},
        {"call 'bad topic' x", "2>/dev/null", 2, ""},
        {"call " PATTERN " --bogus", "2>/dev/null", 2, ""},
        {"emit ev.cli '{\"a\":1}'", "2>/dev/null", 0, ""},
        {"call " PATTERN " x --raw --set client.reply.partition=9", "2>&1 >/dev/null", 4,
         "ksf call: The client consumer did not subscribe to the corresponding reply "
         "topic "
         "(" PATTERN ".reply). It has 4 partitions; client.reply.partition is 9.\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, "%s --brokers %s %s", cases[i].args, b,
                 cases[i].redirect);
        int rc = ksft_run_tool("KSF_TOOL", "", args, KSFT_STDOUT, out, sizeof out);
        ck_assert_msg(rc == cases[i].rc, "ksf %s: exit %d, want %d", args, rc,
                      cases[i].rc);
        ck_assert_str_eq(out, cases[i].out);
    }
    env_stop(&v);
}
END_TEST

KSFT_MAIN("client")
