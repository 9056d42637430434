/*
 * Faults while requests flow from ksf clients to ksf servers, on the embedded broker
 * with its fault injection: broker down and up, request errors, added round-trip time,
 * a server stopped mid-stream and restarted, a broker gone at stop, a deferred context
 * revoked by a rebalance. Each test counts every callback of every request (exactly
 * one each) and checks committed offsets against the replies on the reply topic.
 */
#include "broker.h"
#include "codec/wire.h"
#include "raw_kafka.h"
#include "service.h"

#include "suite.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATTERN "f.echo"
/* Served by nobody: a request to it keeps a client fetching (keep_listening). */
#define KEEPER "f.nobody"
#define REPLY_TOPIC "f.echo.reply"
#define PARTS 2
#define GROUP "nestjs-group-server"

static const char *const patterns[] = {PATTERN, NULL};

static void
connect_client(ksf_client *cli)
{
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_client_subscribe_to_response_of(cli, PATTERN, &ei), KSF_OK);
    /* Subscribed up front: a first send to it later would cost a reply-group
     * rebalance. */
    ck_assert_int_eq(ksf_client_subscribe_to_response_of(cli, KEEPER, &ei), KSF_OK);
    ck_assert_msg(ksf_client_connect(cli, 10000, &ei) == KSF_OK, "%s", ei.text);
}

/* What most cases run in: the broker, a server on its thread, a connected client and a
 * tally of its requests. Cases stop the server themselves, where the order matters. */
typedef struct fault_world {
    ksft_broker *b;
    ksf_config *cfg;
    ksft_service s;
    ksf_client *cli;
    ksft_tally t;
} fault_world;

/* The broker, the topics, and a configuration whose restarted servers see what
 * nobody committed. */
static void
world_open(fault_world *w)
{
    static const char *const settings[][2] = {{"consumer.auto.offset.reset", "earliest"}};
    *w = (fault_world){.b = ksft_broker_start()};
    ksft_broker_create_topic(w->b, PATTERN, PARTS);
    ksft_broker_create_topic(w->b, REPLY_TOPIC, 1);
    w->cfg = ksft_config(w->b);
    ksft_config_set_all(w->cfg, settings, KSFT_NKV(settings));
}

/* Then @p srv on its thread (ready within @p ready_ms), a connected client, and a
 * tally for @p n requests. */
static void
world_start(fault_world *w, ksf_server *srv, int ready_ms, size_t n)
{
    ksft_service_start(&w->s, srv, ready_ms);
    w->cli = ksft_client(w->cfg);
    connect_client(w->cli);
    ksft_tally_init(&w->t, n);
}

/* world_open and world_start with an echo server on the patterns: the usual world. */
static void
echo_world(fault_world *w, int ready_ms, size_t n)
{
    world_open(w);
    world_start(w, ksft_echo_server(w->cfg, patterns), ready_ms, n);
}

/* Everything open goes, in order; the client's destroy ends what it still waited for
 * with KSF_ECLOSED, which must not call any finished request's callback again. */
static void
world_close(fault_world *w)
{
    ksft_service_stop(&w->s);
    ksf_client_destroy(w->cli);
    ck_assert_uint_eq(atomic_load(&w->t.extra_calls), 0);
    ksft_tally_free(&w->t);
    ksf_config_destroy(w->cfg);
    ksft_broker_stop(w->b);
}

/* Read @p c until nothing new arrived for 300 ms (at least 1 s, at most 10 s): the
 * collector's consumer needs a moment to connect before the first fetch. */
static size_t
drain(ksft_collector *c)
{
    int64_t start = ksft_now_ms(), quiet_since = start;
    size_t n = ksft_collector_count(c);
    while (ksft_now_ms() - start < 10000) {
        size_t now = ksft_collector_poll(c, 50);
        if (now != n) {
            n = now;
            quiet_since = ksft_now_ms();
        } else if (ksft_now_ms() - quiet_since >= 300 && ksft_now_ms() - start >= 1000) {
            break;
        }
    }
    return n;
}

static void
on_keeper_any(const ksf_reply *r, void *user)
{
    (void)r;
    (void)user;
}

/* A client fetches replies only while something is in flight (idle, it pauses its
 * reply partitions), so a request to KEEPER, which nobody serves, keeps it listening
 * for late and duplicate replies. It ends with the client (KSF_ECLOSED). */
