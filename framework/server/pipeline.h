/*
 * The request pipeline (docs/pipeline.md): the middlewares registered with
 * ksf_server_use / use_controller / use_pattern, resolved at ksf_server_run into one
 * chain per handler, and each message's walk through it: the befores and the handler
 * (ksfi_pipeline_invoke, a worker), then the afters when the final result is made
 * (ksfi_pipeline_after, the worker or the thread of ksf_ctx_finish).
 *
 * The server reaches it through a few marked call sites ("pipeline:") in server.c
 * (registration state, freeze at run, free), ctx.c (begin, invoke, capture of error
 * replies, after) and registry.c (mount with controller state), so that a refactored
 * server only has to call the same functions at the same moments.
 */
#ifndef KSF_PIPELINE_H
#define KSF_PIPELINE_H

#include <ksf/ksf.h>

#include <stdint.h>

struct ksfi_pipeline;
struct ksfi_chain;

/* A message's state in the pipeline (ksf_ctx.pl). */
typedef struct ksfi_pipeline_ctx {
    /* The handler's chain; NULL when it has no middleware, so that an empty chain
     * costs one test per message. */
    const struct ksfi_chain *chain;
    /* The payload as the befores left it, between begin and the handler's return. */
    const json_t *data;
    bool in_call; /* between begin and the handler's return: ksf_ctx_unpack works */
    /* Befores that returned KSF_OK (or had none): their afters run. */
    size_t passed;
    bool refused;
    /* Error replies are kept for the afters instead of being sent (the chain has an
     * after); guarded by ctx->lock, as the ksf_ctx_reply_* calls may come from any
     * thread of a deferred handler. */
    bool capturing;
    json_t *error;
    uint64_t streamed; /* ksf_ctx_stream values sent, for the outcome */
} ksfi_pipeline_ctx;

/* The controller name of the macro handler @p fn, or NULL (registry.c). */
const char *ksfi_registry_controller(ksf_handler_fn fn);

/* Free the registrations and chains of a server. NULL is a no-op. */
void ksfi_pipeline_free(struct ksfi_pipeline *pl);

/* Resolve every handler's chain (ksf_server_run, before the first message).
 * Errors: KSF_ENOENT for a controller or pattern middleware without a handler,
 * KSF_ENOMEM. */
ksf_err ksfi_pipeline_freeze(ksf_server *srv, ksf_errinfo *ei);

/* Enter @p ctx into its handler's chain with the decoded payload (invoke, a worker). */
void ksfi_pipeline_begin(ksf_ctx *ctx, const json_t *data);

/* Run the befores and, when all passed, the handler; returns what the handler (or the
 * refusing before) returned. @p data may be replaced by a before (stays owned by the
 * caller). */
ksf_err ksfi_pipeline_invoke(ksf_ctx *ctx, json_t **data, json_t **reply);

/* The handler returned: the payload is about to be freed. */
void ksfi_pipeline_end_call(ksf_ctx *ctx);

/*
 * An error reply @p shape (borrowed) is being made on a request: with afters in the
 * chain, keep it for them instead of sending. Returns false when it is to be sent now;
 * true when kept (*result KSF_EREMOTE) or refused (*result KSF_ESTATE: one error per
 * request).
 */
bool ksfi_pipeline_capture(ksf_ctx *ctx, const json_t *shape, ksf_err *result);

/*
 * The final result is made (finish_result, once per run, also without a chain for a
 * KSF_SKIP status, so that a handler's skip means what a before's does): run the
 * afters over
 * *status and *reply (owned, may be replaced) and hand back the error to send in
 * *error (new reference; NULL unless *status is KSF_EREMOTE with a kept error).
 * Maps KSF_SKIP: an event's to KSF_OK; a request's to the Forbidden resource error.
 */
void ksfi_pipeline_after(ksf_ctx *ctx, ksf_err *status, json_t **reply, json_t **error);

/* A value was streamed (ksf_ctx_stream). */
void ksfi_pipeline_streamed(ksf_ctx *ctx);

/* Forget a run's state (ksfi_ctx_free, and before an event's re-run). */
void ksfi_pipeline_ctx_clear(ksfi_pipeline_ctx *pc);

#endif
