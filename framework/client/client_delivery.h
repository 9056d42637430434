/*
 * What a delivery report of the client's request producer does (emit callbacks, the
 * KSF_EKAFKA outcome of a request that could not be delivered). The reports are served
 * by the reply thread (client_reply_thread.c), or by a flush on the destroying thread
 * once that stopped, or on the reply thread itself (ksf_client_flush).
 */
#ifndef KSF_CLIENT_DELIVERY_H
#define KSF_CLIENT_DELIVERY_H

#include "client/client_internal.h"

/* The delivery report of a message produced with dr_ticket @p d (its first member);
 * frees the ticket (but the client's plain_event). Runs on whichever thread serves the
 * producer's reports (see above), without cli->lock. */
void ksfi_client_on_delivery(ksfi_kafka_delivery *d, const ksfi_kafka_report *r);

#endif
