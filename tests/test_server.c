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

__attribute__((unused)) static void
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
