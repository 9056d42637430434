/*
 * SASL for the membership connection: the mechanisms as pure functions (PLAIN, RFC
 * 4616; SCRAM-SHA-256/512, RFC 5802 and RFC 7677, with OpenSSL's PBKDF2 and HMAC). The
 * Kafka exchange that carries them (ApiVersions v0, SaslHandshake v1, SaslAuthenticate
 * v0-2; KIP-152) is the transport's: ksfi_sasl_authenticate in transport.h.
 */
#ifndef KSF_SASL_H
#define KSF_SASL_H

#include <ksf/ksf.h>

#include <stdint.h>

/* sasl.mechanisms (only those the membership connection implements) */
typedef enum ksfi_sasl_mech {
    KSFI_SASL_PLAIN = 0,
    KSFI_SASL_SCRAM_SHA_256,
    KSFI_SASL_SCRAM_SHA_512,
} ksfi_sasl_mech;

#define KSFI_API_SASL_HANDSHAKE 17
#define KSFI_API_SASL_AUTHENTICATE 36
#define KSFI_ERR_UNSUPPORTED_SASL_MECHANISM 33
#define KSFI_ERR_ILLEGAL_SASL_STATE 34
#define KSFI_ERR_SASL_AUTHENTICATION_FAILED 58

/* The Kafka name of a mechanism ("SCRAM-SHA-256"). */
const char *ksfi_sasl_mech_name(ksfi_sasl_mech mech);

/*
 * PLAIN's only message: "" NUL user NUL password (no authorization identity).
 * *out is ksfi_malloc'd. Errors: KSF_ENOMEM.
 */
ksf_err ksfi_sasl_plain(const char *user, const char *password, uint8_t **out,
                        size_t *len);

/* One SCRAM exchange (client side). Zero-initialise; ksfi_scram_clear() frees. */
typedef struct ksfi_scram {
    ksfi_sasl_mech mech;
    char *first_bare;       /* client-first-message-bare */
    char *nonce;            /* our nonce */
    uint8_t server_sig[64]; /* expected ServerSignature, set by ksfi_scram_final */
    size_t hash_len;
} ksfi_scram;

/*
 * The client-first-message "n,,n=<user>,r=<nonce>" (user escaped per RFC 5802) as a new
 * string in *out. @p nonce: NULL for 32 random printable bytes (a fixed one for tests).
 * Errors: KSF_EINVAL (a SCRAM mechanism is needed), KSF_ENOMEM.
 */
ksf_err ksfi_scram_first(ksfi_scram *s, ksfi_sasl_mech mech, const char *user,
                         const char *nonce, char **out, ksf_errinfo *ei);

/*
 * Answer the server-first-message @p server_first with the client-final-message
 * (proof included) in *out, and remember the ServerSignature to expect.
 * Errors: KSF_EPROTO naming what is wrong with the server's message (nonce not ours,
 * salt, iteration count outside 4096..16384, mandatory extension), KSF_ENOMEM.
 */
ksf_err ksfi_scram_final(ksfi_scram *s, const char *password, const uint8_t *server_first,
                         size_t len, char **out, ksf_errinfo *ei);

/*
 * Check the server-final-message: "v=<ServerSignature>" must match, which proves the
 * broker knows the password too. Errors: KSF_EPROTO (mismatch, or "e=<error>").
 */
ksf_err ksfi_scram_verify(const ksfi_scram *s, const uint8_t *server_final, size_t len,
                          ksf_errinfo *ei);

void ksfi_scram_clear(ksfi_scram *s);

#endif
