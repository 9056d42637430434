/*
 * The membership's connection (framework/group/transport.c, sasl.c): TLS and SASL against
 * a small Kafka-speaking server inside the test (librdkafka's mock cluster does neither),
 * SCRAM byte for byte against RFC 7677's example, the start-up errors, and the mock
 * broker refusing SASL end to end (tests/support/kafka_server.h).
 */
#include "base/alloc.h"
#include "broker.h"
#include "group/membership.h"
#include "group/sasl.h"
#include "group/transport.h"
#include "kafka/kafka.h"
#include "kafka_server.h"

#include "suite.h"

#include <check.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- client side helpers ----------------------------------------------------------- */

/* Security settings from {property, value} rows set for every librdkafka handle
 * (ksf_config_set_kafka with KSF_KAFKA_ALL), through ksf's configuration. */
static ksf_err
security_from(ksfi_security *sec, ksf_errinfo *ei, const char *const kv[][2], size_t n)
{
    ksf_config *cfg;
    ck_assert_int_eq(ksf_config_new(&cfg), KSF_OK);
    ksft_config_set_kafka_all(cfg, KSF_KAFKA_ALL, kv, n);
    ksf_err e = ksfi_security_from_config(cfg, sec, ei);
    ksf_config_destroy(cfg);
    return e;
}
#define SECURITY_FROM(sec, ei, kv) security_from((sec), (ei), (kv), KSFT_NKV(kv))

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

/* The TLS files by name ("$server_cert", "$client_cert", "$client_key", "$other_ca"),
 * for settings written before the files exist; any other value as it is. */
static const char *
tls_path(const ksft_tls_files *tf, const char *v)
{
    if (!tf || !v || v[0] != '$') {
        return v; /* plain-text cases pass no TLS files */
    }
    const struct {
        const char *name;
        const char *path;
    } files[] = {{"$server_cert", tf->server_cert},
                 {"$client_cert", tf->client_cert},
                 {"$client_key", tf->client_key},
                 {"$other_ca", tf->other_ca}};
    for (size_t i = 0; v && i < KSFT_NKV(files); i++) {
        if (!strcmp(v, files[i].name)) {
            return files[i].path;
        }
    }
    return v;
}

#define MAX_ROWS 6

/* Start @p fb, connect to it by @p host with the settings @p kv (up to MAX_ROWS rows,
 * a NULL name ends them; TLS file names as tls_path takes them) and RFC 7677's client
 * nonce when @p rfc_nonce, and join it. Returns the connection's result, its sentence
 * in @p ei. */
static ksf_err
connect_to(ksft_kserver *fb, const ksft_tls_files *tf, const char *const kv[MAX_ROWS][2],
           const char *host, bool rfc_nonce, ksf_errinfo *ei)
{
    const char *rows[MAX_ROWS][2];
    size_t n = 0;
    for (; n < MAX_ROWS && kv[n][0]; n++) {
        rows[n][0] = kv[n][0];
        rows[n][1] = tls_path(tf, kv[n][1]);
    }
    ksft_kserver_start(fb);
    ksfi_security sec;
    ck_assert_msg(security_from(&sec, ei, (const char *const(*)[2])rows, n) == KSF_OK,
                  "%s", ei->text);
    if (rfc_nonce) {
        sec.scram_nonce = ksfi_strdup(RFC_NONCE);
    }
    ksfi_conn *c = NULL;
    ksf_err e = connect_with(&sec, host, fb->port, ei, &c);
    ksft_kserver_join(fb);
    ksfi_security_clear(&sec);
    return e;
}

/* ---- SCRAM and PLAIN as pure functions --------------------------------------------- */

/* RFC 7677's exchange with @p mech: user "user" with its client nonce (the client-first
 * must be RFC 7677's), then @p server_first with password "pencil". Returns
 * ksfi_scram_final's result; the client-final is in *final (the case frees it). */
