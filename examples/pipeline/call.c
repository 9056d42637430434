/*
 * A handler calling another service (NestJS injects a ClientKafka and returns
 * client.send(...)): orders.quote defers, asks pricing.price through a ksf_client and
 * finishes with the answer from the client's reply callback. Sent from the handler's
 * thread, the request carries the handler's trace (same trace id, a child span) and
 * at most its remaining time (ksf_deadline), with no option to set.
 * pricing.price is served by this process too, to keep the example whole.
 *
 * Usage: pipeline_call   (brokers from KSF_BROKERS)
 */
#include "example.h"

static ksf_client *pricing;

KSF_MESSAGE_PATTERN("pricing.price", price)
{
    json_int_t qty = json_integer_value(json_object_get(data, "qty"));
    *reply = json_pack("{s:I, s:s}", "price", qty * 15, "trace", ksf_ctx_trace_id(ctx));
    return *reply ? KSF_OK : KSF_ENOMEM;
}

/* The client's reply thread: finish the request that waits for this answer. */
static void
priced(const ksf_reply *r, void *user)
{
    ksf_ctx *ctx = user;
    if (r->err == KSF_OK) {
        ksf_ctx_finish(ctx, KSF_OK, json_pack("{s:O}", "quote", (json_t *)r->value));
    } else {
        ksf_ctx_reply_error(ctx, r->err == KSF_EREMOTE ? "pricing failed" : r->text);
        ksf_ctx_finish(ctx, KSF_EREMOTE, NULL);
    }
}

KSF_MESSAGE_PATTERN("orders.quote", quote)
{
    ksf_errinfo ei = {0};
    ksf_err e = ksf_client_send(pricing, "pricing.price", data, NULL, priced, ctx, &ei);
    if (e) {
        return ksf_ctx_reply_error(ctx, ei.text); /* not sent: answer now */
    }
    return ksf_ctx_defer(ctx);
}

int
main(void)
{
    ksf_config *cfg = NULL;
    ksf_err e = ksf_config_new(&cfg);
    if (!e) {
        ksf_config_set_log(cfg, ksf_log_stderr, NULL, KSF_LOG_WARNING);
        e = ksf_config_set_from_env(cfg, &example_ei);
    }
    if (e || (e = ksf_client_new(&pricing, cfg, &example_ei))) {
        fatal("pipeline_call", "creating the client", e);
    }
    ksf_config_destroy(cfg);
    int status = example_run("pipeline_call", true, NULL);
    ksf_client_destroy(pricing); /* after the server: no handler uses it any more */
    return status;
}
