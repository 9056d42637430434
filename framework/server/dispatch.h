/*
 * The worker pool: runs handlers on N threads while keeping per-partition order, and
 * tracks which offsets are complete (handler finished and every reply acknowledged) so
 * that only the highest contiguous completed offset + 1 is stored for commit.
 *
 * Isolation (docs/isolation.md): each pattern may hold at most its concurrency limit
 * of started messages whose handler has not finished (a reply waiting for the broker's
 * acknowledgement holds no slot; an event waiting for its retry does); a watch thread
 * fires request time budgets and makes event retries due (docs/retries.md).
 *
 * Runs: a worker that starts a partition goes on with that partition's next messages
 * (its run: what was fetched together), so their replies are produced back to back
 * from one thread, without a hand-off per message. A run ends when the partition has
 * nothing more that may start, or, when other partitions wait for a worker, after
 * KSFI_DISPATCH_RUN_MAX messages or KSFI_DISPATCH_RUN_SLICE_MS: a slow handler thus
 * hands the rest of its partition's run back at once (docs/isolation.md).
 *
 * Delivery reports: the workers serve them (ksfi_dispatch_set_serve), after a run,
 * between messages when reports are waiting, and when woken idle for them
 * (ksfi_dispatch_reports_ready); the offsets completed meanwhile are stored once,
 * with one partition list, after the reports served together. Completions on other
 * threads (a deferred handler's finish, a budget) store at once, as before.
 *
 * Inline mode (no workers, server.workers=0): the consumer thread runs the ready
 * partitions' runs and serves the reports itself, in ksfi_dispatch_run_inline after
 * each batch it polled; what becomes ready on another thread (a deferred finish, a
 * due retry, reports) calls the wake hook (ksfi_dispatch_set_wake) so that its poll
 * returns at once, as a partition that may resume does in both modes. Revoke and
 * drain serve the reports they wait for.
 *
 * Threads: set_policy, submit, assign, revoke, sync_pause, run_inline, drain and stop
 * are called on the consumer thread only; ksfi_dispatch_done, arm_budget, retry_later and
 * reports_ready from any thread.
 *
 * Locking: one lock per pool guards its partitions, patterns and counters and every
 * record's pool fields (record.h). It is held while ops->free runs (which must not
 * call the pool) and never while the other ops run, so those may call back in.
 */
#ifndef KSF_DISPATCH_H
#define KSF_DISPATCH_H

#include "base/log.h"
#include "base/policy.h"
#include "kafka/consumer.h"
#include "server/record.h"

typedef struct ksfi_dispatch ksfi_dispatch;

/* A partition's window: its messages queued (fetched, not started) or started and not
 * complete (handlers running or deferred, replies the broker has not acknowledged).
 * At this many messages, or this many bytes of keys and values, the partition is
 * paused, and resumed when it is down to a quarter of both (server.partition.window
 * and server.partition.window.bytes set them). A pause is cheap for a stalled
 * partition and dear for a busy one: the resume refetches what the consumer had
 * already fetched past the pause, so the defaults sit well above what a client's
 * requests in flight keep there (256 paused a partition under a single client with
 * 256 requests in flight about 400 times a second; issue 20). */
#define KSFI_DISPATCH_WINDOW_DEFAULT 4096
#define KSFI_DISPATCH_WINDOW_BYTES_DEFAULT (64 * 1024 * 1024)

/* A run goes on while other partitions wait for a worker for at most this many
 * messages... */
#define KSFI_DISPATCH_RUN_MAX 64
/* ... and this long (a handler that takes longer ends its run on its own). */
#define KSFI_DISPATCH_RUN_SLICE_MS 2
/* Inline mode: the consumer thread goes back to polling after running handlers for
 * this long (rebalances and pauses wait for it meanwhile). */
#define KSFI_DISPATCH_INLINE_PASS_MS 50

/*
 * What the pool does with a record, supplied by its owner (message.c): the pool keeps
 * order, slots, offsets and timers, and never looks inside a message. The single
 * place a handler is run for a record is ops->run (and ops->run_due for a retry).
 */