static ksf_err
rfc_exchange(ksfi_scram *s, ksfi_sasl_mech mech, const char *server_first, char **final,
             ksf_errinfo *ei)
{
    char *first = NULL;
    ck_assert_int_eq(ksfi_scram_first(s, mech, "user", RFC_NONCE, &first, ei), KSF_OK);
    ck_assert_str_eq(first, RFC_CLIENT_FIRST);
    ksfi_free(first);
    return ksfi_scram_final(s, "pencil", (const uint8_t *)server_first,
                            strlen(server_first), final, ei);
}

/* ksfi_scram_verify of the text @p server_final. */
static ksf_err
verify(const ksfi_scram *s, const char *server_final, ksf_errinfo *ei)
{
    return ksfi_scram_verify(s, (const uint8_t *)server_final, strlen(server_final), ei);
}

KSFT_TEST(test_transport_scram_rfc7677, 10)
{
    ksfi_scram s = {0};
    char *final = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(
        rfc_exchange(&s, KSFI_SASL_SCRAM_SHA_256, RFC_SERVER_FIRST, &final, &ei), KSF_OK);
    ck_assert_str_eq(final, RFC_CLIENT_FINAL);
    ck_assert_int_eq(verify(&s, RFC_SERVER_FINAL, &ei), KSF_OK);
    /* One changed byte of the server's signature: refused. */
    char bad[] = RFC_SERVER_FINAL;
    bad[5] ^= 1;
    ck_assert_int_eq(verify(&s, bad, &ei), KSF_EPROTO);
    ck_assert_str_eq(ei.text, "SCRAM: the server's signature is wrong: it does not know "
                              "the password (a man in the middle?)");
    ck_assert_int_eq(verify(&s, "e=invalid-proof", &ei), KSF_EPROTO);
    ck_assert_str_eq(ei.text, "SCRAM: the server refused: invalid-proof");
    ksfi_free(final);
    ksfi_scram_clear(&s);
}
END_TEST

/*
 * SCRAM-SHA-512 has no RFC example: RFC 7677's inputs with SHA-512, the expected
 * messages computed independently with Python's hashlib.pbkdf2_hmac and hmac (the same
 * script reproduces the SHA-256 example above byte for byte).
 */
KSFT_TEST(test_transport_scram_sha512_vector, 10)
{
    ksfi_scram s = {0};
    char *final = NULL;
    ksf_errinfo ei = {0};
    ck_assert_int_eq(
        rfc_exchange(&s, KSFI_SASL_SCRAM_SHA_512, RFC_SERVER_FIRST, &final, &ei), KSF_OK);
    ck_assert_str_eq(final, "c=biws,r=" RFC_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=gMGX"
                            "RcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC"
                            "6wdp6dybEmDYXYTxwnYPJQ==");
    const char *ok = "v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4"
                     "+5ZxXnJq199RVG2rR7N7Zw==";
    ck_assert_int_eq(verify(&s, ok, &ei), KSF_OK);
    /* The SHA-256 signature is refused for a SHA-512 exchange. */
    ck_assert_int_eq(verify(&s, RFC_SERVER_FINAL, &ei), KSF_EPROTO);
    ksfi_free(final);
    ksfi_scram_clear(&s);
}
END_TEST

KSFT_TEST(test_transport_scram_rejects_bad_server_first, 10)
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
        char *final = NULL;
        ksf_errinfo ei = {0};
        ck_assert_int_eq(
            rfc_exchange(&s, KSFI_SASL_SCRAM_SHA_512, cases[i][0], &final, &ei),
            KSF_EPROTO);
        ck_assert_ptr_null(final);
        ck_assert_msg(strstr(ei.text, cases[i][1]), "case %zu: %s", i, ei.text);
        ksfi_scram_clear(&s);
    }
}
END_TEST

KSFT_TEST(test_transport_scram_escapes_user_and_sha512_proof_size, 10)
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

KSFT_TEST(test_transport_plain_message, 10)
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

