#include "membership.h"

#include "alloc.h"
#include "errinfo.h"
#include "transport.h"
#include "wire.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COMPONENT "group"
#define CONNECT_TIMEOUT_MS 5000
#define LEAVE_TIMEOUT_MS 3000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
/* Consecutive MEMBER_ID_REQUIRED answers tolerated before backing off (a broker
 * sends it once per join; more means something is wrong). */
#define MAX_MEMBER_ID_RETRIES 3
#define LEADER_SYNC_DELAY_MS 300

typedef enum member_state { ST_NEED_JOIN, ST_STABLE } member_state;

struct ksfi_membership {
    /* configuration, immutable after _new */
    ksfi_hostport *bootstrap;
    size_t bootstrap_count;
    char *group_id, *client_id;
    ksfi_assignor_topic *topics; /* names owned */
    size_t topic_count;
    int32_t session_ms, rebalance_ms, heartbeat_ms;
    int64_t launch_time_ns;
    ksfi_logger log;
    ksfi_membership_callbacks cb;

    pthread_t thread;
    int wake[2];         /* written by close/abandon to interrupt any wait */
    atomic_bool closing; /* stop the loop */
    atomic_bool abandon; /* ... without LeaveGroup */
    bool leaving;        /* thread only: waits ignore the wake pipe */

    pthread_mutex_t lock; /* guards stats and pending_topics, shared with other threads */
    ksfi_membership_stats stats;
    ksfi_assignor_topic *pending_topics; /* set_topics: the next subscription */
    size_t pending_count;

    /* thread-only protocol state */
    ksfi_transport *transport; /* security settings, TLS context */
    ksfi_cancel cancel;        /* how close() interrupts a wait on the connection */
    ksfi_conn *conn;           /* to the coordinator, NULL when none */
    ksfi_hostport coord;       /* known coordinator (host NULL when unknown) */
    size_t next_bootstrap;
    int32_t corr;
    int16_t v_find, v_join, v_sync, v_hb, v_leave;
    char *member_id; /* "" until the coordinator names us */
    int32_t generation;
    member_state state;
    ksfi_gp_assignment assignment;
    bool assigned;
    int32_t assigned_generation;
    int64_t last_ok_ms; /* when the last successful Join/Sync/Heartbeat answer arrived */
    int64_t next_heartbeat_ms;
    unsigned backoff_ms;
    bool fatal;
};

#define STAT_ADD(m, field)                                                               \
    do {                                                                                 \
        pthread_mutex_lock(&(m)->lock);                                                  \
        (m)->stats.field++;                                                              \
        pthread_mutex_unlock(&(m)->lock);                                                \
    } while (0)

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

/* ---- the connection (transport.c: TCP, TLS, SASL, frames) -------------------------- */

/* While leaving, close() has already been called: waits must not end early. */
static bool
cancel_stop(void *user)
{
    ksfi_membership *m = user;
    return !m->leaving && atomic_load(&m->closing);
}

/* Sleep up to @p ms, returning early when close() is called. */
static void
nap(ksfi_membership *m, int64_t ms)
{
    int64_t deadline = ksfi_now_ms() + ms;
    while (!atomic_load(&m->closing) && ksfi_now_ms() < deadline) {
        struct pollfd p = {m->wake[0], POLLIN, 0};
        int64_t left = deadline - ksfi_now_ms();
        poll(&p, 1, (int)(left > 1000 ? 1000 : (left < 0 ? 0 : left)));
    }
}

static void
conn_close(ksfi_membership *m)
{
    ksfi_conn_close(m->conn);
    m->conn = NULL;
}

