/*
 * The transport seam: building librdkafka handles' configuration from a ksf_config,
 * routing librdkafka's logs, and converting headers between librdkafka and the codec.
 * Only kafka/ itself and group/transport.c (TLS settings) include this, and so
 * rdkafka.h; the server and the client reach librdkafka through kafka/'s other headers.
 */
#ifndef KSF_KAFKA_H
#define KSF_KAFKA_H

#include "base/config.h"
#include "base/log.h"
#include "codec/codec.h"

#include <librdkafka/rdkafka.h>

/*
 * Build a librdkafka configuration for a handle of @p role (KSF_KAFKA_CONSUMER or
 * KSF_KAFKA_PRODUCER): bootstrap.servers, client.id, group.id (when non-NULL), ksf's
 * own defaults for @p role, then the user's "kafka." and role properties (so the user
 * wins), and the log callback. The handle's opaque must be set by the caller
 * (rd_kafka_conf_set_opaque) to a struct whose FIRST member is a ksfi_logger: the log
 * callback reads it from there. Errors: KSF_EINVAL naming the property librdkafka
 * refused, KSF_ENOMEM.
 */
ksf_err ksfi_kafka_conf(const ksf_config *cfg, ksf_kafka_role role, const char *client_id,
                        const char *group_id, rd_kafka_conf_t **out, ksf_errinfo *ei);

/*
 * The log callback ksfi_kafka_conf installs: librdkafka's line at the matching ksf level,
 * component "kafka". A handle that also inspects lines calls it from its own callback.
 */
void ksfi_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/*
 * A consumer handle from @p conf, set up the way both of ksf's consumers read: its main
 * queue forwarded to the consumer queue (rd_kafka_poll_set_consumer), and that queue
 * in @p queue. @p conf is the handle's from then on; on failure it is destroyed and the
 * sentence is "<what>: <librdkafka's reason>". Errors: KSF_EKAFKA.
 */
ksf_err ksfi_kafka_consumer_new(rd_kafka_conf_t *conf, const char *what, rd_kafka_t **rk,
                                rd_kafka_queue_t **queue, ksf_errinfo *ei);

/* ksfi_kafka_header_views, the headers of a consumed message: kafka/consumer.h. */

/*
 * Append codec headers to @p hdrs (created by the caller with rd_kafka_headers_new).
 * Errors: KSF_EKAFKA.
 */
ksf_err ksfi_kafka_add_headers(rd_kafka_headers_t *hdrs, const ksfi_header *h, size_t n);

/* A ksf_err for a librdkafka error, with the sentence "<what>: <librdkafka text>". */
ksf_err ksfi_kafka_fail(ksf_errinfo *ei, rd_kafka_resp_err_t err, const char *what);

/*
 * The partition count of @p topic, from a Metadata request naming it (which makes a
 * broker that allows it auto-create the topic: consumers get allow.auto.create.topics
 * by default, see ksfi_kafka_conf), retried while the brokers are unreachable or the
 * topic is being created, until @p deadline (ms on ksfi_clock_ms).
 * Errors: KSF_ETIMEDOUT, KSF_ENOPARTITION, KSF_EKAFKA.
 */
ksf_err ksfi_kafka_partition_count(rd_kafka_t *rk, const char *topic, int64_t deadline,
                                   int *count, ksf_errinfo *ei);

/*
 * The high watermark of @p topic [@p partition]. A new topic's partition answers
 * NOT_LEADER / LEADER_NOT_AVAILABLE until its leader is elected (on Kafka 4.4, the
 * first tens of ms after auto-creation): those are retried until @p deadline.
 * Errors: KSF_EKAFKA naming the partition.
 */
ksf_err ksfi_kafka_high_watermark(rd_kafka_t *rk, const char *topic, int32_t partition,
                                  int64_t deadline, int64_t *hi, ksf_errinfo *ei);

/* A librdkafka configuration, named so that callers need not spell librdkafka. */
typedef struct rd_kafka_conf_s ksfi_kafka_settings;

/*
 * The value librdkafka resolved for @p key in @p conf (its default when unset) as a
 * new string in *out (ksfi_malloc'd; PEM text can be long); NULL when it has none or
 * it is empty. Errors: KSF_ENOMEM.
 */
ksf_err ksfi_kafka_conf_value(const ksfi_kafka_settings *conf, const char *key,
                              char **out);

/*
 * As ksfi_kafka_conf_value, into @p buf of @p size bytes (no allocation): false when
 * librdkafka has no value for @p key or it does not fit.
 */
bool ksfi_kafka_conf_value_in(const ksfi_kafka_settings *conf, const char *key, char *buf,
                              size_t size);

/* Free a configuration that was never handed to a handle. NULL is a no-op. */
void ksfi_kafka_conf_free(ksfi_kafka_settings *conf);

#endif
