/*
 * What a reply-group membership is made of, below its life: its configuration and
 * callbacks, its counters, and the checks of a configuration (membership_config.c).
 * membership_internal.h and membership.h both build on this, so the member's private
 * state never needs the public header (which would make the two call each other).
 */
#ifndef KSF_MEMBERSHIP_CONFIG_H
#define KSF_MEMBERSHIP_CONFIG_H

#include "base/log.h"
#include "group/assignor.h"
#include "group/transport.h"

typedef struct ksfi_membership ksfi_membership;

typedef struct ksfi_membership_callbacks {
    /* A sync completed: @p a (borrowed) is this member's whole assignment for
     * @p generation. It replaces the previous one; partitions missing from it are no
     * longer this member's once requests that advertised them are drained. */
    void (*on_assigned)(void *user, int32_t generation, const ksfi_gp_assignment *a);
    /* The assignment of @p generation is certainly lost: the session expired while the
     * coordinator was unreachable, the coordinator no longer knows this member, or a
     * fatal error stopped the membership. Not called by close(). */
    void (*on_revoked)(void *user, int32_t generation, const ksfi_gp_assignment *a,
                       const char *reason);
    /* The membership stopped for good; @p sentence names the cause and the remedy.
     * close() is still needed to free it. */
    void (*on_fatal)(void *user, ksf_err err, const char *sentence);
    /* Optional: the current partition count of @p topic (asked by the leader before
     * assigning); a value < 0 means "use the count given at creation". */
    int32_t (*partition_count)(void *user, const char *topic);
    void *user;
    /* Optional: the partition of @p topic this member asks to keep, sent as its
     * previousAssignment (a reply provider passes the partition it advertises, which
     * need not be its lowest); a value < 0 means "the lowest assigned", as NestJS does.
     */
    int32_t (*previous_partition)(void *user, const char *topic);
} ksfi_membership_callbacks;

typedef struct ksfi_membership_config {
    const char *brokers;               /* bootstrap "host:port[,host:port...]" */
    const char *group_id;              /* the reply group, e.g. "<groupId>-client" */
    const char *client_id;             /* sent in every request header */
    const ksfi_assignor_topic *topics; /* subscribed topics and partition counts */
    size_t topic_count;
    int32_t session_timeout_ms;    /* 1000..3600000; brokers accept 6000.. by default */
    int32_t rebalance_timeout_ms;  /* >= session; socket waits are this + 5 s */
    int32_t heartbeat_interval_ms; /* 100..session/3 */
    int64_t launch_time_ns;        /* CLOCK_REALTIME at client start; orders members */
    ksfi_logger logger;            /* component "group" */
    const ksfi_security *security; /* TLS/SASL (copied); NULL: plaintext */
    /* KIP-345 static membership: this instance's group.instance.id (1..249 bytes), or
     * NULL for a dynamic member. A static member needs JoinGroup v5, SyncGroup v3 and
     * Heartbeat v3, and does not send LeaveGroup at close (see ksfi_membership_close). */
    const char *group_instance_id;
} ksfi_membership_config;

/* Counters for tests and diagnostics. */
typedef struct ksfi_membership_stats {
    int32_t generation; /* of the current assignment; -1 before the first */
    bool stable;        /* synced and heartbeating */
    bool leader;
    bool fatal;
    unsigned lookups;      /* successful FindCoordinator answers */
    unsigned joins;        /* successful JoinGroup answers */
    unsigned syncs;        /* successful SyncGroup answers */
    unsigned heartbeats;   /* successful Heartbeat answers */
    unsigned group_errors; /* non-zero error codes received */
    unsigned io_errors;    /* connects, sends, receives or decodes that failed */
    unsigned revocations;
} ksfi_membership_stats;

typedef struct ksfi_hostport {
    char *host;
    char port[8];
} ksfi_hostport;

/* Split "host:port[,host:port...]" ("[v6]:port" too) into *out (*count entries; free
 * each host, then the array, also on error). Errors: KSF_EINVAL naming the bad entry. */
ksf_err ksfi_membership_parse_brokers(const char *list, ksfi_hostport **out,
                                      size_t *count, ksf_errinfo *ei);

/* Check a configuration. Errors: KSF_EINVAL with a sentence naming the bad setting. */
ksf_err ksfi_membership_validate(const ksfi_membership_config *c, ksf_errinfo *ei);

#endif
