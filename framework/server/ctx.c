#include "server/ctx.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "codec/wire.h"
#include "obs/metrics.h"
#include "server/deadline.h"
#include "server/dispatch.h"
#include "server/retry.h"
#include "server/server.h"

#include <string.h>

/* Reply headers beyond the protocol's: the user's extras, capped to keep it simple. */
#define KSFI_CTX_EXTRA_MAX 64

ksf_err
ksfi_ctx_new(ksf_server *srv, rd_kafka_message_t *msg, ksf_ctx **out)
{
    ksf_ctx *ctx = ksfi_calloc(1, sizeof *ctx);
    if (!ctx) {
        return KSF_ENOMEM;
    }
    ctx->srv = srv;
    ctx->msg = msg;
    ctx->topic = rd_kafka_topic_name(msg->rkt);
    ctx->meta.reply_partition = -1;
    pthread_mutex_init(&ctx->lock, NULL);
    /* One for the handler (until it returns or finishes), one for the worker. */
    atomic_init(&ctx->pending, 2);
    *out = ctx;
    return KSF_OK;
}

void
ksfi_ctx_free(ksf_ctx *ctx)
{
    if (!ctx) {
        return;
    }
    for (size_t i = 0; i < ctx->nextra; i++) {
        ksfi_free((void *)ctx->extra[i].name);
        ksfi_free((void *)ctx->extra[i].value);
    }
    ksfi_free(ctx->extra);
    ksfi_free(ctx->hdrs);
    ksfi_free(ctx->correlation_id);
    ksfi_free(ctx->reply_topic);
    ksfi_scope_clear(&ctx->scope);
    ksfi_free(ctx->raw);
    ksfi_free(ctx->key);
    ksfi_free(ctx->error_text);
    json_decref(ctx->early_reply);
    ksfi_pipeline_ctx_clear(&ctx->pl); /* pipeline */
    pthread_mutex_destroy(&ctx->lock);
    rd_kafka_message_destroy(ctx->msg);
    ksfi_free(ctx);
}

void
ksfi_ctx_release(ksf_ctx *ctx)
{
    if (atomic_fetch_sub(&ctx->pending, 1) == 1) {
        ksfi_dispatch_done(ctx);
    }
}

void
ksfi_ctx_delivered(ksf_ctx *ctx, rd_kafka_resp_err_t err, const char *topic)
{
    ksf_server *srv = ctx->srv;
    if (ctx->is_event) { /* an event's only produce is its dead letter */
        ksfi_retry_dead_letter_delivered(ctx, err, topic);
        return;
    }
    if (err) {
        char pa[16], off[24];
        ksf_log_field f[] = {{"topic", ctx->topic},
                             {"partition", KSFI_LOG_NUM(pa, ctx->msg->partition)},
                             {"offset", KSFI_LOG_NUM(off, ctx->msg->offset)},
                             {"correlation_id", ctx->correlation_id},
                             {"reply_topic", topic},
                             {"error", rd_kafka_err2str(err)}};
        ksfi_logkv(&srv->log, KSF_LOG_ERROR, "server", f, 6, "reply failed for good");
        atomic_fetch_add(&srv->counters.reply_failures, 1);
    } else {
        atomic_fetch_add(&srv->counters.replies, 1);
        if (ctx->handler) {
            ksfi_pmetrics_inc(ctx->handler->metrics, KSFI_M_REPLIES);
        }
    }
    ksfi_ctx_release(ctx);
}

/* Claim the right to send the final reply; false when it was already sent. */
static bool
claim_end(ksf_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    bool first = !ctx->ended;
    ctx->ended = true;
    pthread_mutex_unlock(&ctx->lock);
    return first;
}

/* Produce one reply message; failures are logged and counted (nobody else can act). */
static ksf_err
produce(ksf_ctx *ctx, const void *value, size_t len, const void *key, size_t key_len,
        const ksfi_header *hdrs, size_t n, ksf_errinfo *ei)
{
    ksf_errinfo local;
    ksf_errinfo *e = ei ? ei : &local;
    int32_t partition =
        ctx->meta.reply_partition < 0 ? RD_KAFKA_PARTITION_UA : ctx->meta.reply_partition;
    ksf_err err = ksfi_server_produce(ctx->srv, ctx, ctx->reply_topic, partition, value,
                                      len, key, key_len, hdrs, n, e);
    if (err) {
        char pa[16], off[24];
        ksf_log_field f[] = {{"topic", ctx->topic},
                             {"partition", KSFI_LOG_NUM(pa, ctx->msg->partition)},
                             {"offset", KSFI_LOG_NUM(off, ctx->msg->offset)},
                             {"correlation_id", ctx->correlation_id},
                             {"reply_topic", ctx->reply_topic},
                             {"error", e->text}};
        ksfi_logkv(&ctx->srv->log, KSF_LOG_ERROR, "server", f, 6, "reply not produced");
        atomic_fetch_add(&ctx->srv->counters.reply_failures, 1);
    }
    return err;
}

