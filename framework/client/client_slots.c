/*
 * A client's reply topics and slots (client_slots.h). A slot is the partition of a
 * reply topic the client advertises in kafka_replyPartition; it counts the requests in
 * flight that advertised it, and once the provider revokes it, it is drained (still
 * fetched) until that count reaches 0 and only then released.
 *
 * Idle cost: once nothing has been in flight for IDLE_PAUSE_MS (LATE_GRACE_MS after a
 * timeout, so late replies are still seen and counted; client_reply_thread.c decides)
 * the reply partitions are paused, so an idle client sends no Fetch requests; the next
 * send resumes them before it produces its request, and seeks them to where they stood
 * (see slot_position_locked).
 *
 * Locking: everything here runs under cli->lock except the provider's acquire, which
 * ksfi_client_reply_slot_get calls with the lock dropped (it takes seconds in a group
 * join) and the revoke notice, which takes the lock itself.
 */
#include "client/client_slots.h"

/* ---- pause and resume -------------------------------------------------------------- */

/* Where fetching of @p topic [@p partition] stands, for the seek after a resume (see
 * ksfi_reply_consumer_set_paused: a bare resume leaves librdkafka's fetcher asleep for
 * up to 1 s); -1 when unknown. Runs under lock, inside set_paused_locked. A reply the
 * reply thread has polled but not yet noted would be read again and counted as a
 * duplicate; only a stray one can be in that window, since nothing was in flight while
 * paused. */
static int64_t
slot_position_locked(void *arg, const char *topic, int32_t partition)
{
    ksf_client *cli = arg;
    for (reply_slot *s = cli->slots; s; s = s->next) {
        if (s->next_offset >= 0 && s->partition == partition &&
            !strcmp(s->topic, topic)) {
            return s->next_offset;
        }
    }
    return -1;
}

void
ksfi_client_set_paused_locked(ksf_client *cli, bool pause)
{
    ksfi_reply_consumer_set_paused(cli->consumer, pause, slot_position_locked, cli);
    cli->paused = pause;
}

/* The first note of a slot also tells connect() that its first fetch is done. */
void
ksfi_client_note_position(ksf_client *cli, const char *topic, int32_t partition,
                          int64_t next)
{
    if (!topic || next < 0) {
        return;
    }
    pthread_mutex_lock(&cli->lock);
    ksfi_client_note_position_locked(cli, topic, partition, next);
    pthread_mutex_unlock(&cli->lock);
}

void
ksfi_client_note_position_locked(ksf_client *cli, const char *topic, int32_t partition,
                                 int64_t next)
{
    if (!topic || next < 0) {
        return;
    }
    for (reply_slot *s = cli->slots; s; s = s->next) {
        if (s->partition == partition && next > s->next_offset &&
            !strcmp(s->topic, topic)) {
            if (s->next_offset < 0) {
                pthread_cond_broadcast(&cli->cond);
            }
            s->next_offset = next;
        }
    }
}

/* ---- slots ------------------------------------------------------------------------- */

void
ksfi_client_slot_free_locked(ksf_client *cli, reply_slot *s)
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

void
ksfi_client_slot_put_locked(ksf_client *cli, reply_slot *s)
{
    if (s && --s->outstanding == 0 && s->revoked) {
        ksfi_client_slot_free_locked(cli, s);
    }
}

void
ksfi_client_on_revoked(void *opaque, const char *topic, int32_t partition)
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
                ksfi_client_slot_free_locked(cli, s);
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

/* ---- topics ------------------------------------------------------------------------ */

reply_topic *
ksfi_client_topic_get_locked(ksf_client *cli, const char *name)
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

/* The one thread that finds a topic TOPIC_NEW acquires its partition, with the lock
 * dropped; the others wait for the state change. */
ksf_err
ksfi_client_reply_slot_get(ksf_client *cli, const char *name, int64_t deadline,
                           ksfi_client_slot_fn with_slot, void *arg, ksf_errinfo *ei)
{
    ksf_err e = KSF_OK;
    pthread_mutex_lock(&cli->lock);
    for (;;) {
        reply_topic *t = cli->closing ? NULL : ksfi_client_topic_get_locked(cli, name);
        if (!t) {
            e = cli->closing ? ksfi_fail(ei, KSF_ECLOSED, "the client is being destroyed")
                             : ksfi_fail(ei, KSF_ENOMEM, "out of memory");
            break;
        }
        if (t->state == TOPIC_READY) {
            if (with_slot) {
                with_slot(cli, t, arg);
            }
            break;
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
        /* TOPIC_READY now: the next round runs with_slot */
    }
    pthread_mutex_unlock(&cli->lock);
    return e;
}

/* Before its first fetch a reply can wait for librdkafka's first Fetch of the new
 * partition; after it, a reply to a request sent now is fetched promptly. */
ksf_err
ksfi_client_wait_first_fetch(ksf_client *cli, int64_t deadline, ksf_errinfo *ei)
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
