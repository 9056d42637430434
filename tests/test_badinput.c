/*
 * Bad input end to end: oversized messages on both sides, invalid UTF-8, JSON nested
 * 100,000 deep, 10,000 headers, and a fake group coordinator on 127.0.0.1 answering
 * junk. Each gets a clear error or a defined answer, and the process keeps serving.
 */
#include "codec/wire.h"
#include "fixture.h"
#include "group/membership.h"
#include "raw_kafka.h"
#include "service.h"

#include "suite.h"
#include <arpa/inet.h>

#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PATTERN "b.echo"

/* Send raw bytes and wait for the one callback. */
static void
send_raw(ksf_client *cli, const char *pattern, const void *bytes, size_t len,
         ksft_outcome *c)
{
    memset(c, 0, sizeof *c);
    ksf_send_opts o = {.timeout_ms = 20000, .raw_value = bytes, .raw_len = len};
    ksf_errinfo ei = {0};
    ck_assert_msg(ksf_client_send(cli, pattern, NULL, &o, ksft_outcome_cb, c, &ei) ==
                      KSF_OK,
                  "%s", ei.text);
    ksft_outcome_wait(c, 25000);
}

static ksf_err
h_header_count(ksf_ctx *ctx, const json_t *data, json_t **reply)
{
    (void)data;
    *reply = json_integer((json_int_t)ksf_ctx_header_count(ctx));
    return KSF_OK;
}

/* A server whose message.max.bytes is 300,000 and a client with the default limit
 * (the configuration is copied when each is made). */
static void
world_up(ksft_world *w)
{
    static const char *const topics[] = {PATTERN, "b.hdrs", PATTERN ".reply",
                                         "b.hdrs.reply", NULL};
    static const ksft_handler handlers[] = {
        {PATTERN}, {"b.hdrs", h_header_count}, {NULL}};
    static const char *const server_settings[][2] = {{"message.max.bytes", "300000"}};
    ksft_world_open(w, &(ksft_world_spec){.topics = topics, .lazy_client = true});
    ksft_config_set_all(w->cfg, server_settings, KSFT_NKV(server_settings));
    ksft_world_serve(w, ksft_world_server(w, handlers));
}

/* The service still answers a plain request. */
static void
assert_alive(ksft_world *w)
{
    ksft_outcome c;
    send_raw(w->cli, PATTERN, "{\"ok\":1}", 8, &c);
    ck_assert_int_eq(c.err, KSF_OK);
    ck_assert_str_eq(c.raw, "{\"ok\":1}");
    ksft_outcome_reset(&c);
}

/* ---- oversized messages ---------------------------------------------------------- */

KSFT_TEST(test_badinput_oversized, 60)
{
    ksft_world w;
    world_up(&w);
    ksf_errinfo ei = {0};
    /* Larger than the client's message.max.bytes: refused at send, no callback. */
    ksf_config *small = ksft_config(w.broker);
    ck_assert_int_eq(ksf_config_set(small, "message.max.bytes", "1000", NULL), KSF_OK);
    ksf_client *tiny = ksft_client(small);
    ksf_config_destroy(small);
    char *big = malloc(1000001);
    ck_assert_ptr_nonnull(big);
    memset(big, 'a', 1000001);
    ksf_send_opts o = {.raw_value = big, .raw_len = 1001};
    ksft_outcome c = {0};
    ck_assert_int_eq(ksf_client_send(tiny, PATTERN, NULL, &o, ksft_outcome_cb, &c, &ei),
                     KSF_EMSGSIZE);
    ck_assert_str_eq(ei.text, "the value is 1001 bytes, more than message.max.bytes "
                              "(1000); send less or raise message.max.bytes");
    ksf_client_destroy(tiny);
    ck_assert_int_eq(atomic_load(&c.calls), 0);

    /* Larger than the server's: the echo cannot be sent, the caller is told why. */
    send_raw(w.cli, PATTERN, big, 400000, &c);
    ck_assert_int_eq(c.err, KSF_EREMOTE);
    ck_assert_msg(strstr(c.text, "larger than message.max.bytes (300000)"), "%s", c.text);
    ksft_outcome_reset(&c);

    /* At the client's limit but over Kafka's own (headers included): a clear Kafka
     * error, once, either at send or in the callback. */
    memset(&c, 0, sizeof c);
    o = (ksf_send_opts){.raw_value = big, .raw_len = 1000000, .timeout_ms = 20000};
    ksf_err e = ksf_client_send(w.cli, PATTERN, NULL, &o, ksft_outcome_cb, &c, &ei);
    if (e == KSF_OK) {
        ksft_outcome_wait(&c, 25000);
        ck_assert_int_eq(c.err, KSF_EKAFKA);
        ck_assert_msg(strstr(c.text, "too large") || strstr(c.text, "size"), "%s",
                      c.text);
        ksft_outcome_reset(&c);
    } else {
        ck_assert_int_eq(e, KSF_EKAFKA);
        ck_assert_msg(strstr(ei.text, "too large") || strstr(ei.text, "size"), "%s",
                      ei.text);
    }
    free(big);
    assert_alive(&w);
    ksft_world_close(&w);
}
END_TEST

