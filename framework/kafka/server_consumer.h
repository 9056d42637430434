/*
 * The server's consumer, as librdkafka mechanics behind plain calls: creation with the
 * server's settings, subscription, the poll loop's events, the rebalance callback
 * (cooperative-sticky's incremental assign/unassign and an eager strategy's full
 * assign are told apart here), the offset-reset notice librdkafka only logs, committed
 * offsets, commits, the wake-up and the bounded close. What to do on an assignment, a
 * revocation or a reset is the server's (server/server.c): it hands those decisions
 * down as ksfi_sc_ops and never sees librdkafka.
 *
 * Threads: create, subscribe, poll, commit and close on the server's consumer thread
 * (the rebalance ops run there, inside poll or close); the offset_reset op on
 * librdkafka's threads; wake from any thread.
 */
#ifndef KSF_KAFKA_SERVER_CONSUMER_H
#define KSF_KAFKA_SERVER_CONSUMER_H

#include "base/config.h"
#include "base/log.h"
#include "kafka/consumer.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct ksfi_server_consumer ksfi_server_consumer;

/** One partition of an assignment and where it starts: a negative offset is one of
 * librdkafka's logical offsets (as handed over: the committed offset, else where
 * auto.offset.reset says; from ksfi_sc_committed: none committed). */
typedef struct ksfi_sc_part {
    const char *topic; /* borrowed for the duration of the op */
    int32_t partition;
    int64_t offset;
} ksfi_sc_part;

/**
 * What the server decides, called by the adapter. @p user is ksfi_sc_config.user.
 * assigned: the partitions now owned (an empty list in a cooperative rebalance that
 * leaves this member's share unchanged); the op may set parts[i].offset to start a
 * partition there; the adapter applies the assignment after the op returns.
 * revoked: partitions given away in an orderly rebalance or at close; the adapter
 * unassigns them after the op returns, so the op can finish and commit their work.
 * lost: as revoked, when the group took them without asking (session timed out);
 * NULL calls revoked. offset_reset: librdkafka reset @p topic [@p partition], whose
 * position @p at was out of range (librdkafka's threads; may be NULL).
 */
typedef struct ksfi_sc_ops {
    void (*assigned)(void *user, ksfi_sc_part *parts, size_t n);
    void (*revoked)(void *user, const ksfi_sc_part *parts, size_t n);
    void (*lost)(void *user, const ksfi_sc_part *parts, size_t n);
    void (*offset_reset)(void *user, const char *topic, int32_t partition, int64_t at);
} ksfi_sc_ops;

/** How to create the consumer. */
typedef struct ksfi_sc_config {
    const ksf_config *cfg;
    const char *client_id;
    const char *group_id;
    const char *group_instance_id; /* NULL: a dynamic member */
    /* Set over the configuration when non-NULL (the server passes them when the user
     * did not set these properties). */
    const char *assignment_strategy; /* partition.assignment.strategy */
    const char *offset_reset;        /* auto.offset.reset */
    const ksfi_logger *log;          /* copied; librdkafka's lines go there */
    const ksfi_sc_ops *ops;          /* borrowed for the consumer's life */
    void *user;
} ksfi_sc_config;

/** What poll returned. */
typedef enum ksfi_sc_kind {
    KSFI_SC_NOTHING, /* nothing within the timeout (or an end-of-partition notice) */
    KSFI_SC_MESSAGE,
    KSFI_SC_ERROR,
} ksfi_sc_kind;

/** The kinds of consumer error the server tells apart. */
typedef enum ksfi_sc_error {
    KSFI_SC_ERR_OTHER,                /* transient: logged and carried on */
    KSFI_SC_ERR_FATAL,                /* the consumer is unusable */
    KSFI_SC_ERR_FENCED,               /* fatal: another member took group.instance.id */
    KSFI_SC_ERR_UNKNOWN_TOPIC,        /* a subscribed topic does not exist (yet) */
    KSFI_SC_ERR_INCONSISTENT_PROTOCOL /* the group's members use another protocol */
} ksfi_sc_error;

