/*
 * Group churn under load (issue 17): two servers share a group and serve a steady
 * stream of requests while a third server starts and stops 5 times. With cooperative
 * incremental rebalancing (ksf's default, docs/server.md "Rebalancing") only the
 * partitions that change owner stop; the others keep being served throughout.
 * - churn: open-loop load (a request every LOAD_EVERY_MS, 60 s timeouts, so a stalled
 *   partition cannot hold back the others' requests) on CHURN_PARTITIONS partitions;
 *   each cycle starts a third server, waits until it answered requests, and stops it
 *   (a LeaveGroup). Ownership comes from the servers' "partitions assigned/revoked"
 *   log records; per partition the test records the longest gap between two answered
 *   requests while it stayed with its server and across a move, and prints the table.
 *   Asserted: every request answered exactly once with its own value, every server's
 *   run returned KSF_OK, at least half the partitions never moved, and no partition
 *   that stayed with its server went UNMOVED_GAP_BOUND_MS without a reply.
 * On real Kafka the servers use librdkafka's default 3 s heartbeat (a member hears of
 * a rebalance at its next heartbeat). KSFT_CHURN_STRATEGY=range,roundrobin (the
 * eager strategy ksf used before) shows what the test guards against: measured, 0 of
 * 8 partitions never moved and those that stayed went ~5 s (mock) without a reply;
 * the assertions fail. KSFT_CHURN_TRACE=1 prints every assignment and revocation.
 */
#include "broker.h"
#include "service.h"
#include "settings.h"

#include "suite.h"

#include <check.h>
#include <jansson.h>
#include <ksf/ksf.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATTERN "churn.echo"
#define CHURN_PARTITIONS 8
#define CHURN_CYCLES 5
#define LOAD_EVERY_MS 4 /* about 250 requests/s, about 30 per partition per second */
#define REQUEST_TIMEOUT_MS 60000
#define MAX_REQ 60000
#define UNMOVED_GAP_BOUND_MS 2000
#define NSERVERS (2 + CHURN_CYCLES) /* A, B, and each third server started */

typedef struct part_stat {
    int64_t last_ms;     /* the last reply's arrival; 0 before the first */
    unsigned last_moves; /* moves when it arrived */
    int64_t kept_gap;    /* the longest time between two replies with no move between */
    int64_t kept_at_ms;  /* when it ended */
    int64_t move_gap;    /* the longest time between two replies across a move */
    unsigned replies;
    int owner;       /* the server it was last assigned to; -1 before */
    int prev;        /* the server it was last revoked from; -1 before */
    unsigned moves;  /* assignments to a server other than the previous owner */
    unsigned owners; /* bit s: server s was assigned the partition */
} part_stat;

typedef struct churn {
    ksf_client *cli;
    pthread_t thread;
    atomic_bool stop;
    atomic_uint sent, ok, failed, wrong, extra, in_flight;
    atomic_uint by_server[3]; /* replies A, B and the third servers ran */
    atomic_uchar calls[MAX_REQ];
    pthread_mutex_t m; /* guards parts and failure */
    part_stat parts[CHURN_PARTITIONS];
    char failure[512];
} churn;

static churn load;

typedef struct req_ctx {
    unsigned i;
} req_ctx;
static req_ctx req_ctxs[MAX_REQ];

static int server_ids[NSERVERS];

/* The reply says which partition the request came in on and which server ran it. */
static ksf_err
echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    *reply = json_pack("{s:O?, s:i, s:i}", "d", data, "p", (int)ksf_ctx_partition(ctx),
                       "s", *(const int *)ksf_ctx_user(ctx));
    return *reply ? KSF_OK : KSF_ENOMEM;
}

