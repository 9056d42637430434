/*
 * Overload: a client at its in-flight limit, a server whose handlers are slower than
 * the arrival rate (the dispatcher pauses partitions: bounded queue, bounded memory),
 * and a burst of 10,000 requests, every one accounted for.
 */
#include "fixture.h"
#include "server/dispatch.h"
#include "server/server.h"
#include "server_probe.h"
#include "service.h"

#include "suite.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ksft_handler echo[] = {{"o.echo"}, {NULL}};

/* ---- the client's in-flight limit ------------------------------------------------ */

#define LIMIT 50
#define OVER 20

KSFT_TEST(test_overload_in_flight_limit, 60)
{
    static const char *const topics[] = {"o.echo:2", "o.echo.reply", NULL};
    static const char *const settings[][2] = {{"client.max.in.flight", "50"},
                                              {"consumer.auto.offset.reset", "earliest"}};
    ksft_world w; /* no server yet */
    ksft_world_open(&w, &(ksft_world_spec){.topics = topics,
                                           KSFT_SETTINGS(settings),
                                           .lazy_client = true});
    ksft_tally t;
    ksft_tally_init(&t, LIMIT + OVER);
    /* No server yet: nothing is answered, so the limit is reached exactly. */
    for (size_t i = 0; i < LIMIT; i++) {
        ck_assert_int_eq(ksft_tally_send(&t, w.cli, "o.echo", i, 30000, 0), KSF_OK);
    }
    size_t busy = 0;
    ksf_errinfo ei = {0};
    for (size_t i = LIMIT; i < LIMIT + OVER; i++) {
        busy += ksft_tally_send(&t, w.cli, "o.echo", i, 30000, 0) == KSF_EBUSY;
    }
    ck_assert_uint_eq(busy, OVER);
    /* send does not wait for the reply partition: flush waits until they are out. */
    ck_assert_int_eq(ksf_client_flush(w.cli, 20000, &ei), KSF_OK);
    ksf_client_stats st;
    ksf_client_get_stats(w.cli, &st);
    ck_assert_uint_eq(st.in_flight, LIMIT);
    ck_assert_uint_eq(st.sent, LIMIT);
    /* The sentence says what to do. */
    json_t *v = json_pack("{s:i}", "i", 0);
    ck_assert_int_eq(ksf_client_call(w.cli, "o.echo", v, 100, &(json_t *){NULL}, &ei),
                     KSF_EBUSY);
    json_decref(v);
    ck_assert_ptr_nonnull(strstr(ei.text, "client.max.in.flight"));

    /* A server comes: the 50 are answered, and room is back. */
    ksft_world_serve(&w, ksft_world_server(&w, echo));
    ck_assert_uint_eq(ksft_tally_wait(&t, LIMIT, 20000), LIMIT);
    ck_assert_uint_eq(atomic_load(&t.ok), LIMIT);
    ck_assert_uint_eq(atomic_load(&t.extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&t.wrong_value), 0);
    for (size_t i = LIMIT; i < LIMIT + OVER; i++) {
        ck_assert_uint_eq(atomic_load(&t.calls[i]), 0); /* refused: never called */
        ck_assert_int_eq(ksft_tally_send(&t, w.cli, "o.echo", i, 30000, 0), KSF_OK);
    }
    ck_assert_uint_eq(ksft_tally_wait(&t, LIMIT + OVER, 20000), LIMIT + OVER);
    ck_assert_uint_eq(atomic_load(&t.ok), LIMIT + OVER);
    ksf_client_get_stats(w.cli, &st);
    ck_assert_uint_eq(st.in_flight, 0);
    ck_assert_uint_eq(st.replies, LIMIT + OVER);
    ksft_world_stop_server(&w);
    ksf_client_destroy(w.cli); /* first: no callback may come after it */
    w.cli = NULL;
    ck_assert_uint_eq(atomic_load(&t.extra_calls), 0);
    ksft_tally_free(&t);
    ksft_world_close(&w);
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
    static const char *const topics[] = {"o.slow", "o.slow.reply", NULL};
    static const char *const settings[][2] = {{"consumer.auto.offset.reset", "earliest"},
                                              {"server.workers", "1"},
                                              {"server.partition.window", "256"}};
    ksft_world w;
    ksft_world_open(
        &w,
        &(ksft_world_spec){.topics = topics, KSFT_SETTINGS(settings), .no_client = true});
    const char *addr = ksft_broker_address(w.broker);
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

    static const ksft_handler slow[] = {{"o.slow", h_slow}, {NULL}};
    ksf_server *srv = ksft_world_server(&w, slow);
    long rss0 = ksft_rss_kib(), rss_peak = rss0;
    ksft_world_serve(&w, srv);
    ksft_deadline d = ksft_deadline_in(40000);
    ksf_server_stats st;
    do { /* sampling the RSS while the backlog is worked off */
        long rss = ksft_rss_kib();
        rss_peak = rss > rss_peak ? rss : rss_peak;
        ksf_server_get_stats(w.srv, &st);
    } while (st.replies < SLOW_N && ksft_deadline_wait(&d));
    ck_assert_uint_eq(st.requests, SLOW_N);
    ck_assert_uint_eq(st.replies, SLOW_N);
    size_t high = ksfi_dispatch_queued_high(w.srv->dispatch);
    fprintf(stderr, "slow handlers: queued high-water mark %zu, RSS +%ld KiB\n", high,
            rss_peak - rss0);
    /* Paused at 256 unfinished (server.partition.window, one of them running); what
     * was already fetched may overshoot by one fetch (max.partition.fetch.bytes, 1 MiB
     * by default: 256 of these messages). */
    ck_assert_msg(high >= 256 - 8 && high <= 2 * 256 + 64, "queued high-water mark %zu",
                  high);
    /* A sanity bound against runaway growth; the queue's high-water mark above is the
     * proof of the bound. Most of the growth is not the queue (the whole backlog is
     * 3 MB): the workers' malloc arenas, librdkafka's fetch buffers and the in-process
     * mock broker's responses; it measured up to 8.5 MiB on a loaded machine. */
    if (ksft_rss_meaningful()) {
        ck_assert_msg(rss_peak - rss0 < 16 * 1024, "RSS grew by %ld KiB",
                      rss_peak - rss0);
    }
    ksft_world_stop_server(&w);
    ck_assert_int_eq(ksft_committed(addr, KSFT_PROBE_GROUP, "o.slow", 0), SLOW_N);
    ksft_world_close(&w);
}
END_TEST

