/*
 * The client's reply thread: polls the reply consumer, matches replies to requests in
 * flight and runs their callbacks, expires deadlines, and pauses the reply partitions
 * while the client is idle. It sleeps until the earliest deadline (at most
 * POLL_CAP_MS); a send with an earlier deadline wakes it.
 */
#ifndef KSF_CLIENT_REPLY_THREAD_H
#define KSF_CLIENT_REPLY_THREAD_H

#include "client/client_internal.h"

/* The thread's body (pthread_create with the client); returns once cli->stop_reply is
 * set and the consumer queue woken. */
void *ksfi_client_reply_main(void *arg);

#endif
