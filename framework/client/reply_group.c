/*
 * The group-managed reply-partition provider (the client default). One reply-group
 * membership per client (membership.c) whose subscription is every reply topic the
 * client has asked for; its assignor keeps each member's previous partition, and we
 * send as "previous" the partition we advertise, so a surviving client's reply
 * partition never moves while it is still assigned to it. A partition that leaves the
 * assignment is handed back through host->revoked (the client drains it, then
 * releases it); partitions assigned but not advertised are never fetched.
 */
#include "base/alloc.h"
#include "base/errinfo.h"
#include "client/reply_provider.h"
#include "codec/wire.h"
#include "group/membership.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* kafkajs's defaults, used when the consumer.* property is not set. */
#define DEFAULT_SESSION_MS 30000
#define DEFAULT_HEARTBEAT_MS 3000
#define DEFAULT_REBALANCE_MS 60000

/* A reply topic of the subscription. */
typedef struct gtopic {
    struct gtopic *next;
    char *name;
    int32_t partitions; /* from Metadata when first acquired */
    int32_t advertised; /* being handed out or handed out; -1 when none */
    bool handed;        /* acquire returned it: revocations go to the host */
} gtopic;

/* A partition the reply consumer fetches, counted per acquire not yet released (a
 * revoked partition may be drained and acquired again at once). */
typedef struct gfetch {
    struct gfetch *next;
    char *topic;
    int32_t partition;
    unsigned refs;
} gfetch;

/* A revocation to report once the lock is dropped. */
typedef struct grevoke {
    char *topic;
    int32_t partition;
} grevoke;

typedef struct group_provider {
    ksfi_reply_provider base;
    ksfi_membership_config mcfg; /* brokers, group_id, client_id owned below */
    char *brokers, *group_id, *client_id, *instance_id;
    ksfi_security sec; /* TLS/SASL of the membership connection (mcfg.security) */
    /* `lock` guards every field below (callbacks come from the membership thread);
     * `cond` signals a new assignment, a revocation, a fatal error or closing. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ksfi_membership *m; /* created at the first acquire */
    gtopic *topics;
    size_t topic_count;
    gfetch *fetches;
    ksfi_gp_assignment assignment;
    bool assigned;
    bool fatal;
    char fatal_text[KSF_ERRINFO_TEXT_SIZE];
    bool closing;
} group_provider;

/* ---- lookups, under lock --------------------------------------------------------- */

static gtopic *
topic_find(group_provider *p, const char *name)
{
    for (gtopic *t = p->topics; t; t = t->next) {
        if (!strcmp(t->name, name)) {
            return t;
        }
    }
    return NULL;
}

static const ksfi_gp_topic_parts *
assigned_parts(group_provider *p, const char *topic)
{
    for (size_t i = 0; p->assigned && i < p->assignment.count; i++) {
        if (!strcmp(p->assignment.topics[i].topic, topic)) {
            return &p->assignment.topics[i];
        }
    }
    return NULL;
}

static bool
parts_have(const ksfi_gp_topic_parts *tp, int32_t partition)
{
    for (size_t i = 0; tp && i < tp->count; i++) {
        if (tp->partitions[i] == partition) {
            return true;
        }
    }
    return false;
}

/*
 * The partition to advertise for @p t: the one it advertises while still assigned,
 * else the lowest assigned. -1: the assignment lists the topic without partitions
 * (more members than partitions); -2: no assignment covering the topic yet.
 */
static int32_t
pick(group_provider *p, const gtopic *t)
{
    const ksfi_gp_topic_parts *tp = assigned_parts(p, t->name);
    if (!tp) {
        return -2;
    }
    if (tp->count == 0) {
        return -1;
    }
    if (t->advertised >= 0 && parts_have(tp, t->advertised)) {
        return t->advertised;
    }
    int32_t low = tp->partitions[0];
    for (size_t i = 1; i < tp->count; i++) {
        low = tp->partitions[i] < low ? tp->partitions[i] : low;
    }
    return low;
}

/* ---- membership callbacks (membership thread) --------------------------------------
 */

/*
 * Stop advertising every handed-out partition that @p keep does not list (all of them
 * when @p keep is NULL) and collect them into *out (*n entries) for host->revoked.
 */
