/* The membership's own connection: TCP, TLS (OpenSSL), SASL (sasl.c), Kafka frames. */
#include "group/transport.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/errinfo.h"
#include "group/group_proto.h"
#include "group/sasl.h"
#include "kafka/kafka.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct ksfi_transport {
    ksfi_security sec;
    SSL_CTX *ctx;    /* NULL without TLS */
    BIO_METHOD *bio; /* sockets written with MSG_NOSIGNAL (no SIGPIPE) */
};

struct ksfi_conn {
    const ksfi_transport *t;
    int fd;
    SSL *ssl;
    const ksfi_cancel *cancel; /* NULL: not cancellable */
    char peer[300];            /* "host:port", for sentences */
    int64_t reauth_at_ms;      /* 0: no session lifetime */
    unsigned frames; /* read so far: none means the listener may speak no Kafka */
};

int64_t
ksfi_now_ms(void)
{
    return ksfi_clock_ms();
}

bool
ksfi_security_tls(const ksfi_security *s)
{
    return s->protocol == KSFI_SEC_SSL || s->protocol == KSFI_SEC_SASL_SSL;
}

bool
ksfi_security_sasl(const ksfi_security *s)
{
    return s->protocol == KSFI_SEC_SASL_PLAINTEXT || s->protocol == KSFI_SEC_SASL_SSL;
}

/* ---- settings ---------------------------------------------------------------------- */

static void
wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        ksfi_free(s);
    }
}

/* The string fields of @p s, in one order for every copy and clear. */
#define SECURITY_STRINGS(s)                                                              \
    {                                                                                    \
        &(s)->ca_location, &(s)->ca_pem, &(s)->cert_location, &(s)->cert_pem,            \
            &(s)->key_location, &(s)->key_pem, &(s)->key_password, &(s)->cipher_suites,  \
            &(s)->curves, &(s)->sigalgs, &(s)->username, &(s)->password,                 \
            &(s)->scram_nonce                                                            \
    }

ksf_err
ksfi_security_copy(ksfi_security *dst, const ksfi_security *src)
{
    ksfi_security tmp = *src;
    char **from[] = SECURITY_STRINGS(&tmp);
    char **to[] = SECURITY_STRINGS(dst);
    *dst = *src;
    for (size_t i = 0; i < sizeof to / sizeof to[0]; i++) {
        *to[i] = NULL; /* so that a failure half-way frees only our copies */
    }
    for (size_t i = 0; i < sizeof to / sizeof to[0]; i++) {
        if (*from[i] && !(*to[i] = ksfi_strdup(*from[i]))) {
            ksfi_security_clear(dst);
            return KSF_ENOMEM;
        }
    }
    return KSF_OK;
}

void
ksfi_security_clear(ksfi_security *s)
{
    char **strs[] = SECURITY_STRINGS(s);
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        wipe_free(*strs[i]);
    }
    memset(s, 0, sizeof *s);
}

/* The value librdkafka resolved for @p key (its default when unset), or NULL. */
static ksf_err
conf_str(ksfi_kafka_settings *conf, const char *key, char **out)
{
    return ksfi_kafka_conf_value(conf, key, out);
}

static bool
conf_is(ksfi_kafka_settings *conf, const char *key, const char *value)
{
    char v[256];
    return ksfi_kafka_conf_value_in(conf, key, v, sizeof v) && strcmp(v, value) == 0;
}

/* Settings the membership connection cannot honour, when TLS is on. */
static const char *const tls_unsupported[] = {
    "ssl.keystore.location",
    "ssl.engine.location",
    "ssl.providers",
    "ssl.crl.location",
}; /* ssl.ca.certificate.stores is Windows-only (default "Root"): ignored, as there */

#define STATIC_HINT                                                                      \
    "; set client.reply.provider=static (with client.reply.partition) to use it "        \
    "without the reply group, whose connection ksf opens itself"