static void fatal(ksfi_membership *m, ksf_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Open a connection to @p hp: TCP, then TLS and SASL when configured. */
static ksf_err
conn_open(ksfi_membership *m, const ksfi_hostport *hp, int64_t deadline)
{
    ksf_errinfo ei = {0};
    conn_close(m);
    ksf_err err = ksfi_conn_open(&m->conn, m->transport, hp->host, hp->port, m->client_id,
                                 deadline, &m->cancel, &ei);
    if (err == KSF_OK || err == KSF_ECLOSED) {
        return err;
    }
    /* A refused login or certificate does not heal by retrying: stop with the
     * sentence, as Kafka's Java consumer does with its AuthenticationException. */
    if (ksfi_transport_error_permanent(&ei) && !m->leaving) {
        fatal(m, KSF_EKAFKA, "group %s: %s", m->group_id, ei.text);
    } else {
        ksfi_log(&m->log, KSF_LOG_WARNING, COMPONENT, "group %s: %s", m->group_id,
                 ei.text);
    }
    return err;
}

/*
 * Send one request frame and read its response; the broker answers in order, so the
 * next frame must carry our correlation id. Any failure leaves the stream unusable,
 * so the connection is closed. *payload (freed by the caller) holds the body.
 */
static ksf_err
roundtrip(ksfi_membership *m, const ksfi_gp_buf *req, int32_t corr, int timeout_ms,
          const char *api, uint8_t **payload, const uint8_t **body, size_t *body_len)
{
    int64_t deadline = ksfi_now_ms() + timeout_ms;
    int32_t got = 0;
    size_t n = 0;
    ksf_errinfo ei = {0};
    *payload = NULL;
    ksf_err err =
        m->conn ? KSF_OK : ksfi_fail(&ei, KSF_EKAFKA, "not connected to the coordinator");
    if (err == KSF_OK &&
        (err = ksfi_conn_write(m->conn, req->data, req->len, deadline, &ei)) == KSF_OK &&
        (err = ksfi_conn_read_frame(m->conn, payload, &n, deadline, &ei)) == KSF_OK &&
        (err = ksfi_gp_decode_response_header(*payload, n, &got, body, body_len, &ei)) ==
            KSF_OK &&
        got != corr) {
        err = ksfi_fail(&ei, KSF_EPROTO, "correlation id %d, expected %d", (int)got,
                        (int)corr);
    }
    if (err != KSF_OK) {
        if (err != KSF_ECLOSED) {
            STAT_ADD(m, io_errors);
            ksfi_log(&m->log, KSF_LOG_WARNING, COMPONENT,
                     "group %s: %s request to the coordinator failed: %s%s%s",
                     m->group_id, api, ksf_strerror(err), ei.text[0] ? ": " : "",
                     ei.text);
        }
        ksfi_free(*payload);
        *payload = NULL;
        conn_close(m);
    }
    return err;
}

static ksfi_gp_header
next_header(ksfi_membership *m, int16_t version)
{
    ksfi_gp_header h = {version, ++m->corr, m->client_id};
    if (m->corr == INT32_MAX) {
        m->corr = 0;
    }
    return h;
}

/* ---- outcomes the owner hears about ------------------------------------------------ */

static void
revoke(ksfi_membership *m, const char *reason)
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

static void
fatal(ksfi_membership *m, ksf_err err, const char *fmt, ...)
{
    char text[KSF_ERRINFO_TEXT_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    ksfi_log(&m->log, KSF_LOG_ERROR, COMPONENT, "%s", text);
    m->fatal = true;
    revoke(m, text);
    publish_state(m, false, false);
    if (m->cb.on_fatal) {
        m->cb.on_fatal(m->cb.user, err, text);
    }
}

/* A fatal group error code, with what the user should do about it. */
static void
fatal_code(ksfi_membership *m, const char *api, int code)
{
    const char *what;
    switch (code) {
    case KSFI_GP_ERR_INCONSISTENT_GROUP_PROTOCOL:
        what = "its members use another protocol type or assignor than "
               "consumer/" KSFI_ASSIGNOR_NAME
               "; give ksf reply consumers a group id of their own";
        break;
    case KSFI_GP_ERR_INVALID_SESSION_TIMEOUT:
        what = "the session timeout is outside the broker's group.min/max.session."
               "timeout.ms range (6000..1800000 ms by default); set one inside it";
        break;
    case KSFI_GP_ERR_GROUP_AUTHORIZATION_FAILED:
        what =
            "this client may not use the group; grant it Read on the group in the ACLs";
        break;
    case KSFI_GP_ERR_UNSUPPORTED_VERSION:
        what = "the broker refuses the request version ApiVersions offered";
        break;
    case KSFI_GP_ERR_GROUP_MAX_SIZE_REACHED:
        what = "the group is full (group.max.size); stop an instance or raise the limit";
        break;
    case KSFI_GP_ERR_FENCED_INSTANCE_ID:
        what = "another process holds this member's group.instance.id";
        break;
    default:
        what = "a consumer cannot recover from this error";
        break;
    }
    fatal(m, KSF_EKAFKA, "group %s: %s answered %s (%d): %s", m->group_id, api,
          ksfi_gp_error_name(code), code, what);
}

/* A non-zero error code from a group API, handled as Java's AbstractCoordinator does
 * (KAFKA-GROUP-PROTOCOL.md section 4). */
static void
act_on_error(ksfi_membership *m, const char *api, int code)
{
    STAT_ADD(m, group_errors);
    ksfi_log(&m->log, KSF_LOG_INFO, COMPONENT, "group %s: %s answered %s (%d)",
             m->group_id, api, ksfi_gp_error_name(code), code);
    switch (code) {
    case KSFI_GP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
    case KSFI_GP_ERR_MEMBER_ID_REQUIRED: /* only after several in a row */
        return;                          /* the caller backs off and retries */
    case KSFI_GP_ERR_COORDINATOR_NOT_AVAILABLE:
    case KSFI_GP_ERR_NOT_COORDINATOR:
        conn_close(m); /* rediscover */
        return;
    case KSFI_GP_ERR_ILLEGAL_GENERATION:
        m->generation = -1;
        m->state = ST_NEED_JOIN;
        return;
    case KSFI_GP_ERR_REBALANCE_IN_PROGRESS:
    case KSFI_GP_ERR_INVALID_REQUEST:    /* the mock: SyncGroup after the group went up */
    case KSFI_GP_ERR_GROUP_ID_NOT_FOUND: /* the mock forgot the group */
        m->state = ST_NEED_JOIN;
        return;
    case KSFI_GP_ERR_UNKNOWN_MEMBER_ID:
        revoke(m, "the coordinator no longer knows this member (UNKNOWN_MEMBER_ID)");
        m->member_id[0] = '\0';
        m->generation = -1;
        m->state = ST_NEED_JOIN;
        return;
    case KSFI_GP_ERR_INCONSISTENT_GROUP_PROTOCOL:
    case KSFI_GP_ERR_INVALID_SESSION_TIMEOUT:
    case KSFI_GP_ERR_GROUP_AUTHORIZATION_FAILED:
    case KSFI_GP_ERR_UNSUPPORTED_VERSION:
    case KSFI_GP_ERR_GROUP_MAX_SIZE_REACHED:
    case KSFI_GP_ERR_FENCED_INSTANCE_ID:
        fatal_code(m, api, code);
        return;
    }
    if (strcmp(api, "SyncGroup") == 0) {
        m->state = ST_NEED_JOIN; /* the mock's 6 and 37: start the round again */
    } else {
        fatal_code(m, api, code); /* Java: unexpected Join/Heartbeat errors are fatal */
    }
}

static void
backoff(ksfi_membership *m)
{
    nap(m, m->backoff_ms);
    m->backoff_ms =
        m->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : m->backoff_ms * 2;
}

/* ---- connection setup: ApiVersions v0, FindCoordinator v1-2 ---------------------- */

typedef struct version_need {
    int16_t api, lo, hi;
    const char *name;
    int16_t *out;
} version_need;

/* Connect to @p hp and pick the request versions it serves. */
static ksf_err
conn_setup(ksfi_membership *m, const ksfi_hostport *hp, int64_t deadline)
{
    ksfi_gp_buf req = {0};
    ksfi_gp_api_versions_resp r = {0};
    uint8_t *payload = NULL;
    const uint8_t *body;
    size_t blen;
    ksfi_gp_header h = next_header(m, 0);
    ksf_err err = conn_open(m, hp, deadline);
    if (err == KSF_OK && (err = ksfi_gp_encode_api_versions(&req, &h)) == KSF_OK &&
        (err = roundtrip(m, &req, h.correlation_id, (int)(deadline - ksfi_now_ms()),
                         "ApiVersions", &payload, &body, &blen)) == KSF_OK &&
        (err = ksfi_gp_decode_api_versions(body, blen, 0, &r, NULL)) == KSF_OK &&
        r.error_code != 0) {
        err = KSF_EKAFKA;
    }
    const version_need need[] = {
        {KSFI_GP_API_FIND_COORDINATOR, 1, 2, "FindCoordinator", &m->v_find},
        {KSFI_GP_API_JOIN_GROUP, 2, 5, "JoinGroup", &m->v_join},
        {KSFI_GP_API_SYNC_GROUP, 1, 3, "SyncGroup", &m->v_sync},
        {KSFI_GP_API_HEARTBEAT, 1, 3, "Heartbeat", &m->v_hb},
        {KSFI_GP_API_LEAVE_GROUP, 1, 1, "LeaveGroup", &m->v_leave},
    };
    for (size_t i = 0; err == KSF_OK && i < sizeof need / sizeof need[0]; i++) {
        *need[i].out = ksfi_gp_pick_version(&r, need[i].api, need[i].lo, need[i].hi);
        if (*need[i].out < 0) {
            fatal(m, KSF_EKAFKA,
                  "group %s: broker %s:%s does not serve %s v%d-%d, which ksf needs "
                  "(the classic group protocol; Kafka 2.3 or later)",
                  m->group_id, hp->host, hp->port, need[i].name, need[i].lo, need[i].hi);
            err = KSF_EKAFKA;
        }
    }
    if (err != KSF_OK) {
        conn_close(m);
    }
    ksfi_gp_api_versions_resp_free(&r);
    ksfi_free(payload);
    ksfi_gp_buf_free(&req);
    return err;
}

static ksf_err
find_coordinator(ksfi_membership *m, ksfi_gp_find_coordinator_resp *r)
{
    ksfi_gp_buf req = {0};
    uint8_t *payload = NULL;
    const uint8_t *body;
    size_t blen;
    ksfi_gp_header h = next_header(m, m->v_find);
    ksf_err err = ksfi_gp_encode_find_coordinator(&req, &h, m->group_id);
    if (err == KSF_OK &&
        (err = roundtrip(m, &req, h.correlation_id, m->session_ms, "FindCoordinator",
                         &payload, &body, &blen)) == KSF_OK &&
        (err = ksfi_gp_decode_find_coordinator(body, blen, m->v_find, r, NULL)) !=
            KSF_OK) {
        conn_close(m);
    }
    ksfi_free(payload);
    ksfi_gp_buf_free(&req);
    return err;
}

/* Find the coordinator through the next bootstrap broker and connect to it. */
static ksf_err
discover(ksfi_membership *m)
{
    const ksfi_hostport *b = &m->bootstrap[m->next_bootstrap++ % m->bootstrap_count];
    ksfi_gp_find_coordinator_resp r = {0};
    ksf_err err = conn_setup(m, b, ksfi_now_ms() + CONNECT_TIMEOUT_MS);
    if (err != KSF_OK || (err = find_coordinator(m, &r)) != KSF_OK) {
        return err;
    }
    if (r.error_code != 0 || !r.host || r.port <= 0 || r.port > 65535) {
        if (r.error_code == KSFI_GP_ERR_GROUP_AUTHORIZATION_FAILED) {
            fatal_code(m, "FindCoordinator", r.error_code);
        } else {
            ksfi_log(&m->log, KSF_LOG_INFO, COMPONENT,
                     "group %s: no coordinator yet: %s (%d)%s%s", m->group_id,
                     ksfi_gp_error_name(r.error_code), r.error_code,
                     r.error_message ? ": " : "", r.error_message ? r.error_message : "");
        }
        conn_close(m);
        ksfi_gp_find_coordinator_resp_free(&r);
        return KSF_EKAFKA;
    }
    ksfi_free(m->coord.host);
    m->coord.host = r.host;
    r.host = NULL;
    snprintf(m->coord.port, sizeof m->coord.port, "%d", (int)r.port);
    ksfi_gp_find_coordinator_resp_free(&r);
    STAT_ADD(m, lookups);
    if (strcmp(m->coord.host, b->host) != 0 || strcmp(m->coord.port, b->port) != 0) {
        err = conn_setup(m, &m->coord, ksfi_now_ms() + CONNECT_TIMEOUT_MS);
    }
    return err;
}

/* ---- the leader's part: run the assignor over every member ------------------------ */

typedef struct leader_plan {
    size_t n;
    ksfi_gp_buf *bufs;
    ksfi_gp_member_blob *blobs;
} leader_plan;

static void
leader_plan_free(leader_plan *lp)
{
    for (size_t i = 0; lp->bufs && i < lp->n; i++) {
        ksfi_gp_buf_free(&lp->bufs[i]);
    }
    ksfi_free(lp->bufs);
    ksfi_free(lp->blobs);
}

static void
log_plan(ksfi_membership *m, const ksfi_assignor_member *am, const ksfi_gp_assignment *a,
         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char line[256];
        size_t off = 0;
        bool full = false; /* the line is cut short, never overrun */
        line[0] = '\0';
        for (size_t t = 0; t < a[i].count && !full; t++) {
            for (size_t j = 0; j < a[i].topics[t].count && !full; j++) {
                int w = snprintf(line + off, sizeof line - off, " %s[%d]",
                                 a[i].topics[t].topic, (int)a[i].topics[t].partitions[j]);
                full = w < 0 || (size_t)w >= sizeof line - off;
                off = full ? sizeof line - 1 : off + (size_t)w;
            }
        }
        ksfi_log(&m->log, KSF_LOG_INFO, COMPONENT,
                 "group %s: assign %s (launch %" PRId64 "):%s", m->group_id,
                 am[i].member_id,
                 am[i].meta->has_launch_time ? am[i].meta->launch_time_ns : 0,
                 off ? line : " nothing");
    }
}

/* Topic @p name's index in @p topics[0..n), or -1. */
static ssize_t
topic_index(const ksfi_assignor_topic *topics, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(topics[i].name, name)) {
            return (ssize_t)i;
        }
    }
    return -1;
}

