/*
 * ksf_server against the embedded broker, driven by a plain librdkafka producer and a
 * reply collector, asserting the exact reply bytes and headers NestJS would send.
 */
#include "broker.h"
#include "codec/wire.h"
#include "raw_kafka.h"
#include "server/server.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REPLY "t.reply" /* every test's reply topic, 1 partition */
#define WAIT_MS 10000

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- a server running on its own thread ------------------------------------------ */

typedef struct running {
    ksft_broker *broker;
    ksf_server *srv;
    pthread_t thread;
    ksf_err run_err;
    ksf_errinfo ei;
    atomic_int ready;
    ksft_producer *prod;
    ksft_collector *replies;
} running;

static void
on_ready(ksf_server *srv, void *user)
{
    (void)srv;
    atomic_fetch_add(&((running *)user)->ready, 1);
}

static void *
run_main(void *arg)
{
    running *r = arg;
    r->run_err = ksf_server_run(r->srv, &r->ei);
    return NULL;
}

/* Start @p srv (handlers registered) on a thread and wait for its ready callback. */
static void
run_server(running *r, ksf_server *srv)
{
    r->srv = srv;
    ksf_server_set_ready_cb(srv, on_ready, r);
    ck_assert_int_eq(pthread_create(&r->thread, NULL, run_main, r), 0);
    int64_t until = ksft_now_ms() + 20000;
    while (!atomic_load(&r->ready) && ksft_now_ms() < until) {
        sleep_ms(10); /* polling a condition with a deadline */
    }
    ck_assert_msg(atomic_load(&r->ready) == 1, "server not ready within 20 s");
}

static void
stop_server(running *r)
{
    ksf_server_stop(r->srv);
    pthread_join(r->thread, NULL);
    ck_assert_msg(r->run_err == KSF_OK, "run: %s", r->ei.text);
}

static ksf_server *
new_server(ksf_config *cfg)
{
    ksf_server *srv = NULL;
    ksf_errinfo ei = {0};
    /* Every pattern here answers on the one REPLY topic, as a Spring caller would. */
    ck_assert_int_eq(ksf_config_set(cfg, "server.reply.topics", REPLY, &ei), KSF_OK);
    ck_assert_msg(ksf_server_new(&srv, cfg, &ei) == KSF_OK, "%s", ei.text);
    return srv;
}

static void
on_message(ksf_server *srv, const char *pattern, ksf_handler_fn fn, void *user)
{
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_on_message(srv, pattern, fn, user, &ei) == KSF_OK, "%s",
                  ei.text);
}

static void
on_event(ksf_server *srv, const char *pattern, ksf_handler_fn fn, void *user)
{
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_on_event(srv, pattern, fn, user, &ei) == KSF_OK, "%s",
                  ei.text);
}

/* Broker, topics (1 partition each) and the test's producer and collector. */
static void
setup_world(running *r, const char *const *topics)
{
    memset(r, 0, sizeof *r);
    r->broker = ksft_broker_start();
    ksft_broker_create_topic(r->broker, REPLY, 1);
    for (size_t i = 0; topics[i]; i++) {
        ksft_broker_create_topic(r->broker, topics[i], 1);
    }
    r->prod = ksft_producer_new(ksft_broker_address(r->broker));
    r->replies = ksft_collector_new(ksft_broker_address(r->broker), REPLY, 0);
}

static void
teardown_world(running *r)
{
    ksf_server_destroy(r->srv);
    ksft_collector_destroy(r->replies);
    ksft_producer_destroy(r->prod);
    ksft_broker_stop(r->broker);
}

/* ---- reply assertions ---------------------------------------------------------------
 */

/* Send a request on @p topic with id @p id and return its only (or @p nth) reply. */
static const ksft_msg *
request(running *r, const char *topic, const char *id, const void *value, size_t len)
{
    ksft_send_request(r->prod, topic, 0, id, REPLY, 0, value, len, true);
    ck_assert_msg(ksft_collector_wait_id(r->replies, id, 1, WAIT_MS) >= 1,
                  "no reply to %s (%s)", topic, id);
    return ksft_collector_get_id(r->replies, id, 0);
}

static void
assert_bytes(const void *got, size_t got_len, const void *want, size_t want_len,
             const char *what)
{
    ck_assert_msg((got == NULL) == (want == NULL), "%s: %s, expected %s", what,
                  got ? "present" : "null", want ? "present" : "null");
    ck_assert_msg(got_len == want_len && (!want_len || !memcmp(got, want, want_len)),
                  "%s: got %zu bytes \"%.*s\", expected %zu bytes \"%.*s\"", what,
                  got_len, (int)got_len, got ? (const char *)got : "", want_len,
                  (int)want_len, want ? (const char *)want : "");
}

/* Exact header list: names in order, values byte for byte. Every reply also ends with
 * a traceparent, whose random span id tests/test_trace.c checks; here only its size. */
static void
assert_headers(const ksft_msg *m, const ksfi_header *want, size_t n)
{
    ck_assert_uint_eq(m->nhdrs, n + 1);
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(m->hdrs[i].name, want[i].name);
        assert_bytes(m->hdrs[i].value, m->hdrs[i].len, want[i].value, want[i].len,
                     want[i].name);
    }
    ck_assert_str_eq(m->hdrs[n].name, "traceparent");
    ck_assert_uint_eq(m->hdrs[n].len, 55);
}