static void
on_reply(const ksf_reply *r, void *user)
{
    unsigned i = ((req_ctx *)user)->i;
    if (atomic_fetch_add(&load.calls[i], 1) != 0) {
        atomic_fetch_add(&load.extra, 1);
    }
    int64_t t = ksft_now_ms();
    pthread_mutex_lock(&load.m);
    if (r->err == KSF_OK) {
        json_t *d = json_object_get(r->value, "d");
        int p = (int)json_integer_value(json_object_get(r->value, "p"));
        int s = (int)json_integer_value(json_object_get(r->value, "s"));
        if (json_integer_value(json_object_get(d, "i")) != (json_int_t)i || p < 0 ||
            p >= CHURN_PARTITIONS || s < 0 || s >= NSERVERS) {
            atomic_fetch_add(&load.wrong, 1);
        } else {
            part_stat *ps = &load.parts[p];
            int64_t gap = ps->last_ms ? t - ps->last_ms : 0;
            if (ps->moves != ps->last_moves) {
                ps->move_gap = gap > ps->move_gap ? gap : ps->move_gap;
            } else if (gap > ps->kept_gap) {
                ps->kept_gap = gap;
                ps->kept_at_ms = t;
            }
            ps->last_ms = t;
            ps->last_moves = ps->moves;
            ps->replies++;
            atomic_fetch_add(&load.by_server[s < 2 ? s : 2], 1);
        }
        atomic_fetch_add(&load.ok, 1);
    } else {
        if (!load.failure[0]) {
            snprintf(load.failure, sizeof load.failure, "request %u: %s: %.300s", i,
                     ksf_strerror(r->err), r->text);
        }
        atomic_fetch_add(&load.failed, 1);
    }
    pthread_mutex_unlock(&load.m);
    atomic_fetch_sub(&load.in_flight, 1);
}

/* Open loop: one request every LOAD_EVERY_MS whatever is outstanding, so requests of
 * the partitions that still serve keep arriving while others wait for a new owner. */
static void *
load_main(void *arg)
{
    (void)arg;
    int64_t next = ksft_now_ms();
    for (unsigned i = 0; i < MAX_REQ && !atomic_load(&load.stop); i++) {
        req_ctxs[i].i = i;
        json_t *v = json_pack("{s:i}", "i", (int)i);
        ksf_send_opts o = {.timeout_ms = REQUEST_TIMEOUT_MS};
        ksf_errinfo ei = {0};
        atomic_fetch_add(&load.in_flight, 1);
        ksf_err e =
            ksf_client_send(load.cli, PATTERN, v, &o, on_reply, &req_ctxs[i], &ei);
        json_decref(v);
        if (e != KSF_OK) {
            atomic_fetch_sub(&load.in_flight, 1);
            pthread_mutex_lock(&load.m);
            snprintf(load.failure, sizeof load.failure, "send %u: %s: %.300s", i,
                     ksf_strerror(e), ei.text);
            pthread_mutex_unlock(&load.m);
            atomic_fetch_add(&load.failed, 1);
            break;
        }
        atomic_fetch_add(&load.sent, 1);
        next += LOAD_EVERY_MS;
        int64_t wait = next - ksft_now_ms();
        if (wait > 0) {
            ksft_sleep_ms((int)wait); /* pacing the load, not synchronisation */
        }
    }
    return NULL;
}

/* Who owns which partition, from the servers' "partitions assigned" log records
 * (field partitions: "churn.echo[3] churn.echo[5]"): the assignment, not who happened
 * to answer, so a partition revoked and given back to the same server (what an eager
 * rebalance does) counts as kept, and one that went to the third server and back
 * counts as moved even if the third server answered nothing on it. */
static void
on_log(void *user, ksf_log_level level, const char *component, const char *message,
       const ksf_log_field *fields, size_t nfields)
{
    (void)level;
    int s = *(const int *)user;
    if (getenv("KSFT_CHURN_TRACE") && !strcmp(component, "server")) {
        for (size_t f = 0; f < nfields; f++) {
            if (!strcmp(fields[f].key, "partitions")) {
                fprintf(stderr, "%lld server %c: %s: %s\n", (long long)ksft_now_ms(),
                        'A' + s, message, fields[f].value);
            }
        }
    }
    bool assigned = !strcmp(message, "partitions assigned");
    if (strcmp(component, "server") ||
        (!assigned && strcmp(message, "partitions revoked"))) {
        return;
    }
    for (size_t f = 0; f < nfields; f++) {
        if (strcmp(fields[f].key, "partitions")) {
            continue;
        }
        pthread_mutex_lock(&load.m);
        for (const char *q = fields[f].value; (q = strstr(q, PATTERN "[")) != NULL;) {
            q += strlen(PATTERN "[");
            int p = atoi(q);
            if (p < 0 || p >= CHURN_PARTITIONS) {
                continue;
            }
            part_stat *ps = &load.parts[p];
            if (!assigned && ps->owner == s) {
                ps->prev = s;
                ps->owner = -1;
            } else if (assigned) {
                int from = ps->owner >= 0 ? ps->owner : ps->prev;
                ps->moves += from >= 0 && from != s;
                ps->owner = s;
                ps->owners |= 1u << (s < 2 ? s : 2);
            }
        }
        pthread_mutex_unlock(&load.m);
    }
}

