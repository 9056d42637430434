/*
 * Latency after idle and after connect (issue #8's idle cost). A ksf client calls a ksf
 * echo server through the mock broker (fetch.wait.max.ms=5 everywhere, ksft_config):
 * - an idle client really stops fetching (its Fetch requests, counted from librdkafka's
 *   fetch debug log, drop to none), and a call after the idle pause costs what a call
 *   in a busy stream costs (before the seek after resume: ~500 ms each, librdkafka's
 *   broker thread slept through the resume);
 * - the first call after connect is just as prompt (before: 650-950 ms, the server's
 *   producer waited for its 1 s topic scan to learn the reply topic, and the client's
 *   reply partition had been paused before its first fetch).
 * The bounds are against those stalls, not benchmarks: a call takes 5-15 ms here.
 *
 * And the throughput cap of issue #8: a pattern's concurrency slot is held while its
 * handler works, not while its reply waits for the broker's acknowledgement (holding it
 * that long capped a pattern at `limit` replies per produce round trip).
 */
#include "fixture.h"
#include "raw_kafka.h"
#include "server/dispatch.h"
#include "service.h"

#include "suite.h"

#include <check.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CALL_BOUND_MS 200      /* far above a busy call, far below the old stalls */
#define CALL_BOUND_SLOW_MS 400 /* under valgrind or ASan (a call: 100-200 ms) */
#define IDLE_ROUNDS 3          /* idle pauses, each followed by one call */
#define QUIET_MS 300           /* no Fetch for this long: the client has paused */
#define QUIET_WAIT_MS 6000     /* IDLE_PAUSE_MS (1 s) plus plenty */
#define IDLE_WINDOW_MS 700     /* Fetch requests counted over this idle window */
#define IDLE_FETCHES_MAX 1     /* busy at fetch.wait.max.ms=5, the window holds ~100 */
#define PIPE_REQUESTS 8        /* requests waiting before the server starts */
#define PIPE_ACK_DELAY_MS 5000 /* each Produce response of the broker held this long */
#define BACKLOG_REQUESTS 600   /* requests waiting before the server starts */
#define BACKLOG_DELAYED 5      /* Produce responses held BACKLOG_ACK_DELAY_MS */
#define BACKLOG_ACK_DELAY_MS 3000
#define ACKS_REQUESTS 8   /* requests waiting before the server starts */
#define ACKS_HOLD_MS 3000 /* the first Produce response held this long */

/* The call bound: valgrind and ASan slow a call down, the old stall stays >= 500 ms. */
static int64_t
call_bound_ms(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return CALL_BOUND_SLOW_MS;
#else
    return ksft_under_valgrind() ? CALL_BOUND_SLOW_MS : CALL_BOUND_MS;
#endif
}

/* Fetch requests the client's reply consumer sent ("Fetch n/n/n toppar(s)"). */
static atomic_uint fetches;

static void
count_fetches(void *user, ksf_log_level level, const char *component, const char *text)
{
    (void)user;
    (void)level;
    /* librdkafka's facility arrives as a field, appended as " facility=FETCH". */
    if (!strcmp(component, "kafka") && strstr(text, "facility=FETCH") &&
        strstr(text, "toppar(s)")) {
        atomic_fetch_add(&fetches, 1);
    }
}

/* A broker, an echo server on @p pattern (ready), and a client (not connected) that
 * counts its Fetch requests; @p provider NULL: the default reply provider. */
