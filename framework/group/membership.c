/*
 * The member's life: JoinGroup/SyncGroup rounds, heartbeats, the session check,
 * LeaveGroup, the membership thread and its creation and teardown. The coordinator
 * connection is in membership_coord.c, the leader's plan in membership_plan.c.
 */
#include "group/membership.h"
#include "group/membership_internal.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "codec/wire.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LEAVE_TIMEOUT_MS 3000
/* Consecutive MEMBER_ID_REQUIRED answers tolerated before backing off (a broker
 * sends it once per join; more means something is wrong). */
#define MAX_MEMBER_ID_RETRIES 3
#define LEADER_SYNC_DELAY_MS 300

static void
publish_state(ksfi_membership *m, bool stable, bool leader)
{
    pthread_mutex_lock(&m->lock);
    m->stats.stable = stable;
    m->stats.leader = leader;
    m->stats.generation = m->assigned ? m->assigned_generation : -1;
    m->stats.fatal = m->fatal;
    pthread_mutex_unlock(&m->lock);
}

void
ksfi_membership_get_stats(ksfi_membership *m, ksfi_membership_stats *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->stats;
    pthread_mutex_unlock(&m->lock);
}

/* While leaving, close() has already been called: waits must not end early. */
static bool
cancel_stop(void *user)
{
    ksfi_membership *m = user;
    return !m->leaving && atomic_load(&m->closing);
}

/* ---- outcomes the owner hears about ------------------------------------------------ */

void
ksfi_membership_revoke(ksfi_membership *m, const char *reason)
{
    if (!m->assigned) {
        return;
    }
    ksfi_log(&m->log, KSF_LOG_WARNING, COMPONENT,
             "group %s: assignment of generation %d lost: %s", m->group_id,
             (int)m->assigned_generation, reason);
    if (m->cb.on_revoked) {
        m->cb.on_revoked(m->cb.user, m->assigned_generation, &m->assignment, reason);
    }
    ksfi_gp_assignment_free(&m->assignment);
    m->assigned = false;
    STAT_ADD(m, revocations);
    publish_state(m, false, false);
}

