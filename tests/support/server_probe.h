/*
 * The server tests' world (test_server*.c): the fixture's broker and server (no ksf
 * client), a plain librdkafka producer for requests and a collector on the one reply
 * topic every pattern answers on (KSFT_PROBE_REPLY, as a Spring caller would), plus
 * assertions on the exact reply bytes and headers NestJS would send.
 */
#ifndef KSF_TEST_SERVER_PROBE_H
#define KSF_TEST_SERVER_PROBE_H

#include "codec/wire.h"
#include "fixture.h"
#include "raw_kafka.h"

#include <stddef.h>

#define KSFT_PROBE_REPLY "t.reply" /* 1 partition */
#define KSFT_PROBE_WAIT_MS 10000
#define KSFT_PROBE_GROUP "nestjs-group-server"

typedef struct ksft_probe {
    ksft_world w; /* w.srv: the server under test, once served */
    ksft_producer *prod;
    ksft_collector *replies; /* on KSFT_PROBE_REPLY */
} ksft_probe;

/* Broker, @p spec's topics and settings (spec->handlers: the server, started), the
 * reply topic, producer and collector; the configuration answers every pattern on
 * KSFT_PROBE_REPLY. Without handlers the case builds the server with
 * ksft_world_server(&p->w, ...) and starts it with ksft_world_serve. */
void ksft_probe_open(ksft_probe *p, const ksft_world_spec *spec);
void ksft_probe_close(ksft_probe *p);

/* Send a request on @p topic with id @p id (reply to KSFT_PROBE_REPLY, partition 0)
 * and return its first reply; fails the test when none comes. */
const ksft_msg *ksft_probe_request(ksft_probe *p, const char *topic, const char *id,
                                   const void *value, size_t len);

/* The server's counters now. */
ksf_server_stats ksft_probe_stats(const ksft_probe *p);

/* Stop the server and read what is left of its replies: exactly @p replies in all
 * (none answered twice), or the test fails. The server's counters are final then
 * (KSFT_ASSERT_SERVER_STATS(p->w.srv, ...)). */
void ksft_probe_stop(ksft_probe *p, size_t replies);

/* Wait until the server counter @p field reaches at least @p n; fails the test if not. */
#define KSFT_PROBE_WAIT_STAT(p, field, n)                                                \
    KSFT_WAIT_UNTIL(ksft_probe_stats(p).field >= (uint64_t)(n), KSFT_PROBE_WAIT_MS,      \
                    "server counter " #field " >= %llu (at %llu)",                       \
                    (unsigned long long)(n),                                             \
                    (unsigned long long)ksft_probe_stats(p).field)

/* Bytes equal (NULL and empty differ); @p what names them in the failure. */
void ksft_assert_bytes(const void *got, size_t got_len, const void *want, size_t want_len,
                       const char *what);

/* Exact header list: names in order, values byte for byte. Every reply also ends with
 * a traceparent, whose random span id tests/test_trace.c checks; here only its size. */
void ksft_assert_headers(const ksft_msg *m, const ksfi_header *want, size_t n);

/* A value reply: the value plus kafka_correlationId and kafka_nest-is-disposed. */
void ksft_assert_value_reply(const ksft_msg *m, const char *id, const char *value,
                             size_t len);

/* An error reply: null value, kafka_correlationId, kafka_nest-err, is-disposed. */
void ksft_assert_error_reply(const ksft_msg *m, const char *id, const char *err);

/* The last header @p name of @p m is present and holds the @p len bytes of @p want. */
void ksft_assert_header(const ksft_msg *m, const char *name, const char *want,
                        size_t len);

/* Header rows for ksft_assert_headers and ksft_produce. */
#define KSFT_H(name, text) ((ksfi_header){(name), (text), sizeof(text) - 1})
#define KSFT_ID(id) KSFT_H(KSFI_HDR_CORRELATION_ID, id)
#define KSFT_DISPOSED ((ksfi_header){KSFI_HDR_NEST_IS_DISPOSED, "\0", 1})
#define KSFT_ERR(text) KSFT_H(KSFI_HDR_NEST_ERR, text)

#endif
