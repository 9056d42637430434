/*
 * ksf_client's sending side: requests (send, the blocking call), events (emit) and
 * flush. Each message is encoded once, gets its headers (user headers, ksf_deadline,
 * trace context, then NestJS's kafka_* headers) and is produced with a ticket that its
 * delivery report (client_delivery.c) resolves. A request whose reply partition is not
 * known yet is queued for the sender thread (client_sender.c) instead.
 *
 * Locking: a request is reserved in the in-flight table (and queued, when it must be)
 * under cli->lock in ksf_client_send itself; encoding and the produce run without it.
 */
#include "client/client_produce.h"
#include "client/client_requests.h"
#include "client/client_sender.h"
#include "client/client_slots.h"

#include "base/thread_role.h"

/* ---- sending ----------------------------------------------------------------------- */

/* Headers of a message with no user headers: deadline, trace, protocol. */
#define FIXED_HEADERS (1 + KSFI_TRACE_HEADERS_MAX + KSFI_PROTO_HEADERS_MAX)

/* Encoded values up to this size (with their NUL) stay in the outgoing itself, on the
 * sender's stack: the bench payload's malloc and free cost the client ~0.2k
 * instructions per request. librdkafka copies the value when it is produced. */
#define ENC_STACK 256

/* A message ready to produce: encoded value, headers, key. The headers borrow from the
 * caller's opts and from the buffers below, so an outgoing lives only for one call. */
typedef struct outgoing {
    char *value; /* owned: an encoded value too large for enc[] */
    const void *bytes;
    size_t len;
    ksfi_client_hdrs hdrs;            /* hdrs.h is fixed[] or, with user headers, owned */
    ksfi_header fixed[FIXED_HEADERS]; /* no allocation without user headers */
    char tp[KSFI_TRACEPARENT_LEN + 1];             /* the traceparent value */
    char dl[21];                                   /* the ksf_deadline value */
    unsigned char proto[KSFI_REQUEST_HEADERS_BUF]; /* the kafka_* values */
    char enc[ENC_STACK];                           /* a small encoded value */
} outgoing;

static void
outgoing_clear(outgoing *m)
{
    ksfi_free(m->value);
    if (m->hdrs.h != m->fixed) {
        ksfi_free(m->hdrs.h);
    }
    m->value = NULL;
    m->bytes = NULL;
    m->len = 0;
    m->hdrs = (ksfi_client_hdrs){m->fixed, 0, FIXED_HEADERS};
}

/* The caller's extra headers: names not reserved, values strings (borrowed). */
static ksf_err
add_user_headers(ksfi_client_hdrs *hs, const json_t *user, ksf_errinfo *ei)
{
    const char *name;
    json_t *v;
    json_object_foreach ((json_t *)user, name, v) {
        if (!strncmp(name, KSFI_HDR_RESERVED_PREFIX, strlen(KSFI_HDR_RESERVED_PREFIX))) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "header \"%s\": names starting with \"%s\" are reserved for "
                             "the protocol",
                             name, KSFI_HDR_RESERVED_PREFIX);
        }
        if (!json_is_string(v)) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "header \"%s\": the value must be a JSON string", name);
        }
        ksfi_client_hdrs_add(hs, name, json_string_value(v), json_string_length(v));
    }
    return KSF_OK;
}

/* Validate and encode what every send and emit carries. */
static ksf_err
outgoing_build(ksf_client *cli, const json_t *data, const ksf_send_opts *opts,
               outgoing *m, ksf_errinfo *ei)
{
    ksf_err e;
    m->value = NULL;
    m->hdrs = (ksfi_client_hdrs){m->fixed, 0, FIXED_HEADERS};
    if (opts && opts->raw_value) {
        m->bytes = opts->raw_value;
        m->len = opts->raw_len;
    } else {
        e = ksfi_encode_value_stack(data, m->enc, sizeof m->enc, &m->value, &m->bytes,
                                    &m->len, ei);
        if (e) {
            ksfi_free(m->value);
            return e;
        }
    }
    if (m->len > cli->cfg->message_max_bytes) {
        e = ksfi_fail(ei, KSF_EMSGSIZE,
                      "the value is %zu bytes, more than message.max.bytes (%zu); send "
                      "less or raise message.max.bytes",
                      m->len, cli->cfg->message_max_bytes);
        goto fail;
    }
    if (opts && opts->key && opts->key_len > cli->cfg->message_max_bytes) {
        e = ksfi_fail(ei, KSF_EMSGSIZE,
                      "the key is %zu bytes, more than message.max.bytes", opts->key_len);
        goto fail;
    }
    const json_t *user = opts ? opts->headers : NULL;
    if (user && !json_is_object(user)) {
        e = ksfi_fail(ei, KSF_EINVAL, "opts.headers must be a JSON object of strings");
        goto fail;
    }
    if (user && json_object_size(user) > 0) {
        size_t cap = json_object_size(user) + FIXED_HEADERS;
        if (!(m->hdrs.h = ksfi_malloc(cap * sizeof *m->hdrs.h))) {
            m->hdrs.h = m->fixed;
            e = ksfi_fail(ei, KSF_ENOMEM, "out of memory");
            goto fail;
        }
        m->hdrs.cap = cap;
        if ((e = add_user_headers(&m->hdrs, user, ei))) {
            goto fail;
        }
    }
    return KSF_OK;
fail:
    outgoing_clear(m);
    return e;
}

