/*
 * ksf_client: NestJS ClientKafka. One producer for requests and events, one reply
 * consumer that is never subscribed (reply partitions come from a provider, see
 * reply_provider.h), a reply thread that polls it, matches replies to requests by
 * kafka_correlationId and expires deadlines, a delivery thread that serves the
 * producer's delivery reports, and a sender thread (client_sender.c) that produces
 * the requests a send could not produce at once.
 *
 * Idle cost: once nothing has been in flight for IDLE_PAUSE_MS (LATE_GRACE_MS after a
 * timeout, so late replies are still seen and counted) the reply partitions are paused
 * (rd_kafka_pause_partitions), so an idle client sends no Fetch requests; the next send
 * resumes them before it produces its request, and seeks them to where they stood (see
 * resume_fetch_locked: a bare resume leaves librdkafka's fetcher asleep for up to 1 s).
 */
#include "client/client.h"

/* The ticket of every event emitted without a callback (see client.h). */
dr_ticket ksfi_plain_event;

/* ---- reply partitions ---------------------------------------------------------- */

/*
 * Resume @p list and seek each partition whose position we know to that position; under
 * lock. The seek is what makes the resume prompt: librdkafka 2.0.2's resume only clears
 * a flag in its main thread and does not wake the broker thread, which sleeps up to
 * rd_kafka_max_block_ms (1 s) before it fetches again (~500 ms per request after idle).
 * A seek to an absolute offset wakes it ("seek done"), and it goes through the same
 * partition op queue as the resume, so it is applied after it. The offset is the one
 * the resume would fetch from anyway: nothing is skipped. (A reply the reply thread has
 * polled but not yet noted would be read again and counted as a duplicate; only a
 * stray one can be in that window, since nothing was in flight while paused.)
 */
static void
resume_fetch_locked(ksf_client *cli, rd_kafka_topic_partition_list_t *list)
{
    rd_kafka_resume_partitions(cli->consumer, list);
    rd_kafka_topic_partition_list_t *seek = rd_kafka_topic_partition_list_new(list->cnt);
    for (int i = 0; seek && i < list->cnt; i++) {
        for (reply_slot *s = cli->slots; s; s = s->next) {
            if (s->next_offset >= 0 && s->partition == list->elems[i].partition &&
                !strcmp(s->topic, list->elems[i].topic)) {
                rd_kafka_topic_partition_list_add(seek, s->topic, s->partition)->offset =
                    s->next_offset;
                break;
            }
        }
    }
    if (seek && seek->cnt > 0) {
        rd_kafka_error_t *kerr = rd_kafka_seek_partitions(cli->consumer, seek, 0);
        if (kerr) { /* the resume still works, only up to 1 s later */
            ksfi_log(&cli->log, KSF_LOG_WARNING, "client", "seek after resume: %s",
                     rd_kafka_error_string(kerr));
            rd_kafka_error_destroy(kerr);
        }
    }
    if (seek) {
        rd_kafka_topic_partition_list_destroy(seek);
    }
}

/* Pause or resume every assigned reply partition (idle handling); under lock. */
void
ksfi_client_set_paused_locked(ksf_client *cli, bool pause)
{
    rd_kafka_topic_partition_list_t *list = NULL;
    if (rd_kafka_assignment(cli->consumer, &list) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        list->cnt > 0) {
        if (pause) {
            rd_kafka_pause_partitions(cli->consumer, list);
        } else {
            resume_fetch_locked(cli, list);
        }
    }
    if (list) {
        rd_kafka_topic_partition_list_destroy(list);
    }
    cli->paused = pause;
}

/*
 * Record where fetching of @p msg's partition stands: past a consumed reply, or at an
 * end-of-partition event (enable.partition.eof), whose offset is the next one to fetch.
 * The first such record also tells connect() that the partition's first fetch is done.
 */
static void
note_position(ksf_client *cli, const rd_kafka_message_t *msg)
{
    int64_t next = msg->err ? msg->offset : msg->offset + 1;
    const char *topic = msg->rkt ? rd_kafka_topic_name(msg->rkt) : NULL;
    if (!topic || next < 0) {
        return;
    }
    pthread_mutex_lock(&cli->lock);
    for (reply_slot *s = cli->slots; s; s = s->next) {
        if (s->partition == msg->partition && next > s->next_offset &&
            !strcmp(s->topic, topic)) {
            if (s->next_offset < 0) {
                pthread_cond_broadcast(&cli->cond);
            }
            s->next_offset = next;
        }
    }
    pthread_mutex_unlock(&cli->lock);
}

