/*
 * Reply-partition providers: where a client's replies come from.
 *
 * A client advertises one partition of "<pattern>.reply" in kafka_replyPartition and
 * must keep fetching it while requests that advertised it are in flight. A provider
 * decides which partition that is and makes the client's reply consumer fetch it (with
 * ksfi_reply_consumer_fetch_from_end: no subscribe, no commits).
 *
 * The contract, in both directions:
 * - acquire(topic): called by the client (on a sending thread, never under the client
 *   lock) the first time it needs a partition of @p topic, and again after that
 *   partition was revoked. On KSF_OK the partition is being fetched from a position no
 *   later than any reply to a request sent afterwards. Errors: KSF_ENOPARTITION with a
 *   sentence naming the topic and why, KSF_ETIMEDOUT, KSF_EKAFKA.
 * - host->revoked(topic, partition): called by the provider (from any thread) when the
 *   partition must be given up. The client stops advertising it at once, keeps
 *   fetching it while requests that advertised it are in flight (the drain) and then
 *   calls release().
 * - prepare(topics) (optional): ksf_client_connect() hands over every subscribed topic
 *   first, so a provider can announce them together (one group join, not one rebalance
 *   per topic).
 * - release(topic, partition): the client no longer needs the partition; the provider
 *   stops fetching it (incremental unassign). Also called for every held partition
 *   when the client is destroyed.
 *
 * Providers: static (reply_static.c: the configured client.reply.partition, never
 * revoked) and group (reply_group.c: a NestReplyPartitionAssigner reply-group
 * membership, the default; client.reply.provider chooses).
 */
#ifndef KSF_REPLY_PROVIDER_H
#define KSF_REPLY_PROVIDER_H

#include "base/config.h"
#include "base/log.h"

#include "kafka/reply_consumer.h"

/* What a provider may use of its client. */
typedef struct ksfi_reply_host {
    ksfi_reply_consumer *consumer; /* the reply consumer: assign partitions on it */
    const ksfi_logger *log;
    /* Give up @p partition of @p topic (see above). */
    void (*revoked)(void *opaque, const char *topic, int32_t partition);
    void *opaque;
    /* Optional: incremented per assignment received (a group join or rebalance). */
    _Atomic uint64_t *rebalances;
} ksfi_reply_host;

typedef struct ksfi_reply_provider ksfi_reply_provider;

typedef struct ksfi_reply_provider_ops {
    const char *name;
    ksf_err (*acquire)(ksfi_reply_provider *p, const char *topic, int timeout_ms,
                       int32_t *partition, ksf_errinfo *ei);
    void (*release)(ksfi_reply_provider *p, const char *topic, int32_t partition);
    /* Optional: learn every topic @p topics before they are acquired one by one, so a
     * provider that must announce its topics (the group) announces them once. */
    ksf_err (*prepare)(ksfi_reply_provider *p, const char *const *topics, size_t count,
                       int timeout_ms, ksf_errinfo *ei);
    void (*destroy)(ksfi_reply_provider *p);
} ksfi_reply_provider_ops;

/* Every provider starts with this; the rest of its struct is its own. */
struct ksfi_reply_provider {
    const ksfi_reply_provider_ops *ops;
    ksfi_reply_host host;
};

/*
 * The static provider: partition cfg->client_reply_partition of every reply topic,
 * fetched from its high watermark so old replies are never replayed.
 * Errors: KSF_ENOMEM.
 */
ksf_err ksfi_reply_static_new(const ksf_config *cfg, const ksfi_reply_host *host,
                              ksfi_reply_provider **out);

/*
 * The group-managed provider: one reply-group membership ("<group.id><postfix>")
 * subscribed to every reply topic acquired so far; the reply partition of a topic is
 * the one it advertised while still assigned, else its lowest assigned one.
 * The session, heartbeat and rebalance timeouts come from consumer.session.timeout.ms,
 * consumer.heartbeat.interval.ms and consumer.max.poll.interval.ms, else kafkajs's
 * 30000, 3000 and 60000. Errors: KSF_ENOMEM, KSF_EINVAL (timeouts that do not fit).
 */
ksf_err ksfi_reply_group_new(const ksf_config *cfg, const ksfi_reply_host *host,
                             ksfi_reply_provider **out, ksf_errinfo *ei);

/* ---- shared by the providers (reply_static.c) ---------------------------------------
 */

/* Milliseconds on the monotonic clock; the providers' deadlines are on it. */
int64_t ksfi_reply_now_ms(void);

#endif