static ksf_err
read_protocol(ksfi_kafka_settings *conf, ksfi_security *s, ksf_errinfo *ei)
{
    static const char *const names[] = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
    char v[64];
    if (!ksfi_kafka_conf_value_in(conf, "security.protocol", v, sizeof v)) {
        v[0] = '\0';
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(v, names[i]) == 0) {
            s->protocol = (ksfi_sec_protocol)i;
            return KSF_OK;
        }
    }
    return ksfi_fail(ei, KSF_EINVAL,
                     "security.protocol \"%s\": expected plaintext, ssl, sasl_plaintext "
                     "or sasl_ssl",
                     v);
}

static ksf_err
read_tls(ksfi_kafka_settings *conf, ksfi_security *s, ksf_errinfo *ei)
{
    for (size_t i = 0; i < sizeof tls_unsupported / sizeof tls_unsupported[0]; i++) {
        char *v = NULL;
        if (conf_str(conf, tls_unsupported[i], &v) != KSF_OK) {
            return KSF_ENOMEM;
        }
        if (v) {
            ksf_err e = ksfi_fail(ei, KSF_EINVAL,
                                  "%s \"%.60s\": the reply-group connection takes PEM "
                                  "files and strings only (ssl.ca.location, "
                                  "ssl.certificate.location, ssl.key.location, "
                                  "ssl.*.pem)" STATIC_HINT,
                                  tls_unsupported[i], v);
            ksfi_free(v);
            return e;
        }
    }
    const struct {
        const char *key;
        char **slot;
    } keys[] = {
        {"ssl.ca.location", &s->ca_location},
        {"ssl.ca.pem", &s->ca_pem},
        {"ssl.certificate.location", &s->cert_location},
        {"ssl.certificate.pem", &s->cert_pem},
        {"ssl.key.location", &s->key_location},
        {"ssl.key.pem", &s->key_pem},
        {"ssl.key.password", &s->key_password},
        {"ssl.cipher.suites", &s->cipher_suites},
        {"ssl.curves.list", &s->curves},
        {"ssl.sigalgs.list", &s->sigalgs},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (conf_str(conf, keys[i].key, keys[i].slot) != KSF_OK) {
            return KSF_ENOMEM;
        }
    }
    s->verify_peer = !conf_is(conf, "enable.ssl.certificate.verification", "false");
    s->verify_hostname = conf_is(conf, "ssl.endpoint.identification.algorithm", "https");
    return KSF_OK;
}

static ksf_err
read_sasl(ksfi_kafka_settings *conf, ksfi_security *s, ksf_errinfo *ei)
{
    static const char *const mechs[] = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"};
    char v[128];
    if (!ksfi_kafka_conf_value_in(conf, "sasl.mechanisms", v, sizeof v)) {
        snprintf(v, sizeof v, "GSSAPI");
    }
    size_t i = 0;
    while (i < sizeof mechs / sizeof mechs[0] && strcmp(v, mechs[i]) != 0) {
        i++;
    }
    if (i == sizeof mechs / sizeof mechs[0]) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "sasl.mechanisms \"%.60s\"%s: the reply-group connection "
                         "speaks PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 only; set "
                         "sasl.mechanisms to one of them, or set "
                         "client.reply.provider=static (with client.reply.partition) "
                         "to use %.60s without the reply group",
                         v, strcmp(v, "GSSAPI") == 0 ? " (librdkafka's default)" : "", v);
    }
    s->mech = (ksfi_sasl_mech)i;
    if (conf_str(conf, "sasl.username", &s->username) != KSF_OK ||
        conf_str(conf, "sasl.password", &s->password) != KSF_OK) {
        return KSF_ENOMEM;
    }
    if (!s->username || !s->password) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "sasl.mechanisms %s needs sasl.username and sasl.password "
                         "(kafka.sasl.username, kafka.sasl.password)",
                         v);
    }
    return KSF_OK;
}

