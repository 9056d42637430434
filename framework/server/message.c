/*
 * One message's life on the server (message.h). Reference counting: a record starts
 * with two references, the handler's (until it returns or finishes) and the
 * worker's; each produce in flight holds one more. The last release completes it.
 */
#include "server/message.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "base/thread_role.h"
#include "codec/deadline.h"
#include "codec/wire.h"
#include "kafka/consumer.h"
#include "obs/metrics.h"
#include "server/deadline.h"
#include "server/pipeline.h"
#include "server/retry.h"

#include <stdio.h>
#include <string.h>

/* At most one "skipped, deadline passed" debug line a second per server. */
#define EXPIRED_LOG_INTERVAL_MS 1000

static ksf_err ctx_reply(ksf_ctx *ctx, ksfi_kafka_out *m, bool error, ksf_errinfo *ei);
static ksf_err ctx_finished(ksf_ctx *ctx, ksf_err status, json_t *reply);
static void on_delivered(ksfi_kafka_delivery *d, const ksfi_kafka_report *r);
static bool ctx_keep_error(ksf_ctx *ctx, const json_t *shape, ksf_err *result);

static const ksfi_ctx_ops ctx_ops = {ctx_reply, ctx_finished, ctx_keep_error};

static ksfi_record *
rec_of_delivery(ksfi_kafka_delivery *d)
{
    return (ksfi_record *)(void *)((char *)d - offsetof(ksfi_record, delivery));
}

/* Larger header arrays, text and encoding buffers than these are freed with their message
 * rather than kept in a pooled record (a rare message must not pin its size in up to
 * KSFI_MSG_POOL_MAX records). */
#define POOL_KEEP_HDRS 64
#define POOL_KEEP_TEXT 1024
#define POOL_KEEP_ENC 4096

/* The shared list's share of KSFI_MSG_POOL_MAX: with the consumer's own list, no more
 * records are kept than before that list existed. */
#define SHARED_MAX (KSFI_MSG_POOL_MAX - KSFI_MSG_POOL_OWN_MAX)

void
ksfi_msg_pool_init(ksfi_msg_pool *pool)
{
    pthread_mutex_init(&pool->lock, NULL);
    pool->free = NULL;
    pool->count = 0;
}

/* Free @p rec and the buffers it kept (a zeroed record, as the pool holds them). */
static void
rec_dispose(ksfi_record *rec)
{
    ksfi_free(rec->ctx.hdrs);
    ksfi_free(rec->ctx.text);
    ksfi_free(rec->ctx.enc);
    ksfi_free(rec);
}

static void
dispose_list(ksfi_record *rec)
{
    while (rec) {
        ksfi_record *next = rec->next;
        rec_dispose(rec);
        rec = next;
    }
}

void
ksfi_msg_pool_free(ksfi_msg_pool *pool)
{
    dispose_list(pool->free);
    dispose_list(pool->own_free);
    pool->free = pool->own_free = NULL;
    pool->count = pool->own_count = 0;
    pthread_mutex_destroy(&pool->lock);
}

/* The pool whose own list this thread uses (ksfi_msg_pool_enter), if any. */
static _Thread_local ksfi_msg_pool *owned_pool KSFI_TLS_FAST;

void
ksfi_msg_pool_enter(ksfi_msg_pool *pool)
{
    owned_pool = pool;
}

void
ksfi_msg_pool_leave(ksfi_msg_pool *pool)
{
    owned_pool = NULL;
    /* To the shared list (what does not fit is freed): whichever thread consumes next
     * starts from there, under the lock. */
    pthread_mutex_lock(&pool->lock);
    while (pool->own_free && pool->count < SHARED_MAX) {
        ksfi_record *rec = pool->own_free;
        pool->own_free = rec->next;
        rec->next = pool->free;
        pool->free = rec;
        pool->count++;
    }
    pthread_mutex_unlock(&pool->lock);
    dispose_list(pool->own_free);
    pool->own_free = NULL;
    pool->own_count = 0;
}

/* A zeroed record (its buffers kept) from the pool, or a new one; NULL on ENOMEM. */
static ksfi_record *
rec_take(ksfi_msg_pool *pool)
{
    ksfi_record *rec = NULL;
    if (owned_pool == pool && pool->own_free) {
        rec = pool->own_free;
        pool->own_free = rec->next;
        pool->own_count--;
    } else {
        pthread_mutex_lock(&pool->lock);
        rec = pool->free;
        if (rec) {
            pool->free = rec->next;
            pool->count--;
        }
        pthread_mutex_unlock(&pool->lock);
    }
    if (rec) {
        rec->next = NULL;
        return rec;
    }
    return ksfi_calloc(1, sizeof *rec);
}

/* @p buf, kept for the next message when its capacity *@p cap is at most @p keep;
 * else freed (NULL, *@p cap 0), so that one large message does not pin its memory. */
