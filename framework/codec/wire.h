/*
 * Wire names shared with NestJS's Kafka transport. This is the only place they are
 * spelled (but for the defaults in base/nest_defaults.h, included here); see shared
 * NESTJS-KAFKA-WIRE.md sections 0-4 for where each comes from.
 */
#ifndef KSF_WIRE_H
#define KSF_WIRE_H

/* Request and reply headers (enums/kafka-headers.enum.ts). */
#define KSFI_HDR_CORRELATION_ID "kafka_correlationId"
#define KSFI_HDR_REPLY_TOPIC "kafka_replyTopic"
#define KSFI_HDR_REPLY_PARTITION "kafka_replyPartition"
#define KSFI_HDR_NEST_ERR "kafka_nest-err"
#define KSFI_HDR_NEST_IS_DISPOSED "kafka_nest-is-disposed"
/* Every header ksf or NestJS reserve starts with this prefix. */
#define KSFI_HDR_RESERVED_PREFIX "kafka_"

/* Reply topic = pattern + this (ClientKafka.getResponsePatternName). */
#define KSFI_REPLY_SUFFIX ".reply"

/* Id suffixes (postfixId defaults) and defaults (constants.ts), spelled in base/ for
 * the configuration. */
#include "../base/nest_defaults.h" /* relative: bench/ includes wire.h alone */

/* Error texts, byte for byte (constants.ts, core/constants.ts). */
#define KSFI_NO_MESSAGE_HANDLER                                                          \
    "There is no matching message handler defined in the remote service."
#define KSFI_NO_EVENT_HANDLER                                                            \
    "There is no matching event handler defined in the remote service."
#define KSFI_INTERNAL_SERVER_ERROR "Internal server error"
#define KSFI_NO_REPLY_TOPIC_FMT                                                          \
    "The client consumer did not subscribe to the corresponding reply topic (%s)."

/* The reply-group assigner (helpers/kafka-reply-partition-assigner.ts). */
#define KSFI_ASSIGNOR_NAME "NestReplyPartitionAssigner"
#define KSFI_ASSIGNOR_VERSION 1

#endif
