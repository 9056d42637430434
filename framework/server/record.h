/*
 * The dispatcher's record of one consumed message: where it came from (topic,
 * partition, offset), where it is in the worker pool (its partition's window, its
 * pattern's slot), its retry and time-budget state, and the references that keep it
 * alive until every reply was acknowledged. The handler never sees it: the record
 * holds the handler's struct ksf_ctx (ctx.h) and hands out only that.
 *
 * Ownership: server/message.c creates and frees records; server/dispatch.c keeps them
 * in its partition windows from submit until they are complete or dropped.
 *
 * Locking, per field group (every other field is written once, before submit):
 *   - the "pool" fields: the dispatcher's lock (dispatch.c), always;
 *   - `pending`: atomic, any thread;
 *   - `attempts`, `started_us`: only the thread running or finishing a handler run
 *     (runs of one message never overlap).
 */
#ifndef KSF_RECORD_H
#define KSF_RECORD_H

#include "kafka/consumer.h"
#include "server/ctx.h"
#include "server/pipeline.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct ksfi_part;
struct ksfi_dispatch;
struct ksfi_msg_env;

/* Where a record is in its retry (ksfi_record.retry_state). */
enum { KSFI_RETRY_NONE, KSFI_RETRY_WAITING, KSFI_RETRY_DUE };

/* What a due retry does (ksfi_record.retry_kind). */
enum { KSFI_RETRY_RERUN = 0, KSFI_RETRY_DEAD_LETTER = 1 };

typedef struct ksfi_record {
    /* The handler's view and the reply state: the only part handlers see. */
    ksf_ctx ctx;
    /* The server this message came to (message.c), set at creation. */
    struct ksfi_msg_env *env;
    /* Owned; freed with the record, or before it once a request is settled (the
     * handler's result acted on and its reply produced: op_run in message.c). */
    ksfi_kafka_msg *msg;
    /* Borrowed: from msg, then, once queued, the dispatcher's copy of the partition's
     * topic, which outlives every record (so it stays valid after msg is freed). */
    const char *topic;
    int32_t partition;
    int64_t offset;
    size_t bytes; /* key and value: what the partition's window counts */
    /* Delivery reports of this record's produces (replies, its dead letter). */
    ksfi_kafka_delivery delivery;
    /* References: the handler (until it returns or finishes), the worker running it,
     * and one per produce in flight. At zero the record is complete. */
    atomic_int pending;

    /* ---- pool fields (dispatch.c), guarded by the dispatcher's lock ---- */
    struct ksfi_dispatch *dispatch;
    struct ksfi_part *part;
    uint64_t epoch;
    struct ksfi_record *next;
    bool started;
    bool done;
    bool slot;         /* holds one of its pattern's concurrency slots */
    bool holding;      /* holds its partition: a failed event awaiting its retry */
    bool throttled;    /* waited for a slot (counted once) */
    bool parked;       /* deferred after its handler returned: server.deferred.max */
    bool handler_done; /* ksfi_dispatch_handler_done ran */
    bool abandoned;    /* a retry given up at revoke or stop: never stored */
    int retry_state;   /* KSFI_RETRY_* */
    int retry_kind;    /* what to do when due */
    int64_t retry_at_ms;
    struct ksfi_record *retry_next; /* the partition's list of due retries */
    int64_t budget_at_ms; /* the time budget's deadline (monotonic ms); 0: none */
    int budget_ms;        /* that budget, for the sentences about it */
    bool budget_sent;     /* the dispatcher fired the budget (or found it moot) */

    /* ---- the message's life (message.c) ---- */
    uint64_t started_us; /* when the handler was called: its latency metric */
    int attempts;        /* handler runs so far; see the locking note above */
    /* pipeline: this run's walk through its handler's middleware chain (pipeline.h,
     * which documents its locking). */
    ksfi_pipeline_run pl;
} ksfi_record;

/* The record holding @p ctx (every server ctx is a record's). */
static inline ksfi_record *
ksfi_record_of(ksf_ctx *ctx)
{
    return (ksfi_record *)(void *)((char *)ctx - offsetof(ksfi_record, ctx));
}

#endif
