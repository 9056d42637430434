/*
 * Raw handlers (KSF_HANDLER_RAW: the *_PATTERN_RAW macros, ksf_server_on_message_raw,
 * ksf_server_on_event_raw): the value is not decoded before the call and `data` is
 * NULL; the handler echoes ksf_ctx_value() byte for byte with ksf_ctx_set_reply_raw;
 * ksf_ctx_data() and ksf_ctx_unpack() decode on first use, once per call; befores see
 * the payload as for any handler, and what they leave reaches ksf_ctx_data(); events
 * run; plain handlers still get their tree. Driven by a plain librdkafka producer and
 * a reply collector (tests/support/server_probe.h) for the exact reply bytes.
 *
 * White box: the handlers look at the ctx's decode state (server/ctx.h: `lazy`,
 * `decoded`) to prove that nothing decoded the value before they asked.
 */
#include "base/alloc.h"
#include "server/ctx.h"
#include "server/server.h"
#include "server_probe.h"
#include "service.h"
#include "suite.h"

#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the handlers saw that they must not have (asserted 0 by the cases): a non-NULL
 * `data` in a raw handler, a value decoded before the raw handler asked, ... */
static atomic_int bad_data;    /* a raw handler got data != NULL */
static atomic_int bad_eager;   /* a raw handler's value was decoded before it asked */
static atomic_int bad_cache;   /* ksf_ctx_data decoded twice in one call */
static atomic_int raw_runs;    /* raw handler calls (requests) */
static atomic_int plain_runs;  /* plain handler calls with their tree as data */
static atomic_int event_runs;  /* raw event handler calls */
static atomic_int event_bytes; /* the bytes of the events' values, summed */

/* Counter @p var is exactly @p n (its name in the failure, not its expansion). */
#define ASSERT_COUNT(var, n)                                                             \
    do {                                                                                 \
        int got_ = atomic_load(&(var));                                                  \
        ck_assert_msg(got_ == (n), "%s is %d, expected %d", #var, got_, (n));            \
    } while (0)

static void
reset_counters(void)
{
    atomic_store(&bad_data, 0);
    atomic_store(&bad_eager, 0);
    atomic_store(&bad_cache, 0);
    atomic_store(&raw_runs, 0);
    atomic_store(&plain_runs, 0);
    atomic_store(&event_runs, 0);
    atomic_store(&event_bytes, 0);
}

/* A raw handler's entry: data NULL, and the value not decoded yet. */
static void
raw_entry(ksf_ctx *ctx, const json_t *data)
{
    atomic_fetch_add(&raw_runs, 1);
    if (data) {
        atomic_fetch_add(&bad_data, 1);
    }
    if (!ctx->lazy || ctx->decoded || ctx->data) {
        atomic_fetch_add(&bad_eager, 1);
    }
}

/* Echo the value's bytes as they came; a null value gets a null reply. */
static ksf_err
echo_value(ksf_ctx *ctx)
{
    size_t len = 0;
    const void *v = ksf_ctx_value(ctx, &len);
    return v ? ksf_ctx_set_reply_raw(ctx, v, len) : KSF_OK;
}

static ksf_err
h_raw_echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    raw_entry(ctx, data);
    return echo_value(ctx);
}

/* Reply with json_dumps of ksf_ctx_data() (asked twice: one decode, the same tree),
 * or the text "no data" when it is NULL. */
static ksf_err
dump_data(ksf_ctx *ctx)
{
    const json_t *a = ksf_ctx_data(ctx);
    const json_t *b = ksf_ctx_data(ctx);
    if (a != b || ctx->lazy) {
        atomic_fetch_add(&bad_cache, 1);
    }
    if (!a) {
        return ksf_ctx_set_reply_raw(ctx, "no data", 7);
    }
    char *text = json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        return KSF_ENOMEM;
    }
    ksf_err e = ksf_ctx_set_reply_raw(ctx, text, strlen(text));
    free(text);
    return e;
}

static ksf_err
h_raw_data(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    raw_entry(ctx, data);
    return dump_data(ctx);
}

static ksf_err
h_raw_unpack(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    raw_entry(ctx, data);
    const char *item = NULL;
    int qty = 0;
    ksf_err e =
        ksf_ctx_unpack(ctx, JSON_STRICT, "{s:s, s:i}", "item", &item, "qty", &qty);
    if (e) {
        return e;
    }
    *reply = json_pack("{s:s, s:i}", "item", item, "qty", qty * 2);
    return KSF_OK;
}

/* A plain handler: its tree is decoded before the call, as before raw handlers. */
static ksf_err
h_plain_echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    if (data && !ctx->lazy && ctx->data == data && !ctx->decoded) {
        atomic_fetch_add(&plain_runs, 1);
    }
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

