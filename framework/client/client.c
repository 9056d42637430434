/*
 * ksf_client: NestJS ClientKafka. This file is the client's lifecycle: the librdkafka
 * handles (one producer for requests and events, one reply consumer that is never
 * subscribed: reply partitions come from a provider, see reply_provider.h), its
 * threads, connect, destroy, and what it reports (stats, metrics).
 *
 * The other files, each one concern, in layers (a file includes only those below it):
 *   client_send.c          send, call, emit, flush (the caller's thread)
 *   client_sender.c        the sender thread: sends that could not be produced at once
 *   client_reply_thread.c  the reply thread: poll, match replies, expire deadlines,
 *                          serve the producer's delivery reports
 *   client_delivery.c      what a delivery report does (a failed request, an event)
 *   client_produce.c       request headers and the produce itself
 *   client_requests.c      finishing in-flight requests (exactly one callback each)
 *   client_slots.c         reply topics, their partitions (slots), drain, idle pause
 *   client_internal.h      struct ksf_client, the shared types and the lock's rules
 *
 * Locking: see client_internal.h. Here, destroy stops the threads one by one (each
 * joined without the lock held), then fails what is still in flight with KSF_ECLOSED
 * on the destroying thread.
 */
#include "client/client_delivery.h"
#include "client/client_reply_thread.h"
#include "client/client_requests.h"
#include "client/client_sender.h"
#include "client/client_slots.h"

/* ---- handles and threads -------------------------------------------------------- */

static ksf_err
make_handles(ksf_client *cli, ksf_errinfo *ei)
{
    char *client_id = ksfi_config_client_id(cli->cfg, KSFI_CLIENT_POSTFIX);
    char *group_id = ksfi_config_group_id(cli->cfg, KSFI_CLIENT_POSTFIX);
    ksf_err e =
        client_id && group_id ? KSF_OK : ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    if (!e) {
        e = ksfi_request_producer_new(cli->cfg, client_id, &cli->log, &cli->producer, ei);
    }
    if (!e) {
        e = ksfi_reply_consumer_new(cli->cfg, client_id, group_id, &cli->log,
                                    &cli->consumer, ei);
    }
    ksfi_free(client_id);
    ksfi_free(group_id);
    return e;
}

static ksf_err
start_threads(ksf_client *cli, ksf_errinfo *ei)
{
    cli->reply_started = true; /* before it runs: it reads it (a flush in a callback) */
    if (pthread_create(&cli->reply_thread, NULL, ksfi_client_reply_main, cli) != 0) {
        cli->reply_started = false;
        return ksfi_fail(ei, KSF_ENOMEM, "cannot start the reply thread");
    }
    if (pthread_create(&cli->sender_thread, NULL, ksfi_client_sender_main, cli) != 0) {
        return ksfi_fail(ei, KSF_ENOMEM, "cannot start the sender thread");
    }
    cli->sender_started = true;
    return KSF_OK;
}

static void
stop_sender_thread(ksf_client *cli)
{
    if (!cli->sender_started) {
        return;
    }
    atomic_store(&cli->stop_sender, true);
    pthread_mutex_lock(&cli->lock);
    cli->closing = true;
    pthread_cond_broadcast(&cli->cond);
    pthread_mutex_unlock(&cli->lock);
    pthread_join(cli->sender_thread, NULL);
    cli->sender_started = false;
}

static void
stop_reply_thread(ksf_client *cli)
{
    if (!cli->reply_started) {
        return;
    }
    pthread_mutex_lock(&cli->lock);
    cli->stop_reply = true;
    pthread_mutex_unlock(&cli->lock);
    ksfi_reply_consumer_wake(cli->consumer);
    pthread_join(cli->reply_thread, NULL);
    /* From now on a flush serves the delivery reports itself (ksf_client_flush). */
    pthread_mutex_lock(&cli->lock);
    cli->reply_started = false;
    pthread_mutex_unlock(&cli->lock);
}