ksf_err
ksfi_security_from_config(const ksf_config *cfg, ksfi_security *out, ksf_errinfo *ei)
{
    ksfi_kafka_settings *conf = NULL;
    memset(out, 0, sizeof *out);
    /* librdkafka resolves aliases, case and defaults exactly as the reply consumer will
     * see them; the membership reads the result. */
    ksf_err e = ksfi_kafka_conf(cfg, KSF_KAFKA_CONSUMER, "ksf", NULL, &conf, ei);
    if (e != KSF_OK) {
        return e;
    }
    if ((e = read_protocol(conf, out, ei)) == KSF_OK && ksfi_security_tls(out)) {
        e = read_tls(conf, out, ei);
    }
    if (e == KSF_OK && ksfi_security_sasl(out)) {
        e = read_sasl(conf, out, ei);
    }
    ksfi_kafka_conf_free(conf);
    if (e == KSF_ENOMEM) {
        return ksfi_fail(ei, e, "out of memory reading the security settings");
    }
    return e;
}

/* ---- TLS context ------------------------------------------------------------------- */

/* OpenSSL's queued reason, for sentences ("no reason given" when none). */
static const char *
ssl_reason(char *buf, size_t size)
{
    unsigned long code = ERR_peek_last_error();
    if (!code) {
        snprintf(buf, size, "no reason given");
    } else {
        ERR_error_string_n(code, buf, size);
    }
    ERR_clear_error();
    return buf;
}

static int
key_password_cb(char *buf, int size, int rwflag, void *user)
{
    (void)rwflag;
    const char *pw = user;
    size_t n = pw ? strlen(pw) : 0;
    if (n >= (size_t)size) {
        return -1;
    }
    memcpy(buf, pw ? pw : "", n);
    return (int)n;
}

static ksf_err
load_ca(SSL_CTX *ctx, const ksfi_security *s, ksf_errinfo *ei)
{
    char why[256];
    if (s->ca_location) {
        struct stat st;
        bool dir = stat(s->ca_location, &st) == 0 && S_ISDIR(st.st_mode);
        if (SSL_CTX_load_verify_locations(ctx, dir ? NULL : s->ca_location,
                                          dir ? s->ca_location : NULL) != 1) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "ssl.ca.location \"%s\": cannot load CA certificates: %s; "
                             "give a readable PEM file or a c_rehash'ed directory",
                             s->ca_location, ssl_reason(why, sizeof why));
        }
    }
    if (s->ca_pem) {
        BIO *b = BIO_new_mem_buf(s->ca_pem, -1);
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        X509 *x;
        int added = 0;
        while (b && (x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
            added += X509_STORE_add_cert(store, x) == 1;
            X509_free(x);
        }
        BIO_free(b);
        ERR_clear_error(); /* the loop ends on a "no start line" error */
        if (added == 0) {
            return ksfi_fail(ei, KSF_EINVAL,
                             "ssl.ca.pem: no PEM certificate in it; paste the CA "
                             "certificate(s), -----BEGIN CERTIFICATE----- included");
        }
    }
    if (!s->ca_location && !s->ca_pem && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "cannot load the system's CA certificates: %s; set "
                         "ssl.ca.location",
                         ssl_reason(why, sizeof why));
    }
    return KSF_OK;
}

static ksf_err
load_identity(SSL_CTX *ctx, const ksfi_security *s, ksf_errinfo *ei)
{
    char why[256];
    SSL_CTX_set_default_passwd_cb(ctx, key_password_cb);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, s->key_password);
    if (s->cert_location &&
        SSL_CTX_use_certificate_chain_file(ctx, s->cert_location) != 1) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "ssl.certificate.location \"%s\": cannot load: %s; give a PEM "
                         "certificate file",
                         s->cert_location, ssl_reason(why, sizeof why));
    }
    if (s->cert_pem) {
        BIO *b = BIO_new_mem_buf(s->cert_pem, -1);
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        int ok = x && SSL_CTX_use_certificate(ctx, x) == 1;
        X509_free(x);
        BIO_free(b);
        if (!ok) {
            return ksfi_fail(ei, KSF_EINVAL, "ssl.certificate.pem: cannot load: %s",
                             ssl_reason(why, sizeof why));
        }
    }
    if (s->key_location &&
        SSL_CTX_use_PrivateKey_file(ctx, s->key_location, SSL_FILETYPE_PEM) != 1) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "ssl.key.location \"%s\": cannot load: %s; give a PEM key (and "
                         "ssl.key.password when it is encrypted)",
                         s->key_location, ssl_reason(why, sizeof why));
    }
    if (s->key_pem) {
        BIO *b = BIO_new_mem_buf(s->key_pem, -1);
        EVP_PKEY *k =
            b ? PEM_read_bio_PrivateKey(b, NULL, key_password_cb, s->key_password) : NULL;
        int ok = k && SSL_CTX_use_PrivateKey(ctx, k) == 1;
        EVP_PKEY_free(k);
        BIO_free(b);
        if (!ok) {
            return ksfi_fail(ei, KSF_EINVAL, "ssl.key.pem: cannot load: %s",
                             ssl_reason(why, sizeof why));
        }
    }
    if ((s->cert_location || s->cert_pem) != (s->key_location || s->key_pem)) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "a client certificate needs its key and the other way round: "
                         "set both ssl.certificate.location and ssl.key.location");
    }
    if ((s->key_location || s->key_pem) && SSL_CTX_check_private_key(ctx) != 1) {
        return ksfi_fail(ei, KSF_EINVAL,
                         "ssl.key.location does not match ssl.certificate.location: %s",
                         ssl_reason(why, sizeof why));
    }
    return KSF_OK;
}

