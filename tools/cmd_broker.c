/*
 * ksf broker: the embedded development broker, librdkafka's in-memory mock cluster
 * (rdkafka_mock.h) on 127.0.0.1, for demos and tests. Not a production broker: nothing
 * is persisted and there is no replication, security or retention.
 *
 * Two things the 2.0.2 mock cannot do by itself (read from src/rdkafka_mock.c):
 * - it always binds an ephemeral loopback port (rd_kafka_mock_broker_new binds port 0
 *   and offers no way to choose), and
 * - it auto-creates unknown topics with a hard-coded 4 partitions
 *   (mcluster->defaults.partition_cnt, with no setter in the public API).
 * So when --port or --partitions is given, clients talk to a small "front door" on
 * 127.0.0.1:PORT instead: it relays Kafka frames to the mock, rewrites the broker
 * port in Metadata and FindCoordinator responses so that clients reconnect to the
 * front door rather than to the mock's own port, and creates every topic named in a
 * Metadata request (with --partitions partitions) just before the mock sees it.
 */
#include "commands.h"

#include "broker_relay.h"
#include "flags.h"

#include <ksf/ksf.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BROKER_DEFAULT_PARTITIONS 4 /* the mock's own auto-create count */
#define BROKER_MAX_PARTITIONS 10000
#define BROKER_MAX_TOPICS 256

typedef struct broker_topic {
    char name[TOPIC_NAME_MAX + 1];
    int partitions; /* 0: use --partitions */
} broker_topic;

typedef struct broker_opts {
    int port;       /* 0: none asked for */
    int partitions; /* 0: none asked for */
    broker_topic topics[BROKER_MAX_TOPICS];
    size_t topic_cnt;
} broker_opts;

/* ---------------------------------------------------------------------------------- */
/* Signals: the handler only writes a byte to a pipe that the main loop polls.         */
/* ---------------------------------------------------------------------------------- */

static int signal_pipe[2] = {-1, -1};

static void
on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(signal_pipe[1], &b, 1) < 0) {
        /* The pipe is full: a stop is already pending. */
    }
    errno = saved;
}

static int
install_signals(void)
{
    if (pipe(signal_pipe) != 0) {
        return -1;
    }
    fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK);
    fcntl(signal_pipe[0], F_SETFD, FD_CLOEXEC);
    fcntl(signal_pipe[1], F_SETFD, FD_CLOEXEC);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        return -1;
    }
    /* A client that vanishes mid-write must not kill the broker. */
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL);
}

/* ---------------------------------------------------------------------------------- */
/* Flags                                                                               */
/* ---------------------------------------------------------------------------------- */

static void
broker_usage(FILE *out)
{
    fprintf(
        out,
        "Usage: ksf broker [--port N] [--partitions N] [--topic NAME[:PARTITIONS]]...\n"
        "\n"
        "Runs an in-memory Kafka-protocol development broker (librdkafka's mock "
        "cluster)\n"
        "on 127.0.0.1 until SIGINT/SIGTERM. NOT for production: nothing is persisted.\n"
        "The first line on stdout is the bootstrap address, 127.0.0.1:PORT; point\n"
        "services at it with KSF_BROKERS=127.0.0.1:PORT or --brokers 127.0.0.1:PORT.\n"
        "\n"
        "Options:\n"
        "  --port N         serve on 127.0.0.1:N (1-65535). The mock itself can only\n"
        "                   bind an ephemeral port, so ksf puts a relay on N that also\n"
        "                   rewrites the broker address in Metadata/FindCoordinator\n"
        "                   replies: every client connection, including the ones made\n"
        "                   after bootstrap, goes through N. Exit 1 if N is in use.\n"
        "  --partitions N   partitions for topics created on first use (default 4, the\n"
        "                   mock's fixed default). Any value enables the relay (on an\n"
        "                   ephemeral port unless --port is given), which creates a "
        "topic\n"
        "                   named in a Metadata request before the mock would.\n"
        "  --topic NAME[:P] create topic NAME with P partitions (default: --partitions,\n"
        "                   else 4) at start; repeatable.\n"
        "  --help           this text.\n"
        "\n"
        "Exit status: 0 after SIGINT/SIGTERM, 1 if the broker cannot start, 2 on bad\n"
        "options. See docs/broker.md.\n");
}

/* The subcommand's usage errors all start "ksf broker: ". */
#define bad_flag(...) ksf_tool_usage_error("broker", __VA_ARGS__)