/* The topics to deal out: ours and every member's (kafkajs deals only the leader's, so
 * a member whose reply topic the leader does not use would get nothing). Partition
 * counts come from the owner when it can tell; a topic whose count nobody knows is
 * left out. *out is ksfi_malloc'd; names borrow from m and @p metas. */
static ksf_err
union_topics(ksfi_membership *m, const ksfi_gp_member_meta *metas, size_t members,
             ksfi_assignor_topic **out, size_t *count)
{
    size_t cap = m->topic_count;
    for (size_t i = 0; i < members; i++) {
        cap += metas[i].topic_count;
    }
    ksfi_assignor_topic *topics = ksfi_calloc(cap ? cap : 1, sizeof *topics);
    if (!topics) {
        return KSF_ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < m->topic_count; i++) {
        topics[n++] = m->topics[i];
    }
    for (size_t i = 0; i < members; i++) {
        for (size_t t = 0; t < metas[i].topic_count; t++) {
            if (topic_index(topics, n, metas[i].topics[t]) < 0) {
                topics[n++] = (ksfi_assignor_topic){metas[i].topics[t], -1};
            }
        }
    }
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = m->cb.partition_count
                        ? m->cb.partition_count(m->cb.user, topics[i].name)
                        : -1;
        topics[i].partitions = c >= 0 ? c : topics[i].partitions;
        if (topics[i].partitions < 0) {
            ksfi_log(
                &m->log, KSF_LOG_WARNING, COMPONENT,
                "group %s: partition count of %s unknown; its members get none of it "
                "this round",
                m->group_id, topics[i].name);
            continue;
        }
        topics[kept++] = topics[i];
    }
    *out = topics;
    *count = kept;
    return KSF_OK;
}