static void
latency_world(ksft_world *w, const char *pattern, const char *provider)
{
    char topic[128], reply_topic[128];
    snprintf(topic, sizeof topic, "%s:4", pattern);
    snprintf(reply_topic, sizeof reply_topic, "%s.reply:4", pattern);
    const ksft_handler echo[] = {{pattern}, {NULL}};
    ksft_world_open(
        w, &(ksft_world_spec){.topics = (const char *const[]){topic, reply_topic, NULL},
                              .handlers = echo,
                              .no_client = true});
    /* The client's settings only: the server already copied the configuration. */
    const char *const kv[][2] = {{"consumer.debug", "fetch"},
                                 {"client.reply.provider", provider}};
    ksft_config_set_all(w->cfg, kv, provider ? 2 : 1);
    ksf_config_set_log(w->cfg, count_fetches, NULL, KSF_LOG_DEBUG);
    w->cli = ksft_client(w->cfg);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_subscribe_to_response_of(w->cli, pattern, &ei), KSF_OK);
    ck_assert_msg(ksf_client_connect(w->cli, 20000, &ei) == KSF_OK, "%s", ei.text);
}

/* One echo call of @p i; returns its latency in ms (fails the test on error). */
static int64_t
timed_call(ksf_client *cli, const char *pattern, int i)
{
    ksf_errinfo ei = {0};
    json_t *data = json_pack("{si}", "i", i), *out = NULL;
    int64_t t0 = ksft_now_ms();
    ksf_err e = ksf_client_call(cli, pattern, data, 5000, &out, &ei);
    int64_t took = ksft_now_ms() - t0;
    ck_assert_msg(e == KSF_OK, "call %d: %s", i, ei.text);
    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(json_integer_value(json_object_get(out, "i")), i);
    json_decref(data);
    json_decref(out);
    return took;
}

/* timed_call of @p i that must finish within call_bound_ms(); @p what names it. */
static void
assert_fast_call(ksf_client *cli, const char *pattern, int i, const char *what)
{
    int64_t took = timed_call(cli, pattern, i);
    ck_assert_msg(took < call_bound_ms(), "%s (call %d) took %lld ms, over %lld ms", what,
                  i, (long long)took, (long long)call_bound_ms());
}

/* Wait until no Fetch request was sent for QUIET_MS; false if that never happened. */
static bool
wait_quiet(void)
{
    ksft_deadline deadline = ksft_deadline_in(QUIET_WAIT_MS);
    unsigned last = atomic_load(&fetches);
    int64_t since = ksft_now_ms();
    while (ksft_deadline_wait(&deadline)) {
        unsigned now = atomic_load(&fetches);
        if (now != last) {
            last = now;
            since = ksft_now_ms();
        } else if (ksft_now_ms() - since >= QUIET_MS) {
            return true;
        }
    }
    return false;
}

static void
assert_clean(ksf_client *cli, uint64_t calls)
{
    ksf_client_stats s;
    ksf_client_get_stats(cli, &s);
    ck_assert_uint_eq(s.sent, calls);
    ck_assert_uint_eq(s.replies, calls);
    ck_assert_uint_eq(s.timeouts, 0);
    ck_assert_uint_eq(s.late_replies, 0);
    ck_assert_uint_eq(s.duplicate_replies, 0);
    ck_assert_uint_eq(s.unknown_replies, 0);
}

KSFT_TEST(test_latency_idle_resume, 60)
{
    KSFT_NEEDS_MOCK("its request counters, to see Fetch requests");
    ksft_world w;
    latency_world(&w, "lat.idle", "static");
    timed_call(w.cli, "lat.idle", 0); /* warm: the bound is about idle, not start */
    unsigned busy0 = atomic_load(&fetches);
    ksft_sleep_ms(100);
    unsigned busy = atomic_load(&fetches) - busy0;
    ck_assert_msg(busy >= 3, "the counter sees Fetch requests (%u in 100 ms busy)", busy);
    for (int r = 1; r <= IDLE_ROUNDS; r++) {
        ck_assert_msg(wait_quiet(), "round %d: the idle client never stopped fetching",
                      r);
        unsigned before = atomic_load(&fetches);
        ksft_sleep_ms(IDLE_WINDOW_MS); /* a measurement window, not synchronisation */
        unsigned idle = atomic_load(&fetches) - before;
        ck_assert_msg(idle <= IDLE_FETCHES_MAX,
                      "round %d: %u Fetch requests in %d ms idle", r, idle,
                      IDLE_WINDOW_MS);
        assert_fast_call(w.cli, "lat.idle", r, "a call after idle");
    }
    assert_clean(w.cli, IDLE_ROUNDS + 1);
    ksft_world_close(&w);
}
END_TEST

