/*
 * ksf_server, replies and commits: driven by a plain librdkafka producer and a reply
 * collector (tests/support/server_probe.h), asserting the exact reply bytes and headers
 * NestJS would send, and the offsets committed once they are answered. Dispatch and
 * ordering: test_server_dispatch.c; start, stop and drain: test_server_lifecycle.c.
 */
#include "broker.h"
#include "server/server.h"
#include "server_probe.h"
#include "service.h"
#include "suite.h"

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- handlers ------------------------------------------------------------------ */

/* A fixed reply: the JSON text in the handler's user pointer (NULL: no reply value). */
static ksf_err
h_json(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    const char *text = ksf_ctx_user(ctx);
    *reply = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    ck_assert_msg(!text || *reply, "h_json: \"%s\" is not JSON", text);
    return KSF_OK;
}

static ksf_err
h_number(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    /* 42 for an empty object request, 0.1 (JavaScript's text) otherwise. */
    *reply = json_object_size(data) == 0 ? json_integer(42) : json_real(0.1);
    return KSF_OK;
}

static ksf_err
h_err_string(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    *reply = json_string("ignored"); /* the error already ended the reply */
    return ksf_ctx_reply_error(ctx, "dragon not found");
}

static ksf_err
h_err_object(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    ksf_err rc = ksft_reply_error_object(ctx, 42, "x");
    ck_assert_int_eq(ksf_ctx_reply_error(ctx, "second"), KSF_ESTATE);
    return rc;
}

/* Echo: JSON data as is; binary data (NULL) as the same raw bytes. */
static ksf_err
h_echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    if (!data) {
        size_t len;
        const void *v = ksf_ctx_value(ctx, &len);
        return ksf_ctx_set_reply_raw(ctx, v, len);
    }
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

KSFT_TEST(test_server_reply_shapes, 40)
{
    static const char *const topics[] = {
        "t.object",     "t.array",      "t.string",   "t.number",    "t.null",
        "t.err.string", "t.err.object", "t.internal", "t.nohandler", NULL};
    /* Written with spaces: the replies are the server's own compact encoding. */
    static const ksft_handler handlers[] = {
        {"t.object", h_json,
         (void *)"{\"a\": 1, \"b\": [true, null], \"c\": \"x\\\"y\"}"},
        {"t.array", h_json,
         (void *)"[{\"id\": 1, \"name\": \"Mythical Sword\"}, {\"id\": 2, \"name\": "
                 "\"Key to Dungeon\"}]"},
        {"t.string", h_json, (void *)"\"hello world\""},
        {"t.number", h_number},
        {"t.null", h_json},
        {"t.err.string", h_err_string},
        {"t.err.object", h_err_object},
        {"t.internal", ksft_crash},
        {NULL}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics});
    ksf_server *srv = ksft_world_server(&p.w, handlers);
    ck_assert_int_eq(ksfi_server_add_topic(srv, "t.nohandler", NULL), KSF_OK);
    ksft_world_serve(&p.w, srv);

    const char obj[] = "{\"a\":1,\"b\":[true,null],\"c\":\"x\\\"y\"}";
    ksft_assert_value_reply(ksft_probe_request(&p, "t.object", "id-obj", "{}", 2),
                            "id-obj", obj, strlen(obj));
    const char arr[] = "[{\"id\":1,\"name\":\"Mythical Sword\"},{\"id\":2,\"name\":\"Key "
                       "to Dungeon\"}]";
    ksft_assert_value_reply(ksft_probe_request(&p, "t.array", "id-arr", "{}", 2),
                            "id-arr", arr, strlen(arr));
    ksft_assert_value_reply(ksft_probe_request(&p, "t.string", "id-str", "x", 1),
                            "id-str", "hello world", 11);
    ksft_assert_value_reply(ksft_probe_request(&p, "t.number", "id-int", "{}", 2),
                            "id-int", "42", 2);
    ksft_assert_value_reply(ksft_probe_request(&p, "t.number", "id-real", "{\"a\":1}", 7),
                            "id-real", "0.1", 3);
    ksft_assert_value_reply(ksft_probe_request(&p, "t.null", "id-null", NULL, 0),
                            "id-null", NULL, 0);
    ksft_assert_error_reply(ksft_probe_request(&p, "t.err.string", "id-es", "{}", 2),
                            "id-es",
                            "{\"status\":\"error\",\"message\":\"dragon not found\"}");
    ksft_assert_error_reply(ksft_probe_request(&p, "t.err.object", "id-eo", "{}", 2),
                            "id-eo", "{\"code\":42,\"message\":\"x\"}");
    ksft_assert_error_reply(
        ksft_probe_request(&p, "t.internal", "id-int-err", "{}", 2), "id-int-err",
        "{\"status\":\"error\",\"message\":\"Internal server error\"}");
    /* No handler: the bare NestJS text and no is-disposed header. */
    const ksft_msg *m = ksft_probe_request(&p, "t.nohandler", "id-none", "{}", 2);
    ksft_assert_bytes(m->value, m->len, NULL, 0, "value");
    ksfi_header want[] = {KSFT_ID("id-none"), KSFT_ERR(KSFI_NO_MESSAGE_HANDLER)};
    ksft_assert_headers(m, want, 2);

    KSFT_PROBE_WAIT_STAT(&p, replies, 10);
    /* Exactly one reply each (none answered twice), every counter exact. */
    ksft_probe_stop(&p, 10);
    KSFT_ASSERT_SERVER_STATS(p.w.srv, .requests = 10, .replies = 10, .errors = 4,
                             .no_handler = 1);
    ksft_probe_close(&p);
}
END_TEST

