/* SASL PLAIN and SCRAM over Kafka's SaslHandshake/SaslAuthenticate (see sasl.h). */
#include "group/sasl.h"

#include "base/alloc.h"
#include "base/errinfo.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kafka's ScramMechanism bounds; a larger count from a hostile server would burn CPU. */
#define SCRAM_MIN_ITERATIONS 4096
#define SCRAM_MAX_ITERATIONS 16384

const char *
ksfi_sasl_mech_name(ksfi_sasl_mech mech)
{
    switch (mech) {
    case KSFI_SASL_PLAIN:
        return "PLAIN";
    case KSFI_SASL_SCRAM_SHA_256:
        return "SCRAM-SHA-256";
    case KSFI_SASL_SCRAM_SHA_512:
        return "SCRAM-SHA-512";
    }
    return "UNKNOWN";
}

ksf_err
ksfi_sasl_plain(const char *user, const char *password, uint8_t **out, size_t *len)
{
    size_t u = strlen(user), p = strlen(password);
    *len = 1 + u + 1 + p;
    if (!(*out = ksfi_malloc(*len))) {
        return KSF_ENOMEM;
    }
    (*out)[0] = 0;
    memcpy(*out + 1, user, u);
    (*out)[1 + u] = 0;
    memcpy(*out + 2 + u, password, p);
    return KSF_OK;
}

/* ---- SCRAM (RFC 5802) -------------------------------------------------------------- */

static const EVP_MD *
scram_md(ksfi_sasl_mech mech)
{
    return mech == KSFI_SASL_SCRAM_SHA_512 ? EVP_sha512() : EVP_sha256();
}

/* Base64 of @p len bytes as a new string, or NULL. */
static char *
b64_encode(const uint8_t *p, size_t len)
{
    char *s = ksfi_malloc(4 * ((len + 2) / 3) + 1);
    if (s) {
        EVP_EncodeBlock((unsigned char *)s, p, (int)len);
    }
    return s;
}

/* Decode base64 @p s (@p n chars) into @p out (room for @p cap); -1 when invalid. */
static int
b64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > cap) {
        return -1;
    }
    int len = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    if (len < 0) {
        return -1;
    }
    /* EVP_DecodeBlock counts the '=' padding as zero bytes. */
    for (size_t i = n; i > 0 && s[i - 1] == '='; i--) {
        len--;
    }
    return len;
}

ksf_err
ksfi_scram_first(ksfi_scram *s, ksfi_sasl_mech mech, const char *user, const char *nonce,
                 char **out, ksf_errinfo *ei)
{
    if (mech != KSFI_SASL_SCRAM_SHA_256 && mech != KSFI_SASL_SCRAM_SHA_512) {
        return ksfi_fail(ei, KSF_EINVAL, "not a SCRAM mechanism: %s",
                         ksfi_sasl_mech_name(mech));
    }
    s->mech = mech;
    if (nonce) {
        s->nonce = ksfi_strdup(nonce);
    } else {
        uint8_t raw[24];
        if (RAND_bytes(raw, sizeof raw) != 1) {
            return ksfi_fail(ei, KSF_EINVAL, "no random bytes for the SCRAM nonce");
        }
        s->nonce = b64_encode(raw, sizeof raw); /* printable, never ',' */
    }
    /* saslname: ',' and '=' escaped as =2C and =3D (RFC 5802 section 5.1). */
    size_t ulen = strlen(user), nlen = s->nonce ? strlen(s->nonce) : 0;
    s->first_bare = ksfi_malloc(2 + 3 * ulen + 3 + nlen + 1);
    *out = ksfi_malloc(3 + 2 + 3 * ulen + 3 + nlen + 1);
    if (!s->nonce || !s->first_bare || !*out) {
        ksfi_free(*out);
        *out = NULL;
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory starting SCRAM");
    }
    char *w = s->first_bare;
    w += sprintf(w, "n=");
    for (const char *u = user; *u; u++) {
        w += *u == ','   ? sprintf(w, "=2C")
             : *u == '=' ? sprintf(w, "=3D")
                         : sprintf(w, "%c", *u);
    }
    sprintf(w, ",r=%s", s->nonce);
    sprintf(*out, "n,,%s", s->first_bare);
    return KSF_OK;
}

/* The value of attribute @p name ("r", "s", "i") in a SCRAM message, or NULL. */
static const char *
scram_attr(const char *msg, char name, size_t *len)
{
    for (const char *p = msg; *p;) {
        size_t n = strcspn(p, ",");
        if (n >= 2 && p[0] == name && p[1] == '=') {
            *len = n - 2;
            return p + 2;
        }
        p += n + (p[n] == ',');
    }
    return NULL;
}

static bool
hmac(const EVP_MD *md, const uint8_t *key, size_t klen, const void *data, size_t dlen,
     uint8_t *out)
{
    unsigned int n = 0;
    return HMAC(md, key, (int)klen, data, dlen, out, &n) != NULL;
}

