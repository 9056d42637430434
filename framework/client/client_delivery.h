/*
 * The client's delivery thread: serves the request producer's delivery reports (emit
 * callbacks, the KSF_EKAFKA outcome of a request that could not be delivered) and
 * wakes ksf_client_flush after each poll.
 */
#ifndef KSF_CLIENT_DELIVERY_H
#define KSF_CLIENT_DELIVERY_H

#include "client/client_internal.h"

/* The delivery report of a message produced with dr_ticket @p d (its first member);
 * frees the ticket (but the client's plain_event). Runs on the delivery thread, or on
 * the destroying one for what destroy purges. */
void ksfi_client_on_delivery(ksfi_kafka_delivery *d, const ksfi_kafka_report *r);

/* The thread's body (pthread_create with the client); returns once cli->stop_dr is set
 * and the producer queue woken. */
void *ksfi_client_delivery_main(void *arg);

#endif
