/*
 * Isolation: a pattern's concurrency limit keeps a slow pattern from taking every
 * worker (the others keep flowing, its own messages keep their partition order), a
 * slow handler hands the rest of its partition's run back to the pool, and
 * a request handler past its time budget is answered with an error at once while its
 * late result is discarded. Plus the policy keys themselves.
 */
#include "base/alloc.h"
#include "base/config.h"
#include "base/policy.h"
#include "fixture.h"
#include "server/dispatch.h"
#include "server/server.h"
#include "server_probe.h"
#include "service.h"

#include "suite.h"

#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS 20000
#define GROUP "nestjs-group-server"

/* ---- the policy keys --------------------------------------------------------------- */

KSFT_TEST(test_isolation_config, 10)
{
    ksf_config *cfg = NULL;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    static const char *const defaults[][2] = {
        {"server.pattern.concurrency", "0"},
        {"server.handler.timeout.ms", "0"},
        {"server.event.retries", "3"},
        {"server.event.retry.backoff.ms", "200"},
        {"server.event.retry.backoff.max.ms", "5000"},
        {"server.event.dlq.topic", "{pattern}.dlq"}};
    ksft_assert_config_all(cfg, defaults, KSFT_NKV(defaults));
    char buf[64];
    ck_assert_int_eq(ksf_config_get(cfg, "server.pattern.a.b.concurrency", buf, 64),
                     KSF_ENOENT);

    static const char *const policy[][2] = {
        {"server.pattern.concurrency", "2"},
        {"server.handler.timeout.ms", "1500"},
        /* A pattern with dots: the setting name is matched at the end of the key. */
        {"server.pattern.hero.kill.concurrency", "1"},
        {"server.pattern.hero.kill.handler.timeout.ms", "0"},
        {"server.pattern.hero.kill.event.dlq.topic", "dead.{pattern}"},
        {"server.pattern.audit.event.dlq.topic", "none"}};
    ksft_config_set_all(cfg, policy, KSFT_NKV(policy));
    ksft_assert_config_get(cfg, "server.pattern.hero.kill.concurrency", "1");
    ksft_assert_config_get(cfg, "server.pattern.audit.event.dlq.topic", "none");

    ksf_config *copy = NULL;
    ck_assert_int_eq(ksf_config_dup(cfg, &copy), KSF_OK);
    ksf_config_destroy(cfg);
    ksfi_policy hero = ksfi_policy_for(&copy->policy, "hero.kill");
    ck_assert_int_eq(hero.concurrency, 1);
    ck_assert_int_eq(hero.timeout_ms, 0);
    ck_assert_str_eq(hero.dlq, "dead.{pattern}");
    ksfi_policy other = ksfi_policy_for(&copy->policy, "hero");
    ck_assert_int_eq(other.concurrency, 2);
    ck_assert_int_eq(other.timeout_ms, 1500);
    ck_assert_str_eq(other.dlq, "{pattern}.dlq");
    ck_assert_ptr_null(ksfi_policy_for(&copy->policy, "audit").dlq);
    char *t = ksfi_policy_dlq_topic("dead.{pattern}.{pattern}", "hero.kill");
    ck_assert_str_eq(t, "dead.hero.kill.hero.kill");
    ksfi_free(t);

    /* Bad values name the key and the range. */
    ksft_assert_config_refuses("server.pattern.x.concurrency", "-1", KSF_EINVAL,
                               "server.pattern.x.concurrency \"-1\": expected an integer "
                               "from 0 to 1024");
    ksft_assert_config_refuses("server.event.retries", "101", KSF_EINVAL,
                               "server.event.retries \"101\": expected an integer from 0 "
                               "to 100");
    ksft_assert_config_refuses(
        "server.event.dlq.topic", "bad topic", KSF_EINVAL,
        "server.event.dlq.topic \"bad topic\": not a usable topic name (pattern \"bad "
        "topic\" has character ' ' (byte 0x20) at 3; Kafka topic names allow only A-Z "
        "a-z "
        "0-9 . _ -); expected a topic name, {pattern} for the pattern, or \"none\" to "
        "disable");
    ksft_assert_config_refuses(
        "server.pattern..concurrency", "1", KSF_ENOENT,
        "unknown configuration key \"server.pattern..concurrency\" (did you mean "
        "\"server.pattern.concurrency\"?); the keys are listed in docs/configuration.md, "
        "and librdkafka properties go under kafka., consumer. or producer.");
    ksf_config_destroy(copy);

    /* Automatic limits: all workers but one once two patterns share them. */
    ck_assert_int_eq(ksfi_policy_concurrency(0, 4, 2), 3);
    ck_assert_int_eq(ksfi_policy_concurrency(0, 4, 1), 4);
    ck_assert_int_eq(ksfi_policy_concurrency(0, 1, 3), 1);
    ck_assert_int_eq(ksfi_policy_concurrency(2, 4, 3), 2);
}
END_TEST

