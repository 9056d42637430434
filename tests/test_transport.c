/*
 * The membership's connection (framework/transport.c, sasl.c): TLS and SASL against a
 * small Kafka-speaking server inside the test (librdkafka's mock cluster does neither),
 * SCRAM byte for byte against RFC 7677's example, the start-up errors, and the mock
 * broker refusing SASL end to end. Certificates are made at test time with OpenSSL
 * (self-signed EC P-256) in a temporary directory.
 */
#include "alloc.h"
#include "kafka.h"
#include "membership.h"
#include "mock_broker.h"
#include "sasl.h"
#include "transport.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* RFC 7677 section 3 (SCRAM-SHA-256; user "user", password "pencil"). */
#define RFC_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_NONCE
#define RFC_SERVER_FIRST                                                                 \
    "r=" RFC_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL                                                                 \
    "c=biws,r=" RFC_NONCE                                                                \
    "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjf"                      \
    "MHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

#define BAD_CREDENTIALS                                                                  \
    "Authentication failed during authentication due to invalid credentials with "       \
    "SASL mechanism SCRAM-SHA-256"

/* ---- certificates ------------------------------------------------------------------ */

typedef struct tls_files {
    char dir[64];
    char server_cert[96], server_key[96]; /* CN/SAN localhost */
    char other_ca[96];                    /* an unrelated self-signed certificate */
    char client_cert[96], client_key[96]; /* CN ksf-client, key encrypted "hunter2" */
} tls_files;

/* A self-signed EC P-256 certificate for @p cn (SAN DNS:@p cn). */
static X509 *
make_cert(const char *cn, EVP_PKEY **key)
{
    *key = EVP_EC_gen("P-256");
    ck_assert_ptr_nonnull(*key);
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, *key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    char san[80];
    snprintf(san, sizeof san, "DNS:%s", cn);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext[] = {
        X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san),
        X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE"),
    };
    for (size_t i = 0; i < 2; i++) {
        ck_assert_ptr_nonnull(ext[i]);
        X509_add_ext(x, ext[i], -1);
        X509_EXTENSION_free(ext[i]);
    }
    ck_assert_int_gt(X509_sign(x, *key, EVP_sha256()), 0);
    return x;
}

static void
write_pair(const char *cn, const char *cert_path, const char *key_path,
           const char *password)
{
    EVP_PKEY *key;
    X509 *x = make_cert(cn, &key);
    FILE *f = fopen(cert_path, "w");
    ck_assert_ptr_nonnull(f);
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    ck_assert_ptr_nonnull(f);
    PEM_write_PrivateKey(f, key, password ? EVP_aes_256_cbc() : NULL, NULL, 0, NULL,
                         (void *)password);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
}

static void
tls_files_make(tls_files *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/ksf-tls-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(t->dir));
    snprintf(t->server_cert, sizeof t->server_cert, "%s/server.pem", t->dir);
    snprintf(t->server_key, sizeof t->server_key, "%s/server.key", t->dir);
    snprintf(t->other_ca, sizeof t->other_ca, "%s/other.pem", t->dir);
    snprintf(t->client_cert, sizeof t->client_cert, "%s/client.pem", t->dir);
    snprintf(t->client_key, sizeof t->client_key, "%s/client.key", t->dir);
    char other_key[96];
    snprintf(other_key, sizeof other_key, "%s/other.key", t->dir);
    write_pair("localhost", t->server_cert, t->server_key, NULL);
    write_pair("localhost", t->other_ca, other_key, NULL);
    write_pair("ksf-client", t->client_cert, t->client_key, "hunter2");
    unlink(other_key);
}

static void
tls_files_remove(tls_files *t)
{
    unlink(t->server_cert);
    unlink(t->server_key);
    unlink(t->other_ca);
    unlink(t->client_cert);
    unlink(t->client_key);
    rmdir(t->dir);
}

/* ---- a Kafka-speaking test server (or a TLS/SASL front for the mock broker) -------- */

typedef struct fake_broker {
    /* set before fake_start */
    SSL_CTX *tls;            /* NULL: plaintext */
    const char *mechanisms;  /* enabled, comma-separated; NULL: no SASL APIs at all */
    int16_t auth_max;        /* highest SaslAuthenticate version advertised */
    const char *scram_final; /* the client-final to accept (RFC_CLIENT_FINAL) */
    bool silent;             /* accept and never answer */
    int upstream_port;       /* > 0: after the login, relay frames to this broker */
    atomic_bool stop;        /* relay mode: stop accepting */
    /* results */
    int conn_rounds; /* SaslAuthenticate rounds on the current connection */
    atomic_int connections;
    int64_t lifetime_ms; /* session_lifetime_ms granted by SaslAuthenticate v1+ */
    int forwarded[40];   /* relayed requests per API key */
    int lfd, port;
    pthread_t thread;
    char mechanism[64];  /* asked in SaslHandshake */
    char tokens[3][160]; /* SaslAuthenticate payloads (NULs shown as '|') */
    int rounds;          /* in all */
    int16_t auth_version;
    char client_cn[64];
    int after_auth; /* ApiVersions requests served after authentication */
} fake_broker;

typedef struct wire {
    uint8_t b[1024];
    size_t n;
} wire;

static void
w_be(wire *w, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        w->b[w->n++] = (uint8_t)(v >> (8 * i));
    }
}

static void
w_str(wire *w, const char *s, bool compact)
{
    size_t n = s ? strlen(s) : 0;
    if (compact) {
        w->b[w->n++] = (uint8_t)(s ? n + 1 : 0); /* short strings: one varint byte */
    } else {
        w_be(w, s ? n : 0xffff, 2);
    }
    memcpy(w->b + w->n, s ? s : "", n);
    w->n += n;
}

static bool
fb_io(fake_broker *fb, SSL *ssl, int fd, void *p, size_t n, bool out)
{
    size_t done = 0;
    while (done < n) {
        int r = ssl ? (out ? SSL_write(ssl, (uint8_t *)p + done, (int)(n - done))
                           : SSL_read(ssl, (uint8_t *)p + done, (int)(n - done)))
                    : (int)(out ? send(fd, (uint8_t *)p + done, n - done, MSG_NOSIGNAL)
                                : recv(fd, (uint8_t *)p + done, n - done, 0));
        if (r <= 0) {
            return false;
        }
        done += (size_t)r;
    }
    (void)fb;
    return true;
}

static void
fb_reply(fake_broker *fb, SSL *ssl, int fd, int32_t corr, bool flexible, wire *body)
{
    wire w = {.n = 0};
    w_be(&w, 4 + (flexible ? 1 : 0) + body->n, 4);
    w_be(&w, (uint32_t)corr, 4);
    if (flexible) {
        w.b[w.n++] = 0;
    }
    memcpy(w.b + w.n, body->b, body->n);
    w.n += body->n;
    fb_io(fb, ssl, fd, w.b, w.n, true);
}

static void
fb_api_versions(fake_broker *fb, wire *w)
{
    w_be(w, 0, 2);
    w_be(w, fb->mechanisms ? 3 : 1, 4);
    w_be(w, 18, 2), w_be(w, 0, 2), w_be(w, 2, 2);
    if (fb->mechanisms) {
        w_be(w, 17, 2), w_be(w, 0, 2), w_be(w, 1, 2);
        w_be(w, 36, 2), w_be(w, 0, 2), w_be(w, (uint16_t)fb->auth_max, 2);
    }
}