/* Send @p error (borrowed) as the final reply: null value, kafka_nest-err, disposed. */
static ksf_err
send_error(ksf_ctx *ctx, const json_t *error, bool disposed)
{
    size_t len = 0;
    char *text = ksfi_encode_error(error, &len);
    ksfi_header h[KSFI_PROTO_HEADERS_MAX + KSFI_TRACE_HEADERS_MAX];
    if (!text) {
        ksfi_log(&ctx->srv->log, KSF_LOG_ERROR, "server",
                 "out of memory encoding an error");
        return KSF_ENOMEM;
    }
    size_t n = ksfi_reply_headers(ctx->meta.correlation_id, ctx->meta.correlation_id_len,
                                  text, len, disposed, h);
    n += ksfi_scope_reply_headers(&ctx->scope, h + n);
    atomic_fetch_add(&ctx->srv->counters.errors, 1);
    if (ctx->handler) {
        ksfi_pmetrics_inc(ctx->handler->metrics, KSFI_M_ERRORS);
    }
    ksf_err err = produce(ctx, NULL, 0, NULL, 0, h, n, NULL);
    ksfi_free(text);
    return err;
}

/* Send {"status":"error","message":<text>} as the final reply. */
static void
send_error_text(ksf_ctx *ctx, const char *text)
{
    json_t *shape = ksfi_error_shape(text);
    if (shape) {
        send_error(ctx, shape, true);
    } else {
        ksfi_log(&ctx->srv->log, KSF_LOG_ERROR, "server",
                 "out of memory building an error");
    }
    json_decref(shape);
}

/* Encode a reply value (raw bytes win over JSON); checks message.max.bytes. */
static ksf_err
encode_reply(ksf_ctx *ctx, const json_t *v, char **out, size_t *len, ksf_errinfo *ei)
{
    ksf_err e;
    if (ctx->has_raw) {
        *out = ksfi_memdup(ctx->raw, ctx->raw_len);
        *len = ctx->raw_len;
        e = *out ? KSF_OK : ksfi_fail(ei, KSF_ENOMEM, "out of memory copying a reply");
    } else {
        e = ksfi_encode_value(v, out, len, ei);
    }
    size_t max = ctx->srv->cfg->message_max_bytes;
    if (!e && *len > max) {
        ksfi_free(*out);
        *out = NULL;
        return ksfi_fail(ei, KSF_EMSGSIZE,
                         "reply value for %s is %zu bytes, larger than message.max.bytes "
                         "(%zu); send less or raise message.max.bytes",
                         ctx->topic, *len, max);
    }
    return e;
}

/* The final reply: the value, the user's key and headers, then the protocol's. */
static void
send_final(ksf_ctx *ctx, const json_t *reply)
{
    ksf_errinfo ei = {0};
    char *value = NULL;
    size_t len = 0;
    if (!claim_end(ctx)) {
        return;
    }
    ksf_err e = encode_reply(ctx, reply, &value, &len, &ei);
    if (e) {
        ksfi_log(&ctx->srv->log, KSF_LOG_ERROR, "server", "%s", ei.text);
        send_error_text(ctx, e == KSF_EMSGSIZE ? ei.text : KSFI_INTERNAL_SERVER_ERROR);
        return;
    }
    ksfi_header h[KSFI_CTX_EXTRA_MAX + KSFI_PROTO_HEADERS_MAX + KSFI_TRACE_HEADERS_MAX];
    if (ctx->nextra) { /* extra is NULL when empty: memcpy's source must not be */
        memcpy(h, ctx->extra, ctx->nextra * sizeof *h);
    }
    size_t n = ctx->nextra;
    n += ksfi_reply_headers(ctx->meta.correlation_id, ctx->meta.correlation_id_len, NULL,
                            0, true, h + n);
    n += ksfi_scope_reply_headers(&ctx->scope, h + n);
    produce(ctx, value, len, ctx->key, ctx->key_len, h, n, NULL);
    ksfi_free(value);
}

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
    if (spring_binary_id(ctx->meta.correlation_id, ctx->meta.correlation_id_len) &&
        ksfi_correlation_id_text(ctx->meta.correlation_id, ctx->meta.correlation_id_len,
                                 uuid_text)) {
        /* The reply still echoes the raw bytes (ctx->meta); this is for logs and
         * ksf_ctx_correlation_id, which promise text. */
        if (!(ctx->correlation_id = ksfi_strdup(uuid_text))) {
            return KSF_ENOMEM;
        }
    } else if (ctx->meta.correlation_id_len > 0 &&
               !(ctx->correlation_id = ksfi_memdup(ctx->meta.correlation_id,
                                                   ctx->meta.correlation_id_len))) {
        return KSF_ENOMEM;
    }
    if (ctx->meta.reply_topic_len > 0 &&
        !(ctx->reply_topic =
              ksfi_strndup(ctx->meta.reply_topic, ctx->meta.reply_topic_len))) {
        return KSF_ENOMEM;
    }
    return KSF_OK;
}