static void *
pool_keep(void *buf, size_t *cap, size_t keep)
{
    if (*cap > keep) {
        ksfi_free(buf);
        *cap = 0;
        return NULL;
    }
    return buf;
}

/*
 * Return @p rec (its message's state already freed) to the pool: zeroed as a new
 * record is, so that nothing of this message (headers, trace, deadline, reply state,
 * pipeline run) reaches the next one, except its header array, text and encoding
 * buffers, whose contents the next message overwrites before anything reads them.
 */
static void
rec_recycle(ksfi_msg_pool *pool, ksfi_record *rec)
{
    size_t hdrs_cap = rec->ctx.hdrs_cap;
    size_t text_cap = rec->ctx.text_cap;
    size_t enc_cap = rec->ctx.enc_cap;
    ksfi_header *hdrs = pool_keep(rec->ctx.hdrs, &hdrs_cap, POOL_KEEP_HDRS);
    char *text = pool_keep(rec->ctx.text, &text_cap, POOL_KEEP_TEXT);
    char *enc = pool_keep(rec->ctx.enc, &enc_cap, POOL_KEEP_ENC);
    memset(rec, 0, sizeof *rec);
    rec->ctx.hdrs = hdrs;
    rec->ctx.hdrs_cap = hdrs_cap;
    rec->ctx.text = text;
    rec->ctx.text_cap = text_cap;
    rec->ctx.enc = enc;
    rec->ctx.enc_cap = enc_cap;
    if (owned_pool == pool && pool->own_count < KSFI_MSG_POOL_OWN_MAX) {
        rec->next = pool->own_free;
        pool->own_free = rec;
        pool->own_count++;
        return;
    }
    pthread_mutex_lock(&pool->lock);
    bool kept = pool->count < SHARED_MAX;
    if (kept) {
        rec->next = pool->free;
        pool->free = rec;
        pool->count++;
    }
    pthread_mutex_unlock(&pool->lock);
    if (!kept) {
        rec_dispose(rec);
    }
}

ksf_err
ksfi_msg_new(ksfi_msg_env *env, ksfi_kafka_msg *msg, ksfi_record **out)
{
    ksfi_record *rec = rec_take(&env->pool);
    if (!rec) {
        return KSF_ENOMEM;
    }
    ksfi_kafka_in in = ksfi_kafka_in_of(msg);
    rec->env = env;
    rec->msg = msg;
    rec->topic = in.topic;
    rec->partition = in.partition;
    rec->offset = in.offset;
    rec->bytes = in.key_len + in.len;
    rec->delivery.fn = on_delivered;
    ksf_ctx *ctx = &rec->ctx;
    ksfi_ctx_init(ctx, &ctx_ops, env->log, env->cfg->message_max_bytes);
    ctx->topic = in.topic;
    ctx->partition = in.partition;
    ctx->offset = in.offset;
    ctx->key = in.key;
    ctx->key_len = in.key_len;
    ctx->value = in.value;
    ctx->value_len = in.len;
    ctx->timestamp_ms = in.timestamp_ms;
    /* One for the handler (until it returns or finishes), one for the worker. */
    atomic_init(&rec->pending, 2);
    *out = rec;
    return KSF_OK;
}

static void
rec_free(ksfi_record *rec)
{
    if (!rec) {
        return;
    }
    ksfi_ctx_reset(&rec->ctx);
    ksfi_pipeline_run_clear(&rec->pl); /* pipeline: an error kept for the afters */
    ksfi_kafka_message_free(rec->msg);
    rec_recycle(&rec->env->pool, rec);
}

/* Drop one reference; the last one tells the dispatcher the record is complete. */
static void
rec_release(ksfi_record *rec)
{
    if (atomic_fetch_sub(&rec->pending, 1) == 1) {
        if (rec->part) {
            ksfi_dispatch_done(rec);
        } else {
            rec_free(rec); /* never submitted */
        }
    }
}

/* ---- replies and their delivery --------------------------------------------------- */

/* Produce @p m for @p rec through the sink, holding a reference until its report. */
static ksf_err
rec_produce(ksfi_record *rec, ksfi_kafka_out *m, ksf_errinfo *ei)
{
    m->delivery = &rec->delivery;
    atomic_fetch_add(&rec->pending, 1);
    ksf_err e = rec->env->sink->produce(rec->env->sink, m, ei);
    if (e) {
        atomic_fetch_sub(&rec->pending, 1);
    }
    return e;
}

/* A reply of @p rec that did not reach @p reply_topic: logged with the request's
 * place and counted, in one shape whether the produce call or its report failed. */
static void
reply_failed(ksfi_record *rec, const char *reply_topic, const char *error,
             const char *what)
{
    char pa[16], off[24];
    ksf_log_field f[] = {{"topic", rec->topic},
                         {"partition", KSFI_LOG_NUM(pa, rec->partition)},
                         {"offset", KSFI_LOG_NUM(off, rec->offset)},
                         {"correlation_id", rec->ctx.correlation_id},
                         {"reply_topic", reply_topic},
                         {"error", error}};
    ksfi_logkv(rec->env->log, KSF_LOG_ERROR, "server", f, 6, "%s", what);
    atomic_fetch_add(&rec->env->counters->reply_failures, 1);
}

