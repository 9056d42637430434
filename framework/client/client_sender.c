/*
 * ksf_client's sender thread. ksf_client_send never waits: what it cannot produce at
 * once comes here. For each reply topic with waiting sends, in order: reach the
 * brokers (once per client, for at most broker.unreachable.timeout.ms, so that a
 * wrong address fails the requests within seconds and names the address), look
 * whether the pattern's topic exists before the first request to it is produced (the
 * produce would create it; client_reply_thread.c's timeout_text uses the answer), acquire
 * the reply partition, then produce the waiting sends. A failure fails them through their
 * callbacks.
 *
 * Locking: the waiting sends are taken off their topic, and accounted against its reply
 * slot, under cli->lock in the same critical section in which the slot is found (see
 * take_waiting_locked), so a revoke cannot release the slot in between; the broker
 * check, the Metadata request, the acquire and the produces run without the lock.
 */
#include "client/client_sender.h"

#include "client/client_produce.h"
#include "client/client_requests.h"
#include "client/client_slots.h"

void
ksfi_client_queued_free(queued_send *q)
{
    if (q) {
        ksfi_client_hdrs_free(&q->hdrs);
        ksfi_free(q->pattern);
        ksfi_free(q->value);
        ksfi_free(q->key);
        ksfi_free(q);
    }
}

void
ksfi_client_queue_locked(ksf_client *cli, reply_topic *t, queued_send *q)
{
    q->next = NULL;
    if (!t->waiting) {
        t->waiting_tail = &t->waiting;
    }
    *t->waiting_tail = q;
    t->waiting_tail = &q->next;
    pthread_cond_broadcast(&cli->cond);
}

/* A topic with sends to do, or NULL; under lock. One another thread acquires (connect)
 * waits until that ends. */
static reply_topic *
sender_next_locked(ksf_client *cli)
{
    for (reply_topic *t = cli->topics; t; t = t->next) {
        if (t->waiting && t->state != TOPIC_ACQUIRING) {
            return t;
        }
    }
    return NULL;
}

/* The latest deadline of @p t's waiting sends still in flight (0: none); under lock. */
static int64_t
waiting_deadline_locked(ksf_client *cli, const reply_topic *t)
{
    int64_t latest = 0;
    for (const queued_send *q = t->waiting; q; q = q->next) {
        ksfi_pending *p = ksfi_inflight_find(cli->inflight, q->id, strlen(q->id));
        if (p && p->deadline_ms > latest) {
            latest = p->deadline_ms;
        }
    }
    return latest;
}

/* Produce queued send @p q to reply partition @p partition of its pattern's reply
 * topic. Errors: those of the produce. */
static ksf_err
produce_queued(ksf_client *cli, queued_send *q, int32_t partition, ksf_errinfo *ei)
{
    char topic[256];
    unsigned char buf[KSFI_REQUEST_HEADERS_BUF];
    dr_ticket *t = ksfi_client_ticket_new(cli);
    if (!t) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    t->request = true;
    memcpy(t->id, q->id, sizeof t->id);
    snprintf(topic, sizeof topic, "%s%s", q->pattern, KSFI_REPLY_SUFFIX);
    /* ksfi_client_hdrs_copy left room for them */
    ksfi_client_add_request_headers(cli, &q->hdrs, q->id, topic, partition, buf);
    ksf_err e = ksfi_client_produce(cli, q->pattern, q->value, q->len, q->key, q->key_len,
                                    &q->hdrs, t, ei);
    if (e) {
        ksfi_client_ticket_free(cli, t);
    }
    return e;
}

/* What sender_serve took off a topic: its waiting sends and the partition they
 * advertise (-1 when there is none: they are failed). */
typedef struct taken {
    queued_send *list;
    int32_t partition;
} taken;

/* Take @p t's waiting sends into @p out and, with @p slot (NULL: they are to be
 * failed), account them against it; under lock. */
static void
take_waiting_locked(ksf_client *cli, reply_topic *t, reply_slot *slot, taken *out)
{
    out->list = t->waiting;
    out->partition = slot ? slot->partition : -1;
    t->waiting = NULL;
    for (queued_send *q = out->list; q; q = q->next) {
        cli->in_hand++; /* flush counts them until they are produced */
    }
    for (queued_send *q = out->list; q && slot; q = q->next) {
        ksfi_pending *p = ksfi_inflight_find(cli->inflight, q->id, strlen(q->id));
        if (p) {
            p->slot = slot;
            p->reply_partition = slot->partition;
            p->queued = false;
            p->topic_missing = t->missing;
            slot->outstanding++;
        }
    }
}

