/*
 * The handler context: accessors and reply building. The message's life around it is
 * server/message.c's; replies leave through the owner's ops (ctx.h).
 */
#include "server/ctx.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "codec/deadline.h"
#include "codec/wire.h"

#include <stdint.h>
#include <string.h>

/* Reply headers beyond the protocol's: the user's extras, capped to keep it simple. */
#define KSFI_CTX_EXTRA_MAX 64

void
ksfi_ctx_init(ksf_ctx *ctx, const ksfi_ctx_ops *ops, const ksfi_logger *log,
              size_t max_bytes)
{
    ctx->ops = ops;
    ctx->log = log;
    ctx->max_bytes = max_bytes;
    ctx->meta.reply_partition = -1;
    ctx->timestamp_ms = -1;
    pthread_mutex_init(&ctx->lock, NULL);
}

void
ksfi_ctx_reset(ksf_ctx *ctx)
{
    for (size_t i = 0; i < ctx->nextra; i++) {
        ksfi_free((void *)ctx->extra[i].name);
        ksfi_free((void *)ctx->extra[i].value);
    }
    ksfi_free(ctx->extra);
    ksfi_scope_clear(&ctx->scope);
    ksfi_free(ctx->reply_key);
    ksfi_free(ctx->error_text);
    json_decref(ctx->early_reply);
    pthread_mutex_destroy(&ctx->lock);
}

bool
ksfi_ctx_settled(ksf_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    bool settled = !ctx->is_event && ctx->ended && ctx->phase == KSFI_CTX_FINISHED;
    pthread_mutex_unlock(&ctx->lock);
    return settled;
}

void
ksfi_ctx_forget_message(ksf_ctx *ctx)
{
    ctx->key = ctx->value = NULL;
    ctx->key_len = ctx->value_len = 0;
    ctx->nhdrs = 0; /* the array itself is kept for the record's next message */
    ctx->meta.correlation_id = NULL;
    ctx->meta.correlation_id_len = 0;
    ctx->meta.reply_topic = NULL;
    ctx->meta.reply_topic_len = 0;
    ksfi_scope_forget_headers(&ctx->scope);
}

ksf_err
ksfi_ctx_set_text(ksf_ctx *ctx, const char *id, size_t id_len, const char *topic,
                  size_t topic_len)
{
    size_t need = id_len + 1 + topic_len + 1;
    if (need > ctx->text_cap) {
        /* Grown to the high-water mark and kept: no allocation once the pool's
         * records have seen the usual id and topic lengths. */
        char *grown = ksfi_malloc(need < 128 ? 128 : need);
        if (!grown) {
            return KSF_ENOMEM;
        }
        ksfi_free(ctx->text);
        ctx->text = grown;
        ctx->text_cap = need < 128 ? 128 : need;
    }
    char *p = ctx->text;
    ctx->correlation_id = NULL;
    ctx->reply_topic = NULL;
    if (id_len > 0) {
        memcpy(p, id, id_len);
        p[id_len] = '\0';
        ctx->correlation_id = p;
        p += id_len + 1;
    }
    if (topic_len > 0) {
        memcpy(p, topic, topic_len);
        p[topic_len] = '\0';
        ctx->reply_topic = p;
    }
    return KSF_OK;
}

ksf_err
ksfi_ctx_decode(ksf_ctx *ctx)
{
    if (!ctx->lazy) {
        return KSF_OK;
    }
    json_t *v = NULL;
    if (ksfi_decode_value(ctx->value, ctx->value_len, &v)) {
        ksfi_log(ctx->log, KSF_LOG_ERROR, "server",
                 "out of memory decoding the value of %s[%d]@%lld for its raw handler",
                 ctx->topic, (int)ctx->partition, (long long)ctx->offset);
        return KSF_ENOMEM;
    }
    ctx->decoded = v;
    ctx->data = v;
    ctx->lazy = false;
    return KSF_OK;
}

void
ksfi_ctx_drop_decoded(ksf_ctx *ctx)
{
    ctx->data = NULL;
    ctx->lazy = false;
    json_decref(ctx->decoded);
    ctx->decoded = NULL;
}

bool
ksfi_ctx_claim_end(ksf_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    bool first = !ctx->ended;
    ctx->ended = true;
    pthread_mutex_unlock(&ctx->lock);
    return first;
}

bool
ksfi_ctx_claim_budget(ksf_ctx *ctx)
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