static ksf_err
set_lists(SSL_CTX *ctx, const ksfi_security *s, ksf_errinfo *ei)
{
    char why[256];
    if (s->cipher_suites && SSL_CTX_set_cipher_list(ctx, s->cipher_suites) != 1) {
        return ksfi_fail(ei, KSF_EINVAL, "ssl.cipher.suites \"%.60s\": %s",
                         s->cipher_suites, ssl_reason(why, sizeof why));
    }
    if (s->curves && SSL_CTX_set1_curves_list(ctx, s->curves) != 1) {
        return ksfi_fail(ei, KSF_EINVAL, "ssl.curves.list \"%.60s\": %s", s->curves,
                         ssl_reason(why, sizeof why));
    }
    if (s->sigalgs && SSL_CTX_set1_sigalgs_list(ctx, s->sigalgs) != 1) {
        return ksfi_fail(ei, KSF_EINVAL, "ssl.sigalgs.list \"%.60s\": %s", s->sigalgs,
                         ssl_reason(why, sizeof why));
    }
    return KSF_OK;
}

/* BIO over a non-blocking socket that never raises SIGPIPE (send with MSG_NOSIGNAL):
 * the membership thread belongs to the application, whose signal setup we must not
 * depend on. */
static int
bio_write(BIO *b, const char *p, int len)
{
    ssize_t n = send(*(int *)BIO_get_data(b), p, (size_t)len, MSG_NOSIGNAL);
    BIO_clear_retry_flags(b);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        BIO_set_retry_write(b);
    }
    return (int)n;
}

static int
bio_read(BIO *b, char *p, int len)
{
    ssize_t n = recv(*(int *)BIO_get_data(b), p, (size_t)len, 0);
    BIO_clear_retry_flags(b);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        BIO_set_retry_read(b);
    }
    return (int)n;
}

static long
bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static ksf_err
tls_context(ksfi_transport *t, ksf_errinfo *ei)
{
    const ksfi_security *s = &t->sec;
    t->ctx = SSL_CTX_new(TLS_client_method());
    t->bio = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ksf socket");
    if (!t->ctx || !t->bio || !BIO_meth_set_write(t->bio, bio_write) ||
        !BIO_meth_set_read(t->bio, bio_read) || !BIO_meth_set_ctrl(t->bio, bio_ctrl)) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory creating the TLS context");
    }
    /* Kafka brokers speak TLS 1.2 and 1.3; older versions are broken. */
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(t->ctx, s->verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    ksf_err e;
    /* Without verification no CA is consulted: skip loading the system store. */
    if ((s->verify_peer && (e = load_ca(t->ctx, s, ei))) ||
        (e = load_identity(t->ctx, s, ei)) || (e = set_lists(t->ctx, s, ei))) {
        return e;
    }
    return KSF_OK;
}