#define H(name, text) ((ksfi_header){(name), (text), sizeof(text) - 1})
#define ID(id) H(KSFI_HDR_CORRELATION_ID, id)
#define DISPOSED ((ksfi_header){KSFI_HDR_NEST_IS_DISPOSED, "\0", 1})
#define ERR(text) H(KSFI_HDR_NEST_ERR, text)

/* A value reply: the value plus kafka_correlationId and kafka_nest-is-disposed. */
static void
assert_value_reply(const ksft_msg *m, const char *id, const char *value, size_t len)
{
    assert_bytes(m->value, m->len, value, len, "value");
    ksfi_header want[] = {{KSFI_HDR_CORRELATION_ID, id, strlen(id)}, DISPOSED};
    assert_headers(m, want, 2);
}

/* An error reply: null value, kafka_correlationId, kafka_nest-err, is-disposed. */
static void
assert_error_reply(const ksft_msg *m, const char *id, const char *err)
{
    assert_bytes(m->value, m->len, NULL, 0, "value");
    ksfi_header want[] = {{KSFI_HDR_CORRELATION_ID, id, strlen(id)},
                          {KSFI_HDR_NEST_ERR, err, strlen(err)},
                          DISPOSED};
    assert_headers(m, want, 3);
}

static ksf_server_stats
stats(running *r)
{
    ksf_server_stats s;
    ksf_server_get_stats(r->srv, &s);
    return s;
}

/* Poll a server counter until it reaches at least @p n (deadline WAIT_MS). */
#define WAIT_STAT(r, field, n)                                                           \
    do {                                                                                 \
        int64_t until_ = ksft_now_ms() + WAIT_MS;                                        \
        while (stats(r).field < (uint64_t)(n) && ksft_now_ms() < until_) {               \
            sleep_ms(5);                                                                 \
        }                                                                                \
        ck_assert_uint_ge(stats(r).field, (uint64_t)(n));                                \
    } while (0)

/* ---- handlers ------------------------------------------------------------------ */

static ksf_err
h_object(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    *reply = json_pack("{s:i, s:[b, n], s:s}", "a", 1, "b", 1, "c", "x\"y");
    return KSF_OK;
}

static ksf_err
h_array(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    *reply = json_pack("[{s:i, s:s}, {s:i, s:s}]", "id", 1, "name", "Mythical Sword",
                       "id", 2, "name", "Key to Dungeon");
    return KSF_OK;
}

static ksf_err
h_string(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    *reply = json_string("hello world");
    return KSF_OK;
}

static ksf_err
h_number(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    /* 42 for an empty object request, 0.1 (JavaScript's text) otherwise. */
    *reply = json_object_size(data) == 0 ? json_integer(42) : json_real(0.1);
    return KSF_OK;
}

static ksf_err
h_null(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    (void)reply;
    return KSF_OK;
}

static ksf_err
h_err_string(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    *reply = json_string("ignored"); /* the error already ended the reply */
    return ksf_ctx_reply_error(ctx, "dragon not found");
}

static ksf_err
h_err_object(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    json_t *e = json_pack("{s:i, s:s}", "code", 42, "message", "x");
    ksf_err rc = ksf_ctx_reply_error_json(ctx, e);
    json_decref(e);
    ck_assert_int_eq(ksf_ctx_reply_error(ctx, "second"), KSF_ESTATE);
    return rc;
}

static ksf_err
h_internal(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    (void)reply;
    return KSF_EINVAL;
}

/* Echo: JSON data as is; binary data (NULL) as the same raw bytes. */
static ksf_err
h_echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    if (!data) {
        size_t len;
        const void *v = ksf_ctx_value(ctx, &len);
        return ksf_ctx_set_reply_raw(ctx, v, len);
    }
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

