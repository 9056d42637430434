/*
 * Validation (NestJS's ValidationPipe on a DTO): a pipe unpacks the payload with a
 * jansson format before the handler runs; a payload that does not match is answered
 * with an error naming the field and what was expected, e.g.
 * {"status":"error","message":"invalid payload: qty: Expected integer, got string"}.
 * A second pipe transforms the payload (NestJS's transform: true) for the handler.
 *
 * Usage: pipeline_validate   (brokers from KSF_BROKERS)
 */
#include "example.h"

/* {"item": string, "qty": integer}, nothing else (JSON_STRICT). */
static ksf_err
validate_order(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)data;
    (void)user;
    return ksf_ctx_unpack(ctx, JSON_STRICT | JSON_VALIDATE_ONLY, "{s:s, s:i}", "item",
                          "qty");
}

/* A quantity must be positive: a rule no format says, with its own error. */
static ksf_err
check_qty(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)user;
    json_int_t qty = json_integer_value(json_object_get(*data, "qty"));
    if (qty <= 0) {
        return ksf_ctx_reply_error(ctx, "invalid payload: qty: must be positive");
    }
    json_t *normalized =
        json_pack("{s:O, s:I, s:b}", "item", json_object_get(*data, "item"), "qty", qty,
                  "validated", 1);
    json_decref(*data);
    *data = normalized;
    return KSF_OK;
}

static const ksf_middleware validate = {"validate", validate_order, NULL};
static const ksf_middleware positive = {"positive", check_qty, NULL};

KSF_MESSAGE_PATTERN("orders.create", create_order)
{
    *reply = json_pack("{s:O, s:O}", "created", json_object_get(data, "item"),
                       "validated", json_object_get(data, "validated"));
    return *reply ? KSF_OK : KSF_ENOMEM;
}

static ksf_err
setup(ksf_server *srv, ksf_errinfo *ei)
{
    ksf_err e = ksf_server_use_pattern(srv, "orders.create", &validate, NULL, ei);
    return e ? e : ksf_server_use_pattern(srv, "orders.create", &positive, NULL, ei);
}

int
main(void)
{
    return example_run("pipeline_validate", true, setup);
}
