/*
 * The client's request producer: a librdkafka producer for requests and events whose
 * delivery reports go to each message's ksfi_kafka_delivery (produce.h) and are served
 * by one thread of the client's (ksfi_request_producer_serve), which a callback
 * (ksfi_request_producer_on_report) wakes when reports arrive. No librdkafka type
 * crosses this header.
 *
 * Threads: produce, queued, wake and the Metadata helpers from any thread; serve from
 * one thread at a time; destroy after that thread stopped.
 */
#ifndef KSF_KAFKA_REQUEST_PRODUCER_H
#define KSF_KAFKA_REQUEST_PRODUCER_H

#include "base/config.h"
#include "base/log.h"
#include "kafka/produce.h"

#include <stdatomic.h>
#include <stdbool.h>

typedef struct ksfi_request_producer ksfi_request_producer;

/**
 * A producer with client id @p client_id, configured from @p cfg like every ksf producer
 * (ksfi_kafka_conf). Its log lines go to @p log, which must outlive it.
 * Errors: KSF_EINVAL naming a property librdkafka refused, KSF_EKAFKA, KSF_ENOMEM.
 */
ksf_err ksfi_request_producer_new(const ksf_config *cfg, const char *client_id,
                                  const ksfi_logger *log, ksfi_request_producer **out,
                                  ksf_errinfo *ei);

/**
 * Fail whatever is still queued or in flight (its delivery reports run, with
 * KSF_EKAFKA, within @p flush_ms, on this thread), then free @p p. NULL is a no-op.
 */
void ksfi_request_producer_destroy(ksfi_request_producer *p, int flush_ms);

/** Produce @p m (ksfi_kafka_produce on this producer; see produce.h). */
ksf_err ksfi_request_producer_produce(ksfi_request_producer *p, const ksfi_kafka_out *m,
                                      ksf_errinfo *ei);

/** Messages produced and not yet reported (queued, in flight, or reports unserved). */
int ksfi_request_producer_queued(ksfi_request_producer *p);

/** Serve delivery reports for up to @p timeout_ms (returns early when woken). */
void ksfi_request_producer_serve(ksfi_request_producer *p, int timeout_ms);

/**
 * Have @p fn(@p arg) called whenever a delivery report (or another event of the
 * producer) arrives while none was waiting to be served, so that a thread that sleeps
 * elsewhere (the client's reply thread, in its consumer poll) can be woken to serve it.
 * @p fn runs on one of librdkafka's threads, or on a producing one, while librdkafka
 * holds the producer queue's lock: it must only wake (ksfi_reply_consumer_wake) and
 * must not call into this producer. NULL @p fn: no more calls. Call it before the
 * first produce or while nothing produces.
 */
void ksfi_request_producer_on_report(ksfi_request_producer *p, void (*fn)(void *arg),
                                     void *arg);

/** Make a serve in progress (or the next one) return at once. Any thread. */
void ksfi_request_producer_wake(ksfi_request_producer *p);

/**
 * Wait until a broker answers (ksfi_reach_brokers on this producer, see reach.h): at
 * most @p timeout_ms (0: no limit), ending early with KSF_ECLOSED when @p stop
 * (optional) becomes true. Errors: KSF_EKAFKA naming the addresses, KSF_ECLOSED.
 */
ksf_err ksfi_request_producer_reach(ksfi_request_producer *p, const ksf_config *cfg,
                                    int timeout_ms, atomic_bool *stop, ksf_errinfo *ei);

/**
 * Does topic @p topic exist? A Metadata request for all topics (within @p timeout_ms):
 * asking for the one topic would create it on a broker that auto-creates topics (and
 * on the embedded broker always). Unknown (an error) counts as existing.
 */
bool ksfi_request_producer_topic_exists(ksfi_request_producer *p, const char *topic,
                                        int timeout_ms);

#endif
