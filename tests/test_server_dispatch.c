/*
 * ksf_server's dispatch: events against requests, order within a partition under a
 * multi-worker pool, a fetched run of one partition handled on one thread with its
 * replies in order, and a handler slower than the session timeout that does not hold
 * up other partitions or cost the group membership.
 */
#include "server/dispatch.h"
#include "server/server.h"
#include "server_probe.h"
#include "service.h"
#include "suite.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

KSFT_TEST(test_server_events, 40)
{
    static const char *const topics[] = {"t.ev", "t.ev.fail", "t.msg", "t.ev.none", NULL};
    /* A failing event logged and committed at once (retries: test_retry.c). */
    static const char *const settings[][2] = {{"server.event.retries", "0"},
                                              {"server.event.dlq.topic", "none"}};
    static const ksft_handler handlers[] = {{"t.ev", h_event, NULL, true},
                                            {"t.ev.fail", h_event_fails, NULL, true},
                                            {"t.msg", h_msg_counting},
                                            {NULL}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics, KSFT_SETTINGS(settings)});
    ksf_server *srv = ksft_world_server(&p.w, handlers);
    ck_assert_int_eq(ksfi_server_add_topic(srv, "t.ev.none", NULL), KSF_OK);
    ksft_world_serve(&p.w, srv);

    const char ev[] = "{\"dragon\":1}";
    ksft_produce(p.prod, "t.ev", 0, NULL, 0, ev, strlen(ev), NULL, 0, true);
    /* Request headers on an event pattern: still an event, never answered. */
    ksft_send_request(p.prod, "t.ev", 0, "ev-req", KSFT_PROBE_REPLY, 0, ev, strlen(ev),
                      true);
    ksft_produce(p.prod, "t.ev.fail", 0, NULL, 0, ev, strlen(ev), NULL, 0, true);
    /* No headers on a message pattern: an event; the handler runs, nothing is sent. */
    ksft_produce(p.prod, "t.msg", 0, NULL, 0, ev, strlen(ev), NULL, 0, true);
    /* Correlation id without a reply topic: an event too. */
    ksfi_header half[] = {KSFT_ID("half")};
    ksft_produce(p.prod, "t.msg", 0, NULL, 0, ev, strlen(ev), half, 1, true);
    ksft_produce(p.prod, "t.ev.none", 0, NULL, 0, ev, strlen(ev), NULL, 0, true);
    KSFT_PROBE_WAIT_STAT(&p, events, 6);
    /* A request after the events on t.msg's partition: once its reply is here, any
     * reply the events wrongly caused would be here too. */
    ksft_assert_value_reply(ksft_probe_request(&p, "t.msg", "after", "{}", 2), "after",
                            "ok", 2);

    ck_assert_int_eq(atomic_load(&ev_seen), 2);
    ck_assert_int_eq(atomic_load(&ev_bad_ctx), 0);
    ck_assert_int_eq(atomic_load(&msg_as_event), 2);
    ksft_probe_stop(&p, 1);
    KSFT_ASSERT_SERVER_STATS(p.w.srv, .events = 6, .requests = 1, .replies = 1,
                             .errors = 1, .no_handler = 1);
    /* Committed past the failed event and the unhandled one: no redelivery loop. */
    const char *addr = ksft_broker_address(p.w.broker);
    ck_assert_int_eq(ksft_committed(addr, KSFT_PROBE_GROUP, "t.ev.fail", 0), 1);
    ck_assert_int_eq(ksft_committed(addr, KSFT_PROBE_GROUP, "t.ev.none", 0), 1);
    ck_assert_int_eq(ksft_committed(addr, KSFT_PROBE_GROUP, "t.ev", 0), 2);
    ksft_probe_close(&p);
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
        ksft_sleep_ms(1); /* uneven work, so that a pool that reorders would show it */
    }
    pthread_mutex_lock(&order_lock);
    if (order_count[p] < ORDER_N) {
        order_seen[p][order_count[p]++] = i;
    }
    pthread_mutex_unlock(&order_lock);
    atomic_fetch_sub(&order_concurrent, 1);
    return KSF_OK;
}

