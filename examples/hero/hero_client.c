/*
 * The hero client: asks the hero service to kill a dragon (request/reply) and tells
 * everyone it happened (an event). Pair it with hero_server.
 *
 * Usage: hero_client [--brokers HOST:PORT] [--timeout-ms N] [--set KEY=VALUE]...
 */
#include <ksf/ksf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The sentence of the last failed call; fatal() prints it after the error name. */
static ksf_errinfo ei;

static void
fatal(const char *what, ksf_err err)
{
    fprintf(stderr, "hero_client: %s failed: %s%s%s\n", what, ksf_strerror(err),
            ei.text[0] ? "; " : "", ei.text);
    exit(1);
}

static void
usage(void)
{
    fprintf(stderr,
            "Usage: hero_client [--brokers HOST:PORT] [--timeout-ms N] "
            "[--set KEY=VALUE]...\n%s"
            "  --timeout-ms N     request timeout (default 5000)\n",
            ksf_config_args_help());
    exit(2);
}

/* Apply the command line to @p cfg; returns the request timeout. */
static int
parse_flags(int argc, char **argv, ksf_config *cfg)
{
    ksf_err e;
    int timeout_ms = 5000;
    if ((e = ksf_config_set_from_args(cfg, &argc, argv, &ei))) { /* --brokers, --set */
        fatal("flags", e);
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc &&
            (timeout_ms = atoi(argv[++i])) > 0) {
            continue;
        }
        usage();
    }
    return timeout_ms;
}

static void
event_delivered(ksf_err err, const char *text, void *user)
{
    *(ksf_err *)user = err;
    if (err) {
        fprintf(stderr, "hero_client: event not delivered: %s\n", text);
    }
}

int
main(int argc, char **argv)
{
    ksf_config *cfg = NULL;
    ksf_client *cli = NULL;
    ksf_err e;
    if ((e = ksf_config_new(&cfg))) {
        fatal("configuration", e);
    }
    ksf_config_set_log(cfg, ksf_log_stderr, NULL, KSF_LOG_ERROR); /* KSF_LOG overrides */
    if ((e = ksf_config_set_from_env(cfg, &ei))) {
        fatal("configuration", e);
    }
    int timeout_ms = parse_flags(argc, argv, cfg);
    if ((e = ksf_client_new(&cli, cfg, &ei))) {
        fatal("client", e);
    }
    ksf_config_destroy(cfg);
    /* Like NestJS's subscribeToResponseOf + connect: join the reply group once, up front.
     */
    if ((e = ksf_client_subscribe_to_response_of(cli, "hero.kill.dragon", &ei)) ||
        (e = ksf_client_connect(cli, timeout_ms, &ei))) {
        fatal("connect", e);
    }

    /* Request/reply: the reply is whatever the handler returned. */
    json_t *kill = json_pack("{s:i, s:i}", "heroId", 1, "dragonId", 7);
    json_t *items = NULL;
    e = ksf_client_call(cli, "hero.kill.dragon", kill, timeout_ms, &items, &ei);
    if (e == KSF_EREMOTE) {
        char *err = json_dumps(items, JSON_COMPACT | JSON_ENCODE_ANY);
        fprintf(stderr, "hero_client: the hero service refused: %s\n", err ? err : "?");
        free(err);
    }
    if (e) {
        fatal("hero.kill.dragon", e);
    }
    char *text = json_dumps(items, JSON_COMPACT | JSON_ENCODE_ANY);
    printf("%s\n", text ? text : "null");
    free(text);
    json_decref(items);

    /* Event: no reply; wait for the broker to acknowledge it. */
    ksf_err delivered = KSF_ETIMEDOUT;
    e = ksf_client_emit(cli, "hero.dragon.killed", kill, NULL, event_delivered,
                        &delivered, &ei);
    json_decref(kill);
    if (e) {
        fatal("hero.dragon.killed", e);
    }
    if ((e = ksf_client_flush(cli, timeout_ms, &ei))) {
        fatal("hero.dragon.killed delivery", e);
    }
    if (delivered) {
        fatal("hero.dragon.killed delivery", delivered);
    }
    ksf_client_destroy(cli);
    return 0;
}