/* Decode every member's metadata and run the assignor over the union of topics. */
static ksf_err
assign_members(ksfi_membership *m, const ksfi_gp_join_group_resp *jr,
               ksfi_gp_member_meta *metas, ksfi_assignor_member *am,
               ksfi_gp_assignment *out)
{
    ksf_errinfo ei = {0};
    for (size_t i = 0; i < jr->member_count; i++) {
        const ksfi_gp_join_member *jm = &jr->members[i];
        if (ksfi_gp_decode_member_meta(jm->metadata, jm->metadata_len, &metas[i], &ei) !=
            KSF_OK) {
            ksfi_log(&m->log, KSF_LOG_WARNING, COMPONENT,
                     "group %s: member %s sent unreadable metadata (%s); it gets nothing",
                     m->group_id, jm->member_id, ei.text);
        }
        am[i].member_id = jm->member_id;
        am[i].meta = &metas[i];
    }
    ksfi_assignor_topic *topics;
    size_t ntopics;
    if (union_topics(m, metas, jr->member_count, &topics, &ntopics) != KSF_OK) {
        return KSF_ENOMEM;
    }
    ksf_err err = ksfi_assign(am, jr->member_count, topics, ntopics, out, &ei);
    if (err != KSF_OK) {
        ksfi_log(&m->log, KSF_LOG_ERROR, COMPONENT, "group %s: %s", m->group_id, ei.text);
    } else {
        log_plan(m, am, out, jr->member_count);
    }
    ksfi_free(topics);
    return err;
}

