/*
 * ksf_server's lifecycle: creation, registration and run errors without a broker, and a
 * stop with requests in flight (what started is answered, the rest is left to the next
 * instance, which picks up exactly where the first committed).
 */
#include "server/server.h"
#include "server_probe.h"
#include "suite.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- lifecycle and registration errors (no broker) -----------------------------------
 */

KSFT_TEST(test_server_lifecycle, 10)
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
    ck_assert_str_eq(srv->group_id, "test_server_lifecycle-server"); /* its program's */
    ck_assert_str_eq(srv->client_id, "nestjs-consumer-server");

    ck_assert_int_eq(ksf_server_run(srv, &ei), KSF_EINVAL); /* nothing registered */
    ck_assert_ptr_nonnull(strstr(ei.text, "no handler is registered"));
    ksf_server_destroy(srv);

    ck_assert_int_eq(ksf_config_set(cfg, "postfix.id", "", NULL), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "group.id", "heroes", NULL), KSF_OK);
    ck_assert_int_eq(ksf_server_new(&srv, cfg, &ei), KSF_OK);
    ck_assert_str_eq(srv->group_id, "heroes");
    ck_assert_int_eq(ksf_server_on_message(srv, "bad topic", ksft_echo, NULL, &ei),
                     KSF_EINVAL);
    ck_assert_int_eq(ksf_server_on_message(srv, "hero.kill", ksft_echo, NULL, &ei),
                     KSF_OK);
    ck_assert_int_eq(ksf_server_on_event(srv, "hero.kill", ksft_echo, NULL, &ei),
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
    ck_assert_int_eq(ksf_server_on_message(srv, "late", ksft_echo, NULL, &ei),
                     KSF_ESTATE);
    ksf_server_stats s;
    memset(&s, 0xff, sizeof s);
    ksf_server_get_stats(srv, &s);
    ck_assert_uint_eq(s.requests + s.events + s.replies + s.errors, 0);
    ksf_server_destroy(srv);
    ksf_config_destroy(cfg);
}
END_TEST

/* ---- stop with requests in flight ---------------------------------------------------
 */

#define STOP_N 60

static ksf_err
h_work(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    ksft_sleep_ms(50); /* work in progress when stop comes */
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

static const ksft_handler work_handlers[] = {{"t.work", h_work}, {NULL}};

static size_t
answered(ksft_probe *p, size_t *max_per_id)
{
    size_t n = 0;
    *max_per_id = 0;
    for (int i = 0; i < STOP_N; i++) {
        char id[16];
        snprintf(id, sizeof id, "w-%d", i);
        size_t c = ksft_collector_count_id(p->replies, id);
        n += c > 0;
        *max_per_id = c > *max_per_id ? c : *max_per_id;
    }
    return n;
}

KSFT_TEST(test_server_stop_in_flight, 60)
{
    static const char *const topics[] = {"t.work:2", NULL};
    /* A restarted server must see what nobody committed, not skip to the end. */
    static const char *const settings[][2] = {{"consumer.auto.offset.reset", "earliest"}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics,
                                           KSFT_SETTINGS(settings),
                                           .handlers = work_handlers});
    for (int i = 0; i < STOP_N; i++) {
        char id[16], v[16];
        snprintf(id, sizeof id, "w-%d", i);
        int n = snprintf(v, sizeof v, "%d", i);
        ksft_send_request(p.prod, "t.work", i % 2, id, KSFT_PROBE_REPLY, 0, v, (size_t)n,
                          false);
    }
    ksft_producer_flush(p.prod, KSFT_PROBE_WAIT_MS);
    KSFT_PROBE_WAIT_STAT(&p, requests,
                         10); /* stop while handlers run and more are queued */
    ksft_world_stop_server(&p.w);
    ksf_server_stats first = ksft_probe_stats(&p);
    ksft_collector_poll(p.replies, 200);
    size_t most;
    size_t done1 = answered(&p, &most);
    ck_assert_uint_eq(most, 1);
    ck_assert_uint_eq(done1, first.replies); /* everything started was answered */
    ck_assert_uint_lt(done1, STOP_N);        /* and stop did not wait for the rest */

    /* A second instance of the service picks up exactly where the first committed. */
    ksft_world_serve(&p.w, ksft_world_server(&p.w, work_handlers));
    ksft_deadline d = ksft_deadline_in(20000);
    while (answered(&p, &most) < STOP_N && ksft_deadline_wait(&d)) {
        ksft_collector_poll(p.replies, 20);
    }
    ksft_world_stop_server(&p.w);
    ksft_collector_poll(p.replies, 200);
    ck_assert_uint_eq(answered(&p, &most), STOP_N); /* none lost */
    ck_assert_uint_eq(most, 1);                     /* none answered twice */
    ck_assert_uint_eq(ksft_collector_count(p.replies), STOP_N);
    ck_assert_uint_eq(first.replies + ksft_probe_stats(&p).replies, STOP_N);
    ksft_probe_close(&p);
}
END_TEST

KSFT_MAIN("server_lifecycle")
