/* Reply-group membership against the embedded mock broker. Every mock rebalance after
 * the first join costs session_timeout - 1 s (5 s here): see KAFKA-GROUP-PROTOCOL.md 7.
 */
#include "broker.h"
#include "group/membership.h"

#include "service.h"
#include "suite.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC "math.sum.reply"
#define GROUP "ksf-test-client"

/* What one member's owner has heard, guarded by lock (callbacks run on its thread). */
typedef struct tmember {
    ksfi_membership *m;
    pthread_mutex_t lock;
    int32_t generation;
    char parts[64]; /* "0,3" */
    int32_t lowest;
    unsigned assigned, revoked, fatal;
    char fatal_text[KSF_ERRINFO_TEXT_SIZE];
} tmember;

static void
on_assigned(void *user, int32_t generation, const ksfi_gp_assignment *a)
{
    tmember *t = user;
    pthread_mutex_lock(&t->lock);
    t->generation = generation;
    t->parts[0] = '\0';
    for (size_t i = 0; i < a->count; i++) {
        for (size_t j = 0; j < a->topics[i].count; j++) {
            size_t off = strlen(t->parts);
            snprintf(t->parts + off, sizeof t->parts - off, "%s%d", off ? "," : "",
                     (int)a->topics[i].partitions[j]);
        }
    }
    t->lowest = ksfi_gp_assignment_min(a, TOPIC);
    t->assigned++;
    pthread_mutex_unlock(&t->lock);
}

static void
on_revoked(void *user, int32_t generation, const ksfi_gp_assignment *a,
           const char *reason)
{
    tmember *t = user;
    (void)generation, (void)a, (void)reason;
    pthread_mutex_lock(&t->lock);
    t->revoked++;
    t->parts[0] = '\0';
    t->lowest = -1;
    pthread_mutex_unlock(&t->lock);
}

static void
on_fatal(void *user, ksf_err err, const char *sentence)
{
    tmember *t = user;
    (void)err;
    pthread_mutex_lock(&t->lock);
    t->fatal++;
    snprintf(t->fatal_text, sizeof t->fatal_text, "%s", sentence);
    pthread_mutex_unlock(&t->lock);
}

/* Start a member; @p instance: its group.instance.id (NULL: a dynamic member). */
static void
start_as(tmember *t, ksft_broker *b, int64_t launch, const char *instance)
{
    static const ksfi_assignor_topic topics[] = {{TOPIC, 4}};
    ksfi_membership_config cfg = {
        ksft_broker_address(b),
        GROUP,
        "ksf-test",
        topics,
        1,
        6000,
        10000,
        500,
        launch,
        {ksf_log_stderr, NULL,
         getenv("KSFT_GROUP_INFO") ? KSF_LOG_INFO : KSF_LOG_WARNING}};
    cfg.group_instance_id = instance;
    ksfi_membership_callbacks cb = {on_assigned, on_revoked, on_fatal, NULL, t};
    ksf_errinfo ei = {0};
    memset(t, 0, sizeof *t);
    t->generation = -1;
    t->lowest = -1;
    pthread_mutex_init(&t->lock, NULL);
    ck_assert_msg(ksfi_membership_new(&t->m, &cfg, &cb, &ei) == KSF_OK, "%s", ei.text);
}

/* One of @p t's counters (t->fatal, t->revoked), read under its lock. */
static unsigned
read_locked(tmember *t, const unsigned *counter)
{
    pthread_mutex_lock(&t->lock);
    unsigned v = *counter;
    pthread_mutex_unlock(&t->lock);
    return v;
}

static void
start(tmember *t, ksft_broker *b, int64_t launch)
{
    start_as(t, b, launch, NULL);
}

static void
snapshot(tmember *t, int32_t *gen, char *parts, int32_t *lowest, unsigned *revoked)
{
    pthread_mutex_lock(&t->lock);
    *gen = t->generation;
    strcpy(parts, t->parts);
    *lowest = t->lowest;
    *revoked = t->revoked;
    pthread_mutex_unlock(&t->lock);
}

/*
 * Wait until the @p n members all hold a generation above @p after, the same one, with
 * the partitions in @p want (NULL entries: not checked). Returns that generation.
 */
