/*
 * The broker an integration test talks to, behind one small API. Two kinds, chosen in
 * one place, the environment:
 * - KSF_TEST_KAFKA unset: the embedded broker, librdkafka's mock cluster (real Kafka
 *   protocol on 127.0.0.1), one per test case, with fault injection.
 * - KSF_TEST_KAFKA=host:port[,host:port]: a real Apache Kafka started outside the test
 *   (`tools/dev kafka`; `tools/dev test` does it). Every case starts from a broker
 *   without user topics (ksft_broker_start deletes them), so cases on one broker must
 *   run one at a time (meson test --num-processes 1). Fault injection does not exist
 *   there: a case that needs it starts with KSFT_NEEDS_MOCK(why).
 * Create it inside the test (Check forks per test), never in the parent process.
 */
#ifndef KSF_TEST_MOCK_BROKER_H
#define KSF_TEST_MOCK_BROKER_H

#include <ksf/ksf.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "settings.h"

#include <stdbool.h>
#include <stdio.h>

typedef struct ksft_broker ksft_broker;

/* Start a one-broker mock cluster, or attach to the real Kafka of KSF_TEST_KAFKA after
 * deleting its user topics; fails the current test (ck_abort) when it cannot. */
ksft_broker *ksft_broker_start(void);

/* True on the mock cluster, false on real Kafka. */
bool ksft_broker_is_mock(const ksft_broker *b);

/* The address list of KSF_TEST_KAFKA, or NULL when the tests run on the mock. */
const char *ksft_real_kafka(void);

/* First thing in a case that needs the mock's fault injection: on real Kafka, say so
 * on stdout and return (the case passes without checking anything). @p why says what
 * of the mock it needs. */
#define KSFT_NEEDS_MOCK(why)                                                             \
    do {                                                                                 \
        if (ksft_real_kafka()) {                                                         \
            printf("%s: skipped: needs the mock (%s)\n", __func__, (why));               \
            fflush(stdout);                                                              \
            return;                                                                      \
        }                                                                                \
    } while (0)

/* The opposite: first thing in a case that proves what only a real broker does (the
 * mock has no static membership, no session expiry worth measuring, ...): on the mock,
 * say so on stdout and return. @p why names what it needs. */
#define KSFT_NEEDS_REAL_KAFKA(why)                                                       \
    do {                                                                                 \
        if (!ksft_real_kafka()) {                                                        \
            printf("%s: skipped: needs real Kafka (%s)\n", __func__, (why));             \
            fflush(stdout);                                                              \
            return;                                                                      \
        }                                                                                \
    } while (0)

/* Stop it and free everything. NULL is a no-op. */
void ksft_broker_stop(ksft_broker *b);

/* "127.0.0.1:PORT" of the broker. */
const char *ksft_broker_address(const ksft_broker *b);

/* The mock cluster, for fault injection (rd_kafka_mock_push_request_errors, ...); fails
 * the test on real Kafka (guard the case with KSFT_NEEDS_MOCK). */
rd_kafka_mock_cluster_t *ksft_broker_mock(ksft_broker *b);

/* Create @p topic with @p partitions partitions (fails the test on error) and wait until
 * every partition has a leader. Topics that are not created explicitly auto-create
 * with 4 partitions (the mock's default; `tools/dev kafka` sets num.partitions=4). */
void ksft_broker_create_topic(ksft_broker *b, const char *topic, int partitions);

/* Take the broker down / bring it back up (broker id 1); mock only. */
void ksft_broker_set_down(ksft_broker *b, bool down);

/*
 * A configuration pointing at @p b: a 6 s session timeout (the mock's rebalances take
 * session - 1 s; Kafka's smallest allowed) with 500 ms heartbeats, and on the mock
 * short fetch waits (it holds an empty Fetch for the whole fetch.wait.max.ms and is
 * not woken by new data; a real broker is, so ksf's default stays there), and group.id
 * "nestjs-group" (servers in nestjs-group-server, clients in nestjs-group-client).
 * Logs at warning and above go to stderr. The caller destroys it.
 */
ksf_config *ksft_config(const ksft_broker *b);

/* Milliseconds on a monotonic clock, for deadlines in wait loops. */
int64_t ksft_now_ms(void);

/* True when this process runs under valgrind. */
bool ksft_under_valgrind(void);

/* @p ms scaled for the run: x4 under valgrind (everything runs several times slower),
 * x CK_TIMEOUT_MULTIPLIER when set (CI sets 2). For the support library's waits on a
 * condition (server ready, answers counted, messages collected): they only bound how
 * long a test waits before failing, so stretching them cannot hide a wrong result. */
int ksft_scaled_ms(int ms);

#endif
