/*
 * The membership's connection to its group coordinator: opening it (TCP, TLS, SASL via
 * transport.c), one request/response round trip at a time, finding the coordinator,
 * and what each group error code means for the member (KAFKA-GROUP-PROTOCOL.md 4).
 */
#include "base/alloc.h"
#include "base/errinfo.h"
#include "codec/wire.h"
#include "group/membership_internal.h"
#include "group/transport.h"

#include <poll.h>
#include <stdio.h>
#include <string.h>

#define CONNECT_TIMEOUT_MS 5000

/* ---- the connection (transport.c: TCP, TLS, SASL, frames) -------------------------- */

/* Sleep up to @p ms, returning early when close() is called. */
void
ksfi_membership_nap(ksfi_membership *m, int64_t ms)
{
    int64_t deadline = ksfi_now_ms() + ms;
    while (!atomic_load(&m->closing) && ksfi_now_ms() < deadline) {
        struct pollfd p = {m->wake[0], POLLIN, 0};
        int64_t left = deadline - ksfi_now_ms();
        poll(&p, 1, (int)(left > 1000 ? 1000 : (left < 0 ? 0 : left)));
    }
}

void
ksfi_membership_conn_close(ksfi_membership *m)
{
    ksfi_conn_close(m->conn);
    m->conn = NULL;
}

/* Open a connection to @p hp: TCP, then TLS and SASL when configured. */
static ksf_err
conn_open(ksfi_membership *m, const ksfi_hostport *hp, int64_t deadline)
{
    ksf_errinfo ei = {0};
    ksfi_membership_conn_close(m);
    ksf_err err = ksfi_conn_open(&m->conn, m->transport, hp->host, hp->port, m->client_id,
                                 deadline, &m->cancel, &ei);
    if (err == KSF_OK || err == KSF_ECLOSED) {
        return err;
    }
    /* A refused login or certificate does not heal by retrying: stop with the
     * sentence, as Kafka's Java consumer does with its AuthenticationException. */
    if (ksfi_transport_error_permanent(&ei) && !m->leaving) {
        ksfi_membership_fatal(m, KSF_EKAFKA, "group %s: %s", m->group_id, ei.text);
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
ksf_err
ksfi_membership_roundtrip(ksfi_membership *m, const ksfi_gp_buf *req, int32_t corr,
                          int timeout_ms, const char *api, uint8_t **payload,
                          const uint8_t **body, size_t *body_len)
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
        ksfi_membership_conn_close(m);
    }
    return err;
}

ksfi_gp_header
ksfi_membership_next_header(ksfi_membership *m, int16_t version)
{
    ksfi_gp_header h = {version, ++m->corr, m->client_id};
    if (m->corr == INT32_MAX) {
        m->corr = 0;
    }
    return h;
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
        ksfi_membership_fatal(
            m, KSF_EKAFKA,
            "group %s: %s answered FENCED_INSTANCE_ID (82): another member took over "
            "group.instance.id \"%s\"; ids are unique per group (two clients must not "
            "share one, in one process or two): this member stops; give each instance "
            "its own id",
            m->group_id, api, m->instance_id ? m->instance_id : "");
        return;
    default:
        what = "a consumer cannot recover from this error";
        break;
    }
    ksfi_membership_fatal(m, KSF_EKAFKA, "group %s: %s answered %s (%d): %s", m->group_id,
                          api, ksfi_gp_error_name(code), code, what);
}

/* A non-zero error code from a group API, handled as Java's AbstractCoordinator does
 * (KAFKA-GROUP-PROTOCOL.md section 4). */
void
ksfi_membership_act_on_error(ksfi_membership *m, const char *api, int code)
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
        ksfi_membership_conn_close(m); /* rediscover */
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
        ksfi_membership_revoke(
            m, "the coordinator no longer knows this member (UNKNOWN_MEMBER_ID)");
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

