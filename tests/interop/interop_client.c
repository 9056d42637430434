/*
 * C -> NestJS: a ksf client calls every handler of nest_service.mjs and checks the exact
 * results and error shapes, then emits an event and checks the NestJS side recorded it.
 * Usage: interop_client BROKER EVENT_LOG      Prints "N passed, N failed"; exit 0 if none
 * failed.
 */
#include "interop_check.h"
#include "interop_config.h"

#include <ksf/ksf.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What one request produced: every delivered value, then the final status. */
typedef struct outcome {
    pthread_mutex_t lock;
    pthread_cond_t done_cv;
    json_t *values; /* array */
    json_t *error;  /* the remote error JSON, or NULL */
    ksf_err err;
    bool done;
} outcome;

static void
on_reply(const ksf_reply *r, void *user)
{
    outcome *o = user;
    pthread_mutex_lock(&o->lock);
    if (r->err == KSF_EREMOTE) {
        o->error = json_deep_copy(r->value);
    } else if (r->err == KSF_OK && r->value) {
        json_array_append_new(o->values, json_deep_copy(r->value));
    }
    if (r->done) {
        o->err = r->err;
        o->done = true;
        pthread_cond_signal(&o->done_cv);
    }
    pthread_mutex_unlock(&o->lock);
}

/* Send @p payload to @p pattern with @p opts (a 15 s timeout) and, when the send
 * succeeded, wait for its last callback. @p o is set up here; outcome_clear it after,
 * whatever this returned. */
static ksf_err
send_and_wait(ksf_client *cli, const char *pattern, json_t *payload, ksf_send_opts opts,
              outcome *o, ksf_errinfo *ei)
{
    *o = (outcome){.err = KSF_OK};
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->done_cv, NULL);
    o->values = json_array();
    opts.timeout_ms = 15000;
    ksf_err e = ksf_client_send(cli, pattern, payload, &opts, on_reply, o, ei);
    if (e == KSF_OK) {
        pthread_mutex_lock(&o->lock);
        while (!o->done) {
            pthread_cond_wait(&o->done_cv, &o->lock);
        }
        pthread_mutex_unlock(&o->lock);
    }
    return e;
}

static void
outcome_clear(outcome *o)
{
    json_decref(o->values);
    json_decref(o->error);
    pthread_mutex_destroy(&o->lock);
    pthread_cond_destroy(&o->done_cv);
}

/* Send @p payload_json to @p pattern (streaming) and compare with @p expect_json:
 * {"values":[...]} or {"error":...}. */
static void
expect_call(ksf_client *cli, const char *pattern, const char *payload_json,
            const ksf_send_opts *extra, const char *expect_json)
{
    outcome o;
    json_t *payload = json_loads(payload_json, JSON_DECODE_ANY, NULL);
    json_t *expect = json_loads(expect_json, 0, NULL);
    ksf_send_opts opts = extra ? *extra : (ksf_send_opts){0};
    opts.flags |= KSF_SEND_STREAM;
    ksf_errinfo ei = {0};
    char detail[2048];
    if (send_and_wait(cli, pattern, payload, opts, &o, &ei) != KSF_OK) {
        snprintf(detail, sizeof detail, "send: %s", ei.text);
        check(pattern, false, detail);
        goto out;
    }
    json_t *got = o.error ? json_pack("{s:O}", "error", o.error)
                          : json_pack("{s:O}", "values", o.values);
    char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
    char *x = json_dumps(expect, JSON_COMPACT | JSON_SORT_KEYS);
    bool ok = (o.err == KSF_OK || o.err == KSF_EREMOTE) && json_equal(got, expect);
    snprintf(detail, sizeof detail, "expected %s got %s (%s)", x, g, ksf_strerror(o.err));
    check(pattern, ok, detail);
    free(g);
    free(x);
    json_decref(got);
out:
    json_decref(payload);
    json_decref(expect);
    outcome_clear(&o);
}

static bool
str_is(const json_t *v, const char *s)
{
    return json_is_string(v) && !strcmp(json_string_value(v), s);
}

/* The context handler returns the request as NestJS saw it (KafkaContext): topic,
 * partition, key and every header after NestJS's parsing. */