/* ---- streams, deferral, reply options, size limit, ctx accessors ------------------- */

static ksf_err
h_stream(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    ksf_err e = ksft_stream_ints(ctx, 1, 1, 2);
    if (e) {
        return e;
    }
    *reply = json_integer(3);
    return KSF_OK;
}

static atomic_int extras_refused; /* kafka_* header refused with KSF_EINVAL */

static ksf_err
h_extras(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    if (ksf_ctx_add_reply_header(ctx, "kafka_correlationId", "x", 1) == KSF_EINVAL) {
        atomic_fetch_add(&extras_refused, 1);
    }
    *reply = json_string("replaced by the raw bytes");
    if (ksf_ctx_set_reply_key(ctx, "k1", 2) ||
        ksf_ctx_add_reply_header(ctx, "x-trace", "abc", 3) ||
        ksf_ctx_set_reply_raw(ctx, "\x00\x01\x02", 3)) {
        return KSF_ENOMEM;
    }
    return KSF_OK;
}

static ksf_err
h_big(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    (void)data;
    char big[2001];
    memset(big, 'x', 2000);
    big[2000] = '\0';
    *reply = json_string(big);
    return KSF_OK;
}

static ksf_err
h_ctx(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    size_t key_len, hlen;
    const char *key = ksf_ctx_key(ctx, &key_len);
    const char *trace = ksf_ctx_header(ctx, "x-trace", &hlen);
    const char *name;
    ksf_ctx_header_at(ctx, 0, &name, NULL, NULL);
    *reply = json_pack(
        "{s:s, s:i, s:I, s:s, s:s, s:i, s:b, s:s#, s:s#, s:i, s:s, s:b, s:s}", "topic",
        ksf_ctx_topic(ctx), "partition", (int)ksf_ctx_partition(ctx), "offset",
        (json_int_t)ksf_ctx_offset(ctx), "id", ksf_ctx_correlation_id(ctx), "reply_topic",
        ksf_ctx_reply_topic(ctx), "reply_partition", (int)ksf_ctx_reply_partition(ctx),
        "event", ksf_ctx_is_event(ctx), "key", key, key_len, "trace", trace, hlen,
        "headers", (int)ksf_ctx_header_count(ctx), "user",
        (const char *)ksf_ctx_user(ctx), "ts", ksf_ctx_timestamp_ms(ctx) > 0, "first",
        name);
    return KSF_OK;
}

static atomic_int go_seen; /* the "go" request was handled */

