/*
 * The embedded broker: a NestJS-style request (kafka_* headers, JSON value) survives a
 * produce/consume round trip through the mock byte for byte, and the `ksf broker` tool
 * (path in $KSF_TOOL, set by meson) starts, serves metadata, honours its flags and
 * stops cleanly on SIGTERM, with Nagle off on the connections it accepts.
 */
#define _DEFAULT_SOURCE /* syscall(2), for pidfd_open and pidfd_getfd */

#include "broker.h"
#include "codec/wire.h"

#include "proc.h"
#include "raw_kafka.h"
#include "suite.h"
#include <arpa/inet.h>

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REQ_VALUE "{\"heroId\":1,\"dragonId\":7}"
#define REQ_CORR_ID "6f1c0a52-1b8e-4c63-9a41-3d2f0e7b9c10"
#define REQ_REPLY_TOPIC "hero.kill.dragon.reply"
#define REQ_REPLY_PARTITION "2"

static rd_kafka_t *
new_client(rd_kafka_type_t type, const char *address)
{
    static const char *const kv[][2] = {
        {"log_level", "3"},
        {"group.id", "test-broker"},
        {"enable.auto.commit", "false"},
        {"fetch.wait.max.ms", "5"},
        {"enable.partition.eof", "true"},
    };
    size_t n = type == RD_KAFKA_PRODUCER ? 1 : sizeof kv / sizeof kv[0];
    return ksft_rd_new(type, ksft_rd_conf(address, kv, n), "test client");
}

