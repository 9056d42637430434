/*
 * Topic administration on a real Kafka cluster for the test broker (broker.c), through
 * librdkafka's admin API. Each function fails the current test, naming the topic and
 * the broker's error, when it cannot do its job within its bound.
 */
#ifndef KSF_TEST_REAL_KAFKA_H
#define KSF_TEST_REAL_KAFKA_H

#include <librdkafka/rdkafka.h>

/* Delete every topic whose name does not start with "__" and wait until the cluster's
 * metadata lists none of them, so a case starts without an earlier case's topics. */
void ksft_kafka_delete_user_topics(rd_kafka_t *rk);

/* Create @p topic with @p partitions partitions, replicated to min(3, brokers), and
 * wait until every partition has a leader. An existing topic with that partition count
 * is accepted. */
void ksft_kafka_create_topic(rd_kafka_t *rk, const char *topic, int partitions);

/* The number of brokers in the cluster's metadata. */
int ksft_kafka_broker_count(rd_kafka_t *rk);

#endif
