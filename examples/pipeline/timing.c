/*
 * An interceptor that times every handler and exports the result as Prometheus
 * metrics (what a NestJS LoggingInterceptor with a prom-client histogram does). Its
 * after callback sees each message's status and duration, deferred ones included; on
 * stop the process prints the counters in the text exposition format.
 *
 * Usage: pipeline_timing   (brokers from KSF_BROKERS)
 */
#include "example.h"

#include <stdatomic.h>

/* Guarded by being atomic: afters of different messages run at once. */
static atomic_uint_fast64_t calls_ok, calls_error, duration_us_sum;

static void
time_after(ksf_ctx *ctx, ksf_outcome *outcome, void *user)
{
    (void)ctx;
    (void)user;
    atomic_fetch_add(outcome->status == KSF_OK ? &calls_ok : &calls_error, 1);
    atomic_fetch_add(&duration_us_sum, (uint_fast64_t)outcome->duration_us);
}

static const ksf_middleware timing = {"timing", NULL, time_after};

KSF_MESSAGE_PATTERN("orders.get", get_order)
{
    *reply = json_pack("{s:i}", "id", 1);
    return *reply ? KSF_OK : KSF_ENOMEM;
}

KSF_MESSAGE_PATTERN("orders.cancel", cancel_order)
{
    return ksf_ctx_reply_error(ctx, "orders cannot be cancelled");
}

static ksf_err
setup(ksf_server *srv, ksf_errinfo *ei)
{
    return ksf_server_use(srv, &timing, NULL, ei);
}

int
main(void)
{
    int status = example_run("pipeline_timing", true, setup);
    printf("# TYPE orders_handler_calls_total counter\n"
           "orders_handler_calls_total{status=\"ok\"} %llu\n"
           "orders_handler_calls_total{status=\"error\"} %llu\n"
           "# TYPE orders_handler_duration_seconds_sum counter\n"
           "orders_handler_duration_seconds_sum %.6f\n",
           (unsigned long long)atomic_load(&calls_ok),
           (unsigned long long)atomic_load(&calls_error),
           (double)atomic_load(&duration_us_sum) / 1e6);
    return status;
}