static int32_t
wait_stable(tmember **ms, size_t n, int32_t after, const char *const *want,
            int timeout_ms)
{
    ksft_deadline deadline = ksft_deadline_in(timeout_ms);
    char got[8][64];
    int32_t gen[8], low;
    unsigned rev;
    for (;;) {
        bool ok = true;
        for (size_t i = 0; i < n; i++) {
            snapshot(ms[i], &gen[i], got[i], &low, &rev);
            ok = ok && gen[i] > after && gen[i] == gen[0] &&
                 (!want[i] || strcmp(got[i], want[i]) == 0);
        }
        if (ok) {
            return gen[0];
        }
        if (!ksft_deadline_wait(&deadline)) {
            for (size_t i = 0; i < n; i++) {
                fprintf(stderr,
                        "member %zu: generation %d partitions \"%s\" want \"%s\"\n", i,
                        (int)gen[i], got[i], want[i] ? want[i] : "*");
            }
            ck_abort_msg("the group did not settle within %d ms", timeout_ms);
        }
    }
}

static void
finish(tmember *t)
{
    ksfi_membership_close(t->m);
    pthread_mutex_destroy(&t->lock);
}

/* 3 join, a 4th joins, one leaves, one vanishes: nobody's lowest partition moves. */
KSFT_TEST(test_membership_rebalances, 80)
{
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, TOPIC, 4);
    tmember a, bb, c, d;
    /* One member at a time, each settled before the next starts: a member keeps its
     * previous partition (docs/reply-partitions.md), so what the three hold depends on
     * which generations they joined in. Started together, a real broker
     * (group.initial.rebalance.delay.ms=0) may form a first generation of whichever
     * joined first; the mock's initial delay always gathered all three. */
    start(&a, b, 1000);
    tmember *one[] = {&a};
    const char *w1[] = {"0,1,2,3"};
    int32_t g = wait_stable(one, 1, -1, w1, 15000);

    start(&bb, b, 2000);
    tmember *pair[] = {&a, &bb};
    const char *wp[] = {"0,2",
                        "1,3"}; /* a keeps 0, bb takes the first free, 2 and 3 dealt */
    g = wait_stable(pair, 2, g, wp, 15000);

    start(&c, b, 3000);
    tmember *three[] = {&a, &bb, &c};
    const char *w3[] = {"0,3", "1", "2"};
    g = wait_stable(three, 3, g, w3, 15000);

    start(&d, b, 4000);
    tmember *four[] = {&a, &bb, &c, &d};
    const char *w4[] = {"0", "1", "2", "3"};
    g = wait_stable(four, 4, g, w4, 15000);

    finish(&c); /* LeaveGroup: the others rebalance at once, not after a session */
    tmember *left[] = {&a, &bb, &d};
    const char *wl[] = {"0,2", "1", "3"};
    g = wait_stable(left, 3, g, wl, 12000);

    ksfi_membership_abandon(d.m); /* no LeaveGroup: the session timeout evicts it */
    pthread_mutex_destroy(&d.lock);
    tmember *two[] = {&a, &bb};
    const char *w2[] = {"0,2", "1,3"};
    int64_t t0 = ksft_now_ms();
    wait_stable(two, 2, g, w2, 20000);
    /* Eviction waited for the session (6000 ms), which runs from d's last heartbeat
     * (every 500 ms) before it stopped: a real broker evicts it 5.5-6 s later. */
    ck_assert_int_ge(ksft_now_ms() - t0, 6000 - 500);
    ck_assert_uint_eq(read_locked(&a, &a.revoked) + read_locked(&bb, &bb.revoked), 0);
    ksfi_membership_stats sa, sb;
    ksfi_membership_get_stats(a.m, &sa);
    ksfi_membership_get_stats(bb.m, &sb);
    ck_assert_int_eq(sa.leader + sb.leader, 1);
    ck_assert_uint_eq(sa.revocations + sb.revocations, 0);
    finish(&a);
    finish(&bb);
    ksft_broker_stop(b);
}
END_TEST

static void
total(tmember *t, ksfi_membership_stats *st)
{
    ksfi_membership_get_stats(t->m, st);
}

/* Coordinator errors injected on every group API are survived without losing a
 * partition. */