KSFT_TEST(test_transport_sasl_plain_exchange, 20)
{
    ksft_kserver fb = {.mechanisms = "PLAIN", .auth_max = 1};
    ksf_errinfo ei = {0};
    const char *const kv[MAX_ROWS][2] = {{"security.protocol", "sasl_plaintext"},
                                         {"sasl.mechanism", "PLAIN"},
                                         {"sasl.username", "alice"},
                                         {"sasl.password", "s3cret"}};
    ck_assert_msg(connect_to(&fb, NULL, kv, "127.0.0.1", false, &ei) == KSF_OK, "%s",
                  ei.text);
    ck_assert_str_eq(fb.mechanism, "PLAIN");
    ck_assert_int_eq(fb.rounds, 1);
    ck_assert_int_eq(fb.auth_version, 1); /* the highest both serve */
    ck_assert_str_eq(fb.tokens[0], "|alice|s3cret");
    ck_assert_int_eq(fb.after_auth, 1);
}
END_TEST

KSFT_TEST(test_transport_sasl_scram_over_tls_v2, 20)
{
    ksft_tls_files tf;
    ksft_tls_files_make(&tf);
    ksft_kserver fb = {.tls = ksft_server_tls(&tf, false),
                       .mechanisms = "SCRAM-SHA-256,SCRAM-SHA-512",
                       .auth_max = 2,
                       .scram_final = RFC_CLIENT_FINAL};
    ksf_errinfo ei = {0};
    const char *const kv[MAX_ROWS][2] = {{"security.protocol", "SASL_SSL"},
                                         {"sasl.mechanisms", "SCRAM-SHA-256"},
                                         {"sasl.username", "user"},
                                         {"sasl.password", "pencil"},
                                         {"ssl.ca.location", "$server_cert"}};
    ck_assert_msg(connect_to(&fb, &tf, kv, "localhost", true, &ei) == KSF_OK, "%s",
                  ei.text);
    ck_assert_int_eq(fb.auth_version, 2); /* the flexible version */
    ck_assert_int_eq(fb.rounds, 2);
    ck_assert_str_eq(fb.tokens[0], RFC_CLIENT_FIRST);
    ck_assert_str_eq(fb.tokens[1], RFC_CLIENT_FINAL);
    ck_assert_int_eq(fb.after_auth, 1);
    ksft_tls_files_remove(&tf);
}
END_TEST

/* ---- connections that fail, each with its sentence --------------------------------- */

typedef enum { NO_TLS, SERVER_TLS } server_tls;

/* A client logging in with PLAIN as "u" / "p", without TLS. */
#define PLAIN_U_P                                                                        \
    {                                                                                    \
        {"security.protocol", "sasl_plaintext"}, {"sasl.mechanisms", "PLAIN"},           \
            {"sasl.username", "u"},                                                      \
        {                                                                                \
            "sasl.password", "p"                                                         \
        }                                                                                \
    }

/* One connection attempt to a fresh in-test server that must fail. */
typedef struct conn_failure {
    const char *name;
    /* the server: TLS or not, its SASL mechanisms and highest SaslAuthenticate version,
     * and whether it expects RFC 7677's client-final (the client then sends its nonce) */
    server_tls tls;
    const char *mechanisms;
    int auth_max;
    bool scram;
    const char *kv[MAX_ROWS][2]; /* the client's settings */
    const char *host;            /* to connect by */
    ksf_err want;
    const char *text;     /* the sentence, with the port for %d */
    bool prefix;          /* text is only its start ... */
    const char *contains; /* ... and this stands in it (NULL: not checked) */
    int permanent; /* 1 or 0: what ksfi_transport_error_permanent says; -1: not asked */
    int rounds;    /* SASL rounds the server saw */
} conn_failure;

