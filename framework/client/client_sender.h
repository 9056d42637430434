/*
 * The client's sender thread: produces the requests ksf_client_send could not produce
 * at once (their reply topic has no partition yet, or they are the first to their
 * pattern), in order per reply topic.
 *
 * Locking: ksfi_client_queue_locked with cli->lock held; the thread takes the lock
 * itself and produces without it.
 */
#ifndef KSF_CLIENT_SENDER_H
#define KSF_CLIENT_SENDER_H

#include "client/client_internal.h"

/* Hand @p q (owned from now on) to the sender thread, behind @p t's other waiting
 * sends; under lock. */
void ksfi_client_queue_locked(ksf_client *cli, reply_topic *t, queued_send *q);

/* Free @p q and what it owns. NULL is a no-op. */
void ksfi_client_queued_free(queued_send *q);

/* The thread's body (pthread_create with the client); returns once cli->closing is
 * set and cli->cond broadcast. */
void *ksfi_client_sender_main(void *arg);

#endif