static ksf_server *
probe_server(ksft_probe *p, const char *const *topics)
{
    ksft_probe_open(p, &(ksft_world_spec){.topics = topics});
    return ksft_world_server(&p->w, NULL);
}

static void
on_raw(ksf_server *srv, const char *pattern, ksf_handler_fn fn, bool event)
{
    ksf_errinfo ei = {0};
    ksf_err e = event ? ksf_server_on_event_raw(srv, pattern, fn, NULL, &ei)
                      : ksf_server_on_message_raw(srv, pattern, fn, NULL, &ei);
    ck_assert_msg(e == KSF_OK, "registering raw \"%s\": %s", pattern, ei.text);
}

/* The reply to @p value on @p topic is exactly the @p want_len bytes of @p want
 * (NULL: a null value). */
static void
expect_value(ksft_probe *p, const char *topic, const char *id, const void *value,
             size_t len, const char *want, size_t want_len)
{
    ksft_assert_value_reply(ksft_probe_request(p, topic, id, value, len), id, want,
                            want_len);
}

KSFT_TEST(test_raw_handler_echo_bytes, 60)
{
    static const char *const topics[] = {"raw.echo", "plain.echo", NULL};
    reset_counters();
    ksft_probe p;
    ksf_server *srv = probe_server(&p, topics);
    on_raw(srv, "raw.echo", h_raw_echo, false);
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_server_on_message(srv, "plain.echo", h_plain_echo, NULL, &ei),
                     KSF_OK);
    ck_assert(!ksfi_server_find(srv, "plain.echo")->raw);
    ck_assert(ksfi_server_find(srv, "raw.echo")->raw);
    ksft_world_serve(&p.w, srv);

    /* Byte for byte: the spaces and key order of the request stay (a decoded tree
     * re-encoded would be compact, as the plain handler's reply below is). */
    const char obj[] = "{\"b\": [true, null], \"a\": 1}";
    expect_value(&p, "raw.echo", "r-obj", obj, strlen(obj), obj, strlen(obj));
    expect_value(&p, "raw.echo", "r-str", "hello world", 11, "hello world", 11);
    const char bin[] = {0x00, 0x01, (char)0xff, 0x7b};
    expect_value(&p, "raw.echo", "r-bin", bin, sizeof bin, bin, sizeof bin);
    expect_value(&p, "raw.echo", "r-null", NULL, 0, NULL, 0);
    /* Not UTF-8: a decode would replace the byte with U+FFFD; the raw echo does not. */
    expect_value(&p, "raw.echo", "r-latin1", "caf\xe9", 4, "caf\xe9", 4);
    const char compact[] = "{\"b\":[true,null],\"a\":1}";
    expect_value(&p, "plain.echo", "p-obj", obj, strlen(obj), compact, strlen(compact));

    ksft_probe_stop(&p, 6);
    KSFT_ASSERT_SERVER_STATS(p.w.srv, .requests = 6, .replies = 6);
    ASSERT_COUNT(raw_runs, 5);
    ASSERT_COUNT(bad_data, 0);
    ASSERT_COUNT(bad_eager, 0);
    ASSERT_COUNT(plain_runs, 1);
    ksft_probe_close(&p);
}
END_TEST

