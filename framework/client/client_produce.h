/*
 * Producing a client's messages: the header list a message carries, the protocol
 * headers of a request in the client's wire dialect, and the produce of a request or
 * event with its delivery ticket (kafka/produce.h underneath). Used by client_send.c
 * (sends produced at once, events) and client_sender.c (queued sends). No lock is
 * taken or needed.
 */
#ifndef KSF_CLIENT_PRODUCE_H
#define KSF_CLIENT_PRODUCE_H

#include "client/client_internal.h"

/* Append header @p name = @p value (@p len bytes), borrowed; the caller made room. */
void ksfi_client_hdrs_add(ksfi_client_hdrs *hs, const char *name, const void *value,
                          size_t len);

/*
 * Copy @p src into one owned block (names, values and the array) with room for @p room
 * more headers, into @p dst. Errors: KSF_ENOMEM. Free with ksfi_client_hdrs_free.
 */
ksf_err ksfi_client_hdrs_copy(const ksfi_client_hdrs *src, size_t room,
                              ksfi_client_hdrs *dst);

/* Free a block made by ksfi_client_hdrs_copy. */
void ksfi_client_hdrs_free(ksfi_client_hdrs *hs);

/*
 * Append request @p id's protocol headers (NestJS's kafka_correlationId,
 * kafka_replyTopic = @p reply_to, kafka_replyPartition = @p partition, or Spring's) to
 * @p hs, which has room for KSFI_PROTO_HEADERS_MAX more. Their values live in @p buf,
 * which must outlive the produce.
 */
void ksfi_client_add_request_headers(const ksf_client *cli, ksfi_client_hdrs *hs,
                                     const char *id, const char *reply_to,
                                     int32_t partition,
                                     unsigned char buf[KSFI_REQUEST_HEADERS_BUF]);

/*
 * Produce @p value (NULL: a null value) with @p key (optional) and headers @p hs to
 * @p topic, with ticket @p t for its delivery report (client_delivery.c). On KSF_OK
 * the ticket is the report's until it runs; everything else was copied.
 * Errors: KSF_EKAFKA naming the topic with librdkafka's reason (a full producer queue
 * says to retry later or flush).
 */
ksf_err ksfi_client_produce(ksf_client *cli, const char *topic, const void *value,
                            size_t len, const void *key, size_t key_len,
                            const ksfi_client_hdrs *hs, dr_ticket *t, ksf_errinfo *ei);

#endif
