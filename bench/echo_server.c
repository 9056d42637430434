/*
 * The ksf side of the benchmark: a server whose handler "bench.echo" answers with the
 * request's data, so the measured cost is ksf's and the broker's, not the handler's.
 *
 * Usage: echo_server [--brokers B] [--workers N] [--handler-ms MS] [--raw]
 *                    [--set KEY=VALUE]...
 * --handler-ms makes each request take MS ms (a sleep: the goodput scenario's handler
 * of known capacity, workers * 1000 / MS requests/s). --raw registers the handler raw
 * (ksf_server_on_message_raw): the request is not decoded, its bytes are echoed with
 * ksf_ctx_set_reply_raw (a service that forwards payloads). Prints "echo server ready" on
 * stdout once it serves; stops on SIGINT/SIGTERM; SIGUSR1 prints its CPU time and
 * requests answered so far (cpu_report.h).
 */
#include "cpu_report.h"

#include <ksf/ksf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int handler_ms;   /* --handler-ms */
static bool raw_handler; /* --raw */

/* The handler's simulated work (--handler-ms) and the count SIGUSR1 reports. */
static void
work(void)
{
    if (handler_ms > 0) {
        struct timespec ts = {handler_ms / 1000, (long)(handler_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
    atomic_fetch_add_explicit(&bench_handled, 1, memory_order_relaxed);
}

/* --raw: the bytes as they came (data is NULL: nothing was decoded); a null value
 * gets a null reply. */
static ksf_err
echo_raw(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    (void)reply;
    size_t len;
    const void *raw = ksf_ctx_value(ctx, &len);
    work();
    return raw ? ksf_ctx_set_reply_raw(ctx, raw, len) : KSF_OK;
}

static ksf_err
echo(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    size_t len;
    const void *raw = ksf_ctx_value(ctx, &len);
    work();
    if (!data && raw) {
        return ksf_ctx_set_reply_raw(ctx, raw, len); /* binary: echo the bytes */
    }
    *reply = data ? json_incref((json_t *)data) : NULL;
    return KSF_OK;
}

static void
on_ready(ksf_server *srv, void *user)
{
    (void)srv;
    (void)user;
    printf("echo server ready\n");
    fflush(stdout);
}

static int
fail(const char *what, const ksf_errinfo *ei)
{
    fprintf(stderr, "echo_server: %s: %s\n", what, ei->text);
    return 1;
}

/* Apply the command line to @p cfg; returns 0, or the exit status. */
static int
parse_flags(ksf_config *cfg, int argc, char **argv, ksf_errinfo *ei)
{
    if (ksf_config_set_from_args(cfg, &argc, argv, ei)) { /* --brokers, --set */
        return fail("flags", ei);
    }
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        ksf_err e;
        if (!strcmp(flag, "--raw")) {
            raw_handler = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "Usage: echo_server [--brokers B] [--workers N] "
                            "[--handler-ms MS] [--raw] [--set KEY=VALUE]...\n");
            return 2;
        }
        i++;
        if (!strcmp(flag, "--workers")) {
            e = ksf_config_set(cfg, "server.workers", v, ei);
        } else if (!strcmp(flag, "--handler-ms")) {
            handler_ms = atoi(v);
            e = handler_ms >= 0 ? KSF_OK : KSF_EINVAL;
            snprintf(ei->text, sizeof ei->text, "expected a number of ms >= 0, got %s",
                     v);
        } else {
            fprintf(stderr, "echo_server: unknown flag %s\n", flag);
            return 2;
        }
        if (e) {
            return fail(flag, ei);
        }
    }
    return 0;
}

int
main(int argc, char **argv)
{
    ksf_errinfo ei = {0};
    ksf_config *cfg = NULL;
    ksf_server *srv = NULL;
    int rc = 1;
    if (ksf_config_new(&cfg)) {
        goto done;
    }
    ksf_config_set_log(cfg, ksf_log_stderr, NULL, KSF_LOG_WARNING); /* KSF_LOG wins */
    if (ksf_config_set_from_env(cfg, &ei)) {
        goto done;
    }
    if ((rc = parse_flags(cfg, argc, argv, &ei))) {
        goto done;
    }
    rc = 1;
    if (ksf_server_new(&srv, cfg, &ei) ||
        (raw_handler ? ksf_server_on_message_raw(srv, "bench.echo", echo_raw, NULL, &ei)
                     : ksf_server_on_message(srv, "bench.echo", echo, NULL, &ei)) ||
        ksf_server_stop_on_signals(srv, &ei)) {
        rc = fail("setup", &ei);
        goto done;
    }
    bench_cpu_report_install();
    ksf_server_set_ready_cb(srv, on_ready, NULL);
    rc = ksf_server_run(srv, &ei) ? fail("run", &ei) : 0;
done:
    ksf_server_destroy(srv);
    ksf_config_destroy(cfg);
    return rc;
}
