/*
 * The client's delivery thread: serves the request producer's delivery reports (emit
 * callbacks, the KSF_EKAFKA outcome of a request that could not be delivered) and
 * wakes ksf_client_flush after each poll.
 */
#ifndef KSF_CLIENT_DELIVERY_H
#define KSF_CLIENT_DELIVERY_H

#include "client/client_internal.h"

/* The producer's delivery report callback (its opaque is the client); frees the
 * message's dr_ticket. Runs on the delivery thread. */
void ksfi_client_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);

/* The thread's body (pthread_create with the client); returns once cli->stop_dr is set
 * and the producer queue woken. */
void *ksfi_client_delivery_main(void *arg);

#endif