/* The ctx's reply op: one reply message; failures are logged and counted (nobody
 * else can act on them). */
static ksf_err
ctx_reply(ksf_ctx *ctx, ksfi_kafka_out *m, bool error, ksf_errinfo *ei)
{
    ksfi_record *rec = ksfi_record_of(ctx);
    ksfi_msg_env *env = rec->env;
    ksf_errinfo local;
    ksf_errinfo *e = ei ? ei : &local;
    if (error) {
        atomic_fetch_add(&env->counters->errors, 1);
        if (ctx->handler) {
            ksfi_pmetrics_inc(ctx->handler->metrics, KSFI_M_ERRORS);
        }
    }
    ksf_err err = rec_produce(rec, m, e);
    if (err) {
        reply_failed(rec, ctx->reply_topic, e->text, "reply not produced");
    }
    return err;
}

/* pipeline: the ctx's keep_error op: with middleware afters, an error reply waits
 * for them at the final result instead of being sent now. */
static bool
ctx_keep_error(ksf_ctx *ctx, const json_t *shape, ksf_err *result)
{
    if (!ctx->handler || !ctx->handler->chain) {
        return false;
    }
    return ksfi_pipeline_capture(&ksfi_record_of(ctx)->pl, ctx, shape, result);
}

static void dead_letter_delivered(ksfi_record *rec, const ksfi_kafka_report *r);

static void
on_delivered(ksfi_kafka_delivery *d, const ksfi_kafka_report *r)
{
    ksfi_record *rec = rec_of_delivery(d);
    ksf_ctx *ctx = &rec->ctx;
    ksfi_msg_env *env = rec->env;
    if (ctx->is_event) { /* an event's only produce is its dead letter */
        dead_letter_delivered(rec, r);
        return;
    }
    if (r->err) {
        reply_failed(rec, r->topic, r->error, "reply failed for good");
    } else {
        atomic_fetch_add(&env->counters->replies, 1);
        if (ctx->handler) {
            ksfi_pmetrics_inc(ctx->handler->metrics, KSFI_M_REPLIES);
        }
    }
    rec_release(rec);
}

/* ---- before the handler: the checks ------------------------------------------------ */

/* Spring Kafka's default correlation id: 16 raw UUID bytes, not all printable text. */
static bool
spring_binary_id(const void *id, size_t len)
{
    const unsigned char *b = id;
    for (size_t i = 0; len == 16 && i < len; i++) {
        if (b[i] < 0x20 || b[i] > 0x7e) {
            return true;
        }
    }
    return false;
}

/* Copy the request headers the ctx accessors hand out as text. */
static ksf_err
copy_meta(ksf_ctx *ctx)
{
    char uuid_text[37];
    const char *id = ctx->meta.correlation_id;
    size_t id_len = ctx->meta.correlation_id_len;
    if (spring_binary_id(id, id_len) && ksfi_correlation_id_text(id, id_len, uuid_text)) {
        /* The reply still echoes the raw bytes (ctx->meta); this is for logs and
         * ksf_ctx_correlation_id, which promise text. */
        id = uuid_text;
        id_len = strlen(uuid_text);
    }
    return ksfi_ctx_set_text(ctx, id, id_len, ctx->meta.reply_topic,
                             ctx->meta.reply_topic_len);
}

/*
 * True when @p rec carries a deadline that passed more than server.deadline.skew.ms
 * ago. The skip is counted in `expired` and logged at debug (rate-limited).
 */
static bool
expired(ksfi_record *rec)
{
    ksfi_msg_env *env = rec->env;
    int64_t late = 0;
    if (!ksfi_deadline_passed(rec->ctx.scope.deadline_ms, ksfi_wall_ms(),
                              env->cfg->server_deadline_skew_ms, &late)) {
        return false;
    }
    atomic_fetch_add(&env->counters->expired, 1);
    uint64_t held = 0;
    if (ksfi_ratelimit_take(&env->expired_log, EXPIRED_LOG_INTERVAL_MS, &held)) {
        /* Debug only: under overload this is every message, and the count says it. */
        ksfi_log(env->log, KSF_LOG_DEBUG, "server",
                 "%s[%d]@%lld: skipped, its deadline passed %lld ms ago (the caller gave "
                 "up; no reply); %llu more skipped since the last line",
                 rec->topic, (int)rec->partition, (long long)rec->offset, (long long)late,
                 (unsigned long long)held);
    }
    return true;
}

/*
 * The reply-topic policy (docs/security.md): a request naming a topic the server must
 * not write to is not handled at all (its handler's effects would be for an answer
 * nobody may get), gets no reply (nothing can be sent to that topic safely), and is
 * counted, logged (rate-limited) and committed past.
 */
