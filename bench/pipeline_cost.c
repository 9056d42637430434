/*
 * What the request pipeline costs per request (docs/pipeline.md, "Cost of the chain"):
 * one process runs a server with a "bench.echo" handler behind N no-op middlewares
 * (each with a before and an after) and a client calling it COUNT times in sequence.
 * Meant to run under callgrind, counting only what the server does for a request:
 *
 *   ksf broker &    # prints 127.0.0.1:PORT
 *   valgrind --tool=callgrind --toggle-collect=op_run --collect-atstart=no \
 *       build/bench/pipeline_cost 127.0.0.1:PORT 500 0
 *
 * and dividing "Collected" by COUNT; N = 0 is the empty chain.
 *
 * Usage: pipeline_cost BROKERS COUNT [N]
 */
#include <ksf/ksf.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static ksf_errinfo ei;

static void
fatal(const char *what, ksf_err err)
{
    fprintf(stderr, "pipeline_cost: %s: %s%s%s\n", what, ksf_strerror(err),
            ei.text[0] ? ": " : "", ei.text);
    exit(1);
}

static ksf_err
echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)ctx;
    *reply = data ? json_incref((json_t *)data) : NULL;
    return KSF_OK;
}

static ksf_err
nop_before(ksf_ctx *ctx, json_t **data, void *user)
{
    (void)ctx;
    (void)data;
    (void)user;
    return KSF_OK;
}

static void
nop_after(ksf_ctx *ctx, ksf_outcome *outcome, void *user)
{
    (void)ctx;
    (void)outcome;
    (void)user;
}

static const ksf_middleware nop = {"nop", nop_before, nop_after};
static atomic_int ready;

static void
on_ready(ksf_server *srv, void *user)
{
    (void)srv;
    (void)user;
    atomic_store(&ready, 1);
}

static void *
serve(void *srv)
{
    ksf_err e = ksf_server_run(srv, &ei);
    if (e) {
        fatal("serving", e);
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "Usage: pipeline_cost BROKERS COUNT [N]\n");
        return 2;
    }
    int count = atoi(argv[2]), chain = argc > 3 ? atoi(argv[3]) : 0;
    ksf_config *cfg = NULL;
    ksf_server *srv = NULL;
    ksf_client *cli = NULL;
    ksf_err e = ksf_config_new(&cfg);
    if (!e && !(e = ksf_config_set(cfg, "brokers", argv[1], &ei)) &&
        !(e = ksf_config_set(cfg, "server.workers", "1", &ei)) &&
        !(e = ksf_config_set(cfg, "consumer.fetch.wait.max.ms", "5", &ei)) &&
        !(e = ksf_server_new(&srv, cfg, &ei))) {
        e = ksf_server_on_message(srv, "bench.echo", echo, NULL, &ei);
    }
    for (int i = 0; !e && i < chain; i++) {
        e = ksf_server_use(srv, &nop, NULL, &ei);
    }
    if (e) {
        fatal("setting up", e);
    }
    ksf_server_set_ready_cb(srv, on_ready, NULL);
    pthread_t t;
    pthread_create(&t, NULL, serve, srv);
    while (!atomic_load(&ready)) {
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    if ((e = ksf_client_new(&cli, cfg, &ei))) {
        fatal("creating the client", e);
    }
    json_t *req = json_pack("{s:i}", "n", 1);
    int ok = 0;
    for (int i = 0; i < count; i++) {
        json_t *out = NULL;
        ok += ksf_client_call(cli, "bench.echo", req, 30000, &out, NULL) == KSF_OK;
        json_decref(out);
    }
    printf("%d of %d requests answered, %d middleware(s)\n", ok, count, chain);
    json_decref(req);
    ksf_client_destroy(cli);
    ksf_server_stop(srv);
    pthread_join(t, NULL);
    ksf_server_destroy(srv);
    ksf_config_destroy(cfg);
    return ok == count ? 0 : 1;
}
