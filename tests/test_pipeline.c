/*
 * The request pipeline (docs/pipeline.md): middlewares' before and after callbacks in
 * order around the handler, guards refusing requests with NestJS's error shapes (exact
 * reply bytes) and events (skipped, or failed into retries and the dead-letter topic),
 * pipes transforming and validating payloads (ksf_ctx_unpack naming the field),
 * interceptors and filters replacing replies and mapping errors, deferred and
 * streamed replies through the same chain, controller state on two servers of one
 * process, and a handler calling another service with its deadline and trace.
 */
#include "broker.h"
#include "raw_kafka.h"
#include "server_probe.h"
#include "service.h"
#include "settings.h"

#include "suite.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 20000

/* ---- helpers ------------------------------------------------------------------- */

/* What the callbacks did, in order, as "name;name;..." (reset by each case). */
static pthread_mutex_t trail_lock = PTHREAD_MUTEX_INITIALIZER;
static char trail[1024];

static void
note(const char *what)
{
    pthread_mutex_lock(&trail_lock);
    size_t len = strlen(trail);
    snprintf(trail + len, sizeof trail - len, "%s;", what);
    pthread_mutex_unlock(&trail_lock);
}

static void
trail_reset(void)
{
    pthread_mutex_lock(&trail_lock);
    trail[0] = '\0';
    pthread_mutex_unlock(&trail_lock);
}

/* Call @p pattern with the JSON text @p request; assert the result code and the exact
 * reply (or error) JSON text. */
static void
call_expect(ksf_client *cli, const char *pattern, const char *request, ksf_err want,
            const char *want_json)
{
    ksft_call_expect(cli, pattern, request, want, want_json, WAIT_MS);
}

typedef struct rig {
    ksft_broker *b;
    ksf_config *cfg;
    ksf_server *srv;
    ksft_service s;
    ksf_client *cli;
} rig;

static void
rig_open(rig *r, const char *const *reply_topics)
{
    *r = (rig){0};
    trail_reset();
    r->b = ksft_broker_start();
    r->cfg = ksft_config(r->b);
    r->srv = ksft_server(r->cfg);
    for (size_t i = 0; reply_topics && reply_topics[i]; i++) {
        ksft_broker_create_topic(r->b, reply_topics[i], 1);
    }
}

static void
rig_start(rig *r)
{
    ksft_service_start(&r->s, r->srv, WAIT_MS);
    r->cli = ksft_client(r->cfg);
}

static void
rig_close(rig *r)
{
    ksf_client_destroy(r->cli);
    ksft_service_stop(&r->s);
    ksf_config_destroy(r->cfg);
    ksft_broker_stop(r->b);
}

static void
use(ksf_server *srv, const ksf_middleware *mw, const void *user)
{
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_use(srv, mw, (void *)user, &ei) == KSF_OK, "%s", ei.text);
}

static void
use_pattern(ksf_server *srv, const char *pattern, const ksf_middleware *mw,
            const void *user)
{
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_use_pattern(srv, pattern, mw, (void *)user, &ei) == KSF_OK,
                  "%s", ei.text);
}

static void
on_message(ksf_server *srv, const char *pattern, ksf_handler_fn fn)
{
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_on_message(srv, pattern, fn, NULL, &ei) == KSF_OK, "%s",
                  ei.text);
}

/* ---- order and payload transformation --------------------------------------------- */

/* Tracing middleware: its user pointer is its name. */
static ksf_err
trace_before(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)ctx;
    (void)data;
    char what[64];
    snprintf(what, sizeof what, "%s.before", (const char *)user);
    note(what);
    return KSF_OK;
}

static void
trace_after(ksf_ctx *ctx, ksf_outcome *o, void *user)
{
    (void)ctx;
    char what[64];
    snprintf(what, sizeof what, "%s.after(%s)", (const char *)user,
             ksf_strerror(o->status));
    note(what);
}

static const ksf_middleware tracer = {"tracer", trace_before, trace_after};

/* A pipe: {"n": x} becomes {"n": x * 10} for the next callbacks and the handler. */
static ksf_err
times_ten(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)ctx;
    (void)user;
    json_int_t n = 0;
    if (json_unpack(*data, "{s:I}", "n", &n)) {
        return ksf_ctx_reply_error(ctx, "n is required");
    }
    json_t *next = json_pack("{s:I}", "n", n * 10);
    json_decref(*data);
    *data = next;
    note("pipe.before");
    return KSF_OK;
}