static void *
finish_later(void *arg)
{
    ksf_ctx *ctx = arg;
    int64_t until = ksft_now_ms() + KSFT_PROBE_WAIT_MS;
    while (!atomic_load(&go_seen) && ksft_now_ms() < until) {
        ksft_sleep_ms(
            5); /* the later message of the partition must be served meanwhile */
    }
    json_t *a = json_string("a");
    ksf_ctx_stream(ctx, a, NULL);
    json_decref(a);
    ksf_ctx_finish(ctx, KSF_OK, json_string("b"));
    return NULL;
}

static ksf_err
h_defer(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    if (json_is_string(data) && !strcmp(json_string_value(data), "go")) {
        *reply = json_string("went");
        atomic_store(&go_seen, 1);
        return KSF_OK;
    }
    pthread_t t;
    ksf_err rc = ksf_ctx_defer(ctx);
    ck_assert_int_eq(pthread_create(&t, NULL, finish_later, ctx), 0);
    pthread_detach(t);
    return rc;
}

KSFT_TEST(test_server_streams_and_deferral, 40)
{
    static const char *const topics[] = {"t.stream", "t.extras", "t.big",
                                         "t.ctx",    "t.defer",  NULL};
    static const char *const settings[][2] = {{"message.max.bytes", "1000"}};
    static char user_text[] = "user-pointer";
    static const ksft_handler handlers[] = {
        {"t.stream", h_stream},      {"t.extras", h_extras}, {"t.big", h_big},
        {"t.ctx", h_ctx, user_text}, {"t.defer", h_defer},   {NULL}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics,
                                           KSFT_SETTINGS(settings),
                                           .handlers = handlers});

    /* A stream of three: only the last carries is-disposed. */
    ksft_send_request(p.prod, "t.stream", 0, "st", KSFT_PROBE_REPLY, 0, "{}", 2, true);
    ck_assert_uint_eq(ksft_collector_wait_id(p.replies, "st", 3, KSFT_PROBE_WAIT_MS), 3);
    ksfi_header only_id[] = {KSFT_ID("st")};
    ksft_assert_bytes(ksft_collector_get_id(p.replies, "st", 0)->value, 1, "1", 1,
                      "first");
    ksft_assert_headers(ksft_collector_get_id(p.replies, "st", 0), only_id, 1);
    ksft_assert_bytes(ksft_collector_get_id(p.replies, "st", 1)->value, 1, "2", 1,
                      "second");
    ksft_assert_headers(ksft_collector_get_id(p.replies, "st", 1), only_id, 1);
    ksft_assert_value_reply(ksft_collector_get_id(p.replies, "st", 2), "st", "3", 1);

    /* Raw bytes, a key and an extra header; the user's headers come first (NestJS). */
    const ksft_msg *m = ksft_probe_request(&p, "t.extras", "ex", "{}", 2);
    ksft_assert_bytes(m->value, m->len, "\x00\x01\x02", 3, "raw value");
    ksft_assert_bytes(m->key, m->key_len, "k1", 2, "key");
    ksfi_header want[] = {KSFT_H("x-trace", "abc"), KSFT_ID("ex"), KSFT_DISPOSED};
    ksft_assert_headers(m, want, 3);
    ck_assert_int_eq(atomic_load(&extras_refused), 1);

    ksft_assert_error_reply(
        ksft_probe_request(&p, "t.big", "big", "{}", 2), "big",
        "{\"status\":\"error\",\"message\":\"reply value for t.big is 2000 "
        "bytes, larger than message.max.bytes (1000); send less or raise "
        "message.max.bytes\"}");

    ksfi_header req[] = {KSFT_H("x-trace", "t-1"), KSFT_ID("cx"),
                         KSFT_H(KSFI_HDR_REPLY_TOPIC, KSFT_PROBE_REPLY),
                         KSFT_H(KSFI_HDR_REPLY_PARTITION, "0")};
    ksft_produce(p.prod, "t.ctx", 0, "kk", 2, "{}", 2, req, 4, true);
    ck_assert_uint_eq(ksft_collector_wait_id(p.replies, "cx", 1, KSFT_PROBE_WAIT_MS), 1);
    m = ksft_collector_get_id(p.replies, "cx", 0);
    const char ctxj[] =
        "{\"topic\":\"t.ctx\",\"partition\":0,\"offset\":0,\"id\":\"cx\","
        "\"reply_topic\":\"t.reply\",\"reply_partition\":0,\"event\":false,"
        "\"key\":\"kk\",\"trace\":\"t-1\",\"headers\":4,\"user\":"
        "\"user-pointer\",\"ts\":true,\"first\":\"x-trace\"}";
    ksft_assert_bytes(m->value, m->len, ctxj, strlen(ctxj), "ctx accessors");

    /* Deferred: finished from another thread after a later message was answered. */
    ksft_send_request(p.prod, "t.defer", 0, "d-wait", KSFT_PROBE_REPLY, 0, "wait", 4,
                      true);
    ksft_send_request(p.prod, "t.defer", 0, "d-go", KSFT_PROBE_REPLY, 0, "go", 2, true);
    ck_assert_uint_eq(ksft_collector_wait_id(p.replies, "d-wait", 2, KSFT_PROBE_WAIT_MS),
                      2);
    ck_assert_uint_eq(ksft_collector_wait_id(p.replies, "d-go", 1, KSFT_PROBE_WAIT_MS),
                      1);
    const ksft_msg *go = ksft_collector_get_id(p.replies, "d-go", 0);
    const ksft_msg *a = ksft_collector_get_id(p.replies, "d-wait", 0);
    const ksft_msg *b = ksft_collector_get_id(p.replies, "d-wait", 1);
    ksft_assert_value_reply(go, "d-go", "went", 4);
    ksfi_header wait_id[] = {KSFT_ID("d-wait")};
    ksft_assert_bytes(a->value, a->len, "a", 1, "streamed");
    ksft_assert_headers(a, wait_id, 1);
    ksft_assert_value_reply(b, "d-wait", "b", 1);
    ck_assert_int_lt(go->offset, a->offset);

    KSFT_PROBE_WAIT_STAT(&p, replies, 9);
    ksft_probe_stop(&p, 9);
    /* Both t.defer messages are complete: the committed offset is past them. */
    ck_assert_int_eq(
        ksft_committed(ksft_broker_address(p.w.broker), KSFT_PROBE_GROUP, "t.defer", 0),
        2);
    ksft_probe_close(&p);
}
END_TEST

