/*
 * End to end: ksf clients calling a ksf server through the embedded broker. The server
 * and client suites test each side against plain librdkafka; this one checks the two
 * halves agree, including a handler that calls another service (nested calls).
 */
#include "fixture.h"
#include "service.h"

#include "suite.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Call and compare the reply (or remote error) with @p want_json exactly. */
static void
expect_call(ksf_client *cli, const char *pattern, const char *data_json, ksf_err want_err,
            const char *want_json)
{
    json_t *data = json_loads(data_json, JSON_DECODE_ANY, NULL);
    json_t *want = json_loads(want_json, JSON_DECODE_ANY, NULL);
    json_t *got = NULL;
    ksf_errinfo ei = {0};
    ck_assert_ptr_nonnull(data);
    ck_assert_ptr_nonnull(want);
    ksf_err e = ksf_client_call(cli, pattern, data, 15000, &got, &ei);
    char *text = got ? json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    ck_assert_msg(e == want_err, "%s: got %s (%s), want %s", pattern, ksf_strerror(e),
                  ei.text, ksf_strerror(want_err));
    ck_assert_msg(json_equal(got, want), "%s: got %s, want %s", pattern,
                  text ? text : "NULL", want_json);
    free(text);
    json_decref(got);
    json_decref(data);
    json_decref(want);
}

/* ---- handlers -------------------------------------------------------------------- */

static ksf_err
h_hero(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    *reply = json_pack("[{s:i,s:s},{s:i,s:s}]", "id", 1, "name", "Mythical Sword", "id",
                       2, "name", "Key to Dungeon");
    return KSF_OK;
}

/* math.sum: the sum of an array of integers; anything else is a caller error. */
static ksf_err
h_sum(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    json_int_t sum = 0;
    size_t i;
    json_t *v;
    if (!json_is_array(data)) {
        return ksf_ctx_reply_error(ctx, "math.sum expects an array of integers");
    }
    json_array_foreach (data, i, v) {
        sum += json_integer_value(v);
    }
    *reply = json_integer(sum);
    return KSF_OK;
}

static ksf_err
h_object_error(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    (void)data;
    return ksft_reply_error_object(ctx, 404, "no such dragon");
}

static const ksft_handler basic_handlers[] = {{"hero.kill.dragon", h_hero},
                                              {"math.sum", h_sum},
                                              {"math.echo"},
                                              {"math.fail", ksft_crash},
                                              {"dragon.find", h_object_error},
                                              {NULL}};
static const ksft_world_spec basic = {.handlers = basic_handlers};

KSFT_TEST(test_e2e_reply_and_error_shapes, 60)
{
    ksft_world w;
    ksft_world_open(&w, &basic);
    expect_call(w.cli, "hero.kill.dragon", "{\"heroId\":1,\"dragonId\":7}", KSF_OK,
                "[{\"id\":1,\"name\":\"Mythical Sword\"},{\"id\":2,\"name\":\"Key to "
                "Dungeon\"}]");
    /* Numbers travel as text, as between NestJS services: 6 arrives as "6". */
    expect_call(w.cli, "math.sum", "[1,2,3]", KSF_OK, "\"6\"");
    expect_call(w.cli, "math.sum", "\"oops\"", KSF_EREMOTE,
                "{\"status\":\"error\",\"message\":\"math.sum expects an array of "
                "integers\"}");
    expect_call(w.cli, "math.fail", "{}", KSF_EREMOTE,
                "{\"status\":\"error\",\"message\":\"Internal server error\"}");
    expect_call(w.cli, "dragon.find", "{}", KSF_EREMOTE,
                "{\"code\":404,\"message\":\"no such dragon\"}");
    ksft_world_close(&w);
}
END_TEST

/* ---- streams ------------------------------------------------------------------------
 */

static ksf_err
h_countdown(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    ksf_err e = ksft_stream_ints(ctx, 3, -1, 2);
    if (e) {
        return e;
    }
    *reply = json_string("liftoff");
    return KSF_OK;
}

