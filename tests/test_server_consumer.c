/*
 * The server's consumer adapter (kafka/server_consumer.c) against the mock, where its
 * librdkafka mechanics can be driven into a corner no whole server reaches on demand:
 * a close that meets rebalance events queued while nobody polled (a stopping server
 * polls no more while its handlers drain). librdkafka 2.0.2 hung in such a close for
 * good (CI, test_faults deferred_revoked under valgrind): the close turned the waiting
 * assign into a full unassign, the group terminated on it, and the incremental unassign
 * of the revoke that followed never returned.
 */
#include "base/config.h"
#include "broker.h"
#include "kafka/server_consumer.h"
#include "suite.h"

#include <check.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC "sc.t"
#define GROUP "sc-group"

/* One member: its consumer and what its ops were told. */
typedef struct member {
    ksfi_server_consumer *c;
    ksf_config *cfg;
    atomic_int assigned_events; /* assign ops, empty ones included */
    atomic_int revoked_events;  /* revoke and lost ops */
    atomic_int owned;           /* partitions held, by the ops */
    atomic_int revoked_parts;   /* partitions revoked or lost, in all */
    bool commit_on_revoke;      /* as the server does: its commit gives librdkafka time */
    atomic_bool stop;
    pthread_t poller;
} member;

static void
on_assigned(void *user, ksfi_sc_part *parts, size_t n)
{
    (void)parts;
    member *m = user;
    atomic_fetch_add(&m->owned, (int)n);
    atomic_fetch_add(&m->assigned_events, 1);
}

static void
on_revoked(void *user, const ksfi_sc_part *parts, size_t n)
{
    (void)parts;
    member *m = user;
    if (m->commit_on_revoke) {
        ksf_errinfo ei = {0};
        (void)ksfi_sc_commit(m->c, NULL, 0, 1500, &ei); /* nothing stored: KSF_OK */
    }
    atomic_fetch_sub(&m->owned, (int)n);
    atomic_fetch_add(&m->revoked_parts, (int)n);
    atomic_fetch_add(&m->revoked_events, 1);
}

static const ksfi_sc_ops member_ops = {
    .assigned = on_assigned,
    .revoked = on_revoked,
    .lost = on_revoked,
};

/* A member of GROUP subscribed to TOPIC (the tests' group timing: a 6 s session). */
static void
member_open(member *m, ksft_broker *b, const char *name)
{
    memset(m, 0, sizeof *m);
    m->cfg = ksft_config(b);
    ksfi_logger log = ksfi_logger_from_config(m->cfg);
    ksfi_sc_config sc = {
        .cfg = m->cfg,
        .client_id = name,
        .group_id = GROUP,
        .assignment_strategy = "cooperative-sticky",
        .offset_reset = "earliest",
        .log = &log,
        .ops = &member_ops,
        .user = m,
    };
    ksf_errinfo ei = {0};
    ck_assert_msg(ksfi_sc_new(&sc, &m->c, &ei) == KSF_OK, "ksfi_sc_new: %s", ei.text);
    const char *topics[] = {TOPIC};
    ksf_err e = ksfi_sc_subscribe(m->c, topics, 1, ksft_now_ms() + 10000, &ei);
    ck_assert_msg(e == KSF_OK, "subscribe: %s", ei.text);
}

static void
member_poll(member *m, int timeout_ms)
{
    ksfi_sc_event ev;
    ksfi_sc_poll(m->c, timeout_ms, &ev);
    if (ev.kind == KSFI_SC_MESSAGE) {
        ksfi_kafka_message_free(ev.msg);
    }
}

static void *
poller_main(void *arg)
{
    member *m = arg;
    while (!atomic_load(&m->stop)) {
        member_poll(m, 50);
    }
    return NULL;
}

static void
member_close(member *m)
{
    const char *why;
    char buf[256];
    (void)ksfi_sc_close(m->c, 10000, &why, buf, sizeof buf);
    ksfi_sc_destroy(m->c);
    ksf_config_destroy(m->cfg);
}