/* ---- invalid UTF-8, deep JSON ------------------------------------------------------ */

#define DEPTH 100000

KSFT_TEST(test_badinput_utf8_and_depth, 60)
{
    ksft_world w;
    world_up(&w);
    ksft_outcome c;
    /* Invalid UTF-8 becomes U+FFFD per bad byte, as JavaScript's decoder does. */
    send_raw(w.cli, PATTERN,
             "a\xff\xfe"
             "b",
             4, &c);
    ck_assert_int_eq(c.err, KSF_OK);
    ck_assert_uint_eq(c.raw_len, 8);
    ck_assert_int_eq(memcmp(c.raw,
                            "a\xef\xbf\xbd\xef\xbf\xbd"
                            "b",
                            8),
                     0);
    ksft_outcome_reset(&c);
    /* 100,000 levels: not parsed as JSON (too deep), kept as the string it is. */
    char *deep = malloc(2 * DEPTH);
    ck_assert_ptr_nonnull(deep);
    memset(deep, '[', DEPTH);
    memset(deep + DEPTH, ']', DEPTH);
    send_raw(w.cli, PATTERN, deep, 2 * DEPTH, &c);
    ck_assert_int_eq(c.err, KSF_OK);
    ck_assert_uint_eq(c.raw_len, 2 * DEPTH);
    ck_assert_int_eq(memcmp(c.raw, deep, 2 * DEPTH), 0);
    ksft_outcome_reset(&c);
    /* Deep objects, unbalanced. */
    for (size_t i = 0; i < DEPTH; i++) {
        memcpy(deep + 2 * i, i % 2 ? ":{" : "{\"", 2);
    }
    send_raw(w.cli, PATTERN, deep, 2 * DEPTH, &c);
    ck_assert_int_eq(c.err, KSF_OK);
    ck_assert_uint_eq(c.raw_len, 2 * DEPTH);
    ksft_outcome_reset(&c);
    free(deep);
    assert_alive(&w);
    ksft_world_close(&w);
}
END_TEST

/* ---- 10,000 headers -------------------------------------------------------------- */

#define NHDRS 10000