/* The request producer's callback when delivery reports arrive at its empty queue;
 * librdkafka's thread, which must not take cli->lock here. The reply thread serves
 * them before it next polls. A request's report does not wake it: the reply, or the
 * deadline, will, and while reports are owed it sleeps at most REPORT_WAIT_MS
 * (reply_main), so a request that could not be delivered still fails within that. A
 * wake-up per report was a third of the thread's wake-ups one request at a time, and
 * ~8% of the client's CPU there. It is woken at once when it planned a longer sleep
 * (the request was sent from another thread while it slept), and for reports somebody
 * waits for: an emit callback's, or any while a flush waits. */
static void
on_reports(void *arg)
{
    ksf_client *cli = arg;
    atomic_store(&cli->reports, true);
    if (atomic_load(&cli->flushing) > 0 || atomic_load(&cli->callbacks_owed) > 0 ||
        atomic_load(&cli->wake_at) > ksfi_client_now_ms() + REPORT_WAIT_MS) {
        ksfi_reply_consumer_wake(cli->consumer);
    }
}

/* ---- lifecycle ------------------------------------------------------------------- */

/* Free everything; the threads are stopped and no request is pending. */
static void
client_free(ksf_client *cli)
{
    /* Whatever is still queued fails now; its reports free the tickets. */
    ksfi_request_producer_destroy(cli->producer, 1000);
    while (cli->slots) {
        ksfi_client_slot_free_locked(cli, cli->slots);
    }
    if (cli->provider) {
        cli->provider->ops->destroy(cli->provider);
    }
    ksfi_reply_consumer_destroy(cli->consumer);
    while (cli->topics) {
        reply_topic *t = cli->topics;
        cli->topics = t->next;
        while (t->waiting) {
            queued_send *q = t->waiting;
            t->waiting = q->next;
            ksfi_client_queued_free(q);
        }
        ksfi_free(t->name);
        ksfi_free(t->metrics);
        ksfi_free(t);
    }
    ksfi_inflight_destroy(cli->inflight);
    ksf_config_destroy(cli->cfg);
    ksfi_client_pools_free(cli); /* after the producer: its last reports free tickets */
    pthread_cond_destroy(&cli->cond);
    pthread_mutex_destroy(&cli->pool_lock);
    pthread_mutex_destroy(&cli->lock);
    ksfi_free(cli);
}

static ksf_err
sync_init(ksf_client *cli)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        return KSF_ENOMEM;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&cli->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        return KSF_ENOMEM;
    }
    if (pthread_mutex_init(&cli->lock, NULL) != 0) {
        pthread_cond_destroy(&cli->cond);
        return KSF_ENOMEM;
    }
    if (pthread_mutex_init(&cli->pool_lock, NULL) != 0) {
        pthread_mutex_destroy(&cli->lock);
        pthread_cond_destroy(&cli->cond);
        return KSF_ENOMEM;
    }
    return KSF_OK;
}