static void
slot_free_locked(ksf_client *cli, reply_slot *s)
{
    reply_slot **link = &cli->slots;
    while (*link && *link != s) {
        link = &(*link)->next;
    }
    if (*link) {
        *link = s->next;
    }
    cli->provider->ops->release(cli->provider, s->topic, s->partition);
    ksfi_free(s->topic);
    ksfi_free(s);
}

/* A request that advertised @p s finished: finish a drain when it was the last. */
static void
slot_put_locked(ksf_client *cli, reply_slot *s)
{
    if (s && --s->outstanding == 0 && s->revoked) {
        slot_free_locked(cli, s);
    }
}

/* The provider's revoke notice (any thread): stop advertising, drain, then release. */
static void
on_revoked(void *opaque, const char *topic, int32_t partition)
{
    ksf_client *cli = opaque;
    pthread_mutex_lock(&cli->lock);
    for (reply_topic *t = cli->topics; t; t = t->next) {
        if (t->slot && t->slot->partition == partition && !strcmp(t->name, topic)) {
            reply_slot *s = t->slot;
            t->slot = NULL;
            t->state = TOPIC_NEW;
            s->revoked = true;
            ksfi_log(&cli->log, KSF_LOG_INFO, "client",
                     "reply partition %s [%d] revoked; draining %u request(s)", topic,
                     (int)partition, s->outstanding);
            if (s->outstanding == 0) {
                slot_free_locked(cli, s);
            }
            break;
        }
        if (t->state == TOPIC_ACQUIRING && !strcmp(t->name, topic)) {
            t->revoked_early = partition; /* acquire returned it; we are about to
                                             record it */
        }
    }
    pthread_mutex_unlock(&cli->lock);
}

static reply_topic *
topic_get_locked(ksf_client *cli, const char *name)
{
    for (reply_topic *t = cli->topics; t; t = t->next) {
        if (!strcmp(t->name, name)) {
            return t;
        }
    }
    reply_topic *t = ksfi_calloc(1, sizeof *t);
    if (!t || !(t->name = ksfi_strdup(name))) {
        ksfi_free(t);
        return NULL;
    }
    /* The pattern is the reply topic less its suffix; counting never allocates. */
    size_t n = strlen(name), sl = sizeof KSFI_REPLY_SUFFIX - 1;
    if ((t->metrics = ksfi_pmetrics_new(name)) && n > sl &&
        !strcmp(name + n - sl, KSFI_REPLY_SUFFIX)) {
        t->metrics->pattern[n - sl] = '\0';
    }
    t->next = cli->topics;
    cli->topics = t;
    return t;
}

/* Record the partition the provider gave @p t; under lock. */
static ksf_err
topic_ready_locked(ksf_client *cli, reply_topic *t, int32_t partition)
{
    reply_slot *s = ksfi_calloc(1, sizeof *s);
    if (!s || !(s->topic = ksfi_strdup(t->name))) {
        ksfi_free(s);
        cli->provider->ops->release(cli->provider, t->name, partition);
        return KSF_ENOMEM;
    }
    s->partition = partition;
    s->metrics = t->metrics;
    s->next_offset = -1;
    s->next = cli->slots;
    cli->slots = s;
    t->slot = s;
    t->state = TOPIC_READY;
    /* A new partition counts as activity: fetch everything now, so its first fetch
     * (which connect() waits for) completes, and pause again only after IDLE_PAUSE_MS. */
    if (cli->paused) {
        ksfi_client_set_paused_locked(cli, false);
    }
    cli->idle_since = ksfi_client_now_ms();
    return KSF_OK;
}

/*
 * Make sure reply topic @p name has a partition, acquiring it (outside the lock) when
 * needed. On KSF_OK returns with cli->lock HELD and *slot set, so the caller can
 * account a request against the slot before a revoke could release it.
 */
