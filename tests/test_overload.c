/*
 * Overload: a client at its in-flight limit, a server whose handlers are slower than
 * the arrival rate (the dispatcher pauses partitions: bounded queue, bounded memory),
 * and a burst of 10,000 requests, every one accounted for.
 */
#include "broker.h"
#include "raw_kafka.h"
#include "server/dispatch.h"
#include "server/server.h"
#include "service.h"

#include "suite.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const patterns[] = {"o.echo", NULL};

/* ---- the client's in-flight limit ------------------------------------------------ */

#define LIMIT 50
#define OVER 20

KSFT_TEST(test_overload_in_flight_limit, 60)
{
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, "o.echo", 2);
    ksft_broker_create_topic(b, "o.echo.reply", 1);
    ksf_config *cfg = ksft_config(b);
    static const char *const settings[][2] = {{"client.max.in.flight", "50"},
                                              {"consumer.auto.offset.reset", "earliest"}};
    ksft_config_set_all(cfg, settings, KSFT_NKV(settings));
    ksf_client *cli = ksft_client(cfg);
    ksft_tally t;
    ksft_tally_init(&t, LIMIT + OVER);
    /* No server yet: nothing is answered, so the limit is reached exactly. */
    for (size_t i = 0; i < LIMIT; i++) {
        ck_assert_int_eq(ksft_tally_send(&t, cli, "o.echo", i, 30000, 0), KSF_OK);
    }
    size_t busy = 0;
    ksf_errinfo ei = {0};
    for (size_t i = LIMIT; i < LIMIT + OVER; i++) {
        busy += ksft_tally_send(&t, cli, "o.echo", i, 30000, 0) == KSF_EBUSY;
    }
    ck_assert_uint_eq(busy, OVER);
    /* send does not wait for the reply partition: flush waits until they are out. */
    ck_assert_int_eq(ksf_client_flush(cli, 20000, &ei), KSF_OK);
    ksf_client_stats st;
    ksf_client_get_stats(cli, &st);
    ck_assert_uint_eq(st.in_flight, LIMIT);
    ck_assert_uint_eq(st.sent, LIMIT);
    /* The sentence says what to do. */
    json_t *v = json_pack("{s:i}", "i", 0);
    ck_assert_int_eq(ksf_client_call(cli, "o.echo", v, 100, &(json_t *){NULL}, &ei),
                     KSF_EBUSY);
    json_decref(v);
    ck_assert_ptr_nonnull(strstr(ei.text, "client.max.in.flight"));

    /* A server comes: the 50 are answered, and room is back. */
    ksft_service s = {0};
    ksft_service_start(&s, ksft_echo_server(cfg, patterns), 20000);
    ck_assert_uint_eq(ksft_tally_wait(&t, LIMIT, 20000), LIMIT);
    ck_assert_uint_eq(atomic_load(&t.ok), LIMIT);
    ck_assert_uint_eq(atomic_load(&t.extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&t.wrong_value), 0);
    for (size_t i = LIMIT; i < LIMIT + OVER; i++) {
        ck_assert_uint_eq(atomic_load(&t.calls[i]), 0); /* refused: never called */
        ck_assert_int_eq(ksft_tally_send(&t, cli, "o.echo", i, 30000, 0), KSF_OK);
    }
    ck_assert_uint_eq(ksft_tally_wait(&t, LIMIT + OVER, 20000), LIMIT + OVER);
    ck_assert_uint_eq(atomic_load(&t.ok), LIMIT + OVER);
    ksf_client_get_stats(cli, &st);
    ck_assert_uint_eq(st.in_flight, 0);
    ck_assert_uint_eq(st.replies, LIMIT + OVER);
    ksft_service_stop(&s);
    ksf_client_destroy(cli);
    ck_assert_uint_eq(atomic_load(&t.extra_calls), 0);
    ksft_tally_free(&t);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}
END_TEST

/* ---- handlers slower than the arrival rate ------------------------------------- */

#define SLOW_N 3000
#define SLOW_VALUE 1024 /* the mock keeps ~5 MB per partition: all of it fits */

static ksf_err
h_slow(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    ksft_sleep_ms(1); /* slower than the broker delivers */
    *reply = json_integer(1);
    return KSF_OK;
}