static const ksf_middleware pipe_mw = {"times_ten", times_ten, NULL};

static ksf_err
h_echo_noted(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    note("handler");
    *reply = json_deep_copy(data);
    return KSF_OK;
}

KSFT_TEST(test_pipeline_order, 90)
{
    rig r;
    rig_open(&r, NULL);
    /* Registered: pattern-scoped first (it still runs after the global ones), then
     * two global ones. */
    use_pattern(r.srv, "pl.order", &tracer, "P");
    use(r.srv, &tracer, "A");
    use(r.srv, &pipe_mw, NULL);
    use(r.srv, &tracer, "B");
    on_message(r.srv, "pl.order", h_echo_noted);
    rig_start(&r);
    call_expect(r.cli, "pl.order", "{\"n\":4}", KSF_OK, "{\"n\":40}");
    ck_assert_str_eq(trail, "A.before;pipe.before;B.before;P.before;handler;"
                            "P.after(success);B.after(success);A.after(success);");
    /* The pipe refuses: the befores after it, the handler and their afters do not
     * run; those before it see the refusal. */
    trail_reset();
    call_expect(r.cli, "pl.order", "{}", KSF_EREMOTE,
                "{\"status\":\"error\",\"message\":\"n is required\"}");
    ck_assert_str_eq(trail, "A.before;A.after(remote handler error);");
    rig_close(&r);
}
END_TEST

/* ---- a guard: exact reply bytes of the refusal ------------------------------------ */

static ksf_err
token_guard(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)data;
    size_t len = 0;
    const char *token = ksf_ctx_header(ctx, "x-token", &len);
    const char *want = user;
    if (!token || len != strlen(want) || memcmp(token, want, len)) {
        return ksf_ctx_forbid(ctx);
    }
    return KSF_OK;
}

static const ksf_middleware guard_mw = {"token", token_guard, NULL};

static atomic_int guarded_runs;

static ksf_err
h_guarded(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    atomic_fetch_add(&guarded_runs, 1);
    *reply = json_string("in");
    return KSF_OK;
}

/* Send request @p id to @p topic with a plain producer (replies on "<topic>.reply",
 * partition 0) and wait for its @p n replies: the collector holding them, which the
 * case destroys. For checks on the exact reply bytes. */
static ksft_collector *
raw_call(rig *r, const char *topic, const char *id, const char *value, size_t n)
{
    const char *addr = ksft_broker_address(r->b);
    char reply[96];
    snprintf(reply, sizeof reply, "%s.reply", topic);
    ksft_producer *p = ksft_producer_new(addr);
    ksft_collector *c = ksft_collector_new(addr, reply, 0);
    ksft_send_request(p, topic, 0, id, reply, 0, value, strlen(value), true);
    ck_assert_uint_eq(ksft_collector_wait_id(c, id, n, WAIT_MS), n);
    ksft_producer_destroy(p);
    return c;
}

static void
send_with_token(ksft_producer *p, const char *topic, const char *id, const char *token)
{
    ksfi_header h[] = {{"kafka_correlationId", id, strlen(id)},
                       {"kafka_replyTopic", "pl.guard.reply", 14},
                       {"kafka_replyPartition", "0", 1},
                       {"x-token", token, token ? strlen(token) : 0}};
    ksft_produce(p, topic, 0, NULL, 0, "{}", 2, h, token ? 4 : 3, true);
}