static void
fb_handshake(fake_broker *fb, const uint8_t *p, wire *w)
{
    size_t n = (size_t)p[0] << 8 | p[1];
    snprintf(fb->mechanism, sizeof fb->mechanism, "%.*s", (int)n, (const char *)p + 2);
    bool ok = strstr(fb->mechanisms, fb->mechanism) != NULL;
    w_be(w, ok ? 0 : KSFI_ERR_UNSUPPORTED_SASL_MECHANISM, 2);
    w_be(w, 1, 4);
    w_str(w, fb->mechanisms, false);
}

/* One SaslAuthenticate: PLAIN is accepted as is; SCRAM replays RFC 7677. */
static void
fb_authenticate(fake_broker *fb, int16_t v, const uint8_t *p, wire *w)
{
    size_t n = v >= 2
                   ? (size_t)p[0] - 1
                   : (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    const uint8_t *tok = p + (v >= 2 ? 1 : 4);
    char *t = fb->tokens[fb->rounds < 3 ? fb->rounds : 2];
    for (size_t i = 0; i < n && i < 159; i++) {
        t[i] = tok[i] ? (char)tok[i] : '|';
    }
    fb->auth_version = v;
    const char *answer = "", *error = NULL;
    if (strcmp(fb->mechanism, "PLAIN") != 0) {
        if (fb->conn_rounds == 0) {
            answer = RFC_SERVER_FIRST;
        } else if (strcmp(t, fb->scram_final) == 0) {
            answer = RFC_SERVER_FINAL;
        } else {
            error = BAD_CREDENTIALS;
        }
    }
    fb->rounds++;
    fb->conn_rounds++;
    w_be(w, error ? KSFI_ERR_SASL_AUTHENTICATION_FAILED : 0, 2);
    w_str(w, error, v >= 2);
    if (v >= 2) {
        w_str(w, answer, true);
    } else {
        w_be(w, strlen(answer), 4);
        memcpy(w->b + w->n, answer, strlen(answer));
        w->n += strlen(answer);
    }
    if (v >= 1) {
        w_be(w, error ? 0 : (uint64_t)fb->lifetime_ms, 8); /* session_lifetime_ms */
    }
    if (v >= 2) {
        w->b[w->n++] = 0;
    }
}

/* Rewrite a FindCoordinator v1-2 answer to name this server (as "localhost"). */
static size_t
fb_rewrite_coordinator(fake_broker *fb, uint8_t *p, size_t n)
{
    size_t at = 4 + 4 + 2; /* correlation id, throttle_time_ms, error_code */
    int16_t mlen = (int16_t)(p[at] << 8 | p[at + 1]);
    at += 2 + (mlen > 0 ? (size_t)mlen : 0) + 4; /* error_message, node_id */
    ck_assert_uint_le(at, n);
    wire w = {.n = 0};
    w_str(&w, "localhost", false);
    w_be(&w, (uint32_t)fb->port, 4);
    memcpy(p + at, w.b, w.n);
    return at + w.n;
}

/* Relay one request frame to the upstream broker and its answer back. */
static bool
fb_relay(fake_broker *fb, SSL *ssl, int fd, int up, const uint8_t *req, size_t n,
         int16_t api)
{
    uint8_t sz[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                     (uint8_t)n};
    if (!fb_io(fb, NULL, up, sz, 4, true) || !fb_io(fb, NULL, up, (void *)req, n, true) ||
        !fb_io(fb, NULL, up, sz, 4, false)) {
        return false;
    }
    size_t m = (size_t)sz[0] << 24 | (size_t)sz[1] << 16 | (size_t)sz[2] << 8 | sz[3];
    uint8_t *resp = malloc(m + 16);
    bool ok = resp && m <= 1 << 20 && fb_io(fb, NULL, up, resp, m, false);
    if (ok && api == 10) {
        m = fb_rewrite_coordinator(fb, resp, m);
    }
    atomic_fetch_add(&fb->forwarded[api >= 0 && api < 40 ? api : 0], 1);
    uint8_t out[4] = {(uint8_t)(m >> 24), (uint8_t)(m >> 16), (uint8_t)(m >> 8),
                      (uint8_t)m};
    ok = ok && fb_io(fb, ssl, fd, out, 4, true) && fb_io(fb, ssl, fd, resp, m, true);
    free(resp);
    return ok;
}

/* Serve frames until the client goes away. */
static void
fb_serve(fake_broker *fb, SSL *ssl, int fd, int up)
{
    uint8_t sz[4], req[1024];
    while (fb_io(fb, ssl, fd, sz, 4, false)) {
        size_t n = (size_t)sz[0] << 24 | (size_t)sz[1] << 16 | (size_t)sz[2] << 8 | sz[3];
        if (n < 10 || n > sizeof req || !fb_io(fb, ssl, fd, req, n, false)) {
            return;
        }
        int16_t api = (int16_t)(req[0] << 8 | req[1]),
                v = (int16_t)(req[2] << 8 | req[3]);
        int32_t corr = (int32_t)((uint32_t)req[4] << 24 | (uint32_t)req[5] << 16 |
                                 (uint32_t)req[6] << 8 | req[7]);
        size_t off = 10 + (size_t)(req[8] << 8 | req[9]); /* after client_id */
        bool flexible = api == 36 && v >= 2;
        off += flexible; /* the header's empty tagged fields */
        wire w = {.n = 0};
        if (up >= 0 && api != 17 && api != 36 && (api != 18 || fb->conn_rounds > 0)) {
            if (!fb_relay(fb, ssl, fd, up, req, n, api)) {
                return;
            }
            continue;
        }
        if (api == 18) {
            fb->after_auth += fb->rounds > 0;
            fb_api_versions(fb, &w);
        } else if (api == 17) {
            fb_handshake(fb, req + off, &w);
        } else if (api == 36) {
            fb_authenticate(fb, v, req + off, &w);
        } else {
            return;
        }
        fb_reply(fb, ssl, fd, corr, flexible, &w);
    }
}

static int
fb_upstream(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {15, 0}; /* a JoinGroup waits for the rebalance */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void
fb_connection(fake_broker *fb, int fd)
{
    struct timeval tv = {fb->upstream_port ? 15 : 5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    atomic_fetch_add(&fb->connections, 1);
    fb->conn_rounds = 0;
    if (fb->silent) {
        char c;
        while (recv(fd, &c, 1, 0) > 0) {
        }
        return;
    }
    SSL *ssl = NULL;
    if (fb->tls) {
        ssl = SSL_new(fb->tls);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) != 1) {
            SSL_free(ssl);
            return;
        }
        X509 *peer = SSL_get1_peer_certificate(ssl);
        if (peer) {
            X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
                                      fb->client_cn, sizeof fb->client_cn);
            X509_free(peer);
        }
    }
    int up = fb->upstream_port ? fb_upstream(fb->upstream_port) : -1;
    fb_serve(fb, ssl, fd, up);
    if (up >= 0) {
        close(up);
    }
    SSL_free(ssl);
}

/* One connection, or (relay mode) connections one after the other until stop. */
static void *
fb_run(void *arg)
{
    fake_broker *fb = arg;
    int64_t deadline = ksfi_now_ms() + 30000;
    /* The test server's own writes to a client that hung up (OpenSSL's alerts) must
     * not kill the test: SIGPIPE is blocked in this thread only. */
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    do {
        struct pollfd p = {fb->lfd, POLLIN, 0};
        if (poll(&p, 1, 100) != 1) {
            continue;
        }
        int fd = accept(fb->lfd, NULL, NULL);
        if (fd < 0) {
            return NULL;
        }
        fb_connection(fb, fd);
        close(fd);
        if (!fb->upstream_port) {
            return NULL;
        }
    } while (!atomic_load(&fb->stop) && ksfi_now_ms() < deadline);
    return NULL;
}