/* ksfi_client_reply_slot_get's callback: the slot is there, take the sends. */
static void
take_with_slot(ksf_client *cli, reply_topic *t, void *arg)
{
    take_waiting_locked(cli, t, t->slot, arg);
}

/* Acquire @p t's reply partition while a waiting send still has time, in slices so
 * that destroy does not wait for a whole request timeout and sends queued meanwhile
 * extend the wait; on KSF_OK the waiting sends are in @p out. */
static ksf_err
sender_acquire(ksf_client *cli, reply_topic *t, taken *out, ksf_errinfo *ei)
{
    for (;;) {
        pthread_mutex_lock(&cli->lock);
        int64_t deadline = waiting_deadline_locked(cli, t);
        pthread_mutex_unlock(&cli->lock);
        int64_t now = ksfi_client_now_ms();
        int64_t until = now + 1000 < deadline ? now + 1000 : deadline;
        ksf_err e =
            ksfi_client_reply_slot_get(cli, t->name, until, take_with_slot, out, ei);
        if (e != KSF_ETIMEDOUT || ksfi_client_now_ms() >= deadline ||
            atomic_load(&cli->stop_sender)) {
            return e;
        }
    }
}

/* Produce (or fail) every waiting send of @p t. */
static void
sender_serve(ksf_client *cli, reply_topic *t)
{
    ksf_errinfo ei = {0};
    ksf_err e = KSF_OK;
    pthread_mutex_lock(&cli->lock);
    bool reached = cli->reached, checked = t->checked;
    pthread_mutex_unlock(&cli->lock);
    if (!reached) {
        e = ksfi_request_producer_reach(cli->producer, cli->cfg,
                                        cli->cfg->broker_unreachable_ms,
                                        &cli->stop_sender, &ei);
        pthread_mutex_lock(&cli->lock);
        cli->reached = !e;
        pthread_mutex_unlock(&cli->lock);
    }
    if (!e && !checked) {
        size_t n = strlen(t->name) - (sizeof KSFI_REPLY_SUFFIX - 1);
        char pattern[256];
        snprintf(pattern, sizeof pattern, "%.*s", (int)n, t->name);
        /* All topics are listed: asking for the one would create it (see
         * ksfi_request_producer_topic_exists), which must not happen before the first
         * produce. */
        bool missing = !ksfi_request_producer_topic_exists(cli->producer, pattern, 2000);
        pthread_mutex_lock(&cli->lock);
        t->missing = missing;
        t->checked = true;
        pthread_mutex_unlock(&cli->lock);
        if (missing) {
            ksfi_log(&cli->log, KSF_LOG_WARNING, "client",
                     "topic %s does not exist: no service consumes it yet (requests "
                     "to it will time out unless one starts)",
                     pattern);
        }
    }
    taken got = {NULL, -1};
    if (e || (e = sender_acquire(cli, t, &got, &ei))) {
        pthread_mutex_lock(&cli->lock);
        take_waiting_locked(cli, t, NULL, &got);
        pthread_mutex_unlock(&cli->lock);
    }
    queued_send *list = got.list;
    while (list) {
        queued_send *q = list;
        list = q->next;
        ksf_errinfo pe = {0};
        if (e && atomic_load(&cli->stop_sender)) {
            /* destroy fails them with KSF_ECLOSED, on its own thread as documented */
        } else if (e) {
            ksfi_client_fail_request(cli, q->id, e, ei.text);
        } else if (produce_queued(cli, q, got.partition, &pe)) {
            ksfi_client_fail_request(cli, q->id, pe.code, pe.text);
        } else {
            pthread_mutex_lock(&cli->lock);
            ksfi_pending *p = ksfi_inflight_find(cli->inflight, q->id, strlen(q->id));
            if (p) {
                ksfi_pmetrics_inc(p->metrics, KSFI_M_SENT);
            }
            pthread_mutex_unlock(&cli->lock);
            atomic_fetch_add_explicit(&cli->sent, 1, memory_order_relaxed);
        }
        ksfi_client_queued_free(q);
        pthread_mutex_lock(&cli->lock);
        cli->in_hand--;
        pthread_mutex_unlock(&cli->lock);
    }
}

void *
ksfi_client_sender_main(void *arg)
{
    ksf_client *cli = arg;
    pthread_mutex_lock(&cli->lock);
    for (;;) {
        reply_topic *t = NULL;
        while (!cli->closing && !(t = sender_next_locked(cli))) {
            pthread_cond_wait(&cli->cond, &cli->lock);
        }
        if (cli->closing) {
            break;
        }
        pthread_mutex_unlock(&cli->lock);
        sender_serve(cli, t);
        pthread_mutex_lock(&cli->lock);
    }
    pthread_mutex_unlock(&cli->lock);
    return NULL;
}