KSFT_TEST(test_pipeline_guard_refusal_bytes, 90)
{
    static const char *const replies[] = {"pl.guard.reply", NULL};
    rig r;
    rig_open(&r, replies);
    atomic_store(&guarded_runs, 0);
    ksft_broker_create_topic(r.b, "pl.guard", 1);
    use(r.srv, &guard_mw, "s3cret");
    on_message(r.srv, "pl.guard", h_guarded);
    rig_start(&r);
    const char *addr = ksft_broker_address(r.b);
    ksft_producer *p = ksft_producer_new(addr);
    ksft_collector *c = ksft_collector_new(addr, "pl.guard.reply", 0);
    send_with_token(p, "pl.guard", "g-1", NULL);
    send_with_token(p, "pl.guard", "g-2", "wrong");
    send_with_token(p, "pl.guard", "g-3", "s3cret");
    ck_assert_uint_eq(ksft_collector_wait_id(c, "g-3", 1, WAIT_MS), 1);
    ck_assert_uint_eq(ksft_collector_wait_id(c, "g-2", 1, WAIT_MS), 1);
    ck_assert_uint_eq(ksft_collector_wait_id(c, "g-1", 1, WAIT_MS), 1);
    /* What NestJS's ServerKafka sends when a guard returns false. */
    for (int i = 1; i <= 2; i++) {
        const char *id = i == 1 ? "g-1" : "g-2";
        ksft_assert_error_reply(
            ksft_collector_get_id(c, id, 0), id,
            "{\"status\":\"error\",\"message\":\"Forbidden resource\"}");
    }
    const ksft_msg *ok = ksft_collector_get_id(c, "g-3", 0);
    ck_assert_uint_eq(ok->len, 2);
    ck_assert_int_eq(memcmp(ok->value, "in", 2), 0);
    ck_assert_int_eq(atomic_load(&guarded_runs), 1);
    ck_assert_uint_eq(ksft_collector_count(c), 3);
    ksf_server_stats st = KSFT_WAIT_SERVER_STAT(r.srv, replies, 3, WAIT_MS);
    /* The worker counts a refusal once the before returned, which may be after the
     * broker acknowledged the Forbidden reply: wait for it, then check it exactly. */
    st = KSFT_WAIT_SERVER_STAT(r.srv, refused, 2, WAIT_MS);
    ck_assert_uint_eq(st.requests, 3);
    ck_assert_uint_eq(st.errors, 2);
    ck_assert_uint_eq(st.refused, 2); /* g-1 and g-2; g-3 passed */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_int_eq(ksf_server_write_prometheus(r.srv, f), KSF_OK);
    fclose(f);
    ck_assert_msg(strstr(text, "\n# TYPE ksf_server_refused_total counter\n"
                               "ksf_server_refused_total 2\n"),
                  "%s", text);
    free(text);
    json_t *j = NULL;
    ck_assert_int_eq(ksf_server_metrics_json(r.srv, &j), KSF_OK);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "refused")), 2);
    json_decref(j);
    ksft_collector_destroy(c);
    ksft_producer_destroy(p);
    rig_close(&r);
}
END_TEST

/* ---- validation ------------------------------------------------------------------ */

static ksf_err
h_order(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    const char *item = NULL;
    int qty = 0;
    ksf_err e =
        ksf_ctx_unpack(ctx, JSON_STRICT, "{s:s, s:i}", "item", &item, "qty", &qty);
    if (e) {
        return e;
    }
    *reply = json_pack("{s:s, s:i}", "item", item, "qty", qty);
    return KSF_OK;
}

/* A validation pipe on a nested shape, ahead of a handler that trusts it. */
static ksf_err
validate_items(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)data;
    (void)user;
    return ksf_ctx_unpack(ctx, JSON_VALIDATE_ONLY, "{s:[{s:s}{s:s}]}", "items", "sku",
                          "sku");
}

static const ksf_middleware validate_mw = {"validate", validate_items, NULL};

KSFT_TEST(test_pipeline_validation, 90)
{
    static const char *const replies[] = {"pl.valid.reply", NULL};
    rig r;
    rig_open(&r, replies);
    ksft_broker_create_topic(r.b, "pl.valid", 1);
    on_message(r.srv, "pl.valid", h_order);
    on_message(r.srv, "pl.items", ksft_echo);
    use_pattern(r.srv, "pl.items", &validate_mw, NULL);
    rig_start(&r);
    call_expect(r.cli, "pl.valid", "{\"item\":\"axe\",\"qty\":2}", KSF_OK,
                "{\"item\":\"axe\",\"qty\":2}");
    call_expect(r.cli, "pl.valid", "{\"item\":\"axe\",\"qty\":\"two\"}", KSF_EREMOTE,
                "{\"status\":\"error\",\"message\":\"invalid payload: qty: Expected "
                "integer, got string\"}");
    call_expect(r.cli, "pl.valid", "{\"item\":\"axe\"}", KSF_EREMOTE,
                "{\"status\":\"error\",\"message\":\"invalid payload: qty: Object item "
                "not found: qty\"}");
    call_expect(r.cli, "pl.valid", "{\"item\":\"axe\",\"qty\":2,\"x\":1}", KSF_EREMOTE,
                "{\"status\":\"error\",\"message\":\"invalid payload: $: 1 object "
                "item(s) left unpacked: x\"}");
    call_expect(r.cli, "pl.valid", "[1]", KSF_EREMOTE,
                "{\"status\":\"error\",\"message\":\"invalid payload: $: Expected "
                "object, got array\"}");
    call_expect(r.cli, "pl.items", "{\"items\":[{\"sku\":\"a\"},{\"sku\":\"b\"}]}",
                KSF_OK, "{\"items\":[{\"sku\":\"a\"},{\"sku\":\"b\"}]}");
    call_expect(r.cli, "pl.items", "{\"items\":[{\"sku\":\"a\"},{\"sku\":2}]}",
                KSF_EREMOTE,
                "{\"status\":\"error\",\"message\":\"invalid payload: items[1].sku: "
                "Expected string, got integer\"}");

    /* The exact reply bytes of one validation error, as a NestJS caller reads them. */
    ksft_collector *c = raw_call(&r, "pl.valid", "v-1", "{\"qty\":1}", 1);
    ksft_assert_error_reply(ksft_collector_get_id(c, "v-1", 0), "v-1",
                            "{\"status\":\"error\",\"message\":\"invalid payload: item: "
                            "Object item not found: item\"}");
    ksft_collector_destroy(c);
    rig_close(&r);
}
END_TEST