static void
fake_start(fake_broker *fb)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fb->lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(bind(fb->lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fb->lfd, 4), 0);
    getsockname(fb->lfd, (struct sockaddr *)&a, &al);
    fb->port = ntohs(a.sin_port);
    ck_assert_int_eq(pthread_create(&fb->thread, NULL, fb_run, fb), 0);
}

static void
fake_join(fake_broker *fb)
{
    atomic_store(&fb->stop, true);
    pthread_join(fb->thread, NULL);
    close(fb->lfd);
    SSL_CTX_free(fb->tls);
}

static SSL_CTX *
server_tls(const tls_files *t, bool want_client_cert)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    ck_assert_int_eq(SSL_CTX_use_certificate_file(ctx, t->server_cert, SSL_FILETYPE_PEM),
                     1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(ctx, t->server_key, SSL_FILETYPE_PEM),
                     1);
    if (want_client_cert) {
        ck_assert_int_eq(SSL_CTX_load_verify_locations(ctx, t->client_cert, NULL), 1);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return ctx;
}

/* ---- client side helpers ----------------------------------------------------------- */

/* Security settings from "key=value" kafka.* pairs, through ksf's configuration. */
static ksf_err
security_from(ksfi_security *sec, ksf_errinfo *ei, const char *const *kv)
{
    ksf_config *cfg;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    for (; *kv; kv += 2) {
        ck_assert_msg(ksf_config_set_kafka(cfg, KSF_KAFKA_ALL, kv[0], kv[1], ei) ==
                          KSF_OK,
                      "%s: %s", kv[0], ei->text);
    }
    ksf_err e = ksfi_security_from_config(cfg, sec, ei);
    ksf_config_destroy(cfg);
    return e;
}

/* Open a connection to the fake broker at @p host with @p sec; returns the result. */
static ksf_err
connect_with(const ksfi_security *sec, const char *host, int port, ksf_errinfo *ei,
             ksfi_conn **out)
{
    ksfi_transport *t = NULL;
    char p[8];
    snprintf(p, sizeof p, "%d", port);
    ksf_err e = ksfi_transport_new(&t, sec, ei);
    if (e == KSF_OK) {
        e = ksfi_conn_open(out, t, host, p, "ksf-test", ksfi_now_ms() + 5000, NULL, ei);
    }
    if (e == KSF_OK) {
        /* The stream is usable after the login: one more ApiVersions v0. */
        static const uint8_t av[] = {0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 99, 0xff, 0xff};
        uint8_t *payload = NULL;
        size_t len = 0;
        ck_assert_int_eq(ksfi_conn_write(*out, av, sizeof av, ksfi_now_ms() + 5000, ei),
                         KSF_OK);
        ck_assert_int_eq(
            ksfi_conn_read_frame(*out, &payload, &len, ksfi_now_ms() + 5000, ei), KSF_OK);
        ck_assert_uint_ge(len, 6);
        ck_assert_int_eq(payload[3], 99); /* our correlation id */
        ksfi_free(payload);
        ksfi_conn_close(*out);
        *out = NULL;
    }
    ksfi_transport_destroy(t);
    return e;
}

/* ---- SCRAM and PLAIN as pure functions --------------------------------------------- */

START_TEST(test_transport_scram_rfc7677)
{
    ksfi_scram s = {0};
    char *first = NULL, *final = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(
        ksfi_scram_first(&s, KSFI_SASL_SCRAM_SHA_256, "user", RFC_NONCE, &first, &ei),
        KSF_OK);
    ck_assert_str_eq(first, RFC_CLIENT_FIRST);
    const char *sf = RFC_SERVER_FIRST;
    ck_assert_int_eq(
        ksfi_scram_final(&s, "pencil", (const uint8_t *)sf, strlen(sf), &final, &ei),
        KSF_OK);
    ck_assert_str_eq(final, RFC_CLIENT_FINAL);
    const char *ok = RFC_SERVER_FINAL;
    ck_assert_int_eq(ksfi_scram_verify(&s, (const uint8_t *)ok, strlen(ok), &ei), KSF_OK);
    /* One changed byte of the server's signature: refused. */
    char bad[] = RFC_SERVER_FINAL;
    bad[5] ^= 1;
    ck_assert_int_eq(ksfi_scram_verify(&s, (const uint8_t *)bad, strlen(bad), &ei),
                     KSF_EPROTO);
    ck_assert_str_eq(ei.text, "SCRAM: the server's signature is wrong: it does not know "
                              "the password (a man in the middle?)");
    const char *e = "e=invalid-proof";
    ck_assert_int_eq(ksfi_scram_verify(&s, (const uint8_t *)e, strlen(e), &ei),
                     KSF_EPROTO);
    ck_assert_str_eq(ei.text, "SCRAM: the server refused: invalid-proof");
    ksfi_free(first);
    ksfi_free(final);
    ksfi_scram_clear(&s);
}
END_TEST

/*
 * SCRAM-SHA-512 has no RFC example: RFC 7677's inputs with SHA-512, the expected
 * messages computed independently with Python's hashlib.pbkdf2_hmac and hmac (the same
 * script reproduces the SHA-256 example above byte for byte).
 */
START_TEST(test_transport_scram_sha512_vector)
{
    ksfi_scram s = {0};
    char *first = NULL, *final = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(
        ksfi_scram_first(&s, KSFI_SASL_SCRAM_SHA_512, "user", RFC_NONCE, &first, &ei),
        KSF_OK);
    ck_assert_str_eq(first, RFC_CLIENT_FIRST);
    const char *sf = RFC_SERVER_FIRST;
    ck_assert_int_eq(
        ksfi_scram_final(&s, "pencil", (const uint8_t *)sf, strlen(sf), &final, &ei),
        KSF_OK);
    ck_assert_str_eq(final, "c=biws,r=" RFC_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=gMGX"
                            "RcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC"
                            "6wdp6dybEmDYXYTxwnYPJQ==");
    const char *ok = "v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4"
                     "+5ZxXnJq199RVG2rR7N7Zw==";
    ck_assert_int_eq(ksfi_scram_verify(&s, (const uint8_t *)ok, strlen(ok), &ei), KSF_OK);
    /* The SHA-256 signature is refused for a SHA-512 exchange. */
    const char *other = RFC_SERVER_FINAL;
    ck_assert_int_eq(ksfi_scram_verify(&s, (const uint8_t *)other, strlen(other), &ei),
                     KSF_EPROTO);
    ksfi_free(first);
    ksfi_free(final);
    ksfi_scram_clear(&s);
}
END_TEST