ksf_err
ksfi_client_reply_slot_get(ksf_client *cli, const char *name, int64_t deadline,
                           reply_slot **slot, ksf_errinfo *ei)
{
    ksf_err e = KSF_OK;
    pthread_mutex_lock(&cli->lock);
    for (;;) {
        reply_topic *t = cli->closing ? NULL : topic_get_locked(cli, name);
        if (!t) {
            e = cli->closing ? ksfi_fail(ei, KSF_ECLOSED, "the client is being destroyed")
                             : ksfi_fail(ei, KSF_ENOMEM, "out of memory");
            break;
        }
        if (t->state == TOPIC_READY) {
            *slot = t->slot;
            return KSF_OK;
        }
        if (t->state == TOPIC_ACQUIRING) {
            if (ksfi_client_now_ms() >= deadline ||
                (!ksfi_client_wait_until(cli, deadline) &&
                 ksfi_client_now_ms() >= deadline)) {
                e = ksfi_fail(ei, KSF_ETIMEDOUT,
                              "reply topic %s: no reply partition yet (another thread is "
                              "still acquiring it)",
                              name);
                break;
            }
            continue;
        }
        t->state = TOPIC_ACQUIRING;
        t->revoked_early = -1;
        pthread_mutex_unlock(&cli->lock);
        int32_t partition = -1;
        int64_t left = deadline - ksfi_client_now_ms();
        e = cli->provider->ops->acquire(cli->provider, name, left > 0 ? (int)left : 0,
                                        &partition, ei);
        pthread_mutex_lock(&cli->lock);
        if (!e && t->revoked_early == partition) {
            cli->provider->ops->release(cli->provider, name, partition);
            t->state = TOPIC_NEW; /* revoked in between: acquire again */
            continue;
        }
        if (!e && (e = topic_ready_locked(cli, t, partition))) {
            ksfi_fail(ei, e, "out of memory");
        }
        if (e) {
            t->state = TOPIC_NEW;
        }
        pthread_cond_broadcast(&cli->cond);
        if (e) {
            break;
        }
    }
    pthread_mutex_unlock(&cli->lock);
    return e;
}

ksf_err
ksfi_client_topic_locked(ksf_client *cli, const char *name, reply_topic **out,
                         ksf_errinfo *ei)
{
    pthread_mutex_lock(&cli->lock);
    reply_topic *t = cli->closing ? NULL : topic_get_locked(cli, name);
    if (!t) {
        ksf_err e = cli->closing
                        ? ksfi_fail(ei, KSF_ECLOSED, "the client is being destroyed")
                        : ksfi_fail(ei, KSF_ENOMEM, "out of memory");
        pthread_mutex_unlock(&cli->lock);
        return e;
    }
    *out = t;
    return KSF_OK;
}

/* ---- finishing requests ---------------------------------------------------------- */

/* Unlink @p p from the table and its slot; under lock. The caller then delivers. */
void
ksfi_client_finish_locked(ksf_client *cli, ksfi_pending *p, ksfi_recent why)
{
    ksfi_inflight_remove(cli->inflight, p, why);
    slot_put_locked(cli, p->slot);
    p->slot = NULL;
    if (ksfi_inflight_count(cli->inflight) == 0) {
        cli->idle_since = ksfi_client_now_ms();
    }
}

void
ksfi_client_pending_free(ksfi_pending *p)
{
    if (p) {
        ksfi_free(p->last_raw);
        ksfi_free(p);
    }
}

/* Deliver a local outcome (timeout, closed, Kafka failure) and free @p p. */
static void
deliver_local(ksfi_pending *p, ksf_err err, const char *text)
{
    ksf_reply r = {.err = err, .done = true, .correlation_id = p->id, .text = text};
    p->cb(&r, p->user);
    ksfi_client_pending_free(p);
}

/* Fail request @p id with @p err unless it already finished (delivery failures). */
void
ksfi_client_fail_request(ksf_client *cli, const char *id, ksf_err err, const char *text)
{
    pthread_mutex_lock(&cli->lock);
    ksfi_pending *p = ksfi_inflight_find(cli->inflight, id, strlen(id));
    if (p) {
        ksfi_client_finish_locked(cli, p, KSFI_RECENT_ANSWERED);
    }
    pthread_mutex_unlock(&cli->lock);
    if (p) {
        deliver_local(p, err, text);
    }
}

/* ---- reply handling -----------------------------------------------------------------
 */

/* "remote error: <message>" from the error JSON a server sent. */
static void
remote_error_text(const json_t *err, char *buf, size_t size)
{
    const json_t *m = json_is_object(err) ? json_object_get(err, "message") : err;
    if (json_is_string(m)) {
        snprintf(buf, size, "remote error: %s", json_string_value(m));
        return;
    }
    char *s = ksfi_json_stringify(err, NULL);
    snprintf(buf, size, "remote error: %s", s ? s : "(unprintable)");
    ksfi_free(s);
}