/* ---- interceptors and filters replace replies -------------------------------------- */

/* An interceptor wrapping every reply: {"data": reply}. */
static void
wrap_after(ksf_ctx *ctx, ksf_outcome *o, void *user)
{
    (void)ctx;
    (void)user;
    if (o->status == KSF_OK) {
        ksf_outcome_set_reply(o, json_pack("{s:O?}", "data", o->reply));
    }
}

static const ksf_middleware wrap_mw = {"wrap", NULL, wrap_after};

/* A filter mapping any error to a reply {"recovered": <the error's message>}. */
static void
recover_after(ksf_ctx *ctx, ksf_outcome *o, void *user)
{
    (void)ctx;
    (void)user;
    if (o->status == KSF_EREMOTE && o->error) {
        const char *msg = "?";
        json_unpack(o->error, "{s:s}", "message", &msg);
        note(o->refused ? "recover(refused)" : "recover(handler)");
        ksf_outcome_set_reply(o, json_pack("{s:s}", "recovered", msg));
    } else if (o->status != KSF_OK) {
        ksf_outcome_set_reply(o, json_string("internal, recovered"));
    }
}

static const ksf_middleware recover_mw = {"recover", NULL, recover_after};

/* A filter turning a reply into an error. */
static void
deny_after(ksf_ctx *ctx, ksf_outcome *o, void *user)
{
    (void)ctx;
    (void)user;
    json_t *err = json_pack("{s:i, s:s}", "code", 42, "message", "denied late");
    ck_assert_int_eq(ksf_outcome_set_error(o, err), KSF_OK);
    json_decref(err);
}

static const ksf_middleware deny_mw = {"deny", NULL, deny_after};

static ksf_err
h_value(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    *reply = json_integer(7);
    return KSF_OK;
}

KSFT_TEST(test_pipeline_replace_reply, 90)
{
    rig r;
    rig_open(&r, NULL);
    use_pattern(r.srv, "pl.wrap", &wrap_mw, NULL);
    on_message(r.srv, "pl.wrap", h_value);
    use_pattern(r.srv, "pl.fail", &recover_mw, NULL);
    on_message(r.srv, "pl.fail", ksft_refuse);
    use_pattern(r.srv, "pl.crash", &recover_mw, NULL);
    on_message(r.srv, "pl.crash", ksft_crash);
    /* The filter registered before the guard sees its refusal... */
    use_pattern(r.srv, "pl.guarded", &recover_mw, NULL);
    use_pattern(r.srv, "pl.guarded", &guard_mw, "never sent");
    on_message(r.srv, "pl.guarded", h_guarded);
    /* ...and one registered after it does not. */
    use_pattern(r.srv, "pl.guarded2", &guard_mw, "never sent");
    use_pattern(r.srv, "pl.guarded2", &recover_mw, NULL);
    on_message(r.srv, "pl.guarded2", h_guarded);
    use_pattern(r.srv, "pl.deny", &deny_mw, NULL);
    on_message(r.srv, "pl.deny", h_value);
    rig_start(&r);
    call_expect(r.cli, "pl.wrap", NULL, KSF_OK, "{\"data\":7}");
    call_expect(r.cli, "pl.fail", NULL, KSF_OK, "{\"recovered\":\"refused\"}");
    call_expect(r.cli, "pl.crash", NULL, KSF_OK, "\"internal, recovered\"");
    call_expect(r.cli, "pl.guarded", NULL, KSF_OK,
                "{\"recovered\":\"Forbidden resource\"}");
    call_expect(r.cli, "pl.guarded2", NULL, KSF_EREMOTE,
                "{\"status\":\"error\",\"message\":\"Forbidden resource\"}");
    call_expect(r.cli, "pl.deny", NULL, KSF_EREMOTE,
                "{\"code\":42,\"message\":\"denied late\"}");
    ck_assert_str_eq(trail, "recover(handler);recover(refused);");
    /* Registration is closed once the server runs. */
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_server_use(r.srv, &wrap_mw, NULL, &ei), KSF_ESTATE);
    ck_assert_str_eq(ei.text, "ksf_server_use: middleware \"wrap\" must be registered "
                              "before ksf_server_run");
    rig_close(&r);
}
END_TEST