KSFT_TEST(test_badinput_many_headers, 60)
{
    ksft_world w;
    world_up(&w);
    const char *addr = ksft_broker_address(w.broker);
    ksfi_header *h = calloc(NHDRS + 3, sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (size_t i = 0; i < NHDRS; i++) {
        h[i] = (ksfi_header){"x-junk", "v", 1};
    }
    h[NHDRS] = (ksfi_header){KSFI_HDR_CORRELATION_ID, "many", 4};
    h[NHDRS + 1] = (ksfi_header){KSFI_HDR_REPLY_TOPIC, "b.hdrs.reply", 12};
    h[NHDRS + 2] = (ksfi_header){KSFI_HDR_REPLY_PARTITION, "0", 1};
    ksft_producer *p = ksft_producer_new(addr);
    ksft_produce(p, "b.hdrs", 0, NULL, 0, "{}", 2, h, NHDRS + 3, true);
    ksft_collector *replies = ksft_collector_new(addr, "b.hdrs.reply", 0);
    ck_assert_uint_eq(ksft_collector_wait_id(replies, "many", 1, 20000), 1);
    const ksft_msg *m = ksft_collector_get_id(replies, "many", 0);
    ck_assert_uint_eq(m->len, 5);
    ck_assert_int_eq(memcmp(m->value, "10003", 5), 0);
    ksft_collector_destroy(replies);
    ksft_producer_destroy(p);
    free(h);
    assert_alive(&w);
    ksft_world_close(&w);
}
END_TEST

/* ---- a coordinator that answers junk -------------------------------------------- */

typedef struct junk_server {
    int fd;
    int port;
    pthread_t thread;
    atomic_bool stop;
    atomic_int served;
} junk_server;

/* Per connection, after reading the request: a huge size, a negative size, a short
 * frame of garbage, or random bytes and a close. */
static void
answer_junk(int c, int kind)
{
    unsigned char buf[64];
    struct pollfd pfd = {.fd = c, .events = POLLIN};
    if (poll(&pfd, 1, 2000) > 0) {
        ssize_t r = read(c, buf, sizeof buf);
        (void)r;
    }
    static const unsigned char huge[] = {0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4};
    static const unsigned char negative[] = {0xff, 0xff, 0xff, 0xf0};
    static const unsigned char garbage[] = {0, 0, 0, 6, 0xde, 0xad, 0xbe, 0xef, 0, 1};
    const unsigned char *out[] = {huge, negative, garbage};
    size_t len[] = {sizeof huge, sizeof negative, sizeof garbage};
    if (kind < 3) {
        ssize_t w = write(c, out[kind], len[kind]);
        (void)w;
    } else {
        for (size_t i = 0; i < sizeof buf; i++) {
            buf[i] = (unsigned char)(i * 37 + 11);
        }
        ssize_t w = write(c, buf, sizeof buf);
        (void)w;
    }
}

static void *
junk_main(void *arg)
{
    junk_server *j = arg;
    while (!atomic_load(&j->stop)) {
        struct pollfd pfd = {.fd = j->fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0) {
            continue;
        }
        int c = accept(j->fd, NULL, NULL);
        if (c < 0) {
            continue;
        }
        answer_junk(c, atomic_fetch_add(&j->served, 1) % 4);
        close(c);
    }
    return NULL;
}

static void
junk_start(junk_server *j)
{
    memset(j, 0, sizeof *j);
    j->fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(j->fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(j->fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t alen = sizeof a;
    ck_assert_int_eq(getsockname(j->fd, (struct sockaddr *)&a, &alen), 0);
    j->port = ntohs(a.sin_port);
    ck_assert_int_eq(listen(j->fd, 16), 0);
    ck_assert_int_eq(pthread_create(&j->thread, NULL, junk_main, j), 0);
}

static void
junk_stop(junk_server *j)
{
    atomic_store(&j->stop, true);
    pthread_join(j->thread, NULL);
    close(j->fd);
}

static atomic_int fatal_calls, assigned_calls;

static void
on_assigned(void *user, int32_t generation, const ksfi_gp_assignment *a)
{
    (void)user, (void)generation, (void)a;
    atomic_fetch_add(&assigned_calls, 1);
}

static void
on_revoked(void *user, int32_t generation, const ksfi_gp_assignment *a,
           const char *reason)
{
    (void)user, (void)generation, (void)a, (void)reason;
}

static void
on_fatal(void *user, ksf_err err, const char *sentence)
{
    (void)user, (void)err, (void)sentence;
    atomic_fetch_add(&fatal_calls, 1);
}

KSFT_TEST(test_badinput_membership_junk, 40)
{
    junk_server j;
    junk_start(&j);
    char brokers[64];
    snprintf(brokers, sizeof brokers, "127.0.0.1:%d", j.port);
    static const ksfi_assignor_topic topics[] = {{"b.echo.reply", 4}};
    ksfi_membership_config cfg = {
        brokers, "ksf-junk", "ksf-test", topics, 1,
        6000,    6000,       500,        0,      {NULL, NULL, KSF_LOG_ERROR}};
    ksfi_membership_callbacks cb = {on_assigned, on_revoked, on_fatal, NULL, NULL};
    ksfi_membership *m = NULL;
    ksf_errinfo ei = {0};
    ck_assert_msg(ksfi_membership_new(&m, &cfg, &cb, &ei) == KSF_OK, "%s", ei.text);
    ksfi_membership_stats st;
    ksft_deadline until = ksft_deadline_in(15000);
    do {
        ksfi_membership_get_stats(m, &st);
    } while (st.io_errors < 4 && ksft_deadline_wait(&until));
    /* Every junk answer is an error it reports and recovers from by reconnecting. */
    ck_assert_uint_ge(st.io_errors, 4);
    ck_assert_uint_ge(atomic_load(&j.served), 4);
    ck_assert_int_eq(st.generation, -1);
    ck_assert(!st.stable);
    ck_assert_int_eq(atomic_load(&assigned_calls), 0);
    int64_t t0 = ksft_now_ms();
    ksfi_membership_close(m);
    ck_assert_int_lt(ksft_now_ms() - t0, 8000);
    junk_stop(&j);
}
END_TEST

KSFT_MAIN("badinput")
