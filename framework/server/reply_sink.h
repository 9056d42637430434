/*
 * Where replies leave: the server's side of producing them, as the reply-provider
 * interface is the client's side of receiving them. The message lifecycle
 * (server/message.c) produces every reply and dead letter through a sink and gets
 * each one's delivery report through the ksfi_kafka_delivery the message carries;
 * the server implements the sink on top of the kafka adapter (kafka/produce.h), so
 * nothing below it needs the server or librdkafka.
 */
#ifndef KSF_REPLY_SINK_H
#define KSF_REPLY_SINK_H

#include "kafka/produce.h"

typedef struct ksfi_reply_sink ksfi_reply_sink;

struct ksfi_reply_sink {
    /*
     * Produce @p m (its delivery field set: the on-delivered report follows exactly
     * once when this returns KSF_OK, never otherwise). Threads: any.
     * Errors: KSF_ECLOSED once the server stopped taking replies, KSF_EKAFKA.
     */
    ksf_err (*produce)(ksfi_reply_sink *self, const ksfi_kafka_out *m, ksf_errinfo *ei);
};

#endif