ksf_err
ksf_client_new(ksf_client **out, const ksf_config *cfg, ksf_errinfo *ei)
{
    if (out) {
        *out = NULL;
    }
    if (!out || !cfg) {
        return ksfi_fail(ei, KSF_EINVAL, "ksf_client_new: out and cfg must not be NULL");
    }
    ksf_client *cli = ksfi_calloc(1, sizeof *cli);
    if (!cli || sync_init(cli) != KSF_OK) {
        ksfi_free(cli);
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    ksf_err e;
    if (ksf_config_dup(cfg, &cli->cfg) != KSF_OK ||
        ksfi_inflight_new(RECENT_IDS, &cli->inflight) != KSF_OK) {
        e = ksfi_fail(ei, KSF_ENOMEM, "out of memory");
        goto fail;
    }
    cli->log = ksfi_logger_from_config(cli->cfg);
    cli->plain_event = (dr_ticket){.delivery.fn = ksfi_client_on_delivery, .cli = cli};
    cli->idle_since = ksfi_client_now_ms();
    ksfi_idgen_init(&cli->ids);
    if ((e = make_handles(cli, ei))) {
        goto fail;
    }
    ksfi_request_producer_on_report(cli->producer, on_reports, cli);
    ksfi_reply_host host = {cli->consumer, &cli->log, ksfi_client_on_revoked, cli,
                            &cli->rebalances};
    if (cli->cfg->client_reply_provider == KSFI_REPLY_STATIC) {
        e = ksfi_reply_static_new(cli->cfg, &host, &cli->provider);
        e = e ? ksfi_fail(ei, e, "out of memory") : KSF_OK;
    } else {
        e = ksfi_reply_group_new(cli->cfg, &host, &cli->provider, ei);
    }
    if (e) {
        goto fail;
    }
    if ((e = start_threads(cli, ei))) {
        goto fail;
    }
    *out = cli;
    return KSF_OK;
fail:
    stop_sender_thread(cli);
    stop_reply_thread(cli);
    client_free(cli);
    return e;
}

void
ksf_client_destroy(ksf_client *cli)
{
    if (!cli) {
        return;
    }
    pthread_mutex_lock(&cli->lock);
    cli->closing = true;
    pthread_cond_broadcast(&cli->cond);
    pthread_mutex_unlock(&cli->lock);
    stop_sender_thread(cli); /* queued sends are failed below with the rest */
    stop_reply_thread(cli);
    for (;;) {
        pthread_mutex_lock(&cli->lock);
        ksfi_pending *p = ksfi_inflight_any(cli->inflight);
        if (p) {
            ksfi_client_finish_locked(cli, p, KSFI_RECENT_NONE);
        }
        pthread_mutex_unlock(&cli->lock);
        if (!p) {
            break;
        }
        ksfi_client_deliver_local(cli, p, KSF_ECLOSED,
                                  "the client was destroyed before the reply came");
    }
    /* Sends never produced were failed above; flush must not wait for them. */
    pthread_mutex_lock(&cli->lock);
    for (reply_topic *t = cli->topics; t; t = t->next) {
        while (t->waiting) {
            queued_send *q = t->waiting;
            t->waiting = q->next;
            ksfi_client_queued_free(q);
        }
    }
    pthread_mutex_unlock(&cli->lock);
    ksf_client_flush(cli, DESTROY_FLUSH_MS, NULL); /* serves the reports itself */
    client_free(cli);
}

ksf_err
ksf_client_subscribe_to_response_of(ksf_client *cli, const char *pattern, ksf_errinfo *ei)
{
    char name[256];
    ksf_err e;
    if (!cli) {
        return ksfi_fail(ei, KSF_EINVAL, "client is NULL");
    }
    if ((e = ksfi_check_topic(pattern, true, ei))) {
        return e;
    }
    snprintf(name, sizeof name, "%s%s", pattern, KSFI_REPLY_SUFFIX);
    pthread_mutex_lock(&cli->lock);
    if (cli->closing) {
        e = ksfi_fail(ei, KSF_ECLOSED, "the client is being destroyed");
    } else if (!ksfi_client_topic_get_locked(cli, name)) {
        e = ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    pthread_mutex_unlock(&cli->lock);
    return e;
}

/* A Metadata round trip through the producer, retried until @p deadline while the
 * brokers are unreachable, but reported as KSF_EKAFKA (naming the addresses) after
 * broker.unreachable.timeout.ms. */
static ksf_err
wait_for_brokers(ksf_client *cli, int64_t deadline, ksf_errinfo *ei)
{
    int64_t left = deadline - ksfi_client_now_ms();
    int limit = cli->cfg->broker_unreachable_ms;
    bool connect_first = limit == 0 || left < limit;
    ksf_err e = ksfi_request_producer_reach(
        cli->producer, cli->cfg, connect_first ? (left > 0 ? (int)left : 1) : limit, NULL,
        ei);
    if (e == KSF_EKAFKA && connect_first) {
        /* The caller's deadline came first: a timeout, with the same sentence. */
        if (ei) {
            ei->code = KSF_ETIMEDOUT;
        }
        return KSF_ETIMEDOUT;
    }
    return e;
}

/* Hand every topic from @p first on to the provider's prepare in one call. */
static ksf_err
announce_topics(ksf_client *cli, reply_topic *first, int64_t deadline, ksf_errinfo *ei)
{
    size_t n = 0;
    for (reply_topic *t = first; t; t = t->next) {
        n++;
    }
    const char **names = ksfi_calloc(n ? n : 1, sizeof *names);
    if (!names) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    n = 0;
    for (reply_topic *t = first; t; t = t->next) {
        names[n++] = t->name;
    }
    int64_t left = deadline - ksfi_client_now_ms();
    ksf_err e = cli->provider->ops->prepare(cli->provider, names, n,
                                            left > 0 ? (int)left : 0, ei);
    ksfi_free(names);
    return e;
}

ksf_err
ksf_client_connect(ksf_client *cli, int timeout_ms, ksf_errinfo *ei)
{
    if (!cli || timeout_ms < 0) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "ksf_client_connect: NULL client or negative timeout");
    }
    int64_t deadline = ksfi_client_now_ms() + timeout_ms;
    ksf_err e = wait_for_brokers(cli, deadline, ei);
    if (e) {
        return e;
    }
    pthread_mutex_lock(&cli->lock);
    cli->reached = true;
    pthread_mutex_unlock(&cli->lock);
    /* Topics are never unlinked before destroy, so the walk may drop the lock. */
    pthread_mutex_lock(&cli->lock);
    reply_topic *t = cli->topics;
    pthread_mutex_unlock(&cli->lock);
    if (cli->provider->ops->prepare && (e = announce_topics(cli, t, deadline, ei))) {
        return e;
    }
    for (; t; t = t->next) {
        if ((e = ksfi_client_reply_slot_get(cli, t->name, deadline, NULL, NULL, ei))) {
            return e;
        }
    }
    return ksfi_client_wait_first_fetch(cli, deadline, ei);
}