KSFT_TEST(test_overload_slow_handlers, 90)
{
    ksft_broker *b = ksft_broker_start();
    const char *addr = ksft_broker_address(b);
    ksft_broker_create_topic(b, "o.slow", 1);
    ksft_broker_create_topic(b, "o.slow.reply", 1);
    /* Everything is in the topic before the server starts: arrival is instant. */
    ksft_producer *p = ksft_producer_new(addr);
    char *value = malloc(SLOW_VALUE);
    ck_assert_ptr_nonnull(value);
    memset(value, 'x', SLOW_VALUE);
    value[0] = '"';
    value[SLOW_VALUE - 1] = '"';
    for (int i = 0; i < SLOW_N; i++) {
        char id[16];
        snprintf(id, sizeof id, "s-%d", i);
        ksft_send_request(p, "o.slow", 0, id, "o.slow.reply", 0, value, SLOW_VALUE,
                          false);
    }
    ksft_producer_flush(p, 30000);
    ksft_producer_destroy(p);
    free(value);

    ksf_config *cfg = ksft_config(b);
    static const char *const settings[][2] = {{"consumer.auto.offset.reset", "earliest"},
                                              {"server.workers", "1"}};
    ksft_config_set_all(cfg, settings, KSFT_NKV(settings));
    ksf_server *srv = NULL;
    ck_assert_int_eq(ksf_server_new(&srv, cfg, NULL), KSF_OK);
    ck_assert_int_eq(ksf_server_on_message(srv, "o.slow", h_slow, NULL, NULL), KSF_OK);
    long rss0 = ksft_rss_kib(), rss_peak = rss0;
    ksft_service s = {0};
    ksft_service_start(&s, srv, 20000);
    int64_t until = ksft_now_ms() + 40000;
    ksf_server_stats st;
    do {
        ksft_sleep_ms(20);
        long rss = ksft_rss_kib();
        rss_peak = rss > rss_peak ? rss : rss_peak;
        ksf_server_get_stats(srv, &st);
    } while (st.replies < SLOW_N && ksft_now_ms() < until);
    ck_assert_uint_eq(st.requests, SLOW_N);
    ck_assert_uint_eq(st.replies, SLOW_N);
    size_t high = ksfi_dispatch_queued_high(srv->dispatch);
    fprintf(stderr, "slow handlers: queued high-water mark %zu, RSS +%ld KiB\n", high,
            rss_peak - rss0);
    /* Paused at KSFI_DISPATCH_PAUSE_AT; what was already fetched may overshoot by one
     * fetch (max.partition.fetch.bytes, 1 MiB by default: 256 of these messages). */
    ck_assert_msg(high >= KSFI_DISPATCH_PAUSE_AT &&
                      high <= 2 * KSFI_DISPATCH_PAUSE_AT + 64,
                  "queued high-water mark %zu", high);
    /* A sanity bound; the queue's high-water mark above is the proof. */
    if (ksft_rss_meaningful()) {
        ck_assert_msg(rss_peak - rss0 < 8 * 1024, "RSS grew by %ld KiB", rss_peak - rss0);
    }
    ksft_service_stop(&s);
    ck_assert_int_eq(ksft_committed(addr, "nestjs-group-server", "o.slow", 0), SLOW_N);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}
END_TEST

/* ---- a burst of 10,000 requests ------------------------------------------------- */

#define BURST 10000

KSFT_TEST(test_overload_burst, 90)
{
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, "o.echo", 4);
    ksft_broker_create_topic(b, "o.echo.reply", 1);
    ksf_config *cfg = ksft_config(b);
    ksft_service s = {0};
    ksft_service_start(&s, ksft_echo_server(cfg, patterns), 20000);
    ksf_client *cli = ksft_client(cfg);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_subscribe_to_response_of(cli, "o.echo", &ei), KSF_OK);
    ck_assert_msg(ksf_client_connect(cli, 10000, &ei) == KSF_OK, "%s", ei.text);
    ksft_tally t;
    ksft_tally_init(&t, BURST);
    int64_t t0 = ksft_now_ms();
    /* All 10,000 are queued at once, so the last ones wait for the whole burst: their
     * timeout grows with the run's slowness (valgrind took 64 s for the burst). */
    int timeout_ms = ksft_scaled_ms(50000);
    for (size_t i = 0; i < BURST; i++) {
        ck_assert_int_eq(ksft_tally_send(&t, cli, "o.echo", i, timeout_ms, 0), KSF_OK);
    }
    ck_assert_uint_eq(ksft_tally_wait(&t, BURST, 50000), BURST);
    fprintf(stderr, "burst: %d requests answered in %lld ms\n", BURST,
            (long long)(ksft_now_ms() - t0));
    ck_assert_uint_eq(atomic_load(&t.ok), BURST);
    ck_assert_uint_eq(atomic_load(&t.extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&t.wrong_value), 0);
    ksf_client_stats cs;
    ksf_client_get_stats(cli, &cs);
    ck_assert_uint_eq(cs.sent, BURST);
    ck_assert_uint_eq(cs.replies, BURST);
    ck_assert_uint_eq(cs.in_flight, 0);
    ksf_server_stats ss;
    ksf_server_get_stats(s.srv, &ss);
    ck_assert_uint_eq(ss.requests, BURST);
    ksft_service_stop(&s);
    ksf_client_destroy(cli);
    ksft_tally_free(&t);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}
END_TEST

KSFT_MAIN("overload")