KSFT_TEST(test_server_partition_order, 40)
{
    static const char *const topics[] = {"t.order:2", NULL};
    static const char *const settings[][2] = {{"server.workers", "4"}};
    static const ksft_handler handlers[] = {{"t.order", h_order, NULL, true}, {NULL}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics,
                                           KSFT_SETTINGS(settings),
                                           .handlers = handlers});

    for (int i = 0; i < ORDER_N; i++) {
        char v[16];
        int n = snprintf(v, sizeof v, "%d", i);
        ksft_produce(p.prod, "t.order", 0, NULL, 0, v, (size_t)n, NULL, 0, false);
        ksft_produce(p.prod, "t.order", 1, NULL, 0, v, (size_t)n, NULL, 0, false);
    }
    ksft_producer_flush(p.prod, KSFT_PROBE_WAIT_MS);
    KSFT_PROBE_WAIT_STAT(&p, events, 2 * ORDER_N);
    ksft_world_stop_server(&p.w);
    for (int part = 0; part < 2; part++) {
        ck_assert_int_eq(order_count[part], ORDER_N);
        for (int i = 0; i < ORDER_N; i++) {
            ck_assert_msg(order_seen[part][i] == i, "partition %d: position %d holds %d",
                          part, i, order_seen[part][i]);
        }
        ck_assert_int_eq(ksft_committed(ksft_broker_address(p.w.broker), KSFT_PROBE_GROUP,
                                        "t.order", part),
                         ORDER_N);
    }
    /* At most one handler per partition at a time: two partitions, so at most two. */
    ck_assert_int_le(atomic_load(&order_max_concurrent), 2);
    ksft_probe_close(&p);
}
END_TEST

/* ---- a fetched run on one thread ----------------------------------------------------
 */

#define RUN_N 50

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t run_thread[RUN_N];
static int64_t run_offset[RUN_N];
static int run_count;
static ksf_server *run_srv;
static atomic_bool run_all_queued;

static ksf_err
h_run(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    if (ksf_ctx_offset(ctx) == 0) {
        /* Hold the first handler until the consumer queued the rest behind it: the run
         * is what waits in the partition's queue (under valgrind a worker can otherwise
         * empty the queue between two polls, and the partition then starts a new run).
         * Counted now, not as the high-water mark, which offsets 0-48 reach before this
         * one starts when they come in one fetch (seen under load: offset 49 came later,
         * ran on another thread). */
        ksft_deadline d = ksft_deadline_in(KSFT_PROBE_WAIT_MS);
        while (ksfi_dispatch_queued_now(run_srv->dispatch) < RUN_N - 1 &&
               ksft_deadline_wait(&d)) {
        }
        atomic_store(&run_all_queued,
                     ksfi_dispatch_queued_now(run_srv->dispatch) >= RUN_N - 1);
    }
    pthread_mutex_lock(&run_lock);
    if (run_count < RUN_N) {
        run_thread[run_count] = pthread_self();
        run_offset[run_count] = ksf_ctx_offset(ctx);
        run_count++;
    }
    pthread_mutex_unlock(&run_lock);
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

KSFT_TEST(test_server_run_one_thread, 40)
{
    /* RUN_N requests wait on one partition before the server starts, and the first
     * handler holds until the rest are queued behind it; four workers could take them.
     * The partition's run stays on the worker that started it (no hand-off per
     * message): every handler on one thread, in offset order, and the replies leave in
     * that order. */
    static const char *const topics[] = {"t.run", NULL};
    static const char *const settings[][2] = {{"server.workers", "4"},
                                              {"consumer.auto.offset.reset", "earliest"}};
    static const ksft_handler handlers[] = {{"t.run", h_run}, {NULL}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics, KSFT_SETTINGS(settings)});
    for (int i = 0; i < RUN_N; i++) {
        char id[16], v[16];
        snprintf(id, sizeof id, "run-%d", i);
        int n = snprintf(v, sizeof v, "%d", i);
        ksft_send_request(p.prod, "t.run", 0, id, KSFT_PROBE_REPLY, 0, v, (size_t)n,
                          false);
    }
    ksft_producer_flush(p.prod, KSFT_PROBE_WAIT_MS);
    run_srv = ksft_world_server(&p.w, handlers);
    ksft_world_serve(&p.w, run_srv);
    KSFT_PROBE_WAIT_STAT(&p, replies, RUN_N);
    ck_assert_msg(atomic_load(&run_all_queued), "the requests were never all queued");

    pthread_mutex_lock(&run_lock);
    ck_assert_int_eq(run_count, RUN_N);
    for (int i = 0; i < RUN_N; i++) {
        ck_assert_int_eq(run_offset[i], i);
        ck_assert_msg(pthread_equal(run_thread[i], run_thread[0]),
                      "offset %d ran on another thread than offset 0", i);
    }
    pthread_mutex_unlock(&run_lock);
    ksft_deadline d = ksft_deadline_in(KSFT_PROBE_WAIT_MS);
    while (ksft_collector_poll(p.replies, 100) < RUN_N && ksft_deadline_wait(&d)) {
    }
    ck_assert_uint_eq(ksft_collector_count(p.replies), RUN_N);
    for (int i = 0; i < RUN_N; i++) {
        char id[16], v[16];
        snprintf(id, sizeof id, "run-%d", i);
        int n = snprintf(v, sizeof v, "%d", i);
        ksft_assert_value_reply(ksft_collector_at(p.replies, (size_t)i), id, v,
                                (size_t)n);
    }
    ksft_world_stop_server(&p.w);
    ck_assert_int_eq(
        ksft_committed(ksft_broker_address(p.w.broker), KSFT_PROBE_GROUP, "t.run", 0),
        RUN_N);
    ksft_probe_close(&p);
}
END_TEST