ksf_err
ksfi_transport_new(ksfi_transport **out, const ksfi_security *sec, ksf_errinfo *ei)
{
    ksfi_transport *t = ksfi_calloc(1, sizeof *t);
    ksf_err e = KSF_ENOMEM;
    if (!t || ksfi_security_copy(&t->sec, sec) != KSF_OK) {
        ksfi_free(t);
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory creating the transport");
    }
    if (ksfi_security_tls(sec) && (e = tls_context(t, ei)) != KSF_OK) {
        goto fail;
    }
    *out = t;
    return KSF_OK;
fail:
    ksfi_transport_destroy(t);
    return e;
}

void
ksfi_transport_destroy(ksfi_transport *t)
{
    if (!t) {
        return;
    }
    SSL_CTX_free(t->ctx);
    BIO_meth_free(t->bio);
    ksfi_security_clear(&t->sec);
    ksfi_free(t);
}

/* ---- waiting and connecting -------------------------------------------------------- */

static bool
cancelled(const ksfi_conn *c)
{
    return c->cancel && c->cancel->stop && c->cancel->stop(c->cancel->user);
}

/* 1 when @p events are ready on the connection, 0 at the deadline, -1 when cancelled. */
static int
wait_fd(const ksfi_conn *c, int fd, short events, int64_t deadline)
{
    for (;;) {
        if (cancelled(c)) {
            return -1;
        }
        int64_t left = deadline - ksfi_now_ms();
        if (left <= 0) {
            return 0;
        }
        int wake = c->cancel ? c->cancel->wake_fd : -1;
        struct pollfd p[2] = {{fd, events, 0}, {wake, POLLIN, 0}};
        int n = wake >= 0 ? 2 : 1;
        if (poll(p, (nfds_t)n, (int)(left > 1000 ? 1000 : left)) > 0 && p[0].revents) {
            return 1;
        }
    }
}

static int
connect_addr(ksfi_conn *c, const struct addrinfo *ai, int64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        return -1;
    }
    int one = 1, soerr = 0;
    socklen_t sl = sizeof soerr;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        return fd;
    }
    if (errno != EINPROGRESS || wait_fd(c, fd, POLLOUT, deadline) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static ksf_err
cancelled_or(const ksfi_conn *c, ksf_err other)
{
    return cancelled(c) ? KSF_ECLOSED : other;
}

static ksf_err
tcp_connect(ksfi_conn *c, const char *host, const char *port, int64_t deadline,
            ksf_errinfo *ei)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        return ksfi_fail(ei, KSF_EKAFKA, "cannot resolve %s: %s", c->peer,
                         gai_strerror(rc));
    }
    for (struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next) {
        c->fd = connect_addr(c, ai, deadline);
    }
    freeaddrinfo(res);
    if (c->fd < 0) {
        return ksfi_fail(ei, cancelled_or(c, KSF_EKAFKA), "cannot connect to %s%s",
                         c->peer, ksfi_now_ms() >= deadline ? " in time" : "");
    }
    return KSF_OK;
}

/* ---- TLS handshake and I/O --------------------------------------------------------- */

/*
 * Run one SSL call until it succeeds or fails for good, waiting for the socket as
 * OpenSSL asks. Returns KSF_OK and *n, or the error (the SSL error kind in *kind).
 */
static ksf_err
ssl_step(ksfi_conn *c, int op, void *buf, size_t len, size_t *n, int *kind,
         int64_t deadline)
{
    for (;;) {
        int r;
        ERR_clear_error();
        if (op == 0) {
            r = SSL_connect(c->ssl);
        } else if (op == 1) {
            r = SSL_write_ex(c->ssl, buf, len, n);
        } else {
            r = SSL_read_ex(c->ssl, buf, len, n);
        }
        if (r == 1) {
            return KSF_OK;
        }
        *kind = SSL_get_error(c->ssl, r);
        short ev = *kind == SSL_ERROR_WANT_READ    ? POLLIN
                   : *kind == SSL_ERROR_WANT_WRITE ? POLLOUT
                                                   : 0;
        if (!ev) {
            return KSF_EKAFKA;
        }
        int w = wait_fd(c, c->fd, ev, deadline);
        if (w <= 0) {
            return w < 0 ? KSF_ECLOSED : KSF_ETIMEDOUT;
        }
    }
}

