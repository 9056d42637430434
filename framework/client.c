/*
 * ksf_client: NestJS ClientKafka. One producer for requests and events, one reply
 * consumer that is never subscribed (reply partitions come from a provider, see
 * reply_provider.h), a reply thread that polls it, matches replies to requests by
 * kafka_correlationId and expires deadlines, and a delivery thread that serves the
 * producer's delivery reports.
 *
 * Idle cost: once nothing has been in flight for IDLE_PAUSE_MS (LATE_GRACE_MS after a
 * timeout, so late replies are still seen and counted) the reply partitions are paused
 * (rd_kafka_pause_partitions), so an idle client sends no Fetch requests; the next send
 * resumes them before it produces its request, and seeks them to where they stood (see
 * resume_fetch_locked: a bare resume leaves librdkafka's fetcher asleep for up to 1 s).
 */
#include "alloc.h"
#include "codec.h"
#include "deadline.h"
#include "errinfo.h"
#include "inflight.h"
#include "kafka.h"
#include "metrics.h"
#include "reply_provider.h"
#include "trace.h"
#include "wire.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define RECENT_IDS 4096    /* finished ids remembered for late/duplicate counts */
#define IDLE_PAUSE_MS 1000 /* idle time before the reply partitions are paused */
#define LATE_GRACE_MS                                                                    \
    10000                     /* fetching goes on this long after a timeout, so a late   \
                               * reply is seen and counted in late_replies */
#define POLL_CAP_MS 1000      /* longest reply-thread sleep */
#define DESTROY_FLUSH_MS 5000 /* how long destroy waits for queued emits */

/* A reply partition the client advertises, or drains after a revoke. */
typedef struct reply_slot {
    struct reply_slot *next;
    char *topic;
    int32_t partition;
    uint32_t outstanding;   /* requests in flight that advertised it */
    bool revoked;           /* draining: released when outstanding reaches 0 */
    ksfi_pmetrics *metrics; /* its topic's pattern metrics (owned by the topic) */
    int64_t next_offset;    /* where fetching stands: past the last reply consumed or at
                             * the last end-of-partition; -1 until the first fetch ends */
} reply_slot;

typedef enum { TOPIC_NEW, TOPIC_ACQUIRING, TOPIC_READY } topic_state;

/* A reply topic this client consumes or will consume; never freed before destroy. */
typedef struct reply_topic {
    struct reply_topic *next;
    char *name;
    topic_state state;
    reply_slot *slot;       /* READY: the partition advertised in new requests */
    int32_t revoked_early;  /* ACQUIRING: a partition revoked before it was recorded */
    ksfi_pmetrics *metrics; /* the pattern's; NULL when it could not be allocated */
} reply_topic;

/* The msg_opaque of every produced message, freed by its delivery report. */
typedef struct dr_ticket {
    bool request;
    char id[KSFI_ID_SIZE];
    ksf_emit_fn cb;
    void *user;
} dr_ticket;

/* The shared ticket of events without a callback: nothing per event to allocate. */
static dr_ticket plain_event;

struct ksf_client {
    ksfi_logger log; /* first: librdkafka's log callback reads it from the opaque */
    ksf_config *cfg;
    rd_kafka_t *producer;
    rd_kafka_t *consumer;
    rd_kafka_queue_t *consumer_q; /* yielded to wake the reply thread */
    rd_kafka_queue_t *producer_q; /* the producer's main queue: delivery reports */
    ksfi_reply_provider *provider;
    pthread_t reply_thread, dr_thread;
    bool reply_started, dr_started;
    /* `lock` guards every field below; `cond` signals topic state changes and
     * delivery reports (for flush). */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ksfi_inflight *inflight;
    reply_topic *topics;
    reply_slot *slots;
    bool closing, stop_reply, stop_dr;
    bool paused;        /* reply partitions paused because idle */
    int64_t idle_since; /* when in-flight last dropped to 0 */
    int64_t wake_at;    /* when the reply thread plans to wake up */
    ksfi_idgen ids;     /* correlation ids: no syscall per request */
    ksf_client_stats stats;
    /* Outside the lock: counted per acknowledged event, read by get_stats. */
    _Atomic uint64_t emitted;
    _Atomic uint64_t rebalances; /* reply-group assignments received (metrics) */
};

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait on cli->cond until @p deadline_ms (monotonic). Returns false on timeout. */
static bool
wait_until(ksf_client *cli, int64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = deadline_ms / 1000,
                          .tv_nsec = (long)(deadline_ms % 1000) * 1000000};
    return pthread_cond_timedwait(&cli->cond, &cli->lock, &ts) == 0;
}

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
static void
set_paused_locked(ksf_client *cli, bool pause)
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
        set_paused_locked(cli, false);
    }
    cli->idle_since = now_ms();
    return KSF_OK;
}