/* ---- a slow pattern next to a fast one ----------------------------------------- */

#define SLOW_N 4
/* Requests flooding the second slow partition while the pattern is saturated: more
 * than the pause threshold, so the partition must be paused, not buffered. */
#define FLOOD 600
/* server.partition.window of the slow-pattern test: the flood is paused near it. */
#define WINDOW 256
#define SLOW_TOTAL (SLOW_N + FLOOD)
#define FAST_N 50

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static atomic_int slow_running, slow_max, slow_started;
/* The (partition, offset) of each slow handler run, in run order. */
static int32_t run_part[SLOW_TOTAL];
static int64_t run_off[SLOW_TOTAL];

static ksf_err
h_slow(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    int now = atomic_fetch_add(&slow_running, 1) + 1;
    int max = atomic_load(&slow_max);
    while (now > max && !atomic_compare_exchange_weak(&slow_max, &max, now)) {
    }
    int i = atomic_fetch_add(&slow_started, 1);
    if (i < SLOW_TOTAL) {
        run_part[i] = ksf_ctx_partition(ctx);
        run_off[i] = ksf_ctx_offset(ctx);
    }
    pthread_mutex_lock(&gate_lock);
    while (!gate_open) {
        pthread_cond_wait(&gate_cond, &gate_lock);
    }
    pthread_mutex_unlock(&gate_lock);
    atomic_fetch_sub(&slow_running, 1);
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

KSFT_TEST(test_isolation_slow_pattern, 60)
{
    static const char *const topics[] = {"i.slow:2", "i.slow.reply", "i.fast:4",
                                         "i.fast.reply", NULL};
    static const char *const settings[][2] = {
        {"server.workers", "4"},
        {"server.pattern.i.slow.concurrency", "1"},
        {"server.partition.window", "256"}, /* WINDOW */
        /* Small fetches, so that what was fetched before the pause took effect is
         * small. */
        {"consumer.max.partition.fetch.bytes", "4096"}};
    static const ksft_handler handlers[] = {{"i.slow", h_slow}, {"i.fast"}, {NULL}};
    ksft_world w;
    ksft_world_open(&w, &(ksft_world_spec){.topics = topics,
                                           KSFT_SETTINGS(settings),
                                           .handlers = handlers,
                                           .no_client = true});
    const char *addr = ksft_broker_address(w.broker);

    /* Slow requests on both partitions, two each: partition order within each. */
    ksft_producer *p = ksft_producer_new(addr);
    const int32_t parts[SLOW_N] = {0, 1, 0, 1};
    for (int i = 0; i < SLOW_N; i++) {
        char id[16], v[16];
        snprintf(id, sizeof id, "slow-%d", i);
        int n = snprintf(v, sizeof v, "{\"s\":%d}", i);
        ksft_send_request(p, "i.slow", parts[i], id, "i.slow.reply", 0, v, (size_t)n,
                          true);
    }
    ck_assert_int_eq(ksft_wait_atomic(&slow_started, 1, WAIT_MS), 1);
    for (int i = 0; i < FLOOD; i++) {
        char id[16];
        snprintf(id, sizeof id, "flood-%d", i);
        /* One at a time: one record batch each, as a busy service would see them. */
        ksft_send_request(p, "i.slow", 1, id, "i.slow.reply", 0, "{}", 2, true);
    }

    /* One slow handler holds one worker; the fast pattern has the other three. */
    w.cli = ksft_client(w.cfg);
    ksft_tally t;
    ksft_tally_init(&t, FAST_N);
    for (size_t i = 0; i < FAST_N; i++) {
        ck_assert_int_eq(ksft_tally_send(&t, w.cli, "i.fast", i, 15000, 0), KSF_OK);
    }
    ck_assert_uint_eq(ksft_tally_wait(&t, FAST_N, WAIT_MS), FAST_N);
    ck_assert_uint_eq(atomic_load(&t.ok), FAST_N);
    ck_assert_uint_eq(atomic_load(&t.wrong_value), 0);
    /* Still exactly one slow handler started: the limit held the other partition. */
    ck_assert_int_eq(atomic_load(&slow_started), 1);
    /* The broker's acknowledgement of the last replies may still be on its way. */
    ksf_server_stats st = KSFT_WAIT_SERVER_STAT(w.srv, replies, FAST_N, WAIT_MS);
    ck_assert_uint_eq(st.replies, FAST_N);
    /* The other slow partition's first message waits for the pattern's one slot: it is
     * counted when the consumer has fetched it, which under load can come after the
     * fast replies. */
    st = KSFT_WAIT_SERVER_STAT(w.srv, throttled, 1, WAIT_MS);
    ck_assert_uint_ge(st.throttled, 1);
    /* The flooded partition was paused near the threshold instead of buffering the
     * whole flood. */
    size_t high = ksfi_dispatch_queued_high(w.srv->dispatch);
    fprintf(stderr, "slow pattern: queued high-water mark %zu of %d flooded\n", high,
            FLOOD);
    ck_assert_msg(high >= WINDOW - 8 && high < FLOOD, "queued high-water mark %zu", high);

    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    ksft_collector *replies = ksft_collector_new(addr, "i.slow.reply", 0);
    ksft_deadline d = ksft_deadline_in(WAIT_MS);
    while (ksft_collector_poll(replies, 100) < SLOW_TOTAL && ksft_deadline_wait(&d)) {
    }
    ksft_collector_poll(replies, 200);
    ck_assert_uint_eq(ksft_collector_count(replies), SLOW_TOTAL);
    for (int i = 0; i < SLOW_TOTAL; i++) { /* each answered exactly once */
        char id[16];
        snprintf(id, sizeof id, i < SLOW_N ? "slow-%d" : "flood-%d",
                 i < SLOW_N ? i : i - SLOW_N);
        ck_assert_msg(ksft_collector_count_id(replies, id) == 1, "%s", id);
    }
    ck_assert_int_eq(atomic_load(&slow_started), SLOW_TOTAL);
    ck_assert_int_eq(atomic_load(&slow_max), 1);
    /* Each partition's messages ran once each, in offset order: 0, 1, 2, ... */
    int64_t next[2] = {0, 0};
    for (int i = 0; i < SLOW_TOTAL; i++) {
        ck_assert_int_eq(run_off[i], next[run_part[i]]);
        next[run_part[i]]++;
    }
    ck_assert_int_eq(next[0], 2);
    ck_assert_int_eq(next[1], 2 + FLOOD);

    ksft_world_stop_server(&w);
    ck_assert_int_eq(ksft_committed(addr, GROUP, "i.slow", 0), 2);
    ck_assert_int_eq(ksft_committed(addr, GROUP, "i.slow", 1), 2 + FLOOD);
    ksf_client_destroy(w.cli); /* first: no callback may come after it */
    w.cli = NULL;
    ck_assert_uint_eq(atomic_load(&t.extra_calls), 0);
    ksft_tally_free(&t);
    ksft_collector_destroy(replies);
    ksft_producer_destroy(p);
    ksft_world_close(&w);
}
END_TEST

/* ---- a slow run hands the rest back --------------------------------------------------
 */

#define HANDBACK_N 20       /* i.run requests fetched together */
#define HANDBACK_SLOW_MS 50 /* each of their handlers */

static atomic_int handback_started, handback_at_other;

static ksf_err
h_run_slow(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    atomic_fetch_add(&handback_started, 1);
    ksft_sleep_ms(HANDBACK_SLOW_MS); /* the slow pattern under test */
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

static ksf_err
h_other(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    atomic_store(&handback_at_other, atomic_load(&handback_started));
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

KSFT_TEST(test_isolation_run_handback, 60)
{
    /* One worker; HANDBACK_N slow requests of i.run fetched together (one run), then a
     * request of i.other. A worker goes on with its partition's run without handing
     * each message back, but only while nobody else waits or within its slice: a
     * handler slower than the slice hands the rest of the run back, so i.other runs
     * after the i.run handler that was running when it came, not after the whole run
     * (HANDBACK_N x HANDBACK_SLOW_MS). */
    static const char *const topics[] = {"i.run", "i.other", NULL};
    static const char *const settings[][2] = {{"server.workers", "1"},
                                              {"consumer.auto.offset.reset", "earliest"}};
    static const ksft_handler handlers[] = {
        {"i.run", h_run_slow}, {"i.other", h_other}, {NULL}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics, KSFT_SETTINGS(settings)});
    for (int i = 0; i < HANDBACK_N; i++) {
        char id[16];
        snprintf(id, sizeof id, "run-%d", i);
        ksft_send_request(p.prod, "i.run", 0, id, KSFT_PROBE_REPLY, 0, "{}", 2, false);
    }
    ksft_producer_flush(p.prod, KSFT_PROBE_WAIT_MS);
    ksft_world_serve(&p.w, ksft_world_server(&p.w, handlers));
    ck_assert_int_eq(ksft_wait_atomic(&handback_started, 1, WAIT_MS), 1);
    int at_send = atomic_load(&handback_started);
    int64_t t0 = ksft_now_ms();
    ksft_assert_value_reply(ksft_probe_request(&p, "i.other", "other", "{}", 2), "other",
                            "{}", 2);
    int64_t took = ksft_now_ms() - t0;
    int at_other = atomic_load(&handback_at_other);
    fprintf(stderr,
            "i.other answered in %lld ms, after %d of %d i.run handlers (%d when "
            "sent)\n",
            (long long)took, at_other, HANDBACK_N, at_send);
    ck_assert_msg(at_other < HANDBACK_N,
                  "i.other ran only after the whole i.run run (%d handlers)", at_other);
    ck_assert_int_ge(at_other, at_send);
    KSFT_PROBE_WAIT_STAT(&p, replies, HANDBACK_N + 1);
    ksft_world_stop_server(&p.w);
    /* The run was handed back, not dropped: every i.run request answered and
     * committed. */
    ck_assert_int_eq(atomic_load(&handback_started), HANDBACK_N);
    const char *addr = ksft_broker_address(p.w.broker);
    ck_assert_int_eq(ksft_committed(addr, KSFT_PROBE_GROUP, "i.run", 0), HANDBACK_N);
    ck_assert_int_eq(ksft_committed(addr, KSFT_PROBE_GROUP, "i.other", 0), 1);
    ksft_probe_close(&p);
}
END_TEST

/* ---- the time budget ----------------------------------------------------------- */

#define BUDGET_ERR                                                                       \
    "{\"status\":\"error\",\"message\":\"handler for 'i.budget' exceeded its time "      \
    "budget of 300 ms\"}"

static atomic_int budget_returned;

/* A world of i.budget (a request pattern) answered by @p handler. */
static void
budget_world(ksft_world *w, const char *const (*settings)[2], size_t n,
             ksf_handler_fn handler)
{
    static const char *const topics[] = {"i.budget", "i.budget.reply", NULL};
    ksft_world_open(w,
                    &(ksft_world_spec){
                        .topics = topics,
                        .settings = settings,
                        .nsettings = n,
                        .handlers = (const ksft_handler[]){{"i.budget", handler}, {NULL}},
                        .no_client = true});
}

static ksf_err
h_oversleeps(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    ksft_sleep_ms(2000); /* the handler under test is slow on purpose */
    *reply = json_string("late");
    atomic_fetch_add(&budget_returned, 1);
    return KSF_OK;
}

KSFT_TEST(test_isolation_budget, 60)
{
    static const char *const settings[][2] = {
        {"server.handler.timeout.ms", "5000"},
        {"server.pattern.i.budget.handler.timeout.ms", "300"}};
    ksft_world w;
    budget_world(&w, settings, KSFT_NKV(settings), h_oversleeps);
    const char *addr = ksft_broker_address(w.broker);
    ksft_collector *replies = ksft_collector_new(addr, "i.budget.reply", 0);

    /* A NestJS-style request: the exact error reply, long before the handler ends. */
    ksft_producer *p = ksft_producer_new(addr);
    int64_t t0 = ksft_now_ms();
    ksft_send_request(p, "i.budget", 0, "b-1", "i.budget.reply", 0, "{}", 2, true);
    ksf_server_stats st;
    int64_t fired_ms = 0;
    ksft_deadline d = ksft_deadline_in(WAIT_MS);
    do { /* the server's side: the collector adds its own fetch latency */
        ksf_server_get_stats(w.srv, &st);
        if (st.budget_exceeded && !fired_ms) {
            fired_ms = ksft_now_ms() - t0;
        }
    } while (st.replies < 1 && ksft_deadline_wait(&d));
    int64_t took = ksft_now_ms() - t0;
    fprintf(stderr,
            "budget: fired after %lld ms, error reply acknowledged after %lld ms\n",
            (long long)fired_ms, (long long)took);
    /* Answered by the budget, not by the handler's return; the first reply of a
     * fresh producer also waits for the reply topic's metadata. */
    ck_assert_int_eq(atomic_load(&budget_returned), 0);
    ck_assert_uint_eq(st.budget_exceeded, 1);
    ck_assert_msg(fired_ms >= 300 && fired_ms < 600, "budget fired after %lld ms",
                  (long long)fired_ms);
    ck_assert_msg(took < 1800, "error reply acknowledged after %lld ms", (long long)took);
    ck_assert_uint_eq(ksft_collector_wait_id(replies, "b-1", 1, WAIT_MS), 1);
    const ksft_msg *m = ksft_collector_get_id(replies, "b-1", 0);
    ck_assert_ptr_null(m->value);
    ksft_assert_header(m, "kafka_correlationId", "b-1", 3);
    ksft_assert_header(m, "kafka_nest-err", BUDGET_ERR, strlen(BUDGET_ERR));
    ksft_assert_header(m, "kafka_nest-is-disposed", "\0", 1);
    /* ... and the handler span's traceparent, like every reply (docs/tracing.md). */
    ck_assert_uint_eq(m->nhdrs, 4);
    ck_assert_str_eq(m->hdrs[3].name, "traceparent");
    ck_assert_uint_eq(m->hdrs[3].len, 55);
    ck_assert_int_eq(ksft_wait_atomic(&budget_returned, 1, WAIT_MS), 1);

    /* A ksf client sees the error as KSF_EREMOTE, and nothing after it. */
    w.cli = ksft_client(w.cfg);
    json_t *reply = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_call(w.cli, "i.budget", NULL, 10000, &reply, &ei),
                     KSF_EREMOTE);
    char *text = json_dumps(reply, JSON_COMPACT | JSON_PRESERVE_ORDER);
    ck_assert_str_eq(text, BUDGET_ERR);
    free(text);
    json_decref(reply);
    ck_assert_int_eq(ksft_wait_atomic(&budget_returned, 2, WAIT_MS), 2);
    /* The discard is counted just after the handler returns. */
    st = KSFT_WAIT_SERVER_STAT(w.srv, late_discarded, 2, WAIT_MS);
    ck_assert_uint_eq(st.budget_exceeded, 2);
    ck_assert_uint_eq(st.late_discarded, 2);
    ck_assert_uint_eq(st.replies, 2);
    ksft_assert_server_export(w.srv); /* budget_exceeded 2, late_discarded 2 */

    /* Both late results were discarded: exactly two reply messages, one per request,
     * once the server stopped (everything it would send has been sent). */
    ksft_world_stop_server(&w);
    ksft_collector_poll(replies, 300);
    ck_assert_uint_eq(ksft_collector_count(replies), 2);
    ck_assert_uint_eq(ksft_collector_count_id(replies, "b-1"), 1);
    ksf_client_stats cs;
    ksf_client_get_stats(w.cli, &cs);
    ck_assert_uint_eq(cs.remote_errors, 1);
    ck_assert_uint_eq(cs.duplicate_replies, 0);
    ck_assert_uint_eq(cs.late_replies, 0);
    ck_assert_uint_eq(cs.unknown_replies, 0);
    ck_assert_int_eq(ksft_committed(addr, GROUP, "i.budget", 0), 2);
    ksft_collector_destroy(replies);
    ksft_producer_destroy(p);
    ksft_world_close(&w);
}
END_TEST

/* ---- a deferred request past its budget --------------------------------------- */

static atomic_int finish_result = -1;

static void *
finish_later(void *arg)
{
    ksft_sleep_ms(1000); /* well past the 300 ms budget */
    atomic_store(&finish_result, ksf_ctx_finish(arg, KSF_OK, json_string("late")));
    return NULL;
}

static pthread_t finisher;

static ksf_err
h_defers(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    ksf_err e = ksf_ctx_defer(ctx);
    ck_assert_int_eq(pthread_create(&finisher, NULL, finish_later, ctx), 0);
    return e;
}

KSFT_TEST(test_isolation_budget_deferred, 60)
{
    static const char *const settings[][2] = {{"server.handler.timeout.ms", "300"}};
    ksft_world w;
    budget_world(&w, settings, KSFT_NKV(settings), h_defers);
    const char *addr = ksft_broker_address(w.broker);
    ksft_collector *replies = ksft_collector_new(addr, "i.budget.reply", 0);
    ksft_producer *p = ksft_producer_new(addr);
    ksft_send_request(p, "i.budget", 0, "d-1", "i.budget.reply", 0, "{}", 2, true);
    ck_assert_uint_eq(ksft_collector_wait_id(replies, "d-1", 1, WAIT_MS), 1);
    const ksft_msg *m = ksft_collector_get_id(replies, "d-1", 0);
    ksft_assert_header(m, "kafka_nest-err", BUDGET_ERR, strlen(BUDGET_ERR));
    /* The deferred finish still succeeds for the handler, but sends nothing. */
    pthread_join(finisher, NULL);
    ck_assert_int_eq(atomic_load(&finish_result), KSF_OK);
    ksf_server_stats st = KSFT_WAIT_SERVER_STAT(w.srv, late_discarded, 1, WAIT_MS);
    ck_assert_uint_eq(st.budget_exceeded, 1);
    ck_assert_uint_eq(st.late_discarded, 1);
    ksft_world_stop_server(&w);
    ksft_collector_poll(replies, 300);
    ck_assert_uint_eq(ksft_collector_count(replies), 1);
    ck_assert_int_eq(ksft_committed(addr, GROUP, "i.budget", 0), 1);
    ksft_collector_destroy(replies);
    ksft_producer_destroy(p);
    ksft_world_close(&w);
}
END_TEST

KSFT_MAIN("isolation")
