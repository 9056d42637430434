/*
 * The orders service of issue #19, written with the pipeline: an API-key guard and a
 * timing interceptor for every pattern, payloads validated by ksf_ctx_unpack, and the
 * order store as the controller's state. orders_before.c is the same service without
 * the pipeline; docs/pipeline.md compares the two.
 *
 * Usage: pipeline_orders   (brokers from KSF_BROKERS; the key is s3cret)
 */
#include "example.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

typedef struct store {
    pthread_mutex_t lock; /* guards next and orders */
    int next;
    json_t *orders; /* "<id>" -> {"id", "item", "qty"} */
} store;

static atomic_uint calls, failures;

static ksf_err
api_key_guard(ksf_ctx *ctx, json_t **data, void *key)
{
    (void)data;
    size_t len = 0;
    const char *got = ksf_ctx_header(ctx, "x-api-key", &len);
    return got && len == strlen(key) && !memcmp(got, key, len) ? KSF_OK
                                                               : ksf_ctx_forbid(ctx);
}

static void
count_after(ksf_ctx *ctx, ksf_outcome *outcome, void *user)
{
    (void)ctx;
    (void)user;
    atomic_fetch_add(outcome->status == KSF_OK ? &calls : &failures, 1);
}

static const ksf_middleware guard = {"api_key", api_key_guard, NULL};
static const ksf_middleware counter = {"count", NULL, count_after};
static char api_key[] = "s3cret";

KSF_CONTROLLER_MESSAGE_PATTERN("orders", "orders.create", create_order)
{
    store *s = ksf_ctx_controller(ctx);
    const char *item;
    int qty;
    ksf_err e =
        ksf_ctx_unpack(ctx, JSON_STRICT, "{s:s, s:i}", "item", &item, "qty", &qty);
    if (e) {
        return e;
    }
    if (qty <= 0) {
        return ksf_ctx_reply_error(ctx, "invalid payload: qty: must be positive");
    }
    pthread_mutex_lock(&s->lock);
    char id[16];
    snprintf(id, sizeof id, "%d", ++s->next);
    json_t *order = json_pack("{s:i, s:s, s:i}", "id", s->next, "item", item, "qty", qty);
    json_object_set(s->orders, id, order);
    pthread_mutex_unlock(&s->lock);
    *reply = order;
    return KSF_OK;
}

KSF_CONTROLLER_MESSAGE_PATTERN("orders", "orders.get", get_order)
{
    store *s = ksf_ctx_controller(ctx);
    int id;
    ksf_err e = ksf_ctx_unpack(ctx, JSON_STRICT, "{s:i}", "id", &id);
    if (e) {
        return e;
    }
    char key[16], text[64];
    snprintf(key, sizeof key, "%d", id);
    pthread_mutex_lock(&s->lock);
    *reply = json_deep_copy(json_object_get(s->orders, key));
    pthread_mutex_unlock(&s->lock);
    snprintf(text, sizeof text, "order %d not found", id);
    return *reply ? KSF_OK : ksf_ctx_reply_error(ctx, text);
}

static store orders = {PTHREAD_MUTEX_INITIALIZER, 0, NULL};

static ksf_err
setup(ksf_server *srv, ksf_errinfo *ei)
{
    ksf_err e = ksf_server_mount_controller(srv, "orders", &orders, ei);
    if (!e) {
        e = ksf_server_use(srv, &counter, NULL, ei);
    }
    return e ? e : ksf_server_use(srv, &guard, api_key, ei);
}

int
main(void)
{
    orders.orders = json_object();
    int status = example_run("pipeline_orders", false, setup);
    printf("orders_calls_total %u\norders_failures_total %u\n", atomic_load(&calls),
           atomic_load(&failures));
    json_decref(orders.orders);
    return status;
}