static void
check_context(ksf_client *cli)
{
    json_t *hdrs = json_pack("{s:s}", "x-trace", "abc");
    /* ksf's own headers (docs/deadlines.md, docs/tracing.md) must reach a NestJS
     * handler as plain strings and change nothing else. */
    ksf_send_opts opts = {.key = "hero-1",
                          .key_len = 6,
                          .headers = hdrs,
                          .traceparent =
                              "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                          .tracestate = "congo=t61rcWkgMzE"};
    json_t *payload = json_object();
    json_t *got = NULL;
    ksf_errinfo ei = {0};
    char detail[2048] = "";
    /* ksf_client_call takes no options: use send and wait through an outcome. */
    outcome o;
    ksf_err e = send_and_wait(cli, "interop.context", payload, opts, &o, &ei);
    if (e == KSF_OK) {
        got = json_array_get(o.values, 0);
    }
    json_t *h = json_object_get(got, "msgHeaders");
    const char *cid = json_string_value(json_object_get(h, "kafka_correlationId"));
    json_int_t partition = json_integer_value(json_object_get(got, "partition"));
    bool ok = got && json_is_integer(json_object_get(got, "partition")) &&
              partition >= 0 && partition < 4 &&
              str_is(json_object_get(got, "topic"), "interop.context") &&
              str_is(json_object_get(got, "msgKey"), "hero-1") &&
              json_object_size(h) == 7 && str_is(json_object_get(h, "x-trace"), "abc") &&
              str_is(json_object_get(h, "traceparent"),
                     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") &&
              str_is(json_object_get(h, "tracestate"), "congo=t61rcWkgMzE") &&
              json_is_string(json_object_get(h, "ksf_deadline")) &&
              strlen(json_string_value(json_object_get(h, "ksf_deadline"))) == 13 &&
              str_is(json_object_get(h, "kafka_replyTopic"), "interop.context.reply") &&
              str_is(json_object_get(h, "kafka_replyPartition"), "0") && cid &&
              strlen(cid) == 36;
    char *g = got ? json_dumps(got, JSON_COMPACT) : NULL;
    snprintf(detail, sizeof detail, "send %s; got %s", e ? ei.text : "ok",
             g ? g : "nothing");
    check("interop.context", ok, detail);
    free(g);
    json_decref(payload);
    json_decref(hdrs);
    outcome_clear(&o);
}

int
main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "Usage: interop_client BROKER EVENT_LOG\n");
        return 2;
    }
    const char *const settings[][2] = {
        {"client.id", "interop-c"},
        /* The embedded broker finishes a rebalance only after session.timeout.ms - 1 s.
         */
        {"consumer.session.timeout.ms", "6000"},
        {"consumer.heartbeat.interval.ms", "500"}};
    static const char *const patterns[] = {"interop.object",      "interop.array",
                                           "interop.string",      "interop.number",
                                           "interop.null",        "interop.echo",
                                           "interop.rpc-string",  "interop.rpc-object",
                                           "interop.plain-error", "interop.stream",
                                           "interop.stream-sync", "interop.async",
                                           "interop.context",     NULL};
    ksf_client *cli =
        interop_client_connect("interop_client", argv[1], settings,
                               sizeof settings / sizeof settings[0], patterns, 30000);
    if (!cli) {
        return 2;
    }
    ksf_errinfo ei = {0};

    expect_call(cli, "interop.object", "{\"heroId\":1}", NULL,
                "{\"values\":[{\"id\":1,\"name\":\"Mythical Sword\"}]}");
    expect_call(cli, "interop.array", "{}", NULL,
                "{\"values\":[[{\"id\":1},{\"id\":2}]]}");
    expect_call(cli, "interop.string", "{}", NULL, "{\"values\":[\"dragon slain\"]}");
    expect_call(cli, "interop.number", "{}", NULL, "{\"values\":[\"42\"]}");
    expect_call(cli, "interop.null", "{}", NULL, "{\"values\":[null]}");
    expect_call(cli, "interop.echo", "{\"a\":[1,2.5,\"x\",null,true]}", NULL,
                "{\"values\":[{\"a\":[1,2.5,\"x\",null,true]}]}");
    expect_call(cli, "interop.echo", "\"plain text\"", NULL,
                "{\"values\":[\"plain text\"]}");
    expect_call(cli, "interop.echo", "7", NULL, "{\"values\":[\"7\"]}");
    expect_call(cli, "interop.rpc-string", "{}", NULL,
                "{\"error\":{\"status\":\"error\",\"message\":\"hero not found\"}}");
    expect_call(cli, "interop.rpc-object", "{}", NULL,
                "{\"error\":{\"code\":42,\"message\":\"bad dragon\"}}");
    expect_call(
        cli, "interop.plain-error", "{}", NULL,
        "{\"error\":{\"status\":\"error\",\"message\":\"Internal server error\"}}");
    expect_call(cli, "interop.stream", "{}", NULL, "{\"values\":[\"0\",\"1\",\"2\"]}");
    expect_call(cli, "interop.stream-sync", "{}", NULL,
                "{\"values\":[\"1\",\"2\",\"3\"]}");
    expect_call(cli, "interop.async", "{\"n\":7}", NULL,
                "{\"values\":[{\"async\":true,\"got\":{\"n\":7}}]}");
    check_context(cli);

    json_t *event = json_pack("{s:i,s:i}", "heroId", 1, "dragonId", 7);
    ksf_err e = ksf_client_emit(cli, "interop.event", event, NULL, NULL, NULL, &ei);
    json_decref(event);
    check("emit interop.event", e == KSF_OK, ei.text);
    check("NestJS recorded interop.event",
          wait_for_line(argv[2], "{\"topic\":\"interop.event\",\"data\":{\"heroId\":1,"
                                 "\"dragonId\":7}}"),
          "no matching line in the event log");
    ksf_client_destroy(cli);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