/*
 * The headers of trace.h and deadline.h: ksf_deadline when @p deadline (epoch ms) is
 * set, then traceparent (and tracestate), unless trace.headers is false and the caller
 * gave none of its own. Errors: KSF_EINVAL for a bad opts.traceparent or
 * opts.tracestate.
 */
static ksf_err
add_context_headers(const ksf_client *cli, outgoing *m, const ksf_send_opts *opts,
                    int64_t deadline, ksf_errinfo *ei)
{
    ksfi_client_hdrs *hs = &m->hdrs;
    if (deadline > 0) {
        ksfi_client_hdrs_add(hs, KSFI_HDR_DEADLINE, m->dl,
                             ksfi_deadline_format(deadline, m->dl));
    }
    const char *tp = opts ? opts->traceparent : NULL;
    const char *ts = opts ? opts->tracestate : NULL;
    /* Off: no new trace nor a handler's continued (~0.5k instructions here, and the
     * header's bytes in librdkafka on both sides); a caller's own context still goes,
     * checked as ever, since the caller asked for it. */
    if (!cli->cfg->trace_headers && !tp && !ts) {
        return KSF_OK;
    }
    size_t nt = 0;
    ksf_err e = ksfi_trace_outgoing(tp, ts, m->tp, hs->h + hs->n, &nt, ei);
    hs->n += e ? 0 : nt;
    return e;
}

/* Produce @p m to @p topic with ticket @p t. */
static ksf_err
produce(ksf_client *cli, const char *topic, outgoing *m, const ksf_send_opts *opts,
        dr_ticket *t, ksf_errinfo *ei)
{
    const void *key = opts ? opts->key : NULL;
    return ksfi_client_produce(cli, topic, m->bytes, m->len, key, key ? opts->key_len : 0,
                               &m->hdrs, t, ei);
}

static ksf_err
send_check(ksf_client *cli, const char *pattern, const ksf_send_opts *opts,
           ksf_reply_fn cb, ksf_errinfo *ei)
{
    if (!cli || !cb) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "ksf_client_send: client and callback are required");
    }
    if (opts && opts->timeout_ms < 0) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "timeout_ms %d is negative; use 0 for the default",
                         opts->timeout_ms);
    }
    return ksfi_check_topic(pattern, true, ei);
}

/* Reserve an in-flight entry for @p p against @p slot (NULL: queued for the sender
 * thread, which attaches the slot later); called with the lock held. */
static ksf_err
reserve_locked(ksf_client *cli, ksfi_pending *p, reply_topic *rt, reply_slot *slot,
               ksf_errinfo *ei)
{
    if (cli->closing) {
        return ksfi_fail(ei, KSF_ECLOSED, "the client is being destroyed");
    }
    size_t n = ksfi_inflight_count(cli->inflight);
    if (n >= (size_t)cli->cfg->client_max_in_flight) {
        return ksfi_fail(ei, KSF_EBUSY,
                         "%zu requests are in flight, the client.max.in.flight limit; "
                         "retry when some have finished",
                         n);
    }
    /* The add itself refuses an id in flight (a generated id repeats only by chance):
     * a lookup before it hashed the id a second time per request. */
    ksf_err e;
    do {
        ksfi_idgen_next(&cli->ids, p->id);
    } while ((e = ksfi_inflight_add(cli->inflight, p)) == KSF_EEXIST);
    if (e) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    p->slot = slot;
    p->reply_partition = slot ? slot->partition : -1;
    p->metrics = rt->metrics;
    p->queued = !slot;
    p->topic_missing = rt->missing;
    if (slot) {
        slot->outstanding++;
    }
    if (cli->paused) {
        ksfi_client_set_paused_locked(cli, false);
    }
    if (p->deadline_ms < cli->wake_at) {
        ksfi_reply_consumer_wake(cli->consumer); /* the reply thread sleeps too long */
    }
    return KSF_OK;
}