/*
 * The reply-topic policy (docs/security.md): a request naming a topic the server must
 * not write to is not handled at all (its handler's effects would be for an answer
 * nobody may get), gets no reply (nothing can be sent to that topic safely), and is
 * counted, logged (rate-limited) and committed past.
 */
static bool
reply_refused(ksf_ctx *ctx)
{
    ksf_server *srv = ctx->srv;
    const char *why =
        ksfi_reply_policy_check(&srv->reply_policy, ctx->topic, ctx->reply_topic);
    if (!why) {
        return false;
    }
    atomic_fetch_add(&srv->counters.reply_refused, 1);
    char pa[16], off[24];
    ksf_log_field f[] = {{"topic", ctx->topic},
                         {"partition", KSFI_LOG_NUM(pa, ctx->msg->partition)},
                         {"offset", KSFI_LOG_NUM(off, ctx->msg->offset)},
                         {"reply_topic", ctx->reply_topic}};
    ksfi_logkv_limited(&srv->log, &srv->log_limit, "reply topic refused", KSF_LOG_WARNING,
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
shed(ksf_ctx *ctx)
{
    int64_t deadline = ctx->scope.deadline_ms;
    int64_t run_ms = (atomic_load(&ctx->handler->run_us) + 999) / 1000;
    if (!deadline || run_ms <= 0) {
        return false;
    }
    int64_t left = deadline - ksfi_wall_ms();
    if (left >= run_ms) {
        return false;
    }
    ksf_server *srv = ctx->srv;
    atomic_fetch_add(&srv->counters.shed, 1);
    char text[KSF_ERRINFO_TEXT_SIZE];
    snprintf(
        text, sizeof text,
        "%s: request for '%s' shed: it had %lld ms left before its deadline and the "
        "handler takes about %lld ms, so it was not run (the server is behind: retry "
        "later or elsewhere)",
        KSFI_OVERLOADED, ctx->topic, (long long)(left > 0 ? left : 0), (long long)run_ms);
    uint64_t held = 0;
    if (ksfi_ratelimit_take(&srv->shed_log, 1000, &held)) {
        ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
                 "%s[%d]@%lld: %s; %llu more shed since the last line", ctx->topic,
                 (int)ctx->msg->partition, (long long)ctx->msg->offset, text,
                 (unsigned long long)held);
    }
    if (claim_end(ctx)) {
        send_error_text(ctx, text);
    }
    return true;
}

/*
 * Read the headers and find the handler. Returns false when the message needs nothing
 * more: malformed headers (logged, counted) or no handler (answered or logged).
 */
static bool
prepare(ksf_ctx *ctx)
{
    ksf_server *srv = ctx->srv;
    ksf_errinfo ei = {0};
    const rd_kafka_message_t *m = ctx->msg;
    if (ksfi_kafka_read_headers(m, &ctx->hdrs, &ctx->nhdrs) ||
        ksfi_parse_request_headers(ctx->hdrs, ctx->nhdrs, &ctx->meta, &ei) ||
        copy_meta(ctx)) {
        char pa[16], off[24];
        ksf_log_field f[] = {{"topic", ctx->topic},
                             {"partition", KSFI_LOG_NUM(pa, m->partition)},
                             {"offset", KSFI_LOG_NUM(off, m->offset)},
                             {"error", ei.code ? ei.text : "out of memory reading them"}};
        ksfi_logkv_limited(&srv->log, &srv->log_limit, "malformed request headers",
                           KSF_LOG_ERROR, "server", f, 4,
                           "malformed request headers; skipping the message (no reply "
                           "is possible)");
        atomic_fetch_add(&srv->counters.malformed, 1);
        return false;
    }
    ksfi_scope_init(&ctx->scope, ctx->hdrs, ctx->nhdrs, &srv->log, ctx->topic);
    ctx->handler = ksfi_server_find(srv, ctx->topic);
    ctx->is_event = !ctx->meta.is_request ||
                    (ctx->handler && ctx->handler->kind == KSF_HANDLER_EVENT);
    if (ksfi_ctx_expired(ctx)) {
        return false; /* counted and logged; nobody waits for the answer any more */
    }
    if (!ctx->is_event && ctx->reply_topic && reply_refused(ctx)) {
        return false;
    }
    if (!ctx->is_event && ctx->handler && shed(ctx)) {
        return false; /* answered with the overload error */
    }
    atomic_fetch_add(ctx->is_event ? &srv->counters.events : &srv->counters.requests, 1);
    if (ctx->handler) {
        ksfi_pmetrics_inc(ctx->handler->metrics,
                          ctx->is_event ? KSFI_M_EVENTS : KSFI_M_REQUESTS);
        return true;
    }
    atomic_fetch_add(&srv->counters.no_handler, 1);
    if (ctx->is_event) {
        ksfi_logkv_limited(&srv->log, &srv->log_limit, "no handler", KSF_LOG_WARNING,
                           "server", NULL, 0, "%s Event pattern: %s",
                           KSFI_NO_EVENT_HANDLER, ctx->topic);
        return false;
    }
    /* NestJS sends the bare text, without is-disposed, straight from handleMessage. */
    ksfi_logkv_limited(&srv->log, &srv->log_limit, "no handler", KSF_LOG_WARNING,
                       "server", NULL, 0, "%s Message pattern: %s",
                       KSFI_NO_MESSAGE_HANDLER, ctx->topic);
    json_t *text = json_string(KSFI_NO_MESSAGE_HANDLER);
    if (text && claim_end(ctx)) {
        send_error(ctx, text, false);
    }
    json_decref(text);
    return false;
}

/* The debug line of one handled message (KSF_LOG=debug). */
static void
log_handled(const ksf_ctx *ctx, ksf_err status)
{
    char part[16], off[24], us[24];
    ksf_log_field f[] = {
        {"topic", ctx->topic},
        {"partition", KSFI_LOG_NUM(part, ctx->msg->partition)},
        {"offset", KSFI_LOG_NUM(off, ctx->msg->offset)},
        {"correlation_id", ctx->correlation_id ? ctx->correlation_id : ""},
        {"status", ksf_strerror(status)},
        {"handler_us", KSFI_LOG_NUM(us, ksfi_metrics_now_us() - ctx->started_us)}};
    ksfi_logkv(&ctx->srv->log, KSF_LOG_DEBUG, "server", f, 6, "%s handled",
               ctx->is_event ? "event" : "request");
}

/* Act on a handler's result (returned or finished); steals @p reply. */
static ksf_err
finish_result(ksf_ctx *ctx, ksf_err status, json_t *reply)
{
    ksf_server *srv = ctx->srv;
    pthread_mutex_lock(&ctx->lock);
    bool already = ctx->phase == KSFI_CTX_FINISHED;
    ctx->phase = KSFI_CTX_FINISHED;
    bool ended = ctx->ended;
    bool late = ctx->budget_fired;
    pthread_mutex_unlock(&ctx->lock);
    if (already) {
        json_decref(reply);
        return KSF_ESTATE;
    }
    json_t *error = NULL; /* pipeline: the afters see, and may change, the outcome */
    if (ctx->pl.chain || status == KSF_SKIP) {
        ksfi_pipeline_after(ctx, &status, &reply, &error);
    }
    if (!ctx->is_event) {
        /* What shedding expects the next run to take: a moving average (1/4 weight
         * for the newest run) that follows a slowing handler within a few runs. */
        int64_t took = (int64_t)(ksfi_metrics_now_us() - ctx->started_us);
        int64_t avg = atomic_load(&ctx->handler->run_us);
        atomic_store(&ctx->handler->run_us, avg ? avg + (took - avg) / 4 : took);
    }
    if (ctx->handler->metrics) {
        /* Deferred handlers included: their latency ends at ksf_ctx_finish. */
        ksfi_hist_observe(&ctx->handler->metrics->latency,
                          ksfi_metrics_now_us() - ctx->started_us);
    }
    if (ksfi_log_enabled(&srv->log, KSF_LOG_DEBUG)) {
        log_handled(ctx, status);
    }
    if (late) {
        /* The caller already has the budget error: one answer per request. */
        atomic_fetch_add(&srv->counters.late_discarded, 1);
        ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
                 "handler for '%s' (%s[%d]@%lld) finished after its time budget of %d "
                 "ms; its result (%s) is discarded",
                 ctx->topic, ctx->topic, (int)ctx->msg->partition,
                 (long long)ctx->msg->offset, ctx->budget_ms, ksf_strerror(status));
    } else if (ctx->is_event && status != KSF_OK) {
        json_decref(reply);
        ksfi_retry_event_failed(ctx, status); /* takes the handler's reference */
        return KSF_OK;
    } else if (ctx->is_event) {
        /* A handled event: nothing to send (failures went to retry.c above). */
    } else if (!ended && error) { /* pipeline: the error the afters left */
        if (claim_end(ctx)) {
            send_error(ctx, error, true);
        }
    } else if (!ended && status == KSF_OK) {
        send_final(ctx, reply);
    } else if (!ended && claim_end(ctx)) {
        ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
                 "handler for %s[%d]@%lld returned \"%s\" without a reply error; sending "
                 "\"%s\"",
                 ctx->topic, (int)ctx->msg->partition, (long long)ctx->msg->offset,
                 ksf_strerror(status), KSFI_INTERNAL_SERVER_ERROR);
        send_error_text(ctx, KSFI_INTERNAL_SERVER_ERROR);
    }
    json_decref(reply);
    json_decref(error);
    /* The pattern's slot bounds handlers at work, not replies on their way: holding it
     * until the broker acknowledged capped a pattern at `limit` replies per produce
     * round trip (about 3,500 requests/s on the embedded broker, whatever the load). */
    ksfi_dispatch_handler_done(ctx);
    ksfi_ctx_release(ctx); /* the handler's reference */
    return KSF_OK;
}