static bool
reply_refused(ksfi_record *rec)
{
    ksfi_msg_env *env = rec->env;
    ksf_ctx *ctx = &rec->ctx;
    const char *why =
        ksfi_reply_policy_check(env->reply_policy, rec->topic, ctx->reply_topic);
    if (!why) {
        return false;
    }
    atomic_fetch_add(&env->counters->reply_refused, 1);
    char pa[16], off[24];
    ksf_log_field f[] = {{"topic", rec->topic},
                         {"partition", KSFI_LOG_NUM(pa, rec->partition)},
                         {"offset", KSFI_LOG_NUM(off, rec->offset)},
                         {"reply_topic", ctx->reply_topic}};
    ksfi_logkv_limited(env->log, env->log_limit, "reply topic refused", KSF_LOG_WARNING,
                       "server", f, 4,
                       "reply topic refused: %s; the request is skipped unanswered "
                       "(allow it with server.reply.topics)",
                       why);
    return true;
}

/*
 * Overload shedding (docs/deadlines.md, "Shedding"): a request whose deadline leaves
 * less time than its handler's recent run time would only produce a late reply, which
 * its caller no longer reads, while the requests behind it wait. Answer it at once
 * with an error its caller can act on (retry elsewhere, back off) and give the worker
 * to the next one. Requests without a deadline (NestJS callers) always run. True when
 * shed.
 */
static bool
shed(ksfi_record *rec)
{
    ksf_ctx *ctx = &rec->ctx;
    int64_t deadline = ctx->scope.deadline_ms;
    int64_t run_ms = (atomic_load(&ctx->handler->run_us) + 999) / 1000;
    if (!deadline || run_ms <= 0) {
        return false;
    }
    int64_t left = deadline - ksfi_wall_ms();
    if (left >= run_ms) {
        return false;
    }
    ksfi_msg_env *env = rec->env;
    atomic_fetch_add(&env->counters->shed, 1);
    char text[KSF_ERRINFO_TEXT_SIZE];
    snprintf(
        text, sizeof text,
        "%s: request for '%s' shed: it had %lld ms left before its deadline and the "
        "handler takes about %lld ms, so it was not run (the server is behind: retry "
        "later or elsewhere)",
        KSFI_OVERLOADED, rec->topic, (long long)(left > 0 ? left : 0), (long long)run_ms);
    uint64_t held = 0;
    if (ksfi_ratelimit_take(&env->shed_log, 1000, &held)) {
        ksfi_log(env->log, KSF_LOG_WARNING, "server",
                 "%s[%d]@%lld: %s; %llu more shed since the last line", rec->topic,
                 (int)rec->partition, (long long)rec->offset, text,
                 (unsigned long long)held);
    }
    if (ksfi_ctx_claim_end(ctx)) {
        ksfi_ctx_send_error_text(ctx, text);
    }
    return true;
}

static const ksfi_handler *
find_handler(const ksfi_msg_env *env, const char *topic)
{
    for (size_t i = 0; i < env->nhandlers; i++) {
        if (!strcmp(env->handlers[i].pattern, topic)) {
            return &env->handlers[i];
        }
    }
    return NULL;
}

/*
 * Read the headers and find the handler. Returns false when the message needs nothing
 * more: malformed headers (logged, counted) or no handler (answered or logged).
 */
