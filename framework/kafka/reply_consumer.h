/*
 * The client's reply consumer, as the client and its reply-partition providers see it:
 * a librdkafka consumer that is never subscribed and never commits. Partitions are
 * assigned by hand at explicit offsets (incremental assign), paused while the client is
 * idle and resumed with a seek, and polled for replies and end-of-partition events.
 * No librdkafka type crosses this header.
 *
 * Threads: one thread polls (the client's reply thread); assign, unassign, pause,
 * resume, wake and the Metadata helpers may be called from any other thread.
 */
#ifndef KSF_KAFKA_REPLY_CONSUMER_H
#define KSF_KAFKA_REPLY_CONSUMER_H

#include "base/config.h"
#include "base/log.h"
#include "codec/codec.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct ksfi_reply_consumer ksfi_reply_consumer;

/**
 * A reply consumer for client id @p client_id in group @p group_id (librdkafka needs
 * one; it never joins it), configured from @p cfg like every ksf consumer
 * (ksfi_kafka_conf), with auto-commit off and end-of-partition events on. Its log lines
 * go to @p log, which must outlive it.
 * Errors: KSF_EINVAL naming a property librdkafka refused, KSF_EKAFKA, KSF_ENOMEM.
 */
ksf_err ksfi_reply_consumer_new(const ksf_config *cfg, const char *client_id,
                                const char *group_id, const ksfi_logger *log,
                                ksfi_reply_consumer **out, ksf_errinfo *ei);

/** Close and free @p rc (its partitions are unassigned). NULL is a no-op. */
void ksfi_reply_consumer_destroy(ksfi_reply_consumer *rc);

/** What one poll returned. */
typedef enum {
    KSFI_REPLY_NOTHING = 0, /* the timeout passed, or the poll was woken */
    KSFI_REPLY_MESSAGE,     /* a message: value, headers, offset */
    KSFI_REPLY_END,         /* end of partition: offset is the next one to fetch */
    KSFI_REPLY_ERROR,       /* a consumer error: error says what */
} ksfi_reply_event_kind;

/** One polled event; valid until ksfi_reply_event_release or the next poll. */
typedef struct ksfi_reply_event {
    ksfi_reply_event_kind kind;
    const char *topic; /* NULL when the event names no topic */
    int32_t partition;
    int64_t offset;
    const void *value; /* NULL: a null value */
    size_t len;
    ksfi_header *hdrs; /* in wire order, borrowing from the message; the array is
                          the consumer's and is reused by its next poll */
    size_t nhdrs;
    const char *error; /* KSFI_REPLY_ERROR: librdkafka's sentence */
    void *impl;        /* the underlying message */
} ksfi_reply_event;

/**
 * Wait up to @p timeout_ms for the next event of the assigned partitions. Release
 * every event, whatever the result. A poll that returns a message also takes what else
 * is waiting (up to 32), which the next polls return at once, in order, without
 * asking librdkafka's queue again.
 * Errors: KSF_ENOMEM reading a message's headers (*ev is still the message, for its
 * position, but without headers).
 */
ksf_err ksfi_reply_consumer_poll(ksfi_reply_consumer *rc, int timeout_ms,
                                 ksfi_reply_event *ev);

/** Free what @p ev holds. Safe on a KSFI_REPLY_NOTHING event. */
void ksfi_reply_event_release(ksfi_reply_event *ev);

/**
 * Whether the next poll returns an event at once from the batch the last one took,
 * without asking librdkafka's queue (and so without waiting). Only the polling
 * thread may ask.
 */
bool ksfi_reply_consumer_buffered(const ksfi_reply_consumer *rc);

/** Make a poll in progress (or the next one) return at once. Any thread. */
void ksfi_reply_consumer_wake(ksfi_reply_consumer *rc);

/** Where a partition's fetching stands, as far as its user knows: an offset, or -1. */
typedef int64_t (*ksfi_reply_position_fn)(void *arg, const char *topic,
                                          int32_t partition);

/**
 * Pause every assigned partition, or resume them; on resume, each partition for which
 * @p position (optional) gives an offset >= 0 is also sought there. The seek is what
 * makes the resume prompt: librdkafka 2.0.2's resume only clears a flag and does not
 * wake the broker thread, which then sleeps up to 1 s before it fetches again; a seek
 * to an absolute offset wakes it, and it is applied after the resume.
 */
void ksfi_reply_consumer_set_paused(ksfi_reply_consumer *rc, bool pause,
                                    ksfi_reply_position_fn position, void *arg);

/**
 * Start fetching @p topic [@p partition] at its high watermark, so that no reply older
 * than now is replayed. A new topic's partition is waited for (leader election) until
 * @p deadline (monotonic ms). Errors: KSF_EKAFKA naming the partition.
 */
ksf_err ksfi_reply_consumer_fetch_from_end(ksfi_reply_consumer *rc, const char *topic,
                                           int32_t partition, int64_t deadline,
                                           ksf_errinfo *ei);

/** Stop fetching @p topic [@p partition] (failures are logged). */
void ksfi_reply_consumer_unfetch(ksfi_reply_consumer *rc, const char *topic,
                                 int32_t partition);

/**
 * The partition count of @p topic (ksfi_kafka_partition_count on this consumer: a
 * broker that allows it auto-creates the topic). Errors: KSF_ETIMEDOUT,
 * KSF_ENOPARTITION, KSF_EKAFKA.
 */
ksf_err ksfi_reply_consumer_partition_count(ksfi_reply_consumer *rc, const char *topic,
                                            int64_t deadline, int *count,
                                            ksf_errinfo *ei);

#endif