/* ---- commit cadence ---------------------------------------------------------------- */

KSFT_TEST(test_server_commit_cadence, 40)
{
    /* Answered offsets are committed about every second (auto.commit.interval.ms
     * 1000, ksf's default), not every 5 s (librdkafka's): that interval is what a
     * rebalance or a crash hands to the next owner to run again. Seen as the time from
     * one observed commit to the next: a request answered right after a commit is
     * committed by the following one. */
    static const char *const topics[] = {"t.commit", NULL};
    static const ksft_handler handlers[] = {{"t.commit", h_echo}, {NULL}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics, .handlers = handlers});
    const char *addr = ksft_broker_address(p.w.broker);
    ksft_send_request(p.prod, "t.commit", 0, "c-0", KSFT_PROBE_REPLY, 0, "{}", 2, true);
    KSFT_PROBE_WAIT_STAT(&p, replies, 1);
    ck_assert_int_eq(ksft_wait_committed(addr, KSFT_PROBE_GROUP, "t.commit", 1, 1, 10000),
                     1);
    /* Just after a commit: the next one is a whole interval away. */
    int64_t t0 = ksft_now_ms();
    ksft_send_request(p.prod, "t.commit", 0, "c-1", KSFT_PROBE_REPLY, 0, "{}", 2, true);
    KSFT_PROBE_WAIT_STAT(&p, replies, 2);
    int64_t committed =
        ksft_wait_committed(addr, KSFT_PROBE_GROUP, "t.commit", 1, 2, 2500);
    int64_t took = ksft_now_ms() - t0;
    ck_assert_msg(committed == 2,
                  "a request answered after a commit was not committed within %d ms "
                  "(%lld ms; committed %lld)",
                  ksft_scaled_ms(2500), (long long)took, (long long)committed);
    ksft_world_stop_server(&p.w);
    ksft_probe_close(&p);
}
END_TEST