static bool
prepare(ksfi_record *rec)
{
    ksfi_msg_env *env = rec->env;
    ksf_ctx *ctx = &rec->ctx;
    ksf_errinfo ei;
    ksfi_errinfo_clear(&ei);
    ctx->topic = rec->topic; /* the dispatcher's copy now: it outlives the message */
    if (ksfi_kafka_header_views(rec->msg, &ctx->hdrs, &ctx->hdrs_cap, &ctx->nhdrs) ||
        ksfi_parse_request_headers(ctx->hdrs, ctx->nhdrs, &ctx->meta, &ei) ||
        copy_meta(ctx)) {
        char pa[16], off[24];
        ksf_log_field f[] = {{"topic", rec->topic},
                             {"partition", KSFI_LOG_NUM(pa, rec->partition)},
                             {"offset", KSFI_LOG_NUM(off, rec->offset)},
                             {"error", ei.code ? ei.text : "out of memory reading them"}};
        ksfi_logkv_limited(env->log, env->log_limit, "malformed request headers",
                           KSF_LOG_ERROR, "server", f, 4,
                           "malformed request headers; skipping the message (no reply "
                           "is possible)");
        atomic_fetch_add(&env->counters->malformed, 1);
        return false;
    }
    ksfi_scope_init(&ctx->scope, ctx->hdrs, ctx->nhdrs, env->log, rec->topic,
                    env->cfg->trace_headers);
    ctx->handler = find_handler(env, rec->topic);
    ctx->is_event = !ctx->meta.is_request ||
                    (ctx->handler && ctx->handler->kind == KSF_HANDLER_EVENT);
    if (expired(rec)) {
        return false; /* counted and logged; nobody waits for the answer any more */
    }
    if (!ctx->is_event && ctx->reply_topic && reply_refused(rec)) {
        return false;
    }
    if (!ctx->is_event && ctx->handler && shed(rec)) {
        return false; /* answered with the overload error */
    }
    atomic_fetch_add(ctx->is_event ? &env->counters->events : &env->counters->requests,
                     1);
    if (ctx->handler) {
        ksfi_pmetrics_inc(ctx->handler->metrics,
                          ctx->is_event ? KSFI_M_EVENTS : KSFI_M_REQUESTS);
        return true;
    }
    atomic_fetch_add(&env->counters->no_handler, 1);
    if (ctx->is_event) {
        ksfi_logkv_limited(env->log, env->log_limit, "no handler", KSF_LOG_WARNING,
                           "server", NULL, 0, "%s Event pattern: %s",
                           KSFI_NO_EVENT_HANDLER, rec->topic);
        return false;
    }
    /* NestJS sends the bare text, without is-disposed, straight from handleMessage. */
    ksfi_logkv_limited(env->log, env->log_limit, "no handler", KSF_LOG_WARNING, "server",
                       NULL, 0, "%s Message pattern: %s", KSFI_NO_MESSAGE_HANDLER,
                       rec->topic);
    json_t *text = json_string(KSFI_NO_MESSAGE_HANDLER);
    if (text && ksfi_ctx_claim_end(ctx)) {
        ksfi_ctx_send_error(ctx, text, false);
    }
    json_decref(text);
    return false;
}

/* ---- event retries and dead letters (retry.h decides) ------------------------------ */

static ksfi_policy
policy_of(const ksfi_record *rec)
{
    return ksfi_policy_for(&rec->env->cfg->policy, rec->topic);
}

/* The failed event has nothing more to wait for: release the handler's reference,
 * so its offset is stored. */
static void
give_up(ksfi_record *rec, const char *why)
{
    ksfi_msg_env *env = rec->env;
    ksf_ctx *ctx = &rec->ctx;
    atomic_fetch_add(&env->counters->errors, 1);
    ksfi_pmetrics_inc(ctx->handler->metrics, KSFI_M_ERRORS);
    ksfi_log(env->log, KSF_LOG_WARNING, "server",
             "event handler for %s[%d]@%lld failed %d time(s) (%s); %s; the event is "
             "committed",
             rec->topic, (int)rec->partition, (long long)rec->offset, rec->attempts,
             ctx->error_text ? ctx->error_text : "?", why);
    rec_release(rec);
}

static void
schedule(ksfi_record *rec, int kind, int delay_ms)
{
    if (!ksfi_dispatch_retry_later(rec, kind, delay_ms)) {
        rec_release(rec); /* revoked: the next owner runs it again */
    }
}

/* Produce the original message to the dead-letter topic; on failure to queue, try
 * again after the longest backoff (the partition stays held: never dropped). */
static void
dead_letter(ksfi_record *rec)
{
    ksfi_msg_env *env = rec->env;
    ksf_ctx *ctx = &rec->ctx;
    ksfi_policy pol = policy_of(rec);
    ksf_errinfo ei = {0};
    char part[16], off[24], tries[16];
    char *topic = ksfi_policy_dlq_topic(pol.dlq ? pol.dlq : "", rec->topic);
    size_t n = ctx->nhdrs;
    ksfi_header *h = ksfi_calloc(n + 5, sizeof *h);
    if (!topic || !h) {
        ksfi_fail(&ei, KSF_ENOMEM, "out of memory building a dead letter");
        goto fail;
    }
    if (n) {
        memcpy(h, ctx->hdrs, n * sizeof *h);
    }
    snprintf(part, sizeof part, "%d", (int)rec->partition);
    snprintf(off, sizeof off, "%lld", (long long)rec->offset);
    snprintf(tries, sizeof tries, "%d", rec->attempts);
    const char *err = ctx->error_text ? ctx->error_text : "";
    h[n++] = (ksfi_header){KSFI_DLQ_HDR_ERROR, err, strlen(err)};
    h[n++] = (ksfi_header){KSFI_DLQ_HDR_TOPIC, rec->topic, strlen(rec->topic)};
    h[n++] = (ksfi_header){KSFI_DLQ_HDR_PARTITION, part, strlen(part)};
    h[n++] = (ksfi_header){KSFI_DLQ_HDR_OFFSET, off, strlen(off)};
    h[n++] = (ksfi_header){KSFI_DLQ_HDR_ATTEMPTS, tries, strlen(tries)};
    ksfi_kafka_out m = {
        .topic = topic,
        .partition = KSFI_KAFKA_ANY_PARTITION,
        .value = ctx->value,
        .len = ctx->value_len,
        .key = ctx->key,
        .key_len = ctx->key_len,
        .hdrs = h,
        .nhdrs = n,
        .what = "a dead letter",
    };
    if (rec_produce(rec, &m, &ei)) {
        goto fail;
    }
    ksfi_free(topic);
    ksfi_free(h);
    return;
fail:
    atomic_fetch_add(&env->counters->dlq_failures, 1);
    ksfi_log(env->log, KSF_LOG_ERROR, "server",
             "dead-lettering %s[%d]@%lld to %s: %s; trying again in %d ms (the partition "
             "waits)",
             rec->topic, (int)rec->partition, (long long)rec->offset, topic ? topic : "?",
             ei.text, pol.backoff_max_ms);
    ksfi_free(topic);
    ksfi_free(h);
    schedule(rec, KSFI_RETRY_DEAD_LETTER, pol.backoff_max_ms);
}