/*
 * Make sure reply topic @p name has a partition, acquiring it (outside the lock) when
 * needed. On KSF_OK returns with cli->lock HELD and *slot set, so the caller can
 * account a request against the slot before a revoke could release it.
 */
static ksf_err
reply_slot_get(ksf_client *cli, const char *name, int64_t deadline, reply_slot **slot,
               ksf_errinfo *ei)
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
            if (now_ms() >= deadline ||
                (!wait_until(cli, deadline) && now_ms() >= deadline)) {
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
        int64_t left = deadline - now_ms();
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

/* ---- finishing requests ---------------------------------------------------------- */

/* Unlink @p p from the table and its slot; under lock. The caller then delivers. */
static void
finish_locked(ksf_client *cli, ksfi_pending *p, ksfi_recent why)
{
    ksfi_inflight_remove(cli->inflight, p, why);
    slot_put_locked(cli, p->slot);
    p->slot = NULL;
    if (ksfi_inflight_count(cli->inflight) == 0) {
        cli->idle_since = now_ms();
    }
}

static void
pending_free(ksfi_pending *p)
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
    pending_free(p);
}

/* Fail request @p id with @p err unless it already finished (delivery failures). */
static void
fail_request(ksf_client *cli, const char *id, ksf_err err, const char *text)
{
    pthread_mutex_lock(&cli->lock);
    ksfi_pending *p = ksfi_inflight_find(cli->inflight, id, strlen(id));
    if (p) {
        finish_locked(cli, p, KSFI_RECENT_ANSWERED);
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
    if (!meta.correlation_id) {
        ksfi_free(hdrs); /* not a reply: NestJS ignores it too */
        return;
    }
    const char *cid = meta.correlation_id;
    pthread_mutex_lock(&cli->lock);
    ksfi_pending *p = ksfi_inflight_find(cli->inflight, cid, meta.correlation_id_len);
    if (!p) {
        count_stray_locked(cli, cid, meta.correlation_id_len,
                           rd_kafka_topic_name(msg->rkt));
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
    finish_locked(cli, p, KSFI_RECENT_ANSWERED);
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
    deliver_reply(p->cb, p->user, p->id, &meta, raw, raw_len, bare_end, true);
    pending_free(p);
    ksfi_free(hdrs);
}

/* ---- the reply thread ------------------------------------------------------------- */

/* Expire due requests and plan the next poll; under lock. Returns the expired list. */
static ksfi_pending *
reply_tick_locked(ksf_client *cli, int *timeout_ms)
{
    int64_t now = now_ms();
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
            set_paused_locked(cli, true);
        } else if (!cli->paused && cli->idle_since + IDLE_PAUSE_MS < wake) {
            wake = cli->idle_since + IDLE_PAUSE_MS;
        }
    }
    cli->wake_at = wake;
    *timeout_ms = wake > now ? (int)(wake - now) : 0;
    return expired;
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
            deliver_local(expired, KSF_ETIMEDOUT,
                          "no reply before the request's deadline");
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
            fail_request(cli, t->id, KSF_EKAFKA, text);
        }
    } else {
        if (!msg->err) {
            atomic_fetch_add_explicit(&cli->emitted, 1, memory_order_relaxed);
        }
        if (t->cb) {
            t->cb(msg->err ? KSF_EKAFKA : KSF_OK, text, t->user);
        }
    }
    if (t != &plain_event) {
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
    return KSF_OK;
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
    cli->idle_since = now_ms();
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
    stop_reply_thread(cli);
    for (;;) {
        pthread_mutex_lock(&cli->lock);
        ksfi_pending *p = ksfi_inflight_any(cli->inflight);
        if (p) {
            finish_locked(cli, p, KSFI_RECENT_NONE);
        }
        pthread_mutex_unlock(&cli->lock);
        if (!p) {
            break;
        }
        deliver_local(p, KSF_ECLOSED, "the client was destroyed before the reply came");
    }
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
 * brokers are unreachable. */
static ksf_err
wait_for_brokers(ksf_client *cli, int64_t deadline, ksf_errinfo *ei)
{
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        int64_t left = deadline - now_ms();
        rd_kafka_resp_err_t err =
            rd_kafka_metadata(cli->producer, 0, NULL, &md, left > 0 ? (int)left : 0);
        if (!err) {
            rd_kafka_metadata_destroy(md);
            return KSF_OK;
        }
        bool transient = err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
                         err == RD_KAFKA_RESP_ERR__TRANSPORT ||
                         err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN;
        if (!transient) {
            return ksfi_kafka_fail(ei, err, "connect");
        }
        if (now_ms() + 100 >= deadline) {
            return ksfi_fail(ei, KSF_ETIMEDOUT,
                             "no broker of \"%s\" answered in time (%s); check the "
                             "address and that the brokers are up",
                             cli->cfg->brokers, rd_kafka_err2str(err));
        }
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000},
                  NULL); /* brokers may return */
    }
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
    int64_t left = deadline - now_ms();
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
            set_paused_locked(cli, false);
            cli->idle_since = now_ms();
        }
        if (now_ms() >= deadline ||
            (!wait_until(cli, deadline) && now_ms() >= deadline)) {
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
    int64_t deadline = now_ms() + timeout_ms;
    ksf_err e = wait_for_brokers(cli, deadline, ei);
    if (e) {
        return e;
    }
    /* Topics are never unlinked before destroy, so the walk may drop the lock. */
    pthread_mutex_lock(&cli->lock);
    reply_topic *t = cli->topics;
    pthread_mutex_unlock(&cli->lock);
    if (cli->provider->ops->prepare && (e = announce_topics(cli, t, deadline, ei))) {
        return e;
    }
    for (; t; t = t->next) {
        reply_slot *slot;
        if ((e = reply_slot_get(cli, t->name, deadline, &slot, ei))) {
            return e;
        }
        pthread_mutex_unlock(&cli->lock);
    }
    return wait_first_fetch(cli, deadline, ei);
}