/* Parses a whole decimal integer in [lo, hi]. */
static bool
parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        return false;
    }
    *out = (int)v;
    return true;
}

static bool
valid_topic_name(const char *s, size_t len)
{
    if (len == 0 || len > TOPIC_NAME_MAX || !strncmp(s, ".", len) ||
        !strncmp(s, "..", len)) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

static int
parse_topic(broker_opts *o, const char *arg)
{
    if (o->topic_cnt == BROKER_MAX_TOPICS) {
        return bad_flag("too many --topic options (the limit is 256): %s", arg);
    }
    broker_topic *t = &o->topics[o->topic_cnt];
    const char *colon = strchr(arg, ':');
    size_t len = colon ? (size_t)(colon - arg) : strlen(arg);
    if (!valid_topic_name(arg, len)) {
        return bad_flag("--topic \"%s\": a topic name is 1-249 characters of "
                        "[a-zA-Z0-9._-]; expected NAME or NAME:PARTITIONS",
                        arg);
    }
    memcpy(t->name, arg, len);
    t->name[len] = '\0';
    t->partitions = 0;
    if (colon && !parse_int(colon + 1, 1, BROKER_MAX_PARTITIONS, &t->partitions)) {
        return bad_flag("--topic \"%s\": PARTITIONS must be a whole number "
                        "from 1 to 10000",
                        arg);
    }
    o->topic_cnt++;
    return 0;
}

/* Returns -1 to go on, else the exit status (0 for --help, 2 for bad flags). */
static int
parse_flags(broker_opts *o, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            broker_usage(stdout);
            return 0;
        } else if (ksf_tool_is_flag(a, "--port")) {
            if (!(v = ksf_tool_flag_value(argc, argv, &i, "--port")) ||
                !parse_int(v, 1, 65535, &o->port)) {
                return bad_flag("--port needs a port number from 1 to 65535 (got %s)",
                                v ? v : "nothing");
            }
        } else if (ksf_tool_is_flag(a, "--partitions")) {
            if (!(v = ksf_tool_flag_value(argc, argv, &i, "--partitions")) ||
                !parse_int(v, 1, BROKER_MAX_PARTITIONS, &o->partitions)) {
                return bad_flag("--partitions needs a whole number from 1 to 10000 "
                                "(got %s)",
                                v ? v : "nothing");
            }
        } else if (ksf_tool_is_flag(a, "--topic")) {
            if (!(v = ksf_tool_flag_value(argc, argv, &i, "--topic"))) {
                return bad_flag("%s needs NAME or NAME:PARTITIONS", a);
            }
            if (parse_topic(o, v) != 0) {
                return 2;
            }
        } else {
            return bad_flag("unknown option \"%s\"", a);
        }
    }
    return -1;
}

/* ---------------------------------------------------------------------------------- */
/* The mock cluster and the command                                                    */
/* ---------------------------------------------------------------------------------- */

typedef struct broker {
    rd_kafka_t *rk; /* hosts the mock cluster's thread */
    rd_kafka_mock_cluster_t *mcluster;
    char mock_address[64];
} broker;

/* librdkafka's log_level for KSF_LOG (checked by ksf_config_set_from_env): "3" when
 * unset. */
static const char *
env_log_level(void)
{
    static const char *const names[][2] = {
        {"error", "3"}, {"warning", "4"}, {"notice", "5"}, {"info", "6"}, {"debug", "7"}};
    const char *spec = getenv("KSF_LOG");
    for (size_t i = 0; spec && i < sizeof names / sizeof names[0]; i++) {
        size_t n = strlen(names[i][0]);
        if (!strncmp(spec, names[i][0], n) && (spec[n] == '\0' || spec[n] == ',')) {
            return names[i][1];
        }
    }
    return "3";
}

static int
broker_start(broker *b)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The host handle never connects anywhere; only mock errors are worth showing,
     * unless KSF_LOG asks for more (debug: the mock's line per request). */
    rd_kafka_conf_set(conf, "log_level", env_log_level(), err, sizeof err);
    if (!strcmp(env_log_level(), "7")) {
        rd_kafka_conf_set(conf, "debug", "mock", err, sizeof err);
    }
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!b->rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "ksf broker: cannot create the librdkafka handle: %s\n", err);
        return 1;
    }
    b->mcluster = rd_kafka_mock_cluster_new(b->rk, 1);
    if (!b->mcluster) {
        fprintf(stderr, "ksf broker: cannot start librdkafka's mock cluster (no free "
                        "loopback port?)\n");
        return 1;
    }
    snprintf(b->mock_address, sizeof b->mock_address, "%s",
             rd_kafka_mock_cluster_bootstraps(b->mcluster));
    return 0;
}

