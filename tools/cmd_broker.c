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

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
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
#define TOPIC_NAME_MAX 249 /* Kafka's limit for topic names */

/* Kafka API keys and the message limit the front door cares about. */
#define API_METADATA 3
#define API_FIND_COORDINATOR 10
#define FRAME_MAX_BYTES (100 * 1024 * 1024) /* Kafka's socket.request.max.bytes */
#define FRONT_MAX_CONNS 128
#define FRONT_BACKLOG_BYTES (16 * 1024 * 1024) /* stop reading while this much waits */
#define FRONT_MAX_PENDING 32

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

static int bad_flag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
bad_flag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ksf broker: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nRun `ksf broker --help` for the options.\n");
    va_end(ap);
    return 2;
}

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

/* Splits "--flag=value" and "--flag value"; returns the value or NULL if missing. */
static const char *
flag_value(int argc, char **argv, int *i, const char *flag)
{
    size_t n = strlen(flag);
    const char *a = argv[*i];
    if (a[n] == '=') {
        return a + n + 1;
    }
    if (*i + 1 >= argc) {
        return NULL;
    }
    return argv[++*i];
}

static bool
is_flag(const char *arg, const char *flag)
{
    size_t n = strlen(flag);
    return !strncmp(arg, flag, n) && (arg[n] == '\0' || arg[n] == '=');
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
        } else if (is_flag(a, "--port")) {
            if (!(v = flag_value(argc, argv, &i, "--port")) ||
                !parse_int(v, 1, 65535, &o->port)) {
                return bad_flag("--port needs a port number from 1 to 65535 (got %s)",
                                v ? v : "nothing");
            }
        } else if (is_flag(a, "--partitions")) {
            if (!(v = flag_value(argc, argv, &i, "--partitions")) ||
                !parse_int(v, 1, BROKER_MAX_PARTITIONS, &o->partitions)) {
                return bad_flag("--partitions needs a whole number from 1 to 10000 "
                                "(got %s)",
                                v ? v : "nothing");
            }
        } else if (is_flag(a, "--topic")) {
            if (!(v = flag_value(argc, argv, &i, "--topic"))) {
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
/* Front door: a Kafka-frame relay in front of the mock (see the top of this file).    */
/* ---------------------------------------------------------------------------------- */

typedef struct fbuf {
    unsigned char *p;
    size_t off, len, cap; /* live bytes are p[off .. len) */
} fbuf;

/* A request whose response must be rewritten, remembered by correlation id. */
typedef struct pending_req {
    int32_t corr;
    int16_t api_key, api_version;
} pending_req;

typedef struct front_conn {
    int cfd, ufd;    /* client side, mock side */
    fbuf cin, uin;   /* bytes read, not yet framed */
    fbuf cout, uout; /* bytes to write to the client / to the mock */
    pending_req pend[FRONT_MAX_PENDING];
    size_t pend_cnt;
} front_conn;

typedef struct front_door {
    int listen_fd;
    uint16_t port;      /* the front door's port, advertised to clients */
    uint16_t mock_port; /* the mock broker's own ephemeral port */
    int partitions;     /* for topics named in Metadata requests */
    rd_kafka_mock_cluster_t *mcluster;
    front_conn *conns[FRONT_MAX_CONNS];
} front_door;

static size_t
fbuf_size(const fbuf *b)
{
    return b->len - b->off;
}

static bool
fbuf_append(fbuf *b, const void *data, size_t n)
{
    if (b->off > 0 && b->len + n > b->cap) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) {
            cap *= 2;
        }
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            return false;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return true;
}

static void
fbuf_consume(fbuf *b, size_t n)
{
    b->off += n;
    if (b->off == b->len) {
        b->off = b->len = 0;
    }
}

static int32_t
get_i32(const unsigned char *p)
{
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                     (uint32_t)p[3]);
}

static int16_t
get_i16(const unsigned char *p)
{
    return (int16_t)((uint16_t)p[0] << 8 | (uint16_t)p[1]);
}

/* Skips a Kafka (nullable) STRING at *pos; false if it runs past @p end. */
static bool
skip_string(const unsigned char *p, size_t end, size_t *pos, size_t *start, int16_t *len)
{
    if (*pos + 2 > end) {
        return false;
    }
    *len = get_i16(p + *pos);
    *pos += 2;
    *start = *pos;
    if (*len > 0) {
        if (*pos + (size_t)*len > end) {
            return false;
        }
        *pos += (size_t)*len;
    }
    return true;
}