static const conn_failure conn_failures[] = {
    {.name = "bad password",
     .mechanisms = "SCRAM-SHA-256",
     .auth_max = 1,
     .scram = true,
     .kv = {{"security.protocol", "sasl_plaintext"},
            {"sasl.mechanisms", "SCRAM-SHA-256"},
            {"sasl.username", "user"},
            {"sasl.password", "pencil!"}},
     .host = "127.0.0.1",
     .want = KSF_EKAFKA,
     .text = "SASL SCRAM-SHA-256 authentication of user \"user\" with 127.0.0.1:%d "
             "failed: SASL_AUTHENTICATION_FAILED (error 58): " BAD_CREDENTIALS
             "; check sasl.username and sasl.password",
     .permanent = 1,
     .rounds = 2},
    {.name = "mechanism not enabled",
     .mechanisms = "SCRAM-SHA-512",
     .kv = PLAIN_U_P,
     .host = "127.0.0.1",
     .want = KSF_EKAFKA,
     .text = "127.0.0.1:%d does not enable SASL mechanism PLAIN (error 33); it offers: "
             "SCRAM-SHA-512; set sasl.mechanisms to one of them",
     .permanent = -1},
    {.name = "wrong CA",
     .tls = SERVER_TLS,
     .kv = {{"security.protocol", "ssl"}, {"ssl.ca.location", "$other_ca"}},
     .host = "localhost",
     .want = KSF_EKAFKA,
     .text = "TLS: the certificate of localhost:%d failed verification: self-signed "
             "certificate; set ssl.ca.location to the CA that signed the broker's "
             "certificate",
     .permanent = 1},
    /* The certificate names localhost, not 127.0.0.1. */
    {.name = "hostname",
     .tls = SERVER_TLS,
     .kv = {{"security.protocol", "ssl"}, {"ssl.ca.location", "$server_cert"}},
     .host = "127.0.0.1",
     .want = KSF_EKAFKA,
     .text = "TLS: the certificate of 127.0.0.1:%d does not name host \"127.0.0.1\" "
             "(ssl.endpoint.identification.algorithm=https); connect by a name the "
             "certificate lists, or set ssl.endpoint.identification.algorithm=none",
     .permanent = -1},
    {.name = "TLS to a plaintext listener",
     .kv = {{"security.protocol", "ssl"},
            {"enable.ssl.certificate.verification", "false"}},
     .host = "127.0.0.1",
     .want = KSF_EKAFKA,
     .text = "TLS handshake with 127.0.0.1:%d failed: ",
     .prefix = true,
     .contains = "is the listener TLS (security.protocol ssl/sasl_ssl)?",
     .permanent = 0},
    /* OpenSSL's server closes on our ApiVersions without answering. */
    {.name = "plaintext to a TLS listener",
     .tls = SERVER_TLS,
     .mechanisms = "PLAIN",
     .kv = PLAIN_U_P,
     .host = "127.0.0.1",
     .want = KSF_EKAFKA,
     .text = "receiving from 127.0.0.1:%d: the connection was closed before any answer "
             "(a TLS or SASL listener closes clients that do not speak it: check "
             "security.protocol)",
     .permanent = -1},
};

KSFT_TEST(test_transport_connect_failures, 60)
{
    for (size_t i = 0; i < KSFT_NKV(conn_failures); i++) {
        const conn_failure *c = &conn_failures[i];
        ksft_tls_files tf;
        ksft_tls_files_make(&tf);
        ksft_kserver fb = {.tls =
                               c->tls == SERVER_TLS ? ksft_server_tls(&tf, false) : NULL,
                           .mechanisms = c->mechanisms,
                           .auth_max = c->auth_max,
                           .scram_final = c->scram ? RFC_CLIENT_FINAL : NULL};
        ksf_errinfo ei = {0};
        ksf_err e = connect_to(&fb, &tf, c->kv, c->host, c->scram, &ei);
        ck_assert_msg(e == c->want, "%s: %s (%s)", c->name, ksf_strerror(e), ei.text);
        char want[KSF_ERRINFO_TEXT_SIZE];
        const char *at = strstr(c->text, "%d"); /* the port goes there */
        snprintf(want, sizeof want, "%.*s%d%s", (int)(at - c->text), c->text, fb.port,
                 at + 2);
        ck_assert_msg(c->prefix ? !strncmp(ei.text, want, strlen(want))
                                : !strcmp(ei.text, want),
                      "%s: got \"%s\", want \"%s\"%s", c->name, ei.text, want,
                      c->prefix ? " at its start" : "");
        ck_assert_msg(!c->contains || strstr(ei.text, c->contains), "%s: %s", c->name,
                      ei.text);
        if (c->permanent >= 0) {
            ck_assert_msg(ksfi_transport_error_permanent(&ei) == (c->permanent == 1),
                          "%s: permanent should be %d", c->name, c->permanent);
        }
        if (c->want == KSF_EKAFKA && c->scram) {
            ck_assert_int_eq(ei.kafka_err, RD_KAFKA_RESP_ERR__AUTHENTICATION);
        }
        ck_assert_msg(fb.rounds == c->rounds, "%s: %d SASL rounds", c->name, fb.rounds);
        ck_assert_int_eq(fb.after_auth, 0);
        ksft_tls_files_remove(&tf);
    }
}
END_TEST

