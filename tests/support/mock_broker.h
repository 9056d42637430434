/*
 * The embedded test broker: librdkafka's mock cluster (real Kafka protocol on
 * 127.0.0.1) behind one small API, so a librdkafka change touches only this file.
 * Create it inside the test (Check forks per test), never in the parent process.
 */
#ifndef KSF_TEST_MOCK_BROKER_H
#define KSF_TEST_MOCK_BROKER_H

#include <ksf/ksf.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "settings.h"

typedef struct ksft_broker ksft_broker;

/* Start a one-broker cluster; fails the current test (ck_abort) when it cannot. */
ksft_broker *ksft_broker_start(void);

/* Stop it and free everything. NULL is a no-op. */
void ksft_broker_stop(ksft_broker *b);

/* "127.0.0.1:PORT" of the broker. */
const char *ksft_broker_address(const ksft_broker *b);

/* The mock cluster, for fault injection (rd_kafka_mock_push_request_errors, ...). */
rd_kafka_mock_cluster_t *ksft_broker_mock(ksft_broker *b);

/* Create @p topic with @p partitions partitions (fails the test on error). Topics that
 * are not created explicitly auto-create with the mock's default of 4 partitions. */
void ksft_broker_create_topic(ksft_broker *b, const char *topic, int partitions);

/* Take the broker down / bring it back up (broker id 1). */
void ksft_broker_set_down(ksft_broker *b, bool down);

/*
 * A configuration pointing at @p b, with settings suited to the mock: short fetch waits
 * (the mock holds an empty Fetch for the whole fetch.wait.max.ms and is not woken by
 * new data), a 6 s session timeout (the mock's rebalances take session - 1 s) and
 * group.id "nestjs-group" (servers in nestjs-group-server, clients in
 * nestjs-group-client).
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