/*
 * An event handler finished with @p status != KSF_OK; the handler's reference is still
 * held. Schedules a re-run, starts dead-lettering, or (both off) logs and releases it
 * so the event is committed. The reference is taken over either way.
 */
static void
event_failed(ksfi_record *rec, ksf_err status)
{
    ksfi_msg_env *env = rec->env;
    ksf_ctx *ctx = &rec->ctx;
    ksfi_policy pol = policy_of(rec);
    ksfi_ctx_note_error(ctx, status);
    rec->attempts++;
    int delay = 0;
    switch (ksfi_retry_next(&pol, rec->attempts, &delay)) {
    case KSFI_RETRY_STEP_RERUN:
        ksfi_log(env->log, KSF_LOG_INFO, "server",
                 "event handler for %s[%d]@%lld failed (%s), attempt %d of %d; running "
                 "it again in %d ms (the partition waits)",
                 rec->topic, (int)rec->partition, (long long)rec->offset,
                 ctx->error_text ? ctx->error_text : "?", rec->attempts, pol.retries + 1,
                 delay);
        schedule(rec, KSFI_RETRY_RERUN, delay);
        return;
    case KSFI_RETRY_STEP_GIVE_UP:
        give_up(rec, "dead-lettering is off (server.event.dlq.topic)");
        return;
    case KSFI_RETRY_STEP_DEAD_LETTER:
        dead_letter(rec);
        return;
    }
}

/* The delivery report of @p rec's dead-letter produce (producer poll thread). */
static void
dead_letter_delivered(ksfi_record *rec, const ksfi_kafka_report *r)
{
    ksfi_msg_env *env = rec->env;
    ksf_ctx *ctx = &rec->ctx;
    if (r->err) {
        int delay = policy_of(rec).backoff_max_ms;
        atomic_fetch_add(&env->counters->dlq_failures, 1);
        ksfi_log(env->log, KSF_LOG_ERROR, "server",
                 "dead-lettering %s[%d]@%lld to %s failed: %s; trying again in %d ms "
                 "(the partition waits)",
                 rec->topic, (int)rec->partition, (long long)rec->offset, r->topic,
                 r->error, delay);
        rec_release(rec); /* the produce's; the handler's stays for the retry */
        schedule(rec, KSFI_RETRY_DEAD_LETTER, delay);
        return;
    }
    atomic_fetch_add(&env->counters->dead_lettered, 1);
    atomic_fetch_add(&env->counters->errors, 1);
    ksfi_pmetrics_inc(ctx->handler->metrics, KSFI_M_ERRORS);
    ksfi_log(env->log, KSF_LOG_WARNING, "server",
             "event %s[%d]@%lld failed %d time(s) (%s); dead-lettered to %s", rec->topic,
             (int)rec->partition, (long long)rec->offset, rec->attempts,
             ctx->error_text ? ctx->error_text : "?", r->topic);
    rec_release(rec); /* the produce's */
    rec_release(rec); /* the handler's: the offset may now be stored */
}

/* ---- the handler run --------------------------------------------------------------- */

/* The debug line of one handled message (KSF_LOG=debug). */
static void
log_handled(const ksfi_record *rec, ksf_err status)
{
    const ksf_ctx *ctx = &rec->ctx;
    char part[16], off[24], us[24];
    ksf_log_field f[] = {
        {"topic", rec->topic},
        {"partition", KSFI_LOG_NUM(part, rec->partition)},
        {"offset", KSFI_LOG_NUM(off, rec->offset)},
        {"correlation_id", ctx->correlation_id ? ctx->correlation_id : ""},
        {"status", ksf_strerror(status)},
        {"handler_us", KSFI_LOG_NUM(us, ksfi_metrics_now_us() - rec->started_us)}};
    ksfi_logkv(rec->env->log, KSF_LOG_DEBUG, "server", f, 6, "%s handled",
               ctx->is_event ? "event" : "request");
}

/* Act on a handler's result (returned, or finished when deferred: the ctx's
 * `finished` op); steals @p reply. @p marked: ksfi_ctx_returned already marked it
 * finished (and maybe claimed the end); NULL to mark it here. */
