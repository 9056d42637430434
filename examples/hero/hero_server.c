/*
 * The NestJS docs' hero service as a ksf server: hero.kill.dragon answers with the
 * hero's loot, hero.dragon.killed is an event that is only logged.
 *
 * Usage: hero_server [--brokers HOST:PORT] [--workers N] [--set KEY=VALUE]... [--metrics
 * F]
 */
#include <ksf/ksf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

KSF_MESSAGE_PATTERN("hero.kill.dragon", kill_dragon)
{
    *reply = json_pack("[{s:i, s:s}, {s:i, s:s}]", "id", 1, "name", "Mythical Sword",
                       "id", 2, "name", "Key to Dungeon");
    return *reply ? KSF_OK : KSF_ENOMEM;
}

KSF_EVENT_PATTERN("hero.dragon.killed", dragon_killed)
{
    char *text = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    fprintf(stderr, "hero server: dragon killed: %s (%s[%d]@%lld)\n",
            text ? text : "(binary)", ksf_ctx_topic(ctx), (int)ksf_ctx_partition(ctx),
            (long long)ksf_ctx_offset(ctx));
    free(text);
    return KSF_OK;
}

static void
usage(FILE *out)
{
    fprintf(out,
            "Usage: hero_server [--brokers HOST:PORT] [--workers N] "
            "[--set KEY=VALUE]... [--metrics FILE]\n%s"
            "  --workers N        handler threads (server.workers)\n"
            "  --metrics FILE     write Prometheus metrics to FILE on exit\n"
            "Serves hero.kill.dragon and hero.dragon.killed.\n",
            ksf_config_args_help());
}

/* The details of the last failure, filled by the ksf calls below. */
static ksf_errinfo ei;
static const char *metrics_path; /* --metrics */

static void
fatal(const char *what, ksf_err err)
{
    fprintf(stderr, "hero server: %s: %s%s%s\n", what, ksf_strerror(err),
            ei.text[0] ? ": " : "", ei.text);
    exit(1);
}

static void
on_ready(ksf_server *srv, void *user)
{
    (void)srv;
    (void)user;
    printf("hero server ready\n");
    fflush(stdout);
}

static void
parse_flags(ksf_config *cfg, int argc, char **argv)
{
    ksf_err e;
    if ((e = ksf_config_set_from_args(cfg, &argc, argv, &ei))) { /* --brokers, --set */
        fatal("flags", e);
    }
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            usage(stderr);
            exit(2);
        }
        const char *value = argv[++i];
        if (!strcmp(flag, "--workers")) {
            if ((e = ksf_config_set(cfg, "server.workers", value, &ei))) {
                fatal(flag, e);
            }
        } else if (!strcmp(flag, "--metrics")) {
            metrics_path = value;
        } else {
            usage(stderr);
            exit(2);
        }
    }
}

int
main(int argc, char **argv)
{
    ksf_config *cfg = NULL;
    ksf_server *srv = NULL;
    ksf_err e = ksf_config_new(&cfg);
    if (e) {
        fatal("config", e);
    }
    /* Warnings as logfmt unless KSF_LOG says otherwise (e.g. KSF_LOG=debug). */
    ksf_config_set_log_structured(cfg, ksf_log_logfmt, NULL, KSF_LOG_WARNING);
    if ((e = ksf_config_set_from_env(cfg, &ei))) {
        fatal("environment", e);
    }
    parse_flags(cfg, argc, argv);
    if ((e = ksf_server_new(&srv, cfg, &ei))) {
        fatal("creating the server", e);
    }
    ksf_config_destroy(cfg);
    if ((e = ksf_server_mount(srv, NULL, &ei))) {
        fatal("mounting the handlers", e);
    }
    if ((e = ksf_server_stop_on_signals(srv, &ei))) {
        fatal("installing signal handlers", e);
    }
    ksf_server_set_ready_cb(srv, on_ready, NULL);
    e = ksf_server_run(srv, &ei);
    /* On exit, what a Prometheus scrape of this process would have read. */
    FILE *m = metrics_path ? fopen(metrics_path, "w") : NULL; /* e.g. /dev/stdout */
    if (m) {
        ksf_server_write_prometheus(srv, m);
        fclose(m);
    }
    ksf_server_destroy(srv);
    if (e) {
        fatal("running", e);
    }
    return 0;
}
