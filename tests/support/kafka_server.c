/* The Kafka-speaking TLS/SASL test server (see kafka_server.h). */
#include "kafka_server.h"

#include "group/sasl.h"
#include "group/transport.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- certificates ------------------------------------------------------------------ */

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

void
ksft_tls_files_make(ksft_tls_files *t)
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

void
ksft_tls_files_remove(ksft_tls_files *t)
{
    unlink(t->server_cert);
    unlink(t->server_key);
    unlink(t->other_ca);
    unlink(t->client_cert);
    unlink(t->client_key);
    rmdir(t->dir);
}

/* ---- a Kafka-speaking test server (or a TLS/SASL front for the mock broker) -------- */

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
fb_io(ksft_kserver *fb, SSL *ssl, int fd, void *p, size_t n, bool out)
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
fb_reply(ksft_kserver *fb, SSL *ssl, int fd, int32_t corr, bool flexible, wire *body)
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
fb_api_versions(ksft_kserver *fb, wire *w)
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
fb_handshake(ksft_kserver *fb, const uint8_t *p, wire *w)
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
fb_authenticate(ksft_kserver *fb, int16_t v, const uint8_t *p, wire *w)
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
fb_rewrite_coordinator(ksft_kserver *fb, uint8_t *p, size_t n)
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
fb_relay(ksft_kserver *fb, SSL *ssl, int fd, int up, const uint8_t *req, size_t n,
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
fb_serve(ksft_kserver *fb, SSL *ssl, int fd, int up)
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
fb_connection(ksft_kserver *fb, int fd)
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
    ksft_kserver *fb = arg;
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

void
ksft_kserver_start(ksft_kserver *fb)
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

void
ksft_kserver_join(ksft_kserver *fb)
{
    atomic_store(&fb->stop, true);
    pthread_join(fb->thread, NULL);
    close(fb->lfd);
    SSL_CTX_free(fb->tls);
}

SSL_CTX *
ksft_server_tls(const ksft_tls_files *t, bool want_client_cert)
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