static void
keep_listening(ksf_client *cli)
{
    ksf_send_opts keep = {.timeout_ms = 60000};
    ck_assert_int_eq(ksf_client_send(cli, KEEPER, NULL, &keep, on_keeper_any, NULL, NULL),
                     KSF_OK);
}

static void
send_range(ksft_tally *t, ksf_client *cli, size_t from, size_t to, int timeout_ms)
{
    for (size_t i = from; i < to; i++) {
        ck_assert_int_eq(ksft_tally_send(t, cli, PATTERN, i, timeout_ms, 10000), KSF_OK);
    }
}

/* The group's commits on PATTERN once they add up to @p want (the topic is fresh, so
 * that is the messages below them), or the sum when 30 s (scaled) passed first. */
static int64_t
wait_committed(const fault_world *w, int64_t want)
{
    return ksft_wait_committed(ksft_broker_address(w->b), GROUP, PATTERN, PARTS, want,
                               30000);
}

/* Every request answered exactly once with its own value. */
static void
assert_all_ok(ksft_tally *t)
{
    ck_assert_uint_eq(ksft_tally_wait(t, t->n, 30000), t->n);
    unsigned ok = atomic_load(&t->ok);
    ck_assert_msg(ok == t->n,
                  "%u of %zu ok: %u timed out, %u closed, %u kafka, %u remote, %u other",
                  ok, t->n, atomic_load(&t->timedout), atomic_load(&t->closed),
                  atomic_load(&t->kafka), atomic_load(&t->remote),
                  atomic_load(&t->other));
    ck_assert_uint_eq(atomic_load(&t->extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&t->wrong_value), 0);
}

/*
 * The commit rule, checked from the outside: for every partition of the pattern topic,
 * every request below the group's committed offset has a reply on the reply topic.
 * Returns the number of requests below the committed offsets.
 */
static size_t
assert_commits_answered(ksft_broker *b)
{
    const char *addr = ksft_broker_address(b);
    ksft_collector *replies = ksft_collector_new(addr, REPLY_TOPIC, 0);
    drain(replies);
    size_t below = 0;
    for (int32_t p = 0; p < PARTS; p++) {
        int64_t committed = ksft_committed(addr, GROUP, PATTERN, p);
        ksft_collector *reqs = ksft_collector_new(addr, PATTERN, p);
        drain(reqs);
        for (size_t i = 0; i < ksft_collector_count(reqs); i++) {
            const ksft_msg *m = ksft_collector_at(reqs, i);
            const void *id;
            size_t len;
            if (m->offset >= committed) {
                continue;
            }
            ck_assert(ksft_msg_header(m, KSFI_HDR_CORRELATION_ID, &id, &len));
            char sid[64];
            snprintf(sid, sizeof sid, "%.*s", (int)len, (const char *)id);
            ck_assert_msg(ksft_collector_count_id(replies, sid) >= 1,
                          "%s[%d]@%lld committed without a reply", PATTERN, (int)p,
                          (long long)m->offset);
            below++;
        }
        ksft_collector_destroy(reqs);
    }
    ksft_collector_destroy(replies);
    return below;
}

/* Reply messages on the reply topic: each is one callback or one stray counted in the
 * client's stats; nothing else. */
static void
assert_replies_accounted(ksft_broker *b, ksf_client *cli, size_t callbacks)
{
    ksft_collector *replies = ksft_collector_new(ksft_broker_address(b), REPLY_TOPIC, 0);
    drain(replies);
    size_t n = ksft_collector_count(replies);
    ksft_collector_destroy(replies);
    ksf_client_stats s;
    keep_listening(cli);
    ksft_deadline until = ksft_deadline_in(15000);
    do {
        ksf_client_get_stats(cli, &s);
        if (callbacks + s.duplicate_replies + s.late_replies + s.unknown_replies >= n) {
            break;
        }
    } while (ksft_deadline_wait(&until));
    ck_assert_uint_eq(s.unknown_replies, 0);
    ck_assert_uint_eq(callbacks + s.duplicate_replies + s.late_replies, n);
}

/* Stop the server, check that every one of the @p n requests' replies is accounted
 * for, and close the world. Returns how many answered requests had their offsets
 * committed (assert_commits_answered), which each case bounds its own way. */
static size_t
world_finish(fault_world *w, size_t n)
{
    ksft_service_stop(&w->s);
    size_t committed = assert_commits_answered(w->b);
    assert_replies_accounted(w->b, w->cli, n);
    world_close(w);
    return committed;
}

/* ---- broker down and up while requests flow ------------------------------------- */

#define DOWN_N 200