/* ---- delivery reports while every worker is in a handler ------------------------------
 */

static atomic_int busy_slow_started, busy_slow_done;

static ksf_err
h_busy(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    if (!strcmp(ksf_ctx_correlation_id(ctx), "slow")) {
        atomic_fetch_add(&busy_slow_started, 1);
        ksft_sleep_ms(3000); /* the one worker is in this handler meanwhile */
        atomic_fetch_add(&busy_slow_done, 1);
    }
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

KSFT_TEST(test_server_reports_while_busy, 40)
{
    /* The workers serve the reply producer's delivery reports; with the only worker
     * inside a slow handler, the fast reply before it is still acknowledged (counted,
     * its offset stored) long before that handler returns: the watch thread serves
     * reports no worker got to within KSFI_REPORTS_STALE_MS. */
    static const char *const topics[] = {"t.busy", NULL};
    static const char *const settings[][2] = {{"server.workers", "1"},
                                              {"consumer.auto.offset.reset", "earliest"}};
    static const ksft_handler handlers[] = {{"t.busy", h_busy}, {NULL}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics, KSFT_SETTINGS(settings)});
    ksft_send_request(p.prod, "t.busy", 0, "fast", KSFT_PROBE_REPLY, 0, "1", 1, false);
    ksft_send_request(p.prod, "t.busy", 0, "slow", KSFT_PROBE_REPLY, 0, "2", 1, false);
    ksft_producer_flush(p.prod, KSFT_PROBE_WAIT_MS);
    ksft_world_serve(&p.w, ksft_world_server(&p.w, handlers));
    ck_assert_int_eq(ksft_wait_atomic(&busy_slow_started, 1, KSFT_PROBE_WAIT_MS), 1);
    KSFT_PROBE_WAIT_STAT(&p, replies, 1);
    ck_assert_msg(atomic_load(&busy_slow_done) == 0,
                  "the fast reply was acknowledged only after the slow handler returned");
    ck_assert_uint_eq(ksft_probe_stats(&p).replies, 1);
    KSFT_PROBE_WAIT_STAT(&p, replies, 2);
    ksft_world_stop_server(&p.w);
    ck_assert_int_eq(
        ksft_committed(ksft_broker_address(p.w.broker), KSFT_PROBE_GROUP, "t.busy", 0),
        2);
    ksft_probe_close(&p);
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
    ksft_sleep_ms(
        9000); /* the behaviour under test: longer than session and poll interval */
    *reply = json_string("slow");
    return KSF_OK;
}

