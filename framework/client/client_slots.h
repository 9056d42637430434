/*
 * A client's reply topics and the partitions it advertises in them (slots): finding or
 * creating a topic, acquiring its partition from the reply provider, counting the
 * requests that advertised a slot, draining and releasing a revoked one, pausing the
 * reply partitions while idle, and where fetching of each stands.
 *
 * Locking: functions named *_locked are called with cli->lock held and keep it; the
 * others take it themselves and return without it.
 */
#ifndef KSF_CLIENT_SLOTS_H
#define KSF_CLIENT_SLOTS_H

#include "client/client_internal.h"

/*
 * Reply topic @p name, created (state TOPIC_NEW) when the client has none by that name;
 * under lock. Topics live until the client is destroyed. NULL: out of memory.
 */
reply_topic *ksfi_client_topic_get_locked(ksf_client *cli, const char *name);

/* What to do with a topic's reply partition the moment it is known (see below). */
typedef void (*ksfi_client_slot_fn)(ksf_client *cli, reply_topic *t, void *arg);

/*
 * Make sure reply topic @p name has a partition, acquiring one from the provider
 * (outside the lock) when needed, before @p deadline (monotonic ms). On KSF_OK, and
 * only then, @p with_slot (optional) runs under the lock with t->slot set, before the
 * lock is dropped: there a caller accounts requests against the slot before a revoke
 * could release it. Errors: KSF_ECLOSED, KSF_ENOMEM, KSF_ETIMEDOUT and the provider's
 * (KSF_ENOPARTITION, KSF_EKAFKA).
 */
ksf_err ksfi_client_reply_slot_get(ksf_client *cli, const char *name, int64_t deadline,
                                   ksfi_client_slot_fn with_slot, void *arg,
                                   ksf_errinfo *ei);

/*
 * Wait until every advertised reply partition has completed its first fetch (its first
 * end-of-partition event, see ksfi_client_note_position), or @p deadline.
 * Errors: KSF_ETIMEDOUT naming the partition.
 */
ksf_err ksfi_client_wait_first_fetch(ksf_client *cli, int64_t deadline, ksf_errinfo *ei);

/* A request that advertised @p s finished: finish a drain when it was the last; under
 * lock. NULL is a no-op. */
void ksfi_client_slot_put_locked(ksf_client *cli, reply_slot *s);

/* Unlink @p s, release its partition to the provider and free it; under lock. */
void ksfi_client_slot_free_locked(ksf_client *cli, reply_slot *s);

/* The provider's revoke notice (any thread, without the lock): stop advertising the
 * partition, drain it, then release it. */
void ksfi_client_on_revoked(void *opaque, const char *topic, int32_t partition);

/* Pause or resume every assigned reply partition (idle handling); under lock. */
void ksfi_client_set_paused_locked(ksf_client *cli, bool pause);

/*
 * Fetching of @p topic [@p partition] now stands at offset @p next (past a consumed
 * reply, or at an end-of-partition event). The first such note of a slot wakes
 * ksfi_client_wait_first_fetch. Takes the lock; _locked: under it.
 */
void ksfi_client_note_position(ksf_client *cli, const char *topic, int32_t partition,
                               int64_t next);
void ksfi_client_note_position_locked(ksf_client *cli, const char *topic,
                                      int32_t partition, int64_t next);

#endif