static const ksft_handler stream_handlers[] = {{"rocket.launch", h_countdown}, {NULL}};

KSFT_TEST(test_e2e_stream, 60)
{
    ksft_world w;
    ksft_world_open(&w, &(ksft_world_spec){.handlers = stream_handlers});
    ksf_send_opts opts = {.flags = KSF_SEND_STREAM, .timeout_ms = 15000};
    ksft_stream_expect(w.cli, "rocket.launch", NULL, &opts, KSF_OK,
                       "\"3\"|\"2\"|\"liftoff\"(done)|", 15000);
    /* Without the stream flag only the last value arrives. */
    expect_call(w.cli, "rocket.launch", "null", KSF_OK, "\"liftoff\"");
    ksft_world_close(&w);
}
END_TEST

/* ---- nested calls: a handler that calls another service through a client ------------
 */

static ksf_err
h_order(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    ksf_client *cli = ksf_ctx_user(ctx);
    json_t *total = NULL;
    ksf_errinfo ei = {0};
    ksf_err e = ksf_client_call(cli, "math.sum", json_object_get(data, "prices"), 10000,
                                &total, &ei);
    if (e == KSF_EREMOTE) { /* pass the inner service's error on, as it was sent */
        e = ksf_ctx_reply_error_json(ctx, total);
        json_decref(total);
        return e;
    }
    if (e) {
        json_decref(total);
        return ksf_ctx_reply_error(ctx, ei.text);
    }
    *reply = json_pack("{s:O}", "total", total);
    json_decref(total);
    return KSF_OK;
}

KSFT_TEST(test_e2e_nested_call, 60)
{
    ksft_world w;
    ksft_world_open(&w, &(ksft_world_spec){.no_client = true});
    w.extra = ksft_client(w.cfg); /* the one order.create calls math.sum through */
    ksft_world_serve(&w, ksft_world_server(&w, (const ksft_handler[]){
                                                   {"math.sum", h_sum},
                                                   {"math.echo"},
                                                   {"order.create", h_order, w.extra},
                                                   {NULL}}));
    w.cli = ksft_client(w.cfg);
    expect_call(w.cli, "order.create", "{\"prices\":[5,7,30]}", KSF_OK,
                "{\"total\":\"42\"}");
    /* The inner call's remote error comes back through the outer handler. */
    expect_call(w.cli, "order.create", "{\"prices\":\"free\"}", KSF_EREMOTE,
                "{\"status\":\"error\",\"message\":\"math.sum expects an array of "
                "integers\"}");
    ksft_world_close(&w);
}
END_TEST

/* ---- many threads at once ---------------------------------------------------------- */

#define E2E_THREADS 4
#define E2E_TOTAL (E2E_THREADS * 500)

KSFT_TEST(test_e2e_concurrent_sends_exact_accounting, 120)
{
    ksft_world w;
    ksft_world_open(&w, &basic);
    /* math.echo answers each {"i": n} with itself: the tally checks every value is its
     * own, and that every request got exactly one callback. */
    ksft_tally t;
    ksft_tally_init(&t, E2E_TOTAL);
    ck_assert_uint_eq(ksft_tally_send_threads(&t, w.cli, "math.echo", E2E_THREADS, 30000),
                      0);
    ck_assert_uint_eq(ksft_tally_wait(&t, E2E_TOTAL, 60000), E2E_TOTAL);
    ck_assert_uint_eq(atomic_load(&t.ok), E2E_TOTAL);
    ck_assert_uint_eq(atomic_load(&t.extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&t.wrong_value), 0);
    ck_assert_uint_eq(atomic_load(&t.other), 0);
    KSFT_ASSERT_CLIENT_STATS(w.cli, .sent = E2E_TOTAL, .replies = E2E_TOTAL);
    ksft_tally_free(&t);
    ksft_world_close(&w);
}
END_TEST

/* ---- a timeout, then the late reply is counted, not delivered ------------------------
 */

static ksf_err
h_slow(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    ksft_sleep_ms(1500); /* the work itself: slower than the caller's timeout */
    *reply = json_string("finally");
    return KSF_OK;
}