/* Copy what producing @p m needs into a queued send for @p p's id (under lock): the
 * value, key and headers are borrowed from the caller only for the call. */
static ksf_err
queue_locked(ksf_client *cli, reply_topic *rt, const ksfi_pending *p, const char *pattern,
             outgoing *m, const ksf_send_opts *opts, ksf_errinfo *ei)
{
    queued_send *q = ksfi_calloc(1, sizeof *q);
    const void *key = opts ? opts->key : NULL;
    size_t key_len = key ? opts->key_len : 0;
    if (!q || !(q->pattern = ksfi_strdup(pattern)) ||
        ksfi_client_hdrs_copy(&m->hdrs, KSFI_PROTO_HEADERS_MAX, &q->hdrs) ||
        (m->bytes && !(q->value = ksfi_malloc(m->len ? m->len : 1))) ||
        (key && !(q->key = ksfi_malloc(key_len ? key_len : 1)))) {
        ksfi_client_queued_free(q);
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    memcpy(q->id, p->id, sizeof q->id);
    if (m->bytes) {
        memcpy(q->value, m->bytes, m->len);
        q->len = m->len;
    }
    if (key) {
        memcpy(q->key, key, key_len);
        q->key_len = key_len;
    }
    ksfi_client_queue_locked(cli, rt, q);
    return KSF_OK;
}

ksf_err
ksf_client_send(ksf_client *cli, const char *pattern, const json_t *data,
                const ksf_send_opts *opts, ksf_reply_fn cb, void *user, ksf_errinfo *ei)
{
    char topic[256];
    outgoing m;
    reply_slot *slot;
    int64_t wall_deadline;
    ksf_err e = send_check(cli, pattern, opts, cb, ei);
    if (e) {
        return e;
    }
    int timeout =
        opts && opts->timeout_ms ? opts->timeout_ms : cli->cfg->client_timeout_ms;
    /* Inside a handler the request gets at most the handler's remaining time. */
    if ((e = ksfi_deadline_outgoing(timeout, &timeout, &wall_deadline, ei)) ||
        (e = outgoing_build(cli, data, opts, &m, ei))) {
        return e;
    }
    /* client.deadline.header=false: the timeout still ends the request here; the
     * server only applies its own server.handler.timeout.ms. */
    if ((e = add_context_headers(
             cli, &m, opts, cli->cfg->client_deadline_header ? wall_deadline : 0, ei))) {
        outgoing_clear(&m);
        return e;
    }
    /* One clock read for the deadline (ms) and the round trip's start (us): both
     * are CLOCK_MONOTONIC, and ms = us / 1000 exactly as ksfi_client_now_ms has it. */
    uint64_t now_us = ksfi_metrics_now_us();
    int64_t deadline = (int64_t)(now_us / 1000u) + timeout;
    dr_ticket *t;
    ksfi_pending *p;
    if (!ksfi_client_request_new(cli, &t, &p)) {
        e = ksfi_fail(ei, KSF_ENOMEM, "out of memory");
        goto fail;
    }
    *p = (ksfi_pending){.deadline_ms = deadline,
                        .sent_us = now_us,
                        .cb = cb,
                        .user = user,
                        .stream = opts && (opts->flags & KSF_SEND_STREAM),
                        .raw = opts && (opts->flags & KSF_SEND_RAW_REPLY)};
    /* send_check left room for the suffix; snprintf was a visible cost per request. */
    size_t plen = strlen(pattern);
    memcpy(topic, pattern, plen);
    memcpy(topic + plen, KSFI_REPLY_SUFFIX, sizeof KSFI_REPLY_SUFFIX);
    /* Never wait here: a topic without its reply partition yet (a group join takes
     * seconds) or a pattern's first request (the sender thread first looks whether
     * its topic exists) goes to the sender thread, and the callback says how it went. */
    pthread_mutex_lock(&cli->lock);
    reply_topic *rt = cli->closing ? NULL : ksfi_client_topic_get_locked(cli, topic);
    if (!rt) {
        e = cli->closing ? ksfi_fail(ei, KSF_ECLOSED, "the client is being destroyed")
                         : ksfi_fail(ei, KSF_ENOMEM, "out of memory");
        pthread_mutex_unlock(&cli->lock);
        goto fail;
    }
    slot = rt->state == TOPIC_READY && rt->checked ? rt->slot : NULL;
    e = reserve_locked(cli, p, rt, slot, ei);
    if (!e && !slot) {
        e = queue_locked(cli, rt, p, pattern, &m, opts, ei);
        if (e) {
            ksfi_client_finish_locked(cli, p, KSFI_RECENT_NONE);
        }
        pthread_mutex_unlock(&cli->lock);
        if (e) {
            goto fail;
        }
        ksfi_client_ticket_free(cli, t);
        outgoing_clear(&m);
        return KSF_OK;
    }
    pthread_mutex_unlock(&cli->lock);
    if (e) {
        goto fail;
    }
    t->request = true;
    memcpy(t->id, p->id, sizeof t->id);
    ksfi_client_add_request_headers(cli, &m.hdrs, p->id, topic, p->reply_partition,
                                    m.proto);
    char id[KSFI_ID_SIZE];
    memcpy(id, p->id, sizeof id); /* p may be finished and freed once produced */
    ksfi_pmetrics *pm = p->metrics;
    if ((e = produce(cli, pattern, &m, opts, t, ei)) == KSF_OK) {
        ksfi_pmetrics_inc(pm, KSFI_M_SENT);
        atomic_fetch_add_explicit(&cli->sent, 1, memory_order_relaxed);
        outgoing_clear(&m);
        return KSF_OK;
    }
    pthread_mutex_lock(&cli->lock);
    bool mine = ksfi_inflight_find(cli->inflight, id, strlen(id)) == p;
    if (mine) {
        ksfi_client_finish_locked(cli, p, KSFI_RECENT_NONE);
    }
    pthread_mutex_unlock(&cli->lock);
    if (!mine) {
        /* It already timed out and its callback ran: the send did happen, as far as
         * the caller can tell. */
        ksfi_client_ticket_free(cli, t);
        outgoing_clear(&m);
        return KSF_OK;
    }
fail:
    outgoing_clear(&m);
    ksfi_client_ticket_free(cli, t);
    ksfi_client_pending_free(cli, p);
    return e;
}

/* ---- the blocking call ---------------------------------------------------------------
 */

typedef struct call_wait {
    pthread_mutex_t m;
    pthread_cond_t c;
    bool done;
    ksf_err err;
    json_t *value;
    char text[KSF_ERRINFO_TEXT_SIZE];
} call_wait;

static void
call_done(const ksf_reply *r, void *user)
{
    call_wait *w = user;
    pthread_mutex_lock(&w->m);
    w->err = r->err;
    w->value = r->value ? json_incref((json_t *)r->value) : NULL;
    snprintf(w->text, sizeof w->text, "%s", r->text ? r->text : "");
    w->done = true;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

ksf_err
ksf_client_call(ksf_client *cli, const char *pattern, const json_t *data, int timeout_ms,
                json_t **reply, ksf_errinfo *ei)
{
    if (!reply) {
        return ksfi_fail(ei, KSF_EINVAL, "ksf_client_call: reply must not be NULL");
    }
    *reply = NULL;
    call_wait w = {.done = false};
    pthread_mutex_init(&w.m, NULL);
    pthread_cond_init(&w.c, NULL);
    ksf_send_opts opts = {.timeout_ms = timeout_ms};
    ksf_err e = ksf_client_send(cli, pattern, data, &opts, call_done, &w, ei);
    if (e == KSF_OK) {
        /* The reply thread finishes every request by its deadline, so this ends. */
        pthread_mutex_lock(&w.m);
        while (!w.done) {
            pthread_cond_wait(&w.c, &w.m);
        }
        pthread_mutex_unlock(&w.m);
        e = w.err;
        if (e == KSF_OK || e == KSF_EREMOTE) {
            *reply = w.value;
            w.value = NULL;
        }
        json_decref(w.value);
        if (e == KSF_ETIMEDOUT && ksfi_thread_runs_inline_handlers()) {
            ksfi_fail(ei, e,
                      "%s: %s (called from a handler of a server with server.workers=0: "
                      "that server runs nothing else until the call returns, so a "
                      "pattern it serves itself cannot answer; use ksf_client_send with "
                      "a callback, or workers)",
                      pattern, w.text);
        } else if (e) {
            ksfi_fail(ei, e, "%s: %s", pattern, w.text);
        }
    }
    pthread_cond_destroy(&w.c);
    pthread_mutex_destroy(&w.m);
    return e;
}

/* ---- events, flush, stats ------------------------------------------------------------
 */

ksf_err
ksf_client_emit(ksf_client *cli, const char *pattern, const json_t *data,
                const ksf_send_opts *opts, ksf_emit_fn cb, void *user, ksf_errinfo *ei)
{
    outgoing m;
    ksf_err e;
    if (!cli) {
        return ksfi_fail(ei, KSF_EINVAL, "ksf_client_emit: client is NULL");
    }
    if ((e = ksfi_check_topic(pattern, false, ei)) ||
        (e = outgoing_build(cli, data, opts, &m, ei))) {
        return e;
    }
    /* An event has no caller waiting: a deadline only when the sender asked for one,
     * and then whatever client.deadline.header says (it is about requests). */
    int64_t deadline =
        opts && opts->timeout_ms > 0 ? ksfi_wall_ms() + opts->timeout_ms : 0;
    if ((e = add_context_headers(cli, &m, opts, deadline, ei))) {
        outgoing_clear(&m);
        return e;
    }
    dr_ticket *t = cb ? ksfi_client_ticket_new(cli) : &cli->plain_event;
    if (!t) {
        e = ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    } else {
        bool closing = atomic_load_explicit(&cli->closing, memory_order_acquire);
        if (t != &cli->plain_event) {
            t->cb = cb;
            t->user = user;
        }
        if (t != &cli->plain_event) {
            /* Its report wakes the reply thread (client.c, on_reports); counted before
             * the report can come. */
            atomic_fetch_add(&cli->callbacks_owed, 1);
        }
        e = closing ? ksfi_fail(ei, KSF_ECLOSED, "the client is being destroyed")
                    : produce(cli, pattern, &m, opts, t, ei);
        if (e && t != &cli->plain_event) {
            atomic_fetch_sub(&cli->callbacks_owed, 1);
        }
    }
    if (e) {
        ksfi_client_ticket_free(cli, t);
    }
    outgoing_clear(&m);
    return e;
}

/* Requests the sender thread has not produced yet; under lock. */
static int
waiting_locked(const ksf_client *cli)
{
    int n = cli->in_hand;
    for (const reply_topic *t = cli->topics; t; t = t->next) {
        for (const queued_send *q = t->waiting; q; q = q->next) {
            n++;
        }
    }
    return n;
}

ksf_err
ksf_client_flush(ksf_client *cli, int timeout_ms, ksf_errinfo *ei)
{
    if (!cli) {
        return ksfi_fail(ei, KSF_EINVAL, "ksf_client_flush: client is NULL");
    }
    int64_t deadline = ksfi_client_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    ksf_err e = KSF_OK;
    pthread_mutex_lock(&cli->lock);
    /* The reply thread serves the delivery reports: a flush on it (in a callback), or
     * once it stopped (destroy), serves them itself, or it would wait for nothing. */
    bool serve = !cli->reply_started || pthread_equal(pthread_self(), cli->reply_thread);
    atomic_fetch_add(&cli->flushing, 1);
    if (!serve) { /* reports that came before the flush did not wake it (on_reports) */
        ksfi_reply_consumer_wake(cli->consumer);
    }
    int queued;
    /* The reply thread broadcasts after serving reports while a flush waits; the short
     * slices also cover messages leaving between its last broadcast and this check. */
    while ((queued = ksfi_request_producer_queued(cli->producer) + waiting_locked(cli)) >
           0) {
        int64_t now = ksfi_client_now_ms();
        if (now >= deadline) {
            e = ksfi_fail(ei, KSF_ETIMEDOUT,
                          "%d message(s) still queued after %d ms; are the brokers up?",
                          queued, timeout_ms);
            break;
        }
        int64_t until = now + 20 < deadline ? now + 20 : deadline;
        if (serve) { /* callbacks run without the lock */
            pthread_mutex_unlock(&cli->lock);
            ksfi_request_producer_serve(cli->producer, (int)(until - now));
            pthread_mutex_lock(&cli->lock);
        } else {
            ksfi_client_wait_until(cli, until);
        }
    }
    atomic_fetch_sub(&cli->flushing, 1);
    pthread_mutex_unlock(&cli->lock);
    return e;
}
