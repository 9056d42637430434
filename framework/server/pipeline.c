#include "server/pipeline.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "codec/codec.h"
#include "obs/metrics.h"
#include "server/ctx.h"
#include "server/server.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* NestJS's FORBIDDEN_MESSAGE (packages/core/guards/constants.ts). */
#define KSFI_FORBIDDEN_MESSAGE "Forbidden resource"

enum ksfi_use_scope { KSFI_USE_GLOBAL, KSFI_USE_CONTROLLER, KSFI_USE_PATTERN };

/* One ksf_server_use* call, in registration order. */
typedef struct ksfi_use {
    enum ksfi_use_scope scope;
    char *name; /* the controller or pattern; NULL for global */
    const ksf_middleware *mw;
    void *user;
} ksfi_use;

typedef struct ksfi_link {
    const ksf_middleware *mw;
    void *user;
} ksfi_link;

struct ksfi_chain {
    size_t n;
    bool has_after; /* error replies are kept for the afters */
    ksfi_link link[];
};

struct ksfi_pipeline {
    ksfi_use *uses;
    size_t nuses;
    /* Set by freeze: one per handler (srv->handlers' index), NULL for an empty one. */
    struct ksfi_chain **chains;
    size_t nchains;
};

void
ksfi_pipeline_free(struct ksfi_pipeline *pl)
{
    if (!pl) {
        return;
    }
    for (size_t i = 0; i < pl->nuses; i++) {
        ksfi_free(pl->uses[i].name);
    }
    ksfi_free(pl->uses);
    for (size_t i = 0; i < pl->nchains; i++) {
        ksfi_free(pl->chains[i]);
    }
    ksfi_free(pl->chains);
    ksfi_free(pl);
}

static ksf_err
add_use(ksf_server *srv, enum ksfi_use_scope scope, const char *name,
        const ksf_middleware *mw, void *user, ksf_errinfo *ei)
{
    static const char *const what[] = {"ksf_server_use", "ksf_server_use_controller",
                                       "ksf_server_use_pattern"};
    if (!srv || !mw || (scope != KSFI_USE_GLOBAL && (!name || !*name))) {
        return ksfi_fail(ei, KSF_EINVAL, "%s: srv, mw%s are required", what[scope],
                         scope == KSFI_USE_CONTROLLER ? " and a controller name"
                         : scope == KSFI_USE_PATTERN  ? " and a pattern"
                                                      : "");
    }
    if (!mw->before && !mw->after) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "%s: middleware \"%s\" has neither a before nor an after "
                         "callback; set at least one",
                         what[scope], mw->name ? mw->name : "(unnamed)");
    }
    if (atomic_load(&srv->state) != KSFI_SRV_NEW) {
        return ksfi_fail(ei, KSF_ESTATE,
                         "%s: middleware \"%s\" must be registered before "
                         "ksf_server_run",
                         what[scope], mw->name ? mw->name : "(unnamed)");
    }
    if (!srv->pipeline && !(srv->pipeline = ksfi_calloc(1, sizeof *srv->pipeline))) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory registering a middleware");
    }
    struct ksfi_pipeline *pl = srv->pipeline;
    ksfi_use *grown = ksfi_realloc(pl->uses, (pl->nuses + 1) * sizeof *grown);
    if (!grown) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory registering a middleware");
    }
    pl->uses = grown;
    char *copy = NULL;
    if (name && !(copy = ksfi_strdup(name))) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory registering a middleware");
    }
    pl->uses[pl->nuses++] = (ksfi_use){scope, copy, mw, user};
    return KSF_OK;
}

ksf_err
ksf_server_use(ksf_server *srv, const ksf_middleware *mw, void *user, ksf_errinfo *ei)
{
    return add_use(srv, KSFI_USE_GLOBAL, NULL, mw, user, ei);
}

ksf_err
ksf_server_use_controller(ksf_server *srv, const char *controller,
                          const ksf_middleware *mw, void *user, ksf_errinfo *ei)
{
    return add_use(srv, KSFI_USE_CONTROLLER, controller, mw, user, ei);
}

ksf_err
ksf_server_use_pattern(ksf_server *srv, const char *pattern, const ksf_middleware *mw,
                       void *user, ksf_errinfo *ei)
{
    return add_use(srv, KSFI_USE_PATTERN, pattern, mw, user, ei);
}

/* Does @p u apply to handler @p h (whose controller is @p controller, or NULL)? */
static bool
applies(const ksfi_use *u, const ksfi_handler *h, const char *controller)
{
    switch (u->scope) {
    case KSFI_USE_GLOBAL:
        return true;
    case KSFI_USE_CONTROLLER:
        return controller && !strcmp(controller, u->name);
    case KSFI_USE_PATTERN:
        return !strcmp(h->pattern, u->name);
    }
    return false;
}

