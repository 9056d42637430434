/*
 * Plain-librdkafka helpers for integration tests: a producer that sends messages with
 * arbitrary headers (requests the way NestJS builds them, or malformed ones), and a
 * collector that reads one topic partition from the beginning and keeps copies of
 * everything it saw. Every failure fails the current Check test. Single-threaded use.
 */
#ifndef KSF_TEST_RAW_KAFKA_H
#define KSF_TEST_RAW_KAFKA_H

#include "codec/codec.h"

#include <librdkafka/rdkafka.h>
#include <sys/types.h>

/* ---- producer ------------------------------------------------------------------ */

typedef struct ksft_producer ksft_producer;

ksft_producer *ksft_producer_new(const char *brokers);
/* Flush (up to 10 s; fails the test if anything is left) and free. NULL is a no-op. */
void ksft_producer_destroy(ksft_producer *p);

/*
 * Produce one message. @p partition -1 lets the partitioner choose; @p value NULL is a
 * null value; headers with value NULL are null headers. With @p wait, block until the
 * broker acknowledged it (fails the test on error); otherwise see ksft_producer_flush.
 */
void ksft_produce(ksft_producer *p, const char *topic, int32_t partition, const void *key,
                  size_t key_len, const void *value, size_t len, const ksfi_header *hdrs,
                  size_t nhdrs, bool wait);

/*
 * A request as NestJS's ClientKafka sends it: kafka_correlationId, kafka_replyTopic and
 * kafka_replyPartition (decimal; left out when @p reply_partition < 0). @p value NULL is
 * a null value.
 */
void ksft_send_request(ksft_producer *p, const char *topic, int32_t partition,
                       const char *correlation_id, const char *reply_topic,
                       int32_t reply_partition, const void *value, size_t len, bool wait);

/* Wait until everything produced was acknowledged; fails the test after @p timeout_ms
 * or when any delivery failed. */
void ksft_producer_flush(ksft_producer *p, int timeout_ms);

/* ---- collector ------------------------------------------------------------------- */

/* One collected message; everything owned by the collector. */
typedef struct ksft_msg {
    int32_t partition;
    int64_t offset;
    void *key; /* NULL: no key */
    size_t key_len;
    void *value; /* NULL: null value */
    size_t len;
    ksfi_header *hdrs; /* names and values owned */
    size_t nhdrs;
} ksft_msg;

typedef struct ksft_collector ksft_collector;

/* Read @p topic partition @p partition from its first offset. */
ksft_collector *ksft_collector_new(const char *brokers, const char *topic,
                                   int32_t partition);
void ksft_collector_destroy(ksft_collector *c);

/* Read what is available for up to @p timeout_ms; returns the total collected. */
size_t ksft_collector_poll(ksft_collector *c, int timeout_ms);

/* The number of messages collected so far and the i-th of them. */
size_t ksft_collector_count(const ksft_collector *c);
const ksft_msg *ksft_collector_at(const ksft_collector *c, size_t i);

/* Messages whose kafka_correlationId equals @p id (as text), collected so far. */
size_t ksft_collector_count_id(const ksft_collector *c, const char *id);
/* The @p nth (0-based) of them, or NULL. */
const ksft_msg *ksft_collector_get_id(const ksft_collector *c, const char *id,
                                      size_t nth);

/* Poll until at least @p n messages carry @p id or @p timeout_ms passed; returns the
 * count seen. */
size_t ksft_collector_wait_id(ksft_collector *c, const char *id, size_t n,
                              int timeout_ms);

/* The last header @p name of @p m: true when present (*value NULL for a null value). */
bool ksft_msg_header(const ksft_msg *m, const char *name, const void **value,
                     size_t *len);

/* ---- offsets --------------------------------------------------------------------- */

/* The offset @p group committed for @p topic/@p partition, or -1001 when none. */
int64_t ksft_committed(const char *brokers, const char *group, const char *topic,
                       int32_t partition);

/*
 * Wait until @p group's committed offsets on partitions 0 .. @p partitions - 1 of
 * @p topic add up to @p want or more (a partition without a commit counts 0), for at
 * most ksft_scaled_ms(@p timeout_ms); returns the last sum read. On a topic that
 * started empty the sum is the number of messages below the commits.
 */
int64_t ksft_wait_committed(const char *brokers, const char *group, const char *topic,
                            int32_t partitions, int64_t want, int timeout_ms);

/* ---- plain librdkafka handles ---------------------------------------------------- */

/* A configuration with bootstrap.servers @p brokers (NULL: not set) and then the
 * {property, value} rows of @p kv; a refused row fails the test, naming it. */
rd_kafka_conf_t *ksft_rd_conf(const char *brokers, const char *const kv[][2], size_t n);

/* rd_kafka_new of @p type on @p conf (consumed); fails the test naming @p what. */
rd_kafka_t *ksft_rd_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, const char *what);

#endif