void
ksf_client_get_stats(ksf_client *cli, ksf_client_stats *out)
{
    if (!cli || !out) {
        return;
    }
    pthread_mutex_lock(&cli->lock);
    *out = cli->stats;
    out->sent = atomic_load_explicit(&cli->sent, memory_order_relaxed);
    out->emitted = atomic_load_explicit(&cli->emitted, memory_order_relaxed);
    out->emit_failures = atomic_load_explicit(&cli->emit_failures, memory_order_relaxed);
    out->in_flight = (uint32_t)ksfi_inflight_count(cli->inflight);
    pthread_mutex_unlock(&cli->lock);
}

/* ---- metrics (rendered by metrics_export.c) -------------------------------------- */

ksf_err
ksfi_client_metrics_collect(ksf_client *cli, ksfi_client_metrics *out)
{
    memset(out, 0, sizeof *out);
    ksf_client_get_stats(cli, &out->stats);
    out->rebalances = atomic_load(&cli->rebalances);
    pthread_mutex_lock(&cli->lock);
    size_t nt = 0, ns = 0;
    for (reply_topic *t = cli->topics; t; t = t->next) {
        nt++;
    }
    for (reply_slot *s = cli->slots; s; s = s->next) {
        ns++;
    }
    out->patterns = ksfi_calloc(nt ? nt : 1, sizeof *out->patterns);
    out->parts = ksfi_calloc(ns ? ns : 1, sizeof *out->parts);
    bool ok = out->patterns && out->parts;
    for (reply_topic *t = cli->topics; ok && t; t = t->next) {
        out->patterns[out->npatterns++] = t->metrics; /* never freed before destroy */
    }
    for (reply_slot *s = cli->slots; ok && s; s = s->next) {
        ksfi_client_part *cp = &out->parts[out->nparts];
        ok = (cp->topic = ksfi_strdup(s->topic)) != NULL;
        cp->partition = s->partition;
        cp->draining = s->revoked;
        out->nparts += ok;
    }
    pthread_mutex_unlock(&cli->lock);
    if (!ok) {
        ksfi_client_metrics_free(out);
        return KSF_ENOMEM;
    }
    return KSF_OK;
}

void
ksfi_client_metrics_free(ksfi_client_metrics *m)
{
    for (size_t i = 0; i < m->nparts; i++) {
        ksfi_free(m->parts[i].topic);
    }
    ksfi_free(m->parts);
    ksfi_free(m->patterns);
    memset(m, 0, sizeof *m);
}