KSFT_TEST(test_membership_injected_errors, 70)
{
    KSFT_NEEDS_MOCK("injected coordinator errors");
    ksft_broker *b = ksft_broker_start();
    rd_kafka_mock_cluster_t *mc = ksft_broker_mock(b);
    ksft_broker_create_topic(b, TOPIC, 4);
    /* The first join already meets a moved and a loading coordinator. */
    rd_kafka_mock_push_request_errors(mc, KSFI_GP_API_JOIN_GROUP, 2,
                                      RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
    tmember a, bb;
    start(&a, b, 1000);
    start(&bb, b, 2000);
    tmember *two[] = {&a, &bb};
    const char *want[] = {"0,2", "1,3"};
    int32_t g = wait_stable(two, 2, -1, want, 20000);

    /* NOT_COORDINATOR on a heartbeat: rediscover, no rebalance. */
    ksfi_membership_stats s1, s2;
    total(&a, &s1);
    total(&bb, &s2);
    unsigned lookups = s1.lookups + s2.lookups;
    rd_kafka_mock_push_request_errors(mc, KSFI_GP_API_HEARTBEAT, 1,
                                      RD_KAFKA_RESP_ERR_NOT_COORDINATOR);
    ksft_deadline deadline = ksft_deadline_in(5000);
    do {
        total(&a, &s1);
        total(&bb, &s2);
        ck_assert_msg(ksft_deadline_wait(&deadline),
                      "no rediscovery after NOT_COORDINATOR");
    } while (s1.lookups + s2.lookups == lookups);

    /* REBALANCE_IN_PROGRESS on a heartbeat, then errors on the rejoin's JoinGroup and
     * SyncGroup: the group settles again on the same partitions. */
    rd_kafka_mock_push_request_errors(mc, KSFI_GP_API_SYNC_GROUP, 1,
                                      RD_KAFKA_RESP_ERR_NOT_COORDINATOR);
    rd_kafka_mock_push_request_errors(mc, KSFI_GP_API_JOIN_GROUP, 1,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
    rd_kafka_mock_push_request_errors(mc, KSFI_GP_API_HEARTBEAT, 1,
                                      RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
    g = wait_stable(two, 2, g, want, 30000);
    total(&a, &s1);
    total(&bb, &s2);
    ck_assert_uint_ge(s1.group_errors + s2.group_errors, 6);
    ck_assert_uint_eq(read_locked(&a, &a.revoked) + read_locked(&bb, &bb.revoked), 0);
    ck_assert(s1.stable && s2.stable);
    finish(&a);
    finish(&bb);
    ksft_broker_stop(b);
}
END_TEST

/* The broker goes away briefly: reconnect, keep the assignment, no revocation. Away for
 * longer than the session: the owner hears it is lost, then it is assigned again. */
KSFT_TEST(test_membership_broker_down, 50)
{
    KSFT_NEEDS_MOCK("stopping and restarting the broker");
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, TOPIC, 4);
    tmember a;
    start(&a, b, 1000);
    tmember *one[] = {&a};
    const char *want[] = {"0,1,2,3"};
    int32_t g = wait_stable(one, 1, -1, want, 10000);
    ksfi_membership_stats st;
    total(&a, &st);
    unsigned hb = st.heartbeats;

    ksft_broker_set_down(b, true);
    ksft_sleep_ms(2000); /* the outage itself is what is being tested */
    ksft_broker_set_down(b, false);
    ksft_deadline deadline = ksft_deadline_in(8000);
    do {
        total(&a, &st);
        ck_assert_msg(ksft_deadline_wait(&deadline), "heartbeats did not resume");
    } while (st.heartbeats < hb + 3);
    ck_assert_uint_gt(st.io_errors, 0);
    ck_assert_uint_eq(read_locked(&a, &a.revoked), 0);
    ck_assert_int_eq(st.generation, g);

    ksft_broker_set_down(b, true);
    KSFT_WAIT_UNTIL(read_locked(&a, &a.revoked) > 0, 9000,
                    "a revocation after the session expired");
    ksft_broker_set_down(b, false);
    wait_stable(one, 1, g, want, 15000);
    ck_assert_uint_eq(read_locked(&a, &a.revoked), 1);
    finish(&a);
    ksft_broker_stop(b);
}
END_TEST

/* A fatal answer (INVALID_SESSION_TIMEOUT on JoinGroup) reaches the owner once, with a
 * sentence saying what to do, and the membership stops retrying. */
KSFT_TEST(test_membership_fatal_error, 20)
{
    KSFT_NEEDS_MOCK("an injected INVALID_SESSION_TIMEOUT");
    ksft_broker *b = ksft_broker_start();
    rd_kafka_mock_push_request_errors(ksft_broker_mock(b), KSFI_GP_API_JOIN_GROUP, 1,
                                      RD_KAFKA_RESP_ERR_INVALID_SESSION_TIMEOUT);
    tmember a;
    start(&a, b, 1000);
    KSFT_WAIT_UNTIL(read_locked(&a, &a.fatal) > 0, 5000, "a fatal error reported");
    ck_assert_ptr_nonnull(strstr(a.fatal_text, "INVALID_SESSION_TIMEOUT (26)"));
    ck_assert_ptr_nonnull(strstr(a.fatal_text, "session.timeout.ms"));
    ksfi_membership_stats st;
    ksfi_membership_get_stats(a.m, &st);
    ck_assert(st.fatal);
    ck_assert_uint_eq(st.joins, 0);
    ck_assert_uint_eq(a.fatal, 1);
    finish(&a);
    ksft_broker_stop(b);
}
END_TEST

/* A static member on a broker without JoinGroup v5 stops with a sentence instead of
 * joining as a dynamic member; a dynamic member joins there with v4. */
KSFT_TEST(test_membership_static_needs_v5, 40)
{
    KSFT_NEEDS_MOCK("a broker limited to JoinGroup v4");
    ksft_broker *b = ksft_broker_start();
    ck_assert_int_eq(
        rd_kafka_mock_set_apiversion(ksft_broker_mock(b), KSFI_GP_API_JOIN_GROUP, 0, 4),
        RD_KAFKA_RESP_ERR_NO_ERROR);
    tmember a, d;
    start_as(&a, b, 1000, "hero-0");
    KSFT_WAIT_UNTIL(read_locked(&a, &a.fatal) > 0, 5000, "a fatal error reported");
    char want[KSF_ERRINFO_TEXT_SIZE];
    snprintf(want, sizeof want,
             "group " GROUP ": broker %s does not serve JoinGroup v5-5, which ksf needs "
             "(the classic group protocol; Kafka 2.3 or later) for static membership "
             "(group.instance.id); unset group.instance.id to join as a dynamic member",
             ksft_broker_address(b));
    ck_assert_str_eq(a.fatal_text, want);
    ksfi_membership_stats st;
    ksfi_membership_get_stats(a.m, &st);
    ck_assert(st.fatal);
    ck_assert_uint_eq(st.joins, 0);
    finish(&a);

    start(&d, b, 2000);
    tmember *ms[] = {&d};
    const char *const want_parts[] = {"0,1,2,3"};
    wait_stable(ms, 1, 0, want_parts, 15000);
    finish(&d);
    ksft_broker_stop(b);
}
END_TEST

KSFT_TEST(test_membership_bad_config, 10)
{
    ksfi_assignor_topic topics[] = {{TOPIC, 4}};
    ksfi_membership_config cfg = {
        "127.0.0.1:x", GROUP, "c", topics, 1,
        6000,          10000, 500, 1,      {NULL, NULL, KSF_LOG_ERROR}};
    ksfi_membership *m = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksfi_membership_new(&m, &cfg, NULL, &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text,
                     "brokers \"127.0.0.1:x\": \"127.0.0.1:x\" is not host:port; "
                     "expected host:port[,host:port...]");
    cfg.brokers = "127.0.0.1:9092,[::1]:9093";
    cfg.heartbeat_interval_ms = 3000;
    ck_assert_int_eq(ksfi_membership_new(&m, &cfg, NULL, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "heartbeat 10..session/3"));
    cfg.heartbeat_interval_ms = 500;
    cfg.topic_count = 0;
    ck_assert_int_eq(ksfi_membership_new(&m, &cfg, NULL, &ei), KSF_EINVAL);
    ck_assert_ptr_nonnull(strstr(ei.text, "no topics"));
    cfg.topic_count = 1;
    cfg.group_instance_id = "";
    ck_assert_int_eq(ksfi_membership_new(&m, &cfg, NULL, &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text, "group " GROUP ": group.instance.id must be 1..249 bytes");
    ck_assert_ptr_null(m);
    ksfi_membership_close(NULL);
}
END_TEST

KSFT_MAIN("membership")