KSFT_TEST(test_faults_broker_down_up, 60)
{
    KSFT_NEEDS_MOCK("taking the broker down and up; real Kafka: test_failover");
    fault_world w;
    echo_world(&w, 20000, DOWN_N);

    send_range(&w.t, w.cli, 0, DOWN_N / 2, 30000);
    ck_assert_uint_ge(ksft_tally_wait(&w.t, DOWN_N / 4, 10000), DOWN_N / 4);
    ksft_broker_set_down(w.b, true);
    send_range(&w.t, w.cli, DOWN_N / 2, DOWN_N, 30000); /* queued while it is down */
    ksft_sleep_ms(2000);                                /* the outage under test */
    ksft_broker_set_down(w.b, false);
    assert_all_ok(&w.t);
    /* Once the coordinator is back, the periodic commit covers every answered request
     * (the stop's own commit is bounded and may give up while librdkafka reconnects). */
    ck_assert_int_eq(wait_committed(&w, DOWN_N), DOWN_N);
    ck_assert_uint_eq(world_finish(&w, DOWN_N), DOWN_N);
}
END_TEST

/* ---- request errors on every API the request path uses ------------------------- */

#define ERR_N 200

KSFT_TEST(test_faults_request_errors, 60)
{
    KSFT_NEEDS_MOCK("injected request errors");
    fault_world w;
    world_open(&w);
    rd_kafka_mock_cluster_t *mc = ksft_broker_mock(w.b);
    /* API keys (Kafka protocol): Fetch 1, OffsetCommit 8, JoinGroup 11, Heartbeat 12.
     * All retriable: the request path must ride them out. Produce errors: below. */
    rd_kafka_mock_push_request_errors(mc, 11, 2,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
    world_start(&w, ksft_echo_server(w.cfg, patterns), 30000, ERR_N);
    send_range(&w.t, w.cli, 0, ERR_N / 4, 30000);
    rd_kafka_mock_push_request_errors(mc, 1, 3,
                                      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
                                      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
    rd_kafka_mock_push_request_errors(mc, 8, 2, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE);
    rd_kafka_mock_push_request_errors(mc, 12, 2, RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE);
    send_range(&w.t, w.cli, ERR_N / 4, ERR_N, 30000);
    assert_all_ok(&w.t);
    ck_assert_uint_le(world_finish(&w, ERR_N), ERR_N);
}
END_TEST

/* ---- a request the broker refuses: its delivery report fails it ----------------- */

/* A request's delivery report does not wake the client's reply thread (the reply
 * will); one that says the request was refused must still fail it at once, not at the
 * thread's next wake-up: it sleeps no longer than reports may wait (REPORT_WAIT_MS).
 * The only request in flight, so no reply wakes the thread earlier. */
KSFT_TEST(test_faults_refused_request, 60)
{
    KSFT_NEEDS_MOCK("an injected Produce error");
    fault_world w;
    echo_world(&w, 30000, 1);
    ksf_errinfo ei = {0};
    ksft_outcome c = {0};
    ksf_send_opts o = {.raw_value = "{}", .raw_len = 2, .timeout_ms = 30000};
    /* One round trip first: the producer knows the topic, the thread sleeps. */
    ck_assert_int_eq(ksf_client_send(w.cli, PATTERN, NULL, &o, ksft_outcome_cb, &c, &ei),
                     KSF_OK);
    ksft_outcome_wait(&c, 10000);
    ck_assert_int_eq(c.err, KSF_OK);
    ksft_outcome_reset(&c);
    /* A permanent error for this message only (not retried, nothing cached for the
     * topic): the report carries it. */
    rd_kafka_mock_push_request_errors(ksft_broker_mock(w.b), 0 /* Produce */, 1,
                                      RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    int64_t sent = ksft_now_ms();
    ck_assert_int_eq(ksf_client_send(w.cli, PATTERN, NULL, &o, ksft_outcome_cb, &c, &ei),
                     KSF_OK);
    ksft_outcome_wait(&c,
                      10000); /* a third of its deadline: fails if only that ends it */
    ck_assert_int_eq(c.err, KSF_EKAFKA);
    ck_assert_str_eq(c.text, "request to " PATTERN " failed: Broker: Message size too "
                             "large");
    /* Well inside the reply thread's longest sleep (1 s), which would end it too. */
    int64_t took = c.at_ms - sent;
    ck_assert_msg(took < ksft_scaled_ms(400), "the refused request failed after %lld ms",
                  (long long)took);
    ksft_outcome_reset(&c);
    /* The client goes on. */
    ksf_err e = ksf_client_send(w.cli, PATTERN, NULL, &o, ksft_outcome_cb, &c, &ei);
    ck_assert_msg(e == KSF_OK, "%s: %s", ksf_strerror(e), ei.text);
    ksft_outcome_wait(&c, 10000);
    ck_assert_int_eq(c.err, KSF_OK);
    ksft_outcome_reset(&c);
    world_close(&w);
}
END_TEST

/* Where the requests of a run are on the broker: how many reached the request topic
 * (all partitions) and how many of those have a reply on the reply topic. */
typedef struct topic_census {
    size_t requests, answered;
} topic_census;

static topic_census
census(ksft_broker *b)
{
    const char *addr = ksft_broker_address(b);
    ksft_collector *replies = ksft_collector_new(addr, REPLY_TOPIC, 0);
    drain(replies);
    topic_census c = {0};
    for (int32_t p = 0; p < PARTS; p++) {
        ksft_collector *reqs = ksft_collector_new(addr, PATTERN, p);
        drain(reqs);
        for (size_t i = 0; i < ksft_collector_count(reqs); i++) {
            const void *id;
            size_t len;
            ck_assert(ksft_msg_header(ksft_collector_at(reqs, i), KSFI_HDR_CORRELATION_ID,
                                      &id, &len));
            char sid[64];
            snprintf(sid, sizeof sid, "%.*s", (int)len, (const char *)id);
            c.requests++;
            c.answered += ksft_collector_count_id(replies, sid) >= 1;
        }
        ksft_collector_destroy(reqs);
    }
    ksft_collector_destroy(replies);
    return c;
}

/* Produce errors on the idempotent producers. Every request still gets exactly one
 * callback with its own value, and every request that reached the request topic is
 * answered there. But with librdkafka 2.0.2 and the mock, now and then (one run in
 * three under ASan in stop 14, 0 of 33 runs in stop 17, 4 requests once in CI) a few
 * requests produced around an injected REQUEST_TIMED_OUT / NOT_ENOUGH_REPLICAS did
 * not reach the request topic within their 30 s: the caller got KSF_ETIMEDOUT. Not
 * diagnosed (see docs/reliability.md): the census below says on failure where the
 * timed-out requests were, and this case bounds the ones that never reached the
 * topic while asserting the server's side exactly. */
#define PRODUCE_STALL_MAX 8

KSFT_TEST(test_faults_produce_errors, 90)
{
    KSFT_NEEDS_MOCK("injected Produce errors");
    fault_world w;
    echo_world(&w, 30000, ERR_N);
    send_range(&w.t, w.cli, 0, ERR_N / 4, 30000);
    rd_kafka_mock_push_request_errors(ksft_broker_mock(w.b), 0 /* Produce */, 3,
                                      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
    send_range(&w.t, w.cli, ERR_N / 4, ERR_N, 30000);
    ck_assert_uint_eq(ksft_tally_wait(&w.t, w.t.n, 60000), w.t.n);
    unsigned ok = atomic_load(&w.t.ok), timedout = atomic_load(&w.t.timedout);
    ck_assert_uint_eq(atomic_load(&w.t.extra_calls), 0);
    ck_assert_uint_eq(atomic_load(&w.t.wrong_value), 0);
    ck_assert_uint_eq(ok + timedout, w.t.n);
    /* The server answers every request that reached its topic (a late one included,
     * given time). */
    topic_census c = census(w.b);
    for (ksft_deadline d = ksft_deadline_in(10000);
         c.answered < c.requests && ksft_deadline_wait(&d);) {
        c = census(w.b);
    }
    ck_assert_msg(c.answered == c.requests && c.requests <= w.t.n && ok <= c.requests &&
                      w.t.n - c.requests <= PRODUCE_STALL_MAX &&
                      timedout <= PRODUCE_STALL_MAX,
                  "%u of %zu ok, %u timed out (at most %d may; kafka %u, remote %u, "
                  "other %u); on the "
                  "broker: %zu requests (%zu never reached the request topic, at most %d "
                  "may), %zu of them answered",
                  ok, w.t.n, timedout, PRODUCE_STALL_MAX, atomic_load(&w.t.kafka),
                  atomic_load(&w.t.remote), atomic_load(&w.t.other), c.requests,
                  w.t.n - c.requests, PRODUCE_STALL_MAX, c.answered);
    ksft_service_stop(&w.s);
    world_close(&w);
}
END_TEST

/* ---- added round-trip time: timeouts, then late replies only in the stats -------- */

#define RTT_N 40

static atomic_int keeper_calls;

static void
on_keeper(const ksf_reply *r, void *user)
{
    (void)r;
    (void)user;
    atomic_fetch_add(&keeper_calls, 1);
}

KSFT_TEST(test_faults_rtt, 60)
{
    KSFT_NEEDS_MOCK("an injected round-trip time");
    fault_world w;
    world_open(&w);
    /* The server must run the requests that time out, so that their replies come late:
     * without this it may skip them as expired (their ksf_deadline passes on the way,
     * docs/deadlines.md), depending on how long the 250 ms round trips take. */
    static const char *const skew[][2] = {{"server.deadline.skew.ms", "60000"}};
    ksft_config_set_all(w.cfg, skew, KSFT_NKV(skew));
    world_start(&w, ksft_echo_server(w.cfg, patterns), 20000, RTT_N);
    ck_assert_int_eq(rd_kafka_mock_broker_set_rtt(ksft_broker_mock(w.b), 1, 250), 0);
    /* Even requests may wait 20 s, odd ones 150 ms: less than one round trip. */
    for (size_t i = 0; i < RTT_N; i++) {
        ck_assert_int_eq(
            ksft_tally_send(&w.t, w.cli, PATTERN, i, i % 2 ? 150 : 20000, 1000), KSF_OK);
    }
    ck_assert_uint_eq(ksft_tally_wait(&w.t, RTT_N, 40000), RTT_N);
    ck_assert_uint_eq(atomic_load(&w.t.ok), RTT_N / 2);
    ck_assert_uint_eq(atomic_load(&w.t.timedout), RTT_N / 2);
    ck_assert_uint_eq(atomic_load(&w.t.extra_calls), 0);
    for (size_t i = 0; i < RTT_N; i++) {
        ck_assert_uint_eq(atomic_load(&w.t.calls[i]), 1);
    }
    /* The late replies arrive and are counted, never delivered. A client fetches
     * replies only while something is in flight (idle, it pauses its reply
     * partitions), so one request to a pattern nobody serves keeps it listening. */
    ksf_send_opts keep = {.timeout_ms = 15000};
    ck_assert_int_eq(ksf_client_send(w.cli, KEEPER, NULL, &keep, on_keeper, NULL, NULL),
                     KSF_OK);
    ksf_client_stats st;
    ksft_deadline until = ksft_deadline_in(10000);
    do {
        ksf_client_get_stats(w.cli, &st);
    } while (st.late_replies < RTT_N / 2 && ksft_deadline_wait(&until));
    ck_assert_uint_eq(st.late_replies, RTT_N / 2);
    ck_assert_uint_eq(st.timeouts, RTT_N / 2);
    ck_assert_int_eq(atomic_load(&keeper_calls), 0); /* still waiting: it kept us up */
    ck_assert_uint_eq(st.replies, RTT_N / 2);
    ck_assert_uint_eq(atomic_load(&w.t.extra_calls), 0);
    ksf_server_stats ss;
    ksf_server_get_stats(w.s.srv, &ss);
    ck_assert_uint_eq(ss.expired, 0);
    ck_assert_int_eq(rd_kafka_mock_broker_set_rtt(ksft_broker_mock(w.b), 1, 0), 0);
    /* The periodic commit covers every answered request (the stop's own commit is
     * bounded and may give up on a loaded machine, see broker_down_up). */
    ck_assert_int_eq(wait_committed(&w, RTT_N), RTT_N);
    ksft_service_stop(&w.s);
    ck_assert_uint_eq(assert_commits_answered(w.b), RTT_N);
    world_close(&w);
}
END_TEST

/* ---- a server stopped mid-stream and restarted ---------------------------------- */

#define RESTART_N 400

static ksf_err
h_slowish(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    ksft_sleep_ms(20); /* work in progress when the stop comes */
    return ksft_echo(ctx, data, reply);
}

static ksf_server *
slowish_server(ksf_config *cfg)
{
    ksf_server *srv = NULL;
    ck_assert_int_eq(ksf_server_new(&srv, cfg, NULL), KSF_OK);
    ck_assert_int_eq(ksf_server_on_message(srv, PATTERN, h_slowish, NULL, NULL), KSF_OK);
    return srv;
}

KSFT_TEST(test_faults_server_restart, 60)
{
    fault_world w;
    world_open(&w);
    world_start(&w, slowish_server(w.cfg), 20000, RESTART_N);
    send_range(&w.t, w.cli, 0, RESTART_N / 2, 60000);
    ksft_tally_wait(&w.t, RESTART_N / 8, 10000);
    ksft_service_stop(
        &w.s); /* mid-stream: some answered, some queued, some not fetched */
    /* Every committed request has its reply on the reply topic (checked there, one by
     * one); the client may not have read the last of those replies yet, so it is given
     * time to: a commit that ran ahead of its reply would leave the caller waiting. */
    size_t committed = assert_commits_answered(w.b);
    ck_assert_uint_lt(committed, RESTART_N / 2);
    ck_assert_uint_ge(ksft_tally_wait(&w.t, committed, 10000), committed);
    send_range(&w.t, w.cli, RESTART_N / 2, RESTART_N, 60000); /* while no server runs */
    ksft_service_start(&w.s, slowish_server(w.cfg), 20000);
    assert_all_ok(&w.t);
    ck_assert_uint_eq(world_finish(&w, RESTART_N), RESTART_N);
}
END_TEST

/* ---- stop when the broker is already gone: bounded --------------------------------- */

KSFT_TEST(test_faults_stop_broker_gone, 60)
{
    KSFT_NEEDS_MOCK("taking the broker down");
    fault_world w;
    echo_world(&w, 20000, 20);
    send_range(&w.t, w.cli, 0, 20, 30000);
    assert_all_ok(&w.t);
    ksft_broker_set_down(w.b, true);
    int64_t t0 = ksft_now_ms();
    ksft_service_stop(&w.s);
    int64_t took = ksft_now_ms() - t0;
    fprintf(stderr, "stop with the broker gone: %lld ms\n", (long long)took);
    ck_assert_msg(took < 9000, "stop took %lld ms with the broker gone", (long long)took);
    t0 = ksft_now_ms();
    ksf_client_destroy(w.cli);
    w.cli = NULL;
    took = ksft_now_ms() - t0;
    ck_assert_msg(took < 8000, "client destroy took %lld ms with the broker gone",
                  (long long)took);
    world_close(&w);
}
END_TEST

/* ---- a deferred context revoked by a rebalance and never finished ---------------- */

static atomic_int deferred_seen;

static ksf_err
h_defer_forever(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    /* The first delivery of each message is deferred and never finished; a redelivery
     * after the rebalance is answered, so no stop has to wait for it. */
    if (atomic_fetch_add(&deferred_seen, 1) >= PARTS) {
        return ksft_echo(ctx, data, reply);
    }
    return ksf_ctx_defer(ctx);
}

/* 150 s: it takes ~52 s on an idle machine (two group joins on the mock, then a revoke
 * that waits for the deferred contexts before it gives them up) and passed 90 s with
 * the whole suite running beside it on two cores. */
KSFT_TEST(test_faults_deferred_revoked, 150)
{
    fault_world w;
    world_open(&w);
    ksf_server *srv = NULL;
    ck_assert_int_eq(ksf_server_new(&srv, w.cfg, NULL), KSF_OK);
    ck_assert_int_eq(ksf_server_on_message(srv, PATTERN, h_defer_forever, NULL, NULL),
                     KSF_OK);
    ksft_service a = {0}, other = {0};
    ksft_service_start(&a, srv, 20000);
    ksft_producer *p = ksft_producer_new(ksft_broker_address(w.b));
    for (int32_t part = 0; part < PARTS; part++) {
        char id[16];
        snprintf(id, sizeof id, "d-%d", (int)part);
        ksft_send_request(p, PATTERN, part, id, REPLY_TOPIC, 0, "{}", 2, true);
    }
    ksft_deadline until = ksft_deadline_in(10000);
    while (atomic_load(&deferred_seen) < PARTS && ksft_deadline_wait(&until)) {
    }
    ck_assert_int_ge(atomic_load(&deferred_seen), PARTS);
    /* A second member joins: the first one's partitions are revoked (the revoke waits
     * for the deferred contexts, then gives up on them). */
    ksft_service_start(&other, ksft_echo_server(w.cfg, patterns), 40000);
    /* The first member now holds only the orphans: its stop has nothing to wait for,
     * and its destroy must free them (ASan/valgrind would report the leak). */
    ksft_service_stop(&a);
    ksft_service_stop(&other);
    ksft_producer_destroy(p);
    world_close(&w);
}
END_TEST

KSFT_MAIN("faults")
