/*
 * A gateway that forwards payloads without reading them: gateway.stock is a raw
 * handler (KSF_MESSAGE_PATTERN_RAW), so the request is never decoded into a JSON tree;
 * it sends the bytes as they came to inventory.stock (ksf_send_opts.raw_value) and takes
 * the answer undecoded (KSF_SEND_RAW_REPLY), then answers its caller with those bytes
 * (ksf_ctx_set_reply_raw). What the gateway adds per request is Kafka work only, which
 * is what raw mode is for (docs/server.md, "Raw handlers"; docs/benchmarks.md measures
 * it). Remote errors come back decoded and are passed on as they were sent.
 *
 * The request still carries the handler's trace and the caller's remaining time, as in
 * pipeline_call; a service that wants neither also sets trace.headers=false and
 * client.deadline.header=false (docs/configuration.md).
 * inventory.stock is served by this process too, to keep the example whole.
 *
 * Usage: pipeline_forward   (brokers from KSF_BROKERS)
 */
#include "example.h"

#include <string.h>

static ksf_client *inventory;

/* The backend: an ordinary handler with a decoded payload. */
KSF_MESSAGE_PATTERN("inventory.stock", stock)
{
    const char *sku = json_string_value(json_object_get(data, "sku"));
    if (!sku) {
        return ksf_ctx_reply_error(ctx, "sku (a string) is required");
    }
    *reply = json_pack("{s:s, s:i}", "sku", sku, "stock", (int)strlen(sku) * 7);
    return *reply ? KSF_OK : KSF_ENOMEM;
}

/* The client's reply thread: pass the backend's answer on, byte for byte. */
static void
forwarded(const ksf_reply *r, void *user)
{
    ksf_ctx *ctx = user;
    if (r->err == KSF_OK) {
        /* NULL raw: a null reply value, which a NULL reply passes on. */
        if (r->raw && ksf_ctx_set_reply_raw(ctx, r->raw, r->raw_len) != KSF_OK) {
            ksf_ctx_reply_error(ctx, "gateway: out of memory");
            ksf_ctx_finish(ctx, KSF_EREMOTE, NULL);
            return;
        }
        ksf_ctx_finish(ctx, KSF_OK, NULL);
    } else if (r->err == KSF_EREMOTE) {
        ksf_ctx_reply_error_json(ctx, r->value); /* the backend's error, as it sent it */
        ksf_ctx_finish(ctx, KSF_EREMOTE, NULL);
    } else {
        ksf_ctx_reply_error(ctx, r->text); /* e.g. the backend did not answer in time */
        ksf_ctx_finish(ctx, KSF_EREMOTE, NULL);
    }
}

KSF_MESSAGE_PATTERN_RAW("gateway.stock", gateway_stock)
{
    size_t len = 0;
    const void *value = ksf_ctx_value(ctx, &len);
    if (!value) {
        return ksf_ctx_reply_error(ctx, "gateway: a request body is required");
    }
    ksf_send_opts opts = {
        .raw_value = value, .raw_len = len, .flags = KSF_SEND_RAW_REPLY};
    ksf_errinfo ei = {0};
    ksf_err e =
        ksf_client_send(inventory, "inventory.stock", NULL, &opts, forwarded, ctx, &ei);
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
    if (e || (e = ksf_client_new(&inventory, cfg, &example_ei))) {
        fatal("pipeline_forward", "creating the client", e);
    }
    ksf_config_destroy(cfg);
    int status = example_run("pipeline_forward", true, NULL);
    ksf_client_destroy(inventory); /* after the server: no handler uses it any more */
    return status;
}
