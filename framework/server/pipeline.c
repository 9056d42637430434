/*
 * The request pipeline (pipeline.h): registrations, chains, and a message's walk
 * through its chain. Depends only downward (the ctx, the handlers, the codec).
 */
#include "server/pipeline.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "codec/codec.h"

#include <string.h>

/* NestJS's FORBIDDEN_MESSAGE (packages/core/guards/constants.ts). */
#define KSFI_FORBIDDEN_MESSAGE "Forbidden resource"

/* One ksf_server_use* call, in registration order. */
typedef struct ksfi_use {
    ksfi_use_scope scope;
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
    /* Set by freeze: one per handler, NULL for an empty one (handlers point here). */
    struct ksfi_chain **chains;
    size_t nchains;
};

void
ksfi_pipeline_free(ksfi_pipeline *pl)
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

ksf_err
ksfi_pipeline_add(ksfi_pipeline **plp, bool open, ksfi_use_scope scope, const char *name,
                  const ksf_middleware *mw, void *user, const char *what, ksf_errinfo *ei)
{
    if (!mw || (scope != KSFI_USE_GLOBAL && (!name || !*name))) {
        return ksfi_fail(ei, KSF_EINVAL, "%s: srv, mw%s are required", what,
                         scope == KSFI_USE_CONTROLLER ? " and a controller name"
                         : scope == KSFI_USE_PATTERN  ? " and a pattern"
                                                      : "");
    }
    if (!mw->before && !mw->after) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "%s: middleware \"%s\" has neither a before nor an after "
                         "callback; set at least one",
                         what, mw->name ? mw->name : "(unnamed)");
    }
    if (!open) {
        return ksfi_fail(ei, KSF_ESTATE,
                         "%s: middleware \"%s\" must be registered before "
                         "ksf_server_run",
                         what, mw->name ? mw->name : "(unnamed)");
    }
    if (!*plp && !(*plp = ksfi_calloc(1, sizeof **plp))) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory registering a middleware");
    }
    ksfi_pipeline *pl = *plp;
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
build_chain(const ksfi_pipeline *pl, const ksfi_handler *h, const char *controller,
            struct ksfi_chain **out)
{
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
check_used(const ksfi_pipeline *pl, const ksfi_handler *handlers, size_t n,
           const char *const *controllers, ksf_errinfo *ei)
{
    for (size_t i = 0; i < pl->nuses; i++) {
        const ksfi_use *u = &pl->uses[i];
        bool used = u->scope == KSFI_USE_GLOBAL;
        for (size_t j = 0; j < n && !used; j++) {
            used = applies(u, &handlers[j], controllers[j]);
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
ksfi_pipeline_freeze(ksfi_pipeline *pl, ksfi_handler *handlers, size_t n,
                     const char *const *controllers, ksf_errinfo *ei)
{
    if (!pl) {
        return KSF_OK; /* no middleware: every chain is empty */
    }
    ksf_err e = check_used(pl, handlers, n, controllers, ei);
    if (e || n == 0) {
        return e;
    }
    pl->chains = ksfi_calloc(n, sizeof *pl->chains);
    if (!pl->chains) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory building middleware chains");
    }
    pl->nchains = n;
    for (size_t i = 0; i < n; i++) {
        if (build_chain(pl, &handlers[i], controllers[i], &pl->chains[i])) {
            return ksfi_fail(ei, KSF_ENOMEM, "out of memory building middleware chains");
        }
        handlers[i].chain = pl->chains[i];
    }
    return KSF_OK;
}

void
ksfi_pipeline_begin(ksfi_pipeline_run *pr, ksf_ctx *ctx)
{
    ksfi_pipeline_run_clear(pr); /* an event's re-run walks the chain again */
    const struct ksfi_chain *c = ctx->handler->chain;
    /* No other thread knows the ctx before its handler runs: no lock needed yet. */
    pr->capturing = c && c->has_after;
}

ksf_err
ksfi_pipeline_invoke(ksfi_pipeline_run *pr, ksf_ctx *ctx, json_t **data, json_t **reply)
{
    const struct ksfi_chain *c = ctx->handler->chain;
    for (size_t i = 0; i < c->n; i++) {
        const ksf_middleware *mw = c->link[i].mw;
        if (mw->before) {
            if (ctx->lazy) {
                /* A raw handler's befores get the payload as any handler's do (a
                 * validating or transforming before must not mistake it for binary). */
                ksf_err d = ksfi_ctx_decode(ctx);
                if (d) {
                    return d;
                }
                *data = json_incref((json_t *)ctx->data);
            }
            ksf_err e = mw->before(ctx, data, c->link[i].user);
            ctx->data = *data;
            if (e != KSF_OK) {
                pr->refused = true;
                if (e == KSF_DEFERRED) {
                    ksfi_log(ctx->log, KSF_LOG_ERROR, "server",
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
        pr->passed = i + 1;
    }
    /* A raw handler's data is NULL even after the befores: ksf_ctx_data has theirs. */
    return ctx->handler->fn(ctx, ctx->handler->raw ? NULL : *data, reply);
}

bool
ksfi_pipeline_capture(ksfi_pipeline_run *pr, ksf_ctx *ctx, const json_t *shape,
                      ksf_err *result)
{
    pthread_mutex_lock(&ctx->lock);
    bool keep = pr->capturing;
    if (keep) {
        if (pr->error || ctx->ended) {
            *result = KSF_ESTATE; /* one error per request, as when it is sent */
        } else {
            pr->error = json_incref((json_t *)shape);
            *result = KSF_EREMOTE;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    return keep;
}

void
ksfi_pipeline_after(ksfi_pipeline_run *pr, ksf_ctx *ctx, int64_t took_us, ksf_err *status,
                    json_t **reply, json_t **error)
{
    const struct ksfi_chain *c = ctx->handler->chain;
    pthread_mutex_lock(&ctx->lock);
    pr->capturing = false; /* from here on the ksf_ctx_reply_* calls send */
    json_t *kept = pr->error;
    pr->error = NULL;
    pthread_mutex_unlock(&ctx->lock);
    ksf_outcome o = {
        kept ? KSF_EREMOTE : *status,         *reply, kept, took_us, pr->refused,
        (uint64_t)atomic_load(&ctx->streamed)};
    for (size_t i = c ? pr->passed : 0; i > 0; i--) {
        const ksfi_link *l = &c->link[i - 1];
        if (l->mw->after) {
            l->mw->after(ctx, &o, l->user);
        }
    }
    if (o.status == KSF_SKIP && ctx->is_event) {
        o.status = KSF_OK; /* dropped on purpose: committed, no retry */
        ksfi_log(ctx->log, KSF_LOG_DEBUG, "server",
                 "event %s[%d]@%lld skipped by a middleware", ctx->topic,
                 (int)ctx->partition, (long long)ctx->offset);
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
ksfi_pipeline_run_clear(ksfi_pipeline_run *pr)
{
    json_decref(pr->error);
    *pr = (ksfi_pipeline_run){0};
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
    if (ctx->lazy) {
        /* A raw handler's first ask. The ctx is never const storage (its record owns
         * it); const is the accessor's promise to the caller, and decoding once is
         * invisible to it. On KSF_ENOMEM (logged) the answer is NULL. */
        ksfi_ctx_decode((ksf_ctx *)ctx);
    }
    return ctx->data;
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