/** One poll's result. */
typedef struct ksfi_sc_event {
    ksfi_sc_kind kind;
    ksfi_kafka_msg *msg; /* MESSAGE: the caller's, freed with ksfi_kafka_message_free */
    ksfi_sc_error error; /* ERROR */
    int kafka_err;       /* ERROR: librdkafka's code (for FATAL/FENCED, the cause's) */
    char topic[256];     /* ERROR: the topic it concerns, or "?" */
    char text[512];      /* ERROR: librdkafka's text */
} ksfi_sc_event;

/**
 * Create the consumer: @p sc's base configuration (ksfi_kafka_conf), its
 * group.instance.id, the strategy and reset when given, the log and rebalance callbacks.
 * Errors: KSF_EINVAL naming the property librdkafka refused, KSF_EKAFKA, KSF_ENOMEM.
 */
ksf_err ksfi_sc_new(const ksfi_sc_config *sc, ksfi_server_consumer **out,
                    ksf_errinfo *ei);

/** The partition.assignment.strategy in force ("?" when librdkafka has none). */
const char *ksfi_sc_strategy(const ksfi_server_consumer *c);

/** The librdkafka handle, for the dispatcher's per-partition calls (consumer.h). */
ksfi_kafka_handle *ksfi_sc_handle(ksfi_server_consumer *c);

/**
 * Wait until a broker answers (ksfi_reach_brokers). Errors: KSF_EKAFKA naming the
 * addresses, KSF_ECLOSED when @p stop became true.
 */
ksf_err ksfi_sc_reach(ksfi_server_consumer *c, const ksf_config *cfg, int timeout_ms,
                      atomic_bool *stop, ksf_errinfo *ei);

/**
 * Subscribe to @p topics. Each is first named in a Metadata request, until
 * @p deadline (ms on ksfi_clock_ms), so that a broker that creates topics on demand
 * creates it now: librdkafka 2.0.2's group subscription never asks for that, and a
 * real broker then leaves the subscription empty until the next metadata refresh
 * (measured on Kafka 4.4: 30-60 s). A topic that fails there is logged as a warning.
 * Errors: KSF_EKAFKA.
 */
ksf_err ksfi_sc_subscribe(ksfi_server_consumer *c, const char *const *topics, size_t n,
                          int64_t deadline, ksf_errinfo *ei);

/** Poll for up to @p timeout_ms into @p ev (rebalance ops run inside). */
void ksfi_sc_poll(ksfi_server_consumer *c, int timeout_ms, ksfi_sc_event *ev);

/**
 * The committed offsets of @p parts into parts[i].offset (negative: none), waiting at
 * most @p timeout_ms. Errors: KSF_EKAFKA.
 */
ksf_err ksfi_sc_committed(ksfi_server_consumer *c, ksfi_sc_part *parts, size_t n,
                          int timeout_ms, ksf_errinfo *ei);

/** The high watermark of @p topic [@p partition] (ksfi_kafka_high_watermark). */
ksf_err ksfi_sc_high_watermark(ksfi_server_consumer *c, const char *topic,
                               int32_t partition, int64_t deadline, int64_t *hi,
                               ksf_errinfo *ei);

/**
 * Commit the stored offsets (@p parts NULL) or @p parts' offsets, waiting at most
 * @p wait_ms. Nothing to commit is KSF_OK. Errors: KSF_ETIMEDOUT when the coordinator
 * did not answer in time, KSF_EKAFKA; the sentence is librdkafka's text.
 */
ksf_err ksfi_sc_commit(ksfi_server_consumer *c, const ksfi_sc_part *parts, size_t n,
                       int wait_ms, ksf_errinfo *ei);

/** End a poll now (ksf_server_stop's wake-up). Any thread. */
void ksfi_sc_wake(ksfi_server_consumer *c);

/**
 * Leave the group within @p wait_ms, running the revoke op: the rebalance events queued
 * while nobody polled are served first (as in a poll), then the close's own. Fetched
 * messages still queued are dropped unstored. Returns true when the consumer closed in
 * time; else *why (static text or @p buf) says why not.
 */
bool ksfi_sc_close(ksfi_server_consumer *c, int wait_ms, const char **why, char *buf,
                   size_t size);

/** Destroy the consumer; an unfinished close is not retried. NULL is a no-op. */
void ksfi_sc_destroy(ksfi_server_consumer *c);

#endif
