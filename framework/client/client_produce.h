/*
 * Producing a client's messages: the protocol headers of a request in the client's
 * wire dialect, and the produce of a request or event with its delivery ticket. Used
 * by client_send.c (sends produced at once, events) and client_sender.c (queued sends).
 * No lock is taken or needed.
 */
#ifndef KSF_CLIENT_PRODUCE_H
#define KSF_CLIENT_PRODUCE_H

#include "client/client_internal.h"

/*
 * Append request @p id's protocol headers (NestJS's kafka_correlationId,
 * kafka_replyTopic = @p reply_to, kafka_replyPartition = @p partition, or Spring's)
 * to *@p hdrs, creating the list when *@p hdrs is NULL.
 */
void ksfi_client_add_request_headers(const ksf_client *cli, rd_kafka_headers_t **hdrs,
                                     const char *id, const char *reply_to,
                                     int32_t partition);

/*
 * Produce @p value (NULL: a null value) with @p key (optional) and the headers *@p hdrs
 * (optional) to @p topic, with ticket @p t for its delivery report. On KSF_OK the
 * headers belong to librdkafka (*@p hdrs is set to NULL) and so does the ticket until
 * its report. Errors: KSF_EKAFKA with librdkafka's reason (a full producer queue
 * says to retry later or flush).
 */
ksf_err ksfi_client_produce(ksf_client *cli, const char *topic, const void *value,
                            size_t len, const void *key, size_t key_len,
                            rd_kafka_headers_t **hdrs, dr_ticket *t, ksf_errinfo *ei);

#endif