typedef struct ksfi_dispatch_ops {
    /* A worker starts @p rec: run its handler and release the worker's reference and
     * (unless deferred) the handler's. @p rec may be freed when this returns. */
    void (*run)(ksfi_record *rec);
    /* A worker runs a due retry of @p rec (ksfi_dispatch_retry_later). */
    void (*run_due)(ksfi_record *rec);
    /* @p rec's time budget ran out (the watch thread, holding a reference, which the
     * pool drops with ops->release afterwards). */
    void (*budget_expired)(ksfi_record *rec);
    /* Drop one reference of @p rec (its last calls ksfi_dispatch_done). */
    void (*release)(ksfi_record *rec);
    /* Free @p rec (complete, dropped, or left at destroy). */
    void (*free)(ksfi_record *rec);
} ksfi_dispatch_ops;

/* Create an idle pool (no threads yet) calling @p ops (borrowed: it must outlive the
 * pool). Errors: KSF_ENOMEM. */
ksf_err ksfi_dispatch_new(ksfi_dispatch **out, const ksfi_logger *lg,
                          const ksfi_dispatch_ops *ops);

/* Free the pool and every record still held (deferred, never finished). NULL ok. */
void ksfi_dispatch_destroy(ksfi_dispatch *d);

/*
 * Start @p workers threads serving messages of @p consumer (used to store offsets and
 * to pause/resume partitions); 0: inline mode, the consumer thread runs the handlers
 * in ksfi_dispatch_run_inline (only the watch thread starts). Errors: KSF_ENOMEM,
 * KSF_EINVAL when a thread cannot start.
 */
ksf_err ksfi_dispatch_start(ksfi_dispatch *d, int workers, ksfi_kafka_handle *consumer,
                            ksf_errinfo *ei);

/*
 * Use @p pc (borrowed; must outlive the pool) for the patterns' concurrency limits and
 * time budgets, on a server of @p workers threads serving @p npatterns patterns. Before
 * start; without it patterns are unlimited and have no budget.
 */
void ksfi_dispatch_set_policy(ksfi_dispatch *d, const ksfi_policy_config *pc, int workers,
                              size_t npatterns);

/*
 * Serve delivery reports with @p fn (@p user): the workers call it (unlocked) after a
 * run and whenever ksfi_dispatch_reports_ready said reports wait; records completed by
 * the reports it serves have their offsets stored together afterwards. Before start;
 * without it the workers serve nothing (the owner polls its producer elsewhere).
 */
void ksfi_dispatch_set_serve(ksfi_dispatch *d, void (*fn)(void *user), void *user);

/* Delivery reports are waiting: an idle worker (or the next one between messages)
 * serves them. Threads: any, including librdkafka's (it only takes the pool's lock). */
void ksfi_dispatch_reports_ready(ksfi_dispatch *d);

/*
 * Inline mode: run what is ready (partitions' runs, due retries) and serve waiting
 * delivery reports on this thread, for up to KSFI_DISPATCH_INLINE_PASS_MS, then store
 * the offsets completed. Returns true when work is left (the pass ran out of time):
 * the caller polls without waiting and comes back. Consumer thread; a no-op when
 * nothing waits.
 */
bool ksfi_dispatch_run_inline(ksfi_dispatch *d);

/* Call @p fn (@p user), under the pool's lock, when the consumer thread has work that
 * came from another thread: a partition to resume (any mode), anything made ready or
 * reports (inline mode). It must only end that thread's poll (and not call the pool).
 * Cleared by stop. NULL: none. */
void ksfi_dispatch_set_wake(ksfi_dispatch *d, void (*fn)(void *user), void *user);

/* Queue @p rec (owned by the pool from now on) behind its partition's earlier ones. */
void ksfi_dispatch_submit(ksfi_dispatch *d, ksfi_record *rec);