static ksf_err
handshake_error(ksfi_conn *c, ksf_err e, const char *host, ksf_errinfo *ei)
{
    char why[256];
    /* Without verification the result is recorded but did not end the handshake. */
    long v = c->t->sec.verify_peer ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    if (e != KSF_EKAFKA) {
        return ksfi_fail(ei, e, "TLS handshake with %s: %s", c->peer,
                         e == KSF_ETIMEDOUT ? "no answer in time" : "cancelled");
    }
    /* Verification failures carry librdkafka's __SSL code: retrying cannot help. */
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        return ksfi_fail_kafka(
            ei, RD_KAFKA_RESP_ERR__SSL,
            "TLS: the certificate of %s does not name host \"%s\" "
            "(ssl.endpoint.identification.algorithm=https); connect by a "
            "name the certificate lists, or set "
            "ssl.endpoint.identification.algorithm=none",
            c->peer, host);
    }
    if (v != X509_V_OK) {
        return ksfi_fail_kafka(
            ei, RD_KAFKA_RESP_ERR__SSL,
            "TLS: the certificate of %s failed verification: %s; set "
            "ssl.ca.location to the CA that signed the broker's certificate",
            c->peer, X509_verify_cert_error_string(v));
    }
    return ksfi_fail(ei, e,
                     "TLS handshake with %s failed: %s; is the listener TLS "
                     "(security.protocol ssl/sasl_ssl)?",
                     c->peer, ssl_reason(why, sizeof why));
}

static ksf_err
tls_start(ksfi_conn *c, const char *host, int64_t deadline, ksf_errinfo *ei)
{
    const ksfi_transport *t = c->t;
    BIO *b = BIO_new(t->bio);
    if (!b || !(c->ssl = SSL_new(t->ctx))) {
        BIO_free(b);
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory starting TLS to %s", c->peer);
    }
    BIO_set_data(b, &c->fd);
    BIO_set_init(b, 1);
    SSL_set_bio(c->ssl, b, b);
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (!is_ip) {
        SSL_set_tlsext_host_name(c->ssl, host); /* SNI: names only (RFC 6066) */
    }
    if (t->sec.verify_peer && t->sec.verify_hostname) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host)
                       : X509_VERIFY_PARAM_set1_host(vp, host, 0);
        if (ok != 1) {
            return ksfi_fail(ei, KSF_ENOMEM, "cannot set the TLS host name %s", host);
        }
    }
    size_t n;
    int kind = 0;
    ksf_err e = ssl_step(c, 0, NULL, 0, &n, &kind, deadline);
    return e == KSF_OK ? KSF_OK : handshake_error(c, e, host, ei);
}

/* Move @p len bytes to (@p out) or from the connection before @p deadline. */
static ksf_err
io_full(ksfi_conn *c, uint8_t *p, size_t len, bool out, int64_t deadline, ksf_errinfo *ei)
{
    size_t done = 0;
    while (done < len) {
        size_t n = 0;
        int kind = 0;
        ksf_err e;
        if (c->ssl) {
            e = ssl_step(c, out ? 1 : 2, p + done, len - done, &n, &kind, deadline);
        } else {
            ssize_t r = out ? send(c->fd, p + done, len - done, MSG_NOSIGNAL)
                            : recv(c->fd, p + done, len - done, 0);
            e = r > 0 ? KSF_OK : KSF_EKAFKA;
            n = r > 0 ? (size_t)r : 0;
            if (r < 0 && (errno == EAGAIN || errno == EINTR || errno == EWOULDBLOCK)) {
                int w = wait_fd(c, c->fd, out ? POLLOUT : POLLIN, deadline);
                e = w < 0 ? KSF_ECLOSED : w == 0 ? KSF_ETIMEDOUT : KSF_OK;
            }
        }
        if (e != KSF_OK) {
            char why[256];
            return ksfi_fail(
                ei, e, "%s %s: %s", out ? "sending to" : "receiving from", c->peer,
                e == KSF_ETIMEDOUT                ? "timed out"
                : e == KSF_ECLOSED                ? "cancelled"
                : c->ssl && kind == SSL_ERROR_SSL ? ssl_reason(why, sizeof why)
                : c->frames == 0 ? "the connection was closed before any answer (a "
                                   "TLS or SASL listener closes clients that do not "
                                   "speak it: check security.protocol)"
                                 : "the connection was closed");
        }
        done += n;
    }
    return KSF_OK;
}