static ksf_err
finish_result(ksf_ctx *ctx, ksf_err status, json_t *reply, const ksfi_ctx_outcome *marked)
{
    ksfi_record *rec = ksfi_record_of(ctx);
    ksfi_msg_env *env = rec->env;
    bool ended = false, late = false, claimed = false;
    if (marked) {
        ended = marked->ended;
        late = marked->late;
        claimed = marked->claimed;
    } else if (!ksfi_ctx_mark_finished(ctx, &ended, &late)) {
        json_decref(reply);
        return KSF_ESTATE;
    }
    json_t *error = NULL; /* pipeline: the afters see, and may change, the outcome */
    if (ctx->handler->chain || status == KSF_SKIP) {
        ksfi_pipeline_after(&rec->pl, ctx,
                            (int64_t)(ksfi_metrics_now_us() - rec->started_us), &status,
                            &reply, &error);
    }
    if (!ctx->is_event) {
        /* What shedding expects the next run to take: a moving average (1/4 weight
         * for the newest run) that follows a slowing handler within a few runs. */
        int64_t took = (int64_t)(ksfi_metrics_now_us() - rec->started_us);
        ksfi_handler *h = (ksfi_handler *)ctx->handler; /* run_us is the mutable part */
        int64_t avg = atomic_load(&h->run_us);
        atomic_store(&h->run_us, avg ? avg + (took - avg) / 4 : took);
    }
    if (ctx->handler->metrics) {
        /* Deferred handlers included: their latency ends at ksf_ctx_finish. */
        ksfi_hist_observe(&ctx->handler->metrics->latency,
                          ksfi_metrics_now_us() - rec->started_us);
    }
    if (ksfi_log_enabled(env->log, KSF_LOG_DEBUG)) {
        log_handled(rec, status);
    }
    if (late) {
        /* The caller already has the budget error: one answer per request. */
        atomic_fetch_add(&env->counters->late_discarded, 1);
        ksfi_log(env->log, KSF_LOG_WARNING, "server",
                 "handler for '%s' (%s[%d]@%lld) finished after its time budget of %d "
                 "ms; its result (%s) is discarded",
                 rec->topic, rec->topic, (int)rec->partition, (long long)rec->offset,
                 rec->budget_ms, ksf_strerror(status));
    } else if (ctx->is_event && status != KSF_OK) {
        json_decref(reply);
        event_failed(rec, status); /* takes the handler's reference */
        return KSF_OK;
    } else if (ctx->is_event) {
        /* A handled event: nothing to send (failures took the retry road above). */
    } else if (!ended && error) { /* pipeline: the error the afters left */
        if (claimed || ksfi_ctx_claim_end(ctx)) {
            ksfi_ctx_send_error(ctx, error, true);
        }
    } else if (!ended && status == KSF_OK) {
        ksfi_ctx_send_final(ctx, reply, claimed);
    } else if (!ended && (claimed || ksfi_ctx_claim_end(ctx))) {
        ksfi_log(env->log, KSF_LOG_WARNING, "server",
                 "handler for %s[%d]@%lld returned \"%s\" without a reply error; sending "
                 "\"%s\"",
                 rec->topic, (int)rec->partition, (long long)rec->offset,
                 ksf_strerror(status), KSFI_INTERNAL_SERVER_ERROR);
        ksfi_ctx_send_error_text(ctx, KSFI_INTERNAL_SERVER_ERROR);
    }
    json_decref(reply);
    json_decref(error);
    /* The pattern's slot bounds handlers at work, not replies on their way: holding it
     * until the broker acknowledged capped a pattern at `limit` replies per produce
     * round trip (about 3,500 requests/s on the embedded broker, whatever the load). */
    ksfi_dispatch_handler_done(rec);
    rec_release(rec); /* the handler's reference */
    return KSF_OK;
}

/* The ctx's `finished` op: a deferred handler's ksf_ctx_finish. */
static ksf_err
ctx_finished(ksf_ctx *ctx, ksf_err status, json_t *reply)
{
    return finish_result(ctx, status, reply, NULL);
}

/*
 * Run the handler for this record: decode the value, call the handler inside the
 * message's trace scope, and act on its result (or deferral). The one place a handler
 * is called, behind its middleware befores when it has a chain (pipeline.h); the
 * afters run at the final result (finish_result).
 */