/* ---- deferred and streamed replies ------------------------------------------------ */

static pthread_t worker_thread, after_thread;
static atomic_int finished;

static void *
finish_later(void *arg)
{
    ksf_ctx *ctx = arg;
    ksft_sleep_ms(50); /* the handler has returned by now, mostly: either way works */
    ksf_ctx_finish(ctx, KSF_OK, json_string("later"));
    atomic_fetch_add(&finished, 1);
    return NULL;
}

static ksf_err
h_defer(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    worker_thread = pthread_self();
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, finish_later, ctx), 0);
    pthread_detach(t);
    return ksf_ctx_defer(ctx);
}

static void
timing_after(ksf_ctx *ctx, ksf_outcome *o, void *user)
{
    (void)ctx;
    (void)user;
    after_thread = pthread_self();
    char what[64];
    snprintf(what, sizeof what, "timing(%s, >=50ms: %d)", ksf_strerror(o->status),
             o->duration_us >= 50000);
    note(what);
    ksf_outcome_set_reply(o, json_pack("{s:O?}", "data", o->reply));
}

static const ksf_middleware timing_mw = {"timing", NULL, timing_after};

static ksf_err
h_stream(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    for (int i = 1; i <= 2; i++) {
        json_t *v = json_integer(i);
        ck_assert_int_eq(ksf_ctx_stream(ctx, v, NULL), KSF_OK);
        json_decref(v);
    }
    *reply = json_integer(3);
    return KSF_OK;
}

static void
count_streamed(ksf_ctx *ctx, ksf_outcome *o, void *user)
{
    (void)ctx;
    (void)user;
    ksf_outcome_set_reply(o, json_pack("{s:O?, s:I}", "last", o->reply, "streamed",
                                       (json_int_t)o->streamed));
}

static const ksf_middleware stream_mw = {"streamed", NULL, count_streamed};

KSFT_TEST(test_pipeline_deferred_streamed, 90)
{
    rig r;
    rig_open(&r, NULL);
    atomic_store(&finished, 0);
    use_pattern(r.srv, "pl.defer", &timing_mw, NULL);
    on_message(r.srv, "pl.defer", h_defer);
    use_pattern(r.srv, "pl.stream", &stream_mw, NULL);
    on_message(r.srv, "pl.stream", h_stream);
    rig_start(&r);
    call_expect(r.cli, "pl.defer", NULL, KSF_OK, "{\"data\":\"later\"}");
    ck_assert_int_eq(ksft_wait_atomic(&finished, 1, WAIT_MS), 1);
    ck_assert_str_eq(trail, "timing(success, >=50ms: 1);");
    /* The after ran on the thread that finished, not on the worker. */
    ck_assert(!pthread_equal(worker_thread, after_thread));

    ksf_send_opts opts = {.flags = KSF_SEND_STREAM};
    ksft_stream_expect(r.cli, "pl.stream", NULL, &opts, KSF_OK,
                       "\"1\"|\"2\"|{\"last\":3,\"streamed\":2}(done)|", WAIT_MS);
    rig_close(&r);
}
END_TEST

/* ---- events refused by a guard ------------------------------------------------------
 */

static atomic_int event_runs, event_befores;

static ksf_err
event_guard(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)user;
    atomic_fetch_add(&event_befores, 1);
    if (json_is_string(*data) && !strcmp(json_string_value(*data), "skip")) {
        return ksf_ctx_forbid(ctx); /* KSF_SKIP on an event: dropped */
    }
    if (json_is_string(*data) && !strcmp(json_string_value(*data), "poison")) {
        return ksf_ctx_reply_error(ctx, "poison refused"); /* fails: retry, DLQ */
    }
    return KSF_OK;
}

static const ksf_middleware event_guard_mw = {"event_guard", event_guard, NULL};