/* Overwrites the INT32 port at @p pos when it is the mock's own port. */
static void
patch_port(front_door *fd, unsigned char *p, size_t pos)
{
    if (get_i32(p + pos) == fd->mock_port) {
        p[pos] = p[pos + 1] = 0;
        p[pos + 2] = (unsigned char)(fd->port >> 8);
        p[pos + 3] = (unsigned char)(fd->port & 0xff);
    }
}

/*
 * Creates every topic named in a Metadata request (v0-2, the versions the 2.0.2 mock
 * serves) with fd->partitions partitions before the mock auto-creates it with 4.
 * @p p is the request body after the header's client_id.
 */
static void
precreate_topics(front_door *fd, const unsigned char *p, size_t pos, size_t end)
{
    if (pos + 4 > end) {
        return;
    }
    int32_t n = get_i32(p + pos);
    pos += 4;
    for (int32_t i = 0; i < n; i++) {
        size_t start;
        int16_t len;
        if (!skip_string(p, end, &pos, &start, &len) || len <= 0 ||
            len > TOPIC_NAME_MAX) {
            return;
        }
        char name[TOPIC_NAME_MAX + 1];
        memcpy(name, p + start, (size_t)len);
        name[len] = '\0';
        /* TOPIC_ALREADY_EXISTS is the common, harmless answer. */
        rd_kafka_mock_topic_create(fd->mcluster, name, fd->partitions, 1);
    }
}

/* Looks at one complete request frame (p[0..4) is its length) going to the mock. */
static void
on_request(front_door *fd, front_conn *c, const unsigned char *p, size_t frame_len)
{
    size_t end = 4 + frame_len, pos = 12, start;
    int16_t len;
    if (frame_len < 10) {
        return; /* the mock will reject it */
    }
    int16_t key = get_i16(p + 4), ver = get_i16(p + 6);
    if ((key != API_METADATA && key != API_FIND_COORDINATOR) || ver < 0 || ver > 2) {
        return;
    }
    if (c->pend_cnt == FRONT_MAX_PENDING) {
        memmove(c->pend, c->pend + 1, sizeof c->pend[0] * (FRONT_MAX_PENDING - 1));
        c->pend_cnt--;
    }
    c->pend[c->pend_cnt++] = (pending_req){get_i32(p + 8), key, ver};
    if (key == API_METADATA && skip_string(p, end, &pos, &start, &len)) {
        precreate_topics(fd, p, pos, end);
    }
}

/* Rewrites the broker ports in a Metadata response, versions 0-2. */
static void
patch_metadata(front_door *fd, unsigned char *p, size_t end, int16_t ver)
{
    size_t pos = 8, start;
    int16_t len;
    if (pos + 4 > end) {
        return;
    }
    int32_t n = get_i32(p + pos);
    pos += 4;
    for (int32_t i = 0; i < n; i++) {
        pos += 4; /* node_id */
        if (!skip_string(p, end, &pos, &start, &len) || pos + 4 > end) {
            return;
        }
        patch_port(fd, p, pos);
        pos += 4;
        if (ver >= 1 && !skip_string(p, end, &pos, &start, &len)) {
            return; /* rack */
        }
    }
}

/* Rewrites the coordinator port in a FindCoordinator response, versions 0-2. */
static void
patch_find_coordinator(front_door *fd, unsigned char *p, size_t end, int16_t ver)
{
    size_t pos = 8, start;
    int16_t len;
    if (ver >= 1) {
        pos += 4 + 2; /* throttle_time_ms, error_code */
        if (!skip_string(p, end, &pos, &start, &len)) {
            return; /* error_message */
        }
    } else {
        pos += 2;
    }
    pos += 4; /* node_id */
    if (!skip_string(p, end, &pos, &start, &len) || pos + 4 > end) {
        return;
    }
    patch_port(fd, p, pos);
}