KSFT_TEST(test_latency_first_call, 60)
{
    ksft_world w;
    latency_world(&w, "lat.first", NULL); /* the default: the reply group */
    assert_fast_call(w.cli, "lat.first", 0, "the first call after connect");
    assert_fast_call(w.cli, "lat.first", 1, "the second call");
    assert_clean(w.cli, 2);
    ksft_world_close(&w);
}
END_TEST

KSFT_TEST(test_latency_first_call_after_idle, 60)
{
    /* Nothing consumed yet: where fetching resumes is known only from the partition's
     * end-of-partition event, which connect() waited for. */
    ksft_world w;
    latency_world(&w, "lat.cold", "static");
    ck_assert_msg(atomic_load(&fetches) >= 1, "connect returned before the first Fetch");
    ck_assert_msg(wait_quiet(), "the idle client never stopped fetching");
    assert_fast_call(w.cli, "lat.cold", 0, "the first call, after idle");
    assert_clean(w.cli, 1);
    ksft_world_close(&w);
}
END_TEST

/* A broker with @p topic and its reply topic (one partition each) already holding @p n
 * requests {"i": i} with correlation ids "<topic>-<i>" (acknowledged one by one when
 * @p one_per_batch: the mock then keeps each in its own batch), after which the broker
 * holds its next @p held Produce responses for @p hold_ms each. */
static ksft_broker *
broker_with_requests(const char *topic, int n, bool one_per_batch, int held, int hold_ms)
{
    char reply_topic[64];
    snprintf(reply_topic, sizeof reply_topic, "%s.reply", topic);
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, topic, 1);
    ksft_broker_create_topic(b, reply_topic, 1);
    ksft_producer *p = ksft_producer_new(ksft_broker_address(b));
    for (int i = 0; i < n; i++) {
        char id[80], value[32];
        snprintf(id, sizeof id, "%s-%d", topic, i);
        int len = snprintf(value, sizeof value, "{\"i\":%d}", i);
        ksft_send_request(p, topic, 0, id, reply_topic, 0, value, (size_t)len,
                          one_per_batch);
    }
    ksft_producer_flush(p, 10000);
    ksft_producer_destroy(p);
    /* From here on, the only producer is the server's reply producer. */
    for (int i = 0; i < held; i++) {
        ck_assert_int_eq(rd_kafka_mock_broker_push_request_error_rtts(
                             ksft_broker_mock(b), 1, 0 /* Produce */, 1,
                             RD_KAFKA_RESP_ERR_NO_ERROR, hold_ms),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    return b;
}

/* A server on @p b reading @p topic from the start with handler @p fn (its user
 * pointer is the server), running in @p svc; @p concurrency, @p window and
 * @p window_bytes (server.partition.window[.bytes]) NULL: the default. */
static ksf_server *
start_reader(ksft_service *svc, ksft_broker *b, const char *topic, ksf_handler_fn fn,
             const char *concurrency, const char *window, const char *window_bytes)
{
    const char *const kv[][2] = {
        {"consumer.auto.offset.reset", "earliest"},
        {"server.pattern.concurrency", concurrency ? concurrency : "0"},
        {"server.partition.window", window ? window : "4096"},
        {"server.partition.window.bytes", window_bytes ? window_bytes : "67108864"},
    };
    ksf_config *cfg = ksft_config(b);
    ksft_config_set_all(cfg, kv, KSFT_NKV(kv));
    ksf_server *srv = ksft_server(cfg);
    ksf_config_destroy(cfg);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_server_on_message(srv, topic, fn, srv, &ei), KSF_OK);
    ksft_service_start(svc, srv, ksft_scaled_ms(20000));
    return srv;
}

/* Handler runs of the pipelining test, and the server's replies acknowledged when the
 * last of them ran. */
