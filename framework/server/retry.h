/*
 * Event retries and dead letters (docs/retries.md). A failing event handler is run
 * again in place on its partition, which is held meanwhile, with exponential backoff;
 * after the last failure the original message goes to the pattern's dead-letter
 * topic and its offset is committed once the broker acknowledged that produce.
 * Requests are never retried here: the caller owns that decision.
 */
#ifndef KSF_RETRY_H
#define KSF_RETRY_H

#include "kafka/kafka.h"
#include "kafka/produce.h"

/* What a due retry does (ksf_ctx.retry_kind). */
enum { KSFI_RETRY_RERUN = 0, KSFI_RETRY_DEAD_LETTER = 1 };

/* Headers added to a dead-lettered message (after the original ones). */
#define KSFI_DLQ_HDR_ERROR "ksf_dlq_error"
#define KSFI_DLQ_HDR_TOPIC "ksf_dlq_topic"
#define KSFI_DLQ_HDR_PARTITION "ksf_dlq_partition"
#define KSFI_DLQ_HDR_OFFSET "ksf_dlq_offset"
#define KSFI_DLQ_HDR_ATTEMPTS "ksf_dlq_attempts"

/*
 * An event handler finished with @p status != KSF_OK; the handler's reference of
 * @p ctx is still held. Schedules a re-run, starts dead-lettering, or (both off) logs
 * and releases it so the event is committed. The reference is taken over either way.
 */
void ksfi_retry_event_failed(ksf_ctx *ctx, ksf_err status);

/* A worker runs a due retry of @p ctx (a re-run or a dead-letter produce). */
void ksfi_retry_run(ksf_ctx *ctx);

/* The delivery report of @p ctx's dead-letter produce (producer poll thread). */
void ksfi_retry_dead_letter_delivered(ksf_ctx *ctx, const ksfi_kafka_report *r);

/* The delay before re-run @p attempt (1-based): backoff_ms * 2^(attempt-1), capped
 * at @p max_ms, then drawn from [d/2, d] so that many failing partitions spread out. */
int ksfi_retry_backoff_ms(int backoff_ms, int max_ms, int attempt);

#endif