static ksf_server *
churn_server(ksf_config *cfg, int id)
{
    ksf_config_set_log_structured(cfg, on_log, &server_ids[id], KSF_LOG_INFO);
    ksf_server *srv = ksft_server(cfg);
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_on_message(srv, PATTERN, echo, &server_ids[id], &ei) ==
                      KSF_OK,
                  "%s", ei.text);
    return srv;
}

/* Wait until @p n replies more than @p base arrived (bounded). */
static void
wait_replies(unsigned n, int timeout_ms)
{
    ksft_deadline until = ksft_deadline_in(timeout_ms);
    while (atomic_load(&load.ok) < n && ksft_deadline_wait(&until) &&
           !atomic_load(&load.failed)) {
    }
    ck_assert_msg(atomic_load(&load.ok) >= n, "%u replies, expected %u within %d ms (%s)",
                  atomic_load(&load.ok), n, timeout_ms, load.failure);
}

KSFT_TEST(test_churn, 400)
{
    ksft_broker *b = ksft_broker_start();
    bool mock = ksft_broker_is_mock(b);
    ksft_broker_create_topic(b, PATTERN, CHURN_PARTITIONS);
    ksf_config *cfg = ksft_config(b);
    if (!mock) {
        /* librdkafka's default heartbeat: a member learns of a rebalance from its next
         * heartbeat, so an eager rebalance stops every partition of the group for up
         * to one interval (ksft_config's 500 ms hides that on a real broker). */
        ksft_config_set_kafka_all(cfg, KSF_KAFKA_CONSUMER,
                                  (const char *const[][2]){
                                      {"session.timeout.ms", "10000"},
                                      {"heartbeat.interval.ms", "3000"},
                                  },
                                  2);
    }
    const char *strategy = getenv("KSFT_CHURN_STRATEGY");
    strategy = strategy && *strategy ? strategy : NULL;
    if (strategy) {
        ksft_config_set_kafka_all(
            cfg, KSF_KAFKA_CONSUMER,
            (const char *const[][2]){{"partition.assignment.strategy", strategy}}, 1);
    }
    memset(&load, 0, sizeof load);
    pthread_mutex_init(&load.m, NULL);
    for (int p = 0; p < CHURN_PARTITIONS; p++) {
        load.parts[p].owner = load.parts[p].prev = -1;
    }
    for (int i = 0; i < NSERVERS; i++) {
        server_ids[i] = i;
    }

    ksft_service s[3];
    memset(s, 0, sizeof s);
    ksft_service_start(&s[0], churn_server(cfg, 0), 60000);
    ksft_service_start(&s[1], churn_server(cfg, 1), 60000);

    load.cli = ksft_client(cfg);
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_client_subscribe_to_response_of(load.cli, PATTERN, &ei) == KSF_OK &&
                      ksf_client_connect(load.cli, 60000, &ei) == KSF_OK,
                  "%s", ei.text);
    ck_assert_int_eq(pthread_create(&load.thread, NULL, load_main, NULL), 0);
    /* Both servers answer before the churn starts: with cooperative rebalancing the
     * second one's ready callback comes with its first, empty, assignment and its
     * share follows a rebalance later. What happened until then is not churn. */
    ksft_deadline until = ksft_deadline_in(60000);
    while (
        (atomic_load(&load.by_server[0]) < 20 || atomic_load(&load.by_server[1]) < 20) &&
        ksft_deadline_wait(&until) && !atomic_load(&load.failed)) {
    }
    ck_assert_msg(
        atomic_load(&load.by_server[0]) >= 20 && atomic_load(&load.by_server[1]) >= 20,
        "the two servers answered %u and %u requests within 60 s (%s)",
        atomic_load(&load.by_server[0]), atomic_load(&load.by_server[1]), load.failure);
    pthread_mutex_lock(&load.m);
    for (int p = 0; p < CHURN_PARTITIONS; p++) {
        part_stat *ps = &load.parts[p]; /* count from the churn on */
        *ps = (part_stat){.last_ms = ps->last_ms,
                          .owner = ps->owner,
                          .prev = ps->prev,
                          .owners = ps->owner >= 0 ? 1u << ps->owner : 0};
    }
    pthread_mutex_unlock(&load.m);

    int64_t churn_start = ksft_now_ms();
    for (int c = 0; c < CHURN_CYCLES; c++) {
        /* Start, wait until it answered requests (it owns partitions: with cooperative
         * rebalancing its first assignment is empty and the second one gives it its
         * share), then stop: a LeaveGroup. */
        unsigned before = atomic_load(&load.by_server[2]);
        ksft_service_start(&s[2], churn_server(cfg, 2 + c), 60000);
        until = ksft_deadline_in(60000);
        while (atomic_load(&load.by_server[2]) < before + 20 &&
               ksft_deadline_wait(&until)) {
        }
        ck_assert_msg(atomic_load(&load.by_server[2]) >= before + 20,
                      "cycle %d: the third server answered %u requests in 60 s", c,
                      atomic_load(&load.by_server[2]) - before);
        ksft_service_stop(&s[2]);
    }
    int64_t churn_ms = ksft_now_ms() - churn_start;
    /* Requests sent just before the last stop are answered by their new owner. */
    unsigned at_end = atomic_load(&load.sent);
    wait_replies(at_end, 60000);
    atomic_store(&load.stop, true);
    pthread_join(load.thread, NULL);
    wait_replies(atomic_load(&load.sent), REQUEST_TIMEOUT_MS + 10000);

    printf("churn on %s, %s: %d start/stops of a third server in %lld ms under %d "
           "requests/s; %u requests, %u answered, lost %u, duplicates delivered %u, "
           "wrong %u\n",
           mock ? "the mock" : "real Kafka", strategy ? strategy : "cooperative-sticky",
           CHURN_CYCLES, (long long)churn_ms, 1000 / LOAD_EVERY_MS,
           atomic_load(&load.sent), atomic_load(&load.ok),
           atomic_load(&load.sent) - atomic_load(&load.ok), atomic_load(&load.extra),
           atomic_load(&load.wrong));
    printf("partition  replies  owners  moves  longest gap kept ms  (ended at ms)  "
           "longest gap moving ms\n");
    int64_t worst_kept = 0, worst_move = 0;
    unsigned moves = 0;
    int unmoved = 0;
    for (int p = 0; p < CHURN_PARTITIONS; p++) {
        const part_stat *ps = &load.parts[p];
        char by[8] = "";
        for (int i = 0, o = 0; i < 3; i++) {
            if (ps->owners & (1u << i)) {
                by[o++] = (char)('A' + i);
            }
        }
        printf("%9d  %7u  %-6s  %5u  %19lld  %13lld  %21lld\n", p, ps->replies, by,
               ps->moves, (long long)ps->kept_gap,
               (long long)(ps->kept_at_ms - churn_start), (long long)ps->move_gap);
        worst_kept = ps->kept_gap > worst_kept ? ps->kept_gap : worst_kept;
        worst_move = ps->move_gap > worst_move ? ps->move_gap : worst_move;
        moves += ps->moves;
        unmoved += ps->moves == 0;
    }
    printf("longest gap: %lld ms while a partition stayed with its server, %lld ms "
           "across a move; %d of %d partitions never moved (%u moves)\n",
           (long long)worst_kept, (long long)worst_move, unmoved, CHURN_PARTITIONS,
           moves);
    fflush(stdout);

    ck_assert_msg(atomic_load(&load.failed) == 0, "%u failed: %s",
                  atomic_load(&load.failed), load.failure);
    unsigned sent = atomic_load(&load.sent);
    ck_assert_uint_eq(atomic_load(&load.ok), sent); /* none lost */
    ck_assert_uint_eq(atomic_load(&load.extra), 0); /* none delivered twice */
    ck_assert_uint_eq(atomic_load(&load.wrong), 0);
    for (unsigned i = 0; i < sent; i++) {
        ck_assert_uint_eq(atomic_load(&load.calls[i]), 1);
    }
    for (int p = 0; p < CHURN_PARTITIONS; p++) {
        ck_assert_msg(load.parts[p].replies > 0, "partition %d was never answered", p);
    }
    /* The churn moved partitions, but only the third server's share: 8 over 3
     * servers is 3 + 3 + 2, so a join moves 2 and the rest stay (an eager range
     * assignment reshuffles all 8: 0 never moved, measured). The ones that stayed
     * never stopped for a rebalance. */
    ck_assert_uint_gt(moves, 0);
    ck_assert_msg(unmoved >= CHURN_PARTITIONS / 2,
                  "%d of %d partitions never moved; expected at least %d (only the "
                  "third server's share moves)",
                  unmoved, CHURN_PARTITIONS, CHURN_PARTITIONS / 2);
    ck_assert_msg(worst_kept < UNMOVED_GAP_BOUND_MS,
                  "a partition that stayed with its server went %lld ms without a "
                  "reply; expected < %d ms (cooperative rebalancing keeps them "
                  "serving)",
                  (long long)worst_kept, UNMOVED_GAP_BOUND_MS);
    ksf_client_destroy(load.cli);
    ksft_service_stop(&s[1]);
    ksft_service_stop(&s[0]);
    ksf_config_destroy(cfg);
    pthread_mutex_destroy(&load.m);
    ksft_broker_stop(b);
}
END_TEST