/* Without any middleware: a handler's own KSF_SKIP drops the event too. */
static ksf_err
h_event_skips(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    atomic_fetch_add(&event_runs, 1);
    return ksf_ctx_forbid(ctx);
}

KSFT_TEST(test_pipeline_events, 90)
{
    rig r;
    rig_open(&r, NULL);
    atomic_store(&event_runs, 0);
    atomic_store(&event_befores, 0);
    ksft_broker_create_topic(r.b, "pl.ev", 1);
    ksft_broker_create_topic(r.b, "pl.ev.dlq", 1);
    ksft_broker_create_topic(r.b, "pl.ev2", 1);
    static const char *const settings[][2] = {{"server.event.retries", "1"},
                                              {"server.event.retry.backoff.ms", "20"}};
    ksft_config_set_all(r.cfg, settings, KSFT_NKV(settings));
    ksf_server_destroy(r.srv);
    r.srv = ksft_server(r.cfg);
    use(r.srv, &event_guard_mw, NULL);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_server_on_event(r.srv, "pl.ev", ksft_count, &event_runs, &ei),
                     KSF_OK);
    rig_start(&r);
    /* A second server, no middleware, whose handler skips: no retry, no dead letter. */
    ksf_config *cfg2 = NULL;
    ck_assert_int_eq(ksf_config_dup(r.cfg, &cfg2), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg2, "group.id", "pl-skipper", &ei), KSF_OK);
    ksf_server *srv2 = ksft_server(cfg2);
    ck_assert_int_eq(ksf_server_on_event(srv2, "pl.ev2", h_event_skips, NULL, &ei),
                     KSF_OK);
    ksft_service s2 = {0};
    ksft_service_start(&s2, srv2, WAIT_MS);
    const char *addr = ksft_broker_address(r.b);
    ksft_producer *p = ksft_producer_new(addr);
    ksft_produce(p, "pl.ev", 0, NULL, 0, "skip", 4, NULL, 0, true);
    ksft_produce(p, "pl.ev", 0, NULL, 0, "poison", 6, NULL, 0, true);
    ksft_produce(p, "pl.ev", 0, NULL, 0, "fine", 4, NULL, 0, true);
    ksf_server_stats st = KSFT_WAIT_SERVER_STAT(r.srv, dead_lettered, 1, WAIT_MS);
    ck_assert_int_eq(ksft_wait_atomic(&event_runs, 1, WAIT_MS), 1);
    ck_assert_int_eq(
        ksft_wait_committed(addr, "nestjs-group-server", "pl.ev", 1, 3, WAIT_MS), 3);
    st = KSFT_WAIT_SERVER_STAT(r.srv, events, 3, WAIT_MS);
    ck_assert_uint_eq(st.events, 3);
    ck_assert_uint_eq(st.event_retries, 1); /* the poison only: skip is not a failure */
    ck_assert_uint_eq(st.dead_lettered, 1);
    ck_assert_uint_eq(st.errors, 1);  /* the dead letter, as without a pipeline */
    ck_assert_uint_eq(st.refused, 3); /* skip once, poison on its run and its retry */
    /* skip once, poison twice (run and retry), fine once. */
    ck_assert_int_eq(atomic_load(&event_befores), 4);
    ck_assert_int_eq(atomic_load(&event_runs), 1);
    ksft_collector *dlq = ksft_collector_new(addr, "pl.ev.dlq", 0);
    ck_assert_uint_eq(ksft_collector_poll(dlq, 5000), 1);
    const ksft_msg *m = ksft_collector_at(dlq, 0);
    ck_assert_uint_eq(m->len, 6);
    ck_assert_int_eq(memcmp(m->value, "poison", 6), 0);
    ksft_assert_header(m, "ksf_dlq_error", "poison refused", 14);
    ksft_collector_destroy(dlq);
    ksft_produce(p, "pl.ev2", 0, NULL, 0, "x", 1, NULL, 0, true);
    ck_assert_int_eq(ksft_wait_atomic(&event_runs, 2, WAIT_MS), 2);
    ck_assert_int_eq(
        ksft_wait_committed(addr, "pl-skipper-server", "pl.ev2", 1, 1, WAIT_MS), 1);
    ksf_server_stats st2 = KSFT_WAIT_SERVER_STAT(srv2, events, 1, WAIT_MS);
    ck_assert_uint_eq(st2.event_retries, 0);
    ck_assert_uint_eq(st2.errors, 0);
    ck_assert_uint_eq(st2.refused, 0); /* the handler's own skip: no before refused */
    ck_assert_int_eq(atomic_load(&event_runs), 2);
    ksft_service_stop(&s2);
    ksf_config_destroy(cfg2);
    ksft_producer_destroy(p);
    rig_close(&r);
}
END_TEST