/* Deliver one reply message to @p cb; @p final marks the last delivery. */
static void
deliver_reply(ksf_reply_fn cb, void *user, const char *id, const ksfi_reply_meta *meta,
              const void *raw, size_t raw_len, bool bare_end, bool final)
{
    char text[KSF_ERRINFO_TEXT_SIZE] = "";
    json_t *value = NULL;
    ksf_reply r = {.err = KSF_OK, .done = final, .correlation_id = id, .text = text};
    if (meta->has_err) {
        r.err = KSF_EREMOTE;
        if (ksfi_decode_value(meta->err, meta->err_len, &value) == KSF_OK && value) {
            remote_error_text(value, text, sizeof text);
        } else if (meta->err) {
            snprintf(text, sizeof text, "remote error (binary)");
        } else {
            snprintf(text, sizeof text, "remote error");
        }
        r.raw = meta->err;
        r.raw_len = meta->err_len;
    } else if (!bare_end) {
        if (ksfi_decode_value(raw, raw_len, &value) != KSF_OK) {
            r.err = KSF_ENOMEM;
            snprintf(text, sizeof text, "out of memory decoding the reply");
        }
        r.raw = raw;
        r.raw_len = raw ? raw_len : 0;
    }
    r.value = value;
    cb(&r, user);
    json_decref(value);
}

/* Count a reply whose id is not in flight: late, duplicate or unknown. */
static void
count_stray_locked(ksf_client *cli, const char *id, size_t len, const char *topic)
{
    switch (ksfi_inflight_recent(cli->inflight, id, len)) {
    case KSFI_RECENT_TIMED_OUT:
        cli->stats.late_replies++;
        for (reply_topic *t = cli->topics; t; t = t->next) {
            if (!strcmp(t->name, topic)) {
                ksfi_pmetrics_inc(t->metrics, KSFI_M_LATE);
            }
        }
        break;
    case KSFI_RECENT_ANSWERED:
        cli->stats.duplicate_replies++;
        break;
    default:
        cli->stats.unknown_replies++;
        ksfi_log(&cli->log, KSF_LOG_DEBUG, "client", "reply with unknown id %.*s dropped",
                 (int)(len > 64 ? 64 : len), id);
        break;
    }
}