/* ---- mixed_protocols: an eager member and a cooperative one in one group ---------- */

typedef struct refusal {
    pthread_mutex_t m;
    char text[1024]; /* the first error the second server logged */
} refusal;

static void
keep_error(void *user, ksf_log_level level, const char *component, const char *message)
{
    refusal *r = user;
    pthread_mutex_lock(&r->m);
    if (level <= KSF_LOG_ERROR && !strcmp(component, "server") && !r->text[0]) {
        snprintf(r->text, sizeof r->text, "%s", message);
    }
    pthread_mutex_unlock(&r->m);
}

static void *
run_main(void *arg)
{
    ksf_server_run(arg, NULL);
    return NULL;
}

/*
 * What a rolling upgrade from a ksf that used librdkafka's eager default meets (and a
 * NestJS server in the group: kafkajs's RoundRobinAssigner is a third protocol, same
 * answer, measured by hand): the broker refuses the newcomer's JoinGroup, and the
 * server says so and what to do. The mock does not check protocols (a mix aborts it).
 */
KSFT_TEST(test_mixed_protocols, 120)
{
    KSFT_NEEDS_REAL_KAFKA("the mock's group coordinator does not check protocols");
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, PATTERN, 2);
    ksf_config *cfg = ksft_config(b);
    ksft_service eager = {0};
    ksft_config_set_kafka_all(
        cfg, KSF_KAFKA_CONSUMER,
        (const char *const[][2]){{"partition.assignment.strategy", "range,roundrobin"}},
        1);
    ksft_service_start(&eager, churn_server(cfg, 0), 60000);

    ksf_config *coop = ksft_config(b); /* ksf's default strategy */
    refusal r = {.m = PTHREAD_MUTEX_INITIALIZER};
    ksf_config_set_log(coop, keep_error, &r, KSF_LOG_ERROR);
    ksf_server *srv = churn_server(coop, 1);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, run_main, srv), 0);
    ksft_deadline until = ksft_deadline_in(30000);
    for (bool got = false; !got && ksft_deadline_wait(&until);) {
        pthread_mutex_lock(&r.m);
        got = r.text[0] != '\0';
        pthread_mutex_unlock(&r.m);
    }
    ksf_server_stop(srv);
    pthread_join(t, NULL);
    ksf_server_stats st;
    ksf_server_get_stats(srv, &st);
    ksf_server_destroy(srv);
    printf("mixed_protocols: %s\n", r.text);
    ck_assert_str_eq(r.text,
                     "group nestjs-group-server refused this server "
                     "(INCONSISTENT_GROUP_PROTOCOL): its members use another partition "
                     "assignment protocol (NestJS/kafkajs servers, or servers with "
                     "another consumer.partition.assignment.strategy than this one's "
                     "cooperative-sticky); it gets no partitions until they leave: give "
                     "it its own group.id, or stop the others (see docs/server.md, "
                     "Rebalancing)");
    ck_assert_uint_eq(st.requests, 0);
    ksft_service_stop(&eager);
    ksf_config_destroy(coop);
    ksf_config_destroy(cfg);
    ksft_broker_stop(b);
}
END_TEST

KSFT_MAIN("churn")