START_TEST(test_server_reply_shapes)
{
    static const char *const topics[] = {
        "t.object",     "t.array",      "t.string",   "t.number",    "t.null",
        "t.err.string", "t.err.object", "t.internal", "t.nohandler", NULL};
    running r;
    setup_world(&r, topics);
    ksf_config *cfg = ksft_config(r.broker);
    ksf_server *srv = new_server(cfg);
    ksf_config_destroy(cfg);
    on_message(srv, "t.object", h_object, NULL);
    on_message(srv, "t.array", h_array, NULL);
    on_message(srv, "t.string", h_string, NULL);
    on_message(srv, "t.number", h_number, NULL);
    on_message(srv, "t.null", h_null, NULL);
    on_message(srv, "t.err.string", h_err_string, NULL);
    on_message(srv, "t.err.object", h_err_object, NULL);
    on_message(srv, "t.internal", h_internal, NULL);
    ck_assert_int_eq(ksfi_server_add_topic(srv, "t.nohandler", NULL), KSF_OK);
    run_server(&r, srv);

    const char obj[] = "{\"a\":1,\"b\":[true,null],\"c\":\"x\\\"y\"}";
    assert_value_reply(request(&r, "t.object", "id-obj", "{}", 2), "id-obj", obj,
                       strlen(obj));
    const char arr[] = "[{\"id\":1,\"name\":\"Mythical Sword\"},{\"id\":2,\"name\":\"Key "
                       "to Dungeon\"}]";
    assert_value_reply(request(&r, "t.array", "id-arr", "{}", 2), "id-arr", arr,
                       strlen(arr));
    assert_value_reply(request(&r, "t.string", "id-str", "x", 1), "id-str", "hello world",
                       11);
    assert_value_reply(request(&r, "t.number", "id-int", "{}", 2), "id-int", "42", 2);
    assert_value_reply(request(&r, "t.number", "id-real", "{\"a\":1}", 7), "id-real",
                       "0.1", 3);
    assert_value_reply(request(&r, "t.null", "id-null", NULL, 0), "id-null", NULL, 0);
    assert_error_reply(request(&r, "t.err.string", "id-es", "{}", 2), "id-es",
                       "{\"status\":\"error\",\"message\":\"dragon not found\"}");
    assert_error_reply(request(&r, "t.err.object", "id-eo", "{}", 2), "id-eo",
                       "{\"code\":42,\"message\":\"x\"}");
    assert_error_reply(request(&r, "t.internal", "id-int-err", "{}", 2), "id-int-err",
                       "{\"status\":\"error\",\"message\":\"Internal server error\"}");
    /* No handler: the bare NestJS text and no is-disposed header. */
    const ksft_msg *m = request(&r, "t.nohandler", "id-none", "{}", 2);
    assert_bytes(m->value, m->len, NULL, 0, "value");
    ksfi_header want[] = {ID("id-none"), ERR(KSFI_NO_MESSAGE_HANDLER)};
    assert_headers(m, want, 2);

    WAIT_STAT(&r, replies, 10);
    stop_server(&r);
    /* Exactly one reply each (none answered twice), every counter exact. */
    ksft_collector_poll(r.replies, 100);
    ck_assert_uint_eq(ksft_collector_count(r.replies), 10);
    ksf_server_stats s = stats(&r);
    ck_assert_uint_eq(s.requests, 10);
    ck_assert_uint_eq(s.errors, 4);
    ck_assert_uint_eq(s.no_handler, 1);
    ck_assert_uint_eq(s.events + s.malformed + s.reply_failures, 0);
    teardown_world(&r);
}
END_TEST

/* ---- streams, deferral, reply options, size limit, ctx accessors ------------------- */

static ksf_err
h_stream(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    for (int i = 1; i <= 2; i++) {
        json_t *v = json_integer(i);
        ksf_err e = ksf_ctx_stream(ctx, v, NULL);
        json_decref(v);
        if (e) {
            return e;
        }
    }
    *reply = json_integer(3);
    return KSF_OK;
}

static atomic_int extras_refused; /* kafka_* header refused with KSF_EINVAL */

static ksf_err
h_extras(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    if (ksf_ctx_add_reply_header(ctx, "kafka_correlationId", "x", 1) == KSF_EINVAL) {
        atomic_fetch_add(&extras_refused, 1);
    }
    *reply = json_string("replaced by the raw bytes");
    if (ksf_ctx_set_reply_key(ctx, "k1", 2) ||
        ksf_ctx_add_reply_header(ctx, "x-trace", "abc", 3) ||
        ksf_ctx_set_reply_raw(ctx, "\x00\x01\x02", 3)) {
        return KSF_ENOMEM;
    }
    return KSF_OK;
}

static ksf_err
h_big(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    char big[2001];
    memset(big, 'x', 2000);
    big[2000] = '\0';
    *reply = json_string(big);
    return KSF_OK;
}

static ksf_err
h_ctx(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    size_t key_len, hlen;
    const char *key = ksf_ctx_key(ctx, &key_len);
    const char *trace = ksf_ctx_header(ctx, "x-trace", &hlen);
    const char *name;
    ksf_ctx_header_at(ctx, 0, &name, NULL, NULL);
    *reply = json_pack(
        "{s:s, s:i, s:I, s:s, s:s, s:i, s:b, s:s#, s:s#, s:i, s:s, s:b, s:s}", "topic",
        ksf_ctx_topic(ctx), "partition", (int)ksf_ctx_partition(ctx), "offset",
        (json_int_t)ksf_ctx_offset(ctx), "id", ksf_ctx_correlation_id(ctx), "reply_topic",
        ksf_ctx_reply_topic(ctx), "reply_partition", (int)ksf_ctx_reply_partition(ctx),
        "event", ksf_ctx_is_event(ctx), "key", key, key_len, "trace", trace, hlen,
        "headers", (int)ksf_ctx_header_count(ctx), "user",
        (const char *)ksf_ctx_user(ctx), "ts", ksf_ctx_timestamp_ms(ctx) > 0, "first",
        name);
    return KSF_OK;
}

static atomic_int go_seen; /* the "go" request was handled */

static void *
finish_later(void *arg)
{
    ksf_ctx *ctx = arg;
    int64_t until = ksft_now_ms() + WAIT_MS;
    while (!atomic_load(&go_seen) && ksft_now_ms() < until) {
        sleep_ms(5); /* the later message of the partition must be served meanwhile */
    }
    json_t *a = json_string("a");
    ksf_ctx_stream(ctx, a, NULL);
    json_decref(a);
    ksf_ctx_finish(ctx, KSF_OK, json_string("b"));
    return NULL;
}

static ksf_err
h_defer(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    if (json_is_string(data) && !strcmp(json_string_value(data), "go")) {
        *reply = json_string("went");
        atomic_store(&go_seen, 1);
        return KSF_OK;
    }
    pthread_t t;
    ksf_err rc = ksf_ctx_defer(ctx);
    ck_assert_int_eq(pthread_create(&t, NULL, finish_later, ctx), 0);
    pthread_detach(t);
    return rc;
}