static void
handle_reply(ksf_client *cli, const rd_kafka_message_t *msg)
{
    ksfi_header *hdrs = NULL;
    size_t nhdrs = 0;
    ksfi_reply_meta meta;
    if (ksfi_kafka_read_headers(msg, &hdrs, &nhdrs) != KSF_OK) {
        ksfi_log(&cli->log, KSF_LOG_ERROR, "client",
                 "out of memory reading reply headers");
        return;
    }
    ksfi_parse_reply_headers(hdrs, nhdrs, &meta);
    if (cli->cfg->client_wire_dialect == KSFI_WIRE_SPRING) {
        meta.is_disposed = true; /* Spring answers once and sends no end marker */
    }
    if (!meta.correlation_id) {
        ksfi_free(hdrs); /* not a reply: NestJS ignores it too */
        return;
    }
    const char *cid = meta.correlation_id;
    size_t cid_len = meta.correlation_id_len;
    char spring_id[KSFI_ID_SIZE];
    /* A Spring service echoes the 16 id bytes the request carried: the table knows
     * them by their text. */
    if (cli->cfg->client_wire_dialect == KSFI_WIRE_SPRING &&
        ksfi_correlation_id_text(cid, cid_len, spring_id)) {
        cid = spring_id;
        cid_len = KSFI_ID_SIZE - 1;
    }
    pthread_mutex_lock(&cli->lock);
    ksfi_pending *p = ksfi_inflight_find(cli->inflight, cid, cid_len);
    if (!p) {
        count_stray_locked(cli, cid, cid_len, rd_kafka_topic_name(msg->rkt));
        pthread_mutex_unlock(&cli->lock);
        ksfi_free(hdrs);
        return;
    }
    const void *raw = msg->payload;
    size_t raw_len = msg->len;
    if (!meta.is_disposed) {
        /* An intermediate stream value. */
        ksf_reply_fn cb = p->cb;
        void *user = p->user;
        bool stream = p->stream;
        char id[KSFI_ID_SIZE];
        memcpy(id, p->id, sizeof id);
        if (stream) {
            p->has_last = true; /* a later null-valued end is then a bare end */
        } else {
            ksfi_free(p->last_raw);
            p->last_raw = raw ? ksfi_memdup(raw, raw_len) : NULL;
            p->last_len = raw_len;
            p->has_last = !raw || p->last_raw;
        }
        pthread_mutex_unlock(&cli->lock);
        if (stream) {
            deliver_reply(cb, user, id, &meta, raw, raw_len, false, false);
        }
        ksfi_free(hdrs);
        return;
    }
    ksfi_client_finish_locked(cli, p, KSFI_RECENT_ANSWERED);
    if (meta.has_err) {
        cli->stats.remote_errors++;
    } else {
        cli->stats.replies++;
    }
    if (p->metrics) {
        ksfi_pmetrics_inc(p->metrics,
                          meta.has_err ? KSFI_M_REMOTE_ERRORS : KSFI_M_ANSWERED);
        ksfi_hist_observe(&p->metrics->latency, ksfi_metrics_now_us() - p->sent_us);
    }
    pthread_mutex_unlock(&cli->lock);
    /* A null-valued end message after values is a bare completion (NestJS would emit an
     * extra null first): a stream gets no value, a plain request its last value. */
    bool bare_end = !meta.has_err && !raw && p->has_last;
    if (meta.drop_value && !meta.has_err) {
        /* An empty kafka_nest-err: NestJS completes without a value or an error. */
        raw = NULL;
        raw_len = 0;
        bare_end = true;
    }
    if (bare_end && !p->stream && p->has_last) {
        raw = p->last_raw;
        raw_len = p->last_len;
        bare_end = false;
    }
    if (ksfi_log_enabled(&cli->log, KSF_LOG_DEBUG)) {
        char part[16], us[24];
        ksf_log_field f[] = {
            {"pattern", p->metrics ? p->metrics->pattern : "?"},
            {"correlation_id", p->id},
            {"partition", KSFI_LOG_NUM(part, msg->partition)},
            {"round_trip_us", KSFI_LOG_NUM(us, ksfi_metrics_now_us() - p->sent_us)}};
        ksfi_logkv(&cli->log, KSF_LOG_DEBUG, "client", f, 4, "%s",
                   meta.has_err ? "remote error" : "reply");
    }
    deliver_reply(p->cb, p->user, p->id, &meta, raw, raw_len, bare_end, true);
    ksfi_client_pending_free(p);
    ksfi_free(hdrs);
}

/* ---- the reply thread ------------------------------------------------------------- */

/* Expire due requests and plan the next poll; under lock. Returns the expired list. */
static ksfi_pending *
reply_tick_locked(ksf_client *cli, int *timeout_ms)
{
    int64_t now = ksfi_client_now_ms();
    ksfi_pending *expired = NULL, *p;
    while ((p = ksfi_inflight_expire(cli->inflight, now)) != NULL) {
        slot_put_locked(cli, p->slot);
        p->slot = NULL;
        cli->stats.timeouts++;
        ksfi_pmetrics_inc(p->metrics, KSFI_M_TIMEOUTS);
        p->hnext = expired;
        expired = p;
    }
    int64_t wake = now + POLL_CAP_MS;
    if (ksfi_inflight_count(cli->inflight) > 0) {
        int64_t next = ksfi_inflight_next_deadline(cli->inflight);
        wake = next < wake ? next : wake;
    } else {
        if (expired) {
            cli->idle_since = now + LATE_GRACE_MS - IDLE_PAUSE_MS;
        }
        if (!cli->paused && now - cli->idle_since >= IDLE_PAUSE_MS) {
            ksfi_client_set_paused_locked(cli, true);
        } else if (!cli->paused && cli->idle_since + IDLE_PAUSE_MS < wake) {
            wake = cli->idle_since + IDLE_PAUSE_MS;
        }
    }
    cli->wake_at = wake;
    *timeout_ms = wake > now ? (int)(wake - now) : 0;
    return expired;
}

