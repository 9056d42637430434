/*
 * The request pipeline (docs/pipeline.md): the middlewares registered with
 * ksf_server_use / use_controller / use_pattern, resolved at ksf_server_run into one
 * chain per handler (ksfi_handler.chain), and each message's walk through it: the
 * befores and the handler (ksfi_pipeline_invoke, a worker), then the afters when the
 * final result is made (ksfi_pipeline_after, the worker or the thread of
 * ksf_ctx_finish).
 *
 * Below the message lifecycle: this file knows the handler's ctx and the handlers,
 * nothing of the server, the dispatcher or the record. server/message.c calls it
 * around run_handler and at the final result and keeps each message's state
 * (ksfi_pipeline_run) in its record; registry.c registers middlewares and builds the
 * chains at run.
 */
#ifndef KSF_PIPELINE_H
#define KSF_PIPELINE_H

#include "server/ctx.h"
#include "server/handler.h"

#include <ksf/ksf.h>

#include <stdint.h>

/* A server's registrations and, from run on, the chains they resolve to. */
typedef struct ksfi_pipeline ksfi_pipeline;

/* Where a middleware applies (ksf_server_use, _use_controller, _use_pattern). */
typedef enum ksfi_use_scope {
    KSFI_USE_GLOBAL,
    KSFI_USE_CONTROLLER,
    KSFI_USE_PATTERN
} ksfi_use_scope;

/* One message's walk through its handler's chain, kept in its record. The fields
 * `capturing` and `error` are guarded by the ctx's lock, as the ksf_ctx_reply_* calls
 * of a deferred handler may come from any thread; the others belong to the thread
 * running the handler. */
typedef struct ksfi_pipeline_run {
    /* Befores that returned KSF_OK (or had none): their afters run. */
    size_t passed;
    bool refused; /* a before refused the message */
    /* Error replies are kept for the afters instead of being sent (the chain has an
     * after). */
    bool capturing;
    json_t *error;
} ksfi_pipeline_run;

/*
 * Add a registration to *@p pl (created on first use); @p open: the server has not
 * run yet. @p what names the public call for the error sentences. Errors: KSF_EINVAL
 * (no mw, no callback, no name for a controller or pattern scope), KSF_ESTATE (not
 * @p open), KSF_ENOMEM.
 */
ksf_err ksfi_pipeline_add(ksfi_pipeline **pl, bool open, ksfi_use_scope scope,
                          const char *name, const ksf_middleware *mw, void *user,
                          const char *what, ksf_errinfo *ei);

/*
 * Resolve every handler's chain (ksf_server_run, before the first message) into
 * handlers[i].chain (NULL for an empty one); @p controllers[i] is handler i's
 * controller name or NULL. NULL @p pl: no middleware, nothing to do.
 * Errors: KSF_ENOENT for a controller or pattern middleware without a handler,
 * KSF_ENOMEM.
 */
ksf_err ksfi_pipeline_freeze(ksfi_pipeline *pl, ksfi_handler *handlers, size_t n,
                             const char *const *controllers, ksf_errinfo *ei);

/* Free the registrations and chains. NULL is a no-op. */
void ksfi_pipeline_free(ksfi_pipeline *pl);

/* Enter @p ctx's run into its handler's chain (a worker, before the handler). */
void ksfi_pipeline_begin(ksfi_pipeline_run *pr, ksf_ctx *ctx);

/* Run the befores and, when all passed, the handler; returns what the handler (or the
 * refusing before) returned. @p data may be replaced by a before (stays owned by the
 * caller); ctx->data follows it. Only with a chain. */
ksf_err ksfi_pipeline_invoke(ksfi_pipeline_run *pr, ksf_ctx *ctx, json_t **data,
                             json_t **reply);

/*
 * An error reply @p shape (borrowed) is being made on a request: with afters in the
 * chain, keep it for them instead of sending. Returns false when it is to be sent now;
 * true when kept (*result KSF_EREMOTE) or refused (*result KSF_ESTATE: one error per
 * request).
 */
bool ksfi_pipeline_capture(ksfi_pipeline_run *pr, ksf_ctx *ctx, const json_t *shape,
                           ksf_err *result);

/*
 * The final result is made (once per run; also without a chain for a KSF_SKIP status,
 * so that a handler's skip means what a before's does): run the afters over *status
 * and *reply (owned, may be replaced), @p took_us being the handler's time, and hand
 * back the error to send in *error (new reference; NULL unless *status is KSF_EREMOTE
 * with a kept error). Maps KSF_SKIP: an event's to KSF_OK; a request's to the
 * Forbidden resource error.
 */
void ksfi_pipeline_after(ksfi_pipeline_run *pr, ksf_ctx *ctx, int64_t took_us,
                         ksf_err *status, json_t **reply, json_t **error);

/* Forget a run's state (the record's end, and each run's begin). */
void ksfi_pipeline_run_clear(ksfi_pipeline_run *pr);

#endif