/* ---- malformed input --------------------------------------------------------------- */

KSFT_TEST(test_server_malformed_input, 40)
{
    static const char *const topics[] = {"t.echo", NULL};
    static const ksft_handler handlers[] = {{"t.echo", h_echo}, {NULL}};
    ksft_probe p;
    ksft_probe_open(&p, &(ksft_world_spec){.topics = topics, .handlers = handlers});

    /* Values: text that only looks like JSON stays text; invalid UTF-8 is repaired as
     * Node does; a leading 0x00 is binary and reaches the handler as raw bytes. */
    ksft_assert_value_reply(ksft_probe_request(&p, "t.echo", "v-json", "{\"broken", 8),
                            "v-json", "{\"broken", 8);
    ksft_assert_value_reply(ksft_probe_request(&p, "t.echo", "v-utf8",
                                               "a\xff"
                                               "b",
                                               3),
                            "v-utf8",
                            "a\xEF\xBF\xBD"
                            "b",
                            5);
    ksft_assert_value_reply(ksft_probe_request(&p, "t.echo", "v-bin",
                                               "\x00\x01"
                                               "bin",
                                               5),
                            "v-bin",
                            "\x00\x01"
                            "bin",
                            5);
    ksft_assert_value_reply(ksft_probe_request(&p, "t.echo", "v-arr", "[1, 2]", 6),
                            "v-arr", "[1,2]", 5);
    ksft_assert_value_reply(ksft_probe_request(&p, "t.echo", "v-num", "42", 2), "v-num",
                            "42", 2);

    /* Headers no reply can be built from: logged, counted, skipped (committed). */
    ksfi_header bad_part[] = {KSFT_ID("m-part"),
                              KSFT_H(KSFI_HDR_REPLY_TOPIC, KSFT_PROBE_REPLY),
                              KSFT_H(KSFI_HDR_REPLY_PARTITION, "abc")};
    ksft_produce(p.prod, "t.echo", 0, NULL, 0, "{}", 2, bad_part, 3, true);
    ksfi_header bad_topic[] = {KSFT_ID("m-topic"),
                               KSFT_H(KSFI_HDR_REPLY_TOPIC, "bad topic!"),
                               KSFT_H(KSFI_HDR_REPLY_PARTITION, "0")};
    ksft_produce(p.prod, "t.echo", 0, NULL, 0, "{}", 2, bad_topic, 3, true);
    /* No kafka_replyPartition: the partitioner picks (t.reply has one partition). */
    ksft_send_request(p.prod, "t.echo", 0, "no-part", KSFT_PROBE_REPLY, -1, "x", 1, true);
    ck_assert_uint_eq(ksft_collector_wait_id(p.replies, "no-part", 1, KSFT_PROBE_WAIT_MS),
                      1);
    ksft_assert_value_reply(ksft_collector_get_id(p.replies, "no-part", 0), "no-part",
                            "x", 1);
    ck_assert_uint_eq(ksft_collector_count_id(p.replies, "m-part"), 0);
    KSFT_PROBE_WAIT_STAT(&p, malformed, 2);

    ksft_world_stop_server(&p.w);
    ck_assert_int_eq(
        ksft_committed(ksft_broker_address(p.w.broker), KSFT_PROBE_GROUP, "t.echo", 0),
        8);
    ksf_server_stats s = ksft_probe_stats(&p);
    ck_assert_uint_eq(s.requests, 6);
    ck_assert_uint_eq(s.replies, 6);
    ck_assert_uint_eq(s.malformed, 2);
    ck_assert_uint_eq(s.errors + s.reply_failures, 0);
    ksft_probe_close(&p);
}
END_TEST

/* ---- pooled contexts -----------------------------------------------------------------
 */

/* What h_pooled saw of one message: its ctx's address (a reused record has the same)
 * and everything a previous message could have left behind. */
