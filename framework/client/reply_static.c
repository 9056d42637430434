/*
 * The static reply-partition provider: every reply topic's partition is the configured
 * client.reply.partition. It is never revoked. Suits a single client instance, or
 * instances that are each given their own partition by configuration.
 */
#include "base/alloc.h"
#include "base/clock.h"
#include "base/errinfo.h"
#include "client/reply_provider.h"
#include "codec/wire.h"
#include "kafka/kafka.h"

typedef struct static_provider {
    ksfi_reply_provider base;
    int32_t partition;
} static_provider;

int64_t
ksfi_reply_now_ms(void)
{
    return ksfi_clock_ms();
}

ksf_err
ksfi_reply_fetch_from_end(const ksfi_reply_host *host, const char *topic,
                          int32_t partition, int64_t deadline, ksf_errinfo *ei)
{
    /* Start at the high watermark: every reply to a request sent from now on is at or
     * after it, and nothing older is replayed (no committed offsets are used). */
    rd_kafka_t *rk = host->consumer;
    int64_t hi = 0;
    ksf_err e = ksfi_kafka_high_watermark(rk, topic, partition, deadline, &hi, ei);
    if (e) {
        return e;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = hi;
    rd_kafka_error_t *kerr = rd_kafka_incremental_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (kerr) {
        e = ksfi_kafka_fail(ei, rd_kafka_error_code(kerr), "assign reply partition");
        rd_kafka_error_destroy(kerr);
        return e;
    }
    ksfi_log(host->log, KSF_LOG_DEBUG, "client", "fetching %s [%d] from offset %lld",
             topic, (int)partition, (long long)hi);
    return KSF_OK;
}

void
ksfi_reply_unfetch(const ksfi_reply_host *host, const char *topic, int32_t partition)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition);
    rd_kafka_error_t *kerr = rd_kafka_incremental_unassign(host->consumer, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (kerr) {
        ksfi_log(host->log, KSF_LOG_WARNING, "client", "unassign %s [%d]: %s", topic,
                 (int)partition, rd_kafka_error_string(kerr));
        rd_kafka_error_destroy(kerr);
    }
}

static ksf_err
static_acquire(ksfi_reply_provider *base, const char *topic, int timeout_ms,
               int32_t *partition, ksf_errinfo *ei)
{
    static_provider *p = (static_provider *)base;
    rd_kafka_t *rk = base->host.consumer;
    int64_t deadline = ksfi_reply_now_ms() + timeout_ms;
    int count = 0;
    ksf_err e = ksfi_kafka_partition_count(rk, topic, deadline, &count, ei);
    if (e) {
        return e;
    }
    if (p->partition >= count) {
        return ksfi_fail(ei, KSF_ENOPARTITION,
                         KSFI_NO_REPLY_TOPIC_FMT " It has %d partition%s; "
                                                 "client.reply.partition is %d.",
                         topic, count, count == 1 ? "" : "s", (int)p->partition);
    }
    if ((e = ksfi_reply_fetch_from_end(&base->host, topic, p->partition, deadline, ei))) {
        return e;
    }
    *partition = p->partition;
    return KSF_OK;
}

static void
static_release(ksfi_reply_provider *base, const char *topic, int32_t partition)
{
    ksfi_reply_unfetch(&base->host, topic, partition);
}

static void
static_destroy(ksfi_reply_provider *base)
{
    ksfi_free(base);
}

static const ksfi_reply_provider_ops static_ops = {
    .name = "static",
    .acquire = static_acquire,
    .release = static_release,
    .destroy = static_destroy,
};

ksf_err
ksfi_reply_static_new(const ksf_config *cfg, const ksfi_reply_host *host,
                      ksfi_reply_provider **out)
{
    static_provider *p = ksfi_calloc(1, sizeof *p);
    if (!p) {
        return KSF_ENOMEM;
    }
    p->base.ops = &static_ops;
    p->base.host = *host;
    p->partition = cfg->client_reply_partition;
    *out = &p->base;
    return KSF_OK;
}
