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

/* Free a finished request. NULL is a no-op. */
void ksfi_client_pending_free(ksfi_pending *p);

/* Run finished request @p p's callback once with @p err and @p text (a local outcome),
 * then free @p p. Without the lock. */
void ksfi_client_deliver_local(ksfi_pending *p, ksf_err err, const char *text);

/* Fail request @p id with @p err unless it already finished. Takes the lock. */
void ksfi_client_fail_request(ksf_client *cli, const char *id, ksf_err err,
                              const char *text);

#endif