void
ksfi_membership_fatal(ksfi_membership *m, ksf_err err, const char *fmt, ...)
{
    char text[KSF_ERRINFO_TEXT_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    ksfi_log(&m->log, KSF_LOG_ERROR, COMPONENT, "%s", text);
    m->fatal = true;
    ksfi_membership_revoke(m, text);
    publish_state(m, false, false);
    if (m->cb.on_fatal) {
        m->cb.on_fatal(m->cb.user, err, text);
    }
}

/* ---- JoinGroup v2-5, SyncGroup v1-3 ------------------------------------------------ */

/* This member's metadata: our topics, our lowest partition of each, our launch time. */
static ksf_err
build_metadata(ksfi_membership *m, ksfi_gp_buf *out)
{
    const char **names = ksfi_calloc(m->topic_count, sizeof *names);
    ksfi_gp_prev *prev = ksfi_calloc(m->topic_count, sizeof *prev);
    size_t np = 0;
    ksf_err err = KSF_ENOMEM;
    if (names && prev) {
        for (size_t i = 0; i < m->topic_count; i++) {
            names[i] = m->topics[i].name;
            int32_t low = m->cb.previous_partition
                              ? m->cb.previous_partition(m->cb.user, names[i])
                              : -1;
            if (low < 0 && m->assigned) {
                low = ksfi_gp_assignment_min(&m->assignment, names[i]);
            }
            if (low >= 0) {
                prev[np].topic = (char *)names[i];
                prev[np++].partition = low;
            }
        }
        err = ksfi_gp_encode_member_meta(out, names, m->topic_count, prev, np,
                                         m->launch_time_ns, NULL);
    }
    ksfi_free(names);
    ksfi_free(prev);
    return err;
}

/*
 * Send @p req (encoded with result @p encoded; freed here) and decode its response
 * into @p jr for a JoinGroup or @p sr for a SyncGroup (the other one NULL). A
 * response that does not decode is an I/O error and ends the connection, since the
 * stream is no longer in step.
 */
static ksf_err
join_or_sync(ksfi_membership *m, ksfi_gp_buf *req, ksf_err encoded, int32_t corr,
             ksfi_gp_join_group_resp *jr, ksfi_gp_sync_group_resp *sr)
{
    uint8_t *payload = NULL;
    const uint8_t *body;
    size_t blen;
    ksf_errinfo ei = {0};
    ksf_err err = encoded;
    if (err == KSF_OK &&
        (err = ksfi_membership_roundtrip(m, req, corr, m->rebalance_ms + 5000,
                                         jr ? "JoinGroup" : "SyncGroup", &payload, &body,
                                         &blen)) == KSF_OK &&
        (err = jr ? ksfi_gp_decode_join_group(body, blen, m->v_join, jr, &ei)
                  : ksfi_gp_decode_sync_group(body, blen, m->v_sync, sr, &ei)) !=
            KSF_OK) {
        ksfi_log(&m->log, KSF_LOG_WARNING, COMPONENT, "group %s: %s", m->group_id,
                 ei.text);
        STAT_ADD(m, io_errors);
        ksfi_membership_conn_close(m);
    }
    ksfi_free(payload);
    ksfi_gp_buf_free(req);
    return err;
}

static ksf_err
send_join(ksfi_membership *m, const ksfi_gp_buf *meta, ksfi_gp_join_group_resp *jr)
{
    ksfi_gp_buf req = {0};
    ksfi_gp_header h = ksfi_membership_next_header(m, m->v_join);
    ksfi_gp_join_request r = {m->group_id,  m->session_ms, m->rebalance_ms,
                              m->member_id, "consumer",    KSFI_ASSIGNOR_NAME,
                              meta->data,   meta->len,     m->instance_id};
    return join_or_sync(m, &req, ksfi_gp_encode_join_group(&req, &h, &r),
                        h.correlation_id, jr, NULL);
}

/* JoinGroup, repeating at once with the given id on MEMBER_ID_REQUIRED (KIP-394). A
 * static member never gets it: the broker names it at once (KIP-345). */
static ksf_err
join(ksfi_membership *m, ksfi_gp_join_group_resp *jr)
{
    ksfi_gp_buf meta = {0};
    ksf_err err = build_metadata(m, &meta);
    for (int tries = 0; err == KSF_OK; tries++) {
        if ((err = send_join(m, &meta, jr)) != KSF_OK) {
            break;
        }
        if (jr->error_code != KSFI_GP_ERR_MEMBER_ID_REQUIRED ||
            tries == MAX_MEMBER_ID_RETRIES || !jr->member_id[0]) {
            break;
        }
        ksfi_free(m->member_id);
        m->member_id = jr->member_id; /* the id the broker set aside for us */
        jr->member_id = NULL;
        ksfi_gp_join_group_resp_free(jr);
    }
    ksfi_gp_buf_free(&meta);
    if (err == KSF_OK && jr->error_code != 0) {
        ksfi_membership_act_on_error(m, "JoinGroup", jr->error_code);
        ksfi_gp_join_group_resp_free(jr);
        err = KSF_EKAFKA;
    }
    return err;
}

static ksf_err
send_sync(ksfi_membership *m, const ksfi_membership_plan *lp, ksfi_gp_sync_group_resp *sr)
{
    ksfi_gp_buf req = {0};
    ksfi_gp_header h = ksfi_membership_next_header(m, m->v_sync);
    ksf_err encoded =
        ksfi_gp_encode_sync_group(&req, &h, m->group_id, m->generation, m->member_id,
                                  m->instance_id, lp->blobs, lp->n);
    return join_or_sync(m, &req, encoded, h.correlation_id, NULL, sr);
}

/* A new assignment arrived: keep it and tell the owner. */
static void
adopt(ksfi_membership *m, ksfi_gp_assignment *a, bool leader)
{
    ksfi_gp_assignment_free(&m->assignment);
    m->assignment = *a;
    memset(a, 0, sizeof *a);
    m->assigned = true;
    m->assigned_generation = m->generation;
    m->state = ST_STABLE;
    m->last_ok_ms = ksfi_now_ms();
    m->next_heartbeat_ms = m->last_ok_ms + m->heartbeat_ms;
    m->backoff_ms = BACKOFF_MIN_MS;
    STAT_ADD(m, syncs);
    publish_state(m, true, leader);
    char gen[16];
    ksf_log_field f[] = {{"group", m->group_id},
                         {"member", m->member_id},
                         {"generation", KSFI_LOG_NUM(gen, m->generation)},
                         {"leader", leader ? "true" : "false"}};
    /* The sentence stays as it was: tests and people grep "in generation N". */
    ksfi_logkv(&m->log, KSF_LOG_INFO, COMPONENT, f, 4,
               "group %s: member %s in generation %d%s", m->group_id, m->member_id,
               (int)m->generation, leader ? " (leader)" : "");
    if (m->cb.on_assigned) {
        m->cb.on_assigned(m->cb.user, m->generation, &m->assignment);
    }
}

/*
 * One round: JoinGroup, then SyncGroup at once (the mock answers a follower that syncs
 * after the leader with INVALID_REQUEST, so followers must not wait for anything, and
 * there the leader waits a little).
 */
static ksf_err
join_and_sync(ksfi_membership *m)
{
    ksfi_gp_join_group_resp jr = {0};
    ksfi_gp_sync_group_resp sr = {0};
    ksfi_gp_assignment a = {0};
    ksfi_membership_plan lp = {0};
    ksf_errinfo ei = {0};
    ksf_err err = join(m, &jr);
    if (err != KSF_OK) {
        return err;
    }
    ksfi_free(m->member_id);
    m->member_id = jr.member_id;
    jr.member_id = NULL;
    m->generation = jr.generation_id;
    m->last_ok_ms = ksfi_now_ms();
    STAT_ADD(m, joins);
    bool leader = strcmp(jr.leader, m->member_id) == 0;
    if (leader && (err = ksfi_membership_plan_build(m, &jr, &lp)) != KSF_OK) {
        goto done; /* logged; rejoin after a backoff */
    }
    if (leader && jr.member_count > 1 && m->followers_sync_first) {
        /* Mock only: the librdkafka mock answers followers that sync after the leader
         * with INVALID_REQUEST (KAFKA-GROUP-PROTOCOL.md 7); Java and librdkafka leaders
         * fetch metadata first and so are naturally later. A real broker holds every
         * SyncGroup until the leader's, so there the leader syncs at once. */
        ksfi_membership_nap(m, LEADER_SYNC_DELAY_MS);
    }
    if ((err = send_sync(m, &lp, &sr)) != KSF_OK) {
        goto done;
    }
    if (sr.error_code != 0) {
        ksfi_membership_act_on_error(m, "SyncGroup", sr.error_code);
        err = KSF_EKAFKA;
    } else if ((err = ksfi_gp_decode_assignment(sr.assignment, sr.assignment_len, &a,
                                                &ei)) != KSF_OK) {
        ksfi_log(&m->log, KSF_LOG_WARNING, COMPONENT, "group %s: the leader's %s",
                 m->group_id, ei.text);
    } else {
        adopt(m, &a, leader);
    }
done:
    ksfi_gp_assignment_free(&a);
    ksfi_gp_sync_group_resp_free(&sr);
    ksfi_membership_plan_free(&lp);
    ksfi_gp_join_group_resp_free(&jr);
    return err;
}

/* ---- Heartbeat v1-3, LeaveGroup v1 ------------------------------------------------- */

static void
heartbeat(ksfi_membership *m)
{
    int64_t now = ksfi_now_ms();
    if (now < m->next_heartbeat_ms) {
        ksfi_membership_nap(m, m->next_heartbeat_ms - now);
        return;
    }
    m->next_heartbeat_ms = now + m->heartbeat_ms;
    ksfi_gp_buf req = {0};
    ksfi_gp_simple_resp r = {0};
    uint8_t *payload = NULL;
    const uint8_t *body;
    size_t blen;
    ksfi_gp_header h = ksfi_membership_next_header(m, m->v_hb);
    if (ksfi_gp_encode_heartbeat(&req, &h, m->group_id, m->generation, m->member_id,
                                 m->instance_id) == KSF_OK &&
        ksfi_membership_roundtrip(m, &req, h.correlation_id, m->session_ms, "Heartbeat",
                                  &payload, &body, &blen) == KSF_OK) {
        if (ksfi_gp_decode_heartbeat(body, blen, m->v_hb, &r, NULL) != KSF_OK) {
            STAT_ADD(m, io_errors);
            ksfi_membership_conn_close(m);
        } else if (r.error_code == 0) {
            m->last_ok_ms = ksfi_now_ms();
            m->backoff_ms = BACKOFF_MIN_MS;
            STAT_ADD(m, heartbeats);
        } else {
            ksfi_membership_act_on_error(m, "Heartbeat", r.error_code);
        }
    }
    ksfi_free(payload);
    ksfi_gp_buf_free(&req);
}

/*
 * The coordinator evicts a member whose last successful Join/Sync/Heartbeat is older
 * than the session timeout. It received that request before we received its answer, so
 * once session_ms have passed since our last success, it has certainly evicted us.
 */
static void
check_session(ksfi_membership *m)
{
    if (!m->assigned || ksfi_now_ms() - m->last_ok_ms <= m->session_ms) {
        return;
    }
    char reason[160];
    snprintf(reason, sizeof reason,
             "no successful heartbeat for longer than the %d ms session timeout: the "
             "coordinator has evicted this member",
             (int)m->session_ms);
    ksfi_membership_revoke(m, reason);
    m->member_id[0] = '\0';
    m->generation = -1;
    m->state = ST_NEED_JOIN;
}

/* LeaveGroup v1, bounded by LEAVE_TIMEOUT_MS, so the others need not wait out our
 * session. Best effort: the group recovers without it, only slower. */
static void
leave(ksfi_membership *m)
{
    int64_t deadline = ksfi_now_ms() + LEAVE_TIMEOUT_MS;
    ksfi_gp_buf req = {0};
    ksfi_gp_simple_resp r = {0};
    uint8_t *payload = NULL;
    const uint8_t *body;
    size_t blen;
    m->leaving = true;
    m->cancel.wake_fd = -1; /* readable for good now: do not watch it */
    if (!m->conn && (!m->coord.host ||
                     ksfi_membership_conn_setup(m, &m->coord, deadline) != KSF_OK)) {
        return;
    }
    ksfi_gp_header h = ksfi_membership_next_header(m, m->v_leave);
    if (ksfi_gp_encode_leave_group(&req, &h, m->group_id, m->member_id) == KSF_OK &&
        ksfi_membership_roundtrip(m, &req, h.correlation_id,
                                  (int)(deadline - ksfi_now_ms()), "LeaveGroup", &payload,
                                  &body, &blen) == KSF_OK &&
        ksfi_gp_decode_leave_group(body, blen, m->v_leave, &r, NULL) == KSF_OK) {
        ksfi_log(&m->log, KSF_LOG_INFO, COMPONENT, "group %s: member %s left: %s",
                 m->group_id, m->member_id, ksfi_gp_error_name(r.error_code));
    }
    ksfi_free(payload);
    ksfi_gp_buf_free(&req);
}

static void
free_topics(ksfi_assignor_topic *topics, size_t count)
{
    for (size_t i = 0; topics && i < count; i++) {
        ksfi_free((char *)topics[i].name);
    }
    ksfi_free(topics);
}

/* Adopt a subscription from set_topics(); a stable member rejoins to announce it. */
static void
apply_pending_topics(ksfi_membership *m)
{
    pthread_mutex_lock(&m->lock);
    ksfi_assignor_topic *t = m->pending_topics;
    size_t n = m->pending_count;
    m->pending_topics = NULL;
    pthread_mutex_unlock(&m->lock);
    if (!t) {
        return;
    }
    free_topics(m->topics, m->topic_count);
    m->topics = t;
    m->topic_count = n;
    if (m->state == ST_STABLE) {
        m->state = ST_NEED_JOIN;
    }
}

static void *
run(void *arg)
{
    ksfi_membership *m = arg;
    while (!atomic_load(&m->closing)) {
        apply_pending_topics(m);
        check_session(m);
        if (ksfi_conn_reauth_due(m->conn)) {
            ksfi_membership_conn_close(
                m); /* reconnect (and log in again) before the broker cuts us */
        }
        if (m->fatal) {
            ksfi_membership_nap(m, 1000);
        } else if (!m->conn) {
            if (ksfi_membership_discover(m) != KSF_OK) {
                ksfi_membership_backoff(m);
            }
        } else if (m->state == ST_NEED_JOIN) {
            if (join_and_sync(m) != KSF_OK) {
                ksfi_membership_backoff(m);
            }
        } else {
            heartbeat(m);
        }
    }
    /* KIP-345: a static member does not leave, so that a restart with the same
     * instance id within the session timeout takes its partitions back without a
     * rebalance (Java's consumer and librdkafka do the same). The price: when it does
     * not come back, its partitions wait out the session timeout. */
    if (!atomic_load(&m->abandon) && m->member_id[0] && !m->instance_id) {
        leave(m);
    }
    ksfi_membership_conn_close(m);
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------------------- */

static void
membership_free(ksfi_membership *m)
{
    for (size_t i = 0; i < m->bootstrap_count; i++) {
        ksfi_free(m->bootstrap[i].host);
    }
    free_topics(m->topics, m->topic_count);
    free_topics(m->pending_topics, m->pending_count);
    ksfi_free(m->bootstrap);
    ksfi_free(m->group_id);
    ksfi_free(m->client_id);
    ksfi_free(m->instance_id);
    ksfi_free(m->member_id);
    ksfi_free(m->coord.host);
    ksfi_gp_assignment_free(&m->assignment);
    ksfi_transport_destroy(m->transport);
    if (m->wake[0] >= 0) {
        close(m->wake[0]);
        close(m->wake[1]);
    }
    pthread_mutex_destroy(&m->lock);
    ksfi_free(m);
}

static ksf_err
copy_config(ksfi_membership *m, const ksfi_membership_config *c, ksf_errinfo *ei)
{
    ksf_err err =
        ksfi_membership_parse_brokers(c->brokers, &m->bootstrap, &m->bootstrap_count, ei);
    if (err != KSF_OK) {
        return err;
    }
    m->group_id = ksfi_strdup(c->group_id);
    m->client_id = c->client_id ? ksfi_strdup(c->client_id) : NULL;
    m->instance_id = c->group_instance_id ? ksfi_strdup(c->group_instance_id) : NULL;
    m->member_id = ksfi_strdup("");
    m->topics = ksfi_calloc(c->topic_count, sizeof *m->topics);
    if (!m->group_id || (c->client_id && !m->client_id) ||
        (c->group_instance_id && !m->instance_id) || !m->member_id || !m->topics) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory creating the group membership");
    }
    for (size_t i = 0; i < c->topic_count; i++) {
        m->topics[i].partitions = c->topics[i].partitions;
        if (!(m->topics[i].name = ksfi_strdup(c->topics[i].name))) {
            return ksfi_fail(ei, KSF_ENOMEM,
                             "out of memory creating the group membership");
        }
        m->topic_count++;
    }
    m->session_ms = c->session_timeout_ms;
    m->rebalance_ms = c->rebalance_timeout_ms;
    m->heartbeat_ms = c->heartbeat_interval_ms;
    m->launch_time_ns = c->launch_time_ns;
    m->log = c->logger;
    return KSF_OK;
}

ksf_err
ksfi_membership_new(ksfi_membership **out, const ksfi_membership_config *cfg,
                    const ksfi_membership_callbacks *cb, ksf_errinfo *ei)
{
    ksf_err err = ksfi_membership_validate(cfg, ei);
    if (err != KSF_OK) {
        return err;
    }
    ksfi_membership *m = ksfi_calloc(1, sizeof *m);
    if (!m) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory creating the group membership");
    }
    m->wake[0] = m->wake[1] = -1;
    m->generation = -1;
    m->backoff_ms = BACKOFF_MIN_MS;
    m->stats.generation = -1;
    if (cb) {
        m->cb = *cb;
    }
    pthread_mutex_init(&m->lock, NULL);
    if ((err = copy_config(m, cfg, ei)) != KSF_OK) {
        goto fail;
    }
    if (pipe(m->wake) != 0) {
        m->wake[0] = m->wake[1] = -1;
        err = ksfi_fail(ei, KSF_ENOMEM, "group %s: cannot create a pipe: %s", m->group_id,
                        strerror(errno));
        goto fail;
    }
    m->cancel = (ksfi_cancel){cancel_stop, m->wake[0], m};
    ksfi_security plaintext = {0};
    if ((err = ksfi_transport_new(
             &m->transport, cfg->security ? cfg->security : &plaintext, ei)) != KSF_OK) {
        goto fail;
    }
    if (pthread_create(&m->thread, NULL, run, m) != 0) {
        err = ksfi_fail(ei, KSF_ENOMEM, "group %s: cannot start the membership thread",
                        m->group_id);
        goto fail;
    }
    *out = m;
    return KSF_OK;
fail:
    membership_free(m);
    return err;
}