START_TEST(test_transport_scram_rejects_bad_server_first)
{
    static const char *const cases[][2] = {
        {"r=someone-else,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "does not extend ours"},
        {"r=" RFC_NONCE "x,s=***,i=4096", "no valid salt"},
        {"r=" RFC_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1", "is not in 4096..16384"},
        {"r=" RFC_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999",
         "is not in 4096..16384"},
        {"m=ext,r=" RFC_NONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "extension (m=)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ksfi_scram s = {0};
        char *first = NULL, *final = NULL;
        ksf_errinfo ei = {0};
        ck_assert_int_eq(
            ksfi_scram_first(&s, KSFI_SASL_SCRAM_SHA_512, "user", RFC_NONCE, &first, &ei),
            KSF_OK);
        ck_assert_int_eq(ksfi_scram_final(&s, "pencil", (const uint8_t *)cases[i][0],
                                          strlen(cases[i][0]), &final, &ei),
                         KSF_EPROTO);
        ck_assert_ptr_null(final);
        ck_assert_msg(strstr(ei.text, cases[i][1]), "case %zu: %s", i, ei.text);
        ksfi_free(first);
        ksfi_scram_clear(&s);
    }
}
END_TEST

START_TEST(test_transport_scram_escapes_user_and_sha512_proof_size)
{
    ksfi_scram s = {0};
    char *first = NULL, *final = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(
        ksfi_scram_first(&s, KSFI_SASL_SCRAM_SHA_512, "a=b,c", "NONCE", &first, &ei),
        KSF_OK);
    ck_assert_str_eq(first, "n,,n=a=3Db=2Cc,r=NONCE");
    const char *sf = "r=NONCEserver,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    ck_assert_int_eq(
        ksfi_scram_final(&s, "pencil", (const uint8_t *)sf, strlen(sf), &final, &ei),
        KSF_OK);
    /* "c=biws,r=NONCEserver,p=" then base64 of a 64-byte SHA-512 proof (88 chars). */
    ck_assert_uint_eq(strlen(final), strlen("c=biws,r=NONCEserver,p=") + 88);
    ck_assert_uint_eq(s.hash_len, 64);
    ksfi_free(first);
    ksfi_free(final);
    ksfi_scram_clear(&s);
    /* Random nonces differ and are 32 printable characters. */
    ksfi_scram a = {0}, b = {0};
    char *fa = NULL, *fb = NULL;
    ck_assert_int_eq(ksfi_scram_first(&a, KSFI_SASL_SCRAM_SHA_256, "u", NULL, &fa, &ei),
                     KSF_OK);
    ck_assert_int_eq(ksfi_scram_first(&b, KSFI_SASL_SCRAM_SHA_256, "u", NULL, &fb, &ei),
                     KSF_OK);
    ck_assert_uint_eq(strlen(a.nonce), 32);
    ck_assert_str_ne(a.nonce, b.nonce);
    ksfi_free(fa);
    ksfi_free(fb);
    ksfi_scram_clear(&a);
    ksfi_scram_clear(&b);
}
END_TEST

START_TEST(test_transport_plain_message)
{
    uint8_t *tok = NULL;
    size_t len = 0;
    ck_assert_int_eq(ksfi_sasl_plain("alice", "s3cret", &tok, &len), KSF_OK);
    ck_assert_uint_eq(len, 13);
    ck_assert_mem_eq(tok, "\0alice\0s3cret", 13);
    ksfi_free(tok);
}
END_TEST

/* ---- SASL over the wire ------------------------------------------------------------ */

START_TEST(test_transport_sasl_plain_exchange)
{
    fake_broker fb = {.mechanisms = "PLAIN", .auth_max = 1};
    fake_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol",
                        "sasl_plaintext",
                        "sasl.mechanism",
                        "PLAIN",
                        "sasl.username",
                        "alice",
                        "sasl.password",
                        "s3cret",
                        NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    ksfi_conn *c = NULL;
    ck_assert_msg(connect_with(&sec, "127.0.0.1", fb.port, &ei, &c) == KSF_OK, "%s",
                  ei.text);
    fake_join(&fb);
    ck_assert_str_eq(fb.mechanism, "PLAIN");
    ck_assert_int_eq(fb.rounds, 1);
    ck_assert_int_eq(fb.auth_version, 1); /* the highest both serve */
    ck_assert_str_eq(fb.tokens[0], "|alice|s3cret");
    ck_assert_int_eq(fb.after_auth, 1);
    ksfi_security_clear(&sec);
}
END_TEST

START_TEST(test_transport_sasl_scram_over_tls_v2)
{
    tls_files tf;
    tls_files_make(&tf);
    fake_broker fb = {.tls = server_tls(&tf, false),
                      .mechanisms = "SCRAM-SHA-256,SCRAM-SHA-512",
                      .auth_max = 2,
                      .scram_final = RFC_CLIENT_FINAL};
    fake_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol",
                        "SASL_SSL",
                        "sasl.mechanisms",
                        "SCRAM-SHA-256",
                        "sasl.username",
                        "user",
                        "sasl.password",
                        "pencil",
                        "ssl.ca.location",
                        tf.server_cert,
                        NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    sec.scram_nonce = ksfi_strdup(RFC_NONCE);
    ksfi_conn *c = NULL;
    ck_assert_msg(connect_with(&sec, "localhost", fb.port, &ei, &c) == KSF_OK, "%s",
                  ei.text);
    fake_join(&fb);
    ck_assert_int_eq(fb.auth_version, 2); /* the flexible version */
    ck_assert_int_eq(fb.rounds, 2);
    ck_assert_str_eq(fb.tokens[0], RFC_CLIENT_FIRST);
    ck_assert_str_eq(fb.tokens[1], RFC_CLIENT_FINAL);
    ck_assert_int_eq(fb.after_auth, 1);
    ksfi_security_clear(&sec);
    tls_files_remove(&tf);
}
END_TEST

START_TEST(test_transport_sasl_bad_password)
{
    fake_broker fb = {
        .mechanisms = "SCRAM-SHA-256", .auth_max = 1, .scram_final = RFC_CLIENT_FINAL};
    fake_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol", "sasl_plaintext", "sasl.mechanisms",
                        "SCRAM-SHA-256",     "sasl.username",  "user",
                        "sasl.password",     "pencil!",        NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    sec.scram_nonce = ksfi_strdup(RFC_NONCE);
    ksfi_conn *c = NULL;
    ck_assert_int_eq(connect_with(&sec, "127.0.0.1", fb.port, &ei, &c), KSF_EKAFKA);
    fake_join(&fb);
    char want[KSF_ERRINFO_TEXT_SIZE];
    snprintf(want, sizeof want,
             "SASL SCRAM-SHA-256 authentication of user \"user\" with 127.0.0.1:%d "
             "failed: SASL_AUTHENTICATION_FAILED (error 58): " BAD_CREDENTIALS
             "; check sasl.username and sasl.password",
             fb.port);
    ck_assert_str_eq(ei.text, want);
    ck_assert_int_eq(ei.kafka_err, RD_KAFKA_RESP_ERR__AUTHENTICATION);
    ck_assert(ksfi_transport_error_permanent(&ei));
    ck_assert_int_eq(fb.rounds, 2);
    ck_assert_int_eq(fb.after_auth, 0);
    ksfi_security_clear(&sec);
}
END_TEST

START_TEST(test_transport_sasl_mechanism_not_enabled)
{
    fake_broker fb = {.mechanisms = "SCRAM-SHA-512", .auth_max = 0};
    fake_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol",
                        "sasl_plaintext",
                        "sasl.mechanisms",
                        "PLAIN",
                        "sasl.username",
                        "u",
                        "sasl.password",
                        "p",
                        NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    ksfi_conn *c = NULL;
    ck_assert_int_eq(connect_with(&sec, "127.0.0.1", fb.port, &ei, &c), KSF_EKAFKA);
    fake_join(&fb);
    char want[KSF_ERRINFO_TEXT_SIZE];
    snprintf(want, sizeof want,
             "127.0.0.1:%d does not enable SASL mechanism PLAIN (error 33); it offers: "
             "SCRAM-SHA-512; set sasl.mechanisms to one of them",
             fb.port);
    ck_assert_str_eq(ei.text, want);
    ck_assert_int_eq(fb.rounds, 0);
    ksfi_security_clear(&sec);
}
END_TEST

/* ---- TLS --------------------------------------------------------------------------- */

START_TEST(test_transport_tls_verified_and_client_cert)
{
    tls_files tf;
    tls_files_make(&tf);
    fake_broker fb = {.tls = server_tls(&tf, true)};
    fake_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol",
                        "ssl",
                        "ssl.ca.location",
                        tf.server_cert,
                        "ssl.certificate.location",
                        tf.client_cert,
                        "ssl.key.location",
                        tf.client_key,
                        "ssl.key.password",
                        "hunter2",
                        NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    ck_assert(sec.verify_peer && sec.verify_hostname); /* librdkafka 2's defaults */
    ksfi_conn *c = NULL;
    ck_assert_msg(connect_with(&sec, "localhost", fb.port, &ei, &c) == KSF_OK, "%s",
                  ei.text);
    fake_join(&fb);
    ck_assert_str_eq(fb.client_cn, "ksf-client");
    ck_assert_int_eq(fb.rounds, 0);
    /* The wrong key password fails at start-up, naming the setting. */
    ksfi_transport *t = NULL;
    ksfi_free(sec.key_password);
    sec.key_password = ksfi_strdup("wrong");
    ck_assert_int_eq(ksfi_transport_new(&t, &sec, &ei), KSF_EINVAL);
    char want[200];
    snprintf(want, sizeof want, "ssl.key.location \"%s\": cannot load: ", tf.client_key);
    ck_assert_msg(strncmp(ei.text, want, strlen(want)) == 0, "%s", ei.text);
    ksfi_security_clear(&sec);
    tls_files_remove(&tf);
}
END_TEST

START_TEST(test_transport_tls_wrong_ca)
{
    tls_files tf;
    tls_files_make(&tf);
    fake_broker fb = {.tls = server_tls(&tf, false)};
    fake_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol", "ssl", "ssl.ca.location", tf.other_ca, NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    ksfi_conn *c = NULL;
    ck_assert_int_eq(connect_with(&sec, "localhost", fb.port, &ei, &c), KSF_EKAFKA);
    fake_join(&fb);
    char want[KSF_ERRINFO_TEXT_SIZE];
    snprintf(want, sizeof want,
             "TLS: the certificate of localhost:%d failed verification: self-signed "
             "certificate; set ssl.ca.location to the CA that signed the broker's "
             "certificate",
             fb.port);
    ck_assert_str_eq(ei.text, want);
    ck_assert(ksfi_transport_error_permanent(&ei));
    ksfi_security_clear(&sec);
    tls_files_remove(&tf);
}
END_TEST

START_TEST(test_transport_tls_hostname)
{
    tls_files tf;
    tls_files_make(&tf);
    fake_broker fb = {.tls = server_tls(&tf, false)};
    fake_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol", "ssl", "ssl.ca.location", tf.server_cert,
                        NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    ksfi_conn *c = NULL;
    /* The certificate names localhost, not 127.0.0.1. */
    ck_assert_int_eq(connect_with(&sec, "127.0.0.1", fb.port, &ei, &c), KSF_EKAFKA);
    fake_join(&fb);
    char want[KSF_ERRINFO_TEXT_SIZE];
    snprintf(want, sizeof want,
             "TLS: the certificate of 127.0.0.1:%d does not name host \"127.0.0.1\" "
             "(ssl.endpoint.identification.algorithm=https); connect by a name the "
             "certificate lists, or set ssl.endpoint.identification.algorithm=none",
             fb.port);
    ck_assert_str_eq(ei.text, want);
    ksfi_security_clear(&sec);
    /* Identification off: the same connection is accepted. */
    fake_broker fb2 = {.tls = server_tls(&tf, false)};
    fake_start(&fb2);
    /* ... and the CA given as PEM text (ssl.ca.pem) instead of a file. */
    char pem[4096] = "";
    FILE *f = fopen(tf.server_cert, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_gt(fread(pem, 1, sizeof pem - 1, f), 100);
    fclose(f);
    const char *kv2[] = {"security.protocol",
                         "ssl",
                         "ssl.ca.pem",
                         pem,
                         "ssl.endpoint.identification.algorithm",
                         "none",
                         NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv2), KSF_OK);
    ck_assert_msg(connect_with(&sec, "127.0.0.1", fb2.port, &ei, &c) == KSF_OK, "%s",
                  ei.text);
    fake_join(&fb2);
    ksfi_security_clear(&sec);
    tls_files_remove(&tf);
}
END_TEST

START_TEST(test_transport_tls_to_plaintext_listener)
{
    fake_broker fb = {.mechanisms = NULL};
    fake_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol", "ssl", "enable.ssl.certificate.verification",
                        "false", NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    ksfi_conn *c = NULL;
    ck_assert_int_eq(connect_with(&sec, "127.0.0.1", fb.port, &ei, &c), KSF_EKAFKA);
    fake_join(&fb);
    char want[100];
    snprintf(want, sizeof want, "TLS handshake with 127.0.0.1:%d failed: ", fb.port);
    ck_assert_msg(strncmp(ei.text, want, strlen(want)) == 0, "%s", ei.text);
    ck_assert_msg(
        strstr(ei.text, "is the listener TLS (security.protocol ssl/sasl_ssl)?"), "%s",
        ei.text);
    ck_assert(!ksfi_transport_error_permanent(&ei));
    ksfi_security_clear(&sec);
}
END_TEST

START_TEST(test_transport_plaintext_to_tls_listener)
{
    tls_files tf;
    tls_files_make(&tf);
    fake_broker fb = {.tls = server_tls(&tf, false), .mechanisms = "PLAIN"};
    fake_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol",
                        "sasl_plaintext",
                        "sasl.mechanisms",
                        "PLAIN",
                        "sasl.username",
                        "u",
                        "sasl.password",
                        "p",
                        NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    ksfi_conn *c = NULL;
    /* OpenSSL's server closes on our ApiVersions without answering. */
    ksf_err e = connect_with(&sec, "127.0.0.1", fb.port, &ei, &c);
    ck_assert_int_eq(e, KSF_EKAFKA);
    fake_join(&fb);
    char want[KSF_ERRINFO_TEXT_SIZE];
    snprintf(want, sizeof want,
             "receiving from 127.0.0.1:%d: the connection was closed before any answer "
             "(a TLS or SASL listener closes clients that do not speak it: check "
             "security.protocol)",
             fb.port);
    ck_assert_str_eq(ei.text, want);
    ksfi_security_clear(&sec);
    tls_files_remove(&tf);
}
END_TEST

/* ---- deadlines and cancellation ---------------------------------------------------- */

static bool
stop_now(void *user)
{
    return *(volatile bool *)user;
}

START_TEST(test_transport_handshake_deadline_and_cancel)
{
    fake_broker fb = {.silent = true};
    fake_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol", "ssl", NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    ksfi_transport *t = NULL;
    ck_assert_int_eq(ksfi_transport_new(&t, &sec, &ei), KSF_OK);
    char port[8];
    snprintf(port, sizeof port, "%d", fb.port);
    ksfi_conn *c = NULL;
    int64_t t0 = ksfi_now_ms();
    ck_assert_int_eq(ksfi_conn_open(&c, t, "127.0.0.1", port, "x", t0 + 300, NULL, &ei),
                     KSF_ETIMEDOUT);
    int64_t took = ksfi_now_ms() - t0;
    ck_assert_int_ge(took, 290);
    ck_assert_int_lt(took, 1500);
    char want[100];
    snprintf(want, sizeof want, "TLS handshake with 127.0.0.1:%d: no answer in time",
             fb.port);
    ck_assert_str_eq(ei.text, want);
    fake_join(&fb);
    /* A cancel that is already true ends the wait at once, with KSF_ECLOSED. */
    fake_broker fb2 = {.silent = true};
    fake_start(&fb2);
    snprintf(port, sizeof port, "%d", fb2.port);
    volatile bool stop = true;
    ksfi_cancel cancel = {stop_now, -1, (void *)&stop};
    t0 = ksfi_now_ms();
    ck_assert_int_eq(
        ksfi_conn_open(&c, t, "127.0.0.1", port, "x", t0 + 5000, &cancel, &ei),
        KSF_ECLOSED);
    ck_assert_int_lt(ksfi_now_ms() - t0, 1000);
    shutdown(fb2.lfd, SHUT_RDWR);
    fake_join(&fb2);
    ksfi_transport_destroy(t);
    ksfi_security_clear(&sec);
}
END_TEST

/* ---- configuration ----------------------------------------------------------------- */

START_TEST(test_transport_config_errors)
{
    static const struct {
        const char *kv[7];
        const char *text;
    } cases[] = {
        {{"security.protocol", "sasl_ssl", NULL},
         "sasl.mechanisms \"GSSAPI\" (librdkafka's default): the reply-group connection "
         "speaks PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 only; set sasl.mechanisms to one "
         "of them, or set client.reply.provider=static (with client.reply.partition) to "
         "use GSSAPI without the reply group"},
        {{"security.protocol", "sasl_plaintext", "sasl.mechanisms", "OAUTHBEARER", NULL},
         "sasl.mechanisms \"OAUTHBEARER\": the reply-group connection speaks PLAIN, "
         "SCRAM-SHA-256 and SCRAM-SHA-512 only; set sasl.mechanisms to one of them, or "
         "set client.reply.provider=static (with client.reply.partition) to use "
         "OAUTHBEARER without the reply group"},
        {{"security.protocol", "sasl_plaintext", "sasl.mechanisms", "PLAIN",
          "sasl.username", "u", NULL},
         "sasl.mechanisms PLAIN needs sasl.username and sasl.password "
         "(kafka.sasl.username, kafka.sasl.password)"},
        {{"security.protocol", "ssl", "ssl.keystore.location", "/etc/k.p12", NULL},
         "ssl.keystore.location \"/etc/k.p12\": the reply-group connection takes PEM "
         "files and strings only (ssl.ca.location, ssl.certificate.location, "
         "ssl.key.location, ssl.*.pem); set client.reply.provider=static (with "
         "client.reply.partition) to use it without the reply group, whose connection "
         "ksf opens itself"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ksfi_security sec;
        ksf_errinfo ei = {0};
        ck_assert_int_eq(security_from(&sec, &ei, cases[i].kv), KSF_EINVAL);
        ck_assert_str_eq(ei.text, cases[i].text);
        ksfi_security_clear(&sec);
    }
    /* Settings that only matter with TLS/SASL are ignored without them. */
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"ssl.keystore.location", "/etc/k.p12", "sasl.mechanisms",
                        "GSSAPI", NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    ck_assert_int_eq(sec.protocol, KSFI_SEC_PLAINTEXT);
    ksfi_security_clear(&sec);
    /* A missing CA file fails when the transport loads it. */
    const char *kv2[] = {"security.protocol", "ssl", "ssl.ca.location",
                         "/nonexistent/ca.pem", NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv2), KSF_OK);
    ksfi_transport *t = NULL;
    ck_assert_int_eq(ksfi_transport_new(&t, &sec, &ei), KSF_EINVAL);
    ck_assert_msg(strncmp(ei.text,
                          "ssl.ca.location \"/nonexistent/ca.pem\": cannot load CA "
                          "certificates: ",
                          60) == 0,
                  "%s", ei.text);
    ksfi_security_clear(&sec);
}
END_TEST

/* consumer.* overrides kafka.* for the membership, as for the reply consumer. */
START_TEST(test_transport_config_consumer_role_wins)
{
    ksf_config *cfg;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.security.protocol", "sasl_ssl", &ei),
                     KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.sasl.mechanism", "SCRAM-SHA-512", &ei),
                     KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.sasl.username", "svc", &ei), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.sasl.password", "a", &ei), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "consumer.sasl.password", "b", &ei), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "producer.sasl.username", "other", &ei), KSF_OK);
    ksfi_security sec;
    ck_assert_int_eq(ksfi_security_from_config(cfg, &sec, &ei), KSF_OK);
    ck_assert_int_eq(sec.protocol, KSFI_SEC_SASL_SSL);
    ck_assert_int_eq(sec.mech, KSFI_SASL_SCRAM_SHA_512);
    ck_assert_str_eq(sec.username, "svc");
    ck_assert_str_eq(sec.password, "b");
    ksfi_security_clear(&sec);
    ksf_config_destroy(cfg);
}
END_TEST