static void
run_handler(ksfi_record *rec)
{
    ksf_ctx *ctx = &rec->ctx;
    json_t *data = NULL, *reply = NULL;
    rec->started_us = ksfi_metrics_now_us();
    /* A raw handler's value is decoded only when something asks for the tree
     * (ksf_ctx_data, ksf_ctx_unpack, a before): forwarding it costs no jansson tree. */
    bool raw = ctx->handler->raw;
    ksf_err status = raw ? KSF_OK : ksfi_decode_value(ctx->value, ctx->value_len, &data);
    if (status == KSF_OK) {
        ksfi_scope_enter(&ctx->scope); /* sends from the handler continue its trace */
        ctx->data = data;              /* ksf_ctx_data, ksf_ctx_unpack */
        ctx->lazy = raw;
        ctx->in_call = true;
        if (ctx->handler->chain) { /* pipeline: befores, then the handler */
            ksfi_pipeline_begin(&rec->pl, ctx);
            status = ksfi_pipeline_invoke(&rec->pl, ctx, &data, &reply);
            if (rec->pl.refused) {
                atomic_fetch_add(&rec->env->counters->refused, 1);
            }
        } else {
            status = ctx->handler->fn(ctx, data, &reply);
        }
        ctx->data = NULL; /* freed below */
        ctx->in_call = false;
        if (raw) {
            ksfi_ctx_drop_decoded(ctx);
        }
        ksfi_scope_enter(NULL);
    }
    json_decref(data);
    /* Nothing but the afters can change a request's result once its handler returned:
     * without them the reply's end is claimed in the same critical section. */
    bool settled = !ctx->is_event && !ctx->handler->chain && status != KSF_SKIP;
    ksfi_ctx_outcome o = ksfi_ctx_returned(ctx, status, settled);
    if (o.early) {
        /* ksf_ctx_finish came before the handler returned: its result is the answer. */
        if (status != KSF_DEFERRED) {
            ksfi_log(rec->env->log, KSF_LOG_WARNING, "server",
                     "handler for %s called ksf_ctx_finish and then returned \"%s\" "
                     "instead of ksf_ctx_defer(ctx); the finish's result is used",
                     rec->topic, ksf_strerror(status));
        }
        json_decref(reply);
        finish_result(ctx, o.early_status, o.early_reply, NULL);
        return;
    }
    if (status == KSF_DEFERRED) {
        if (o.deferred) {
            json_decref(reply); /* the final reply comes with ksf_ctx_finish */
            /* The handler is off the worker: its pattern's slot goes to the next
             * message and the deferral counts against server.deferred.max instead. */
            ksfi_dispatch_parked(rec);
            return;
        }
        ksfi_log(rec->env->log, KSF_LOG_ERROR, "server",
                 "handler for %s returned KSF_DEFERRED without calling ksf_ctx_defer",
                 rec->topic);
        status = KSF_ESTATE;
    }
    finish_result(ctx, status, reply, o.finished ? &o : NULL);
}

/* ---- the pool's operations --------------------------------------------------------- */

static void
op_run(ksfi_record *rec)
{
    if (!prepare(rec)) {
        bool ended, late;
        ksfi_ctx_mark_finished(&rec->ctx, &ended, &late);
        rec_release(rec); /* the handler's */
        rec_release(rec); /* the worker's: rec may be gone now */
        return;
    }
    if (!rec->ctx.is_event) {
        ksfi_dispatch_arm_budget(rec);
    }
    run_handler(rec);
    /* A settled request's message goes now, while it is still in the cache, instead of
     * when its reply's delivery report comes, a produce round trip and up to a few
     * hundred messages later (its payload and headers no longer held meanwhile); the
     * record stays until then, for the offset. */
    if (ksfi_ctx_settled(&rec->ctx)) {
        ksfi_ctx_forget_message(&rec->ctx);
        ksfi_kafka_message_free(rec->msg);
        rec->msg = NULL;
    }
    rec_release(rec);
}

static void
op_run_due(ksfi_record *rec)
{
    if (rec->retry_kind == KSFI_RETRY_DEAD_LETTER) {
        dead_letter(rec);
        return;
    }
    atomic_fetch_add(&rec->env->counters->event_retries, 1);
    atomic_fetch_add(&rec->pending, 1); /* the worker's, as in op_run */
    ksfi_ctx_rearm(&rec->ctx);
    run_handler(rec);
    rec_release(rec);
}

/* The request's time budget ran out: send the budget error unless the reply ended. */
static void
op_budget_expired(ksfi_record *rec)
{
    ksfi_msg_env *env = rec->env;
    ksf_ctx *ctx = &rec->ctx;
    if (ctx->is_event || !ksfi_ctx_claim_budget(ctx)) {
        return;
    }
    char text[KSF_ERRINFO_TEXT_SIZE];
    snprintf(text, sizeof text, "handler for '%s' exceeded its time budget of %d ms",
             rec->topic, rec->budget_ms);
    atomic_fetch_add(&env->counters->budget_exceeded, 1);
    ksfi_log(env->log, KSF_LOG_WARNING, "server",
             "%s[%d]@%lld: %s; answering with an error now (the handler keeps its "
             "worker until it returns)",
             rec->topic, (int)rec->partition, (long long)rec->offset, text);
    ksfi_ctx_send_error_text(ctx, text);
}

const ksfi_dispatch_ops ksfi_msg_dispatch_ops = {
    .run = op_run,
    .run_due = op_run_due,
    .budget_expired = op_budget_expired,
    .release = rec_release,
    .free = rec_free,
};