/* ---- a burst of 10,000 requests ------------------------------------------------- */

#define BURST 10000

KSFT_TEST(test_overload_burst, 90)
{
    static const char *const topics[] = {"o.echo:4", "o.echo.reply", NULL};
    ksft_world w;
    ksft_world_open(
        &w, &(ksft_world_spec){.topics = topics,
                               .handlers = echo,
                               .subscribe = (const char *const[]){"o.echo", NULL}});
    ksft_tally t;
    ksft_tally_init(&t, BURST);
    int64_t t0 = ksft_now_ms();
    /* All 10,000 are queued at once, so the last ones wait for the whole burst: their
     * timeout grows with the run's slowness (valgrind took 64 s for the burst). */
    int timeout_ms = ksft_scaled_ms(50000);
    for (size_t i = 0; i < BURST; i++) {
        ck_assert_int_eq(ksft_tally_send(&t, w.cli, "o.echo", i, timeout_ms, 0), KSF_OK);
    }
    ck_assert_uint_eq(ksft_tally_wait(&t, BURST, 50000), BURST);
    fprintf(stderr, "burst: %d requests answered in %lld ms\n", BURST,
            (long long)(ksft_now_ms() - t0));
    ck_assert_uint_eq(atomic_load(&t.ok), BURST);
    ck_assert_uint_eq(atomic_load(&t.extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&t.wrong_value), 0);
    ksf_client_stats cs;
    ksf_client_get_stats(w.cli, &cs);
    ck_assert_uint_eq(cs.sent, BURST);
    ck_assert_uint_eq(cs.replies, BURST);
    ck_assert_uint_eq(cs.in_flight, 0);
    ksf_server_stats ss;
    ksf_server_get_stats(w.srv, &ss);
    ck_assert_uint_eq(ss.requests, BURST);
    ksft_world_stop_server(&w);
    ksft_tally_free(&t);
    ksft_world_close(&w);
}
END_TEST

KSFT_MAIN("overload")