/* Decode the value, run the handler and act on its result (or deferral). */
static void
invoke(ksf_ctx *ctx)
{
    const rd_kafka_message_t *m = ctx->msg;
    json_t *data = NULL, *reply = NULL;
    ctx->started_us = ksfi_metrics_now_us();
    ksf_err status = ksfi_decode_value(m->payload, m->len, &data);
    if (status == KSF_OK) {
        ksfi_scope_enter(&ctx->scope);  /* sends from the handler continue its trace */
        ksfi_pipeline_begin(ctx, data); /* pipeline: befores, then the handler */
        status = ctx->pl.chain ? ksfi_pipeline_invoke(ctx, &data, &reply)
                               : ctx->handler->fn(ctx, data, &reply);
        ksfi_pipeline_end_call(ctx);
        ksfi_scope_enter(NULL);
    }
    json_decref(data);
    pthread_mutex_lock(&ctx->lock);
    bool deferred = ctx->deferred, early = ctx->early;
    ksf_err early_status = ctx->early_status;
    json_t *early_reply = ctx->early_reply;
    ctx->early_reply = NULL; /* `early` stays set: a second finish is refused */
    pthread_mutex_unlock(&ctx->lock);
    if (early) {
        /* ksf_ctx_finish came before the handler returned: its result is the answer. */
        if (status != KSF_DEFERRED) {
            ksfi_log(&ctx->srv->log, KSF_LOG_WARNING, "server",
                     "handler for %s called ksf_ctx_finish and then returned \"%s\" "
                     "instead of ksf_ctx_defer(ctx); the finish's result is used",
                     ctx->topic, ksf_strerror(status));
        }
        json_decref(reply);
        finish_result(ctx, early_status, early_reply);
        return;
    }
    if (status == KSF_DEFERRED) {
        if (deferred) {
            json_decref(reply); /* the final reply comes with ksf_ctx_finish */
            /* The handler is off the worker: its pattern's slot goes to the next
             * message and the deferral counts against server.deferred.max instead. */
            ksfi_dispatch_parked(ctx);
            return;
        }
        ksfi_log(&ctx->srv->log, KSF_LOG_ERROR, "server",
                 "handler for %s returned KSF_DEFERRED without calling ksf_ctx_defer",
                 ctx->topic);
        status = KSF_ESTATE;
    }
    finish_result(ctx, status, reply);
}