/* Every allocation of reading, copying and loading the settings may fail cleanly. */
START_TEST(test_transport_allocation_failures)
{
    ksf_config *cfg;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    const char *kv[][2] = {{"kafka.security.protocol", "sasl_ssl"},
                           {"kafka.sasl.mechanisms", "SCRAM-SHA-256"},
                           {"kafka.sasl.username", "user"},
                           {"kafka.sasl.password", "pencil"},
                           {"kafka.ssl.cipher.suites", "HIGH"},
                           {"kafka.enable.ssl.certificate.verification", "false"}};
    for (size_t i = 0; i < 6; i++) {
        ck_assert_int_eq(ksf_config_set(cfg, kv[i][0], kv[i][1], &ei), KSF_OK);
    }
    /* Count the allocations of one successful run, then fail each in turn. */
    ksfi_security probe;
    ksfi_transport *pt = NULL;
    ksfi_alloc_fail_after(1000000, 0);
    ck_assert_int_eq(ksfi_security_from_config(cfg, &probe, &ei), KSF_OK);
    ck_assert_int_eq(ksfi_transport_new(&pt, &probe, &ei), KSF_OK);
    unsigned long total = ksfi_alloc_count();
    ksfi_alloc_fail_after(0, 0);
    ksfi_transport_destroy(pt);
    ksfi_security_clear(&probe);
    ck_assert_uint_gt(total, 5);
    unsigned ok = 0, failed = 0;
    for (unsigned long n = 1; n <= total + 1; n++) {
        ksfi_security sec;
        ksfi_transport *t = NULL;
        ksfi_alloc_fail_after(n, 0);
        ksf_err e = ksfi_security_from_config(cfg, &sec, &ei);
        if (e == KSF_OK) {
            e = ksfi_transport_new(&t, &sec, &ei);
        }
        ksfi_alloc_fail_after(0, 0);
        ck_assert_msg(e == KSF_OK || e == KSF_ENOMEM, "n=%lu: %s", n, ei.text);
        if (e == KSF_OK) {
            ck_assert_str_eq(sec.password, "pencil");
            ok++;
        } else {
            failed++;
        }
        ksfi_transport_destroy(t);
        ksfi_security_clear(&sec);
    }
    ck_assert_uint_eq(failed, total); /* each allocation's failure is reported */
    ck_assert_uint_eq(ok, 1);
    ksf_config_destroy(cfg);
}
END_TEST

