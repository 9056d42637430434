/*
 * Reply-group membership: one member of a classic Kafka consumer group, speaking the
 * group protocol itself over TCP on its own thread (librdkafka cannot run a custom
 * assignor). bootstrap -> ApiVersions -> FindCoordinator -> JoinGroup (with the
 * MEMBER_ID_REQUIRED retry) -> SyncGroup (the leader runs ksfi_assign over all
 * members) -> Heartbeat ... -> LeaveGroup on close. Errors are handled as Kafka's Java
 * consumer does (KAFKA-GROUP-PROTOCOL.md section 4); transient ones are retried for as
 * long as the membership lives, with a backoff from 100 ms doubling to 2 s.
 *
 * Threads: the callbacks run on the membership thread, one at a time, and must not
 * call ksfi_membership_close(). Hold no lock a callback takes while calling close.
 * Depends on nothing of the client: it is the engine a reply-partition provider uses.
 */
#ifndef KSF_MEMBERSHIP_H
#define KSF_MEMBERSHIP_H

#include "group/membership_config.h"

/*
 * Validate @p cfg, copy it (loading the TLS files) and start the membership thread.
 * Returns at once; the first on_assigned follows after the group's join delay. A
 * refused login or broker certificate is fatal (on_fatal), not retried.
 * Errors: KSF_EINVAL (a sentence naming the bad setting), KSF_ENOMEM.
 */
ksf_err ksfi_membership_new(ksfi_membership **out, const ksfi_membership_config *cfg,
                            const ksfi_membership_callbacks *cb, ksf_errinfo *ei);

/*
 * Leave the group (LeaveGroup v1, a few seconds at most, so the others rebalance at
 * once rather than after a session timeout), stop the thread and free. A static member
 * (group_instance_id set) does not leave, as Kafka's Java consumer and librdkafka do:
 * its partitions stay reserved for the same instance id until the session timeout, so
 * a restart within it gets them back without a rebalance. NULL is a no-op.
 */
void ksfi_membership_close(ksfi_membership *m);

/*
 * Replace the subscription by @p topics (copied; same rules as at creation) and rejoin
 * with it, keeping the member id so the partitions of the other topics stay put. The
 * rejoin starts within a heartbeat interval. Threads: any thread but a callback's.
 * Errors: KSF_EINVAL, KSF_ENOMEM.
 */
ksf_err ksfi_membership_set_topics(ksfi_membership *m, const ksfi_assignor_topic *topics,
                                   size_t topic_count, ksf_errinfo *ei);

/* Test hook: stop and free without LeaveGroup, as if the process had died. */
void ksfi_membership_abandon(ksfi_membership *m);

void ksfi_membership_get_stats(ksfi_membership *m, ksfi_membership_stats *out);

#endif