/* Looks at one complete response frame coming from the mock. */
static void
on_response(front_door *fd, front_conn *c, unsigned char *p, size_t frame_len)
{
    if (frame_len < 4) {
        return;
    }
    int32_t corr = get_i32(p + 4);
    for (size_t i = 0; i < c->pend_cnt; i++) {
        if (c->pend[i].corr != corr) {
            continue;
        }
        pending_req r = c->pend[i];
        memmove(c->pend + i, c->pend + i + 1, sizeof c->pend[0] * (c->pend_cnt - i - 1));
        c->pend_cnt--;
        if (r.api_key == API_METADATA) {
            patch_metadata(fd, p, 4 + frame_len, r.api_version);
        } else {
            patch_find_coordinator(fd, p, 4 + frame_len, r.api_version);
        }
        return;
    }
}

/* Moves every complete frame from @p in to @p out; false on a protocol violation. */
static bool
move_frames(front_door *fd, front_conn *c, fbuf *in, fbuf *out, bool to_mock)
{
    while (fbuf_size(in) >= 4) {
        unsigned char *p = in->p + in->off;
        int32_t frame_len = get_i32(p);
        if (frame_len < 0 || frame_len > FRAME_MAX_BYTES) {
            return false;
        }
        if (fbuf_size(in) < 4 + (size_t)frame_len) {
            return true;
        }
        if (to_mock) {
            on_request(fd, c, p, (size_t)frame_len);
        } else {
            on_response(fd, c, p, (size_t)frame_len);
        }
        if (!fbuf_append(out, p, 4 + (size_t)frame_len)) {
            return false;
        }
        fbuf_consume(in, 4 + (size_t)frame_len);
    }
    return true;
}

static void
conn_close(front_conn *c)
{
    close(c->cfd);
    close(c->ufd);
    free(c->cin.p);
    free(c->uin.p);
    free(c->cout.p);
    free(c->uout.p);
    free(c);
}

static int
connect_mock(const front_door *fd)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(fd->mock_port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        return -1;
    }
    if (connect(s, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(s);
        return -1;
    }
    fcntl(s, F_SETFL, O_NONBLOCK);
    return s;
}

static void
front_accept(front_door *fd)
{
    int cfd = accept(fd->listen_fd, NULL, NULL);
    if (cfd < 0) {
        return;
    }
    size_t slot = 0;
    while (slot < FRONT_MAX_CONNS && fd->conns[slot]) {
        slot++;
    }
    front_conn *c = slot < FRONT_MAX_CONNS ? calloc(1, sizeof *c) : NULL;
    int ufd = c ? connect_mock(fd) : -1;
    if (ufd < 0) {
        fprintf(stderr, "ksf broker: refusing a connection: %s\n",
                c ? "cannot reach the mock broker" : "too many connections (limit 128)");
        free(c);
        close(cfd);
        return;
    }
    fcntl(cfd, F_SETFL, O_NONBLOCK);
    fcntl(cfd, F_SETFD, FD_CLOEXEC);
    c->cfd = cfd;
    c->ufd = ufd;
    fd->conns[slot] = c;
}