static void
collect_revoked(group_provider *p, const ksfi_gp_assignment *keep, grevoke **out,
                size_t *n)
{
    *out = ksfi_calloc(p->topic_count ? p->topic_count : 1, sizeof **out);
    *n = 0;
    for (gtopic *t = p->topics; t; t = t->next) {
        const ksfi_gp_topic_parts *tp = NULL;
        for (size_t i = 0; keep && i < keep->count; i++) {
            tp = !strcmp(keep->topics[i].topic, t->name) ? &keep->topics[i] : tp;
        }
        if (t->advertised < 0 || parts_have(tp, t->advertised)) {
            continue;
        }
        if (t->handed && *out && ((*out)[*n].topic = ksfi_strdup(t->name))) {
            (*out)[(*n)++].partition = t->advertised;
        } else if (t->handed) {
            ksfi_log(p->base.host.log, KSF_LOG_ERROR, "client",
                     "reply group %s: out of memory revoking %s [%d]", p->group_id,
                     t->name, (int)t->advertised);
        }
        t->advertised = -1; /* an acquire in progress sees this and picks again */
        t->handed = false;
    }
}

/* Tell the host, without our lock: it calls release(), which takes it. */
static void
report_revoked(group_provider *p, grevoke *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char pa[16];
        ksf_log_field f[] = {{"group", p->group_id},
                             {"topic", r[i].topic},
                             {"partition", KSFI_LOG_NUM(pa, r[i].partition)}};
        ksfi_logkv(p->base.host.log, KSF_LOG_INFO, "client", f, 3,
                   "reply partition revoked; draining it");
        p->base.host.revoked(p->base.host.opaque, r[i].topic, r[i].partition);
        ksfi_free(r[i].topic);
    }
    ksfi_free(r);
}