/* Every librdkafka handle ksf builds gets the security properties. */
START_TEST(test_transport_props_reach_librdkafka_handles)
{
    ksf_config *cfg;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.security.protocol", "sasl_ssl", &ei),
                     KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.sasl.mechanisms", "PLAIN", &ei), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.sasl.username", "svc", &ei), KSF_OK);
    ck_assert_int_eq(ksf_config_set(cfg, "kafka.ssl.ca.location", "/tmp/ca.pem", &ei),
                     KSF_OK);
    const ksf_kafka_role roles[] = {KSF_KAFKA_PRODUCER, KSF_KAFKA_CONSUMER};
    for (size_t i = 0; i < 2; i++) {
        rd_kafka_conf_t *conf = NULL;
        ck_assert_int_eq(ksfi_kafka_conf(cfg, roles[i], "c", i ? "g" : NULL, &conf, &ei),
                         KSF_OK);
        static const char *const want[][2] = {{"security.protocol", "sasl_ssl"},
                                              {"sasl.mechanisms", "PLAIN"},
                                              {"sasl.username", "svc"},
                                              {"ssl.ca.location", "/tmp/ca.pem"}};
        for (size_t k = 0; k < 4; k++) {
            char v[256];
            size_t n = sizeof v;
            ck_assert_int_eq(rd_kafka_conf_get(conf, want[k][0], v, &n),
                             RD_KAFKA_CONF_OK);
            ck_assert_str_eq(v, want[k][1]);
        }
        rd_kafka_conf_destroy(conf);
    }
    ksf_config_destroy(cfg);
}
END_TEST