START_TEST(test_server_streams_and_deferral)
{
    static const char *const topics[] = {"t.stream", "t.extras", "t.big",
                                         "t.ctx",    "t.defer",  NULL};
    running r;
    setup_world(&r, topics);
    ksf_config *cfg = ksft_config(r.broker);
    ck_assert_int_eq(ksf_config_set(cfg, "message.max.bytes", "1000", NULL), KSF_OK);
    ksf_server *srv = new_server(cfg);
    ksf_config_destroy(cfg);
    on_message(srv, "t.stream", h_stream, NULL);
    on_message(srv, "t.extras", h_extras, NULL);
    on_message(srv, "t.big", h_big, NULL);
    static char user_text[] = "user-pointer";
    on_message(srv, "t.ctx", h_ctx, user_text);
    on_message(srv, "t.defer", h_defer, NULL);
    run_server(&r, srv);

    /* A stream of three: only the last carries is-disposed. */
    ksft_send_request(r.prod, "t.stream", 0, "st", REPLY, 0, "{}", 2, true);
    ck_assert_uint_eq(ksft_collector_wait_id(r.replies, "st", 3, WAIT_MS), 3);
    ksfi_header only_id[] = {ID("st")};
    assert_bytes(ksft_collector_get_id(r.replies, "st", 0)->value, 1, "1", 1, "first");
    assert_headers(ksft_collector_get_id(r.replies, "st", 0), only_id, 1);
    assert_bytes(ksft_collector_get_id(r.replies, "st", 1)->value, 1, "2", 1, "second");
    assert_headers(ksft_collector_get_id(r.replies, "st", 1), only_id, 1);
    assert_value_reply(ksft_collector_get_id(r.replies, "st", 2), "st", "3", 1);

    /* Raw bytes, a key and an extra header; the user's headers come first (NestJS). */
    const ksft_msg *m = request(&r, "t.extras", "ex", "{}", 2);
    assert_bytes(m->value, m->len, "\x00\x01\x02", 3, "raw value");
    assert_bytes(m->key, m->key_len, "k1", 2, "key");
    ksfi_header want[] = {H("x-trace", "abc"), ID("ex"), DISPOSED};
    assert_headers(m, want, 3);
    ck_assert_int_eq(atomic_load(&extras_refused), 1);

    assert_error_reply(
        request(&r, "t.big", "big", "{}", 2), "big",
        "{\"status\":\"error\",\"message\":\"reply value for t.big is 2000 "
        "bytes, larger than message.max.bytes (1000); send less or raise "
        "message.max.bytes\"}");

    ksfi_header req[] = {H("x-trace", "t-1"), ID("cx"), H(KSFI_HDR_REPLY_TOPIC, REPLY),
                         H(KSFI_HDR_REPLY_PARTITION, "0")};
    ksft_produce(r.prod, "t.ctx", 0, "kk", 2, "{}", 2, req, 4, true);
    ck_assert_uint_eq(ksft_collector_wait_id(r.replies, "cx", 1, WAIT_MS), 1);
    m = ksft_collector_get_id(r.replies, "cx", 0);
    const char ctxj[] =
        "{\"topic\":\"t.ctx\",\"partition\":0,\"offset\":0,\"id\":\"cx\","
        "\"reply_topic\":\"t.reply\",\"reply_partition\":0,\"event\":false,"
        "\"key\":\"kk\",\"trace\":\"t-1\",\"headers\":4,\"user\":"
        "\"user-pointer\",\"ts\":true,\"first\":\"x-trace\"}";
    assert_bytes(m->value, m->len, ctxj, strlen(ctxj), "ctx accessors");

    /* Deferred: finished from another thread after a later message was answered. */
    ksft_send_request(r.prod, "t.defer", 0, "d-wait", REPLY, 0, "wait", 4, true);
    ksft_send_request(r.prod, "t.defer", 0, "d-go", REPLY, 0, "go", 2, true);
    ck_assert_uint_eq(ksft_collector_wait_id(r.replies, "d-wait", 2, WAIT_MS), 2);
    ck_assert_uint_eq(ksft_collector_wait_id(r.replies, "d-go", 1, WAIT_MS), 1);
    const ksft_msg *go = ksft_collector_get_id(r.replies, "d-go", 0);
    const ksft_msg *a = ksft_collector_get_id(r.replies, "d-wait", 0);
    const ksft_msg *b = ksft_collector_get_id(r.replies, "d-wait", 1);
    assert_value_reply(go, "d-go", "went", 4);
    ksfi_header wait_id[] = {ID("d-wait")};
    assert_bytes(a->value, a->len, "a", 1, "streamed");
    assert_headers(a, wait_id, 1);
    assert_value_reply(b, "d-wait", "b", 1);
    ck_assert_int_lt(go->offset, a->offset);

    WAIT_STAT(&r, replies, 9);
    stop_server(&r);
    /* Both t.defer messages are complete: the committed offset is past them. */
    ck_assert_int_eq(ksft_committed(ksft_broker_address(r.broker), "nestjs-group-server",
                                    "t.defer", 0),
                     2);
    ksft_collector_poll(r.replies, 100);
    ck_assert_uint_eq(ksft_collector_count(r.replies), 9);
    teardown_world(&r);
}
END_TEST

