/*
 * The one way ksf produces a message: value, key and codec headers to a topic (and
 * partition), with a delivery report that reaches the caller's own object, never a
 * librdkafka type. Server replies, dead letters and client requests all go through it.
 *
 * Delivery: a producer built with ksfi_kafka_conf_delivery calls, on the thread that
 * polls it (ksfi_kafka_poll, or inside ksfi_kafka_flush), the ksfi_kafka_delivery a
 * message was produced with, once per message that was accepted (ksfi_kafka_produce
 * returned KSF_OK). Embed the ksfi_kafka_delivery in the object the report is about and
 * recover it with container-of arithmetic.
 *
 * Threads: ksfi_kafka_produce may be called from any thread (librdkafka's producer is
 * thread-safe); reports run on whichever thread polls the producer.
 */
#ifndef KSF_KAFKA_PRODUCE_H
#define KSF_KAFKA_PRODUCE_H

#include "base/errinfo.h"
#include "codec/codec.h"

#include <stdbool.h>
#include <stdint.h>

/** Let librdkafka's partitioner (or the key's hash) choose the partition. */
#define KSFI_KAFKA_ANY_PARTITION (-1)

/** The outcome of one produced message, borrowed for the duration of the report. */
typedef struct ksfi_kafka_report {
    ksf_err err;       /* KSF_OK when the broker acknowledged it, else KSF_EKAFKA */
    const char *error; /* librdkafka's sentence when err != KSF_OK, else NULL */
    const char *topic; /* the topic it was produced to */
    int32_t partition; /* where it landed (-1 when it failed before a partition) */
    int64_t offset;    /* its offset, -1 when failed or unknown */
} ksfi_kafka_report;

typedef struct ksfi_kafka_delivery ksfi_kafka_delivery;

/** Called once per accepted message with its outcome (the thread polling the producer).
 */
typedef void (*ksfi_kafka_delivered_fn)(ksfi_kafka_delivery *d,
                                        const ksfi_kafka_report *r);

/** Where a message's delivery report goes: embed it in the object it concerns. */
struct ksfi_kafka_delivery {
    ksfi_kafka_delivered_fn fn;
};

/**
 * A producer's topic handles, kept between messages: librdkafka's own lookup of a topic
 * handle by name (rd_kafka_topic_new, then rd_kafka_topic_destroy) costs ~300
 * instructions per message; a kept handle is found by a lock-free scan of the names
 * produced to so far. Bounded (KSFI_KAFKA_TOPICS_MAX names: a server answering many
 * reply topics looks the rest up per message as before). One per producer: never
 * share one between producers.
 */
typedef struct ksfi_kafka_topics ksfi_kafka_topics;

/** How many topic handles a ksfi_kafka_topics keeps. */
#define KSFI_KAFKA_TOPICS_MAX 32

/** A new, empty set of kept topic handles. Errors: KSF_ENOMEM. */
ksf_err ksfi_kafka_topics_new(ksfi_kafka_topics **out, ksf_errinfo *ei);

/** How many topic handles @p t keeps now (at most KSFI_KAFKA_TOPICS_MAX). */
size_t ksfi_kafka_topics_kept(ksfi_kafka_topics *t);

/** Release the kept handles; call it BEFORE destroying the producer they belong to
 * (librdkafka wants every topic handle released first). NULL is a no-op. */
void ksfi_kafka_topics_free(ksfi_kafka_topics *t);

/** One message to produce. Everything is borrowed and copied by the call. */
typedef struct ksfi_kafka_out {
    const char *topic;
    int32_t partition; /* KSFI_KAFKA_ANY_PARTITION or a partition number */
    const void *value; /* NULL with len 0: a null value (a tombstone) */
    size_t len;
    const void *key; /* NULL: no key */
    size_t key_len;
    const ksfi_header *hdrs; /* in wire order; may be NULL with nhdrs 0 */
    size_t nhdrs;
    /* Where the delivery report goes; NULL: nobody wants it. */
    ksfi_kafka_delivery *delivery;
    /* How long to keep retrying while librdkafka's queue is full (it drains as
     * reports are served); 0: fail at once with the "queue full" sentence. */
    int queue_full_wait_ms;
    /* The waiting thread serves the producer's delivery reports itself meanwhile (for a
     * producer whose reports are served by the threads that produce, not by a poll
     * thread of its own: nobody else may be free to drain the queue). */
    bool serve_while_full;
    /* What the message is, for error sentences: "a reply", "a dead letter". */
    const char *what;
    /* The producer's kept topic handles; NULL: the handle is looked up per message. */
    ksfi_kafka_topics *topics;
} ksfi_kafka_out;