/* ---- TLS --------------------------------------------------------------------------- */

KSFT_TEST(test_transport_tls_verified_and_client_cert, 20)
{
    ksft_tls_files tf;
    ksft_tls_files_make(&tf);
    ksft_kserver fb = {.tls = ksft_server_tls(&tf, true)};
    ksf_errinfo ei = {0};
    const char *const kv[MAX_ROWS][2] = {{"security.protocol", "ssl"},
                                         {"ssl.ca.location", "$server_cert"},
                                         {"ssl.certificate.location", "$client_cert"},
                                         {"ssl.key.location", "$client_key"},
                                         {"ssl.key.password", "hunter2"}};
    ck_assert_msg(connect_to(&fb, &tf, kv, "localhost", false, &ei) == KSF_OK, "%s",
                  ei.text);
    ck_assert_str_eq(fb.client_cn, "ksf-client");
    ck_assert_int_eq(fb.rounds, 0);
    /* librdkafka 2's defaults verify the peer and its name; the wrong key password
     * fails at start-up, naming the setting. */
    ksfi_security sec;
    const char *const wrong[][2] = {{"security.protocol", "ssl"},
                                    {"ssl.ca.location", tf.server_cert},
                                    {"ssl.certificate.location", tf.client_cert},
                                    {"ssl.key.location", tf.client_key},
                                    {"ssl.key.password", "wrong"}};
    ck_assert_int_eq(SECURITY_FROM(&sec, &ei, wrong), KSF_OK);
    ck_assert(sec.verify_peer && sec.verify_hostname);
    ksfi_transport *t = NULL;
    ck_assert_int_eq(ksfi_transport_new(&t, &sec, &ei), KSF_EINVAL);
    char want[200];
    snprintf(want, sizeof want, "ssl.key.location \"%s\": cannot load: ", tf.client_key);
    ck_assert_msg(strncmp(ei.text, want, strlen(want)) == 0, "%s", ei.text);
    ksfi_security_clear(&sec);
    ksft_tls_files_remove(&tf);
}
END_TEST

/* Identification off accepts a certificate that does not name the host (the
 * "hostname" failure above); the CA is given as PEM text (ssl.ca.pem), not a file. */