KSFT_TEST(test_server_slow_handler, 40)
{
    static const char *const topics[] = {"t.slow", "t.fast", NULL};
    static const char *const settings[][2] = {{"consumer.session.timeout.ms", "6000"},
                                              {"consumer.max.poll.interval.ms", "7000"}};
    static const ksft_handler handlers[] = {{"t.slow", h_slow}, {"t.fast", NULL}, {NULL}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics, KSFT_SETTINGS(settings)});
    ksf_config_set_log(p.w.cfg, count_revocations, NULL, KSF_LOG_INFO);
    ksft_world_serve(&p.w, ksft_world_server(&p.w, handlers));

    int64_t t0 = ksft_now_ms();
    ksft_send_request(p.prod, "t.slow", 0, "slow", KSFT_PROBE_REPLY, 0, "{}", 2, true);
    /* Other partitions are served while the slow handler runs. */
    ksft_assert_value_reply(ksft_probe_request(&p, "t.fast", "fast", "{}", 2), "fast",
                            "{}", 2);
    ck_assert_int_lt(ksft_now_ms() - t0, 3000);
    ck_assert_uint_eq(ksft_collector_wait_id(p.replies, "slow", 1, 15000), 1);
    ksft_assert_value_reply(ksft_collector_get_id(p.replies, "slow", 0), "slow", "slow",
                            4);
    ck_assert_int_eq(atomic_load(&revocations), 0); /* never evicted, never rebalanced */
    ksft_world_stop_server(&p.w);
    ksft_collector_poll(p.replies, 100);
    ck_assert_uint_eq(ksft_collector_count_id(p.replies, "slow"), 1);
    ck_assert_uint_eq(ksft_probe_stats(&p).requests, 2);
    ksft_probe_close(&p);
}
END_TEST

/* ---- inline mode: the handlers on the consumer thread ------------------------------ */

#define INLINE_N 400

/* What one inline server saw: the threads its handlers ran on and, per partition, the
 * last offset handled (order within a partition). */
typedef struct inline_seen {
    pthread_mutex_t lock;
    pthread_t first;
    int handled, other_threads, out_of_order;
    int64_t last[4];
} inline_seen;