/* Build @p h's chain: global, then controller, then pattern middlewares, each in
 * registration order (NestJS's global -> controller -> method scopes). */
static ksf_err
build_chain(const struct ksfi_pipeline *pl, const ksfi_handler *h,
            struct ksfi_chain **out)
{
    const char *controller = h->file ? ksfi_registry_controller(h->fn) : NULL;
    size_t n = 0;
    for (size_t i = 0; i < pl->nuses; i++) {
        n += applies(&pl->uses[i], h, controller);
    }
    *out = NULL;
    if (n == 0) {
        return KSF_OK;
    }
    struct ksfi_chain *c = ksfi_calloc(1, sizeof *c + n * sizeof c->link[0]);
    if (!c) {
        return KSF_ENOMEM;
    }
    for (int scope = KSFI_USE_GLOBAL; scope <= KSFI_USE_PATTERN; scope++) {
        for (size_t i = 0; i < pl->nuses; i++) {
            const ksfi_use *u = &pl->uses[i];
            if ((int)u->scope == scope && applies(u, h, controller)) {
                c->link[c->n++] = (ksfi_link){u->mw, u->user};
                c->has_after = c->has_after || u->mw->after;
            }
        }
    }
    *out = c;
    return KSF_OK;
}

/* A controller or pattern middleware that no handler uses is a typo or a forgotten
 * mount: say so at run rather than serve unguarded. */
static ksf_err
check_used(const ksf_server *srv, const struct ksfi_pipeline *pl, ksf_errinfo *ei)
{
    for (size_t i = 0; i < pl->nuses; i++) {
        const ksfi_use *u = &pl->uses[i];
        bool used = u->scope == KSFI_USE_GLOBAL;
        for (size_t j = 0; j < srv->nhandlers && !used; j++) {
            const ksfi_handler *h = &srv->handlers[j];
            used = applies(u, h, h->file ? ksfi_registry_controller(h->fn) : NULL);
        }
        if (!used) {
            return ksfi_fail(ei, KSF_ENOENT,
                             "middleware \"%s\" was added to %s \"%s\", which has no "
                             "handler on this server; mount it or fix the name",
                             u->mw->name ? u->mw->name : "(unnamed)",
                             u->scope == KSFI_USE_CONTROLLER ? "controller" : "pattern",
                             u->name);
        }
    }
    return KSF_OK;
}

ksf_err
ksfi_pipeline_freeze(ksf_server *srv, ksf_errinfo *ei)
{
    struct ksfi_pipeline *pl = srv->pipeline;
    if (!pl) {
        return KSF_OK; /* no middleware: every chain is empty */
    }
    ksf_err e = check_used(srv, pl, ei);
    if (e) {
        return e;
    }
    if (srv->nhandlers == 0) {
        return KSF_OK;
    }
    pl->chains = ksfi_calloc(srv->nhandlers, sizeof *pl->chains);
    if (!pl->chains) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory building middleware chains");
    }
    pl->nchains = srv->nhandlers;
    for (size_t i = 0; i < srv->nhandlers; i++) {
        if (build_chain(pl, &srv->handlers[i], &pl->chains[i])) {
            return ksfi_fail(ei, KSF_ENOMEM, "out of memory building middleware chains");
        }
    }
    return KSF_OK;
}

void
ksfi_pipeline_begin(ksf_ctx *ctx, const json_t *data)
{
    const struct ksfi_pipeline *pl = ctx->srv->pipeline;
    ksfi_pipeline_ctx *pc = &ctx->pl;
    size_t idx = (size_t)(ctx->handler - ctx->srv->handlers);
    pc->chain = pl && idx < pl->nchains ? pl->chains[idx] : NULL;
    pc->data = data;
    pc->in_call = true;
    /* No other thread knows the ctx before its handler runs: no lock needed yet. */
    pc->capturing = pc->chain && pc->chain->has_after;
}

void
ksfi_pipeline_end_call(ksf_ctx *ctx)
{
    ctx->pl.data = NULL;
    ctx->pl.in_call = false;
}

ksf_err
ksfi_pipeline_invoke(ksf_ctx *ctx, json_t **data, json_t **reply)
{
    const struct ksfi_chain *c = ctx->pl.chain;
    for (size_t i = 0; i < c->n; i++) {
        const ksf_middleware *mw = c->link[i].mw;
        if (mw->before) {
            ksf_err e = mw->before(ctx, data, c->link[i].user);
            ctx->pl.data = *data;
            if (e != KSF_OK) {
                ctx->pl.refused = true;
                if (e == KSF_DEFERRED) {
                    ksfi_log(&ctx->srv->log, KSF_LOG_ERROR, "server",
                             "middleware \"%s\" deferred in its before callback on %s; "
                             "only handlers may defer",
                             mw->name ? mw->name : "(unnamed)", ctx->topic);
                    return KSF_ESTATE;
                }
                if (e == KSF_SKIP && !ctx->is_event) {
                    return ksf_ctx_forbid(ctx); /* a request must get an answer */
                }
                return e;
            }
        }
        ctx->pl.passed = i + 1;
    }
    return ctx->handler->fn(ctx, *data, reply);
}