static atomic_uint pipe_runs;
static atomic_ullong pipe_acked_at_last_run;

static ksf_err
pipe_echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    ksf_server_stats s;
    ksf_server_get_stats(ksf_ctx_user(ctx), &s);
    if (atomic_fetch_add(&pipe_runs, 1) + 1 == PIPE_REQUESTS) {
        atomic_store(&pipe_acked_at_last_run, s.replies);
    }
    return ksft_echo(ctx, data, reply);
}

KSFT_TEST(test_latency_replies_pipelined, 90)
{
    /* Concurrency 1 and a broker that holds every Produce response 5 s: a slot held
     * until the acknowledgement lets the second handler run only ~5 s after the first,
     * so the last one runs with 7 replies acknowledged. Released when the handler is
     * done, all 8 run at once, before any acknowledgement. */
    KSFT_NEEDS_MOCK("a Produce response delay");
    ksft_broker *b = broker_with_requests("lat.pipe", PIPE_REQUESTS, false, PIPE_REQUESTS,
                                          PIPE_ACK_DELAY_MS);
    ksft_service service;
    ksf_server *srv = start_reader(&service, b, "lat.pipe", pipe_echo, "1", NULL, NULL);

    ksft_deadline deadline = ksft_deadline_in(PIPE_ACK_DELAY_MS * 4);
    while (atomic_load(&pipe_runs) < PIPE_REQUESTS && ksft_deadline_wait(&deadline)) {
    }
    unsigned runs = atomic_load(&pipe_runs);
    ck_assert_msg(runs == PIPE_REQUESTS,
                  "%u of %d handlers ran in %d ms: the slot waited for the broker", runs,
                  PIPE_REQUESTS, ksft_scaled_ms(PIPE_ACK_DELAY_MS * 4));
    ck_assert_msg(atomic_load(&pipe_acked_at_last_run) == 0,
                  "the last handler ran after %llu replies were acknowledged: the slot "
                  "waited for the broker",
                  (unsigned long long)atomic_load(&pipe_acked_at_last_run));

    /* Every reply arrives once, in order, with its request's value. */
    ksft_collector *c = ksft_collector_new(ksft_broker_address(b), "lat.pipe.reply", 0);
    deadline = ksft_deadline_in(PIPE_ACK_DELAY_MS * 6);
    while (ksft_collector_poll(c, 100) < PIPE_REQUESTS && ksft_deadline_wait(&deadline)) {
    }
    ck_assert_uint_eq(ksft_collector_count(c), PIPE_REQUESTS);
    for (size_t i = 0; i < PIPE_REQUESTS; i++) {
        const ksft_msg *m = ksft_collector_at(c, i);
        const void *id;
        size_t id_len;
        char want_id[32], want_value[32];
        snprintf(want_id, sizeof want_id, "lat.pipe-%zu", i);
        snprintf(want_value, sizeof want_value, "{\"i\":%zu}", i);
        ck_assert(ksft_msg_header(m, "kafka_correlationId", &id, &id_len));
        ck_assert_uint_eq(id_len, strlen(want_id));
        ck_assert(!memcmp(id, want_id, id_len));
        ck_assert_uint_eq(m->len, strlen(want_value));
        ck_assert(!memcmp(m->value, want_value, m->len));
    }
    ksft_collector_destroy(c);
    ksf_server_stats s;
    ksf_server_get_stats(srv, &s);
    ck_assert_uint_eq(s.requests, PIPE_REQUESTS);
    ck_assert_uint_eq(s.reply_failures, 0);
    ksft_service_stop(&service);
    ksft_broker_stop(b);
}
END_TEST

/* Handler runs of the backlog test. */
static atomic_uint backlog_runs;

static ksf_err
backlog_echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    atomic_fetch_add(&backlog_runs, 1);
    return ksft_echo(ctx, data, reply);
}