/* ---- events ------------------------------------------------------------------------ */

static atomic_int ev_seen, ev_bad_ctx, msg_as_event;

static ksf_err
h_event(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    json_t *want = json_pack("{s:i}", "dragon", 1);
    bool ok = ksf_ctx_is_event(ctx) && !ksf_ctx_correlation_id(ctx) &&
              !ksf_ctx_reply_topic(ctx) &&
              ksf_ctx_stream(ctx, want, NULL) == KSF_ESTATE && json_equal(data, want);
    json_decref(want);
    atomic_fetch_add(ok ? &ev_seen : &ev_bad_ctx, 1);
    return KSF_OK;
}

static ksf_err
h_event_fails(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    return ksf_ctx_reply_error(ctx, "poison"); /* logged, counted, committed */
}

static ksf_err
h_msg_counting(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    if (ksf_ctx_is_event(ctx)) {
        atomic_fetch_add(&msg_as_event, 1);
    }
    *reply = json_string("ok");
    return KSF_OK;
}

START_TEST(test_server_events)
{
    static const char *const topics[] = {"t.ev", "t.ev.fail", "t.msg", "t.ev.none", NULL};
    running r;
    setup_world(&r, topics);
    ksf_config *cfg = ksft_config(r.broker);
    /* A failing event logged and committed at once (retries: test_retry.c). */
    ck_assert_int_eq(ksf_config_set(cfg, "server.event.retries", "0", NULL), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "server.event.dlq.topic", "none", NULL), KSF_OK);
    ksf_server *srv = new_server(cfg);
    ksf_config_destroy(cfg);
    on_event(srv, "t.ev", h_event, NULL);
    on_event(srv, "t.ev.fail", h_event_fails, NULL);
    on_message(srv, "t.msg", h_msg_counting, NULL);
    ck_assert_int_eq(ksfi_server_add_topic(srv, "t.ev.none", NULL), KSF_OK);
    run_server(&r, srv);

    const char ev[] = "{\"dragon\":1}";
    ksft_produce(r.prod, "t.ev", 0, NULL, 0, ev, strlen(ev), NULL, 0, true);
    /* Request headers on an event pattern: still an event, never answered. */
    ksft_send_request(r.prod, "t.ev", 0, "ev-req", REPLY, 0, ev, strlen(ev), true);
    ksft_produce(r.prod, "t.ev.fail", 0, NULL, 0, ev, strlen(ev), NULL, 0, true);
    /* No headers on a message pattern: an event; the handler runs, nothing is sent. */
    ksft_produce(r.prod, "t.msg", 0, NULL, 0, ev, strlen(ev), NULL, 0, true);
    /* Correlation id without a reply topic: an event too. */
    ksfi_header half[] = {ID("half")};
    ksft_produce(r.prod, "t.msg", 0, NULL, 0, ev, strlen(ev), half, 1, true);
    ksft_produce(r.prod, "t.ev.none", 0, NULL, 0, ev, strlen(ev), NULL, 0, true);
    WAIT_STAT(&r, events, 6);
    /* A request after the events on t.msg's partition: once its reply is here, any
     * reply the events wrongly caused would be here too. */
    assert_value_reply(request(&r, "t.msg", "after", "{}", 2), "after", "ok", 2);

    ck_assert_int_eq(atomic_load(&ev_seen), 2);
    ck_assert_int_eq(atomic_load(&ev_bad_ctx), 0);
    ck_assert_int_eq(atomic_load(&msg_as_event), 2);
    stop_server(&r);
    ksft_collector_poll(r.replies, 100);
    ck_assert_uint_eq(ksft_collector_count(r.replies), 1);
    ksf_server_stats s = stats(&r);
    ck_assert_uint_eq(s.events, 6);
    ck_assert_uint_eq(s.requests, 1);
    ck_assert_uint_eq(s.replies, 1);
    ck_assert_uint_eq(s.errors, 1);
    ck_assert_uint_eq(s.no_handler, 1);
    /* Committed past the failed event and the unhandled one: no redelivery loop. */
    const char *addr = ksft_broker_address(r.broker);
    ck_assert_int_eq(ksft_committed(addr, "nestjs-group-server", "t.ev.fail", 0), 1);
    ck_assert_int_eq(ksft_committed(addr, "nestjs-group-server", "t.ev.none", 0), 1);
    ck_assert_int_eq(ksft_committed(addr, "nestjs-group-server", "t.ev", 0), 2);
    teardown_world(&r);
}
END_TEST

/* ---- commit cadence ---------------------------------------------------------------- */

