/*
 * Finishing a client's in-flight requests: taking one out of the in-flight table (and
 * off its reply slot), then running its callback with a local outcome (timeout, closed,
 * delivery failure) and freeing it.
 *
 * Locking: *_locked with cli->lock held; the callback runs without it.
 */
#ifndef KSF_CLIENT_REQUESTS_H
#define KSF_CLIENT_REQUESTS_H

#include "client/client_internal.h"

/* Unlink @p p from the table and its slot; under lock. The caller then delivers it
 * (after dropping the lock) and frees it. */
void ksfi_client_finish_locked(ksf_client *cli, ksfi_pending *p, ksfi_recent why);

/* Give a finished request back to the pool (or free it when the pool is full). NULL is
 * a no-op. Any thread; takes pool_lock, except on the client's reply thread while its
 * own list has room. */
void ksfi_client_pending_free(ksf_client *cli, ksfi_pending *p);

/* A zeroed ticket, reused from the client's pool when it has one; NULL when out of
 * memory. Any thread; takes pool_lock, except on the reply thread while its own list
 * has one. */
dr_ticket *ksfi_client_ticket_new(ksf_client *cli);

/* A request's ticket and record, zeroed, reused from the client's pools when they have
 * them: in one round of pool_lock (a request takes both), or none on the reply thread
 * while its own lists have both. Any thread. Either may be NULL when out of memory
 * (then false); give back what was taken. */
bool ksfi_client_request_new(ksf_client *cli, dr_ticket **t, ksfi_pending **p);

/* Give ticket @p t back to the pool (or free it). The shared plain_event ticket and
 * NULL are no-ops. Any thread; takes pool_lock, except on the reply thread while its
 * own list has room. */
void ksfi_client_ticket_free(ksf_client *cli, dr_ticket *t);

/* Mark the calling thread as @p cli's reply thread: its record and ticket pool calls
 * use lists of its own. Called once, first thing, by the reply thread. */
void ksfi_client_mark_reply_thread(const ksf_client *cli);

/* Free the pools' contents; at destruction, once no thread uses them. */
void ksfi_client_pools_free(ksf_client *cli);

/* Run finished request @p p's callback once with @p err and @p text (a local outcome),
 * then free @p p. Without the lock. */
void ksfi_client_deliver_local(ksf_client *cli, ksfi_pending *p, ksf_err err,
                               const char *text);

/* Fail request @p id with @p err unless it already finished. Takes the lock. */
void ksfi_client_fail_request(ksf_client *cli, const char *id, ksf_err err,
                              const char *text);

#endif