/* ---- controller state on two servers ------------------------------------------------
 */

typedef struct shop {
    const char *name;
    atomic_int served;
} shop;

KSF_CONTROLLER_MESSAGE_PATTERN("pl_shop", "pl.shop.name", shop_name)
{
    shop *s = ksf_ctx_controller(ctx);
    ck_assert_ptr_eq(s, ksf_ctx_user(ctx));
    atomic_fetch_add(&s->served, 1);
    *reply = json_string(s->name);
    return KSF_OK;
}

static ksf_err
tag_before(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)data;
    shop *s = ksf_ctx_controller(ctx);
    ck_assert_ptr_eq(s, user); /* the controller middleware got the same state */
    return KSF_OK;
}

static void
tag_after(ksf_ctx *ctx, ksf_outcome *o, void *user)
{
    (void)ctx;
    shop *s = user;
    ksf_outcome_set_reply(o, json_pack("{s:O, s:s}", "name", o->reply, "via", s->name));
}

static const ksf_middleware tag_mw = {"tag", tag_before, tag_after};

static ksf_err
h_plain(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    /* Not a controller handler: no state, whatever the user pointer. */
    *reply = json_boolean(ksf_ctx_controller(ctx) == NULL && ksf_ctx_user(ctx) != NULL);
    return KSF_OK;
}

KSFT_TEST(test_pipeline_controller_state, 90)
{
    static const char *const replies[] = {"pl.shop.name.reply", NULL};
    rig r;
    rig_open(&r, replies);
    ksft_broker_create_topic(r.b, "pl.shop.name", 1);
    shop north = {"north", 0}, south = {"south", 0};
    ksf_errinfo ei = {0};
    /* Two servers in two groups: each gets every request, with its own state. */
    ksf_config *cfg2 = NULL;
    ck_assert_int_eq(ksf_config_dup(r.cfg, &cfg2), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg2, "group.id", "pl-south", &ei), KSF_OK);
    ksf_server *srv2 = ksft_server(cfg2);
    ck_assert_msg(ksf_server_mount_controller(r.srv, "pl_shop", &north, &ei) == KSF_OK,
                  "%s", ei.text);
    ck_assert_msg(ksf_server_mount_controller(srv2, "pl_shop", &south, &ei) == KSF_OK,
                  "%s", ei.text);
    ck_assert_int_eq(ksf_server_use_controller(r.srv, "pl_shop", &tag_mw, &north, &ei),
                     KSF_OK);
    ck_assert_int_eq(ksf_server_use_controller(srv2, "pl_shop", &tag_mw, &south, &ei),
                     KSF_OK);
    ck_assert_int_eq(ksf_server_on_message(r.srv, "pl.plain", h_plain, &north, &ei),
                     KSF_OK);
    ksft_service s2 = {0};
    ksft_service_start(&s2, srv2, WAIT_MS);
    rig_start(&r);

    ksft_collector *c = raw_call(&r, "pl.shop.name", "c-1", "{}", 2);
    char got[2][64];
    for (size_t i = 0; i < 2; i++) {
        const ksft_msg *m = ksft_collector_get_id(c, "c-1", i);
        snprintf(got[i], sizeof got[i], "%.*s", (int)m->len, (const char *)m->value);
    }
    if (strcmp(got[0], got[1]) > 0) {
        char t[64];
        memcpy(t, got[0], sizeof t);
        memcpy(got[0], got[1], sizeof t);
        memcpy(got[1], t, sizeof t);
    }
    ck_assert_str_eq(got[0], "{\"name\":\"north\",\"via\":\"north\"}");
    ck_assert_str_eq(got[1], "{\"name\":\"south\",\"via\":\"south\"}");
    ck_assert_int_eq(atomic_load(&north.served), 1);
    ck_assert_int_eq(atomic_load(&south.served), 1);
    /* "true" is text on the wire, which NestJS's parser reads as a string. */
    call_expect(r.cli, "pl.plain", NULL, KSF_OK, "\"true\"");
    ksft_collector_destroy(c);
    ksft_service_stop(&s2);
    ksf_config_destroy(cfg2);
    rig_close(&r);
}
END_TEST