typedef struct close_run {
    member *m;
    atomic_bool returned;
    bool closed;
    const char *why;
    char buf[256];
} close_run;

static void *
close_main(void *arg)
{
    close_run *r = arg;
    r->closed = ksfi_sc_close(r->m->c, 10000, &r->why, r->buf, sizeof r->buf);
    atomic_store(&r->returned, true);
    return NULL;
}

static bool
close_returned(void *arg)
{
    return atomic_load(&((close_run *)arg)->returned);
}

static bool
member_id_reset(ksfi_server_consumer *c)
{
    char *id = rd_kafka_memberid((rd_kafka_t *)ksfi_sc_handle(c));
    bool reset = !id || !*id;
    rd_kafka_mem_free(NULL, id);
    return reset;
}

/*
 * Member a holds both partitions; other joins: a revokes one (cooperative) and is handed
 * an empty assign, then polls no more, as a stopping server does. The group's second
 * round gives other its partition and queues another empty assign for a, which nobody
 * serves. other then leaves: the group rebalances without a (which cannot rejoin with
 * an assign unserved) and expels it after its session timeout, resetting its member id.
 * a's close must still finish within its wait, having revoked each partition exactly
 * once. (Before the fix the close hung in librdkafka, or finished without revoking the
 * partition a still held.)
 */
KSFT_TEST(test_server_consumer_close_after_queued_rebalance, 120)
{
    KSFT_NEEDS_MOCK("a member expelled while it polls no more");
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, TOPIC, 2);
    member a, other;
    member_open(&a, b, "sc-a");
    a.commit_on_revoke = true;
    ksft_deadline until = ksft_deadline_in(30000);
    while (atomic_load(&a.owned) < 2 && ksft_deadline_wait(&until)) {
        member_poll(&a, 50);
    }
    ck_assert_int_eq(atomic_load(&a.owned), 2);

    member_open(&other, b, "sc-other");
    ck_assert_int_eq(pthread_create(&other.poller, NULL, poller_main, &other), 0);
    until = ksft_deadline_in(30000);
    while (atomic_load(&a.assigned_events) < 2 && ksft_deadline_wait(&until)) {
        member_poll(&a, 50);
    }
    ck_assert_int_eq(atomic_load(&a.revoked_events), 1);
    ck_assert_int_eq(atomic_load(&a.revoked_parts), 1);
    ck_assert_int_eq(atomic_load(&a.owned), 1);
    ck_assert_int_eq(atomic_load(&a.assigned_events), 2);

    /* a polls no more from here. */
    KSFT_WAIT_UNTIL(atomic_load(&other.owned) >= 1, 40000, "other got no partition");
    atomic_store(&other.stop, true);
    pthread_join(other.poller, NULL);
    member_close(&other);
    KSFT_WAIT_UNTIL(member_id_reset(a.c), 30000, "a was not expelled from the group");
    ck_assert_int_eq(atomic_load(&a.assigned_events), 2); /* the queued assign: not yet */

    close_run run = {.m = &a};
    pthread_t closer;
    ck_assert_int_eq(pthread_create(&closer, NULL, close_main, &run), 0);
    if (!ksft_wait_until(close_returned, &run, 20000)) {
        /* Hung inside librdkafka: the thread cannot be joined, nor a destroyed. */
        ck_abort_msg("a's close did not return within 20 s (hung in librdkafka)");
    }
    pthread_join(closer, NULL);
    ck_assert_msg(run.closed, "a's close did not finish: %s", run.why);
    ck_assert_int_eq(atomic_load(&a.assigned_events), 3); /* the queued one, served */
    ck_assert_int_eq(atomic_load(&a.revoked_parts), 2);   /* each partition once */
    ck_assert_int_eq(atomic_load(&a.owned), 0);
    ksfi_sc_destroy(a.c);
    ksf_config_destroy(a.cfg);
    ksft_broker_stop(b);
}
END_TEST

KSFT_MAIN("server_consumer")
