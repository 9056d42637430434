/*
 * Event retries and dead letters: a failing event handler runs again in place (its
 * partition waits, so order holds), and after its last failure the original message
 * goes to the dead-letter topic with the ksf_dlq_* headers; its offset is committed
 * only then, so a restarted server does not run it again. Requests are never retried.
 */
#include "fixture.h"
#include "server_probe.h"
#include "service.h"

#include "suite.h"

#include "server/retry.h"

#include <check.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS 20000
#define GROUP "nestjs-group-server"

#define WAIT_STAT(srv, field, n) KSFT_WAIT_SERVER_STAT(srv, field, n, WAIT_MS)

/* ---- fails twice, then succeeds ----------------------------------------------- */

/* Every handler run: the event's value, in run order. */
static char runs[16][16];
static atomic_int nruns;

static void
record_run(ksf_ctx *ctx)
{
    size_t len = 0;
    const void *v = ksf_ctx_value(ctx, &len);
    int i = atomic_fetch_add(&nruns, 1);
    if (i < 16) {
        snprintf(runs[i], sizeof runs[i], "%.*s", (int)len, v ? (const char *)v : "");
    }
}

static atomic_int flaky_failures;

static ksf_err
h_flaky(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    record_run(ctx);
    size_t len = 0;
    const char *v = ksf_ctx_value(ctx, &len);
    if (len == 5 && !memcmp(v, "flaky", 5) && atomic_fetch_add(&flaky_failures, 1) < 2) {
        return KSF_EPROTO; /* a transient failure */
    }
    return KSF_OK;
}

KSFT_TEST(test_retry_then_success, 60)
{
    static const char *const topics[] = {"r.flaky", "r.flaky.dlq", NULL};
    static const char *const settings[][2] = {{"server.event.retry.backoff.ms", "50"}};
    static const ksft_handler flaky[] = {{"r.flaky", h_flaky, NULL, true}, {NULL}};
    /* The server tests' world: no client, a raw producer sends the events. */
    ksft_probe pr;
    ksft_probe_open(
        &pr,
        &(ksft_world_spec){.topics = topics, KSFT_SETTINGS(settings), .handlers = flaky});
    const char *addr = ksft_broker_address(pr.w.broker);
    ksft_produce(pr.prod, "r.flaky", 0, NULL, 0, "flaky", 5, NULL, 0, false);
    ksft_produce(pr.prod, "r.flaky", 0, NULL, 0, "next", 4, NULL, 0, true);
    ck_assert_int_eq(ksft_wait_atomic(&nruns, 4, WAIT_MS), 4);
    /* The partition waited for its head: "next" ran after the third "flaky" only. */
    ck_assert_str_eq(runs[0], "flaky");
    ck_assert_str_eq(runs[1], "flaky");
    ck_assert_str_eq(runs[2], "flaky");
    ck_assert_str_eq(runs[3], "next");
    ksf_server_stats st = WAIT_STAT(pr.w.srv, events, 2);
    ck_assert_uint_eq(st.events, 2);
    ck_assert_uint_eq(st.event_retries, 2);
    ck_assert_uint_eq(st.dead_lettered, 0);
    ck_assert_uint_eq(st.errors, 0);
    ksft_world_stop_server(&pr.w);
    ck_assert_int_eq(atomic_load(&nruns), 4);
    ck_assert_int_eq(ksft_committed(addr, GROUP, "r.flaky", 0), 2);
    ksft_collector *dlq = ksft_collector_new(addr, "r.flaky.dlq", 0);
    ck_assert_uint_eq(ksft_collector_poll(dlq, 500), 0);
    ksft_collector_destroy(dlq);
    ksft_probe_close(&pr);
}
END_TEST

/* ---- always fails: dead-lettered, committed, not run again --------------------- */

static atomic_int poison_runs, ok_runs;