ksf_err
ksfi_conn_write(ksfi_conn *c, const uint8_t *p, size_t len, int64_t deadline_ms,
                ksf_errinfo *ei)
{
    return io_full(c, (uint8_t *)p, len, true, deadline_ms, ei);
}

ksf_err
ksfi_conn_read_frame(ksfi_conn *c, uint8_t **payload, size_t *len, int64_t deadline_ms,
                     ksf_errinfo *ei)
{
    uint8_t sz[4];
    *payload = NULL;
    *len = 0;
    ksf_err e = io_full(c, sz, 4, false, deadline_ms, ei);
    if (e != KSF_OK) {
        return e;
    }
    uint32_t n =
        (uint32_t)sz[0] << 24 | (uint32_t)sz[1] << 16 | (uint32_t)sz[2] << 8 | sz[3];
    if (n < 4 || n > KSFI_GP_MAX_FRAME_BYTES) {
        return ksfi_fail(ei, KSF_EPROTO,
                         "%s sent a frame size of %" PRIu32 " bytes; is it a Kafka "
                         "listener with this security.protocol?",
                         c->peer, n);
    }
    if (!(*payload = ksfi_malloc(n))) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory for a %" PRIu32 "-byte frame", n);
    }
    if ((e = io_full(c, *payload, n, false, deadline_ms, ei)) != KSF_OK) {
        ksfi_free(*payload);
        *payload = NULL;
        return e;
    }
    *len = n;
    c->frames++;
    return KSF_OK;
}

/* ---- connections ------------------------------------------------------------------- */

ksf_err
ksfi_conn_open(ksfi_conn **out, const ksfi_transport *t, const char *host,
               const char *port, const char *client_id, int64_t deadline_ms,
               const ksfi_cancel *cancel, ksf_errinfo *ei)
{
    ksfi_conn *c = ksfi_calloc(1, sizeof *c);
    if (!c) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory opening a connection");
    }
    c->t = t;
    c->fd = -1;
    c->cancel = cancel;
    snprintf(c->peer, sizeof c->peer, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host,
             port);
    ksf_err e = tcp_connect(c, host, port, deadline_ms, ei);
    if (e == KSF_OK && t->ctx) {
        e = tls_start(c, host, deadline_ms, ei);
    }
    if (e == KSF_OK && ksfi_security_sasl(&t->sec)) {
        e = ksfi_sasl_authenticate(c, &t->sec, client_id, c->peer, deadline_ms, ei);
    }
    if (e != KSF_OK) {
        ksfi_conn_close(c);
        return e;
    }
    *out = c;
    return KSF_OK;
}

void
ksfi_conn_close(ksfi_conn *c)
{
    if (!c) {
        return;
    }
    if (c->ssl) {
        SSL_free(c->ssl); /* no close_notify: the peer sees the TCP close either way */
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    ksfi_free(c);
}

void
ksfi_conn_set_session_lifetime(ksfi_conn *c, int64_t lifetime_ms)
{
    c->reauth_at_ms = lifetime_ms > 0 ? ksfi_now_ms() + lifetime_ms * 9 / 10 : 0;
}

bool
ksfi_conn_reauth_due(const ksfi_conn *c)
{
    return c && c->reauth_at_ms > 0 && ksfi_now_ms() >= c->reauth_at_ms;
}

bool
ksfi_transport_error_permanent(const ksf_errinfo *ei)
{
    return ei->code == KSF_EKAFKA &&
           (ei->kafka_err == RD_KAFKA_RESP_ERR__AUTHENTICATION ||
            ei->kafka_err == RD_KAFKA_RESP_ERR__SSL);
}
