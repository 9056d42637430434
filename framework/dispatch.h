/*
 * The worker pool: runs handlers on N threads while keeping per-partition order, and
 * tracks which offsets are complete (handler finished and every reply acknowledged) so
 * that only the highest contiguous completed offset + 1 is stored for commit.
 *
 * Threads: submit, assign, revoke, sync_pause, drain and stop are called on the
 * consumer thread only; ksfi_dispatch_done from any thread.
 */
#ifndef KSF_DISPATCH_H
#define KSF_DISPATCH_H

#include "log.h"

#include <librdkafka/rdkafka.h>

typedef struct ksfi_dispatch ksfi_dispatch;

/* Queued (not yet started) messages of one partition at which it is paused. */
#define KSFI_DISPATCH_PAUSE_AT 256
/* ... and the queue length at which it is resumed. */
#define KSFI_DISPATCH_RESUME_AT 64

/* Create an idle pool (no threads yet). Errors: KSF_ENOMEM. */
ksf_err ksfi_dispatch_new(ksfi_dispatch **out, const ksfi_logger *lg);

/* Free the pool and every context still held (deferred, never finished). NULL ok. */
void ksfi_dispatch_destroy(ksfi_dispatch *d);

/*
 * Start @p workers threads serving messages of @p consumer (used to store offsets and
 * to pause/resume partitions). Errors: KSF_ENOMEM, KSF_EINVAL when a thread cannot start.
 */
ksf_err ksfi_dispatch_start(ksfi_dispatch *d, int workers, rd_kafka_t *consumer,
                            ksf_errinfo *ei);

/* Queue @p ctx (owned by the pool from now on) behind its partition's earlier ones. */
void ksfi_dispatch_submit(ksfi_dispatch *d, ksf_ctx *ctx);

/* The partitions were assigned: start tracking them afresh. */
void ksfi_dispatch_assign(ksfi_dispatch *d, const rd_kafka_topic_partition_list_t *parts);

/*
 * The partitions are being revoked: drop their queued messages (another member will
 * get them), wait up to @p timeout_ms for started ones, store the final offsets and
 * forget them. Returns the number of messages still unfinished at the deadline.
 */
size_t ksfi_dispatch_revoke(ksfi_dispatch *d,
                            const rd_kafka_topic_partition_list_t *parts, int timeout_ms);

/* Apply pending pause/resume decisions to the consumer (consumer thread). */
void ksfi_dispatch_sync_pause(ksfi_dispatch *d);

/* Stop starting handlers (queued messages are dropped unstored: they are delivered
 * again), then wait up to @p timeout_ms until every started one is complete.
 * Returns the number still unfinished. */
size_t ksfi_dispatch_drain(ksfi_dispatch *d, int timeout_ms);

/* Join the workers and stop using the consumer (contexts finished later store
 * nothing). The pool can be destroyed afterwards. */
void ksfi_dispatch_stop(ksfi_dispatch *d);

/* The most messages one partition ever had queued (not started): the memory bound the
 * pause/resume hysteresis keeps, for tests and diagnostics. Threads: any. */
size_t ksfi_dispatch_queued_high(ksfi_dispatch *d);

/* @p ctx is complete: its offset may be stored. Called once per context. */
void ksfi_dispatch_done(ksf_ctx *ctx);

#endif
