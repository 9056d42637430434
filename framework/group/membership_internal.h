/*
 * Private to membership*.c: the membership's state and the functions its three files
 * share. membership.c is the member's life (join, sync, heartbeat, leave, the thread),
 * membership_coord.c the coordinator connection and the error-action table,
 * membership_plan.c the leader's assignment plan. Everything here runs on the
 * membership thread unless its comment says otherwise.
 */
#ifndef KSF_MEMBERSHIP_INTERNAL_H
#define KSF_MEMBERSHIP_INTERNAL_H

#include "group/membership_config.h"

#include <pthread.h>
#include <stdatomic.h>

#define COMPONENT "group"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

typedef enum member_state { ST_NEED_JOIN, ST_STABLE } member_state;

struct ksfi_membership {
    /* configuration, immutable after _new */
    ksfi_hostport *bootstrap;
    size_t bootstrap_count;
    char *group_id, *client_id;
    char *instance_id;           /* group.instance.id (KIP-345); NULL: a dynamic member */
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
    /* The coordinator serves no JoinGroup above v5: librdkafka's mock (every Kafka
     * since 2.4 serves v6+), whose followers must SyncGroup before the leader. */
    bool followers_sync_first;
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

typedef struct ksfi_membership_plan {
    size_t n;
    ksfi_gp_buf *bufs;
    ksfi_gp_member_blob *blobs;
} ksfi_membership_plan;

/* ---- membership.c: outcomes the owner hears about -------------------------------- */

/* The assignment is lost: tell the owner (on_revoked) and forget it. */
void ksfi_membership_revoke(ksfi_membership *m, const char *reason);

/* Stop the membership for good: log, revoke, then on_fatal with the sentence. */
void ksfi_membership_fatal(ksfi_membership *m, ksf_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- membership_coord.c: the coordinator connection ------------------------------ */

/* Sleep up to @p ms, returning early when close() is called. */
void ksfi_membership_nap(ksfi_membership *m, int64_t ms);

void ksfi_membership_conn_close(ksfi_membership *m);

/* Connect to @p hp and pick the request versions it serves. */
ksf_err ksfi_membership_conn_setup(ksfi_membership *m, const ksfi_hostport *hp,
                                   int64_t deadline);

/* Send @p req and read its response body (*payload freed by the caller); any failure
 * closes the connection. */
ksf_err ksfi_membership_roundtrip(ksfi_membership *m, const ksfi_gp_buf *req,
                                  int32_t corr, int timeout_ms, const char *api,
                                  uint8_t **payload, const uint8_t **body,
                                  size_t *body_len);

/* A request header of @p version with the next correlation id. */
ksfi_gp_header ksfi_membership_next_header(ksfi_membership *m, int16_t version);

/* Find the coordinator through the next bootstrap broker and connect to it. */
ksf_err ksfi_membership_discover(ksfi_membership *m);

/* Act on a non-zero error code @p code answered to @p api (KAFKA-GROUP-PROTOCOL.md 4). */
void ksfi_membership_act_on_error(ksfi_membership *m, const char *api, int code);

/* Nap for the current backoff, then double it (up to BACKOFF_MAX_MS). */
void ksfi_membership_backoff(ksfi_membership *m);

/* ---- membership_plan.c: the leader's plan ----------------------------------------- */

/* Run the assignor over every member of @p jr and encode each one's assignment into
 * *lp (free it with ksfi_membership_plan_free, also on error). Errors: KSF_ENOMEM, or
 * the assignor's (logged). */
ksf_err ksfi_membership_plan_build(ksfi_membership *m, const ksfi_gp_join_group_resp *jr,
                                   ksfi_membership_plan *lp);

void ksfi_membership_plan_free(ksfi_membership_plan *lp);

#endif