static ksf_err
h_poison(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    if (json_is_string(data) && !strcmp(json_string_value(data), "ok")) {
        atomic_fetch_add(&ok_runs, 1);
        return KSF_OK;
    }
    atomic_fetch_add(&poison_runs, 1);
    return ksf_ctx_reply_error(ctx, "dragon too strong");
}

#define POISON_VALUE "{\"dragon\":1}"

static const ksft_handler poison[] = {{"r.bad", h_poison, NULL, true}, {NULL}};

/* A world of r.bad and its dead letters, @p settings on the server's configuration. */
static void
poison_world(ksft_world *w, const char *const (*settings)[2], size_t n)
{
    static const char *const topics[] = {"r.bad", "r.bad.dlq", NULL};
    ksft_world_open(w, &(ksft_world_spec){.topics = topics,
                                          .settings = settings,
                                          .nsettings = n,
                                          .handlers = poison,
                                          .no_client = true});
}

/* poison_world with the poison event produced and its first run seen (the run count
 * starts at 0: it is shared between cases when CK_FORK=no runs them in one process);
 * returns the producer. */
static ksft_producer *
poisoned(ksft_world *w, const char *const (*settings)[2], size_t n)
{
    atomic_store(&poison_runs, 0);
    poison_world(w, settings, n);
    ksft_producer *p = ksft_producer_new(ksft_broker_address(w->broker));
    ksft_produce(p, "r.bad", 0, NULL, 0, POISON_VALUE, strlen(POISON_VALUE), NULL, 0,
                 true);
    ck_assert_int_eq(ksft_wait_atomic(&poison_runs, 1, WAIT_MS), 1);
    return p;
}

KSFT_TEST(test_retry_dead_letter, 60)
{
    static const char *const settings[][2] = {{"consumer.auto.offset.reset", "earliest"},
                                              {"server.event.retries", "2"},
                                              {"server.event.retry.backoff.ms", "20"}};
    atomic_store(&poison_runs, 0);
    atomic_store(&ok_runs, 0);
    ksft_world w;
    poison_world(&w, settings, KSFT_NKV(settings));
    const char *addr = ksft_broker_address(w.broker);

    ksft_producer *p = ksft_producer_new(addr);
    ksfi_header hdrs[] = {{"x-trace", "abc", 3}, {"x-empty", NULL, 0}};
    ksft_produce(p, "r.bad", 0, "k1", 2, POISON_VALUE, strlen(POISON_VALUE), hdrs, 2,
                 true);
    ksf_server_stats st = WAIT_STAT(w.srv, dead_lettered, 1);
    ck_assert_uint_eq(st.dead_lettered, 1);
    ck_assert_int_eq(atomic_load(&poison_runs), 3); /* retries + 1 */
    ck_assert_uint_eq(st.event_retries, 2);
    ck_assert_uint_eq(st.dlq_failures, 0);
    ck_assert_uint_eq(st.errors, 1);
    ksft_assert_server_export(w.srv); /* dead_lettered 1, event_retries 2 */

    ksft_collector *dlq = ksft_collector_new(addr, "r.bad.dlq", 0);
    ck_assert_uint_eq(ksft_collector_poll(dlq, 1000), 1);
    const ksft_msg *m = ksft_collector_at(dlq, 0);
    ck_assert_uint_eq(m->key_len, 2);
    ck_assert_int_eq(memcmp(m->key, "k1", 2), 0);
    ck_assert_uint_eq(m->len, strlen(POISON_VALUE));
    ck_assert_int_eq(memcmp(m->value, POISON_VALUE, m->len), 0);
    /* The original headers first, in order, then why. */
    ck_assert_uint_eq(m->nhdrs, 7);
    ck_assert_str_eq(m->hdrs[0].name, "x-trace");
    ck_assert_str_eq(m->hdrs[1].name, "x-empty");
    ck_assert_ptr_null(m->hdrs[1].value);
    ksft_assert_header(m, "x-trace", "abc", 3);
    ksft_assert_header(m, "ksf_dlq_error", "dragon too strong", 17);
    ksft_assert_header(m, "ksf_dlq_topic", "r.bad", 5);
    ksft_assert_header(m, "ksf_dlq_partition", "0", 1);
    ksft_assert_header(m, "ksf_dlq_offset", "0", 1);
    ksft_assert_header(m, "ksf_dlq_attempts", "3", 1);
    ksft_world_stop_server(&w);
    ck_assert_int_eq(ksft_committed(addr, GROUP, "r.bad", 0), 1);

    /* A new server in the same group starts after it: the poison event stays done. */
    ksft_produce(p, "r.bad", 0, NULL, 0, "ok", 2, NULL, 0, true);
    ksft_world_serve(&w, ksft_world_server(&w, poison));
    ck_assert_int_eq(ksft_wait_atomic(&ok_runs, 1, WAIT_MS), 1);
    ksft_world_stop_server(&w);
    ck_assert_int_eq(atomic_load(&poison_runs), 3);
    ck_assert_int_eq(ksft_committed(addr, GROUP, "r.bad", 0), 2);
    ck_assert_uint_eq(ksft_collector_poll(dlq, 300), 1);
    ksft_collector_destroy(dlq);
    ksft_producer_destroy(p);
    ksft_world_close(&w);
}
END_TEST