/*
 * The other side of releasing the slot early: replies waiting for the broker still
 * count against the partition's window (server.partition.window and .bytes), which
 * pauses fetching when it is full. BACKLOG_REQUESTS requests wait on one partition,
 * each in its own batch (the mock returns one batch per fetch, so the server cannot
 * take more than one fetch's worth past its pause), and the broker holds its Produce
 * responses for @p hold_ms. Returns how many handlers ran before the first
 * acknowledgement; afterwards every request must be answered once.
 */
static unsigned
backlog_runs_before_ack(const char *topic, const char *window, const char *window_bytes,
                        int hold_ms, uint64_t *pauses)
{
    atomic_store(&backlog_runs, 0);
    ksft_broker *b =
        broker_with_requests(topic, BACKLOG_REQUESTS, true, BACKLOG_DELAYED, hold_ms);
    ksft_service service;
    ksf_server *srv =
        start_reader(&service, b, topic, backlog_echo, NULL, window, window_bytes);

    ksf_server_stats s = {0};
    ksft_deadline deadline = ksft_deadline_in(hold_ms * 4);
    while (s.replies == 0 && ksft_deadline_wait(&deadline)) {
        ksf_server_get_stats(srv, &s);
    }
    unsigned before_ack = atomic_load(&backlog_runs);
    ck_assert_msg(s.replies > 0, "no reply acknowledged in %d ms",
                  ksft_scaled_ms(hold_ms * 4));

    /* Then everything is answered, each request once. */
    deadline = ksft_deadline_in(60000);
    while (s.replies < BACKLOG_REQUESTS && ksft_deadline_wait(&deadline)) {
        ksf_server_get_stats(srv, &s);
    }
    ck_assert_uint_eq(s.replies, BACKLOG_REQUESTS);
    ck_assert_uint_eq(s.requests, BACKLOG_REQUESTS);
    ck_assert_uint_eq(atomic_load(&backlog_runs), BACKLOG_REQUESTS);
    ck_assert_uint_eq(s.reply_failures, 0);
    *pauses = s.partition_pauses;
    ksft_service_stop(&service);
    ksft_broker_stop(b);
    return before_ack;
}

KSFT_TEST(test_latency_ack_backlog_bounded, 120)
{
    /* A window of 256 messages: the handlers stop short of 2 x 256 before the first
     * acknowledgement (paused at 256 unacknowledged; what was queued then still
     * runs). */
    KSFT_NEEDS_MOCK("a Produce response delay");
    uint64_t pauses = 0;
    unsigned before_ack = backlog_runs_before_ack("lat.backlog", "256", NULL,
                                                  BACKLOG_ACK_DELAY_MS, &pauses);
    ck_assert_msg(before_ack >= 256 && before_ack < 2 * 256,
                  "%u handlers ran before the first acknowledgement (window 256)",
                  before_ack);
    /* 600 messages through a window of 256 that resumes at 64: at least one pause,
     * and no more than one per 192 messages that left the window. */
    ck_assert_msg(pauses >= 1 && pauses <= BACKLOG_REQUESTS / 192,
                  "%llu pauses of the partition", (unsigned long long)pauses);
}
END_TEST

KSFT_TEST(test_latency_ack_backlog_bytes, 120)
{
    /* A window of 1024 bytes: the values are {"i":N}, 7 bytes for N < 10, 8 below
     * 100, 9 above, so the first 126 hold exactly 1024 bytes and the partition pauses
     * there, well before its 4096 messages. */
    KSFT_NEEDS_MOCK("a Produce response delay");
    uint64_t pauses = 0;
    unsigned before_ack =
        backlog_runs_before_ack("lat.bytes", NULL, "1024", BACKLOG_ACK_DELAY_MS, &pauses);
    ck_assert_msg(before_ack >= 126 && before_ack < 2 * 126,
                  "%u handlers ran before the first acknowledgement (1024 bytes)",
                  before_ack);
    ck_assert_uint_ge(pauses, 1);
}
END_TEST