/* Reads what is there; false when the peer closed or failed. */
static bool
read_into(int s, fbuf *b)
{
    unsigned char tmp[65536];
    ssize_t n = read(s, tmp, sizeof tmp);
    if (n > 0) {
        return fbuf_append(b, tmp, (size_t)n);
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

static bool
write_from(int s, fbuf *b)
{
    ssize_t n = write(s, b->p + b->off, fbuf_size(b));
    if (n >= 0) {
        fbuf_consume(b, (size_t)n);
        return true;
    }
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* Serves one connection pair given its poll results; false to close it. */
static bool
conn_io(front_door *fd, front_conn *c, short cev, short uev)
{
    if ((cev & POLLIN) &&
        (!read_into(c->cfd, &c->cin) || !move_frames(fd, c, &c->cin, &c->uout, true))) {
        return false;
    }
    if ((uev & POLLIN) &&
        (!read_into(c->ufd, &c->uin) || !move_frames(fd, c, &c->uin, &c->cout, false))) {
        return false;
    }
    if ((cev & (POLLERR | POLLHUP)) && !(cev & POLLIN)) {
        return false;
    }
    if ((uev & (POLLERR | POLLHUP)) && !(uev & POLLIN)) {
        return false;
    }
    if ((cev & POLLOUT) && !write_from(c->cfd, &c->cout)) {
        return false;
    }
    return !(uev & POLLOUT) || write_from(c->ufd, &c->uout);
}

static short
want_events(const fbuf *in_other_out, const fbuf *out)
{
    short ev = fbuf_size(in_other_out) < FRONT_BACKLOG_BYTES ? POLLIN : 0;
    return (short)(ev | (fbuf_size(out) ? POLLOUT : 0));
}

/* One poll round over the signal pipe, the listener and every connection.
 * Returns false once a signal arrived. */
static bool
front_poll(front_door *fd)
{
    struct pollfd pfd[2 + 2 * FRONT_MAX_CONNS];
    front_conn *polled[FRONT_MAX_CONNS];
    nfds_t n = 2;
    pfd[0] = (struct pollfd){.fd = signal_pipe[0], .events = POLLIN};
    pfd[1] = (struct pollfd){.fd = fd->listen_fd, .events = POLLIN};
    size_t cnt = 0;
    for (size_t i = 0; i < FRONT_MAX_CONNS; i++) {
        front_conn *c = fd->conns[i];
        if (!c) {
            continue;
        }
        polled[cnt++] = c;
        pfd[n++] =
            (struct pollfd){.fd = c->cfd, .events = want_events(&c->uout, &c->cout)};
        pfd[n++] =
            (struct pollfd){.fd = c->ufd, .events = want_events(&c->cout, &c->uout)};
    }
    if (poll(pfd, n, -1) < 0) {
        return errno == EINTR;
    }
    if (pfd[0].revents) {
        return false;
    }
    if (pfd[1].revents & POLLIN) {
        front_accept(fd);
    }
    for (size_t k = 0; k < cnt; k++) {
        front_conn *c = polled[k];
        if (!conn_io(fd, c, pfd[2 + 2 * k].revents, pfd[3 + 2 * k].revents)) {
            for (size_t i = 0; i < FRONT_MAX_CONNS; i++) {
                if (fd->conns[i] == c) {
                    fd->conns[i] = NULL;
                }
            }
            conn_close(c);
        }
    }
    return true;
}

static void
front_close(front_door *fd)
{
    for (size_t i = 0; i < FRONT_MAX_CONNS; i++) {
        if (fd->conns[i]) {
            conn_close(fd->conns[i]);
        }
    }
    if (fd->listen_fd >= 0) {
        close(fd->listen_fd);
    }
}

/* Binds 127.0.0.1:@p port (0: any). Returns 0, or 1 after printing why not. */
static int
front_listen(front_door *fd, int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t sl = sizeof sin;
    int on = 1;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd->listen_fd < 0) {
        goto fail;
    }
    /* Lets a restarted broker reuse a port still in TIME_WAIT; a live listener on
     * the port still makes bind fail with EADDRINUSE on Linux. */
    setsockopt(fd->listen_fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(fd->listen_fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(fd->listen_fd, 64) != 0 ||
        getsockname(fd->listen_fd, (struct sockaddr *)&sin, &sl) != 0) {
        goto fail;
    }
    fcntl(fd->listen_fd, F_SETFL, O_NONBLOCK);
    fd->port = ntohs(sin.sin_port);
    return 0;
fail:
    if (errno == EADDRINUSE) {
        fprintf(stderr,
                "ksf broker: port %d on 127.0.0.1 is already in use (another broker?); "
                "stop that process or choose another --port\n",
                port);
    } else {
        fprintf(stderr, "ksf broker: cannot listen on 127.0.0.1:%d: %s\n", port,
                strerror(errno));
    }
    return 1;
}

/* ---------------------------------------------------------------------------------- */
/* The mock cluster and the command                                                    */
/* ---------------------------------------------------------------------------------- */

typedef struct broker {
    rd_kafka_t *rk; /* hosts the mock cluster's thread */
    rd_kafka_mock_cluster_t *mcluster;
    char mock_address[64];
} broker;

static int
broker_start(broker *b)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The host handle never connects anywhere; only mock errors are worth showing. */
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
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
    fprintf(stderr,
            "ksf broker: development broker (librdkafka mock cluster, in memory, NOT for "
            "production) listening on %s%s.\n"
            "ksf broker: point a service at it with KSF_BROKERS=%s (or --brokers %s); "
            "stop it with Ctrl-C or SIGTERM.\n",
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
    if (front && front_listen(&fd, o->port) != 0) {
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
        while (front_poll(&fd)) {
        }
    } else {
        wait_for_signal();
    }
    fprintf(stderr, "ksf broker: stopping\n");
    rc = 0;
done:
    front_close(&fd);
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
