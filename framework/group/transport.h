/*
 * The connection ksf opens itself (the reply-group membership; librdkafka's handles
 * have their own): TCP with a connect deadline, optional TLS (OpenSSL), optional SASL
 * (sasl.h), and Kafka frames (int32 size + payload) read and written before a deadline.
 *
 * Security settings come from the same librdkafka properties the user already sets for
 * the producer and consumers (kafka.* then consumer.*, the reply consumer's view), so
 * one configuration secures every connection. Combinations this connection cannot do
 * fail at start-up with a sentence naming the setting (docs/security.md).
 */
#ifndef KSF_TRANSPORT_H
#define KSF_TRANSPORT_H

#include "group/sasl.h"

#include <ksf/ksf.h>

/* security.protocol */
typedef enum ksfi_sec_protocol {
    KSFI_SEC_PLAINTEXT = 0,
    KSFI_SEC_SSL,
    KSFI_SEC_SASL_PLAINTEXT,
    KSFI_SEC_SASL_SSL,
} ksfi_sec_protocol;

/* The settings of one secured connection; every string owned, NULL when unset. */
typedef struct ksfi_security {
    ksfi_sec_protocol protocol;
    char *ca_location;         /* ssl.ca.location: a PEM file or a hashed directory */
    char *ca_pem;              /* ssl.ca.pem */
    char *cert_location;       /* ssl.certificate.location */
    char *cert_pem;            /* ssl.certificate.pem */
    char *key_location;        /* ssl.key.location */
    char *key_pem;             /* ssl.key.pem */
    char *key_password;        /* ssl.key.password */
    char *cipher_suites;       /* ssl.cipher.suites */
    char *curves;              /* ssl.curves.list */
    char *sigalgs;             /* ssl.sigalgs.list */
    bool verify_peer;          /* enable.ssl.certificate.verification (default true) */
    bool verify_hostname;      /* ssl.endpoint.identification.algorithm=https */
    ksfi_sasl_mech mech;       /* sasl.mechanisms */
    char *username, *password; /* sasl.username, sasl.password */
    char *scram_nonce;         /* tests only: a fixed SCRAM client nonce */
} ksfi_security;

/* True for ssl and sasl_ssl. */
bool ksfi_security_tls(const ksfi_security *s);
/* True for sasl_plaintext and sasl_ssl. */
bool ksfi_security_sasl(const ksfi_security *s);

/*
 * Read the security settings of @p cfg as the reply consumer sees them (kafka.* then
 * consumer.* properties; librdkafka's defaults otherwise) into *out (zeroed first; free
 * with ksfi_security_clear, also on error). Errors: KSF_EINVAL naming the setting, its
 * value and what to do when the membership connection cannot honour it (GSSAPI,
 * OAUTHBEARER, keystores, engines, ...); KSF_ENOMEM.
 */
ksf_err ksfi_security_from_config(const ksf_config *cfg, ksfi_security *out,
                                  ksf_errinfo *ei);

/* Deep copy. Errors: KSF_ENOMEM (dst is then cleared). */
ksf_err ksfi_security_copy(ksfi_security *dst, const ksfi_security *src);

/* Free the strings (wiping the secrets) and zero @p s. */
void ksfi_security_clear(ksfi_security *s);

/*
 * What connections share: a copy of the settings and, for TLS, the OpenSSL context with
 * the CA, certificate and key loaded once (so a bad file fails here, at start-up).
 */
typedef struct ksfi_transport ksfi_transport;

/* Errors: KSF_EINVAL naming the ssl.* setting OpenSSL refused and why; KSF_ENOMEM. */
ksf_err ksfi_transport_new(ksfi_transport **out, const ksfi_security *sec,
                           ksf_errinfo *ei);
void ksfi_transport_destroy(ksfi_transport *t);

/* How a caller interrupts a wait: stop() true ends it with KSF_ECLOSED; wake_fd (or -1)
 * becomes readable when stop() may have changed. Borrowed by the connection. */
typedef struct ksfi_cancel {
    bool (*stop)(void *user);
    int wake_fd;
    void *user;
} ksfi_cancel;

typedef struct ksfi_conn ksfi_conn;

/*
 * Connect to @p host:@p port (every resolved address in turn), then TLS and SASL as
 * the transport says, all before @p deadline_ms (monotonic, ksfi_now_ms). @p client_id
 * goes into the SASL request headers. @p cancel (may be NULL) is borrowed for the
 * connection's life.
 * Errors: KSF_EKAFKA (unreachable, TLS or SASL failure: the sentence names the host,
 * the cause and the setting to check), KSF_ETIMEDOUT, KSF_ECLOSED, KSF_ENOMEM.
 */
ksf_err ksfi_conn_open(ksfi_conn **out, const ksfi_transport *t, const char *host,
                       const char *port, const char *client_id, int64_t deadline_ms,
                       const ksfi_cancel *cancel, ksf_errinfo *ei);

/* Close and free; NULL is a no-op. */
void ksfi_conn_close(ksfi_conn *c);

/* Write all @p len bytes. Errors: KSF_EKAFKA, KSF_ETIMEDOUT, KSF_ECLOSED. */
ksf_err ksfi_conn_write(ksfi_conn *c, const uint8_t *p, size_t len, int64_t deadline_ms,
                        ksf_errinfo *ei);

/*
 * Read one frame: its int32 size (4..KSFI_GP_MAX_FRAME_BYTES) and that many bytes into
 * *payload (ksfi_malloc'd, freed by the caller). Errors: KSF_EPROTO (size out of
 * range), KSF_EKAFKA, KSF_ETIMEDOUT, KSF_ECLOSED, KSF_ENOMEM.
 */
ksf_err ksfi_conn_read_frame(ksfi_conn *c, uint8_t **payload, size_t *len,
                             int64_t deadline_ms, ksf_errinfo *ei);

/*
 * True once the SASL session the broker granted (SaslAuthenticate v1+
 * session_lifetime_ms, KIP-368) is within 10% of its end: the broker closes
 * connections that outlive it, so the owner should reconnect before then.
 */
bool ksfi_conn_reauth_due(const ksfi_conn *c);

/*
 * True when the failure @p ei describes cannot heal by retrying: the broker refused the
 * login (or serves no SASL), or its certificate failed verification.
 */
bool ksfi_transport_error_permanent(const ksf_errinfo *ei);

/* Called by sasl.c when the broker states a session lifetime. */
void ksfi_conn_set_session_lifetime(ksfi_conn *c, int64_t lifetime_ms);

/* Milliseconds on the monotonic clock. */
int64_t ksfi_now_ms(void);

/* ---- transport_sasl.c: the SASL exchange --------------------------------------- */

/*
 * Authenticate @p c (connected, TLS done when configured) with @p sec's mechanism,
 * before @p deadline_ms. @p peer names the broker in sentences. Records the session
 * lifetime the broker grants on the connection.
 * Errors: KSF_EKAFKA (the broker refused: the sentence names mechanism, user and the
 * broker's message; the broker does not serve SASL; mechanism not enabled),
 * KSF_EPROTO, KSF_ETIMEDOUT, KSF_ECLOSED, KSF_ENOMEM.
 */
ksf_err ksfi_sasl_authenticate(ksfi_conn *c, const ksfi_security *sec,
                               const char *client_id, const char *peer,
                               int64_t deadline_ms, ksf_errinfo *ei);

#endif