KSFT_TEST(test_latency_ack_backlog_default_window, 120)
{
    /* At the default window (4096) the whole backlog runs before the first
     * acknowledgement: a client with hundreds of requests in flight on one partition
     * (sticky partitioning puts them there) must not pause it. The old fixed window
     * of 256 paused it about 400 times a second under 256 requests in flight, each
     * resume refetching what had been fetched (issue 20). */
    KSFT_NEEDS_MOCK("a Produce response delay");
    uint64_t pauses = 0;
    unsigned before_ack = backlog_runs_before_ack(
        "lat.default", NULL, NULL, ksft_scaled_ms(BACKLOG_ACK_DELAY_MS), &pauses);
    ck_assert_uint_eq(before_ack, BACKLOG_REQUESTS);
    ck_assert_uint_eq(pauses, 0);
}
END_TEST

KSFT_TEST(test_latency_offsets_follow_acks, 90)
{
    /* At-least-once with reports served by the workers and offsets stored once per
     * batch of reports: a request's offset is committed only once its reply was
     * acknowledged. The broker holds the server's first Produce response (the first
     * reply, and whatever went with it) ACKS_HOLD_MS; the consumer commits every
     * 100 ms. Until that acknowledgement nothing may be committed (not even for the
     * later requests whose replies went out and were acknowledged in later Produce
     * requests), afterwards exactly ACKS_REQUESTS. */
    KSFT_NEEDS_MOCK("a Produce response delay");
    ksft_broker *b =
        broker_with_requests("lat.acks", ACKS_REQUESTS, false, 1, ACKS_HOLD_MS);
    const char *const kv[][2] = {
        {"consumer.auto.offset.reset", "earliest"},
        {"consumer.auto.commit.interval.ms", "100"},
    };
    ksf_config *cfg = ksft_config(b);
    ksft_config_set_all(cfg, kv, KSFT_NKV(kv));
    ksf_server *srv = ksft_server(cfg);
    ksf_config_destroy(cfg);
    const char *group = "nestjs-group-server"; /* the default group.id's server group */
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_server_on_message(srv, "lat.acks", ksft_echo, NULL, &ei),
                     KSF_OK);
    ksft_service service;
    ksft_service_start(&service, srv, ksft_scaled_ms(20000));
    const char *addr = ksft_broker_address(b);

    /* Replies are acknowledged in order (one reply partition, produced in offset
     * order): the committed offset never passes the replies acknowledged so far, and
     * is none at all while the first one is held. */
    ksf_server_stats s = {0};
    int held_checks = 0;
    ksft_deadline deadline = ksft_deadline_in(ACKS_HOLD_MS * 4);
    do {
        int64_t committed = ksft_committed(addr, group, "lat.acks", 0);
        ksf_server_get_stats(srv, &s); /* after: acknowledgements can only have grown */
        ck_assert_msg(committed <= (int64_t)s.replies,
                      "offset %lld committed with %llu repl%s acknowledged",
                      (long long)committed, (unsigned long long)s.replies,
                      s.replies == 1 ? "y" : "ies");
        held_checks += s.replies == 0;
    } while (s.replies < ACKS_REQUESTS && ksft_deadline_wait(&deadline));
    fprintf(stderr, "%d commit checks while the first reply was held\n", held_checks);
    ck_assert_int_gt(held_checks, 0);

    /* Then exactly every request, each answered once. */
    ck_assert_uint_eq(s.replies, ACKS_REQUESTS);
    ck_assert_int_eq(
        ksft_wait_committed(addr, group, "lat.acks", 1, ACKS_REQUESTS, 20000),
        ACKS_REQUESTS);
    ksf_server_get_stats(srv, &s);
    ck_assert_uint_eq(s.requests, ACKS_REQUESTS);
    ck_assert_uint_eq(s.reply_failures, 0);
    ksft_service_stop(&service); /* destroys srv */
    ck_assert_int_eq(ksft_committed(addr, group, "lat.acks", 0), ACKS_REQUESTS);
    ksft_broker_stop(b);
}
END_TEST

KSFT_MAIN("latency")