static ksf_err
leader_plan_build(ksfi_membership *m, const ksfi_gp_join_group_resp *jr, leader_plan *lp)
{
    size_t n = jr->member_count ? jr->member_count : 1;
    ksfi_gp_member_meta *metas = ksfi_calloc(n, sizeof *metas);
    ksfi_assignor_member *am = ksfi_calloc(n, sizeof *am);
    ksfi_gp_assignment *out = ksfi_calloc(n, sizeof *out);
    ksf_err err = KSF_ENOMEM;
    lp->n = jr->member_count;
    lp->bufs = ksfi_calloc(n, sizeof *lp->bufs);
    lp->blobs = ksfi_calloc(n, sizeof *lp->blobs);
    if (!metas || !am || !out || !lp->bufs || !lp->blobs ||
        (err = assign_members(m, jr, metas, am, out)) != KSF_OK) {
        goto done;
    }
    for (size_t i = 0; i < lp->n && err == KSF_OK; i++) {
        err = ksfi_gp_encode_assignment(&lp->bufs[i], &out[i], NULL);
        lp->blobs[i].member_id = jr->members[i].member_id;
        lp->blobs[i].data = lp->bufs[i].data;
        lp->blobs[i].len = lp->bufs[i].len;
    }
done:
    for (size_t i = 0; i < jr->member_count; i++) {
        if (metas) {
            ksfi_gp_member_meta_free(&metas[i]);
        }
        if (out) {
            ksfi_gp_assignment_free(&out[i]);
        }
    }
    ksfi_free(metas);
    ksfi_free(am);
    ksfi_free(out);
    return err;
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

static ksf_err
send_join(ksfi_membership *m, const ksfi_gp_buf *meta, ksfi_gp_join_group_resp *jr)
{
    ksfi_gp_buf req = {0};
    uint8_t *payload = NULL;
    const uint8_t *body;
    size_t blen;
    ksfi_gp_header h = next_header(m, m->v_join);
    ksfi_gp_join_request r = {m->group_id,  m->session_ms, m->rebalance_ms,
                              m->member_id, "consumer",    KSFI_ASSIGNOR_NAME,
                              meta->data,   meta->len};
    ksf_errinfo ei = {0};
    ksf_err err = ksfi_gp_encode_join_group(&req, &h, &r);
    if (err == KSF_OK &&
        (err = roundtrip(m, &req, h.correlation_id, m->rebalance_ms + 5000, "JoinGroup",
                         &payload, &body, &blen)) == KSF_OK &&
        (err = ksfi_gp_decode_join_group(body, blen, m->v_join, jr, &ei)) != KSF_OK) {
        ksfi_log(&m->log, KSF_LOG_WARNING, COMPONENT, "group %s: %s", m->group_id,
                 ei.text);
        STAT_ADD(m, io_errors);
        conn_close(m);
    }
    ksfi_free(payload);
    ksfi_gp_buf_free(&req);
    return err;
}

/* JoinGroup, repeating at once with the given id on MEMBER_ID_REQUIRED (KIP-394). */
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
        act_on_error(m, "JoinGroup", jr->error_code);
        ksfi_gp_join_group_resp_free(jr);
        err = KSF_EKAFKA;
    }
    return err;
}