typedef struct pooled_seen {
    const ksf_ctx *ctx;
    size_t nhdrs;
    bool has_x_a, has_key;
    int64_t deadline_ms;
    bool has_tracestate, has_parent;
    char trace_id[33];
    char id[16];
} pooled_seen;

static pthread_mutex_t pooled_lock = PTHREAD_MUTEX_INITIALIZER;
static pooled_seen pooled_last;

/* "dirty" leaves every piece of reply state a ctx has (raw value, key, extra header);
 * anything else is echoed as JSON. Either way, what the ctx shows is kept. */
static ksf_err
h_pooled(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    pooled_seen s = {.ctx = ctx,
                     .nhdrs = ksf_ctx_header_count(ctx),
                     .has_x_a = ksf_ctx_header(ctx, "x-a", NULL) != NULL,
                     .has_key = ksf_ctx_key(ctx, NULL) != NULL,
                     .deadline_ms = ksf_ctx_deadline_ms(ctx),
                     .has_tracestate = ksf_ctx_tracestate(ctx) != NULL,
                     .has_parent = ksf_ctx_parent_span_id(ctx) != NULL};
    snprintf(s.trace_id, sizeof s.trace_id, "%s", ksf_ctx_trace_id(ctx));
    snprintf(s.id, sizeof s.id, "%s", ksf_ctx_correlation_id(ctx));
    pthread_mutex_lock(&pooled_lock);
    pooled_last = s;
    pthread_mutex_unlock(&pooled_lock);
    if (json_is_string(data) && !strcmp(json_string_value(data), "dirty")) {
        ck_assert_int_eq(ksf_ctx_set_reply_key(ctx, "rk", 2), KSF_OK);
        ck_assert_int_eq(ksf_ctx_add_reply_header(ctx, "x-r", "v", 1), KSF_OK);
        return ksf_ctx_set_reply_raw(ctx, "RAW", 3);
    }
    *reply = json_incref((json_t *)data);
    return KSF_OK;
}

/* The after of t.pool.mw's middleware: counts the runs of that chain. */
static atomic_int pooled_afters;

static void
pooled_after(ksf_ctx *ctx, ksf_outcome *outcome, void *user)
{
    (void)ctx;
    (void)outcome;
    (void)user;
    atomic_fetch_add(&pooled_afters, 1);
}

static pooled_seen
pooled_take(void)
{
    pthread_mutex_lock(&pooled_lock);
    pooled_seen s = pooled_last;
    pthread_mutex_unlock(&pooled_lock);
    return s;
}

/*
 * A finished message's record (its ctx, header array and text buffers) is reused for
 * a later message: nothing of the first may show through the second's ctx or reply.
 * Messages go one at a time, so the second usually gets the first's record (the
 * first's delivery report can come after the second: 2 reuses in 6 rounds are asked).
 */
