/*
 * The orders service of issue #19 as it had to be written before the pipeline: each
 * handler checks the API key, validates its payload and counts its outcome itself,
 * and the store is a global. Behaves exactly as orders.c (test_pipeline_examples runs
 * both through the same calls); docs/pipeline.md compares the two.
 *
 * Usage: pipeline_orders_before   (brokers from KSF_BROKERS; the key is s3cret)
 */
#include "example.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* guards next and orders */
static int next;
static json_t *orders; /* "<id>" -> {"id", "item", "qty"} */
static atomic_uint calls, failures;

static bool
key_ok(ksf_ctx *ctx)
{
    size_t len = 0;
    const char *got = ksf_ctx_header(ctx, "x-api-key", &len);
    return got && len == strlen("s3cret") && !memcmp(got, "s3cret", len);
}

/* Count the outcome, then pass it on. */
static ksf_err
counted(ksf_err e)
{
    atomic_fetch_add(e == KSF_OK ? &calls : &failures, 1);
    return e;
}

/* Answer a jansson unpack failure the way a caller can act on: which field, what. */
static ksf_err
invalid(ksf_ctx *ctx, const json_error_t *err, const char *field)
{
    char text[256];
    if (!strncmp(err->text, "Object item not found", 21) ||
        !strncmp(err->text, "Expected", 8)) {
        snprintf(text, sizeof text, "invalid payload: %s: %s", field, err->text);
    } else {
        snprintf(text, sizeof text, "invalid payload: $: %s", err->text);
    }
    return ksf_ctx_reply_error(ctx, text);
}

KSF_MESSAGE_PATTERN("orders.create", create_order)
{
    if (!key_ok(ctx)) {
        return counted(ksf_ctx_reply_error(ctx, "Forbidden resource"));
    }
    const char *item;
    int qty;
    json_error_t err;
    if (!data || json_unpack_ex((json_t *)data, &err, JSON_STRICT, "{s:s, s:i}", "item",
                                &item, "qty", &qty)) {
        if (!data) {
            return counted(ksf_ctx_reply_error(ctx, "invalid payload: $: not JSON"));
        }
        return counted(invalid(ctx, &err, err.position < 5 ? "item" : "qty"));
    }
    if (qty <= 0) {
        return counted(
            ksf_ctx_reply_error(ctx, "invalid payload: qty: must be positive"));
    }
    pthread_mutex_lock(&lock);
    char id[16];
    snprintf(id, sizeof id, "%d", ++next);
    json_t *order = json_pack("{s:i, s:s, s:i}", "id", next, "item", item, "qty", qty);
    json_object_set(orders, id, order);
    pthread_mutex_unlock(&lock);
    *reply = order;
    return counted(KSF_OK);
}

KSF_MESSAGE_PATTERN("orders.get", get_order)
{
    if (!key_ok(ctx)) {
        return counted(ksf_ctx_reply_error(ctx, "Forbidden resource"));
    }
    int id;
    json_error_t err;
    if (!data || json_unpack_ex((json_t *)data, &err, JSON_STRICT, "{s:i}", "id", &id)) {
        if (!data) {
            return counted(ksf_ctx_reply_error(ctx, "invalid payload: $: not JSON"));
        }
        return counted(invalid(ctx, &err, "id"));
    }
    char key[16], text[64];
    snprintf(key, sizeof key, "%d", id);
    pthread_mutex_lock(&lock);
    *reply = json_deep_copy(json_object_get(orders, key));
    pthread_mutex_unlock(&lock);
    snprintf(text, sizeof text, "order %d not found", id);
    return counted(*reply ? KSF_OK : ksf_ctx_reply_error(ctx, text));
}

int
main(void)
{
    orders = json_object();
    int status = example_run("pipeline_orders_before", true, NULL);
    printf("orders_calls_total %u\norders_failures_total %u\n", atomic_load(&calls),
           atomic_load(&failures));
    json_decref(orders);
    return status;
}
