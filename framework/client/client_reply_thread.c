/*
 * The client's reply thread (client_reply_thread.h): it polls the reply consumer,
 * matches each reply to its request by kafka_correlationId (NestJS's rules: stream
 * values, the kafka_nest-is-disposed end, kafka_nest-err; Spring's echoed id bytes),
 * runs reply callbacks, counts strays (late, duplicate, unknown), expires deadlines,
 * serves the request producer's delivery reports (client_delivery.c) and pauses the
 * reply partitions once the client is idle.
 *
 * Locking: a reply is matched and taken out of the in-flight table under cli->lock;
 * its callback runs after the lock is dropped. The polls run without the lock.
 */
#include "client/client_reply_thread.h"

#include "client/client_requests.h"
#include "client/client_slots.h"

/* ---- matching replies ---------------------------------------------------------------
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

/* Deliver one reply message to @p cb; @p final marks the last delivery. With
 * @p undecoded (KSF_SEND_RAW_REPLY) a value reply is handed over as its bytes only:
 * decoding into a jansson tree and freeing it was ~2.4k instructions per request. A
 * remote error is still decoded (rare, and callers branch on its shape). */
static void
deliver_reply(ksf_reply_fn cb, void *user, const char *id, const ksfi_reply_meta *meta,
              const void *raw, size_t raw_len, bool bare_end, bool final, bool undecoded)
{
    char text[KSF_ERRINFO_TEXT_SIZE];
    text[0] = '\0'; /* not "" as an initialiser: that zeroes all 320 bytes each time */
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
        if (!undecoded && ksfi_decode_value(raw, raw_len, &value) != KSF_OK) {
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

/* Match reply message @p msg (its headers read) to its request and deliver it; notes
 * the fetch position past it (ksfi_client_note_position). */
static void
handle_reply(ksf_client *cli, const ksfi_reply_event *msg)
{
    ksfi_reply_meta meta;
    ksfi_parse_reply_headers(msg->hdrs, msg->nhdrs, &meta);
    if (cli->cfg->client_wire_dialect == KSFI_WIRE_SPRING) {
        meta.is_disposed = true; /* Spring answers once and sends no end marker */
    }
    if (!meta.correlation_id) {
        ksfi_client_note_position(cli, msg->topic, msg->partition, msg->offset + 1);
        return; /* not a reply: NestJS ignores it too */
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
    /* Noted here, in the lock round the reply takes anyway. */
    ksfi_client_note_position_locked(cli, msg->topic, msg->partition, msg->offset + 1);
    ksfi_pending *p = ksfi_inflight_find(cli->inflight, cid, cid_len);
    if (!p) {
        count_stray_locked(cli, cid, cid_len, msg->topic);
        pthread_mutex_unlock(&cli->lock);
        return;
    }
    const void *raw = msg->value;
    size_t raw_len = msg->len;
    if (!meta.is_disposed) {
        /* An intermediate stream value. */
        ksf_reply_fn cb = p->cb;
        void *user = p->user;
        bool stream = p->stream, undecoded = p->raw;
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
            deliver_reply(cb, user, id, &meta, raw, raw_len, false, false, undecoded);
        }
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
    deliver_reply(p->cb, p->user, p->id, &meta, raw, raw_len, bare_end, true, p->raw);
    ksfi_client_pending_free(cli, p);
}

/* ---- the reply thread ------------------------------------------------------------- */

/* Expire due requests and plan the next poll; under lock. Returns the expired list;
 * *now_ms gets the time it went by. */
static ksfi_pending *
reply_tick_locked(ksf_client *cli, int *timeout_ms, int64_t *now_ms)
{
    int64_t now = ksfi_client_now_ms();
    *now_ms = now;
    ksfi_pending *expired = NULL, *p;
    while ((p = ksfi_inflight_expire(cli->inflight, now)) != NULL) {
        ksfi_client_slot_put_locked(cli, p->slot);
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

void *
ksfi_client_reply_main(void *arg)
{
    ksf_client *cli = arg;
    ksfi_client_mark_reply_thread(cli);
    bool idle = false;     /* the last poll returned nothing */
    int64_t next_tick = 0; /* while a fetched batch lasts: the next tick's time (ms) */
    for (;;) {
        int timeout_ms = 0;
        ksfi_pending *expired = NULL;
        /* While the last poll's batch lasts, the next poll returns at once and its
         * timeout does not matter: the tick (the client's lock, expiry) then runs at
         * most once a millisecond, not once per reply, so a timeout or a stop is still
         * seen within about a millisecond plus one callback. */
        if (!ksfi_reply_consumer_buffered(cli->consumer) ||
            ksfi_client_now_ms() >= next_tick) {
            int64_t now;
            pthread_mutex_lock(&cli->lock);
            if (cli->stop_reply) {
                pthread_mutex_unlock(&cli->lock);
                break;
            }
            expired = reply_tick_locked(cli, &timeout_ms, &now);
            pthread_mutex_unlock(&cli->lock);
            next_tick = now + 1;
            /* Reports owed (messages produced, not yet reported) do not wake this
             * thread (client.c, on_reports): sleep no longer than they may wait. The
             * plan is published first: a report arriving after this check finds it
             * and wakes the thread. */
            if (timeout_ms > REPORT_WAIT_MS &&
                ksfi_request_producer_queued(cli->producer) > 0) {
                timeout_ms = REPORT_WAIT_MS;
                atomic_store(&cli->wake_at, now + REPORT_WAIT_MS);
            }
        }
        while (expired) {
            ksfi_pending *next = expired->hnext;
            char text[KSF_ERRINFO_TEXT_SIZE];
            timeout_text(expired, text, sizeof text);
            ksf_log_field f[] = {{"correlation_id", expired->id}};
            ksfi_logkv(&cli->log, KSF_LOG_DEBUG, "client", f, 1, "timed out: %s", text);
            ksfi_client_deliver_local(cli, expired, KSF_ETIMEDOUT, text);
            expired = next;
        }
        /* The producer's delivery reports, before the consumer poll sleeps. The
         * producer's on_report callback sets `reports` when a report arrives at an
         * empty queue (every time the serve below emptied it), so an iteration without
         * reports costs no poll of the producer's queue; a poll that returned nothing
         * (the REPORT_WAIT_MS bound above) serves anyway, as a backstop. */
        /* Loaded first: the exchange is a locked instruction, and most iterations
         * (a reply from the batch) find no report. */
        if ((atomic_load_explicit(&cli->reports, memory_order_relaxed) &&
             atomic_exchange(&cli->reports, false)) ||
            idle) {
            ksfi_request_producer_serve(cli->producer, 0);
            if (atomic_load_explicit(&cli->flushing, memory_order_relaxed) > 0) {
                pthread_mutex_lock(&cli->lock);
                pthread_cond_broadcast(&cli->cond); /* a flush re-checks the queue */
                pthread_mutex_unlock(&cli->lock);
            }
        }
        ksfi_reply_event ev;
        ksf_err e = ksfi_reply_consumer_poll(cli->consumer, timeout_ms, &ev);
        idle = ev.kind == KSFI_REPLY_NOTHING;
        bool handled = ev.kind == KSFI_REPLY_MESSAGE && !e; /* handle_reply notes it */
        if (!handled && (ev.kind == KSFI_REPLY_MESSAGE || ev.kind == KSFI_REPLY_END)) {
            /* An end-of-partition event's offset is the next one to fetch. */
            ksfi_client_note_position(cli, ev.topic, ev.partition,
                                      ev.kind == KSFI_REPLY_END ? ev.offset
                                                                : ev.offset + 1);
        }
        if (ev.kind == KSFI_REPLY_ERROR) {
            ksfi_log(&cli->log, KSF_LOG_WARNING, "client", "reply consumer: %s",
                     ev.error);
        } else if (ev.kind == KSFI_REPLY_MESSAGE && e) {
            ksfi_log(&cli->log, KSF_LOG_ERROR, "client",
                     "out of memory reading reply headers");
        } else if (handled) {
            handle_reply(cli, &ev);
        }
        ksfi_reply_event_release(&ev);
    }
    return NULL;
}