/* Parse the server-first-message into its nonce, salt and iteration count. */
static ksf_err
parse_server_first(const ksfi_scram *s, const char *msg, const char **nonce,
                   size_t *nonce_len, uint8_t *salt, int *salt_len, long *iter,
                   ksf_errinfo *ei)
{
    size_t slen = 0, ilen = 0;
    const char *sv = scram_attr(msg, 's', &slen), *iv = scram_attr(msg, 'i', &ilen);
    *nonce = scram_attr(msg, 'r', nonce_len);
    if (msg[0] == 'm') {
        return ksfi_fail(ei, KSF_EPROTO, "SCRAM: the server demands an extension (m=)");
    }
    if (!*nonce || *nonce_len <= strlen(s->nonce) ||
        strncmp(*nonce, s->nonce, strlen(s->nonce)) != 0) {
        return ksfi_fail(ei, KSF_EPROTO,
                         "SCRAM: the server's nonce does not extend ours: \"%.80s\"",
                         msg);
    }
    if (!sv || (*salt_len = b64_decode(sv, slen, salt, 128)) <= 0) {
        return ksfi_fail(ei, KSF_EPROTO, "SCRAM: no valid salt (s=) in \"%.80s\"", msg);
    }
    char num[16] = "";
    if (iv && ilen < sizeof num) {
        memcpy(num, iv, ilen);
    }
    char *end = NULL;
    *iter = strtol(num, &end, 10);
    if (!iv || !num[0] || *end || *iter < SCRAM_MIN_ITERATIONS ||
        *iter > SCRAM_MAX_ITERATIONS) {
        return ksfi_fail(ei, KSF_EPROTO,
                         "SCRAM: iteration count (i=) in \"%.80s\" is not in %d..%d", msg,
                         SCRAM_MIN_ITERATIONS, SCRAM_MAX_ITERATIONS);
    }
    return KSF_OK;
}

/* ClientProof and ServerSignature for @p auth_msg (RFC 5802 section 3). */
static bool
scram_keys(ksfi_scram *s, const char *password, const uint8_t *salt, int salt_len,
           long iter, const char *auth_msg, uint8_t *proof)
{
    const EVP_MD *md = scram_md(s->mech);
    size_t h = (size_t)EVP_MD_get_size(md);
    uint8_t salted[64], client_key[64], stored[64], sig[64], server_key[64];
    unsigned int n = 0;
    bool ok = PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, salt_len,
                                (int)iter, md, (int)h, salted) == 1 &&
              hmac(md, salted, h, "Client Key", 10, client_key) &&
              EVP_Digest(client_key, h, stored, &n, md, NULL) == 1 &&
              hmac(md, stored, h, auth_msg, strlen(auth_msg), sig) &&
              hmac(md, salted, h, "Server Key", 10, server_key) &&
              hmac(md, server_key, h, auth_msg, strlen(auth_msg), s->server_sig);
    for (size_t i = 0; i < h; i++) {
        proof[i] = client_key[i] ^ sig[i];
    }
    s->hash_len = h;
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(server_key, sizeof server_key);
    return ok;
}

ksf_err
ksfi_scram_final(ksfi_scram *s, const char *password, const uint8_t *server_first,
                 size_t len, char **out, ksf_errinfo *ei)
{
    char *msg = ksfi_strndup((const char *)server_first, len);
    char *without = NULL, *auth = NULL, *proof64 = NULL;
    const char *nonce = NULL;
    size_t nonce_len = 0; /* set by parse_server_first; -O2 cannot tell */
    uint8_t salt[128], proof[64];
    int salt_len = 0;
    long iter = 0;
    ksf_err e = KSF_ENOMEM;
    *out = NULL;
    if (!msg) {
        goto fail;
    }
    if ((e = parse_server_first(s, msg, &nonce, &nonce_len, salt, &salt_len, &iter,
                                ei)) != KSF_OK) {
        goto fail;
    }
    e = KSF_ENOMEM;
    /* c=biws: base64 of the GS2 header "n,," (no channel binding). */
    size_t wlen = 9 + nonce_len + 1;
    size_t alen = strlen(s->first_bare) + 1 + len + 1 + wlen;
    if (!(without = ksfi_malloc(wlen)) || !(auth = ksfi_malloc(alen))) {
        goto fail;
    }
    snprintf(without, wlen, "c=biws,r=%.*s", (int)nonce_len, nonce);
    snprintf(auth, alen, "%s,%s,%s", s->first_bare, msg, without);
    if (!scram_keys(s, password, salt, salt_len, iter, auth, proof)) {
        e = ksfi_fail(ei, KSF_EPROTO, "SCRAM: the key derivation failed");
        goto fail;
    }
    if (!(proof64 = b64_encode(proof, s->hash_len)) ||
        !(*out = ksfi_malloc(strlen(without) + 3 + strlen(proof64) + 1))) {
        goto fail;
    }
    sprintf(*out, "%s,p=%s", without, proof64);
    e = KSF_OK;
fail:
    if (e == KSF_ENOMEM) {
        ksfi_fail(ei, e, "out of memory in the SCRAM exchange");
    }
    ksfi_free(msg);
    ksfi_free(without);
    ksfi_free(auth);
    ksfi_free(proof64);
    return e;
}

ksf_err
ksfi_scram_verify(const ksfi_scram *s, const uint8_t *server_final, size_t len,
                  ksf_errinfo *ei)
{
    uint8_t sig[96];
    const char *m = (const char *)server_final;
    if (len >= 2 && m[0] == 'e' && m[1] == '=') {
        return ksfi_fail(ei, KSF_EPROTO, "SCRAM: the server refused: %.*s",
                         (int)(len > 100 ? 100 : len - 2), m + 2);
    }
    int n = len > 2 && m[0] == 'v' && m[1] == '='
                ? b64_decode(m + 2, len - 2, sig, sizeof sig)
                : -1;
    if (n != (int)s->hash_len || s->hash_len == 0 ||
        CRYPTO_memcmp(sig, s->server_sig, s->hash_len) != 0) {
        return ksfi_fail(ei, KSF_EPROTO,
                         "SCRAM: the server's signature is wrong: it does not know the "
                         "password (a man in the middle?)");
    }
    return KSF_OK;
}

void
ksfi_scram_clear(ksfi_scram *s)
{
    ksfi_free(s->first_bare);
    ksfi_free(s->nonce);
    OPENSSL_cleanse(s, sizeof *s);
}
