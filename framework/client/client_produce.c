/*
 * Producing a client's messages (client_produce.h): one produce path for requests
 * (sent at once or by the sender thread) and events.
 */
#include "client/client_produce.h"

#include "client/client_delivery.h"

void
ksfi_client_hdrs_add(ksfi_client_hdrs *hs, const char *name, const void *value,
                     size_t len)
{
    hs->h[hs->n++] = (ksfi_header){name, value, len};
}

ksf_err
ksfi_client_hdrs_copy(const ksfi_client_hdrs *src, size_t room, ksfi_client_hdrs *dst)
{
    /* One allocation per queued send: the array first (aligned), then the bytes. */
    size_t cap = src->n + room, size = cap * sizeof(ksfi_header);
    for (size_t i = 0; i < src->n; i++) {
        size += strlen(src->h[i].name) + 1 + src->h[i].len;
    }
    ksfi_header *h = ksfi_malloc(size ? size : 1);
    if (!h) {
        return KSF_ENOMEM;
    }
    char *at = (char *)(h + cap);
    for (size_t i = 0; i < src->n; i++) {
        size_t nl = strlen(src->h[i].name) + 1;
        h[i].name = memcpy(at, src->h[i].name, nl);
        at += nl;
        h[i].value = src->h[i].value ? memcpy(at, src->h[i].value, src->h[i].len) : NULL;
        h[i].len = src->h[i].len;
        at += src->h[i].len;
    }
    *dst = (ksfi_client_hdrs){h, src->n, cap};
    return KSF_OK;
}

void
ksfi_client_hdrs_free(ksfi_client_hdrs *hs)
{
    ksfi_free(hs->h);
    *hs = (ksfi_client_hdrs){0};
}

void
ksfi_client_add_request_headers(const ksf_client *cli, ksfi_client_hdrs *hs,
                                const char *id, const char *reply_to, int32_t partition,
                                unsigned char buf[KSFI_REQUEST_HEADERS_BUF])
{
    size_t n;
    if (cli->cfg->client_wire_dialect == KSFI_WIRE_SPRING) {
        n = ksfi_request_headers_spring(id, reply_to, partition, buf, hs->h + hs->n);
    } else {
        n = ksfi_request_headers(id, reply_to, partition, (char *)buf, hs->h + hs->n);
    }
    hs->n += n;
}

ksf_err
ksfi_client_produce(ksf_client *cli, const char *topic, const void *value, size_t len,
                    const void *key, size_t key_len, const ksfi_client_hdrs *hs,
                    dr_ticket *t, ksf_errinfo *ei)
{
    if (t != &cli->plain_event) { /* shared and set once: never written here */
        t->delivery.fn = ksfi_client_on_delivery;
        t->cli = cli;
    }
    ksfi_kafka_out m = {.topic = topic,
                        .partition = KSFI_KAFKA_ANY_PARTITION,
                        .value = value,
                        .len = value ? len : 0,
                        .key = key,
                        .key_len = key ? key_len : 0,
                        .hdrs = hs ? hs->h : NULL,
                        .nhdrs = hs ? hs->n : 0,
                        .delivery = &t->delivery,
                        .queue_full_wait_ms = 0, /* the caller decides: retry or flush */
                        .what = t->request ? "a request" : "an event"};
    return ksfi_request_producer_produce(cli->producer, &m, ei);
}