KSFT_TEST(test_raw_handler_lazy_data_and_unpack, 60)
{
    static const char *const topics[] = {"raw.data", "raw.unpack", NULL};
    reset_counters();
    ksft_probe p;
    ksf_server *srv = probe_server(&p, topics);
    on_raw(srv, "raw.data", h_raw_data, false);
    on_raw(srv, "raw.unpack", h_raw_unpack, false);
    ksft_world_serve(&p.w, srv);

    /* ksf_ctx_data decodes by NestJS's rules, as a plain handler's data. */
    const char obj[] = "{\"b\": [1, 2], \"a\": \"x\"}";
    const char obj_dump[] = "{\"b\":[1,2],\"a\":\"x\"}";
    expect_value(&p, "raw.data", "d-obj", obj, strlen(obj), obj_dump, strlen(obj_dump));
    expect_value(&p, "raw.data", "d-str", "hello", 5, "\"hello\"", 7);
    expect_value(&p, "raw.data", "d-badjson", "{nope", 5, "\"{nope\"", 7);
    expect_value(&p, "raw.data", "d-null", NULL, 0, "null", 4);
    expect_value(&p, "raw.data", "d-bin", "\x00\x01", 2, "no data", 7);

    const char good[] = "{\"item\":\"axe\",\"qty\":2}";
    const char doubled[] = "{\"item\":\"axe\",\"qty\":4}";
    expect_value(&p, "raw.unpack", "u-ok", good, strlen(good), doubled, strlen(doubled));
    const char wrong[] = "{\"item\":\"axe\",\"qty\":\"two\"}";
    ksft_assert_error_reply(
        ksft_probe_request(&p, "raw.unpack", "u-bad", wrong, strlen(wrong)), "u-bad",
        "{\"status\":\"error\",\"message\":\"invalid payload: qty: "
        "Expected integer, got string\"}");
    ksft_assert_error_reply(ksft_probe_request(&p, "raw.unpack", "u-bin", "\x00\x01", 2),
                            "u-bin",
                            "{\"status\":\"error\",\"message\":\"invalid payload: $: "
                            "Expected JSON, got a binary value\"}");

    ksft_probe_stop(&p, 8);
    KSFT_ASSERT_SERVER_STATS(p.w.srv, .requests = 8, .replies = 8, .errors = 2);
    ASSERT_COUNT(raw_runs, 8);
    ASSERT_COUNT(bad_data, 0);
    ASSERT_COUNT(bad_eager, 0);
    ASSERT_COUNT(bad_cache, 0);
    ksft_probe_close(&p);
}
END_TEST

/* ---- middlewares on a raw handler ------------------------------------------------ */

/* A pipe: {"n": x} becomes {"n": x * 10}; it reads *data, which must be the tree. */
static ksf_err
times_ten(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)user;
    json_int_t n = 0;
    if (json_unpack(*data, "{s:I}", "n", &n)) {
        return ksf_ctx_reply_error(ctx, "n is required");
    }
    json_t *next = json_pack("{s:I}", "n", n * 10);
    json_decref(*data);
    *data = next;
    return KSF_OK;
}

static const ksf_middleware pipe_mw = {"times_ten", times_ten, NULL};

/* A validating before: refuses with ksf_ctx_unpack's error. */
static ksf_err
validate_sku(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)data;
    (void)user;
    return ksf_ctx_unpack(ctx, JSON_VALIDATE_ONLY, "{s:s}", "sku");
}

static const ksf_middleware validate_mw = {"validate", validate_sku, NULL};

/* An after alone: the handler's value stays undecoded (raw_entry checks). */
static void
tag_after(ksf_ctx *ctx, ksf_outcome *o, void *user)
{
    (void)ctx;
    (void)user;
    if (o->status == KSF_OK) {
        ksf_ctx_add_reply_header(ctx, "x-after", "1", 1);
    }
}

static const ksf_middleware after_mw = {"after", NULL, tag_after};

/* After a before ran, the value was decoded for it: data is still NULL, and
 * ksf_ctx_data gives what the befores left. */
static ksf_err
h_raw_piped(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    atomic_fetch_add(&raw_runs, 1);
    if (data) {
        atomic_fetch_add(&bad_data, 1);
    }
    return dump_data(ctx);
}

static void
use_pattern(ksf_server *srv, const char *pattern, const ksf_middleware *mw)
{
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_use_pattern(srv, pattern, mw, NULL, &ei) == KSF_OK, "%s",
                  ei.text);
}

KSFT_TEST(test_raw_handler_middleware, 60)
{
    static const char *const topics[] = {"raw.piped", "raw.checked", "raw.after", NULL};
    reset_counters();
    ksft_probe p;
    ksf_server *srv = probe_server(&p, topics);
    on_raw(srv, "raw.piped", h_raw_piped, false);
    on_raw(srv, "raw.checked", h_raw_piped, false);
    on_raw(srv, "raw.after", h_raw_echo, false);
    use_pattern(srv, "raw.piped", &pipe_mw);
    use_pattern(srv, "raw.checked", &validate_mw);
    use_pattern(srv, "raw.after", &after_mw);
    ksft_world_serve(&p.w, srv);

    /* The pipe's replacement, through ksf_ctx_data. */
    expect_value(&p, "raw.piped", "m-pipe", "{\"n\": 4}", 8, "{\"n\":40}", 8);
    ksft_assert_error_reply(ksft_probe_request(&p, "raw.piped", "m-pipe-bad", "[]", 2),
                            "m-pipe-bad",
                            "{\"status\":\"error\",\"message\":\"n is required\"}");
    /* A validating before: passes (the handler sees the same tree), or refuses. */
    expect_value(&p, "raw.checked", "m-ok", "{\"sku\": \"a\"}", 12, "{\"sku\":\"a\"}",
                 11);
    ksft_assert_error_reply(
        ksft_probe_request(&p, "raw.checked", "m-bad", "{\"sku\":1}", 9), "m-bad",
        "{\"status\":\"error\",\"message\":\"invalid payload: sku: "
        "Expected string, got integer\"}");
    /* An after-only chain decodes nothing: raw_entry saw the value undecoded. */
    const ksft_msg *m = ksft_probe_request(&p, "raw.after", "m-after", "{ \"x\" }", 7);
    ksft_assert_bytes(m->value, m->len, "{ \"x\" }", 7, "raw.after's value");
    ksft_assert_header(m, "x-after", "1", 1);

    ksft_probe_stop(&p, 5);
    KSFT_ASSERT_SERVER_STATS(p.w.srv, .requests = 5, .replies = 5, .errors = 2,
                             .refused = 2);
    ASSERT_COUNT(raw_runs, 3); /* two refused before the handler */
    ASSERT_COUNT(bad_data, 0);
    ASSERT_COUNT(bad_eager, 0);
    ASSERT_COUNT(bad_cache, 0);
    ksft_probe_close(&p);
}
END_TEST

