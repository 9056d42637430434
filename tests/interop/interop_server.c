/*
 * NestJS -> C: a ksf server implementing the same handler matrix as nest_service.mjs, so
 * nest_client.mjs (a NestJS ClientKafka) can check a C service gives exactly the results
 * and error shapes a NestJS service gives.
 * Usage: interop_server BROKER      Prints "ksf interop server ready" when serving.
 */
#include "interop_config.h"

#include <ksf/ksf.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

KSF_MESSAGE_PATTERN("interop.object", object)
{
    *reply = json_pack("{s:i,s:s}", "id", 1, "name", "Mythical Sword");
    return KSF_OK;
}

KSF_MESSAGE_PATTERN("interop.array", array)
{
    *reply = json_pack("[{s:i},{s:i}]", "id", 1, "id", 2);
    return KSF_OK;
}

KSF_MESSAGE_PATTERN("interop.string", string)
{
    *reply = json_string("dragon slain");
    return KSF_OK;
}

KSF_MESSAGE_PATTERN("interop.number", number)
{
    *reply = json_integer(42);
    return KSF_OK;
}

KSF_MESSAGE_PATTERN("interop.null", null_result)
{
    *reply = json_null();
    return KSF_OK;
}

KSF_MESSAGE_PATTERN("interop.echo", echo)
{
    *reply = data ? json_deep_copy(data) : NULL;
    return KSF_OK;
}

KSF_MESSAGE_PATTERN("interop.rpc-string", rpc_string)
{
    return ksf_ctx_reply_error(ctx, "hero not found");
}

KSF_MESSAGE_PATTERN("interop.rpc-object", rpc_object)
{
    json_t *err = json_pack("{s:i,s:s}", "code", 42, "message", "bad dragon");
    ksf_err e = ksf_ctx_reply_error_json(ctx, err);
    json_decref(err);
    return e;
}

KSF_MESSAGE_PATTERN("interop.plain-error", plain_error)
{
    return KSF_EINVAL; /* any failure that is not a reply_error: "Internal server error"
                        */
}

/* What ksf read from the request headers: Spring's callers (tests/interop/spring) check
 * it against what their ReplyingKafkaTemplate sent. */
KSF_MESSAGE_PATTERN("interop.meta", meta)
{
    size_t id_len = 0;
    const char *id = ksf_ctx_correlation_id(ctx);
    ksf_ctx_header(ctx, "kafka_correlationId", &id_len);
    *reply = json_pack("{s:s?,s:i,s:s?,s:i}", "correlationId", id, "correlationIdBytes",
                       (int)id_len, "replyTopic", ksf_ctx_reply_topic(ctx),
                       "replyPartition", (int)ksf_ctx_reply_partition(ctx));
    return *reply ? KSF_OK : KSF_ENOMEM;
}

/* Three values, the last one carrying the end-of-stream header. */
static ksf_err
stream_from(ksf_ctx *ctx, json_t **reply, int first)
{
    for (int i = first; i < first + 2; i++) {
        json_t *v = json_integer(i);
        ksf_err e = ksf_ctx_stream(ctx, v, NULL);
        json_decref(v);
        if (e) {
            return e;
        }
    }
    *reply = json_integer(first + 2);
    return KSF_OK;
}

KSF_MESSAGE_PATTERN("interop.stream", stream)
{
    return stream_from(ctx, reply, 0);
}

KSF_MESSAGE_PATTERN("interop.stream-sync", stream_sync)
{
    return stream_from(ctx, reply, 1);
}

/* interop.async: the reply is finished later from another thread. */
typedef struct deferred {
    ksf_ctx *ctx;
    json_t *got;
} deferred;

static void *
finish_later(void *arg)
{
    deferred *d = arg;
    struct timespec ten_ms = {0, 10 * 1000 * 1000};
    nanosleep(&ten_ms, NULL); /* stands for real asynchronous work */
    json_t *reply = json_pack("{s:b,s:o}", "async", 1, "got", d->got);
    ksf_ctx_finish(d->ctx, reply ? KSF_OK : KSF_ENOMEM, reply);
    free(d);
    return NULL;
}

KSF_MESSAGE_PATTERN("interop.async", async_result)
{
    deferred *d = malloc(sizeof *d);
    pthread_t t;
    if (!d) {
        return KSF_ENOMEM;
    }
    d->ctx = ctx;
    d->got = data ? json_deep_copy(data) : json_null();
    ksf_err e = ksf_ctx_defer(ctx);
    if (pthread_create(&t, NULL, finish_later, d) != 0) {
        json_decref(d->got);
        free(d);
        ksf_ctx_finish(ctx, KSF_ENOMEM, NULL);
        return e;
    }
    pthread_detach(t);
    return e;
}

/* interop.guarded: behind a guard that wants an x-token header, which the NestJS
 * client does not send: it must read the refusal as NestJS's own guard refusal. */
KSF_MESSAGE_PATTERN("interop.guarded", guarded)
{
    *reply = json_string("the guard let it through");
    return *reply ? KSF_OK : KSF_ENOMEM;
}

static ksf_err
token_guard(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)data;
    (void)user;
    return ksf_ctx_header(ctx, "x-token", NULL) ? KSF_OK : ksf_ctx_forbid(ctx);
}

static const ksf_middleware token = {"token", token_guard, NULL};

static void
on_ready(ksf_server *srv, void *user)
{
    (void)srv;
    (void)user;
    printf("ksf interop server ready\n");
    fflush(stdout);
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "Usage: interop_server BROKER\n");
        return 2;
    }
    ksf_config *cfg = NULL;
    ksf_server *srv = NULL;
    ksf_errinfo ei = {0};
    const char *const settings[][2] = {
        {"client.id", "interop"},
        {"group.id", "interop-c"},
        /* Spring's ReplyingKafkaTemplate callers name their reply topics. */
        {"server.reply.topics", "spring-interop.replies*"}};
    ksf_err e = interop_config(argv[1], settings, sizeof settings / sizeof settings[0],
                               &cfg, &ei);
    if (!e) {
        ksf_config_set_log(cfg, ksf_log_stderr, NULL, KSF_LOG_WARNING);
    }
    if (!e) {
        e = ksf_server_new(&srv, cfg, &ei);
    }
    if (!e) {
        e = ksf_server_mount(srv, NULL, &ei);
    }
    if (!e) {
        e = ksf_server_use_pattern(srv, "interop.guarded", &token, NULL, &ei);
    }
    if (!e) {
        ksf_server_set_ready_cb(srv, on_ready, NULL);
        e = ksf_server_stop_on_signals(srv, &ei);
    }
    if (!e) {
        e = ksf_server_run(srv, &ei);
    }
    if (e) {
        fprintf(stderr, "interop_server: %s: %s\n", ksf_strerror(e), ei.text);
    }
    ksf_server_destroy(srv);
    ksf_config_destroy(cfg);
    return e ? 1 : 0;
}
