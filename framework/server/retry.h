/*
 * Event retries and dead letters (docs/retries.md): the decisions, as pure functions.
 * A failing event handler is run again in place on its partition, which is held
 * meanwhile, with exponential backoff; after the last failure the original message
 * goes to the pattern's dead-letter topic and its offset is committed once the broker
 * acknowledged that produce. Requests are never retried here: the caller owns that
 * decision. Carrying the decisions out (holding the partition, producing the dead
 * letter) is the message lifecycle's (message.c) and the dispatcher's.
 */
#ifndef KSF_RETRY_H
#define KSF_RETRY_H

#include "server/policy.h"

/* Headers added to a dead-lettered message (after the original ones). */
#define KSFI_DLQ_HDR_ERROR "ksf_dlq_error"
#define KSFI_DLQ_HDR_TOPIC "ksf_dlq_topic"
#define KSFI_DLQ_HDR_PARTITION "ksf_dlq_partition"
#define KSFI_DLQ_HDR_OFFSET "ksf_dlq_offset"
#define KSFI_DLQ_HDR_ATTEMPTS "ksf_dlq_attempts"

/* What to do after an event handler's failure. */
typedef enum ksfi_retry_step {
    KSFI_RETRY_STEP_RERUN,       /* run it again after the delay */
    KSFI_RETRY_STEP_DEAD_LETTER, /* produce it to the pattern's dead-letter topic */
    KSFI_RETRY_STEP_GIVE_UP,     /* both off: log it and commit past it */
} ksfi_retry_step;

/*
 * The step after failed run @p attempts (1-based) under @p pol: a re-run while
 * attempts <= pol->retries (*delay_ms gets its backoff), else the dead letter when
 * pol->dlq is set, else giving up (*delay_ms 0 for both).
 */
ksfi_retry_step ksfi_retry_next(const ksfi_policy *pol, int attempts, int *delay_ms);

/* The delay before re-run @p attempt (1-based): backoff_ms * 2^(attempt-1), capped
 * at @p max_ms, then drawn from [d/2, d] so that many failing partitions spread out. */
int ksfi_retry_backoff_ms(int backoff_ms, int max_ms, int attempt);

#endif