static void
broker_stop(broker *b)
{
    if (b->mcluster) {
        rd_kafka_mock_cluster_destroy(b->mcluster);
    }
    if (b->rk) {
        rd_kafka_destroy(b->rk);
    }
}

static int
create_topics(broker *b, const broker_opts *o)
{
    for (size_t i = 0; i < o->topic_cnt; i++) {
        const broker_topic *t = &o->topics[i];
        int parts = t->partitions   ? t->partitions
                    : o->partitions ? o->partitions
                                    : BROKER_DEFAULT_PARTITIONS;
        rd_kafka_resp_err_t e =
            rd_kafka_mock_topic_create(b->mcluster, t->name, parts, 1);
        if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            fprintf(stderr, "ksf broker: --topic %s given twice; keeping the first\n",
                    t->name);
        } else if (e) {
            fprintf(stderr, "ksf broker: cannot create topic %s: %s\n", t->name,
                    rd_kafka_err2str(e));
            return 1;
        }
    }
    return 0;
}

static void
announce(const char *address, bool front)
{
    printf("%s\n", address);
    fflush(stdout);
    fprintf(
        stderr,
        "ksf broker: development broker (librdkafka mock cluster, in memory, NOT for "
        "production) listening on %s%s.\n"
        "ksf broker: point a service at it with KSF_BROKERS=%s (or --brokers %s); "
        "stop it with Ctrl-C or SIGTERM.\n"
        "ksf broker: it never wakes a waiting fetch and a rebalance takes the session "
        "timeout - 1 s, so its clients want: ksf --set consumer.fetch.wait.max.ms=5 "
        "--set consumer.session.timeout.ms=6000; kafkajs/NestJS consumer: "
        "{ maxWaitTimeInMs: 5, sessionTimeout: 6000 } (else about 5 s per reply).\n",
        address, front ? " (relayed to the mock)" : "", address, address);
}

/* Waits for SIGINT/SIGTERM. */
static void
wait_for_signal(void)
{
    unsigned char b;
    while (read(signal_pipe[0], &b, 1) < 0 && errno == EINTR) {
    }
}

static int
run(const broker_opts *o)
{
    broker b = {0};
    front_door fd = {.listen_fd = -1};
    bool front = o->port || o->partitions;
    char address[64];
    int rc = 1;
    if (front && broker_relay_listen(&fd, o->port) != 0) {
        goto done; /* before the mock, so a busy port fails fast and quietly */
    }
    if (broker_start(&b) != 0 || create_topics(&b, o) != 0) {
        goto done;
    }
    snprintf(address, sizeof address, "%s", b.mock_address);
    if (front) {
        const char *colon = strrchr(b.mock_address, ':');
        fd.mock_port = (uint16_t)atoi(colon ? colon + 1 : "0");
        fd.partitions = o->partitions ? o->partitions : BROKER_DEFAULT_PARTITIONS;
        fd.mcluster = b.mcluster;
        snprintf(address, sizeof address, "127.0.0.1:%u", (unsigned)fd.port);
    }
    announce(address, front);
    if (front) {
        while (broker_relay_poll(&fd, signal_pipe[0])) {
        }
    } else {
        wait_for_signal();
    }
    fprintf(stderr, "ksf broker: stopping\n");
    rc = 0;
done:
    broker_relay_close(&fd);
    broker_stop(&b);
    return rc;
}

int
ksf_cmd_broker(int argc, char **argv)
{
    broker_opts *o = calloc(1, sizeof *o);
    if (!o) {
        fprintf(stderr, "ksf broker: out of memory\n");
        return 1;
    }
    int rc = parse_flags(o, argc, argv);
    ksf_config *env = NULL;
    ksf_errinfo ei = {0};
    if (rc < 0 && (ksf_config_new(&env) || ksf_config_set_from_env(env, &ei))) {
        fprintf(stderr, "ksf broker: %s\n", ei.text); /* a bad KSF_LOG or KSF_BROKERS */
        rc = 2;
    }
    ksf_config_destroy(env);
    if (rc < 0) {
        if (install_signals() != 0) {
            fprintf(stderr, "ksf broker: cannot install signal handlers: %s\n",
                    strerror(errno));
            rc = 1;
        } else {
            rc = run(o);
        }
    }
    free(o);
    return rc;
}
