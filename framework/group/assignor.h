/*
 * The reply-partition assigner, run by the reply group's leader, as a pure function.
 * Design: shared DESIGN.md "Reply partitions that stay put across rebalances"; the
 * NestJS original it improves on: NESTJS-KAFKA-WIRE.md section 8.2.
 *
 * Members are ordered by launch time (ties by member id; members without a launch time,
 * e.g. NestJS ones, after those with one, by member id). Per topic, in that order:
 * 1. every member keeps its previous partition if it exists and no earlier member
 *    kept it (NestJS assigns a double claim twice; we give it to the earlier launch);
 * 2. every member still without a partition gets the first free one;
 * 3. the remaining partitions are dealt round-robin (one index across all topics, as
 *    NestJS does), skipping ahead to a member for whom the partition is not below its
 *    current lowest one when there is such a member, so that a member's lowest
 *    partition (the one NestJS advertises as its reply partition) moves only when no
 *    member can take the partition without it moving.
 * A topic is dealt only to the members that subscribe to it. Every partition of every
 * topic with a subscriber is assigned exactly once; with more subscribers than
 * partitions the surplus (latest launched) members get none.
 */
#ifndef KSF_ASSIGNOR_H
#define KSF_ASSIGNOR_H

#include "group/group_proto.h"

/* One group member as the leader sees it (borrowed). */
typedef struct ksfi_assignor_member {
    const char *member_id;
    const ksfi_gp_member_meta *meta; /* subscription, previous, launch time */
} ksfi_assignor_member;

/* A topic to deal and its partition count (>= 0). */
typedef struct ksfi_assignor_topic {
    const char *name;
    int32_t partitions;
} ksfi_assignor_topic;

/*
 * Assign the partitions of @p topics to @p members. @p out must hold @p member_count
 * assignments; out[i] is members[i]'s, listing every subscribed topic of @p topics
 * (possibly with no partitions), partitions ascending. Free each with
 * ksfi_gp_assignment_free(). Errors: KSF_EINVAL (duplicate member ids, negative
 * partition count), KSF_ENOMEM; out is all empty on error.
 */
ksf_err ksfi_assign(const ksfi_assignor_member *members, size_t member_count,
                    const ksfi_assignor_topic *topics, size_t topic_count,
                    ksfi_gp_assignment *out, ksf_errinfo *ei);

#endif