KSFT_TEST(test_transport_tls_hostname_check_off_and_ca_pem, 20)
{
    ksft_tls_files tf;
    ksft_tls_files_make(&tf);
    ksft_kserver fb = {.tls = ksft_server_tls(&tf, false)};
    char pem[4096] = "";
    FILE *f = fopen(tf.server_cert, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_gt(fread(pem, 1, sizeof pem - 1, f), 100);
    fclose(f);
    ksf_errinfo ei = {0};
    const char *const kv[MAX_ROWS][2] = {
        {"security.protocol", "ssl"},
        {"ssl.ca.pem", pem},
        {"ssl.endpoint.identification.algorithm", "none"}};
    ck_assert_msg(connect_to(&fb, &tf, kv, "127.0.0.1", false, &ei) == KSF_OK, "%s",
                  ei.text);
    ksft_tls_files_remove(&tf);
}
END_TEST

/* ---- deadlines and cancellation ---------------------------------------------------- */

static bool
stop_now(void *user)
{
    return *(volatile bool *)user;
}

KSFT_TEST(test_transport_handshake_deadline_and_cancel, 20)
{
    ksft_kserver fb = {.silent = true};
    ksft_kserver_start(&fb);
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *const kv[][2] = {{"security.protocol", "ssl"}};
    ck_assert_int_eq(SECURITY_FROM(&sec, &ei, kv), KSF_OK);
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
    ksft_kserver_join(&fb);
    /* A cancel that is already true ends the wait at once, with KSF_ECLOSED. */
    ksft_kserver fb2 = {.silent = true};
    ksft_kserver_start(&fb2);
    snprintf(port, sizeof port, "%d", fb2.port);
    volatile bool stop = true;
    ksfi_cancel cancel = {stop_now, -1, (void *)&stop};
    t0 = ksfi_now_ms();
    ck_assert_int_eq(
        ksfi_conn_open(&c, t, "127.0.0.1", port, "x", t0 + 5000, &cancel, &ei),
        KSF_ECLOSED);
    ck_assert_int_lt(ksfi_now_ms() - t0, 1000);
    shutdown(fb2.lfd, SHUT_RDWR);
    ksft_kserver_join(&fb2);
    ksfi_transport_destroy(t);
    ksfi_security_clear(&sec);
}
END_TEST

/* ---- configuration ----------------------------------------------------------------- */

KSFT_TEST(test_transport_config_errors, 10)
{
    static const struct {
        const char *kv[3][2];
        size_t n;
        const char *text;
    } cases[] = {
        {{{"security.protocol", "sasl_ssl"}},
         1,
         "sasl.mechanisms \"GSSAPI\" (librdkafka's default): the reply-group connection "
         "speaks PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 only; set sasl.mechanisms to one "
         "of them, or set client.reply.provider=static (with client.reply.partition) to "
         "use GSSAPI without the reply group"},
        {{{"security.protocol", "sasl_plaintext"}, {"sasl.mechanisms", "OAUTHBEARER"}},
         2,
         "sasl.mechanisms \"OAUTHBEARER\": the reply-group connection speaks PLAIN, "
         "SCRAM-SHA-256 and SCRAM-SHA-512 only; set sasl.mechanisms to one of them, or "
         "set client.reply.provider=static (with client.reply.partition) to use "
         "OAUTHBEARER without the reply group"},
        {{{"security.protocol", "sasl_plaintext"},
          {"sasl.mechanisms", "PLAIN"},
          {"sasl.username", "u"}},
         3,
         "sasl.mechanisms PLAIN needs sasl.username and sasl.password "
         "(kafka.sasl.username, kafka.sasl.password)"},
        {{{"security.protocol", "ssl"}, {"ssl.keystore.location", "/etc/k.p12"}},
         2,
         "ssl.keystore.location \"/etc/k.p12\": the reply-group connection takes PEM "
         "files and strings only (ssl.ca.location, ssl.certificate.location, "
         "ssl.key.location, ssl.*.pem); set client.reply.provider=static (with "
         "client.reply.partition) to use it without the reply group, whose connection "
         "ksf opens itself"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ksfi_security sec;
        ksf_errinfo ei = {0};
        ck_assert_int_eq(security_from(&sec, &ei, cases[i].kv, cases[i].n), KSF_EINVAL);
        ck_assert_str_eq(ei.text, cases[i].text);
        ksfi_security_clear(&sec);
    }
    /* Settings that only matter with TLS/SASL are ignored without them. */
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *const kv[][2] = {{"ssl.keystore.location", "/etc/k.p12"},
                                 {"sasl.mechanisms", "GSSAPI"}};
    ck_assert_int_eq(SECURITY_FROM(&sec, &ei, kv), KSF_OK);
    ck_assert_int_eq(sec.protocol, KSFI_SEC_PLAINTEXT);
    ksfi_security_clear(&sec);
    /* A missing CA file fails when the transport loads it. */
    const char *const kv2[][2] = {{"security.protocol", "ssl"},
                                  {"ssl.ca.location", "/nonexistent/ca.pem"}};
    ck_assert_int_eq(SECURITY_FROM(&sec, &ei, kv2), KSF_OK);
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
KSFT_TEST(test_transport_config_consumer_role_wins, 10)
{
    static const char *const kv[][2] = {{"kafka.security.protocol", "sasl_ssl"},
                                        {"kafka.sasl.mechanism", "SCRAM-SHA-512"},
                                        {"kafka.sasl.username", "svc"},
                                        {"kafka.sasl.password", "a"},
                                        {"consumer.sasl.password", "b"},
                                        {"producer.sasl.username", "other"}};
    ksf_config *cfg = ksft_config_from(kv, KSFT_NKV(kv));
    ksf_errinfo ei = {0};
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
KSFT_TEST(test_transport_allocation_failures, 20)
{
    static const char *const kv[][2] = {
        {"kafka.security.protocol", "sasl_ssl"},
        {"kafka.sasl.mechanisms", "SCRAM-SHA-256"},
        {"kafka.sasl.username", "user"},
        {"kafka.sasl.password", "pencil"},
        {"kafka.ssl.cipher.suites", "HIGH"},
        {"kafka.enable.ssl.certificate.verification", "false"}};
    ksf_config *cfg = ksft_config_from(kv, KSFT_NKV(kv));
    ksf_errinfo ei = {0};
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
KSFT_TEST(test_transport_props_reach_librdkafka_handles, 10)
{
    static const char *const kv[][2] = {{"kafka.security.protocol", "sasl_ssl"},
                                        {"kafka.sasl.mechanisms", "PLAIN"},
                                        {"kafka.sasl.username", "svc"},
                                        {"kafka.ssl.ca.location", "/tmp/ca.pem"}};
    ksf_config *cfg = ksft_config_from(kv, KSFT_NKV(kv));
    ksf_errinfo ei = {0};
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

KSFT_TEST(test_transport_client_new_rejects_oauthbearer, 20)
{
    static const char *const kv[][2] = {
        {"brokers", "127.0.0.1:1"},
        {"kafka.security.protocol", "sasl_plaintext"},
        {"kafka.sasl.mechanisms", "OAUTHBEARER"},
        {"kafka.enable.sasl.oauthbearer.unsecure.jwt", "true"},
        {"kafka.log_level", "0"}};
    ksf_config *cfg = ksft_config_from(kv, KSFT_NKV(kv));
    ksf_errinfo ei = {0};
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

/* The membership of group "sec-client" in @p brokers, for the one reply topic
 * "sec.reply" of @p partitions partitions, with @p sec; fails the test unless it starts.
 * @p topic holds the topic for as long as the membership reads it. */
static ksfi_membership *
sec_membership(const char *brokers, ksfi_assignor_topic *topic, int32_t partitions,
               const ksfi_security *sec, const ksfi_membership_callbacks *cb)
{
    *topic = (ksfi_assignor_topic){"sec.reply", partitions};
    ksfi_membership_config mc = {.brokers = brokers,
                                 .group_id = "sec-client",
                                 .client_id = "sec",
                                 .topics = topic,
                                 .topic_count = 1,
                                 .session_timeout_ms = 6000,
                                 .rebalance_timeout_ms = 6000,
                                 .heartbeat_interval_ms = 500,
                                 .security = sec};
    ksfi_membership *m = NULL;
    ksf_errinfo ei = {0};
    ck_assert_msg(ksfi_membership_new(&m, &mc, cb, &ei) == KSF_OK, "%s", ei.text);
    return m;
}

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
KSFT_TEST(test_transport_mock_broker_has_no_sasl, 30)
{
    KSFT_NEEDS_MOCK("it checks what the embedded broker says to SASL");
    ksft_broker *b = ksft_broker_start();
    ksfi_security sec;
    ksf_errinfo ei = {0};
    const char *const kv[][2] = {{"security.protocol", "sasl_plaintext"},
                                 {"sasl.mechanisms", "SCRAM-SHA-256"},
                                 {"sasl.username", "u"},
                                 {"sasl.password", "p"}};
    ck_assert_int_eq(SECURITY_FROM(&sec, &ei, kv), KSF_OK);
    fatal_seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
    ksfi_assignor_topic topic;
    ksfi_membership_callbacks cb = {.on_fatal = on_fatal, .user = &seen};
    ksfi_membership *m = sec_membership(ksft_broker_address(b), &topic, 4, &sec, &cb);
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
    ksft_tls_files tf;
    ksft_kserver fb;
    ksfi_security sec;
    assigned_seen seen;
    ksfi_assignor_topic topic;
    ksfi_membership *m;
} relay_env;

static void
relay_start(relay_env *env, int64_t lifetime_ms)
{
    env->b = ksft_broker_start();
    ksft_broker_create_topic(env->b, "sec.reply", 2);
    ksft_tls_files_make(&env->tf);
    const char *colon = strrchr(ksft_broker_address(env->b), ':');
    ksft_kserver *fb = &env->fb;
    fb->tls = ksft_server_tls(&env->tf, false);
    fb->mechanisms = "SCRAM-SHA-256";
    fb->auth_max = 1;
    fb->scram_final = RFC_CLIENT_FINAL;
    fb->upstream_port = atoi(colon + 1);
    fb->lifetime_ms = lifetime_ms;
    ksft_kserver_start(fb);
    ksf_errinfo ei = {0};
    const char *const kv[][2] = {{"security.protocol", "sasl_ssl"},
                                 {"sasl.mechanisms", "SCRAM-SHA-256"},
                                 {"sasl.username", "user"},
                                 {"sasl.password", "pencil"},
                                 {"ssl.ca.location", env->tf.server_cert}};
    ck_assert_int_eq(SECURITY_FROM(&env->sec, &ei, kv), KSF_OK);
    env->sec.scram_nonce = ksfi_strdup(RFC_NONCE);
    char brokers[32];
    snprintf(brokers, sizeof brokers, "localhost:%d", fb->port);
    pthread_mutex_init(&env->seen.lock, NULL);
    env->seen.generation = -1;
    ksfi_membership_callbacks cb = {.on_assigned = on_assigned, .user = &env->seen};
    env->m = sec_membership(brokers, &env->topic, 2, &env->sec, &cb);
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
    ksft_kserver_join(&env->fb);
    ksfi_security_clear(&env->sec);
    ksft_tls_files_remove(&env->tf);
    ksft_broker_stop(env->b);
}

/*
 * The whole group protocol over TLS and SCRAM: the membership logs in to a TLS+SASL
 * front (the in-test server, checking RFC 7677's exchange byte for byte) that relays
 * every later frame to the mock broker and names itself as the coordinator. The member
 * joins, syncs and gets both partitions of its reply topic.
 */
KSFT_TEST(test_transport_membership_over_tls_and_scram, 40)
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
    ck_assert_int_eq(atomic_load(&env.fb.forwarded[10]), 1); /* FindCoordinator */
    ck_assert_int_ge(atomic_load(&env.fb.forwarded[11]), 1); /* JoinGroup */
    ck_assert_int_ge(atomic_load(&env.fb.forwarded[14]), 1); /* SyncGroup */
    ck_assert_int_eq(atomic_load(&env.fb.forwarded[13]), 1); /* LeaveGroup */
}
END_TEST

/*
 * KIP-368: the broker grants a 1.5 s session; the member reconnects and logs in again
 * before it ends (at 90 %), keeping its membership: same generation, no revocation.
 */
KSFT_TEST(test_transport_membership_reauthenticates, 40)
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

KSFT_MAIN("transport")