static ksf_err
h_inline(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    inline_seen *s = ksf_ctx_user(ctx);
    int32_t part = ksf_ctx_partition(ctx);
    pthread_mutex_lock(&s->lock);
    if (s->handled++ == 0) {
        s->first = pthread_self();
    } else if (!pthread_equal(s->first, pthread_self())) {
        s->other_threads++;
    }
    if (part >= 0 && part < 4) {
        s->out_of_order += ksf_ctx_offset(ctx) <= s->last[part];
        s->last[part] = ksf_ctx_offset(ctx);
    }
    pthread_mutex_unlock(&s->lock);
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

static ksf_server *
inline_server(const ksft_world *w, inline_seen *s)
{
    *s = (inline_seen){.last = {-1, -1, -1, -1}};
    pthread_mutex_init(&s->lock, NULL);
    const ksft_handler handlers[] = {{"t.inl", h_inline, s}, {NULL}};
    return ksft_world_server(w, handlers);
}

static void
send_all(ksft_tally *t, ksf_client *cli)
{
    for (size_t i = 0; i < t->n; i++) {
        ck_assert_int_eq(ksft_tally_send(t, cli, "t.inl", i, 60000, 10000), KSF_OK);
    }
}

static int64_t
committed_total(const ksft_world *w)
{
    int64_t n = 0;
    for (int32_t part = 0; part < 4; part++) {
        int64_t at = ksft_committed(ksft_broker_address(w->broker), KSFT_PROBE_GROUP,
                                    "t.inl", part);
        n += at > 0 ? at : 0;
    }
    return n;
}

KSFT_TEST(test_server_inline, 120)
{
    /* server.workers=0: every handler of a server runs on one thread (its consumer
     * thread, never the test's), in offset order per partition; requests are answered
     * exactly once while a second inline server joins the group and the first stops
     * (its revoke and drain serve the delivery reports themselves: no worker does),
     * and the committed offsets cover every request. */
    static const char *const topics[] = {"t.inl:4", "t.inl.reply:4", NULL};
    static const char *const settings[][2] = {{"server.workers", "0"}};
    ksft_world w;
    ksft_world_open(&w, &(ksft_world_spec){.topics = topics, KSFT_SETTINGS(settings)});
    static inline_seen a, b;
    ksft_service sa = {0}, sb = {0};
    ksft_service_start(&sa, inline_server(&w, &a), 20000);

    ksft_tally t1;
    ksft_tally_init(&t1, INLINE_N);
    send_all(&t1, w.cli);
    ck_assert_uint_eq(ksft_tally_wait(&t1, INLINE_N, 30000), INLINE_N);
    ck_assert_uint_eq(atomic_load(&t1.ok), INLINE_N);
    ck_assert_uint_eq(atomic_load(&t1.extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&t1.wrong_value), 0);

    /* b joins while the second batch is sent; a stops halfway through it. */
    ksft_service_start(&sb, inline_server(&w, &b), 20000);
    ksft_tally t2;
    ksft_tally_init(&t2, INLINE_N);
    for (size_t i = 0; i < INLINE_N; i++) {
        ck_assert_int_eq(ksft_tally_send(&t2, w.cli, "t.inl", i, 60000, 10000), KSF_OK);
        if (i == INLINE_N / 2) {
            ksft_service_stop(&sa);
        }
    }
    ck_assert_uint_eq(ksft_tally_wait(&t2, INLINE_N, 60000), INLINE_N);
    ck_assert_uint_eq(atomic_load(&t2.ok), INLINE_N);
    ck_assert_uint_eq(atomic_load(&t2.extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&t2.wrong_value), 0);
    ksft_service_stop(&sb);

    inline_seen *seen[] = {&a, &b};
    for (int k = 0; k < 2; k++) {
        ck_assert_msg(seen[k]->handled > 0, "server %c handled nothing", 'a' + k);
        ck_assert_int_eq(seen[k]->other_threads, 0);
        ck_assert_int_eq(seen[k]->out_of_order, 0);
        ck_assert_msg(!pthread_equal(seen[k]->first, pthread_self()),
                      "server %c ran a handler on the test's thread", 'a' + k);
        pthread_mutex_destroy(&seen[k]->lock);
    }
    /* Redelivered after the revoke at most what a had not committed; none lost. */
    ck_assert_int_ge(a.handled + b.handled, 2 * INLINE_N);
    ck_assert_int_eq(committed_total(&w), 2 * INLINE_N);
    ksft_tally_free(&t1);
    ksft_tally_free(&t2);
    ksft_world_close(&w);
}
END_TEST

/* A handler of an inline server calling a pattern of that same server: the call can
 * only time out, and its error says why. */
static ksf_client *self_cli;

static ksf_err
h_self_call(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    json_t *r = NULL;
    ksf_errinfo ei = {0};
    ksf_err e = ksf_client_call(self_cli, "t.self", data, 500, &r, &ei);
    json_decref(r);
    *reply = json_pack("{s:i,s:s}", "err", (int)e, "text", ei.text);
    return KSF_OK;
}

KSFT_TEST(test_server_inline_self_call, 60)
{
    static const char *const topics[] = {"t.nest", "t.nest.reply", "t.self",
                                         "t.self.reply", NULL};
    static const char *const settings[][2] = {{"server.workers", "0"}};
    static const ksft_handler handlers[] = {{"t.nest", h_self_call}, {"t.self"}, {NULL}};
    ksft_world w;
    ksft_world_open(&w, &(ksft_world_spec){.topics = topics,
                                           KSFT_SETTINGS(settings),
                                           .handlers = handlers});
    self_cli = w.cli;
    json_t *r = NULL;
    ksf_errinfo ei = {0};
    json_t *req = json_pack("{s:i}", "n", 1);
    ck_assert_msg(ksf_client_call(w.cli, "t.nest", req, 20000, &r, &ei) == KSF_OK, "%s",
                  ei.text);
    json_decref(req);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "err")), KSF_ETIMEDOUT);
    const char *text = json_string_value(json_object_get(r, "text"));
    ck_assert_msg(text && strstr(text, "t.self: ") == text &&
                      strstr(text, "(called from a handler of a server with "
                                   "server.workers=0: that server runs nothing else"),
                  "%s", text ? text : "(no text)");
    json_decref(r);
    /* The same call from the test's own thread is answered: the hint is not there. */
    req = json_pack("{s:i}", "n", 2);
    ck_assert_msg(ksf_client_call(w.cli, "t.self", req, 20000, &r, &ei) == KSF_OK, "%s",
                  ei.text);
    json_decref(req);
    json_decref(r);
    ksft_world_close(&w);
}
END_TEST

KSFT_MAIN("server_dispatch")