ksfi_ctx_outcome
ksfi_ctx_returned(ksf_ctx *ctx, ksf_err status, bool claim)
{
    pthread_mutex_lock(&ctx->lock);
    ksfi_ctx_outcome o = {ctx->deferred, ctx->early, ctx->early_status, ctx->early_reply};
    ctx->early_reply = NULL; /* `early` stays set: a second finish is refused */
    if (!o.early && status != KSF_DEFERRED && ctx->phase != KSFI_CTX_FINISHED) {
        o.finished = true;
        ctx->phase = KSFI_CTX_FINISHED;
        o.ended = ctx->ended;
        o.late = ctx->budget_fired;
        if (claim && !ctx->ended) {
            ctx->ended = true;
            o.claimed = true;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    return o;
}

bool
ksfi_ctx_mark_finished(ksf_ctx *ctx, bool *ended, bool *late)
{
    pthread_mutex_lock(&ctx->lock);
    bool already = ctx->phase == KSFI_CTX_FINISHED;
    ctx->phase = KSFI_CTX_FINISHED;
    *ended = ctx->ended;
    *late = ctx->budget_fired;
    pthread_mutex_unlock(&ctx->lock);
    return !already;
}

void
ksfi_ctx_rearm(ksf_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    ctx->phase = KSFI_CTX_RUNNING;
    ctx->deferred = false;
    ctx->early = false;
    ksfi_free(ctx->error_text);
    ctx->error_text = NULL;
    pthread_mutex_unlock(&ctx->lock);
}

char *
ksfi_ctx_error_text(ksf_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    char *t = ctx->error_text ? ksfi_strdup(ctx->error_text) : NULL;
    pthread_mutex_unlock(&ctx->lock);
    return t;
}

void
ksfi_ctx_note_error(ksf_ctx *ctx, ksf_err status)
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

/* Produce one reply message through the owner (which logs and counts failures). */
static ksf_err
produce(ksf_ctx *ctx, const void *value, size_t len, const void *key, size_t key_len,
        const ksfi_header *hdrs, size_t n, bool error, ksf_errinfo *ei)
{
    ksfi_kafka_out m = {
        .topic = ctx->reply_topic,
        .partition = ctx->meta.reply_partition < 0 ? KSFI_KAFKA_ANY_PARTITION
                                                   : ctx->meta.reply_partition,
        .value = value,
        .len = len,
        .key = key,
        .key_len = key_len,
        .hdrs = hdrs,
        .nhdrs = n,
        .what = "a reply",
    };
    return ctx->ops->reply(ctx, &m, error, ei);
}

ksf_err
ksfi_ctx_send_error(ksf_ctx *ctx, const json_t *error, bool disposed)
{
    size_t len = 0;
    char *text = ksfi_encode_error(error, &len);
    ksfi_header h[KSFI_PROTO_HEADERS_MAX + KSFI_TRACE_HEADERS_MAX];
    if (!text) {
        ksfi_log(ctx->log, KSF_LOG_ERROR, "server", "out of memory encoding an error");
        return KSF_ENOMEM;
    }
    size_t n = ksfi_reply_headers(ctx->meta.correlation_id, ctx->meta.correlation_id_len,
                                  text, len, disposed, h);
    n += ksfi_scope_reply_headers(&ctx->scope, h + n);
    ksf_err err = produce(ctx, NULL, 0, NULL, 0, h, n, true, NULL);
    ksfi_free(text);
    return err;
}

void
ksfi_ctx_send_error_text(ksf_ctx *ctx, const char *text)
{
    json_t *shape = ksfi_error_shape(text);
    if (shape) {
        ksfi_ctx_send_error(ctx, shape, true);
    } else {
        ksfi_log(ctx->log, KSF_LOG_ERROR, "server", "out of memory building an error");
    }
    json_decref(shape);
}

/* Encode a reply value (raw bytes win over JSON) into the ctx's kept buffer, or
 * borrow it (raw bytes, a string's bytes); checks message.max.bytes. The caller
 * claimed the end: nothing else writes the buffer or the raw bytes any more. */
static ksf_err
encode_reply(ksf_ctx *ctx, const json_t *v, const void **out, size_t *len,
             ksf_errinfo *ei)
{
    ksf_err e = KSF_OK;
    if (ctx->has_raw) {
        *out = ctx->raw_len ? ctx->enc : "";
        *len = ctx->raw_len;
    } else {
        e = ksfi_encode_value_in(v, &ctx->enc, &ctx->enc_cap, out, len, ei);
    }
    size_t max = ctx->max_bytes;
    if (!e && *len > max) {
        *out = NULL;
        return ksfi_fail(ei, KSF_EMSGSIZE,
                         "reply value for %s is %zu bytes, larger than message.max.bytes "
                         "(%zu); send less or raise message.max.bytes",
                         ctx->topic, *len, max);
    }
    return e;
}

void
ksfi_ctx_send_final(ksf_ctx *ctx, const json_t *reply, bool claimed)
{
    ksf_errinfo ei;
    ksfi_errinfo_clear(&ei);
    const void *value = NULL;
    size_t len = 0;
    if (!claimed && !ksfi_ctx_claim_end(ctx)) {
        return;
    }
    ksf_err e = encode_reply(ctx, reply, &value, &len, &ei);
    if (e) {
        ksfi_log(ctx->log, KSF_LOG_ERROR, "server", "%s", ei.text);
        ksfi_ctx_send_error_text(ctx, e == KSF_EMSGSIZE ? ei.text
                                                        : KSFI_INTERNAL_SERVER_ERROR);
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
    /* The value is copied by the produce (librdkafka's F_COPY): the buffer is free
     * again when it returns. */
    produce(ctx, value, len, ctx->reply_key, ctx->reply_key_len, h, n, false, NULL);
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
    return ctx->ops->finished(ctx, status, reply);
}

ksf_err
ksf_ctx_reply_error_json(ksf_ctx *ctx, const json_t *error)
{
    if (ctx->is_event) {
        char *text = ksfi_encode_error(error, NULL);
        ksfi_log(ctx->log, KSF_LOG_WARNING, "server",
                 "event handler for %s[%d]@%lld reported an error: %s", ctx->topic,
                 (int)ctx->partition, (long long)ctx->offset,
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
    if (ctx->ops->keep_error && ctx->ops->keep_error(ctx, shape, &kept)) {
        json_decref(shape); /* pipeline: kept for the afters (or refused) */
        return kept;
    }
    if (!ksfi_ctx_claim_end(ctx)) {
        json_decref(shape);
        return KSF_ESTATE;
    }
    ksfi_ctx_send_error(ctx, shape, true);
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
    if (len > ctx->max_bytes) {
        ksfi_free(out);
        return ksfi_fail(
            ei, KSF_EMSGSIZE,
            "stream value for %s is %zu bytes, larger than message.max.bytes "
            "(%zu)",
            ctx->topic, len, ctx->max_bytes);
    }
    ksfi_header h[KSFI_PROTO_HEADERS_MAX + KSFI_TRACE_HEADERS_MAX];
    size_t n = ksfi_reply_headers(ctx->meta.correlation_id, ctx->meta.correlation_id_len,
                                  NULL, 0, false, h);
    n += ksfi_scope_reply_headers(&ctx->scope, h + n);
    e = produce(ctx, out, len, NULL, 0, h, n, false, ei);
    ksfi_free(out);
    if (!e) {
        atomic_fetch_add(&ctx->streamed, 1); /* pipeline: for the afters' outcome */
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
    /* Copied into the encoding buffer the pooled record keeps (`enc`): a raw reply is
     * the reply's encoding, so nothing else writes that buffer for this message, and
     * an echo or forwarding handler then allocates nothing per request. Under the lock,
     * as the end's claim is: once ended, the bytes are being produced. */
    size_t n = bytes ? len : 0;
    ksf_err e = KSF_OK;
    pthread_mutex_lock(&ctx->lock);
    if (ctx->ended) {
        e = KSF_ESTATE;
    } else if (n > ctx->enc_cap) {
        char *grown = ksfi_malloc(n);
        if (grown) {
            ksfi_free(ctx->enc);
            ctx->enc = grown;
            ctx->enc_cap = n;
        } else {
            e = KSF_ENOMEM;
        }
    }
    if (!e) {
        if (n) {
            memcpy(ctx->enc, bytes, n);
        }
        ctx->raw_len = n;
        ctx->has_raw = true;
    }
    pthread_mutex_unlock(&ctx->lock);
    return e;
}

ksf_err
ksf_ctx_set_reply_key(ksf_ctx *ctx, const void *key, size_t len)
{
    return set_bytes(ctx, &ctx->reply_key, &ctx->reply_key_len, key, len);
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
    return ctx->partition;
}

int64_t
ksf_ctx_offset(const ksf_ctx *ctx)
{
    return ctx->offset;
}

int64_t
ksf_ctx_timestamp_ms(const ksf_ctx *ctx)
{
    return ctx->timestamp_ms;
}

const void *
ksf_ctx_key(const ksf_ctx *ctx, size_t *len)
{
    if (len) {
        *len = ctx->key ? ctx->key_len : 0;
    }
    return ctx->key;
}

const void *
ksf_ctx_value(const ksf_ctx *ctx, size_t *len)
{
    if (len) {
        *len = ctx->value ? ctx->value_len : 0;
    }
    return ctx->value;
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
    return ksfi_scope_resolve(&ctx->scope)->traceparent;
}

const char *
ksf_ctx_tracestate(const ksf_ctx *ctx)
{
    return ksfi_scope_resolve(&ctx->scope)->tracestate;
}

const char *
ksf_ctx_trace_id(const ksf_ctx *ctx)
{
    return ksfi_scope_resolve(&ctx->scope)->trace_id;
}

const char *
ksf_ctx_span_id(const ksf_ctx *ctx)
{
    return ksfi_scope_resolve(&ctx->scope)->span_id;
}

const char *
ksf_ctx_parent_span_id(const ksf_ctx *ctx)
{
    const ksfi_scope *s = ksfi_scope_resolve(&ctx->scope);
    return s->has_parent ? s->parent_span_id : NULL;
}