/* Why request @p p timed out, as far as this client can tell. */
static void
timeout_text(const ksfi_pending *p, char *buf, size_t size)
{
    const char *pattern = p->metrics ? p->metrics->pattern : "its pattern";
    if (p->queued) {
        snprintf(buf, size,
                 "not sent: no reply partition of %s%s was assigned before the "
                 "request's deadline (are the brokers up? a reply-group join takes "
                 "seconds; call ksf_client_connect first, or give the request more "
                 "time)",
                 pattern, KSFI_REPLY_SUFFIX);
    } else if (p->topic_missing) {
        snprintf(buf, size,
                 "no reply before the request's deadline: no service consumes %s "
                 "(the topic did not exist when this client first sent to it; start a "
                 "service with a handler for %s)",
                 pattern, pattern);
    } else {
        snprintf(buf, size,
                 "no reply before the request's deadline (is a service with a handler "
                 "for %s running, and answering in time?)",
                 pattern);
    }
}

static void *
reply_main(void *arg)
{
    ksf_client *cli = arg;
    for (;;) {
        int timeout_ms;
        pthread_mutex_lock(&cli->lock);
        if (cli->stop_reply) {
            pthread_mutex_unlock(&cli->lock);
            break;
        }
        ksfi_pending *expired = reply_tick_locked(cli, &timeout_ms);
        pthread_mutex_unlock(&cli->lock);
        while (expired) {
            ksfi_pending *next = expired->hnext;
            char text[KSF_ERRINFO_TEXT_SIZE];
            timeout_text(expired, text, sizeof text);
            ksf_log_field f[] = {{"correlation_id", expired->id}};
            ksfi_logkv(&cli->log, KSF_LOG_DEBUG, "client", f, 1, "timed out: %s", text);
            deliver_local(expired, KSF_ETIMEDOUT, text);
            expired = next;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(cli->consumer, timeout_ms);
        if (!msg) {
            continue;
        }
        if (!msg->err || msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            note_position(cli, msg);
        }
        if (msg->err && msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            ksfi_log(&cli->log, KSF_LOG_WARNING, "client", "reply consumer: %s",
                     rd_kafka_message_errstr(msg));
        } else if (!msg->err) {
            handle_reply(cli, msg);
        }
        rd_kafka_message_destroy(msg);
    }
    return NULL;
}

/* ---- delivery reports ------------------------------------------------------------- */

static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
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

static void *
dr_main(void *arg)
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

/* ---- lifecycle -----------------------------------------------------------------------
 */

static ksf_err
make_handles(ksf_client *cli, ksf_errinfo *ei)
{
    char err[256];
    rd_kafka_conf_t *conf = NULL;
    char *client_id = ksfi_config_client_id(cli->cfg, KSFI_CLIENT_POSTFIX);
    char *group_id = ksfi_config_group_id(cli->cfg, KSFI_CLIENT_POSTFIX);
    ksf_err e =
        client_id && group_id ? KSF_OK : ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    if (e ||
        (e = ksfi_kafka_conf(cli->cfg, KSF_KAFKA_PRODUCER, client_id, NULL, &conf, ei))) {
        goto done;
    }
    rd_kafka_conf_set_opaque(conf, cli);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if (!(cli->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err))) {
        rd_kafka_conf_destroy(conf);
        e = ksfi_fail(ei, KSF_EKAFKA, "cannot create the request producer: %s", err);
        goto done;
    }
    cli->producer_q = rd_kafka_queue_get_main(cli->producer);
    if ((e = ksfi_kafka_conf(cli->cfg, KSF_KAFKA_CONSUMER, client_id, group_id, &conf,
                             ei))) {
        goto done;
    }
    /* Reply partitions are assigned by hand at explicit offsets: nothing to commit. */
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
    /* End-of-partition events tell where fetching stands (seek after resume) and when a
     * partition's first fetch is done (connect). */
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err);
    rd_kafka_conf_set_opaque(conf, cli);
    if (!(cli->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err))) {
        rd_kafka_conf_destroy(conf);
        e = ksfi_fail(ei, KSF_EKAFKA, "cannot create the reply consumer: %s", err);
        goto done;
    }
    rd_kafka_poll_set_consumer(cli->consumer);
    cli->consumer_q = rd_kafka_queue_get_consumer(cli->consumer);
done:
    ksfi_free(client_id);
    ksfi_free(group_id);
    return e;
}

static ksf_err
start_threads(ksf_client *cli, ksf_errinfo *ei)
{
    if (pthread_create(&cli->reply_thread, NULL, reply_main, cli) != 0) {
        return ksfi_fail(ei, KSF_ENOMEM, "cannot start the reply thread");
    }
    cli->reply_started = true;
    if (pthread_create(&cli->dr_thread, NULL, dr_main, cli) != 0) {
        return ksfi_fail(ei, KSF_ENOMEM, "cannot start the delivery thread");
    }
    cli->dr_started = true;
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
    rd_kafka_queue_yield(cli->consumer_q);
    pthread_join(cli->reply_thread, NULL);
    cli->reply_started = false;
}