/* ---- the dead-letter produce fails: tried again, never dropped ------------------ */

KSFT_TEST(test_retry_dead_letter_produce_fails, 60)
{
    KSFT_NEEDS_MOCK("injected Produce errors");
    static const char *const settings[][2] = {
        {"server.pattern.r.bad.event.retries", "1"},
        {"server.event.retry.backoff.ms", "500"},
        {"server.event.retry.backoff.max.ms", "300"}};
    ksft_world w;
    ksft_producer *p = poisoned(&w, settings, KSFT_NKV(settings));
    const char *addr = ksft_broker_address(w.broker);
    /* The next Produce request is the dead letter's (after the 500 ms backoff): the
     * broker refuses it for good (Produce is API key 0). */
    rd_kafka_mock_push_request_errors(ksft_broker_mock(w.broker), 0, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    ksf_server_stats st = WAIT_STAT(w.srv, dead_lettered, 1);
    ck_assert_uint_eq(st.dead_lettered, 1);
    /* One refused delivery; librdkafka may also refuse the next produce at once while
     * it remembers the topic's error: each is one more failure, tried again. */
    ck_assert_uint_ge(st.dlq_failures, 1);
    ck_assert_int_eq(atomic_load(&poison_runs), 2);
    ksft_assert_server_export(w.srv); /* dlq_failures >= 1 */
    ksft_world_stop_server(&w);
    ck_assert_int_eq(ksft_committed(addr, GROUP, "r.bad", 0), 1);
    ksft_collector *dlq = ksft_collector_new(addr, "r.bad.dlq", 0);
    ck_assert_uint_eq(ksft_collector_poll(dlq, 1000), 1);
    ksft_assert_header(ksft_collector_at(dlq, 0), "ksf_dlq_attempts", "2", 1);
    ksft_collector_destroy(dlq);
    ksft_producer_destroy(p);
    ksft_world_close(&w);
}
END_TEST

/* ---- a stop during the backoff: abandoned, not committed, run again ------------ */

KSFT_TEST(test_retry_stop_during_backoff, 60)
{
    static const char *const settings[][2] = {
        {"consumer.auto.offset.reset", "earliest"},
        {"server.event.retry.backoff.ms", "20000"},
        {"server.event.retry.backoff.max.ms", "20000"}};
    ksft_world w;
    ksft_producer *p = poisoned(&w, settings, KSFT_NKV(settings));
    const char *addr = ksft_broker_address(w.broker);
    /* The stop does not wait out the backoff (nor its 30 s drain limit)... */
    int64_t t0 = ksft_now_ms();
    ksft_world_stop_server(&w);
    int64_t took = ksft_now_ms() - t0;
    ck_assert_msg(took < 8000, "stop took %lld ms", (long long)took);
    /* ... and commits nothing: the next server runs the event again. */
    ck_assert_int_eq(ksft_committed(addr, GROUP, "r.bad", 0), -1001);
    ksft_world_serve(&w, ksft_world_server(&w, poison));
    ck_assert_int_eq(ksft_wait_atomic(&poison_runs, 2, WAIT_MS), 2);
    ksft_world_stop_server(&w);
    ck_assert_int_eq(atomic_load(&poison_runs), 2);
    ksft_producer_destroy(p);
    ksft_world_close(&w);
}
END_TEST

/* ---- requests are never retried ------------------------------------------------- */

static atomic_int request_runs;

static ksf_err
h_request_fails(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    atomic_fetch_add(&request_runs, 1);
    return ksf_ctx_reply_error(ctx, "no");
}

KSFT_TEST(test_retry_not_requests, 60)
{
    static const char *const topics[] = {"r.req", "r.req.dlq", NULL};
    static const char *const settings[][2] = {{"server.event.retry.backoff.ms", "10"}};
    static const ksft_handler fails[] = {{"r.req", h_request_fails}, {NULL}};
    ksft_probe pr;
    ksft_probe_open(
        &pr,
        &(ksft_world_spec){.topics = topics, KSFT_SETTINGS(settings), .handlers = fails});
    ksft_assert_error_reply(ksft_probe_request(&pr, "r.req", "q-1", "{}", 2), "q-1",
                            "{\"status\":\"error\",\"message\":\"no\"}");
    ksf_server_stats st = WAIT_STAT(pr.w.srv, replies, 1);
    ksft_world_stop_server(&pr.w);
    ck_assert_int_eq(atomic_load(&request_runs), 1);
    ck_assert_uint_eq(st.event_retries, 0);
    ck_assert_uint_eq(st.dead_lettered, 0);
    ksft_collector *dlq =
        ksft_collector_new(ksft_broker_address(pr.w.broker), "r.req.dlq", 0);
    ck_assert_uint_eq(ksft_collector_poll(dlq, 300), 0);
    ksft_collector_destroy(dlq);
    ksft_probe_close(&pr);
}
END_TEST

/* The decisions alone (server/retry.c is pure): no broker. */
KSFT_TEST(test_retry_decisions, 60)
{
    ksfi_policy pol = {
        .retries = 2, .backoff_ms = 100, .backoff_max_ms = 300, .dlq = "{pattern}.dlq"};
    int delay = -1;
    ck_assert_int_eq(ksfi_retry_next(&pol, 1, &delay), KSFI_RETRY_STEP_RERUN);
    ck_assert(delay >= 50 && delay <= 100);
    ck_assert_int_eq(ksfi_retry_next(&pol, 2, &delay), KSFI_RETRY_STEP_RERUN);
    ck_assert(delay >= 100 && delay <= 200);
    ck_assert_int_eq(ksfi_retry_next(&pol, 3, &delay), KSFI_RETRY_STEP_DEAD_LETTER);
    ck_assert_int_eq(delay, 0);
    pol.dlq = NULL;
    ck_assert_int_eq(ksfi_retry_next(&pol, 3, &delay), KSFI_RETRY_STEP_GIVE_UP);
    ck_assert_int_eq(delay, 0);
    pol.retries = 0;
    ck_assert_int_eq(ksfi_retry_next(&pol, 1, &delay), KSFI_RETRY_STEP_GIVE_UP);
    /* The cap holds however many attempts: 100 * 2^9 is far above 300. */
    for (int i = 0; i < 50; i++) {
        int d = ksfi_retry_backoff_ms(100, 300, 10);
        ck_assert(d >= 150 && d <= 300);
    }
}
END_TEST
KSFT_MAIN("retry")
