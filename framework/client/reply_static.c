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

typedef struct static_provider {
    ksfi_reply_provider base;
    int32_t partition;
} static_provider;

int64_t
ksfi_reply_now_ms(void)
{
    return ksfi_clock_ms();
}

static ksf_err
static_acquire(ksfi_reply_provider *base, const char *topic, int timeout_ms,
               int32_t *partition, ksf_errinfo *ei)
{
    static_provider *p = (static_provider *)base;
    int64_t deadline = ksfi_reply_now_ms() + timeout_ms;
    int count = 0;
    ksf_err e = ksfi_reply_consumer_partition_count(base->host.consumer, topic, deadline,
                                                    &count, ei);
    if (e) {
        return e;
    }
    if (p->partition >= count) {
        return ksfi_fail(ei, KSF_ENOPARTITION,
                         KSFI_NO_REPLY_TOPIC_FMT " It has %d partition%s; "
                                                 "client.reply.partition is %d.",
                         topic, count, count == 1 ? "" : "s", (int)p->partition);
    }
    if ((e = ksfi_reply_consumer_fetch_from_end(base->host.consumer, topic, p->partition,
                                                deadline, ei))) {
        return e;
    }
    *partition = p->partition;
    return KSF_OK;
}

static void
static_release(ksfi_reply_provider *base, const char *topic, int32_t partition)
{
    ksfi_reply_consumer_unfetch(base->host.consumer, topic, partition);
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
