/*
 * Producing a client's messages (client_produce.h): one produce path for requests
 * (sent at once or by the sender thread) and events.
 */
#include "client/client_produce.h"

void
ksfi_client_add_request_headers(const ksf_client *cli, rd_kafka_headers_t **hdrs,
                                const char *id, const char *reply_to, int32_t partition)
{
    unsigned char buf[KSFI_REQUEST_HEADERS_BUF]; /* the header values point into it */
    ksfi_header proto[KSFI_PROTO_HEADERS_MAX];
    size_t n;
    if (cli->cfg->client_wire_dialect == KSFI_WIRE_SPRING) {
        n = ksfi_request_headers_spring(id, reply_to, partition, buf, proto);
    } else {
        n = ksfi_request_headers(id, reply_to, partition, (char *)buf, proto);
    }
    if (!*hdrs) {
        *hdrs = rd_kafka_headers_new(KSFI_PROTO_HEADERS_MAX);
    }
    ksfi_kafka_add_headers(*hdrs, proto, n);
}

ksf_err
ksfi_client_produce(ksf_client *cli, const char *topic, const void *value, size_t len,
                    const void *key, size_t key_len, rd_kafka_headers_t **hdrs,
                    dr_ticket *t, ksf_errinfo *ei)
{
    /* rd_kafka_topic_new, unlike producev's lookup by name, asks for an unknown topic's
     * metadata at once: otherwise a fresh client's first request waits for librdkafka
     * 2.0.2's 1 s topic scan (measured on Kafka 4.4: a first call took 1.0 s instead of
     * 0.1 s). The server does the same for replies. */
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(cli->producer, topic, NULL);
    if (!rkt) {
        return ksfi_kafka_fail(ei, rd_kafka_last_error(), "request topic");
    }
    rd_kafka_resp_err_t err = rd_kafka_producev(
        cli->producer, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_VALUE((void *)value, value ? len : 0),
        RD_KAFKA_V_KEY((void *)key, key ? key_len : 0),
        RD_KAFKA_V_HEADERS(hdrs ? *hdrs : NULL), RD_KAFKA_V_OPAQUE(t), RD_KAFKA_V_END);
    rd_kafka_topic_destroy(rkt);
    if (err) {
        return ksfi_kafka_fail(ei, err,
                               err == RD_KAFKA_RESP_ERR__QUEUE_FULL
                                   ? "producer queue full (retry later or flush)"
                                   : "produce");
    }
    if (hdrs) {
        *hdrs = NULL;
    }
    return KSF_OK;
}