/* ---- sending ----------------------------------------------------------------------- */

/* A message ready to produce: encoded value, headers, key. */
typedef struct outgoing {
    char *value; /* owned when encoded */
    const void *bytes;
    size_t len;
    rd_kafka_headers_t *hdrs;
} outgoing;

static void
outgoing_clear(outgoing *m)
{
    ksfi_free(m->value);
    if (m->hdrs) {
        rd_kafka_headers_destroy(m->hdrs);
    }
    memset(m, 0, sizeof *m);
}

/* The caller's extra headers: names not reserved, values strings. */
static ksf_err
add_user_headers(rd_kafka_headers_t *hdrs, const json_t *user, ksf_errinfo *ei)
{
    const char *name;
    json_t *v;
    if (!user) {
        return KSF_OK;
    }
    if (!json_is_object(user)) {
        return ksfi_fail(ei, KSF_EINVAL, "opts.headers must be a JSON object of strings");
    }
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
        rd_kafka_header_add(hdrs, name, -1, json_string_value(v),
                            (ssize_t)json_string_length(v));
    }
    return KSF_OK;
}

/* Validate and encode what every send and emit carries. */
static ksf_err
outgoing_build(ksf_client *cli, const json_t *data, const ksf_send_opts *opts,
               outgoing *m, ksf_errinfo *ei)
{
    ksf_err e;
    memset(m, 0, sizeof *m);
    if (opts && opts->raw_value) {
        m->bytes = opts->raw_value;
        m->len = opts->raw_len;
    } else {
        if ((e = ksfi_encode_value(data, &m->value, &m->len, ei))) {
            return e;
        }
        m->bytes = m->value;
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
    /* An event without extra headers carries none: no header list to allocate. */
    const json_t *user = opts ? opts->headers : NULL;
    if (user && (!json_is_object(user) || json_object_size(user) > 0)) {
        m->hdrs = rd_kafka_headers_new(8);
        if ((e = add_user_headers(m->hdrs, user, ei))) {
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
 * set, then traceparent (and tracestate). Errors: KSF_EINVAL for a bad opts.traceparent
 * or opts.tracestate, KSF_EKAFKA.
 */
static ksf_err
add_context_headers(outgoing *m, const ksf_send_opts *opts, int64_t deadline,
                    ksf_errinfo *ei)
{
    char tp[KSFI_TRACEPARENT_LEN + 1], dl[21];
    ksfi_header h[1 + KSFI_TRACE_HEADERS_MAX];
    size_t n = 0, nt = 0;
    if (deadline > 0) {
        h[n++] = (ksfi_header){KSFI_HDR_DEADLINE, dl, ksfi_deadline_format(deadline, dl)};
    }
    ksf_err e = ksfi_trace_outgoing(opts ? opts->traceparent : NULL,
                                    opts ? opts->tracestate : NULL, tp, h + n, &nt, ei);
    if (e) {
        return e;
    }
    if (!m->hdrs) {
        m->hdrs = rd_kafka_headers_new(8);
    }
    if (ksfi_kafka_add_headers(m->hdrs, h, n + nt)) {
        return ksfi_fail(ei, KSF_EKAFKA, "could not add the trace headers");
    }
    return KSF_OK;
}

/* Produce @p m to @p topic; on success the headers belong to librdkafka. */
static ksf_err
produce(ksf_client *cli, const char *topic, outgoing *m, const ksf_send_opts *opts,
        dr_ticket *t, ksf_errinfo *ei)
{
    rd_kafka_resp_err_t err = rd_kafka_producev(
        cli->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_VALUE((void *)m->bytes, m->bytes ? m->len : 0),
        RD_KAFKA_V_KEY(opts ? opts->key : NULL, opts && opts->key ? opts->key_len : 0),
        RD_KAFKA_V_HEADERS(m->hdrs), RD_KAFKA_V_OPAQUE(t), RD_KAFKA_V_END);
    if (err) {
        return ksfi_kafka_fail(ei, err,
                               err == RD_KAFKA_RESP_ERR__QUEUE_FULL
                                   ? "producer queue full (retry later or flush)"
                                   : "produce");
    }
    m->hdrs = NULL;
    return KSF_OK;
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

/* Reserve an in-flight entry for @p p against @p slot; called with the lock held. */
static ksf_err
reserve_locked(ksf_client *cli, ksfi_pending *p, reply_slot *slot, ksf_errinfo *ei)
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
    do {
        ksfi_idgen_next(&cli->ids, p->id);
    } while (ksfi_inflight_find(cli->inflight, p->id, strlen(p->id)));
    if (ksfi_inflight_add(cli->inflight, p) != KSF_OK) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    p->slot = slot;
    p->reply_partition = slot->partition;
    p->metrics = slot->metrics;
    p->sent_us = ksfi_metrics_now_us();
    slot->outstanding++;
    if (cli->paused) {
        set_paused_locked(cli, false);
    }
    if (p->deadline_ms < cli->wake_at) {
        rd_kafka_queue_yield(cli->consumer_q); /* the reply thread sleeps too long */
    }
    return KSF_OK;
}

ksf_err
ksf_client_send(ksf_client *cli, const char *pattern, const json_t *data,
                const ksf_send_opts *opts, ksf_reply_fn cb, void *user, ksf_errinfo *ei)
{
    char topic[256], pbuf[12];
    outgoing m;
    ksfi_header proto[KSFI_PROTO_HEADERS_MAX];
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
    if ((e = add_context_headers(&m, opts, wall_deadline, ei))) {
        outgoing_clear(&m);
        return e;
    }
    int64_t deadline = now_ms() + timeout;
    dr_ticket *t = ksfi_calloc(1, sizeof *t);
    ksfi_pending *p = ksfi_calloc(1, sizeof *p);
    if (!t || !p) {
        e = ksfi_fail(ei, KSF_ENOMEM, "out of memory");
        goto fail;
    }
    *p = (ksfi_pending){.deadline_ms = deadline,
                        .cb = cb,
                        .user = user,
                        .stream = opts && (opts->flags & KSF_SEND_STREAM)};
    /* send_check left room for the suffix; snprintf was a visible cost per request. */
    size_t plen = strlen(pattern);
    memcpy(topic, pattern, plen);
    memcpy(topic + plen, KSFI_REPLY_SUFFIX, sizeof KSFI_REPLY_SUFFIX);
    if ((e = reply_slot_get(cli, topic, deadline, &slot, ei))) {
        goto fail;
    }
    e = reserve_locked(cli, p, slot, ei);
    pthread_mutex_unlock(&cli->lock);
    if (e) {
        goto fail;
    }
    t->request = true;
    memcpy(t->id, p->id, sizeof t->id);
    size_t n = ksfi_request_headers(p->id, topic, p->reply_partition, pbuf, proto);
    if (!m.hdrs) {
        m.hdrs = rd_kafka_headers_new(KSFI_PROTO_HEADERS_MAX);
    }
    ksfi_kafka_add_headers(m.hdrs, proto, n);
    char id[KSFI_ID_SIZE];
    memcpy(id, p->id, sizeof id); /* p may be finished and freed once produced */
    ksfi_pmetrics *pm = p->metrics;
    if ((e = produce(cli, pattern, &m, opts, t, ei)) == KSF_OK) {
        ksfi_pmetrics_inc(pm, KSFI_M_SENT);
        pthread_mutex_lock(&cli->lock);
        cli->stats.sent++;
        pthread_mutex_unlock(&cli->lock);
        outgoing_clear(&m);
        return KSF_OK;
    }
    pthread_mutex_lock(&cli->lock);
    bool mine = ksfi_inflight_find(cli->inflight, id, strlen(id)) == p;
    if (mine) {
        finish_locked(cli, p, KSFI_RECENT_NONE);
    }
    pthread_mutex_unlock(&cli->lock);
    if (!mine) {
        /* It already timed out and its callback ran: the send did happen, as far as
         * the caller can tell. */
        ksfi_free(t);
        outgoing_clear(&m);
        return KSF_OK;
    }
fail:
    outgoing_clear(&m);
    ksfi_free(t);
    pending_free(p);
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
        if (e) {
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
    /* An event has no caller waiting: a deadline only when the sender asked for one. */
    int64_t deadline =
        opts && opts->timeout_ms > 0 ? ksfi_wall_ms() + opts->timeout_ms : 0;
    if ((e = add_context_headers(&m, opts, deadline, ei))) {
        outgoing_clear(&m);
        return e;
    }
    dr_ticket *t = cb ? ksfi_calloc(1, sizeof *t) : &plain_event;
    if (!t) {
        e = ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    } else {
        pthread_mutex_lock(&cli->lock);
        bool closing = cli->closing;
        pthread_mutex_unlock(&cli->lock);
        if (t != &plain_event) {
            t->cb = cb;
            t->user = user;
        }
        e = closing ? ksfi_fail(ei, KSF_ECLOSED, "the client is being destroyed")
                    : produce(cli, pattern, &m, opts, t, ei);
    }
    if (e && t != &plain_event) {
        ksfi_free(t);
    }
    outgoing_clear(&m);
    return e;
}

ksf_err
ksf_client_flush(ksf_client *cli, int timeout_ms, ksf_errinfo *ei)
{
    if (!cli) {
        return ksfi_fail(ei, KSF_EINVAL, "ksf_client_flush: client is NULL");
    }
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    ksf_err e = KSF_OK;
    pthread_mutex_lock(&cli->lock);
    int queued;
    /* The delivery thread broadcasts after every poll; the short slices also cover
     * messages leaving between its last broadcast and this check. */
    while ((queued = rd_kafka_outq_len(cli->producer)) > 0) {
        int64_t now = now_ms();
        if (now >= deadline) {
            e = ksfi_fail(ei, KSF_ETIMEDOUT,
                          "%d message(s) still queued after %d ms; are the brokers up?",
                          queued, timeout_ms);
            break;
        }
        wait_until(cli, now + 20 < deadline ? now + 20 : deadline);
    }
    pthread_mutex_unlock(&cli->lock);
    return e;
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