static void
stop_dr_thread(ksf_client *cli)
{
    if (!cli->dr_started) {
        return;
    }
    pthread_mutex_lock(&cli->lock);
    cli->stop_dr = true;
    pthread_mutex_unlock(&cli->lock);
    rd_kafka_queue_yield(cli->producer_q);
    pthread_join(cli->dr_thread, NULL);
    cli->dr_started = false;
}

/* Free everything; the threads are stopped and no request is pending. */
static void
client_free(ksf_client *cli)
{
    if (cli->producer) {
        /* Whatever is still queued fails now; its reports free the tickets. */
        rd_kafka_purge(cli->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(cli->producer, 1000);
    }
    while (cli->slots) {
        slot_free_locked(cli, cli->slots);
    }
    if (cli->provider) {
        cli->provider->ops->destroy(cli->provider);
    }
    if (cli->consumer_q) {
        rd_kafka_queue_destroy(cli->consumer_q);
    }
    if (cli->producer_q) {
        rd_kafka_queue_destroy(cli->producer_q);
    }
    if (cli->consumer) {
        rd_kafka_consumer_close(cli->consumer);
        rd_kafka_destroy(cli->consumer);
    }
    if (cli->producer) {
        rd_kafka_destroy(cli->producer);
    }
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
    pthread_cond_destroy(&cli->cond);
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
    cli->idle_since = ksfi_client_now_ms();
    ksfi_idgen_init(&cli->ids);
    if ((e = make_handles(cli, ei))) {
        goto fail;
    }
    ksfi_reply_host host = {cli->consumer, &cli->log, on_revoked, cli, &cli->rebalances};
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
    stop_dr_thread(cli);
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
        deliver_local(p, KSF_ECLOSED, "the client was destroyed before the reply came");
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
    ksf_client_flush(cli, DESTROY_FLUSH_MS, NULL);
    stop_dr_thread(cli);
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
    } else if (!topic_get_locked(cli, name)) {
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
    ksf_err e =
        ksfi_reach_brokers(cli->producer, cli->cfg,
                           connect_first ? (left > 0 ? (int)left : 1) : limit, NULL, ei);
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

/*
 * Wait until every advertised reply partition has completed its first fetch (its first
 * end-of-partition event). Before that a reply can wait for librdkafka's first Fetch of
 * the new partition; after it, a reply to a request sent now is fetched promptly.
 */
static ksf_err
wait_first_fetch(ksf_client *cli, int64_t deadline, ksf_errinfo *ei)
{
    ksf_err e = KSF_OK;
    pthread_mutex_lock(&cli->lock);
    for (;;) {
        reply_slot *cold = NULL;
        for (reply_slot *s = cli->slots; s && !cold; s = s->next) {
            cold = !s->revoked && s->next_offset < 0 ? s : NULL;
        }
        if (!cold || cli->closing) {
            break;
        }
        if (cli->paused) { /* paused before its first fetch ended: fetch it now */
            ksfi_client_set_paused_locked(cli, false);
            cli->idle_since = ksfi_client_now_ms();
        }
        if (ksfi_client_now_ms() >= deadline || (!ksfi_client_wait_until(cli, deadline) &&
                                                 ksfi_client_now_ms() >= deadline)) {
            e = ksfi_fail(ei, KSF_ETIMEDOUT,
                          "reply partition %s [%d] is assigned but its first fetch has "
                          "not completed; check the broker, or give connect more time",
                          cold->topic, (int)cold->partition);
            break;
        }
    }
    pthread_mutex_unlock(&cli->lock);
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
        reply_slot *slot;
        if ((e = ksfi_client_reply_slot_get(cli, t->name, deadline, &slot, ei))) {
            return e;
        }
        pthread_mutex_unlock(&cli->lock);
    }
    return wait_first_fetch(cli, deadline, ei);
}

void
ksf_client_get_stats(ksf_client *cli, ksf_client_stats *out)
{
    if (!cli || !out) {
        return;
    }
    pthread_mutex_lock(&cli->lock);
    *out = cli->stats;
    out->emitted = atomic_load_explicit(&cli->emitted, memory_order_relaxed);
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
