/*
 * The client's delivery thread (client_delivery.h): it serves the producer's delivery
 * reports. Every produced message carries a dr_ticket: a request's fails the request
 * when it could not be delivered (its reply callback gets KSF_EKAFKA); an event's counts
 * it and runs the emit callback. After each poll it wakes ksf_client_flush, which waits
 * for the producer's queue to empty.
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
    char text[KSF_ERRINFO_TEXT_SIZE] = "";
    if (r->err) {
        snprintf(text, sizeof text, "%s to %s failed: %s",
                 t->request ? "request" : "event", r->topic, r->error);
    }
    if (t->request) {
        if (r->err) {
            ksfi_client_fail_request(cli, t->id, KSF_EKAFKA, text);
        }
    } else {
        if (!r->err) {
            atomic_fetch_add_explicit(&cli->emitted, 1, memory_order_relaxed);
        }
        if (t->cb) {
            t->cb(r->err ? KSF_EKAFKA : KSF_OK, text, t->user);
        }
    }
    if (t != &cli->plain_event) {
        ksfi_free(t);
    }
}

void *
ksfi_client_delivery_main(void *arg)
{
    ksf_client *cli = arg;
    for (;;) {
        pthread_mutex_lock(&cli->lock);
        bool stop = cli->stop_dr;
        pthread_cond_broadcast(&cli->cond); /* flush() re-checks the queue length */
        pthread_mutex_unlock(&cli->lock);
        if (stop) {
            break;
        }
        ksfi_request_producer_serve(cli->producer, POLL_CAP_MS);
    }
    return NULL;
}