static bool
one_late_reply(void *arg)
{
    ksf_client_stats st;
    ksf_client_get_stats(arg, &st);
    return st.late_replies == 1;
}

KSFT_TEST(test_e2e_timeout_then_late_reply, 60)
{
    ksft_world w;
    /* Replies first: the 300 ms below is for the request alone. */
    ksft_world_open_one(&w, "slow.op", h_slow);
    json_t *got = NULL;
    ksf_errinfo ei = {0};
    int64_t start = ksft_now_ms();
    ck_assert_int_eq(ksf_client_call(w.cli, "slow.op", NULL, 300, &got, &ei),
                     KSF_ETIMEDOUT);
    int64_t took = ksft_now_ms() - start;
    ck_assert_ptr_null(got);
    ck_assert_msg(took >= 300 && took < 1400, "timed out after %lld ms", (long long)took);
    ck_assert_msg(strstr(ei.text, "slow.op") != NULL, "text names the pattern: %s",
                  ei.text);
    ck_assert_msg(ksft_wait_until(one_late_reply, w.cli, 10000),
                  "the late reply was not counted");
    ksf_client_stats st;
    ksf_client_get_stats(w.cli, &st);
    ck_assert_uint_eq(st.timeouts, 1);
    ck_assert_uint_eq(st.replies, 0);
    ck_assert_uint_eq(st.in_flight, 0);
    ksft_world_close(&w);
}
END_TEST

/* ---- events --------------------------------------------------------------------------
 */

#define E2E_EVENTS 50

static atomic_int events_seen[E2E_EVENTS];
static atomic_int events_total;

static ksf_err
h_killed(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    json_int_t id = json_integer_value(json_object_get(data, "dragonId"));
    if (ksf_ctx_is_event(ctx) && id >= 0 && id < E2E_EVENTS) {
        atomic_fetch_add(&events_seen[id], 1);
    }
    atomic_fetch_add(&events_total, 1);
    *reply = json_string("discarded: events have no reply");
    return KSF_OK;
}

static atomic_int emits_acked;

static void
on_emitted(ksf_err err, const char *text, void *user)
{
    (void)text;
    (void)user;
    if (err == KSF_OK) {
        atomic_fetch_add(&emits_acked, 1);
    }
}

static bool
all_events_seen(void *arg)
{
    (void)arg;
    return atomic_load(&events_total) >= E2E_EVENTS;
}

KSFT_TEST(test_e2e_events_each_handled_once, 60)
{
    ksft_world w;
    ksft_world_open(&w, &(ksft_world_spec){
                            .handlers = (const ksft_handler[]){
                                {"hero.dragon.killed", h_killed, NULL, true}, {NULL}}});
    ksf_errinfo ei = {0};
    for (int i = 0; i < E2E_EVENTS; i++) {
        json_t *ev = json_pack("{s:i,s:i}", "heroId", 1, "dragonId", i);
        ck_assert_int_eq(
            ksf_client_emit(w.cli, "hero.dragon.killed", ev, NULL, on_emitted, NULL, &ei),
            KSF_OK);
        json_decref(ev);
    }
    ck_assert_msg(ksf_client_flush(w.cli, 10000, &ei) == KSF_OK, "%s", ei.text);
    ck_assert_int_eq(atomic_load(&emits_acked), E2E_EVENTS);
    ck_assert_msg(ksft_wait_until(all_events_seen, NULL, 15000),
                  "handled %d of %d events", atomic_load(&events_total), E2E_EVENTS);
    for (int i = 0; i < E2E_EVENTS; i++) {
        ck_assert_msg(atomic_load(&events_seen[i]) == 1, "event %d handled %d times", i,
                      atomic_load(&events_seen[i]));
    }
    ksf_server_stats st;
    ksf_server_get_stats(w.srv, &st);
    ck_assert_uint_eq(st.events, E2E_EVENTS);
    ck_assert_uint_eq(st.replies, 0);
    ksft_world_close(&w);
}
END_TEST

KSFT_MAIN("e2e")