static void
produce_request(const char *address, const char *topic, int32_t partition)
{
    static char value[] = REQ_VALUE; /* producev wants a non-const pointer */
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER, address);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_VALUE(value, strlen(value)),
        RD_KAFKA_V_HEADER(KSFI_HDR_CORRELATION_ID, REQ_CORR_ID, -1),
        RD_KAFKA_V_HEADER(KSFI_HDR_REPLY_TOPIC, REQ_REPLY_TOPIC, -1),
        RD_KAFKA_V_HEADER(KSFI_HDR_REPLY_PARTITION, REQ_REPLY_PARTITION, -1),
        RD_KAFKA_V_END);
    ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR, "producev: %s", rd_kafka_err2str(e));
    ck_assert_int_eq(rd_kafka_flush(rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(rd_kafka_outq_len(rk), 0);
    rd_kafka_destroy(rk);
}

static void
assert_header(rd_kafka_headers_t *hdrs, size_t idx, const char *name, const char *value)
{
    const char *n;
    const void *v;
    size_t len;
    ck_assert_int_eq(rd_kafka_header_get_all(hdrs, idx, &n, &v, &len),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_str_eq(n, name);
    ck_assert_uint_eq(len, strlen(value));
    ck_assert_int_eq(memcmp(v, value, len), 0);
}

static void
assert_is_request(rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs = NULL;
    ck_assert_uint_eq(m->len, strlen(REQ_VALUE));
    ck_assert_int_eq(memcmp(m->payload, REQ_VALUE, m->len), 0);
    ck_assert_ptr_null(m->key);
    ck_assert_int_eq(rd_kafka_message_headers(m, &hdrs), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_uint_eq(rd_kafka_header_cnt(hdrs), 3);
    /* Literal names: the test pins the wire contract, not just our constants. */
    assert_header(hdrs, 0, "kafka_correlationId", REQ_CORR_ID);
    assert_header(hdrs, 1, "kafka_replyTopic", REQ_REPLY_TOPIC);
    assert_header(hdrs, 2, "kafka_replyPartition", REQ_REPLY_PARTITION);
}

/* Reads @p partition from the start to its end; asserts exactly one request is there. */
static void
consume_request(const char *address, const char *topic, int32_t partition)
{
    rd_kafka_t *rk = new_client(RD_KAFKA_CONSUMER, address);
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tp, topic, partition)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(rk, tp), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(tp);
    int got = 0;
    bool at_end = false;
    for (int64_t deadline = ksft_now_ms() + 10000; !at_end && ksft_now_ms() < deadline;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            at_end = got > 0;
        } else {
            ck_assert_msg(!m->err, "consume: %s", rd_kafka_message_errstr(m));
            ck_assert_int_eq(m->partition, partition);
            assert_is_request(m);
            got++;
        }
        rd_kafka_message_destroy(m);
    }
    ck_assert_msg(at_end, "no end of partition within 10 s (got %d messages)", got);
    ck_assert_int_eq(got, 1); /* none lost, none duplicated */
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

KSFT_TEST(test_broker_request_headers_roundtrip, 30)
{
    ksft_broker *b = ksft_broker_start();
    ksft_broker_create_topic(b, "hero.kill.dragon", 3);
    produce_request(ksft_broker_address(b), "hero.kill.dragon", 1);
    consume_request(ksft_broker_address(b), "hero.kill.dragon", 1);
    ksft_broker_stop(b);
}
END_TEST

/* ---------------------------------------------------------------------------------- */
/* The `ksf broker` tool as a child process                                            */
/* ---------------------------------------------------------------------------------- */

typedef struct tool {
    pid_t pid;
    int out; /* its stdout */
} tool;

static tool
tool_spawn(const char *const *args)
{
    const char *path = getenv("KSF_TOOL");
    ck_assert_msg(path && *path, "KSF_TOOL is not set (meson sets it to the ksf binary)");
    char *argv[16] = {(char *)path, (char *)"broker"};
    size_t n = 2;
    for (; args[n - 2] && n < 15; n++) {
        argv[n] = (char *)args[n - 2];
    }
    argv[n] = NULL;
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    tool t = {.pid = fork(), .out = p[0]};
    ck_assert_int_ge(t.pid, 0);
    if (t.pid == 0) {
        /* A test that fails before stopping its tool must not leave it running: it
         * holds the test's stderr, and meson waits for that to close. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], STDOUT_FILENO);
        close(p[0]);
        close(p[1]);
        execv(path, argv);
        _exit(127);
    }
    close(p[1]);
    return t;
}

/* Reads the child's first stdout line within @p timeout_ms; "" when none came. */
static void
tool_first_line(tool *t, char *line, size_t size, int timeout_ms)
{
    size_t len = 0;
    int64_t deadline = ksft_now_ms() + timeout_ms;
    line[0] = '\0';
    while (len + 1 < size && ksft_now_ms() < deadline) {
        struct pollfd pfd = {.fd = t->out, .events = POLLIN};
        if (poll(&pfd, 1, (int)(deadline - ksft_now_ms())) <= 0) {
            continue;
        }
        if (read(t->out, line + len, 1) != 1 || line[len] == '\n') {
            break;
        }
        line[++len] = '\0';
    }
    line[len] = '\0';
}

/* Waits for the child to exit; returns its raw wait status, or -1 after a timeout
 * (the child is then killed so that nothing outlives the test). */
static int
tool_wait(tool *t, int timeout_ms)
{
    int status = ksft_wait_child(t->pid, timeout_ms);
    close(t->out);
    return status;
}

static int
tool_stop(tool *t)
{
    ck_assert_int_eq(kill(t->pid, SIGTERM), 0);
    return tool_wait(t, 10000);
}

/* Asserts "127.0.0.1:PORT" and returns PORT. */
static int
address_port(const char *line)
{
    int port = 0;
    char rest = 0;
    ck_assert_msg(sscanf(line, "127.0.0.1:%d%c", &port, &rest) == 1,
                  "first stdout line \"%s\" is not 127.0.0.1:PORT", line);
    ck_assert_int_gt(port, 0);
    ck_assert_int_lt(port, 65536);
    return port;
}

/* Fetches metadata for @p topic; returns its partition count and the broker's port. */
static int
topic_partitions(const char *address, const char *topic, int *broker_port)
{
    rd_kafka_t *rk = new_client(RD_KAFKA_PRODUCER, address);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    ck_assert_msg(e == RD_KAFKA_RESP_ERR_NO_ERROR, "metadata: %s", rd_kafka_err2str(e));
    ck_assert_int_eq(md->topic_cnt, 1);
    ck_assert_str_eq(md->topics[0].topic, topic);
    ck_assert_int_eq(md->topics[0].err, RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(md->broker_cnt, 1);
    int n = md->topics[0].partition_cnt;
    *broker_port = md->brokers[0].port;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return n;
}

KSFT_TEST(test_broker_tool_serves_topics_and_stops_on_sigterm, 30)
{
    char line[128], address[64];
    int broker_port;
    tool t = tool_spawn((const char *[]){"--topic", "t1:3", "--topic", "t2", NULL});
    tool_first_line(&t, line, sizeof line, 10000);
    snprintf(address, sizeof address, "127.0.0.1:%d", address_port(line));
    ck_assert_int_eq(topic_partitions(address, "t1", &broker_port), 3);
    ck_assert_int_eq(topic_partitions(address, "t2", &broker_port), 4);
    int status = tool_stop(&t);
    ck_assert_msg(status != -1, "ksf broker did not exit within 10 s of SIGTERM");
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

/* The local or peer port of socket @p fd, or -1. */
static int
socket_port(int fd, bool peer)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int rc = peer ? getpeername(fd, (struct sockaddr *)&a, &len)
                  : getsockname(fd, (struct sockaddr *)&a, &len);
    return rc == 0 && a.sin_family == AF_INET ? ntohs(a.sin_port) : -1;
}

#define NODELAY_UNKNOWN (-2) /* pidfd_open is not available (valgrind lacks it) */

/* TCP_NODELAY of the connection process @p pid accepted on @p local_port from
 * @p peer_port (a copy of its descriptor through pidfd_getfd): 0/1, -1 when no such
 * connection was found, NODELAY_UNKNOWN when it cannot be looked at. */
static int
accepted_nodelay(pid_t pid, int local_port, int peer_port)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0 && errno == ENOSYS && ksft_under_valgrind()) {
        return NODELAY_UNKNOWN;
    }
    ck_assert_msg(pidfd >= 0, "pidfd_open: %s", strerror(errno));
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s: %s", dir, strerror(errno));
    int found = -1;
    for (struct dirent *e; found < 0 && (e = readdir(d));) {
        int target = atoi(e->d_name);
        if (e->d_name[0] == '.' || target < 0) {
            continue;
        }
        int fd = (int)syscall(SYS_pidfd_getfd, pidfd, target, 0);
        ck_assert_msg(fd >= 0 || errno == EBADF, "pidfd_getfd: %s", strerror(errno));
        if (fd < 0) {
            continue; /* closed meanwhile */
        }
        if (socket_port(fd, false) == local_port && socket_port(fd, true) == peer_port) {
            int on = 0;
            socklen_t len = sizeof on;
            ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
            found = on != 0;
        }
        close(fd);
    }
    closedir(d);
    close(pidfd);
    return found;
}

KSFT_TEST(test_broker_tool_nodelay, 30)
{
    /* A Kafka broker accepts with Nagle off; librdkafka's mock does not, and a small
     * response behind an unacknowledged one then waits up to 40 ms for a delayed ACK
     * (tools/broker_nodelay.c). Look at the tool's own end of one connection. */
    char line[128];
    tool t = tool_spawn((const char *[]){NULL});
    tool_first_line(&t, line, sizeof line, 10000);
    int port = address_port(line);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    int mine = socket_port(c, false);
    int nodelay = -1;
    /* The mock's thread accepts a moment after connect() returns. */
    ksft_deadline d = ksft_deadline_in(5000);
    while ((nodelay = accepted_nodelay(t.pid, port, mine)) == -1 &&
           ksft_deadline_wait(&d)) {
    }
    close(c);
    if (nodelay == NODELAY_UNKNOWN) {
        /* The tool itself never runs under valgrind: the plain and sanitizer runs of
         * this test check it. */
        fprintf(stderr, "tool_nodelay: pidfd_open unavailable under valgrind; not "
                        "checked here\n");
        ck_assert_int_eq(tool_stop(&t) != -1, 1);
        return;
    }
    ck_assert_msg(nodelay >= 0, "ksf broker never accepted the connection from port %d",
                  mine);
    ck_assert_msg(nodelay == 1, "ksf broker accepted a connection with Nagle on");
    int status = tool_stop(&t);
    ck_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

KSFT_TEST(test_broker_tool_bad_flags_exit_2, 30)
{
    static const char *const cases[][3] = {
        {"--bogus", NULL},         {"--port", "0", NULL},
        {"--port", "70000", NULL}, {"--partitions", "x", NULL},
        {"--topic", "t1:0", NULL}, {"--topic", "bad/name", NULL},
        {"--topic", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char line[128];
        tool t = tool_spawn(cases[i]);
        tool_first_line(&t, line, sizeof line, 5000);
        int status = tool_wait(&t, 5000);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 2,
                      "case %zu (%s): status %d, want exit 2", i, cases[i][0], status);
        ck_assert_str_eq(line, ""); /* nothing on stdout: no address was promised */
    }
}
END_TEST

/* A listening socket on an ephemeral loopback port; returns its fd and port. */
static int
listen_any(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof sin;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(s, 0);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&sin, sizeof sin), 0);
    ck_assert_int_eq(listen(s, 1), 0);
    ck_assert_int_eq(getsockname(s, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    return s;
}

KSFT_TEST(test_broker_tool_port_in_use_exit_1, 30)
{
    char port_arg[16], line[128];
    int port;
    int s = listen_any(&port);
    snprintf(port_arg, sizeof port_arg, "%d", port);
    tool t = tool_spawn((const char *[]){"--port", port_arg, NULL});
    tool_first_line(&t, line, sizeof line, 5000);
    int status = tool_wait(&t, 5000);
    close(s);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d, want exit 1",
                  status);
    ck_assert_str_eq(line, "");
}
END_TEST

/* --port and --partitions go through the front door: clients must only ever see its
 * port, topics must auto-create with --partitions, and a request must round-trip. */
KSFT_TEST(test_broker_tool_front_door, 30)
{
    char port_arg[16], line[128], address[64];
    int port, broker_port;
    close(listen_any(&port)); /* a port that was free a moment ago */
    snprintf(port_arg, sizeof port_arg, "%d", port);
    tool t = tool_spawn((const char *[]){"--port", port_arg, "--partitions", "2",
                                         "--topic", "t3:3", NULL});
    tool_first_line(&t, line, sizeof line, 10000);
    ck_assert_int_eq(address_port(line), port);
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    ck_assert_int_eq(topic_partitions(address, "auto.created", &broker_port), 2);
    ck_assert_int_eq(broker_port, port);
    ck_assert_int_eq(topic_partitions(address, "t3", &broker_port), 3);
    produce_request(address, "auto.created", 1);
    consume_request(address, "auto.created", 1);
    int status = tool_stop(&t);
    ck_assert_msg(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "status %d, want exit 0", status);
}
END_TEST

KSFT_MAIN("broker")
