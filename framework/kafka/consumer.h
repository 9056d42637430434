/*
 * The consumer side of the librdkafka adapter, for callers that must not see
 * librdkafka's types: a consumed message as plain fields, partition lists as arrays,
 * and the per-partition calls the dispatcher makes (store an offset, pause or resume,
 * seek). The server's consumer itself (creation, subscription, polling, rebalances)
 * is kafka/server_consumer.h.
 *
 * Threads: librdkafka's consumer calls are thread-safe; each function says where it is
 * meant to be called only when that matters.
 */
#ifndef KSF_KAFKA_CONSUMER_H
#define KSF_KAFKA_CONSUMER_H

#include "base/errinfo.h"
#include "codec/codec.h"

#include <stdbool.h>
#include <stdint.h>

/* librdkafka's handle, consumed message and partition list, opaque here so that
 * callers need not include rdkafka.h (nor name librdkafka at all). */
typedef struct rd_kafka_s ksfi_kafka_handle;
typedef struct rd_kafka_message_s ksfi_kafka_msg;
typedef struct rd_kafka_topic_partition_list_s ksfi_kafka_tplist;

/** One partition of one topic. */
typedef struct ksfi_kafka_tp {
    const char *topic; /* borrowed from wherever the list came from */
    int32_t partition;
} ksfi_kafka_tp;

/** A consumed message as plain fields, borrowed from the message. */
typedef struct ksfi_kafka_in {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms; /* -1: not available */
    const void *key;      /* NULL: none */
    size_t key_len;
    const void *value; /* NULL: a null value */
    size_t len;
} ksfi_kafka_in;

/** The fields of @p m (borrowed from it). */
ksfi_kafka_in ksfi_kafka_in_of(const ksfi_kafka_msg *m);

/**
 * The headers of @p msg as views in wire order into a caller-kept array: *buf has *cap
 * entries and is replaced by a larger ksfi_malloc'd one (the old one freed, *cap
 * updated) only when @p msg has more headers; *count gets their number. Names and
 * values point into @p msg, valid until it is freed. Errors: KSF_ENOMEM (*buf and
 * *cap unchanged, *count 0).
 */
ksf_err ksfi_kafka_header_views(const ksfi_kafka_msg *msg, ksfi_header **buf, size_t *cap,
                                size_t *count);

/** Free a consumed message. NULL is a no-op. */
void ksfi_kafka_message_free(ksfi_kafka_msg *m);

/**
 * The entries of librdkafka partition list @p l as an array (*out ksfi_malloc'd, its
 * topics borrowed from @p l; NULL with *n 0 for an empty list). Errors: KSF_ENOMEM.
 */
ksf_err ksfi_kafka_tps_of(const ksfi_kafka_tplist *l, ksfi_kafka_tp **out, size_t *n);

/** One partition of one topic and an offset in it. */
typedef struct ksfi_kafka_tpo {
    const char *topic; /* borrowed */
    int32_t partition;
    int64_t offset;
} ksfi_kafka_tpo;

/**
 * Store the @p n offsets @p v (each the next to consume of its partition) for the
 * consumer's next commit, in one call with one partition list.
 * Errors: KSF_EKAFKA naming the first partition librdkafka refused and its reason (the
 * others are stored).
 */
ksf_err ksfi_kafka_store_offsets(ksfi_kafka_handle *rk, const ksfi_kafka_tpo *v, size_t n,
                                 ksf_errinfo *ei);

/**
 * Pause (@p pause true) or resume fetching @p topic [@p partition].
 * Errors: KSF_EKAFKA naming the partition and librdkafka's reason.
 */
ksf_err ksfi_kafka_pause(ksfi_kafka_handle *rk, const char *topic, int32_t partition,
                         bool pause, ksf_errinfo *ei);

/**
 * Move the fetch position of @p topic [@p partition] to @p offset without waiting.
 * Errors: KSF_EKAFKA naming the partition and librdkafka's reason.
 */
ksf_err ksfi_kafka_seek(ksfi_kafka_handle *rk, const char *topic, int32_t partition,
                        int64_t offset, ksf_errinfo *ei);

#endif