/* ---- events ---------------------------------------------------------------------- */

static ksf_err
h_raw_event(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)reply;
    if (data) {
        atomic_fetch_add(&bad_data, 1);
    }
    if (!ctx->lazy || ctx->decoded || !ksf_ctx_is_event(ctx)) {
        atomic_fetch_add(&bad_eager, 1);
    }
    size_t len = 0;
    ksf_ctx_value(ctx, &len);
    atomic_fetch_add(&event_bytes, (int)len);
    atomic_fetch_add(&event_runs, 1);
    return KSF_OK;
}

KSFT_TEST(test_raw_handler_events, 60)
{
    static const char *const topics[] = {"raw.ev", NULL};
    reset_counters();
    ksft_probe p;
    ksf_server *srv = probe_server(&p, topics);
    on_raw(srv, "raw.ev", h_raw_event, true);
    ksft_world_serve(&p.w, srv);
    ksft_produce(p.prod, "raw.ev", 0, NULL, 0, "{\"a\":1}", 7, NULL, 0, true);
    ksft_produce(p.prod, "raw.ev", 0, NULL, 0, "\x00\x01\x02", 3, NULL, 0, true);
    ksft_produce(p.prod, "raw.ev", 0, NULL, 0, NULL, 0, NULL, 0, true);
    KSFT_PROBE_WAIT_STAT(&p, events, 3);
    ksft_probe_stop(&p, 0);
    KSFT_ASSERT_SERVER_STATS(p.w.srv, .events = 3);
    ASSERT_COUNT(event_runs, 3);
    ASSERT_COUNT(event_bytes, 10);
    ASSERT_COUNT(bad_data, 0);
    ASSERT_COUNT(bad_eager, 0);
    ksft_probe_close(&p);
}
END_TEST

/* ---- the macro forms ------------------------------------------------------------- */

KSF_MESSAGE_PATTERN_RAW("rawm.echo", m_echo)
{
    raw_entry(ctx, data);
    return echo_value(ctx);
}

KSF_EVENT_PATTERN_RAW("rawm.ev", m_event)
{
    return h_raw_event(ctx, data, reply);
}

KSF_CONTROLLER_MESSAGE_PATTERN_RAW("raw_ctl", "rawc.data", c_data)
{
    raw_entry(ctx, data);
    return dump_data(ctx);
}

KSF_CONTROLLER_EVENT_PATTERN_RAW("raw_ctl", "rawc.ev", c_event)
{
    return h_raw_event(ctx, data, reply);
}

/* A plain macro beside them: flags 0, its tree decoded before the call. */
KSF_CONTROLLER_MESSAGE_PATTERN("raw_ctl", "rawc.plain", c_plain)
{
    return h_plain_echo(ctx, data, reply);
}

