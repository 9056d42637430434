/*
 * ksf_server against the embedded broker, driven by a plain librdkafka producer and a
 * reply collector, asserting the exact reply bytes and headers NestJS would send.
 */
#include "mock_broker.h"
#include "raw_kafka.h"
#include "server.h"
#include "wire.h"

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
    ck_assert_msg(ksf_server_on_event(srv, pattern, fn, user, &ei) == KSF_OK, "%s", ei.text);
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

/* ---- reply assertions --------------------------------------------------------------- */

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
                  "%s: got %zu bytes \"%.*s\", expected %zu bytes \"%.*s\"", what, got_len,
                  (int)got_len, got ? (const char *)got : "", want_len, (int)want_len,
                  want ? (const char *)want : "");
}

/* Exact header list: names in order, values byte for byte. */
static void
assert_headers(const ksft_msg *m, const ksfi_header *want, size_t n)
{
    ck_assert_uint_eq(m->nhdrs, n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(m->hdrs[i].name, want[i].name);
        assert_bytes(m->hdrs[i].value, m->hdrs[i].len, want[i].value, want[i].len,
                     want[i].name);
    }
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

/* Poll a server counter until it reaches @p n (deadline WAIT_MS). */
#define WAIT_STAT(r, field, n)                                                           \
    do {                                                                                 \
        int64_t until_ = ksft_now_ms() + WAIT_MS;                                        \
        while (stats(r).field < (uint64_t)(n) && ksft_now_ms() < until_) {               \
            sleep_ms(5);                                                                 \
        }                                                                                \
        ck_assert_uint_eq(stats(r).field, (uint64_t)(n));                                \
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
    *reply = json_pack("[{s:i, s:s}, {s:i, s:s}]", "id", 1, "name", "Mythical Sword", "id",
                       2, "name", "Key to Dungeon");
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
__attribute__((unused)) static ksf_err
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
    static const char *const topics[] = {"t.object", "t.array", "t.string", "t.number",
                                         "t.null",   "t.err.string", "t.err.object",
                                         "t.internal", "t.nohandler", NULL};
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
    assert_value_reply(request(&r, "t.number", "id-real", "{\"a\":1}", 7), "id-real", "0.1",
                       3);
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
    if (ksf_ctx_set_reply_key(ctx, "k1", 2) || ksf_ctx_add_reply_header(ctx, "x-trace", "abc", 3) ||
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
    *reply = json_pack("{s:s, s:i, s:I, s:s, s:s, s:i, s:b, s:s#, s:s#, s:i, s:s, s:b, s:s}",
                       "topic", ksf_ctx_topic(ctx), "partition", (int)ksf_ctx_partition(ctx),
                       "offset", (json_int_t)ksf_ctx_offset(ctx), "id",
                       ksf_ctx_correlation_id(ctx), "reply_topic", ksf_ctx_reply_topic(ctx),
                       "reply_partition", (int)ksf_ctx_reply_partition(ctx), "event",
                       ksf_ctx_is_event(ctx), "key", key, key_len, "trace", trace, hlen,
                       "headers", (int)ksf_ctx_header_count(ctx), "user",
                       (const char *)ksf_ctx_user(ctx), "ts", ksf_ctx_timestamp_ms(ctx) > 0,
                       "first", name);
    return KSF_OK;
}

static atomic_int go_seen;   /* the "go" request was handled */
static atomic_int finish_rc; /* a second ksf_ctx_finish's result */

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
    atomic_store(&finish_rc, ksf_ctx_finish(ctx, KSF_OK, NULL)); /* not deferred yet */
    pthread_t t;
    ksf_err rc = ksf_ctx_defer(ctx);
    ck_assert_int_eq(pthread_create(&t, NULL, finish_later, ctx), 0);
    pthread_detach(t);
    return rc;
}

START_TEST(test_server_streams_and_deferral)
{
    static const char *const topics[] = {"t.stream", "t.extras", "t.big", "t.ctx",
                                         "t.defer", NULL};
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

    assert_error_reply(request(&r, "t.big", "big", "{}", 2), "big",
                       "{\"status\":\"error\",\"message\":\"reply value for t.big is 2000 "
                       "bytes, larger than message.max.bytes (1000); send less or raise "
                       "message.max.bytes\"}");

    ksfi_header req[] = {H("x-trace", "t-1"), ID("cx"), H(KSFI_HDR_REPLY_TOPIC, REPLY),
                         H(KSFI_HDR_REPLY_PARTITION, "0")};
    ksft_produce(r.prod, "t.ctx", 0, "kk", 2, "{}", 2, req, 4, true);
    ck_assert_uint_eq(ksft_collector_wait_id(r.replies, "cx", 1, WAIT_MS), 1);
    m = ksft_collector_get_id(r.replies, "cx", 0);
    const char ctxj[] = "{\"topic\":\"t.ctx\",\"partition\":0,\"offset\":0,\"id\":\"cx\","
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
    ck_assert_int_eq(atomic_load(&finish_rc), KSF_ESTATE);

    WAIT_STAT(&r, replies, 9);
    stop_server(&r);
    /* Both t.defer messages are complete: the committed offset is past them. */
    ck_assert_int_eq(
        ksft_committed(ksft_broker_address(r.broker), "nestjs-group-server", "t.defer", 0), 2);
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
              !ksf_ctx_reply_topic(ctx) && ksf_ctx_stream(ctx, want, NULL) == KSF_ESTATE &&
              json_equal(data, want);
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