START_TEST(test_server_commit_cadence)
{
    /* Answered offsets are committed about every second (auto.commit.interval.ms
     * 1000, ksf's default), not every 5 s (librdkafka's): that interval is what a
     * rebalance or a crash hands to the next owner to run again. Seen as the time from
     * one observed commit to the next: a request answered right after a commit is
     * committed by the following one. */
    static const char *const topics[] = {"t.commit", NULL};
    running r;
    setup_world(&r, topics);
    ksf_config *cfg = ksft_config(r.broker);
    ksf_server *srv = new_server(cfg);
    ksf_config_destroy(cfg);
    on_message(srv, "t.commit", h_echo, NULL);
    run_server(&r, srv);
    const char *addr = ksft_broker_address(r.broker);
    ksft_send_request(r.prod, "t.commit", 0, "c-0", REPLY, 0, "{}", 2, true);
    WAIT_STAT(&r, replies, 1);
    ck_assert_int_eq(
        ksft_wait_committed(addr, "nestjs-group-server", "t.commit", 1, 1, 10000), 1);
    /* Just after a commit: the next one is a whole interval away. */
    int64_t t0 = ksft_now_ms();
    ksft_send_request(r.prod, "t.commit", 0, "c-1", REPLY, 0, "{}", 2, true);
    WAIT_STAT(&r, replies, 2);
    int64_t committed =
        ksft_wait_committed(addr, "nestjs-group-server", "t.commit", 1, 2, 2500);
    int64_t took = ksft_now_ms() - t0;
    ck_assert_msg(committed == 2,
                  "a request answered after a commit was not committed within %d ms "
                  "(%lld ms; committed %lld)",
                  ksft_scaled_ms(2500), (long long)took, (long long)committed);
    stop_server(&r);
    teardown_world(&r);
}
END_TEST

/* ---- malformed input --------------------------------------------------------------- */

START_TEST(test_server_malformed_input)
{
    static const char *const topics[] = {"t.echo", NULL};
    running r;
    setup_world(&r, topics);
    ksf_config *cfg = ksft_config(r.broker);
    ksf_server *srv = new_server(cfg);
    ksf_config_destroy(cfg);
    on_message(srv, "t.echo", h_echo, NULL);
    run_server(&r, srv);

    /* Values: text that only looks like JSON stays text; invalid UTF-8 is repaired as
     * Node does; a leading 0x00 is binary and reaches the handler as raw bytes. */
    assert_value_reply(request(&r, "t.echo", "v-json", "{\"broken", 8), "v-json",
                       "{\"broken", 8);
    assert_value_reply(request(&r, "t.echo", "v-utf8",
                               "a\xff"
                               "b",
                               3),
                       "v-utf8",
                       "a\xEF\xBF\xBD"
                       "b",
                       5);
    assert_value_reply(request(&r, "t.echo", "v-bin",
                               "\x00\x01"
                               "bin",
                               5),
                       "v-bin",
                       "\x00\x01"
                       "bin",
                       5);
    assert_value_reply(request(&r, "t.echo", "v-arr", "[1, 2]", 6), "v-arr", "[1,2]", 5);
    assert_value_reply(request(&r, "t.echo", "v-num", "42", 2), "v-num", "42", 2);

    /* Headers no reply can be built from: logged, counted, skipped (committed). */
    ksfi_header bad_part[] = {ID("m-part"), H(KSFI_HDR_REPLY_TOPIC, REPLY),
                              H(KSFI_HDR_REPLY_PARTITION, "abc")};
    ksft_produce(r.prod, "t.echo", 0, NULL, 0, "{}", 2, bad_part, 3, true);
    ksfi_header bad_topic[] = {ID("m-topic"), H(KSFI_HDR_REPLY_TOPIC, "bad topic!"),
                               H(KSFI_HDR_REPLY_PARTITION, "0")};
    ksft_produce(r.prod, "t.echo", 0, NULL, 0, "{}", 2, bad_topic, 3, true);
    /* No kafka_replyPartition: the partitioner picks (t.reply has one partition). */
    ksft_send_request(r.prod, "t.echo", 0, "no-part", REPLY, -1, "x", 1, true);
    ck_assert_uint_eq(ksft_collector_wait_id(r.replies, "no-part", 1, WAIT_MS), 1);
    assert_value_reply(ksft_collector_get_id(r.replies, "no-part", 0), "no-part", "x", 1);
    ck_assert_uint_eq(ksft_collector_count_id(r.replies, "m-part"), 0);
    WAIT_STAT(&r, malformed, 2);

    stop_server(&r);
    ck_assert_int_eq(
        ksft_committed(ksft_broker_address(r.broker), "nestjs-group-server", "t.echo", 0),
        8);
    ksf_server_stats s = stats(&r);
    ck_assert_uint_eq(s.requests, 6);
    ck_assert_uint_eq(s.replies, 6);
    ck_assert_uint_eq(s.malformed, 2);
    ck_assert_uint_eq(s.errors + s.reply_failures, 0);
    teardown_world(&r);
}
END_TEST

/* ---- ordering under a multi-worker pool ----------------------------------------------
 */

#define ORDER_N 200

static pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
static int order_seen[2][ORDER_N];
static int order_count[2];
static atomic_int order_concurrent, order_max_concurrent;

static ksf_err
h_order(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    int now = atomic_fetch_add(&order_concurrent, 1) + 1;
    int max = atomic_load(&order_max_concurrent);
    while (now > max && !atomic_compare_exchange_weak(&order_max_concurrent, &max, now)) {
    }
    int i = atoi(json_string_value(data));
    int p = ksf_ctx_partition(ctx);
    if (i % 5 == 0) {
        sleep_ms(1); /* uneven work, so that a pool that reorders would show it */
    }
    pthread_mutex_lock(&order_lock);
    if (order_count[p] < ORDER_N) {
        order_seen[p][order_count[p]++] = i;
    }
    pthread_mutex_unlock(&order_lock);
    atomic_fetch_sub(&order_concurrent, 1);
    return KSF_OK;
}