ksf_err
ksfi_membership_set_topics(ksfi_membership *m, const ksfi_assignor_topic *topics,
                           size_t topic_count, ksf_errinfo *ei)
{
    ksfi_membership_config c = {.brokers = "x:1",
                                .group_id = m->group_id,
                                .topics = topics,
                                .topic_count = topic_count,
                                .session_timeout_ms = m->session_ms,
                                .rebalance_timeout_ms = m->rebalance_ms,
                                .heartbeat_interval_ms = m->heartbeat_ms};
    ksf_err err = ksfi_membership_validate(&c, ei);
    if (err != KSF_OK) {
        return err;
    }
    ksfi_assignor_topic *copy = ksfi_calloc(topic_count, sizeof *copy);
    for (size_t i = 0; copy && i < topic_count; i++) {
        copy[i].partitions = topics[i].partitions;
        if (!(copy[i].name = ksfi_strdup(topics[i].name))) {
            free_topics(copy, i);
            copy = NULL;
        }
    }
    if (!copy) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory changing the subscription");
    }
    pthread_mutex_lock(&m->lock);
    free_topics(m->pending_topics, m->pending_count);
    m->pending_topics = copy;
    m->pending_count = topic_count;
    pthread_mutex_unlock(&m->lock);
    return KSF_OK;
}

static void
stop(ksfi_membership *m, bool abandon)
{
    if (!m) {
        return;
    }
    atomic_store(&m->abandon, abandon);
    atomic_store(&m->closing, true);
    ssize_t w = write(m->wake[1], "x", 1);
    (void)w; /* a full pipe is already readable: the thread wakes either way */
    pthread_join(m->thread, NULL);
    membership_free(m);
}

void
ksfi_membership_close(ksfi_membership *m)
{
    stop(m, false);
}

void
ksfi_membership_abandon(ksfi_membership *m)
{
    stop(m, true);
}