static void
on_assigned(void *user, int32_t generation, const ksfi_gp_assignment *a)
{
    group_provider *p = user;
    grevoke *r = NULL;
    size_t n = 0;
    ksfi_gp_assignment copy = {0};
    bool copied = ksfi_gp_assignment_copy(&copy, a) == KSF_OK;
    pthread_mutex_lock(&p->lock);
    if (!p->closing) {
        collect_revoked(p, a, &r, &n);
        ksfi_gp_assignment_free(&p->assignment);
        p->assignment = copy;
        p->assigned = copied;
        memset(&copy, 0, sizeof copy);
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    ksfi_gp_assignment_free(&copy);
    if (p->base.host.rebalances) {
        atomic_fetch_add(p->base.host.rebalances, 1);
    }
    if (!copied) {
        ksfi_log(p->base.host.log, KSF_LOG_ERROR, "client",
                 "reply group %s: out of memory keeping generation %d's assignment",
                 p->group_id, (int)generation);
    }
    report_revoked(p, r, n);
}

static void
on_revoked(void *user, int32_t generation, const ksfi_gp_assignment *a,
           const char *reason)
{
    group_provider *p = user;
    grevoke *r = NULL;
    size_t n = 0;
    (void)generation;
    (void)a;
    pthread_mutex_lock(&p->lock);
    if (!p->closing) {
        collect_revoked(p, NULL, &r, &n);
        ksfi_gp_assignment_free(&p->assignment);
        p->assigned = false;
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    if (n > 0) {
        ksfi_log(p->base.host.log, KSF_LOG_WARNING, "client",
                 "reply group %s: reply partitions lost (%s); draining them", p->group_id,
                 reason);
    }
    report_revoked(p, r, n);
}

static void
on_fatal(void *user, ksf_err err, const char *sentence)
{
    group_provider *p = user;
    (void)err;
    pthread_mutex_lock(&p->lock);
    p->fatal = true;
    snprintf(p->fatal_text, sizeof p->fatal_text, "%s", sentence);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* One of our reply topics' partition count (@p advertised: the count last advertised
 * to the group), read under the lock; -1 for a topic that is not ours. */
static int32_t
topic_count(group_provider *p, const char *topic, bool advertised)
{
    pthread_mutex_lock(&p->lock);
    const gtopic *t = topic_find(p, topic);
    int32_t n = !t ? -1 : advertised ? t->advertised : t->partitions;
    pthread_mutex_unlock(&p->lock);
    return n;
}

static int32_t
partition_count_cb(void *user, const char *topic)
{
    group_provider *p = user;
    int32_t n = topic_count(p, topic, false);
    if (n < 0) { /* another member's reply topic: ask the brokers (leader only) */
        int count = 0;
        if (ksfi_reply_consumer_partition_count(p->base.host.consumer, topic,
                                                ksfi_reply_now_ms() + 5000, &count,
                                                NULL) == KSF_OK) {
            n = count;
        }
    }
    return n;
}

static int32_t
previous_cb(void *user, const char *topic)
{
    return topic_count(user, topic, true);
}

/* ---- subscription ------------------------------------------------------------------ */

/* Start the membership, or rejoin with the new topic list; under lock. */
static ksf_err
subscribe_locked(group_provider *p, ksf_errinfo *ei)
{
    ksfi_assignor_topic *list = ksfi_calloc(p->topic_count, sizeof *list);
    if (!list) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    size_t i = 0;
    for (gtopic *t = p->topics; t; t = t->next, i++) {
        list[i] = (ksfi_assignor_topic){t->name, t->partitions};
    }
    ksf_err e;
    if (p->m) {
        e = ksfi_membership_set_topics(p->m, list, p->topic_count, ei);
    } else {
        ksfi_membership_callbacks cb = {on_assigned,        on_revoked, on_fatal,
                                        partition_count_cb, p,          previous_cb};
        p->mcfg.topics = list;
        p->mcfg.topic_count = p->topic_count;
        e = ksfi_membership_new(&p->m, &p->mcfg, &cb, ei);
        p->mcfg.topics = NULL;
    }
    ksfi_free(list);
    return e;
}

/* The partition count of @p name: the subscription's when it lists the topic, else
 * from a Metadata request (made without the lock). */
static ksf_err
topic_partitions(group_provider *p, const char *name, int64_t deadline, int *count,
                 ksf_errinfo *ei)
{
    pthread_mutex_lock(&p->lock);
    gtopic *t = topic_find(p, name);
    *count = t ? (int)t->partitions : 0;
    pthread_mutex_unlock(&p->lock);
    return t ? KSF_OK
             : ksfi_reply_consumer_partition_count(p->base.host.consumer, name, deadline,
                                                   count, ei);
}

/* Find @p name, or add it with @p count partitions without announcing it (*added);
 * under lock. NULL: out of memory. */
static gtopic *
topic_add_locked(group_provider *p, const char *name, int count, bool *added)
{
    gtopic *t = topic_find(p, name); /* maybe added meanwhile by a concurrent prepare */
    *added = false;
    if (t) {
        return t;
    }
    if (!(t = ksfi_calloc(1, sizeof *t)) || !(t->name = ksfi_strdup(name))) {
        ksfi_free(t);
        return NULL;
    }
    t->partitions = count;
    t->advertised = -1;
    t->next = p->topics;
    p->topics = t;
    p->topic_count++;
    *added = true;
    return t;
}

/* Unlink and free the newest topic @p t (an announcement of it failed); under lock. */
static void
topic_drop_newest_locked(group_provider *p, gtopic *t)
{
    p->topics = t->next;
    p->topic_count--;
    ksfi_free(t->name);
    ksfi_free(t);
}

/* Find or add @p name (its partition count is @p count) and announce it to the group
 * when new; under lock. */
static ksf_err
topic_get_locked(group_provider *p, const char *name, int count, gtopic **out,
                 ksf_errinfo *ei)
{
    bool added;
    if (!(*out = topic_add_locked(p, name, count, &added))) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    ksf_err e = added ? subscribe_locked(p, ei) : KSF_OK;
    if (e && p->topics == *out) {
        topic_drop_newest_locked(p, *out);
    }
    return e;
}

/* Learn every topic, then announce the new ones in one subscription. */
static ksf_err
group_prepare(ksfi_reply_provider *base, const char *const *topics, size_t count,
              int timeout_ms, ksf_errinfo *ei)
{
    group_provider *p = (group_provider *)base;
    int64_t deadline = ksfi_reply_now_ms() + timeout_ms;
    bool any_added = false;
    for (size_t i = 0; i < count; i++) {
        int partitions;
        bool added;
        ksf_err e = topic_partitions(p, topics[i], deadline, &partitions, ei);
        if (e) {
            return e;
        }
        pthread_mutex_lock(&p->lock);
        gtopic *t = topic_add_locked(p, topics[i], partitions, &added);
        pthread_mutex_unlock(&p->lock);
        if (!t) {
            return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
        }
        any_added |= added;
    }
    if (!any_added) {
        return KSF_OK;
    }
    pthread_mutex_lock(&p->lock);
    ksf_err e = subscribe_locked(p, ei);
    pthread_mutex_unlock(&p->lock);
    return e;
}

/* ---- fetching -----------------------------------------------------------------------
 */

/* Count one more user of @p partition; true when nobody fetched it before. */
static bool
fetch_ref_locked(group_provider *p, const char *topic, int32_t partition, bool *oom)
{
    for (gfetch *f = p->fetches; f; f = f->next) {
        if (f->partition == partition && !strcmp(f->topic, topic)) {
            f->refs++;
            return false;
        }
    }
    gfetch *f = ksfi_calloc(1, sizeof *f);
    if (!f || !(f->topic = ksfi_strdup(topic))) {
        ksfi_free(f);
        *oom = true;
        return false;
    }
    f->partition = partition;
    f->refs = 1;
    f->next = p->fetches;
    p->fetches = f;
    return true;
}

/* Drop one user of @p partition; true when it was the last (the caller unfetches). */
static bool
fetch_unref_locked(group_provider *p, const char *topic, int32_t partition)
{
    for (gfetch **link = &p->fetches; *link; link = &(*link)->next) {
        gfetch *f = *link;
        if (f->partition == partition && !strcmp(f->topic, topic)) {
            if (--f->refs > 0) {
                return false;
            }
            *link = f->next;
            ksfi_free(f->topic);
            ksfi_free(f);
            return true;
        }
    }
    return false;
}

/*
 * Fetch @p partition for the advertisement of @p t picked under lock (dropped and
 * retaken here). Returns KSF_OK when it is still t's afterwards; *lost when an
 * assignment took it meanwhile (nothing is then held).
 */
static ksf_err
fetch_picked(group_provider *p, gtopic *t, int32_t partition, int64_t deadline,
             bool *lost, ksf_errinfo *ei)
{
    bool oom = false;
    bool fresh = fetch_ref_locked(p, t->name, partition, &oom);
    ksf_err e = oom ? ksfi_fail(ei, KSF_ENOMEM, "out of memory") : KSF_OK;
    if (!oom && fresh) {
        pthread_mutex_unlock(&p->lock);
        e = ksfi_reply_consumer_fetch_from_end(p->base.host.consumer, t->name, partition,
                                               deadline, ei);
        pthread_mutex_lock(&p->lock);
    }
    *lost = !e && t->advertised != partition;
    if (!oom && (e || *lost) && fetch_unref_locked(p, t->name, partition) && !e) {
        pthread_mutex_unlock(&p->lock);
        ksfi_reply_consumer_unfetch(p->base.host.consumer, t->name, partition);
        pthread_mutex_lock(&p->lock);
    }
    if (e) {
        t->advertised = -1;
    }
    return e;
}

/* ---- the provider interface ----------------------------------------------------------
 */

static ksf_err
no_partition(group_provider *p, const gtopic *t, ksf_errinfo *ei)
{
    int n = (int)t->partitions;
    return ksfi_fail(ei, KSF_ENOPARTITION,
                     KSFI_NO_REPLY_TOPIC_FMT
                     " It has %d partition%s and at least %d members of reply group %s "
                     "share it, so this client has none; it gets one as soon as a "
                     "member leaves (run at most %d instances, or add partitions).",
                     t->name, n, n == 1 ? "" : "s", n + 1, p->group_id, n);
}

static ksf_err
timed_out(group_provider *p, const gtopic *t, int timeout_ms, ksf_errinfo *ei)
{
    return ksfi_fail(ei, KSF_ETIMEDOUT,
                     "reply topic %s: reply group %s assigned no partition of it within "
                     "%d ms (a group join takes seconds, a rebalance up to the session "
                     "timeout); call ksf_client_connect() with a longer timeout first",
                     t->name, p->group_id, timeout_ms);
}

/* Wait on p->cond until @p deadline (monotonic ms); false on timeout. */
static bool
wait_until(group_provider *p, int64_t deadline)
{
    struct timespec ts = {.tv_sec = deadline / 1000,
                          .tv_nsec = (long)(deadline % 1000) * 1000000};
    return pthread_cond_timedwait(&p->cond, &p->lock, &ts) == 0 ||
           ksfi_reply_now_ms() < deadline;
}

static ksf_err
group_acquire(ksfi_reply_provider *base, const char *topic, int timeout_ms,
              int32_t *partition, ksf_errinfo *ei)
{
    group_provider *p = (group_provider *)base;
    int64_t deadline = ksfi_reply_now_ms() + timeout_ms;
    gtopic *t;
    int count;
    ksf_err e = topic_partitions(p, topic, deadline, &count, ei);
    if (e) {
        return e;
    }
    pthread_mutex_lock(&p->lock);
    e = topic_get_locked(p, topic, count, &t, ei);
    while (!e) {
        int32_t pick_p = pick(p, t);
        bool lost = false;
        if (p->closing) {
            e = ksfi_fail(ei, KSF_ECLOSED, "the client is being destroyed");
        } else if (p->fatal) {
            e = ksfi_fail(ei, KSF_EKAFKA, "%s", p->fatal_text);
        } else if (pick_p == -1) {
            e = no_partition(p, t, ei);
        } else if (pick_p >= 0) {
            t->advertised = pick_p;
            t->handed = false;
            if (!(e = fetch_picked(p, t, pick_p, deadline, &lost, ei)) && lost) {
                continue;
            }
            t->handed = !e;
            *partition = pick_p;
        } else if (!wait_until(p, deadline)) {
            e = timed_out(p, t, timeout_ms, ei);
        } else {
            continue;
        }
        break;
    }
    pthread_mutex_unlock(&p->lock);
    return e;
}

static void
group_release(ksfi_reply_provider *base, const char *topic, int32_t partition)
{
    group_provider *p = (group_provider *)base;
    pthread_mutex_lock(&p->lock);
    bool last = fetch_unref_locked(p, topic, partition);
    pthread_mutex_unlock(&p->lock);
    if (last) {
        ksfi_reply_consumer_unfetch(base->host.consumer, topic, partition);
    }
}

static void
group_destroy(ksfi_reply_provider *base)
{
    group_provider *p = (group_provider *)base;
    pthread_mutex_lock(&p->lock);
    p->closing = true; /* callbacks during the leave are ignored from now on */
    ksfi_membership *m = p->m;
    p->m = NULL;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    /* LeaveGroup, so the others rebalance at once; a static member stays (its partition
     * waits up to the session timeout for the same group.instance.id). */
    ksfi_membership_close(m);
    while (p->topics) {
        gtopic *t = p->topics;
        p->topics = t->next;
        ksfi_free(t->name);
        ksfi_free(t);
    }
    while (p->fetches) {
        gfetch *f = p->fetches;
        p->fetches = f->next;
        ksfi_free(f->topic);
        ksfi_free(f);
    }
    ksfi_gp_assignment_free(&p->assignment);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    ksfi_free(p->brokers);
    ksfi_free(p->group_id);
    ksfi_free(p->client_id);
    ksfi_free(p->instance_id);
    ksfi_security_clear(&p->sec);
    ksfi_free(p);
}

static const ksfi_reply_provider_ops group_ops = {
    .name = "group",
    .acquire = group_acquire,
    .release = group_release,
    .prepare = group_prepare,
    .destroy = group_destroy,
};

/* ---- construction ------------------------------------------------------------------ */

/* The consumer.* (or kafka.*) librdkafka property @p key as a number, else @p dflt. */
static int32_t
consumer_ms(const ksf_config *cfg, const char *key, int32_t dflt)
{
    int32_t v = dflt;
    for (size_t i = 0; i < cfg->nprops; i++) {
        const ksfi_kprop *kp = &cfg->props[i];
        if (kp->role != KSF_KAFKA_PRODUCER && !strcmp(kp->key, key)) {
            long n = strtol(kp->value, NULL, 10); /* librdkafka validated it */
            v = n > 0 && n <= INT32_MAX ? (int32_t)n : dflt;
        }
    }
    return v;
}

/* The membership's TLS/SASL settings, checked now (files loaded once) so that a
 * combination it cannot do fails ksf_client_new, naming the setting. */
static ksf_err
group_security(group_provider *p, const ksf_config *cfg, ksf_errinfo *ei)
{
    ksfi_transport *probe = NULL;
    ksf_err e = ksfi_security_from_config(cfg, &p->sec, ei);
    if (e == KSF_OK && (e = ksfi_transport_new(&probe, &p->sec, ei)) == KSF_OK) {
        p->mcfg.security = &p->sec;
    }
    ksfi_transport_destroy(probe);
    return e;
}

static ksf_err
group_config(group_provider *p, const ksf_config *cfg, ksf_errinfo *ei)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    p->brokers = ksfi_strdup(cfg->brokers);
    p->group_id = ksfi_config_group_id(cfg, KSFI_CLIENT_POSTFIX);
    p->client_id = ksfi_config_client_id(cfg, KSFI_CLIENT_POSTFIX);
    /* group.instance.id makes the reply-group membership static (KIP-345). */
    p->instance_id = cfg->group_instance_id ? ksfi_strdup(cfg->group_instance_id) : NULL;
    if (!p->brokers || !p->group_id || !p->client_id ||
        (cfg->group_instance_id && !p->instance_id)) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    ksfi_membership_config *c = &p->mcfg;
    c->brokers = p->brokers;
    c->group_id = p->group_id;
    c->client_id = p->client_id;
    c->group_instance_id = p->instance_id;
    c->session_timeout_ms = consumer_ms(cfg, "session.timeout.ms", DEFAULT_SESSION_MS);
    /* The pair goes together: a session timeout set alone (6000 ms, as the docs
     * suggest for the embedded broker) brings the heartbeat down to a third of it,
     * as Kafka recommends, instead of refusing kafkajs's 3000 ms as too long. */
    int32_t hb_default = c->session_timeout_ms / 3 < DEFAULT_HEARTBEAT_MS
                             ? c->session_timeout_ms / 3
                             : DEFAULT_HEARTBEAT_MS;
    c->heartbeat_interval_ms = consumer_ms(cfg, "heartbeat.interval.ms", hb_default);
    c->rebalance_timeout_ms =
        consumer_ms(cfg, "max.poll.interval.ms", DEFAULT_REBALANCE_MS);
    if (c->rebalance_timeout_ms < c->session_timeout_ms) {
        c->rebalance_timeout_ms = c->session_timeout_ms; /* the protocol's floor */
    }
    c->launch_time_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    c->logger = *p->base.host.log;
    /* Check the timeouts now, so a bad combination fails ksf_client_new. */
    ksfi_assignor_topic probe = {"probe", 1};
    c->topics = &probe;
    c->topic_count = 1;
    ksf_err e = ksfi_membership_validate(c, ei);
    c->topics = NULL;
    c->topic_count = 0;
    if (e) {
        char inner[KSF_ERRINFO_TEXT_SIZE];
        snprintf(inner, sizeof inner, "%s", ei ? ei->text : "");
        return ksfi_fail(
            ei, e,
            "%s (from consumer.session.timeout.ms, "
            "consumer.heartbeat.interval.ms and consumer.max.poll.interval.ms)",
            inner);
    }
    return group_security(p, cfg, ei);
}

ksf_err
ksfi_reply_group_new(const ksf_config *cfg, const ksfi_reply_host *host,
                     ksfi_reply_provider **out, ksf_errinfo *ei)
{
    group_provider *p = ksfi_calloc(1, sizeof *p);
    if (!p) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    p->base.ops = &group_ops;
    p->base.host = *host;
    ksf_err e = KSF_ENOMEM;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        ksfi_free(p);
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    bool cond_ok = pthread_cond_init(&p->cond, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cond_ok || pthread_mutex_init(&p->lock, NULL) != 0) {
        if (cond_ok) {
            pthread_cond_destroy(&p->cond);
        }
        ksfi_free(p);
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory");
    }
    if ((e = group_config(p, cfg, ei))) {
        goto fail;
    }
    *out = &p->base;
    return KSF_OK;
fail:
    group_destroy(&p->base);
    return e;
}
