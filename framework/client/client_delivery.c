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

/* The ticket of every event emitted without a callback (see client_internal.h). */
dr_ticket ksfi_plain_event;

void
ksfi_client_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    ksf_client *cli = opaque;
    dr_ticket *t = msg->_private;
    if (!t) {
        return;
    }
    char text[KSF_ERRINFO_TEXT_SIZE] = "";
    if (msg->err) {
        snprintf(text, sizeof text, "%s to %s failed: %s",
                 t->request ? "request" : "event", rd_kafka_topic_name(msg->rkt),
                 rd_kafka_err2str(msg->err));
    }
    if (t->request) {
        if (msg->err) {
            ksfi_client_fail_request(cli, t->id, KSF_EKAFKA, text);
        }
    } else {
        if (!msg->err) {
            atomic_fetch_add_explicit(&cli->emitted, 1, memory_order_relaxed);
        }
        if (t->cb) {
            t->cb(msg->err ? KSF_EKAFKA : KSF_OK, text, t->user);
        }
    }
    if (t != &ksfi_plain_event) {
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
        rd_kafka_queue_poll_callback(cli->producer_q, POLL_CAP_MS);
    }
    return NULL;
}
