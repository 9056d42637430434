#include "server/retry.h"

#include "base/alloc.h"
#include "base/config.h"
#include "base/errinfo.h"
#include "obs/metrics.h"
#include "server/ctx.h"
#include "server/dispatch.h"
#include "server/policy.h"
#include "server/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int
ksfi_retry_backoff_ms(int backoff_ms, int max_ms, int attempt)
{
    long long d = backoff_ms;
    for (int i = 1; i < attempt && d < max_ms; i++) {
        d *= 2;
    }
    if (d > max_ms) {
        d = max_ms;
    }
    /* Jitter needs no quality, only spread; rand_r on a per-call seed keeps it
     * thread-safe without shared state. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned seed = (unsigned)ts.tv_nsec ^ (unsigned)attempt * 2654435761u;
    long long half = d / 2;
    return (int)(d - (half > 0 ? rand_r(&seed) % (half + 1) : 0));
}

static ksfi_policy
policy_of(const ksf_ctx *ctx)
{
    return ksfi_policy_for(&ctx->srv->cfg->policy, ctx->topic);
}

/* Remember why this attempt failed, for the logs and the dead-letter header. */
static void
record_error(ksf_ctx *ctx, ksf_err status)
{
    pthread_mutex_lock(&ctx->lock);
    if (status != KSF_EREMOTE || !ctx->error_text) {
        char *text = ksfi_strdup(ksf_strerror(status));
        if (text) {
            ksfi_free(ctx->error_text);
            ctx->error_text = text;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
}

/* The failed event has nothing more to wait for: release the handler's reference,
 * so its offset is stored. */
static void
give_up(ksf_ctx *ctx, const char *why)
{
    ksf_server *srv = ctx->srv;
    atomic_fetch_add(&srv->counters.errors, 1);
    ksfi_pmetrics_inc(ctx->handler->metrics, KSFI_M_ERRORS);
    ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
             "event handler for %s[%d]@%lld failed %d time(s) (%s); %s; the event is "
             "committed",
             ctx->topic, (int)ctx->msg->partition, (long long)ctx->msg->offset,
             ctx->attempts, ctx->error_text ? ctx->error_text : "?", why);
    ksfi_ctx_release(ctx);
}

static void
schedule(ksf_ctx *ctx, int kind, int delay_ms)
{
    if (!ksfi_dispatch_retry_later(ctx, kind, delay_ms)) {
        ksfi_ctx_release(ctx); /* revoked: the next owner runs it again */
    }
}

/* Produce the original message to the dead-letter topic; on failure to queue, try
 * again after the longest backoff (the partition stays held: never dropped). */
static void
dead_letter(ksf_ctx *ctx)
{
    ksf_server *srv = ctx->srv;
    ksfi_policy pol = policy_of(ctx);
    ksf_errinfo ei = {0};
    char part[16], off[24], tries[16];
    const rd_kafka_message_t *m = ctx->msg;
    char *topic = ksfi_policy_dlq_topic(pol.dlq ? pol.dlq : "", ctx->topic);
    size_t n = ctx->nhdrs;
    ksfi_header *h = ksfi_calloc(n + 5, sizeof *h);
    if (!topic || !h) {
        ksfi_fail(&ei, KSF_ENOMEM, "out of memory building a dead letter");
        goto fail;
    }
    if (n) {
        memcpy(h, ctx->hdrs, n * sizeof *h);
    }
    snprintf(part, sizeof part, "%d", (int)ctx->msg->partition);
    snprintf(off, sizeof off, "%lld", (long long)ctx->msg->offset);
    snprintf(tries, sizeof tries, "%d", ctx->attempts);
    const char *err = ctx->error_text ? ctx->error_text : "";
    h[n++] = (ksfi_header){KSFI_DLQ_HDR_ERROR, err, strlen(err)};
    h[n++] = (ksfi_header){KSFI_DLQ_HDR_TOPIC, ctx->topic, strlen(ctx->topic)};
    h[n++] = (ksfi_header){KSFI_DLQ_HDR_PARTITION, part, strlen(part)};
    h[n++] = (ksfi_header){KSFI_DLQ_HDR_OFFSET, off, strlen(off)};
    h[n++] = (ksfi_header){KSFI_DLQ_HDR_ATTEMPTS, tries, strlen(tries)};
    if (ksfi_server_produce(srv, ctx, topic, KSFI_KAFKA_ANY_PARTITION, m->payload, m->len,
                            m->key, m->key ? m->key_len : 0, h, n, &ei)) {
        goto fail;
    }
    ksfi_free(topic);
    ksfi_free(h);
    return;
fail:
    atomic_fetch_add(&srv->counters.dlq_failures, 1);
    ksfi_log(&srv->log, KSF_LOG_ERROR, "server",
             "dead-lettering %s[%d]@%lld to %s: %s; trying again in %d ms (the partition "
             "waits)",
             ctx->topic, (int)m->partition, (long long)m->offset, topic ? topic : "?",
             ei.text, pol.backoff_max_ms);
    ksfi_free(topic);
    ksfi_free(h);
    schedule(ctx, KSFI_RETRY_DEAD_LETTER, pol.backoff_max_ms);
}

void
ksfi_retry_event_failed(ksf_ctx *ctx, ksf_err status)
{
    ksf_server *srv = ctx->srv;
    ksfi_policy pol = policy_of(ctx);
    record_error(ctx, status);
    ctx->attempts++;
    if (ctx->attempts <= pol.retries) {
        int delay =
            ksfi_retry_backoff_ms(pol.backoff_ms, pol.backoff_max_ms, ctx->attempts);
        ksfi_log(&srv->log, KSF_LOG_INFO, "server",
                 "event handler for %s[%d]@%lld failed (%s), attempt %d of %d; running "
                 "it again in %d ms (the partition waits)",
                 ctx->topic, (int)ctx->msg->partition, (long long)ctx->msg->offset,
                 ctx->error_text ? ctx->error_text : "?", ctx->attempts, pol.retries + 1,
                 delay);
        schedule(ctx, KSFI_RETRY_RERUN, delay);
        return;
    }
    if (!pol.dlq) {
        give_up(ctx, "dead-lettering is off (server.event.dlq.topic)");
        return;
    }
    dead_letter(ctx);
}

void
ksfi_retry_run(ksf_ctx *ctx)
{
    if (ctx->retry_kind == KSFI_RETRY_DEAD_LETTER) {
        dead_letter(ctx);
        return;
    }
    atomic_fetch_add(&ctx->srv->counters.event_retries, 1);
    ksfi_ctx_rerun(ctx);
}

void
ksfi_retry_dead_letter_delivered(ksf_ctx *ctx, const ksfi_kafka_report *r)
{
    ksf_server *srv = ctx->srv;
    const char *topic = r->topic;
    if (r->err) {
        int delay = policy_of(ctx).backoff_max_ms;
        atomic_fetch_add(&srv->counters.dlq_failures, 1);
        ksfi_log(&srv->log, KSF_LOG_ERROR, "server",
                 "dead-lettering %s[%d]@%lld to %s failed: %s; trying again in %d ms "
                 "(the partition waits)",
                 ctx->topic, (int)ctx->msg->partition, (long long)ctx->msg->offset, topic,
                 r->error, delay);
        ksfi_ctx_release(ctx); /* the produce's; the handler's stays for the retry */
        schedule(ctx, KSFI_RETRY_DEAD_LETTER, delay);
        return;
    }
    atomic_fetch_add(&srv->counters.dead_lettered, 1);
    atomic_fetch_add(&srv->counters.errors, 1);
    ksfi_pmetrics_inc(ctx->handler->metrics, KSFI_M_ERRORS);
    ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
             "event %s[%d]@%lld failed %d time(s) (%s); dead-lettered to %s", ctx->topic,
             (int)ctx->msg->partition, (long long)ctx->msg->offset, ctx->attempts,
             ctx->error_text ? ctx->error_text : "?", topic);
    ksfi_ctx_release(ctx); /* the produce's */
    ksfi_ctx_release(ctx); /* the handler's: the offset may now be stored */
}