void
ksfi_ctx_run(ksf_ctx *ctx)
{
    if (!prepare(ctx)) {
        pthread_mutex_lock(&ctx->lock);
        ctx->phase = KSFI_CTX_FINISHED;
        pthread_mutex_unlock(&ctx->lock);
        ksfi_ctx_release(ctx); /* the handler's */
        ksfi_ctx_release(ctx); /* the worker's: ctx may be gone now */
        return;
    }
    if (!ctx->is_event) {
        ksfi_dispatch_arm_budget(ctx);
    }
    invoke(ctx);
    ksfi_ctx_release(ctx);
}

void
ksfi_ctx_rerun(ksf_ctx *ctx)
{
    atomic_fetch_add(&ctx->pending, 1); /* the worker's, as in ksfi_ctx_run */
    pthread_mutex_lock(&ctx->lock);
    ctx->phase = KSFI_CTX_RUNNING;
    ctx->deferred = false;
    ctx->early = false;
    ksfi_free(ctx->error_text);
    ctx->error_text = NULL;
    ksfi_pipeline_ctx_clear(&ctx->pl); /* pipeline: the chain runs again */
    pthread_mutex_unlock(&ctx->lock);
    invoke(ctx);
    ksfi_ctx_release(ctx);
}

/* Claim the final reply for the budget error; false when the reply already ended. */
static bool
claim_budget(ksf_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    bool first = !ctx->ended && ctx->phase != KSFI_CTX_FINISHED;
    if (first) {
        ctx->ended = true;
        ctx->budget_fired = true;
    }
    pthread_mutex_unlock(&ctx->lock);
    return first;
}