/* ---- against the embedded broker --------------------------------------------------- */

START_TEST(test_transport_client_new_rejects_oauthbearer)
{
    ksf_config *cfg;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    const char *kv[][2] = {{"brokers", "127.0.0.1:1"},
                           {"kafka.security.protocol", "sasl_plaintext"},
                           {"kafka.sasl.mechanisms", "OAUTHBEARER"},
                           {"kafka.enable.sasl.oauthbearer.unsecure.jwt", "true"},
                           {"kafka.log_level", "0"}};
    for (size_t i = 0; i < 5; i++) {
        ck_assert_int_eq(ksf_config_set(cfg, kv[i][0], kv[i][1], &ei), KSF_OK);
    }
    ksf_client *cli = NULL;
    ck_assert_msg(ksf_client_new(&cli, cfg, &ei) == KSF_EINVAL, "%s", ei.text);
    ck_assert_ptr_null(cli);
    ck_assert_str_eq(
        ei.text, "sasl.mechanisms \"OAUTHBEARER\": the reply-group connection speaks "
                 "PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 only; set sasl.mechanisms to "
                 "one of them, or set client.reply.provider=static (with "
                 "client.reply.partition) to use OAUTHBEARER without the reply group");
    /* With the static provider the same settings go to librdkafka alone. */
    ck_assert_int_eq(ksf_config_set(cfg, "client.reply.provider", "static", &ei), KSF_OK);
    ck_assert_msg(ksf_client_new(&cli, cfg, &ei) == KSF_OK, "%s", ei.text);
    ksf_client_destroy(cli);
    ksf_config_destroy(cfg);
}
END_TEST

typedef struct fatal_seen {
    pthread_mutex_t lock;
    bool fatal;
    char text[KSF_ERRINFO_TEXT_SIZE];
} fatal_seen;

static void
on_fatal(void *user, ksf_err err, const char *sentence)
{
    fatal_seen *f = user;
    (void)err;
    pthread_mutex_lock(&f->lock);
    f->fatal = true;
    snprintf(f->text, sizeof f->text, "%s", sentence);
    pthread_mutex_unlock(&f->lock);
}

/*
 * librdkafka 2.0.2's mock cluster serves neither SaslHandshake nor TLS: a membership set
 * to sasl_plaintext stops at its first connection with a clear sentence (fatal, not
 * retried forever), within a second.
 */
START_TEST(test_transport_mock_broker_has_no_sasl)
{
    ksft_broker *b = ksft_broker_start();
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol",
                        "sasl_plaintext",
                        "sasl.mechanisms",
                        "SCRAM-SHA-256",
                        "sasl.username",
                        "u",
                        "sasl.password",
                        "p",
                        NULL};
    ck_assert_int_eq(security_from(&sec, &ei, kv), KSF_OK);
    fatal_seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
    ksfi_assignor_topic topic = {"sec.reply", 4};
    ksfi_membership_config mc = {.brokers = ksft_broker_address(b),
                                 .group_id = "sec-client",
                                 .client_id = "sec",
                                 .topics = &topic,
                                 .topic_count = 1,
                                 .session_timeout_ms = 6000,
                                 .rebalance_timeout_ms = 6000,
                                 .heartbeat_interval_ms = 500,
                                 .security = &sec};
    ksfi_membership_callbacks cb = {.on_fatal = on_fatal, .user = &seen};
    ksfi_membership *m = NULL;
    ck_assert_int_eq(ksfi_membership_new(&m, &mc, &cb, &ei), KSF_OK);
    int64_t deadline = ksft_now_ms() + 3000;
    bool fatal = false;
    while (!fatal && ksft_now_ms() < deadline) {
        pthread_mutex_lock(&seen.lock);
        fatal = seen.fatal;
        pthread_mutex_unlock(&seen.lock);
        if (!fatal) {
            poll(NULL, 0, 20);
        }
    }
    ck_assert(fatal);
    char want[KSF_ERRINFO_TEXT_SIZE];
    snprintf(want, sizeof want,
             "group sec-client: %s does not serve SaslHandshake v1 and SaslAuthenticate: "
             "its listener is not SASL (check security.protocol and the port), or the "
             "broker is older than Kafka 1.0",
             ksft_broker_address(b));
    ck_assert_str_eq(seen.text, want);
    ksfi_membership_stats st;
    ksfi_membership_get_stats(m, &st);
    ck_assert(st.fatal);
    ck_assert_uint_eq(st.lookups, 0);
    ksfi_membership_close(m);
    ksfi_security_clear(&sec);
    ksft_broker_stop(b);
}
END_TEST

typedef struct assigned_seen {
    pthread_mutex_t lock;
    int generation;
    size_t partitions; /* of sec.reply in the last assignment */
} assigned_seen;

static void
on_assigned(void *user, int32_t generation, const ksfi_gp_assignment *a)
{
    assigned_seen *seen = user;
    pthread_mutex_lock(&seen->lock);
    seen->generation = generation;
    seen->partitions = 0;
    for (size_t i = 0; i < a->count; i++) {
        if (strcmp(a->topics[i].topic, "sec.reply") == 0) {
            seen->partitions = a->topics[i].count;
        }
    }
    pthread_mutex_unlock(&seen->lock);
}

/*
 * The whole group protocol over TLS and SCRAM: the membership logs in to a TLS+SASL
 * front (the in-test server, checking RFC 7677's exchange byte for byte) that relays
 * every later frame to the mock broker and names itself as the coordinator. The member
 * joins, syncs and gets both partitions of its reply topic.
 */
/* A membership logging in over TLS + SCRAM to the relay in front of the mock broker. */
typedef struct relay_env {
    ksft_broker *b;
    tls_files tf;
    fake_broker fb;
    ksfi_security sec;
    assigned_seen seen;
    ksfi_membership *m;
} relay_env;