static void
pooled_ctx_rounds(const char *workers)
{
    static const char *const topics[] = {"t.pool", "t.pool.mw", NULL};
    static const ksft_handler handlers[] = {
        {"t.pool", h_pooled}, {"t.pool.mw", h_pooled}, {NULL}};
    static const ksf_middleware mw = {.name = "count", .after = pooled_after};
    const char *const settings[][2] = {{"server.workers", workers}};
    ksft_probe p;
    ksft_probe_open(
        &p, &(ksft_world_spec){.topics = topics, .settings = settings, .nsettings = 1});
    ksf_server *srv = ksft_world_server(&p.w, handlers);
    ck_assert_int_eq(ksf_server_use_pattern(srv, "t.pool.mw", &mw, NULL, NULL), KSF_OK);
    ksft_world_serve(&p.w, srv);
    atomic_store(&pooled_afters, 0);
    const char tp[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    char deadline[24];
    snprintf(deadline, sizeof deadline, "%lld", (long long)time(NULL) * 1000 + 600000);
    int reused = 0;
    for (int round = 0; round < 6; round++) {
        /* Odd rounds: the first message runs through a middleware chain (its record's
         * pipeline state), the second, on the plain pattern, must not. */
        const char *a_topic = round % 2 ? "t.pool.mw" : "t.pool";
        char a_id[16], b_id[16];
        snprintf(a_id, sizeof a_id, "dirty-%d", round);
        snprintf(b_id, sizeof b_id, "clean-%d", round);
        /* The first message: every header a ctx reads, a key, and a reply that
         * sets a raw value, a key and an extra header. */
        ksfi_header h[] = {{KSFI_HDR_CORRELATION_ID, a_id, strlen(a_id)},
                           KSFT_H(KSFI_HDR_REPLY_TOPIC, KSFT_PROBE_REPLY),
                           KSFT_H(KSFI_HDR_REPLY_PARTITION, "0"),
                           KSFT_H("x-a", "1"),
                           KSFT_H("traceparent", tp),
                           KSFT_H("tracestate", "k=v"),
                           {"ksf_deadline", deadline, strlen(deadline)}};
        ksft_produce(p.prod, a_topic, 0, "kk", 2, "dirty", 5, h, 7, true);
        ck_assert_uint_eq(ksft_collector_wait_id(p.replies, a_id, 1, KSFT_PROBE_WAIT_MS),
                          1);
        pooled_seen a = pooled_take();
        ck_assert_str_eq(a.id, a_id);
        ck_assert_uint_eq(a.nhdrs, 7);
        ck_assert(a.has_x_a && a.has_key && a.has_tracestate && a.has_parent);
        ck_assert_str_eq(a.trace_id, "0af7651916cd43dd8448eb211c80319c");
        ck_assert_int_eq(a.deadline_ms, strtoll(deadline, NULL, 10));
        const ksft_msg *ra = ksft_collector_get_id(p.replies, a_id, 0);
        ksft_assert_bytes(ra->value, ra->len, "RAW", 3, "dirty reply");
        ksft_assert_bytes(ra->key, ra->key_len, "rk", 2, "dirty reply key");

        /* The second: protocol headers only, no key, a JSON value. */
        const ksft_msg *rb = ksft_probe_request(&p, "t.pool", b_id, "clean", 5);
        pooled_seen b = pooled_take();
        ck_assert_str_eq(b.id, b_id);
        ck_assert_uint_eq(b.nhdrs, 3);
        ck_assert(!b.has_x_a && !b.has_key && !b.has_tracestate && !b.has_parent);
        ck_assert_str_ne(b.trace_id, a.trace_id);
        ck_assert_int_eq(b.deadline_ms, 0);
        ck_assert_ptr_null(rb->key);
        ksft_assert_value_reply(rb, b_id, "clean", 5); /* no raw value, no x-r */
        reused += b.ctx == a.ctx;
        ck_assert_int_eq(atomic_load(&pooled_afters), (round + 1) / 2);
    }
    ck_assert_msg(reused >= 2,
                  "server.workers=%s: a finished message's ctx was reused %d time(s) in "
                  "6 rounds; expected at least 2",
                  workers, reused);
    ksft_world_stop_server(&p.w);
    ksft_probe_close(&p);
}

KSFT_TEST(test_server_pooled_ctx_is_fresh, 40)
{
    pooled_ctx_rounds("4"); /* records come back on the workers: the shared list */
}
END_TEST

/* Inline, the consumer thread takes and gives back records on its own list: the same
 * reuse, and nothing of the first message in the second. */
KSFT_TEST(test_server_pooled_ctx_is_fresh_inline, 40)
{
    pooled_ctx_rounds("0");
}
END_TEST

/* ---- a reply lost after its request's message was freed ------------------------- */

static atomic_int lost_entered, lost_release;

/* Echo, once the case has told the broker to refuse the next produce. */
static ksf_err
h_lost(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    atomic_store(&lost_entered, 1);
    ck_assert_int_eq(ksft_wait_atomic(&lost_release, 1, KSFT_PROBE_WAIT_MS), 1);
    return h_echo(ctx, data, reply);
}

/* The server's "reply failed for good" lines. */
typedef struct lost_log {
    pthread_mutex_t lock;
    int lines;
    char last[1024];
} lost_log;

static void
lost_log_fn(void *user, ksf_log_level level, const char *component, const char *message)
{
    lost_log *l = user;
    if (level == KSF_LOG_ERROR && strstr(message, "reply failed for good")) {
        pthread_mutex_lock(&l->lock);
        l->lines++;
        snprintf(l->last, sizeof l->last, "%s: %s", component, message);
        pthread_mutex_unlock(&l->lock);
    }
}

/*
 * A request's message is freed once its reply is produced, before the reply's delivery
 * report. When that report says the reply was lost (the broker refused it for good),
 * the server still names the request's place (topic, partition, offset, correlation
 * id) from what outlives the message, counts the failure once, and serves on.
 */
static void
lost_reply_round(const char *workers)
{
    KSFT_NEEDS_MOCK("injected Produce errors");
    static const char *const topics[] = {"t.lost", NULL};
    static const ksft_handler handlers[] = {{"t.lost", h_lost}, {NULL}};
    const char *const settings[][2] = {{"server.workers", workers}};
    ksft_probe p;
    ksft_probe_open(
        &p, &(ksft_world_spec){.topics = topics, .settings = settings, .nsettings = 1});
    lost_log log = {.lock = PTHREAD_MUTEX_INITIALIZER};
    ksf_config_set_log(p.w.cfg, lost_log_fn, &log, KSF_LOG_ERROR);
    ksft_world_serve(&p.w, ksft_world_server(&p.w, handlers));

    atomic_store(&lost_release, 1);
    ksft_assert_value_reply(ksft_probe_request(&p, "t.lost", "kept-1", "a", 1), "kept-1",
                            "a", 1);
    atomic_store(&lost_entered, 0);
    atomic_store(&lost_release, 0);
    ksft_send_request(p.prod, "t.lost", 0, "lost-1", KSFT_PROBE_REPLY, 0, "b", 1, true);
    ck_assert_int_eq(ksft_wait_atomic(&lost_entered, 1, KSFT_PROBE_WAIT_MS), 1);
    /* The handler is running: the next Produce request is its reply's (API key 0). */
    rd_kafka_mock_push_request_errors(ksft_broker_mock(p.w.broker), 0, 1,
                                      RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    atomic_store(&lost_release, 1);
    ksf_server_stats st =
        KSFT_WAIT_SERVER_STAT(p.w.srv, reply_failures, 1, KSFT_PROBE_WAIT_MS);
    ck_assert_uint_eq(st.reply_failures, 1);
    pthread_mutex_lock(&log.lock);
    ck_assert_int_eq(log.lines, 1);
    char last[sizeof log.last];
    memcpy(last, log.last, sizeof last);
    pthread_mutex_unlock(&log.lock);
    /* The second message of t.lost[0]: offset 1. */
    ck_assert_msg(
        strstr(last, "topic=t.lost") && strstr(last, "partition=0") &&
            strstr(last, "offset=1") && strstr(last, "correlation_id=lost-1") &&
            strstr(last, "reply_topic=" KSFT_PROBE_REPLY),
        "server.workers=%s: the lost reply's line does not name its request: %s", workers,
        last);
    ck_assert_uint_eq(ksft_collector_wait_id(p.replies, "lost-1", 1, 300), 0);

    /* The server serves on, and counts the lost reply once. */
    ksft_assert_value_reply(ksft_probe_request(&p, "t.lost", "kept-2", "c", 1), "kept-2",
                            "c", 1);
    st = KSFT_WAIT_SERVER_STAT(p.w.srv, replies, 2, KSFT_PROBE_WAIT_MS);
    ck_assert_uint_eq(st.replies, 2);
    ck_assert_uint_eq(st.reply_failures, 1);
    ck_assert_uint_eq(st.requests, 3);
    ksft_world_stop_server(&p.w);
    ksft_probe_close(&p);
}

KSFT_TEST(test_server_reply_lost_inline, 40)
{
    lost_reply_round("0");
}
END_TEST

KSFT_TEST(test_server_reply_lost_workers, 40)
{
    lost_reply_round("4");
}
END_TEST

KSFT_MAIN("server")