/* Queue @p n records (owned by the pool from now on) in their order, under one
 * acquisition of the pool's lock, and wake the workers they need once it is released:
 * what the consumer thread does with the messages of one poll batch. */
void ksfi_dispatch_submit_many(ksfi_dispatch *d, ksfi_record **recs, size_t n);

/* The partitions were assigned: start tracking them afresh. */
void ksfi_dispatch_assign(ksfi_dispatch *d, const ksfi_kafka_tp *parts, size_t n);

/*
 * The partitions are being revoked: drop their queued messages (another member will
 * get them), wait up to @p timeout_ms for started ones, store the final offsets and
 * forget them. Returns the number of messages still unfinished at the deadline.
 */
size_t ksfi_dispatch_revoke(ksfi_dispatch *d, const ksfi_kafka_tp *parts, size_t n,
                            int timeout_ms);

/* Apply pending pause/resume decisions to the consumer (consumer thread). */
void ksfi_dispatch_sync_pause(ksfi_dispatch *d);

/* Stop starting handlers (queued messages are dropped unstored: they are delivered
 * again), then wait up to @p timeout_ms until every started one is complete (the
 * workers go on serving delivery reports meanwhile) and store their offsets.
 * Returns the number still unfinished. */
size_t ksfi_dispatch_drain(ksfi_dispatch *d, int timeout_ms);

/* Store what completed, join the workers and stop using the consumer (records
 * finished later store nothing). The pool can be destroyed afterwards. */
void ksfi_dispatch_stop(ksfi_dispatch *d);

/* The most messages one partition ever had queued (not started): the memory bound the
 * pause/resume hysteresis keeps, for tests and diagnostics. Threads: any. */
size_t ksfi_dispatch_queued_high(ksfi_dispatch *d);

/* The messages queued (not started) on all partitions now. Threads: any. */
size_t ksfi_dispatch_queued_now(ksfi_dispatch *d);

/* @p rec's handler is done (returned, or finished when deferred) and nothing will run
 * it again: its pattern's slot is free for the next message, while the reply may still
 * be on its way to the broker. Idempotent. Threads: any. */
void ksfi_dispatch_handler_done(ksfi_record *rec);

/* @p rec's handler returned after ksf_ctx_defer: give its pattern's slot to the next
 * message and count it against the deferred limit until its finish
 * (ksfi_dispatch_handler_done). A no-op when the finish already came. Threads: any. */
void ksfi_dispatch_parked(ksfi_record *rec);

/* Pause a partition at @p count unfinished messages or @p bytes of them, resume at a
 * quarter of both (KSFI_DISPATCH_WINDOW_DEFAULT); 0 keeps the current value. */
void ksfi_dispatch_set_window(ksfi_dispatch *d, size_t count, size_t bytes);

/* At most @p max deferred records waiting for their finish (server.deferred.max);
 * before start. 0: no limit. */
void ksfi_dispatch_set_deferred_max(ksfi_dispatch *d, int max);

/* @p rec (submitted) is complete: its offset may be stored. Called once per record. */
void ksfi_dispatch_done(ksfi_record *rec);

/* @p rec is a request about to run its handler: start its pattern's time budget. */
void ksfi_dispatch_arm_budget(ksfi_record *rec);

/*
 * Hold @p rec's partition and make @p rec due again in @p delay_ms, when a worker
 * calls ops->run_due on it. The caller keeps the handler's reference for it. Returns
 * false when the partition was revoked meanwhile: then nothing is scheduled and the
 * caller releases that reference (the next owner gets the message again). A retry
 * still waiting at revoke or stop is abandoned unstored, for the same reason.
 */
bool ksfi_dispatch_retry_later(ksfi_record *rec, int kind, int delay_ms);

/* Messages that waited for their pattern's concurrency limit. Threads: any. */
uint64_t ksfi_dispatch_throttled(ksfi_dispatch *d);
/* Pauses applied because a partition's window was full (ksf_server_stats). */
uint64_t ksfi_dispatch_pauses(ksfi_dispatch *d);

#endif
