/*
 * A Kafka-speaking TLS/SASL test server for tests/test_transport.c: certificates made at
 * test time (self-signed EC P-256 in a temporary directory), and a thread on 127.0.0.1
 * answering ApiVersions, SaslHandshake and SaslAuthenticate (PLAIN accepted as sent,
 * SCRAM replaying RFC 7677's example), optionally relaying every later frame to the
 * mock broker while naming itself as the group coordinator. librdkafka's mock cluster
 * does neither TLS nor SASL, so this is what the membership's transport is tested
 * against.
 */
#ifndef KSF_TEST_KAFKA_SERVER_H
#define KSF_TEST_KAFKA_SERVER_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

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

typedef struct ksft_tls_files {
    char dir[64];
    char server_cert[96], server_key[96]; /* CN/SAN localhost */
    char other_ca[96];                    /* an unrelated self-signed certificate */
    char client_cert[96], client_key[96]; /* CN ksf-client, key encrypted "hunter2" */
} ksft_tls_files;

/* Write the certificates and keys into a new temporary directory (fails the test). */
void ksft_tls_files_make(ksft_tls_files *t);
/* Delete them and the directory. */
void ksft_tls_files_remove(ksft_tls_files *t);

/* A server context with the localhost certificate; @p want_client_cert: mutual TLS
 * trusting the client certificate. Freed by ksft_kserver_join. */
SSL_CTX *ksft_server_tls(const ksft_tls_files *t, bool want_client_cert);

typedef struct ksft_kserver {
    /* set before ksft_kserver_start */
    SSL_CTX *tls;            /* NULL: plaintext */
    const char *mechanisms;  /* enabled, comma-separated; NULL: no SASL APIs at all */
    int16_t auth_max;        /* highest SaslAuthenticate version advertised */
    const char *scram_final; /* the client-final to accept (RFC_CLIENT_FINAL) */
    bool silent;             /* accept and never answer */
    int upstream_port;       /* > 0: after the login, relay frames to this broker */
    int64_t lifetime_ms;     /* session_lifetime_ms granted by SaslAuthenticate v1+ */
    atomic_bool stop;        /* relay mode: stop accepting */
    /* results (the atomic ones may be read while the server runs) */
    int conn_rounds; /* SaslAuthenticate rounds on the current connection */
    atomic_int connections;
    atomic_int forwarded[40]; /* relayed requests per API key */
    int lfd, port;
    pthread_t thread;
    char mechanism[64];  /* asked in SaslHandshake */
    char tokens[3][160]; /* SaslAuthenticate payloads (NULs shown as '|') */
    int rounds;          /* in all */
    int16_t auth_version;
    char client_cn[64];
    int after_auth; /* ApiVersions requests served after authentication */
} ksft_kserver;

/* Listen on 127.0.0.1 (port in ->port) and serve on a thread: one connection, or in
 * relay mode connections one after another until ksft_kserver_join. */
void ksft_kserver_start(ksft_kserver *fb);
/* Stop, join the thread, close the listener, free ->tls. */
void ksft_kserver_join(ksft_kserver *fb);

#endif
