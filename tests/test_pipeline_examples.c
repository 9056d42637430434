/*
 * The pipeline examples (examples/pipeline), run as their users would: each case starts
 * a broker and one example program, calls it with a ksf client, stops it with SIGTERM
 * and checks its exit status, its stderr (empty) and what it printed. They wait on
 * programs starting and joining groups, so they live apart from test_pipeline and meson
 * runs the two side by side. Without the examples built (KSF_EXAMPLES_DIR empty: meson
 * configured with -Dexamples=false) the suite exits 77, which meson reports as skipped.
 */
#include "broker.h"
#include "proc.h"
#include "service.h"

#include "suite.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS 20000

/* One example's world: a broker, the example program, a connected client. */
typedef struct example_run {
    ksft_broker *b;
    ksft_program x;
    ksf_config *cfg;
    ksf_client *cli;
} example_run;

/* Start it all: the broker, example program @p name (once it printed "<name>: ready"),
 * a connected client. */
static void
run_open(example_run *r, const char *name)
{
    const char *dir = getenv("KSF_EXAMPLES_DIR"); /* main checked it is set */
    char path[512], ready[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(ready, sizeof ready, "%s: ready\n", name);
    r->b = ksft_broker_start();
    ksft_program_start(&r->x, path, NULL, ksft_broker_address(r->b));
    ksft_program_expect_line(&r->x, ready);
    r->cfg = ksft_config(r->b);
    r->cli = ksft_client(r->cfg);
}

/* Stop it all; the example, on SIGTERM, must exit 0 with nothing on stderr. Its
 * remaining stdout goes to @p rest (may be NULL). */
static void
run_close(example_run *r, char *rest, size_t size)
{
    ksf_client_destroy(r->cli);
    ksf_config_destroy(r->cfg);
    char err[1024];
    int status = ksft_program_stop(&r->x, true, 20000, rest, size, err, sizeof err);
    ck_assert_msg(status == 0, "exit status %d (stderr: %s)", status, err);
    ck_assert_msg(!err[0], "stderr: %s", err);
    ksft_broker_stop(r->b);
}

/* Call with one extra header and a traceparent (both optional); the answer must be
 * @p want with the JSON text @p want_json. */
static void
call_with(ksf_client *cli, const char *pattern, const char *request, const char *header,
          const char *value, const char *traceparent, ksf_err want, const char *want_json)
{
    json_t *req = request ? json_loads(request, JSON_DECODE_ANY, NULL) : NULL;
    json_t *hdrs = header ? json_pack("{s:s}", header, value) : NULL;
    ksf_send_opts opts = {
        .timeout_ms = WAIT_MS, .headers = hdrs, .traceparent = traceparent};
    char text[512];
    snprintf(text, sizeof text, "%s(done)|", want_json);
    ksft_stream_expect(cli, pattern, req, &opts, want, text, WAIT_MS + 5000);
    json_decref(hdrs);
    json_decref(req);
}

KSFT_TEST(test_pipeline_examples_guard, 90)
{
    example_run r;
    run_open(&r, "pipeline_guard");
    ksft_call_expect(r.cli, "orders.get", NULL, KSF_EREMOTE,
                     "{\"status\":\"error\",\"message\":\"Forbidden resource\"}",
                     WAIT_MS);
    call_with(r.cli, "orders.get", NULL, "x-api-key", "wrong", NULL, KSF_EREMOTE,
              "{\"status\":\"error\",\"message\":\"Forbidden resource\"}");
    call_with(r.cli, "orders.get", NULL, "x-api-key", "s3cret", NULL, KSF_OK,
              "{\"id\":1,\"status\":\"shipped\"}");
    run_close(&r, NULL, 0);
}
END_TEST

KSFT_TEST(test_pipeline_examples_timing, 90)
{
    example_run r;
    run_open(&r, "pipeline_timing");
    ksft_call_expect(r.cli, "orders.get", NULL, KSF_OK, "{\"id\":1}", WAIT_MS);
    ksft_call_expect(r.cli, "orders.get", NULL, KSF_OK, "{\"id\":1}", WAIT_MS);
    ksft_call_expect(r.cli, "orders.cancel", NULL, KSF_EREMOTE,
                     "{\"status\":\"error\",\"message\":\"orders cannot be cancelled\"}",
                     WAIT_MS);
    char out[1024];
    run_close(&r, out, sizeof out);
    const char *want = "# TYPE orders_handler_calls_total counter\n"
                       "orders_handler_calls_total{status=\"ok\"} 2\n"
                       "orders_handler_calls_total{status=\"error\"} 1\n"
                       "# TYPE orders_handler_duration_seconds_sum counter\n"
                       "orders_handler_duration_seconds_sum ";
    ck_assert_msg(!strncmp(out, want, strlen(want)), "metrics: %s", out);
}
END_TEST

KSFT_TEST(test_pipeline_examples_validate, 90)
{
    example_run r;
    run_open(&r, "pipeline_validate");
    ksft_call_expect(r.cli, "orders.create", "{\"item\":\"axe\",\"qty\":2}", KSF_OK,
                     "{\"created\":\"axe\",\"validated\":true}", WAIT_MS);
    ksft_call_expect(r.cli, "orders.create", "{\"item\":\"axe\",\"qty\":\"2\"}",
                     KSF_EREMOTE,
                     "{\"status\":\"error\",\"message\":\"invalid payload: qty: Expected "
                     "integer, got string\"}",
                     WAIT_MS);
    ksft_call_expect(r.cli, "orders.create", "{\"item\":\"axe\",\"qty\":2,\"rush\":true}",
                     KSF_EREMOTE,
                     "{\"status\":\"error\",\"message\":\"invalid payload: $: 1 object "
                     "item(s) left unpacked: rush\"}",
                     WAIT_MS);
    ksft_call_expect(r.cli, "orders.create", "{\"item\":\"axe\",\"qty\":0}", KSF_EREMOTE,
                     "{\"status\":\"error\",\"message\":\"invalid payload: qty: must be "
                     "positive\"}",
                     WAIT_MS);
    run_close(&r, NULL, 0);
}
END_TEST

KSFT_TEST(test_pipeline_examples_call, 120)
{
    example_run r;
    run_open(&r, "pipeline_call");
    call_with(r.cli, "orders.quote", "{\"qty\":2}", NULL, NULL,
              "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", KSF_OK,
              "{\"quote\":{\"price\":30,\"trace\":"
              "\"4bf92f3577b34da6a3ce929d0e0e4736\"}}");
    run_close(&r, NULL, 0);
}
END_TEST

/* The raw gateway: the backend's answer passed through (as the caller decodes it), the
 * backend's error as it sent it, and the gateway's own refusal of a null body. */
KSFT_TEST(test_pipeline_examples_forward, 120)
{
    example_run r;
    run_open(&r, "pipeline_forward");
    call_with(r.cli, "gateway.stock", "{\"sku\":\"axe\"}", NULL, NULL, NULL, KSF_OK,
              "{\"sku\":\"axe\",\"stock\":21}");
    call_with(r.cli, "gateway.stock", "{\"item\":\"axe\"}", NULL, NULL, NULL, KSF_EREMOTE,
              "{\"status\":\"error\",\"message\":\"sku (a string) is required\"}");
    call_with(r.cli, "gateway.stock", NULL, NULL, NULL, NULL, KSF_EREMOTE,
              "{\"status\":\"error\",\"message\":\"gateway: a request body is "
              "required\"}");
    run_close(&r, NULL, 0);
}
END_TEST

/* The orders service with the pipeline and without it: the same answers. */
static void
orders_service(const char *program)
{
    example_run r;
    run_open(&r, program);
    ksft_call_expect(r.cli, "orders.create", "{\"item\":\"axe\",\"qty\":2}", KSF_EREMOTE,
                     "{\"status\":\"error\",\"message\":\"Forbidden resource\"}",
                     WAIT_MS);
    call_with(r.cli, "orders.create", "{\"item\":\"axe\",\"qty\":2}", "x-api-key",
              "s3cret", NULL, KSF_OK, "{\"id\":1,\"item\":\"axe\",\"qty\":2}");
    call_with(r.cli, "orders.create", "{\"item\":\"axe\",\"qty\":\"2\"}", "x-api-key",
              "s3cret", NULL, KSF_EREMOTE,
              "{\"status\":\"error\",\"message\":\"invalid payload: qty: Expected "
              "integer, got string\"}");
    call_with(r.cli, "orders.get", "{\"id\":1}", "x-api-key", "s3cret", NULL, KSF_OK,
              "{\"id\":1,\"item\":\"axe\",\"qty\":2}");
    call_with(r.cli, "orders.get", "{\"id\":9}", "x-api-key", "s3cret", NULL, KSF_EREMOTE,
              "{\"status\":\"error\",\"message\":\"order 9 not found\"}");
    char out[256];
    run_close(&r, out, sizeof out);
    ck_assert_str_eq(out, "orders_calls_total 2\norders_failures_total 3\n");
}

KSFT_TEST(test_pipeline_examples_orders, 90)
{
    orders_service("pipeline_orders");
}
END_TEST

KSFT_TEST(test_pipeline_examples_orders_before, 90)
{
    orders_service("pipeline_orders_before");
}
END_TEST

int
main(void)
{
    const char *dir = getenv("KSF_EXAMPLES_DIR");
    if (!dir || !*dir) {
        printf("pipeline_examples: skipped: KSF_EXAMPLES_DIR is empty (meson configured "
               "with -Dexamples=false?)\n");
        return 77; /* meson's "skipped" */
    }
    return ksft_main("pipeline_examples");
}