bool
ksfi_pipeline_capture(ksf_ctx *ctx, const json_t *shape, ksf_err *result)
{
    pthread_mutex_lock(&ctx->lock);
    bool keep = ctx->pl.capturing;
    if (keep) {
        if (ctx->pl.error || ctx->ended) {
            *result = KSF_ESTATE; /* one error per request, as when it is sent */
        } else {
            ctx->pl.error = json_incref((json_t *)shape);
            *result = KSF_EREMOTE;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    return keep;
}

void
ksfi_pipeline_streamed(ksf_ctx *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    ctx->pl.streamed++;
    pthread_mutex_unlock(&ctx->lock);
}

void
ksfi_pipeline_after(ksf_ctx *ctx, ksf_err *status, json_t **reply, json_t **error)
{
    ksfi_pipeline_ctx *pc = &ctx->pl;
    pthread_mutex_lock(&ctx->lock);
    pc->capturing = false; /* from here on the ksf_ctx_reply_* calls send */
    json_t *kept = pc->error;
    pc->error = NULL;
    uint64_t streamed = pc->streamed;
    pthread_mutex_unlock(&ctx->lock);
    ksf_outcome o = {kept ? KSF_EREMOTE : *status,
                     *reply,
                     kept,
                     (int64_t)(ksfi_metrics_now_us() - ctx->started_us),
                     pc->refused,
                     streamed};
    for (size_t i = pc->chain ? pc->passed : 0; i > 0; i--) {
        const ksfi_link *l = &pc->chain->link[i - 1];
        if (l->mw->after) {
            l->mw->after(ctx, &o, l->user);
        }
    }
    if (o.status == KSF_SKIP && ctx->is_event) {
        o.status = KSF_OK; /* dropped on purpose: committed, no retry */
        ksfi_log(&ctx->srv->log, KSF_LOG_DEBUG, "server",
                 "event %s[%d]@%lld skipped by a middleware", ctx->topic,
                 (int)ctx->msg->partition, (long long)ctx->msg->offset);
    } else if (o.status == KSF_SKIP) { /* a request must get an answer */
        json_t *text = json_string(KSFI_FORBIDDEN_MESSAGE);
        if (!text || ksf_outcome_set_error(&o, text)) {
            o.status = KSF_ENOMEM;
        }
        json_decref(text);
    }
    if (o.status != KSF_EREMOTE || ctx->is_event) {
        json_decref(o.error); /* mapped away by a filter, or an event's */
        o.error = NULL;
    }
    *status = o.status;
    *reply = o.reply;
    *error = o.error;
}

void
ksfi_pipeline_ctx_clear(ksfi_pipeline_ctx *pc)
{
    json_decref(pc->error);
    *pc = (ksfi_pipeline_ctx){0};
}

/* ---- the public helpers ---------------------------------------------------------- */

void *
ksf_ctx_controller(const ksf_ctx *ctx)
{
    /* Macro handlers (those with a file) get the state as their user pointer. */
    return ctx->handler && ctx->handler->file ? ctx->handler->user : NULL;
}

const json_t *
ksf_ctx_data(const ksf_ctx *ctx)
{
    return ctx->pl.data;
}

ksf_err
ksf_ctx_forbid(ksf_ctx *ctx)
{
    if (ctx->is_event) {
        return KSF_SKIP;
    }
    ksf_err e = ksf_ctx_reply_error(ctx, KSFI_FORBIDDEN_MESSAGE);
    return e == KSF_ESTATE ? KSF_EREMOTE : e; /* already answered: still refused */
}

void
ksf_outcome_set_reply(ksf_outcome *outcome, json_t *reply)
{
    json_decref(outcome->reply);
    json_decref(outcome->error);
    outcome->reply = reply;
    outcome->error = NULL;
    outcome->status = KSF_OK;
}

ksf_err
ksf_outcome_set_error(ksf_outcome *outcome, const json_t *error)
{
    json_t *shape = ksfi_error_from_json(error);
    if (!shape) {
        return KSF_ENOMEM;
    }
    json_decref(outcome->reply);
    json_decref(outcome->error);
    outcome->reply = NULL;
    outcome->error = shape;
    outcome->status = KSF_EREMOTE;
    return KSF_OK;
}