static ksf_err
send_sync(ksfi_membership *m, const leader_plan *lp, ksfi_gp_sync_group_resp *sr)
{
    ksfi_gp_buf req = {0};
    uint8_t *payload = NULL;
    const uint8_t *body;
    size_t blen;
    ksfi_gp_header h = next_header(m, m->v_sync);
    ksf_errinfo ei = {0};
    ksf_err err = ksfi_gp_encode_sync_group(&req, &h, m->group_id, m->generation,
                                            m->member_id, lp->blobs, lp->n);
    if (err == KSF_OK &&
        (err = roundtrip(m, &req, h.correlation_id, m->rebalance_ms + 5000, "SyncGroup",
                         &payload, &body, &blen)) == KSF_OK &&
        (err = ksfi_gp_decode_sync_group(body, blen, m->v_sync, sr, &ei)) != KSF_OK) {
        ksfi_log(&m->log, KSF_LOG_WARNING, COMPONENT, "group %s: %s", m->group_id,
                 ei.text);
        STAT_ADD(m, io_errors);
        conn_close(m);
    }
    ksfi_free(payload);
    ksfi_gp_buf_free(&req);
    return err;
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
 * after the leader with INVALID_REQUEST, so followers must not wait for anything).
 */
static ksf_err
join_and_sync(ksfi_membership *m)
{
    ksfi_gp_join_group_resp jr = {0};
    ksfi_gp_sync_group_resp sr = {0};
    ksfi_gp_assignment a = {0};
    leader_plan lp = {0};
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
    if (leader && (err = leader_plan_build(m, &jr, &lp)) != KSF_OK) {
        goto done; /* logged; rejoin after a backoff */
    }
    if (leader && jr.member_count > 1) {
        /* The librdkafka mock answers followers that sync after the leader with
         * INVALID_REQUEST (KAFKA-GROUP-PROTOCOL.md 7); Java and librdkafka leaders fetch
         * metadata first and so are naturally later. A real broker only waits a little.
         */
        nap(m, LEADER_SYNC_DELAY_MS);
    }
    if ((err = send_sync(m, &lp, &sr)) != KSF_OK) {
        goto done;
    }
    if (sr.error_code != 0) {
        act_on_error(m, "SyncGroup", sr.error_code);
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
    leader_plan_free(&lp);
    ksfi_gp_join_group_resp_free(&jr);
    return err;
}

/* ---- Heartbeat v1-3, LeaveGroup v1 ------------------------------------------------- */

static void
heartbeat(ksfi_membership *m)
{
    int64_t now = ksfi_now_ms();
    if (now < m->next_heartbeat_ms) {
        nap(m, m->next_heartbeat_ms - now);
        return;
    }
    m->next_heartbeat_ms = now + m->heartbeat_ms;
    ksfi_gp_buf req = {0};
    ksfi_gp_simple_resp r = {0};
    uint8_t *payload = NULL;
    const uint8_t *body;
    size_t blen;
    ksfi_gp_header h = next_header(m, m->v_hb);
    if (ksfi_gp_encode_heartbeat(&req, &h, m->group_id, m->generation, m->member_id) ==
            KSF_OK &&
        roundtrip(m, &req, h.correlation_id, m->session_ms, "Heartbeat", &payload, &body,
                  &blen) == KSF_OK) {
        if (ksfi_gp_decode_heartbeat(body, blen, m->v_hb, &r, NULL) != KSF_OK) {
            STAT_ADD(m, io_errors);
            conn_close(m);
        } else if (r.error_code == 0) {
            m->last_ok_ms = ksfi_now_ms();
            m->backoff_ms = BACKOFF_MIN_MS;
            STAT_ADD(m, heartbeats);
        } else {
            act_on_error(m, "Heartbeat", r.error_code);
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
    revoke(m, reason);
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
    if (!m->conn && (!m->coord.host || conn_setup(m, &m->coord, deadline) != KSF_OK)) {
        return;
    }
    ksfi_gp_header h = next_header(m, m->v_leave);
    if (ksfi_gp_encode_leave_group(&req, &h, m->group_id, m->member_id) == KSF_OK &&
        roundtrip(m, &req, h.correlation_id, (int)(deadline - ksfi_now_ms()),
                  "LeaveGroup", &payload, &body, &blen) == KSF_OK &&
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
            conn_close(m); /* reconnect (and log in again) before the broker cuts us */
        }
        if (m->fatal) {
            nap(m, 1000);
        } else if (!m->conn) {
            if (discover(m) != KSF_OK) {
                backoff(m);
            }
        } else if (m->state == ST_NEED_JOIN) {
            if (join_and_sync(m) != KSF_OK) {
                backoff(m);
            }
        } else {
            heartbeat(m);
        }
    }
    if (!atomic_load(&m->abandon) && m->member_id[0]) {
        leave(m);
    }
    conn_close(m);
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
    m->member_id = ksfi_strdup("");
    m->topics = ksfi_calloc(c->topic_count, sizeof *m->topics);
    if (!m->group_id || (c->client_id && !m->client_id) || !m->member_id || !m->topics) {
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