START_TEST(test_server_partition_order)
{
    running r;
    static const char *const none[] = {NULL};
    setup_world(&r, none);
    ksft_broker_create_topic(r.broker, "t.order", 2);
    ksf_config *cfg = ksft_config(r.broker);
    ck_assert_int_eq(ksf_config_set(cfg, "server.workers", "4", NULL), KSF_OK);
    ksf_server *srv = new_server(cfg);
    ksf_config_destroy(cfg);
    on_event(srv, "t.order", h_order, NULL);
    run_server(&r, srv);

    for (int i = 0; i < ORDER_N; i++) {
        char v[16];
        int n = snprintf(v, sizeof v, "%d", i);
        ksft_produce(r.prod, "t.order", 0, NULL, 0, v, (size_t)n, NULL, 0, false);
        ksft_produce(r.prod, "t.order", 1, NULL, 0, v, (size_t)n, NULL, 0, false);
    }
    ksft_producer_flush(r.prod, WAIT_MS);
    WAIT_STAT(&r, events, 2 * ORDER_N);
    stop_server(&r);
    for (int p = 0; p < 2; p++) {
        ck_assert_int_eq(order_count[p], ORDER_N);
        for (int i = 0; i < ORDER_N; i++) {
            ck_assert_msg(order_seen[p][i] == i, "partition %d: position %d holds %d", p,
                          i, order_seen[p][i]);
        }
        ck_assert_int_eq(ksft_committed(ksft_broker_address(r.broker),
                                        "nestjs-group-server", "t.order", p),
                         ORDER_N);
    }
    /* At most one handler per partition at a time: two partitions, so at most two. */
    ck_assert_int_le(atomic_load(&order_max_concurrent), 2);
    teardown_world(&r);
}
END_TEST

/* ---- a handler slower than the session timeout ------------------------------------- */

static atomic_int revocations;

static void
count_revocations(void *user, ksf_log_level level, const char *component,
                  const char *message)
{
    if (strstr(message, "partitions revoked")) {
        atomic_fetch_add(&revocations, 1);
    }
    if (level <= KSF_LOG_WARNING) {
        ksf_log_stderr(user, level, component, message);
    }
}

static ksf_err
h_slow(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    sleep_ms(9000); /* the behaviour under test: longer than session and poll interval */
    *reply = json_string("slow");
    return KSF_OK;
}

START_TEST(test_server_slow_handler)
{
    static const char *const topics[] = {"t.slow", "t.fast", NULL};
    running r;
    setup_world(&r, topics);
    ksf_config *cfg = ksft_config(r.broker);
    ck_assert_int_eq(ksf_config_set(cfg, "consumer.session.timeout.ms", "6000", NULL),
                     KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "consumer.max.poll.interval.ms", "7000", NULL),
                     KSF_OK);
    ksf_config_set_log(cfg, count_revocations, NULL, KSF_LOG_INFO);
    ksf_server *srv = new_server(cfg);
    ksf_config_destroy(cfg);
    on_message(srv, "t.slow", h_slow, NULL);
    on_message(srv, "t.fast", h_string, NULL);
    run_server(&r, srv);

    int64_t t0 = ksft_now_ms();
    ksft_send_request(r.prod, "t.slow", 0, "slow", REPLY, 0, "{}", 2, true);
    /* Other partitions are served while the slow handler runs. */
    assert_value_reply(request(&r, "t.fast", "fast", "{}", 2), "fast", "hello world", 11);
    ck_assert_int_lt(ksft_now_ms() - t0, 3000);
    ck_assert_uint_eq(ksft_collector_wait_id(r.replies, "slow", 1, 15000), 1);
    assert_value_reply(ksft_collector_get_id(r.replies, "slow", 0), "slow", "slow", 4);
    ck_assert_int_eq(atomic_load(&revocations), 0); /* never evicted, never rebalanced */
    stop_server(&r);
    ksft_collector_poll(r.replies, 100);
    ck_assert_uint_eq(ksft_collector_count_id(r.replies, "slow"), 1);
    ck_assert_uint_eq(stats(&r).requests, 2);
    teardown_world(&r);
}
END_TEST

/* ---- stop with requests in flight ---------------------------------------------------
 */

#define STOP_N 60