void
ksfi_ctx_budget_expired(ksf_ctx *ctx)
{
    ksf_server *srv = ctx->srv;
    if (ctx->is_event || !claim_budget(ctx)) {
        return;
    }
    char text[KSF_ERRINFO_TEXT_SIZE];
    snprintf(text, sizeof text, "handler for '%s' exceeded its time budget of %d ms",
             ctx->topic, ctx->budget_ms);
    atomic_fetch_add(&srv->counters.budget_exceeded, 1);
    ksfi_log(&srv->log, KSF_LOG_WARNING, "server",
             "%s[%d]@%lld: %s; answering with an error now (the handler keeps its "
             "worker until it returns)",
             ctx->topic, (int)ctx->msg->partition, (long long)ctx->msg->offset, text);
    send_error_text(ctx, text);
}

ksf_err
ksf_ctx_defer(ksf_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    /* After an early finish the result is already in: nothing is left to defer, and
     * a second finish must still be refused. */
    if (ctx->phase == KSFI_CTX_RUNNING && !ctx->early) {
        ctx->phase = KSFI_CTX_DEFERRED;
        ctx->deferred = true;
    }
    pthread_mutex_unlock(&ctx->lock);
    return KSF_DEFERRED;
}

ksf_err
ksf_ctx_finish(ksf_ctx *ctx, ksf_err status, json_t *reply)
{
    pthread_mutex_lock(&ctx->lock);
    bool deferred = ctx->phase == KSFI_CTX_DEFERRED;
    /* Before the handler returned (and maybe before it called ksf_ctx_defer: the
     * thread it handed the work to can be quicker): keep the result for invoke(),
     * which acts on it when the handler returns. */
    bool early = ctx->phase == KSFI_CTX_RUNNING && !ctx->early;
    if (early) {
        ctx->early = true;
        ctx->early_status = status;
        ctx->early_reply = reply;
    }
    pthread_mutex_unlock(&ctx->lock);
    if (early) {
        return KSF_OK;
    }
    if (!deferred) {
        json_decref(reply);
        return KSF_ESTATE;
    }
    return finish_result(ctx, status, reply);
}

ksf_err
ksf_ctx_reply_error_json(ksf_ctx *ctx, const json_t *error)
{
    if (ctx->is_event) {
        char *text = ksfi_encode_error(error, NULL);
        ksfi_log(&ctx->srv->log, KSF_LOG_WARNING, "server",
                 "event handler for %s[%d]@%lld reported an error: %s", ctx->topic,
                 (int)ctx->msg->partition, (long long)ctx->msg->offset,
                 text ? text : "(out of memory)");
        pthread_mutex_lock(&ctx->lock); /* kept for the dead-letter header */
        ksfi_free(ctx->error_text);
        ctx->error_text = text;
        pthread_mutex_unlock(&ctx->lock);
        return KSF_EREMOTE;
    }
    json_t *shape = ksfi_error_from_json(error);
    if (!shape) {
        return KSF_ENOMEM;
    }
    ksf_err kept;
    if (ksfi_pipeline_capture(ctx, shape, &kept)) { /* pipeline: for the afters */
        json_decref(shape);
        return kept;
    }
    if (!claim_end(ctx)) {
        json_decref(shape);
        return KSF_ESTATE;
    }
    send_error(ctx, shape, true);
    json_decref(shape);
    return KSF_EREMOTE;
}

