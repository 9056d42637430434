/*
 * kafka/produce.c on a broker: the one produce function and the producer's kept topic
 * handles (ksfi_kafka_topics). Every server reply and client request goes through
 * them, so the rest of the suite covers the common case; these cases pin what only
 * shows at the edges: more topics than the set keeps, several threads adding the same
 * topic at once, and that every accepted message gets exactly one report naming the
 * topic it was produced to.
 */
#include "suite.h"

#include "broker.h"

#include "base/config.h"
#include "kafka/produce.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* More topics than a ksfi_kafka_topics keeps, so the rest take the per-message path. */
#define NTOPICS (KSFI_KAFKA_TOPICS_MAX + 8)
#define ROUNDS 3
#define THREADS 4
/* Fewer topics than are kept, so a topic kept twice would show in the count. */
#define NRACE 20

typedef struct sent {
    ksfi_kafka_delivery delivery; /* first member: the report's container */
    char topic[64];
    atomic_int reports; /* how many reports this message got */
    atomic_int wrong;   /* reports with an error or naming another topic */
} sent;

static void
on_report(ksfi_kafka_delivery *d, const ksfi_kafka_report *r)
{
    sent *s = (sent *)(void *)d;
    atomic_fetch_add(&s->reports, 1);
    if (r->err != KSF_OK || strcmp(r->topic, s->topic) != 0 || r->offset < 0) {
        atomic_fetch_add(&s->wrong, 1);
    }
}

/* The producer's opaque: ksfi_kafka_producer_new wants a logger as its first member. */
typedef struct producer_owner {
    ksfi_logger log;
} producer_owner;

typedef struct world {
    ksft_broker *broker;
    ksf_config *cfg;
    producer_owner owner;
    struct rd_kafka_s *rk;
    ksfi_kafka_topics *topics;
} world;

static void
world_open(world *w)
{
    memset(w, 0, sizeof *w);
    w->broker = ksft_broker_start();
    for (int i = 0; i < NTOPICS; i++) {
        char name[64];
        snprintf(name, sizeof name, "produce.t%02d", i);
        ksft_broker_create_topic(w->broker, name, 1);
    }
    w->cfg = ksft_config(w->broker);
    w->owner.log = ksfi_logger_from_config(w->cfg);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksfi_kafka_producer_new(w->cfg, "test-produce", &w->owner,
                                             "the test's producer", &w->rk, &ei),
                     KSF_OK);
    ck_assert_int_eq(ksfi_kafka_topics_new(&w->topics, &ei), KSF_OK);
}

static void
world_close(world *w)
{
    ksfi_kafka_topics_free(w->topics);
    ksfi_kafka_producer_destroy(w->rk);
    ksf_config_destroy(w->cfg);
    ksft_broker_stop(w->broker);
}

static void
produce_one(world *w, sent *s)
{
    ksfi_kafka_out out = {
        .topic = s->topic,
        .partition = KSFI_KAFKA_ANY_PARTITION,
        .value = "v",
        .len = 1,
        .delivery = &s->delivery,
        .queue_full_wait_ms = 5000,
        .what = "a test message",
        .topics = w->topics,
    };
    ksf_errinfo ei = {0};
    ck_assert_msg(ksfi_kafka_produce(w->rk, &out, &ei) == KSF_OK, "producing to %s: %s",
                  s->topic, ei.text);
}

static void
expect_one_report_each(sent *msgs, int n)
{
    for (int i = 0; i < n; i++) {
        ck_assert_msg(atomic_load(&msgs[i].reports) == 1,
                      "message %d to %s: %d reports, expected exactly 1", i,
                      msgs[i].topic, atomic_load(&msgs[i].reports));
        ck_assert_msg(atomic_load(&msgs[i].wrong) == 0,
                      "message %d to %s: its report failed or named another topic", i,
                      msgs[i].topic);
    }
}

/* 40 topics, 3 rounds each: the first 32 are kept, the last 8 are looked up and
 * released per message; every message is delivered to its own topic, once. */
KSFT_TEST(test_produce_more_topics_than_kept, 60)
{
    world w;
    world_open(&w);
    static sent msgs[NTOPICS * ROUNDS];
    memset(msgs, 0, sizeof msgs);
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < NTOPICS; i++) {
            sent *s = &msgs[r * NTOPICS + i];
            s->delivery.fn = on_report;
            snprintf(s->topic, sizeof s->topic, "produce.t%02d", i);
            produce_one(&w, s);
        }
    }
    ck_assert_int_eq(ksfi_kafka_flush(w.rk, ksft_scaled_ms(10000)), 0);
    expect_one_report_each(msgs, NTOPICS * ROUNDS);
    ck_assert_uint_eq(ksfi_kafka_topics_kept(w.topics), KSFI_KAFKA_TOPICS_MAX);
    world_close(&w);
}

typedef struct racer {
    world *w;
    pthread_barrier_t *start; /* all threads begin at once, on the same topic */
    sent *msgs;               /* NRACE of them */
} racer;

static void *
race_main(void *arg)
{
    racer *r = arg;
    pthread_barrier_wait(r->start);
    for (int i = 0; i < NRACE; i++) {
        produce_one(r->w, &r->msgs[i]);
    }
    return NULL;
}

/* Four threads produce to the same 20 new topics at once: each topic is kept once,
 * by one of them (the others release the handle they made), and nothing is lost. Under
 * valgrind or a sanitizer this is also the data-race check of the lock-free lookup. */
KSFT_TEST(test_produce_threads_add_same_topics, 60)
{
    world w;
    world_open(&w);
    static sent msgs[THREADS][NRACE];
    memset(msgs, 0, sizeof msgs);
    pthread_t threads[THREADS];
    racer racers[THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < NRACE; i++) {
            msgs[t][i].delivery.fn = on_report;
            snprintf(msgs[t][i].topic, sizeof msgs[t][i].topic, "produce.t%02d", i);
        }
        racers[t] = (racer){&w, &start, msgs[t]};
        ck_assert_int_eq(pthread_create(&threads[t], NULL, race_main, &racers[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
    }
    pthread_barrier_destroy(&start);
    ck_assert_int_eq(ksfi_kafka_flush(w.rk, ksft_scaled_ms(10000)), 0);
    expect_one_report_each(&msgs[0][0], THREADS * NRACE);
    /* Each topic kept once, whichever thread added it. */
    ck_assert_uint_eq(ksfi_kafka_topics_kept(w.topics), NRACE);
    world_close(&w);
}

/* Without a set (topics NULL) the per-message path alone still works. */
KSFT_TEST(test_produce_without_kept_topics, 30)
{
    world w;
    world_open(&w);
    ksfi_kafka_topics_free(w.topics);
    w.topics = NULL;
    static sent msgs[NTOPICS];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < NTOPICS; i++) {
        msgs[i].delivery.fn = on_report;
        snprintf(msgs[i].topic, sizeof msgs[i].topic, "produce.t%02d", i);
        produce_one(&w, &msgs[i]);
    }
    ck_assert_int_eq(ksfi_kafka_flush(w.rk, ksft_scaled_ms(10000)), 0);
    expect_one_report_each(msgs, NTOPICS);
    world_close(&w);
}

KSFT_MAIN("produce")
