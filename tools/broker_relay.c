/* The front door of `ksf broker` (see broker_relay.h). */
#include "broker_relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Kafka API keys and the message limit the front door cares about. */
#define API_METADATA 3
#define API_FIND_COORDINATOR 10
#define FRAME_MAX_BYTES (100 * 1024 * 1024)    /* Kafka's socket.request.max.bytes */
#define FRONT_BACKLOG_BYTES (16 * 1024 * 1024) /* stop reading while this much waits */
#define FRONT_MAX_PENDING 32

typedef struct fbuf {
    unsigned char *p;
    size_t off, len, cap; /* live bytes are p[off .. len) */
} fbuf;

/* A request whose response must be rewritten, remembered by correlation id. */
typedef struct pending_req {
    int32_t corr;
    int16_t api_key, api_version;
} pending_req;

struct front_conn {
    int cfd, ufd;    /* client side, mock side */
    fbuf cin, uin;   /* bytes read, not yet framed */
    fbuf cout, uout; /* bytes to write to the client / to the mock */
    pending_req pend[FRONT_MAX_PENDING];
    size_t pend_cnt;
};

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

bool
broker_relay_poll(front_door *fd, int stop_fd)
{
    struct pollfd pfd[2 + 2 * FRONT_MAX_CONNS];
    front_conn *polled[FRONT_MAX_CONNS];
    nfds_t n = 2;
    pfd[0] = (struct pollfd){.fd = stop_fd, .events = POLLIN};
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

void
broker_relay_close(front_door *fd)
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

int
broker_relay_listen(front_door *fd, int port)
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