static ksf_err
h_work(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    sleep_ms(50); /* work in progress when stop comes */
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

static ksf_server *
work_server(running *r)
{
    ksf_config *cfg = ksft_config(r->broker);
    /* A restarted server must see what nobody committed, not skip to the end. */
    ck_assert_int_eq(ksf_config_set(cfg, "consumer.auto.offset.reset", "earliest", NULL),
                     KSF_OK);
    ksf_server *srv = new_server(cfg);
    ksf_config_destroy(cfg);
    on_message(srv, "t.work", h_work, NULL);
    return srv;
}

static size_t
answered(running *r, size_t *max_per_id)
{
    size_t n = 0;
    *max_per_id = 0;
    for (int i = 0; i < STOP_N; i++) {
        char id[16];
        snprintf(id, sizeof id, "w-%d", i);
        size_t c = ksft_collector_count_id(r->replies, id);
        n += c > 0;
        *max_per_id = c > *max_per_id ? c : *max_per_id;
    }
    return n;
}

START_TEST(test_server_stop_in_flight)
{
    running r;
    static const char *const none[] = {NULL};
    setup_world(&r, none);
    ksft_broker_create_topic(r.broker, "t.work", 2);
    run_server(&r, work_server(&r));
    for (int i = 0; i < STOP_N; i++) {
        char id[16], v[16];
        snprintf(id, sizeof id, "w-%d", i);
        int n = snprintf(v, sizeof v, "%d", i);
        ksft_send_request(r.prod, "t.work", i % 2, id, REPLY, 0, v, (size_t)n, false);
    }
    ksft_producer_flush(r.prod, WAIT_MS);
    WAIT_STAT(&r, requests, 10); /* stop while handlers run and more are queued */
    stop_server(&r);
    ksf_server_stats first = stats(&r);
    ksft_collector_poll(r.replies, 200);
    size_t most;
    size_t done1 = answered(&r, &most);
    ck_assert_uint_eq(most, 1);
    ck_assert_uint_eq(done1, first.replies); /* everything started was answered */
    ck_assert_uint_lt(done1, STOP_N);        /* and stop did not wait for the rest */
    ksf_server_destroy(r.srv);

    /* A second instance of the service picks up exactly where the first committed. */
    memset(&r.thread, 0, sizeof r.thread);
    atomic_store(&r.ready, 0);
    run_server(&r, work_server(&r));
    int64_t until = ksft_now_ms() + 20000;
    while (answered(&r, &most) < STOP_N && ksft_now_ms() < until) {
        ksft_collector_poll(r.replies, 20);
    }
    stop_server(&r);
    ksft_collector_poll(r.replies, 200);
    ck_assert_uint_eq(answered(&r, &most), STOP_N); /* none lost */
    ck_assert_uint_eq(most, 1);                     /* none answered twice */
    ck_assert_uint_eq(ksft_collector_count(r.replies), STOP_N);
    ck_assert_uint_eq(first.replies + stats(&r).replies, STOP_N);
    teardown_world(&r);
}
END_TEST

/* ---- lifecycle and registration errors (no broker) -----------------------------------
 */

START_TEST(test_server_lifecycle)
{
    ksf_server_destroy(NULL); /* no-op */
    ksf_server_stop(NULL);
    ksf_errinfo ei = {0};
    ksf_server *srv = NULL;
    ck_assert_int_eq(ksf_server_new(&srv, NULL, &ei), KSF_EINVAL);
    ksf_config *cfg = NULL;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "brokers", "127.0.0.1:1", NULL), KSF_OK);
    ck_assert_int_eq(ksf_server_new(&srv, cfg, &ei), KSF_OK);
    ck_assert_str_eq(srv->group_id, "test_server-server"); /* its program's */
    ck_assert_str_eq(srv->client_id, "nestjs-consumer-server");

    ck_assert_int_eq(ksf_server_run(srv, &ei), KSF_EINVAL); /* nothing registered */
    ck_assert_ptr_nonnull(strstr(ei.text, "no handler is registered"));
    ksf_server_destroy(srv);

    ck_assert_int_eq(ksf_config_set(cfg, "postfix.id", "", NULL), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "group.id", "heroes", NULL), KSF_OK);
    ck_assert_int_eq(ksf_server_new(&srv, cfg, &ei), KSF_OK);
    ck_assert_str_eq(srv->group_id, "heroes");
    ck_assert_int_eq(ksf_server_on_message(srv, "bad topic", h_null, NULL, &ei),
                     KSF_EINVAL);
    ck_assert_int_eq(ksf_server_on_message(srv, "hero.kill", h_null, NULL, &ei), KSF_OK);
    ck_assert_int_eq(ksf_server_on_event(srv, "hero.kill", h_null, NULL, &ei),
                     KSF_EEXIST);
    ck_assert_str_eq(ei.text,
                     "pattern \"hero.kill\" already has a handler (registered by "
                     "call:0); one pattern, one handler");
    /* Stop before run: run returns at once, without connecting. */
    ksf_server_stop(srv);
    int64_t t0 = ksft_now_ms();
    ck_assert_int_eq(ksf_server_run(srv, &ei), KSF_OK);
    ck_assert_int_lt(ksft_now_ms() - t0, 500);
    ck_assert_int_eq(ksf_server_run(srv, &ei), KSF_ESTATE);
    ck_assert_int_eq(ksf_server_on_message(srv, "late", h_null, NULL, &ei), KSF_ESTATE);
    ksf_server_stats s;
    memset(&s, 0xff, sizeof s);
    ksf_server_get_stats(srv, &s);
    ck_assert_uint_eq(s.requests + s.events + s.replies + s.errors, 0);
    ksf_server_destroy(srv);
    ksf_config_destroy(cfg);
}
END_TEST

static Suite *
server_suite(void)
{
    Suite *s = suite_create("server");
    struct {
        const char *name;
        const TTest *test;
        int timeout;
    } cases[] = {
        {"reply_shapes", test_server_reply_shapes, 40},
        {"streams_and_deferral", test_server_streams_and_deferral, 40},
        {"events", test_server_events, 40},
        {"commit_cadence", test_server_commit_cadence, 40},
        {"malformed_input", test_server_malformed_input, 40},
        {"partition_order", test_server_partition_order, 40},
        {"slow_handler", test_server_slow_handler, 40},
        {"stop_in_flight", test_server_stop_in_flight, 60},
        {"lifecycle", test_server_lifecycle, 10},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        tcase_set_timeout(tc, cases[i].timeout);
        suite_add_tcase(s, tc);
    }
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(server_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