static void
relay_start(relay_env *env, int64_t lifetime_ms)
{
    env->b = ksft_broker_start();
    ksft_broker_create_topic(env->b, "sec.reply", 2);
    tls_files_make(&env->tf);
    const char *colon = strrchr(ksft_broker_address(env->b), ':');
    fake_broker *fb = &env->fb;
    fb->tls = server_tls(&env->tf, false);
    fb->mechanisms = "SCRAM-SHA-256";
    fb->auth_max = 1;
    fb->scram_final = RFC_CLIENT_FINAL;
    fb->upstream_port = atoi(colon + 1);
    fb->lifetime_ms = lifetime_ms;
    fake_start(fb);
    ksf_errinfo ei = {0};
    const char *kv[] = {"security.protocol",
                        "sasl_ssl",
                        "sasl.mechanisms",
                        "SCRAM-SHA-256",
                        "sasl.username",
                        "user",
                        "sasl.password",
                        "pencil",
                        "ssl.ca.location",
                        env->tf.server_cert,
                        NULL};
    ck_assert_int_eq(security_from(&env->sec, &ei, kv), KSF_OK);
    env->sec.scram_nonce = ksfi_strdup(RFC_NONCE);
    char brokers[32];
    snprintf(brokers, sizeof brokers, "localhost:%d", fb->port);
    pthread_mutex_init(&env->seen.lock, NULL);
    env->seen.generation = -1;
    ksfi_assignor_topic topic = {"sec.reply", 2};
    ksfi_membership_config mc = {.brokers = brokers,
                                 .group_id = "sec-client",
                                 .client_id = "sec",
                                 .topics = &topic,
                                 .topic_count = 1,
                                 .session_timeout_ms = 6000,
                                 .rebalance_timeout_ms = 6000,
                                 .heartbeat_interval_ms = 500,
                                 .security = &env->sec};
    ksfi_membership_callbacks cb = {.on_assigned = on_assigned, .user = &env->seen};
    ck_assert_int_eq(ksfi_membership_new(&env->m, &mc, &cb, &ei), KSF_OK);
    int64_t deadline = ksft_now_ms() + 15000;
    size_t parts = 0;
    while (parts == 0 && ksft_now_ms() < deadline) {
        pthread_mutex_lock(&env->seen.lock);
        parts = env->seen.partitions;
        pthread_mutex_unlock(&env->seen.lock);
        if (parts == 0) {
            poll(NULL, 0, 50);
        }
    }
    ck_assert_uint_eq(parts, 2);
}

static void
relay_stop(relay_env *env)
{
    ksfi_membership_close(env->m); /* LeaveGroup, relayed too */
    fake_join(&env->fb);
    ksfi_security_clear(&env->sec);
    tls_files_remove(&env->tf);
    ksft_broker_stop(env->b);
}

/*
 * The whole group protocol over TLS and SCRAM: the membership logs in to a TLS+SASL
 * front (the in-test server, checking RFC 7677's exchange byte for byte) that relays
 * every later frame to the mock broker and names itself as the coordinator. The member
 * joins, syncs and gets both partitions of its reply topic.
 */
START_TEST(test_transport_membership_over_tls_and_scram)
{
    relay_env env = {0};
    relay_start(&env, 0);
    ksfi_membership_stats st;
    ksfi_membership_get_stats(env.m, &st);
    ck_assert(!st.fatal);
    ck_assert_uint_ge(st.joins, 1);
    relay_stop(&env);
    /* One connection (the coordinator is the bootstrap broker), one login. */
    ck_assert_int_eq(atomic_load(&env.fb.connections), 1);
    ck_assert_int_eq(env.fb.rounds, 2);
    ck_assert_str_eq(env.fb.tokens[1], RFC_CLIENT_FINAL);
    ck_assert_int_eq(env.fb.forwarded[10], 1); /* FindCoordinator */
    ck_assert_int_ge(env.fb.forwarded[11], 1); /* JoinGroup */
    ck_assert_int_ge(env.fb.forwarded[14], 1); /* SyncGroup */
    ck_assert_int_eq(env.fb.forwarded[13], 1); /* LeaveGroup */
}
END_TEST

/*
 * KIP-368: the broker grants a 1.5 s session; the member reconnects and logs in again
 * before it ends (at 90 %), keeping its membership: same generation, no revocation.
 */
START_TEST(test_transport_membership_reauthenticates)
{
    relay_env env = {0};
    relay_start(&env, 1500);
    ksfi_membership_stats before, after;
    ksfi_membership_get_stats(env.m, &before);
    /* Two more logins, each followed by a new coordinator lookup. */
    int64_t deadline = ksft_now_ms() + 8000;
    while (atomic_load(&env.fb.forwarded[10]) < 3 && ksft_now_ms() < deadline) {
        poll(NULL, 0, 50);
    }
    ck_assert_int_ge(atomic_load(&env.fb.forwarded[10]), 3);
    ksfi_membership_get_stats(env.m, &after);
    ck_assert_int_eq(after.generation, before.generation);
    ck_assert_uint_eq(after.revocations, 0);
    ck_assert(!after.fatal);
    ck_assert_uint_eq(after.joins, before.joins); /* no rejoin: the member stayed */
    relay_stop(&env);
    /* Each of those connections logged in with the full SCRAM exchange. */
    ck_assert_int_ge(atomic_load(&env.fb.connections), 3);
    ck_assert_int_ge(env.fb.rounds, 6);
}
END_TEST

static Suite *
transport_suite(void)
{
    Suite *s = suite_create("transport");
    struct {
        const char *name;
        const TTest *test;
        int timeout;
    } cases[] = {
        {"scram", test_transport_scram_rfc7677, 10},
        {"scram_sha512", test_transport_scram_sha512_vector, 10},
        {"scram_bad_server_first", test_transport_scram_rejects_bad_server_first, 10},
        {"scram_escape_sha512", test_transport_scram_escapes_user_and_sha512_proof_size,
         10},
        {"plain", test_transport_plain_message, 10},
        {"sasl_plain", test_transport_sasl_plain_exchange, 20},
        {"sasl_scram_tls", test_transport_sasl_scram_over_tls_v2, 20},
        {"sasl_bad_password", test_transport_sasl_bad_password, 20},
        {"sasl_mechanism", test_transport_sasl_mechanism_not_enabled, 20},
        {"tls_client_cert", test_transport_tls_verified_and_client_cert, 20},
        {"tls_wrong_ca", test_transport_tls_wrong_ca, 20},
        {"tls_hostname", test_transport_tls_hostname, 20},
        {"tls_plaintext_listener", test_transport_tls_to_plaintext_listener, 20},
        {"plaintext_tls_listener", test_transport_plaintext_to_tls_listener, 20},
        {"deadline_cancel", test_transport_handshake_deadline_and_cancel, 20},
        {"config_errors", test_transport_config_errors, 10},
        {"config_roles", test_transport_config_consumer_role_wins, 10},
        {"librdkafka_props", test_transport_props_reach_librdkafka_handles, 10},
        {"allocation_failures", test_transport_allocation_failures, 20},
        {"client_new", test_transport_client_new_rejects_oauthbearer, 20},
        {"mock_broker", test_transport_mock_broker_has_no_sasl, 30},
        {"membership_tls_scram", test_transport_membership_over_tls_and_scram, 40},
        {"membership_reauth", test_transport_membership_reauthenticates, 40},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].test);
        tcase_set_timeout(tc, cases[i].timeout);
        suite_add_tcase(s, tc);
    }
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(transport_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