/* A controller or pattern middleware nobody uses stops run with the name. */
KSFT_TEST(test_pipeline_unused_scope, 30)
{
    ksf_config *cfg = NULL;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ksf_server *srv = ksft_server(cfg);
    ksf_errinfo ei = {0};
    on_message(srv, "pl.x", ksft_echo);
    ck_assert_int_eq(ksf_server_use_controller(srv, "nope", &tag_mw, NULL, &ei), KSF_OK);
    ck_assert_int_eq(ksf_server_run(srv, &ei), KSF_ENOENT);
    ck_assert_str_eq(ei.text, "middleware \"tag\" was added to controller \"nope\", "
                              "which has no handler on this server; mount it or fix "
                              "the name");
    ksf_server_destroy(srv);
    srv = ksft_server(cfg);
    on_message(srv, "pl.x", ksft_echo);
    use_pattern(srv, "pl.y", &tag_mw, NULL);
    ck_assert_int_eq(ksf_server_run(srv, &ei), KSF_ENOENT);
    ck_assert_str_eq(ei.text, "middleware \"tag\" was added to pattern \"pl.y\", which "
                              "has no handler on this server; mount it or fix the name");
    static const ksf_middleware empty = {"empty", NULL, NULL};
    ck_assert_int_eq(ksf_server_use(srv, &empty, NULL, &ei), KSF_EINVAL);
    ck_assert_str_eq(ei.text, "ksf_server_use: middleware \"empty\" has neither a "
                              "before nor an after callback; set at least one");
    ksf_server_destroy(srv);
    ksf_config_destroy(cfg);
}
END_TEST

/* ---- a handler calling another service --------------------------------------------- */

typedef struct backend_seen {
    char trace_id[40];
    int64_t deadline_ms;
    atomic_int calls;
} backend_seen;

static backend_seen seen;
static ksf_client *front_client;

static ksf_err
h_back(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    snprintf(seen.trace_id, sizeof seen.trace_id, "%s", ksf_ctx_trace_id(ctx));
    seen.deadline_ms = ksf_ctx_deadline_ms(ctx);
    atomic_fetch_add(&seen.calls, 1);
    json_int_t n = 0;
    json_unpack((json_t *)data, "{s:I}", "n", &n);
    *reply = json_pack("{s:I}", "price", n * 3);
    return KSF_OK;
}

/* The backend's reply finishes the front request (client reply thread). */
static void
on_back_reply(const ksf_reply *r, void *user)
{
    ksf_ctx *ctx = user;
    if (r->err == KSF_OK) {
        ksf_ctx_finish(ctx, KSF_OK, json_pack("{s:O}", "quote", (json_t *)r->value));
    } else if (r->err == KSF_EREMOTE) {
        ksf_ctx_reply_error_json(ctx, r->value);
        ksf_ctx_finish(ctx, KSF_EREMOTE, NULL);
    } else {
        ksf_ctx_reply_error(ctx, r->text);
        ksf_ctx_finish(ctx, KSF_EREMOTE, NULL);
    }
}

static ksf_err
h_front(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    /* On the handler's thread the client carries its deadline and trace itself. */
    ksf_err e =
        ksf_client_send(front_client, "pl.back", data, NULL, on_back_reply, ctx, NULL);
    if (e) {
        return e;
    }
    return ksf_ctx_defer(ctx);
}

KSFT_TEST(test_pipeline_call_other_service, 90)
{
    rig r;
    rig_open(&r, NULL);
    memset(&seen, 0, sizeof seen);
    use_pattern(r.srv, "pl.front", &timing_mw, NULL);
    on_message(r.srv, "pl.front", h_front);
    on_message(r.srv, "pl.back", h_back);
    front_client = ksft_client(r.cfg);
    rig_start(&r);
    static const char tp[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    ksf_send_opts opts = {.timeout_ms = 15000, .traceparent = tp};
    json_t *req = json_pack("{s:i}", "n", 5);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t wall = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    ksft_stream_expect(r.cli, "pl.front", req, &opts, KSF_OK,
                       "{\"data\":{\"quote\":{\"price\":15}}}(done)|", WAIT_MS);
    ck_assert_int_eq(atomic_load(&seen.calls), 1);
    /* The backend ran in the caller's trace, within the caller's deadline. */
    ck_assert_str_eq(seen.trace_id, "0af7651916cd43dd8448eb211c80319c");
    ck_assert_int_gt(seen.deadline_ms, wall);
    ck_assert_int_le(seen.deadline_ms, wall + 15000 + 50);
    json_decref(req);
    ksf_client_destroy(front_client);
    rig_close(&r);
}
END_TEST

KSFT_MAIN("pipeline")