ksf_err
ksf_ctx_reply_error(ksf_ctx *ctx, const char *message)
{
    json_t *text = json_string(message ? message : "");
    if (!text) {
        return KSF_ENOMEM;
    }
    ksf_err e = ksf_ctx_reply_error_json(ctx, text);
    json_decref(text);
    return e;
}

ksf_err
ksf_ctx_stream(ksf_ctx *ctx, const json_t *value, ksf_errinfo *ei)
{
    pthread_mutex_lock(&ctx->lock);
    bool open = !ctx->ended && ctx->phase != KSFI_CTX_FINISHED && !ctx->is_event;
    pthread_mutex_unlock(&ctx->lock);
    if (!open) {
        return ksfi_fail(ei, KSF_ESTATE, "%s: %s", ctx->topic,
                         ctx->is_event ? "an event has no reply stream"
                                       : "the reply has already ended");
    }
    char *out = NULL;
    size_t len = 0;
    ksf_err e = ksfi_encode_value(value, &out, &len, ei);
    if (e) {
        return e;
    }
    if (len > ctx->srv->cfg->message_max_bytes) {
        ksfi_free(out);
        return ksfi_fail(
            ei, KSF_EMSGSIZE,
            "stream value for %s is %zu bytes, larger than message.max.bytes "
            "(%zu)",
            ctx->topic, len, ctx->srv->cfg->message_max_bytes);
    }
    ksfi_header h[KSFI_PROTO_HEADERS_MAX + KSFI_TRACE_HEADERS_MAX];
    size_t n = ksfi_reply_headers(ctx->meta.correlation_id, ctx->meta.correlation_id_len,
                                  NULL, 0, false, h);
    n += ksfi_scope_reply_headers(&ctx->scope, h + n);
    e = produce(ctx, out, len, NULL, 0, h, n, ei);
    ksfi_free(out);
    if (!e && ctx->pl.chain) {
        ksfi_pipeline_streamed(ctx); /* pipeline: counted for the outcome */
    }
    return e;
}

/* Replace *slot with a copy of @p bytes unless the reply has ended. */
static ksf_err
set_bytes(ksf_ctx *ctx, void **slot, size_t *slot_len, const void *bytes, size_t len)
{
    void *copy = ksfi_memdup(bytes ? bytes : "", bytes ? len : 0);
    if (!copy) {
        return KSF_ENOMEM;
    }
    pthread_mutex_lock(&ctx->lock);
    bool ended = ctx->ended;
    if (!ended) {
        ksfi_free(*slot);
        *slot = copy;
        *slot_len = bytes ? len : 0;
    }
    pthread_mutex_unlock(&ctx->lock);
    if (ended) {
        ksfi_free(copy);
        return KSF_ESTATE;
    }
    return KSF_OK;
}

ksf_err
ksf_ctx_set_reply_raw(ksf_ctx *ctx, const void *bytes, size_t len)
{
    ksf_err e = set_bytes(ctx, &ctx->raw, &ctx->raw_len, bytes, len);
    if (!e) {
        pthread_mutex_lock(&ctx->lock);
        ctx->has_raw = true;
        pthread_mutex_unlock(&ctx->lock);
    }
    return e;
}

ksf_err
ksf_ctx_set_reply_key(ksf_ctx *ctx, const void *key, size_t len)
{
    return set_bytes(ctx, &ctx->key, &ctx->key_len, key, len);
}

