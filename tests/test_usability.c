/*
 * A new user's first hour (issue 16): what a user runs into before reading the fine
 * print. Deferred handlers that do not hold the worker pool, a finish that may come
 * before the handler returned, sends that never block their caller, failures that
 * are reported at once and say what is wrong, and the defaults behind them.
 */
#include "mock_broker.h"
#include "raw_kafka.h"
#include "service.h"

#include "suite.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS 20000

/* ---- deferred handlers: parked contexts, their own limit --------------------------- */

#define PARK_MAX 64
static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;
static ksf_ctx *parked[PARK_MAX];
static atomic_int nparked;

static ksf_err
h_park(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    (void)data;
    ksf_err e = ksf_ctx_defer(ctx);
    pthread_mutex_lock(&park_lock);
    int i = atomic_load(&nparked);
    ck_assert_int_lt(i, PARK_MAX);
    parked[i] = ctx;
    atomic_store(&nparked, i + 1);
    pthread_mutex_unlock(&park_lock);
    return e;
}

/* Finish every parked context (echoing its request) and forget them. */
static int
finish_parked(void)
{
    pthread_mutex_lock(&park_lock);
    int n = atomic_load(&nparked);
    for (int i = 0; i < n; i++) {
        size_t len;
        const void *v = ksf_ctx_value(parked[i], &len);
        json_t *echo = json_loadb(v, len, 0, NULL);
        ck_assert_int_eq(ksf_ctx_finish(parked[i], KSF_OK, echo), KSF_OK);
    }
    atomic_store(&nparked, 0);
    pthread_mutex_unlock(&park_lock);
    return n;
}

/* A server with one deferring pattern, default workers (4) and concurrency. */
static ksf_server *
park_server(ksft_broker *b, const char *deferred_max, ksft_service *s)
{
    ksft_broker_create_topic(b, "u.park", 2);
    ksft_broker_create_topic(b, "u.park.reply", 1);
    ksf_config *cfg = ksft_config(b);
    if (deferred_max) {
        const char *const kv[][2] = {{"server.deferred.max", deferred_max}};
        ksft_config_set_all(cfg, kv, KSFT_NKV(kv));
    }
    ksf_server *srv = ksft_server(cfg);
    ck_assert_int_eq(ksf_server_on_message(srv, "u.park", h_park, NULL, NULL), KSF_OK);
    ksf_config_destroy(cfg);
    ksft_service_start(s, srv, WAIT_MS);
    return srv;
}

/* 40 requests, 4 workers: all 40 are deferred at once (they hold no worker and no
 * concurrency slot); before, 4 were and the rest waited for a finish. */
START_TEST(test_usability_deferred_not_bounded_by_workers)
{
    ksft_broker *b = ksft_broker_start();
    ksft_service s = {0};
    park_server(b, NULL, &s);
    ksf_config *cfg = ksft_config(b);
    ksf_client *cli = ksft_client(cfg);
    ksft_tally t;
    ksft_tally_init(&t, 40);
    for (size_t i = 0; i < 40; i++) {
        ck_assert_int_eq(ksft_tally_send(&t, cli, "u.park", i, 30000, 0), KSF_OK);
    }
    ck_assert_int_eq(ksft_wait_atomic(&nparked, 40, WAIT_MS), 40);
    ck_assert_int_eq(finish_parked(), 40);
    ck_assert_uint_eq(ksft_tally_wait(&t, 40, WAIT_MS), 40);
    ck_assert_uint_eq(atomic_load(&t.ok), 40);
    ck_assert_uint_eq(atomic_load(&t.wrong_value), 0);
    ksf_client_destroy(cli);
    ksft_tally_free(&t);
    ksft_service_stop(&s);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}
END_TEST

/* server.deferred.max bounds them: 8 parked, the rest wait (throttled) and start as
 * the 8 finish. */
START_TEST(test_usability_deferred_max)
{
    ksft_broker *b = ksft_broker_start();
    ksft_service s = {0};
    ksf_server *srv = park_server(b, "8", &s);
    ksf_config *cfg = ksft_config(b);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_set(cfg, "server.deferred.max", "0", &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text, "server.deferred.max \"0\": expected an integer from 1 to "
                              "1000000");
    ksf_client *cli = ksft_client(cfg);
    ksft_tally t;
    ksft_tally_init(&t, 20);
    for (size_t i = 0; i < 20; i++) {
        ck_assert_int_eq(ksft_tally_send(&t, cli, "u.park", i, 30000, 0), KSF_OK);
    }
    ck_assert_int_eq(ksft_wait_atomic(&nparked, 8, WAIT_MS), 8);
    /* The ninth waits for a finish: the server counts it throttled. */
    KSFT_WAIT_SERVER_STAT(srv, throttled, 1, WAIT_MS);
    ck_assert_int_eq(atomic_load(&nparked), 8);
    int done = finish_parked();
    while (done < 20) {
        ck_assert_int_gt(ksft_wait_atomic(&nparked, 1, WAIT_MS), 0);
        ck_assert_int_le(atomic_load(&nparked), 8);
        done += finish_parked();
    }
    ck_assert_uint_eq(ksft_tally_wait(&t, 20, WAIT_MS), 20);
    ck_assert_uint_eq(atomic_load(&t.ok), 20);
    ksf_client_destroy(cli);
    ksft_tally_free(&t);
    ksft_service_stop(&s);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}
END_TEST

/* ---- a finish before the handler returned --------------------------------------- */

static atomic_int early_rc = -1, second_rc = -1;

static void *
finish_now(void *ctx)
{
    atomic_store(&early_rc, ksf_ctx_finish(ctx, KSF_OK, json_string("early")));
    return NULL;
}

/* The order docs/server.md's example invites: hand the work to a thread, which is
 * done before the handler returned ksf_ctx_defer (here: certainly, it is joined). */
static ksf_err
h_early(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, finish_now, ctx), 0);
    pthread_join(t, NULL);
    ksf_err e = ksf_ctx_defer(ctx);
    atomic_store(&second_rc, ksf_ctx_finish(ctx, KSF_OK, json_string("twice")));
    return e;
}

START_TEST(test_usability_finish_before_return)
{
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, "u.early", 1);
    ksft_broker_create_topic(b, "u.early.reply", 1);
    ksf_config *cfg = ksft_config(b);
    ksf_server *srv = ksft_server(cfg);
    ck_assert_int_eq(ksf_server_on_message(srv, "u.early", h_early, NULL, NULL), KSF_OK);
    ksft_service s = {0};
    ksft_service_start(&s, srv, WAIT_MS);
    ksf_client *cli = ksft_client(cfg);
    json_t *reply = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_call(cli, "u.early", NULL, WAIT_MS, &reply, &ei), KSF_OK);
    ck_assert_str_eq(json_string_value(reply), "early");
    json_decref(reply);
    ck_assert_int_eq(atomic_load(&early_rc), KSF_OK);
    ck_assert_int_eq(atomic_load(&second_rc), KSF_ESTATE);
    ksf_server_stats st = KSFT_WAIT_SERVER_STAT(srv, replies, 1, WAIT_MS);
    ck_assert_uint_eq(st.errors, 0);
    ksf_client_destroy(cli);
    ksft_service_stop(&s);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}
END_TEST

int
main(void)
{
    const ksft_case cases[] = {
        {"deferred_not_bounded_by_workers",
         test_usability_deferred_not_bounded_by_workers, 60},
        {"deferred_max", test_usability_deferred_max, 60},
        {"finish_before_return", test_usability_finish_before_return, 60},
    };
    return KSFT_RUN("usability", cases);
}