KSFT_TEST(test_raw_handler_macros, 60)
{
    static const char *const topics[] = {"rawm.echo", "rawm.ev",    "rawc.data",
                                         "rawc.ev",   "rawc.plain", NULL};
    ck_assert_uint_eq(ksf__def_m_echo.flags, KSF_HANDLER_RAW);
    ck_assert_uint_eq(ksf__def_m_event.flags, KSF_HANDLER_RAW);
    ck_assert_uint_eq(ksf__def_c_data.flags, KSF_HANDLER_RAW);
    ck_assert_uint_eq(ksf__def_c_event.flags, KSF_HANDLER_RAW);
    ck_assert_uint_eq(ksf__def_c_plain.flags, 0);
    ck_assert_int_eq(ksf__def_m_event.kind, KSF_HANDLER_EVENT);
    ck_assert_str_eq(ksf__def_c_data.controller, "raw_ctl");
    reset_counters();
    ksft_probe p;
    ksf_server *srv = probe_server(&p, topics);
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_server_mount(srv, KSF_DEFAULT_CONTROLLER, &ei) == KSF_OK, "%s",
                  ei.text);
    ck_assert_msg(ksf_server_mount(srv, "raw_ctl", &ei) == KSF_OK, "%s", ei.text);
    ck_assert(ksfi_server_find(srv, "rawm.echo")->raw);
    ck_assert(ksfi_server_find(srv, "rawc.ev")->raw);
    ck_assert(!ksfi_server_find(srv, "rawc.plain")->raw);
    ksft_world_serve(&p.w, srv);

    const char obj[] = "{\"k\": \"v\"}";
    expect_value(&p, "rawm.echo", "x-echo", obj, strlen(obj), obj, strlen(obj));
    expect_value(&p, "rawc.data", "x-data", obj, strlen(obj), "{\"k\":\"v\"}", 9);
    expect_value(&p, "rawc.plain", "x-plain", obj, strlen(obj), "{\"k\":\"v\"}", 9);
    ksft_produce(p.prod, "rawm.ev", 0, NULL, 0, "abcd", 4, NULL, 0, true);
    ksft_produce(p.prod, "rawc.ev", 0, NULL, 0, "ef", 2, NULL, 0, true);
    KSFT_PROBE_WAIT_STAT(&p, events, 2);

    ksft_probe_stop(&p, 3);
    KSFT_ASSERT_SERVER_STATS(p.w.srv, .requests = 3, .replies = 3, .events = 2);
    ASSERT_COUNT(raw_runs, 2);
    ASSERT_COUNT(plain_runs, 1);
    ASSERT_COUNT(event_runs, 2);
    ASSERT_COUNT(event_bytes, 6);
    ASSERT_COUNT(bad_data, 0);
    ASSERT_COUNT(bad_eager, 0);
    ASSERT_COUNT(bad_cache, 0);
    ksft_probe_close(&p);
}
END_TEST

/* ---- the lazy decode on its own: out of memory ------------------------------------ */

static char last_log[512];

static void
keep_log(void *user, ksf_log_level level, const char *component, const char *message)
{
    (void)user;
    snprintf(last_log, sizeof last_log, "%d %s: %s", (int)level, component, message);
}

/* A failed decode (the sanitizer's copy of a non-UTF-8 value refused) is KSF_ENOMEM,
 * logged, and leaves the value to decode on a later ask; the next ask decodes it once. */
KSFT_TEST(test_raw_handler_decode_out_of_memory, 10)
{
    ksfi_logger log = {.fn = keep_log, .max_level = KSF_LOG_DEBUG};
    ksf_ctx ctx = {0};
    ksfi_ctx_init(&ctx, NULL, &log, 1000);
    ctx.topic = "raw.oom";
    ctx.partition = 2;
    ctx.offset = 7;
    ctx.value = "caf\xe9";
    ctx.value_len = 4;
    ctx.lazy = true;
    ctx.in_call = true;

    ksfi_alloc_fail_after(1, 1);
    ck_assert_int_eq(ksfi_ctx_decode(&ctx), KSF_ENOMEM);
    ck_assert_ptr_null(ksf_ctx_data(&ctx));
    int qty = 0;
    ck_assert_int_eq(ksf_ctx_unpack(&ctx, 0, "{s:i}", "qty", &qty), KSF_ENOMEM);
    ksfi_alloc_fail_after(0, 0);
    ck_assert_str_eq(last_log, "3 server: out of memory decoding the value of "
                               "raw.oom[2]@7 for its raw handler");
    ck_assert(ctx.lazy);
    ck_assert_ptr_null(ctx.decoded);

    const json_t *d = ksf_ctx_data(&ctx);
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(json_string_value(d), "caf\xef\xbf\xbd"); /* U+FFFD */
    ck_assert_ptr_eq(ctx.decoded, d);
    ck_assert(!ctx.lazy);
    ck_assert_ptr_eq(ksf_ctx_data(&ctx), d);
    ck_assert_int_eq(ksfi_ctx_decode(&ctx), KSF_OK); /* no-op once decoded */
    ck_assert_ptr_eq(ctx.decoded, d);
    ksfi_ctx_drop_decoded(&ctx);
    ck_assert_ptr_null(ctx.decoded);
    ck_assert_ptr_null(ctx.data);
    ck_assert(!ctx.lazy);
    ksfi_ctx_reset(&ctx);
}
END_TEST

KSFT_MAIN("raw_handler")