void
ksfi_membership_backoff(ksfi_membership *m)
{
    ksfi_membership_nap(m, m->backoff_ms);
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
ksf_err
ksfi_membership_conn_setup(ksfi_membership *m, const ksfi_hostport *hp, int64_t deadline)
{
    ksfi_gp_buf req = {0};
    ksfi_gp_api_versions_resp r = {0};
    uint8_t *payload = NULL;
    const uint8_t *body;
    size_t blen;
    ksfi_gp_header h = ksfi_membership_next_header(m, 0);
    ksf_err err = conn_open(m, hp, deadline);
    if (err == KSF_OK && (err = ksfi_gp_encode_api_versions(&req, &h)) == KSF_OK &&
        (err = ksfi_membership_roundtrip(m, &req, h.correlation_id,
                                         (int)(deadline - ksfi_now_ms()), "ApiVersions",
                                         &payload, &body, &blen)) == KSF_OK &&
        (err = ksfi_gp_decode_api_versions(body, blen, 0, &r, NULL)) == KSF_OK &&
        r.error_code != 0) {
        err = KSF_EKAFKA;
    }
    /* A static member (KIP-345) needs the versions that carry group_instance_id:
     * JoinGroup v5, SyncGroup v3, Heartbeat v3 (Kafka 2.3). Without them it stops
     * with a sentence rather than quietly joining as a dynamic member. */
    bool is_static = m->instance_id != NULL;
    const version_need need[] = {
        {KSFI_GP_API_FIND_COORDINATOR, 1, 2, "FindCoordinator", &m->v_find},
        {KSFI_GP_API_JOIN_GROUP, is_static ? 5 : 2, 5, "JoinGroup", &m->v_join},
        {KSFI_GP_API_SYNC_GROUP, is_static ? 3 : 1, 3, "SyncGroup", &m->v_sync},
        {KSFI_GP_API_HEARTBEAT, is_static ? 3 : 1, 3, "Heartbeat", &m->v_hb},
        {KSFI_GP_API_LEAVE_GROUP, 1, 1, "LeaveGroup", &m->v_leave},
    };
    for (size_t i = 0; err == KSF_OK && i < sizeof need / sizeof need[0]; i++) {
        *need[i].out = ksfi_gp_pick_version(&r, need[i].api, need[i].lo, need[i].hi);
        if (*need[i].out < 0) {
            ksfi_membership_fatal(
                m, KSF_EKAFKA,
                "group %s: broker %s:%s does not serve %s v%d-%d, which ksf needs "
                "(the classic group protocol; Kafka 2.3 or later)%s",
                m->group_id, hp->host, hp->port, need[i].name, need[i].lo, need[i].hi,
                is_static ? " for static membership (group.instance.id); unset "
                            "group.instance.id to join as a dynamic member"
                          : "");
            err = KSF_EKAFKA;
        }
    }
    m->followers_sync_first =
        ksfi_gp_pick_version(&r, KSFI_GP_API_JOIN_GROUP, 6, INT16_MAX) < 0;
    if (err != KSF_OK) {
        ksfi_membership_conn_close(m);
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
    ksfi_gp_header h = ksfi_membership_next_header(m, m->v_find);
    ksf_err err = ksfi_gp_encode_find_coordinator(&req, &h, m->group_id);
    if (err == KSF_OK &&
        (err = ksfi_membership_roundtrip(m, &req, h.correlation_id, m->session_ms,
                                         "FindCoordinator", &payload, &body, &blen)) ==
            KSF_OK &&
        (err = ksfi_gp_decode_find_coordinator(body, blen, m->v_find, r, NULL)) !=
            KSF_OK) {
        ksfi_membership_conn_close(m);
    }
    ksfi_free(payload);
    ksfi_gp_buf_free(&req);
    return err;
}

/* Find the coordinator through the next bootstrap broker and connect to it. */
ksf_err
ksfi_membership_discover(ksfi_membership *m)
{
    const ksfi_hostport *b = &m->bootstrap[m->next_bootstrap++ % m->bootstrap_count];
    ksfi_gp_find_coordinator_resp r = {0};
    ksf_err err = ksfi_membership_conn_setup(m, b, ksfi_now_ms() + CONNECT_TIMEOUT_MS);
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
        ksfi_membership_conn_close(m);
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
        err =
            ksfi_membership_conn_setup(m, &m->coord, ksfi_now_ms() + CONNECT_TIMEOUT_MS);
    }
    return err;
}
