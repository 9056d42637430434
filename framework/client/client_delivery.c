/*
 * The client's delivery reports (client_delivery.h). Every produced message carries a
 * dr_ticket: a request's fails the request when it could not be delivered (its reply
 * callback gets KSF_EKAFKA); an event's counts it and runs the emit callback. The
 * reply thread serves them between its polls: a thread of their own cost a wake-up per
 * batch of reports, and librdkafka frees a message's headers on the thread that serves
 * its report, which was then never the one that allocated them (the sending thread,
 * in a reply callback, is the reply thread).
 *
 * Locking: the report callback takes cli->lock only to fail a request
 * (ksfi_client_fail_request); user callbacks run without it.
 */
#include "client/client_delivery.h"

#include "client/client_requests.h"

void
ksfi_client_on_delivery(ksfi_kafka_delivery *d, const ksfi_kafka_report *r)
{
    dr_ticket *t = (dr_ticket *)d; /* its first member */
    ksf_client *cli = t->cli;
    char text[KSF_ERRINFO_TEXT_SIZE];
    text[0] = '\0'; /* not "" as an initialiser: that zeroes all 320 bytes each time */
    if (r->err) {
        snprintf(text, sizeof text, "%s to %s failed: %s",
                 t->request ? "request" : "event", r->topic, r->error);
    }
    if (t->request) {
        if (r->err) {
            ksfi_client_fail_request(cli, t->id, KSF_EKAFKA, text);
        }
    } else {
        atomic_fetch_add_explicit(r->err ? &cli->emit_failures : &cli->emitted, 1,
                                  memory_order_relaxed);
        if (t->cb) {
            atomic_fetch_sub_explicit(&cli->callbacks_owed, 1, memory_order_relaxed);
            t->cb(r->err ? KSF_EKAFKA : KSF_OK, text, t->user);
        }
    }
    ksfi_client_ticket_free(cli, t); /* back to the pool; plain_event stays */
}