/* Opaque here so that callers need not include rdkafka.h. */
struct rd_kafka_s;
struct rd_kafka_conf_s;

/**
 * Produce @p m on producer @p rk. On KSF_OK the delivery report follows exactly once;
 * on an error none does.
 * Errors: KSF_EKAFKA naming m->what and m->topic with librdkafka's reason (an unknown
 * topic, a full queue after m->queue_full_wait_ms, a closed producer); KSF_EINVAL for
 * a NULL topic.
 */
ksf_err ksfi_kafka_produce(struct rd_kafka_s *rk, const ksfi_kafka_out *m,
                           ksf_errinfo *ei);

/**
 * Make a producer configuration deliver reports to each message's ksfi_kafka_delivery
 * (before rd_kafka_new). Replaces any dr_msg_cb set before.
 */
void ksfi_kafka_conf_delivery(struct rd_kafka_conf_s *conf);

/**
 * A producer for @p cfg's brokers and producer properties, named @p client_id, whose
 * delivery reports go to each message's ksfi_kafka_delivery. @p opaque must be a struct
 * whose FIRST member is a ksfi_logger (librdkafka's log lines go there; kafka.h).
 * @p what names it in the error ("the server's reply producer").
 * Errors: KSF_EINVAL naming a refused property, KSF_EKAFKA, KSF_ENOMEM.
 */
ksf_err ksfi_kafka_producer_new(const ksf_config *cfg, const char *client_id,
                                void *opaque, const char *what, struct rd_kafka_s **out,
                                ksf_errinfo *ei);

/** Serve the producer's delivery reports for up to @p timeout_ms (0: what waits now). */
void ksfi_kafka_poll(struct rd_kafka_s *rk, int timeout_ms);

/** Where "delivery reports are waiting" goes: embed it in the object that serves them
 * and recover that with container-of arithmetic (as ksfi_kafka_delivery). */
typedef struct ksfi_kafka_reports_hook ksfi_kafka_reports_hook;
struct ksfi_kafka_reports_hook {
    /* Called on one of librdkafka's threads, with one of its locks held, when a report
     * (or another event) is queued while none was waiting: it must only note it and
     * wake whoever serves the reports (ksfi_kafka_poll with 0), never call librdkafka
     * nor wait for long. */
    void (*fn)(ksfi_kafka_reports_hook *hook);
};

/**
 * Call @p hook whenever @p rk's delivery reports go from none to some waiting, so that
 * the threads that produce can serve them (ksfi_kafka_poll with 0) without a poll
 * thread of their own. @p hook NULL turns it off; it must stay valid until then, and
 * be turned off before the producer is destroyed. Threads: any.
 */
void ksfi_kafka_on_reports(struct rd_kafka_s *rk, ksfi_kafka_reports_hook *hook);

/**
 * Wait up to @p timeout_ms for every queued message's delivery report. Returns how
 * many are still not delivered (0: all were).
 */
/* Messages produced whose delivery report is not served yet. */
int ksfi_kafka_queued(struct rd_kafka_s *rk);

int ksfi_kafka_flush(struct rd_kafka_s *rk, int timeout_ms);

/** Drop what is queued or in flight; their delivery reports (failed) run now. */
void ksfi_kafka_purge(struct rd_kafka_s *rk);

/** Destroy a producer (after flush or purge). NULL is a no-op. */
void ksfi_kafka_producer_destroy(struct rd_kafka_s *rk);

#endif