ksf_err
ksf_ctx_add_reply_header(ksf_ctx *ctx, const char *name, const void *value, size_t len)
{
    if (!name || !*name ||
        !strncmp(name, KSFI_HDR_RESERVED_PREFIX, strlen(KSFI_HDR_RESERVED_PREFIX))) {
        return KSF_EINVAL; /* kafka_* carry the protocol; a user copy would confuse peers
                            */
    }
    char *n = ksfi_strdup(name);
    void *v = value ? ksfi_memdup(value, len) : NULL;
    if (!n || (value && !v)) {
        ksfi_free(n);
        ksfi_free(v);
        return KSF_ENOMEM;
    }
    ksf_err e = KSF_OK;
    pthread_mutex_lock(&ctx->lock);
    if (ctx->ended) {
        e = KSF_ESTATE;
    } else if (ctx->nextra >= KSFI_CTX_EXTRA_MAX) {
        e = KSF_EINVAL;
    } else {
        ksfi_header *grown = ksfi_realloc(ctx->extra, (ctx->nextra + 1) * sizeof *grown);
        if (!grown) {
            e = KSF_ENOMEM;
        } else {
            ctx->extra = grown;
            ctx->extra[ctx->nextra++] = (ksfi_header){n, v, value ? len : 0};
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    if (e) {
        ksfi_free(n);
        ksfi_free(v);
    }
    return e;
}

const char *
ksf_ctx_topic(const ksf_ctx *ctx)
{
    return ctx->topic;
}

int32_t
ksf_ctx_partition(const ksf_ctx *ctx)
{
    return ctx->msg->partition;
}

int64_t
ksf_ctx_offset(const ksf_ctx *ctx)
{
    return ctx->msg->offset;
}

int64_t
ksf_ctx_timestamp_ms(const ksf_ctx *ctx)
{
    rd_kafka_timestamp_type_t type;
    int64_t ts = rd_kafka_message_timestamp(ctx->msg, &type);
    return type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts;
}

const void *
ksf_ctx_key(const ksf_ctx *ctx, size_t *len)
{
    if (len) {
        *len = ctx->msg->key ? ctx->msg->key_len : 0;
    }
    return ctx->msg->key;
}

const void *
ksf_ctx_value(const ksf_ctx *ctx, size_t *len)
{
    if (len) {
        *len = ctx->msg->payload ? ctx->msg->len : 0;
    }
    return ctx->msg->payload;
}

size_t
ksf_ctx_header_count(const ksf_ctx *ctx)
{
    return ctx->nhdrs;
}

bool
ksf_ctx_header_at(const ksf_ctx *ctx, size_t idx, const char **name, const void **value,
                  size_t *len)
{
    if (idx >= ctx->nhdrs) {
        return false;
    }
    if (name) {
        *name = ctx->hdrs[idx].name;
    }
    if (value) {
        *value = ctx->hdrs[idx].value;
    }
    if (len) {
        *len = ctx->hdrs[idx].len;
    }
    return true;
}

const void *
ksf_ctx_header(const ksf_ctx *ctx, const char *name, size_t *len)
{
    for (size_t i = ctx->nhdrs; i > 0; i--) {
        if (name && !strcmp(ctx->hdrs[i - 1].name, name)) {
            if (len) {
                *len = ctx->hdrs[i - 1].len;
            }
            return ctx->hdrs[i - 1].value;
        }
    }
    return NULL;
}

const char *
ksf_ctx_correlation_id(const ksf_ctx *ctx)
{
    return ctx->is_event ? NULL : ctx->correlation_id;
}

const char *
ksf_ctx_reply_topic(const ksf_ctx *ctx)
{
    return ctx->is_event ? NULL : ctx->reply_topic;
}

int32_t
ksf_ctx_reply_partition(const ksf_ctx *ctx)
{
    return ctx->meta.reply_partition;
}

bool
ksf_ctx_is_event(const ksf_ctx *ctx)
{
    return ctx->is_event;
}

void *
ksf_ctx_user(const ksf_ctx *ctx)
{
    return ctx->handler ? ctx->handler->user : NULL;
}

int64_t
ksf_ctx_deadline_ms(const ksf_ctx *ctx)
{
    return ctx->scope.deadline_ms;
}

int64_t
ksf_ctx_remaining_ms(const ksf_ctx *ctx)
{
    return ctx->scope.deadline_ms ? ctx->scope.deadline_ms - ksfi_wall_ms() : INT64_MAX;
}

const char *
ksf_ctx_traceparent(const ksf_ctx *ctx)
{
    return ctx->scope.traceparent;
}

const char *
ksf_ctx_tracestate(const ksf_ctx *ctx)
{
    return ctx->scope.tracestate;
}

const char *
ksf_ctx_trace_id(const ksf_ctx *ctx)
{
    return ctx->scope.trace_id;
}

const char *
ksf_ctx_span_id(const ksf_ctx *ctx)
{
    return ctx->scope.span_id;
}

const char *
ksf_ctx_parent_span_id(const ksf_ctx *ctx)
{
    return ctx->scope.has_parent ? ctx->scope.parent_span_id : NULL;
}
