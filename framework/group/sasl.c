/* SASL PLAIN and SCRAM over Kafka's SaslHandshake/SaslAuthenticate (see sasl.h). */
#include "group/sasl.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "group/group_proto.h"

#include <librdkafka/rdkafka.h>
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
    const char *nonce;
    size_t nonce_len;
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

/* ---- Kafka framing for the SASL requests ------------------------------------------- */

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} wbuf;

static void
put(wbuf *b, const void *p, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2 + 64;
        uint8_t *q = ksfi_realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void
put_be(wbuf *b, uint64_t v, int bytes)
{
    uint8_t x[8];
    for (int i = 0; i < bytes; i++) {
        x[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    }
    put(b, x, (size_t)bytes);
}

static void
put_uvarint(wbuf *b, uint64_t v)
{
    while (v >= 0x80) {
        uint8_t c = (uint8_t)(v | 0x80);
        put(b, &c, 1);
        v >>= 7;
    }
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}

/* int32 size, then request header v1 (v2 adds empty tagged fields when @p flexible). */
static void
frame_header(wbuf *b, int16_t api, int16_t version, int32_t corr, const char *client_id,
             bool flexible)
{
    put_be(b, 0, 4);
    put_be(b, (uint16_t)api, 2);
    put_be(b, (uint16_t)version, 2);
    put_be(b, (uint32_t)corr, 4);
    if (client_id) {
        put_be(b, (uint16_t)strlen(client_id), 2);
        put(b, client_id, strlen(client_id));
    } else {
        put_be(b, 0xffff, 2);
    }
    if (flexible) {
        put_uvarint(b, 0);
    }
}

static void
frame_size(wbuf *b)
{
    if (!b->oom) {
        uint32_t n = (uint32_t)(b->len - 4);
        b->p[0] = (uint8_t)(n >> 24);
        b->p[1] = (uint8_t)(n >> 16);
        b->p[2] = (uint8_t)(n >> 8);
        b->p[3] = (uint8_t)n;
    }
}

typedef struct rbuf {
    const uint8_t *p;
    size_t len, off;
    bool bad;
} rbuf;

static uint64_t
get_be(rbuf *r, int bytes)
{
    uint64_t v = 0;
    if (r->bad || r->len - r->off < (size_t)bytes) {
        r->bad = true;
        return 0;
    }
    for (int i = 0; i < bytes; i++) {
        v = v << 8 | r->p[r->off++];
    }
    return v;
}

static uint64_t
get_uvarint(rbuf *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 35; shift += 7) {
        uint8_t c = (uint8_t)get_be(r, 1);
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            return v;
        }
    }
    r->bad = true;
    return 0;
}

/* A field of @p n bytes: its start, or NULL (r->bad) when the frame is shorter. */
static const uint8_t *
get_span(rbuf *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = true;
        return NULL;
    }
    r->off += n;
    return r->p + r->off - n;
}

static void
skip_tags(rbuf *r)
{
    for (uint64_t n = get_uvarint(r); n > 0 && !r->bad; n--) {
        get_uvarint(r);
        get_span(r, (size_t)get_uvarint(r));
    }
}

/* ---- the exchange ------------------------------------------------------------------ */

typedef struct sasl_session {
    ksfi_conn *c;
    const char *client_id, *peer;
    int64_t deadline;
    int32_t corr;
    int16_t v_auth; /* SaslAuthenticate version */
} sasl_session;

/* Send @p b (a whole frame) and read the answer; *r spans the body after the header. */
static ksf_err
exchange(sasl_session *ss, wbuf *b, bool flexible, uint8_t **payload, rbuf *r,
         ksf_errinfo *ei)
{
    size_t len = 0;
    frame_size(b);
    if (b->oom) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory encoding a SASL request");
    }
    ksf_err e = ksfi_conn_write(ss->c, b->p, b->len, ss->deadline, ei);
    if (e == KSF_OK) {
        e = ksfi_conn_read_frame(ss->c, payload, &len, ss->deadline, ei);
    }
    if (e != KSF_OK) {
        return e;
    }
    *r = (rbuf){*payload, len, 0, false};
    if ((int32_t)get_be(r, 4) != ss->corr) {
        return ksfi_fail(ei, KSF_EPROTO, "%s answered with another correlation id",
                         ss->peer);
    }
    if (flexible) {
        skip_tags(r);
    }
    return KSF_OK;
}

/* ApiVersions v0: which SaslHandshake and SaslAuthenticate versions the broker serves. */
static ksf_err
sasl_versions(sasl_session *ss, ksf_errinfo *ei)
{
    ksfi_gp_buf req = {0};
    ksfi_gp_api_versions_resp av = {0};
    ksfi_gp_header h = {0, ++ss->corr, ss->client_id};
    uint8_t *payload = NULL;
    rbuf r;
    ksf_err e = ksfi_gp_encode_api_versions(&req, &h);
    if (e == KSF_OK) {
        wbuf f = {req.data, req.len, req.cap, req.oom}; /* a whole frame already */
        e = exchange(ss, &f, false, &payload, &r, ei);
    }
    if (e == KSF_OK) {
        e = ksfi_gp_decode_api_versions(r.p + r.off, r.len - r.off, 0, &av, ei);
    }
    if (e == KSF_OK) {
        int16_t hs = ksfi_gp_pick_version(&av, KSFI_API_SASL_HANDSHAKE, 1, 1);
        ss->v_auth = ksfi_gp_pick_version(&av, KSFI_API_SASL_AUTHENTICATE, 0, 2);
        if (hs < 0 || ss->v_auth < 0) {
            e = ksfi_fail_kafka(
                ei, RD_KAFKA_RESP_ERR__AUTHENTICATION,
                "%s does not serve SaslHandshake v1 and SaslAuthenticate: its "
                "listener is not SASL (check security.protocol and the port), "
                "or the broker is older than Kafka 1.0",
                ss->peer);
        }
    }
    ksfi_gp_api_versions_resp_free(&av);
    ksfi_gp_buf_free(&req);
    ksfi_free(payload);
    return e;
}

/* SaslHandshake v1: ask for @p mech; the answer lists the enabled mechanisms. */
static ksf_err
sasl_handshake(sasl_session *ss, const char *mech, ksf_errinfo *ei)
{
    wbuf b = {0};
    uint8_t *payload = NULL;
    rbuf r;
    frame_header(&b, KSFI_API_SASL_HANDSHAKE, 1, ++ss->corr, ss->client_id, false);
    put_be(&b, strlen(mech), 2);
    put(&b, mech, strlen(mech));
    ksf_err e = exchange(ss, &b, false, &payload, &r, ei);
    if (e == KSF_OK) {
        int16_t code = (int16_t)get_be(&r, 2);
        char offered[200] = "";
        size_t o = 0;
        for (uint32_t n = (uint32_t)get_be(&r, 4); n > 0 && n < 64 && !r.bad; n--) {
            size_t len = (size_t)get_be(&r, 2);
            const uint8_t *s = get_span(&r, len);
            if (s && o + len + 3 < sizeof offered) {
                o += (size_t)snprintf(offered + o, sizeof offered - o, "%s%.*s",
                                      o ? ", " : "", (int)len, (const char *)s);
            }
        }
        if (r.bad) {
            e = ksfi_fail(ei, KSF_EPROTO, "%s sent a malformed SaslHandshake answer",
                          ss->peer);
        } else if (code != 0) {
            e = ksfi_fail_kafka(
                ei, RD_KAFKA_RESP_ERR__AUTHENTICATION,
                "%s does not enable SASL mechanism %s (error %d); it offers: "
                "%s; set sasl.mechanisms to one of them",
                ss->peer, mech, code, offered[0] ? offered : "none");
        }
    }
    ksfi_free(b.p);
    ksfi_free(payload);
    return e;
}

/*
 * SaslAuthenticate: send @p tok, receive the server's bytes in *out (ksfi_malloc'd) and
 * its error code/message.
 */
static ksf_err
sasl_round(sasl_session *ss, const uint8_t *tok, size_t len, uint8_t **out,
           size_t *out_len, int16_t *code, char *msg, size_t msg_size, ksf_errinfo *ei)
{
    bool flex = ss->v_auth >= 2;
    wbuf b = {0};
    uint8_t *payload = NULL;
    rbuf r;
    frame_header(&b, KSFI_API_SASL_AUTHENTICATE, ss->v_auth, ++ss->corr, ss->client_id,
                 flex);
    if (flex) {
        put_uvarint(&b, len + 1);
    } else {
        put_be(&b, len, 4);
    }
    put(&b, tok, len);
    if (flex) {
        put_uvarint(&b, 0);
    }
    ksf_err e = exchange(ss, &b, flex, &payload, &r, ei);
    OPENSSL_cleanse(b.p, b.len);
    ksfi_free(b.p);
    *out = NULL;
    if (e != KSF_OK) {
        ksfi_free(payload);
        return e;
    }
    *code = (int16_t)get_be(&r, 2);
    int64_t mlen = flex ? (int64_t)get_uvarint(&r) - 1 : (int16_t)get_be(&r, 2);
    const uint8_t *m = mlen > 0 ? get_span(&r, (size_t)mlen) : NULL;
    snprintf(msg, msg_size, "%.*s", m ? (int)mlen : 0, m ? (const char *)m : "");
    int64_t blen = flex ? (int64_t)get_uvarint(&r) - 1 : (int32_t)get_be(&r, 4);
    const uint8_t *bytes = blen > 0 ? get_span(&r, (size_t)blen) : NULL;
    int64_t lifetime = ss->v_auth >= 1 ? (int64_t)get_be(&r, 8) : 0;
    if (r.bad) {
        e = ksfi_fail(ei, KSF_EPROTO, "%s sent a malformed SaslAuthenticate answer",
                      ss->peer);
    } else if (bytes && !(*out = ksfi_memdup(bytes, (size_t)blen))) {
        e = ksfi_fail(ei, KSF_ENOMEM, "out of memory in the SASL exchange");
    } else {
        *out_len = bytes ? (size_t)blen : 0;
        ksfi_conn_set_session_lifetime(ss->c, lifetime);
    }
    ksfi_free(payload);
    return e;
}

/* One round that must succeed; a refusal becomes the sentence users see. */
static ksf_err
sasl_step(sasl_session *ss, const ksfi_security *sec, const uint8_t *tok, size_t len,
          uint8_t **out, size_t *out_len, ksf_errinfo *ei)
{
    int16_t code = 0;
    char msg[200];
    ksf_err e = sasl_round(ss, tok, len, out, out_len, &code, msg, sizeof msg, ei);
    if (e == KSF_OK && code != 0) {
        ksfi_free(*out);
        *out = NULL;
        e = ksfi_fail_kafka(ei, RD_KAFKA_RESP_ERR__AUTHENTICATION,
                            "SASL %s authentication of user \"%.60s\" with %s failed: %s "
                            "(error %d)%s%s; check sasl.username and sasl.password",
                            ksfi_sasl_mech_name(sec->mech), sec->username, ss->peer,
                            code == KSFI_ERR_SASL_AUTHENTICATION_FAILED
                                ? "SASL_AUTHENTICATION_FAILED"
                                : "refused",
                            code, msg[0] ? ": " : "", msg);
    }
    return e;
}

static ksf_err
sasl_scram(sasl_session *ss, const ksfi_security *sec, ksf_errinfo *ei)
{
    ksfi_scram s = {0};
    char *first = NULL, *final = NULL;
    uint8_t *answer = NULL;
    size_t alen = 0;
    ksf_err e =
        ksfi_scram_first(&s, sec->mech, sec->username, sec->scram_nonce, &first, ei);
    if (e == KSF_OK) {
        e = sasl_step(ss, sec, (const uint8_t *)first, strlen(first), &answer, &alen, ei);
    }
    if (e == KSF_OK) {
        e = ksfi_scram_final(&s, sec->password, answer ? answer : (const uint8_t *)"",
                             alen, &final, ei);
    }
    ksfi_free(answer);
    answer = NULL;
    if (e == KSF_OK) {
        e = sasl_step(ss, sec, (const uint8_t *) final, strlen(final), &answer, &alen,
                      ei);
    }
    if (e == KSF_OK) {
        e = ksfi_scram_verify(&s, answer ? answer : (const uint8_t *)"", alen, ei);
    }
    ksfi_free(first);
    ksfi_free(final);
    ksfi_free(answer);
    ksfi_scram_clear(&s);
    return e;
}

ksf_err
ksfi_sasl_authenticate(ksfi_conn *c, const ksfi_security *sec, const char *client_id,
                       const char *peer, int64_t deadline_ms, ksf_errinfo *ei)
{
    sasl_session ss = {c, client_id, peer, deadline_ms, 0, 0};
    const char *mech = ksfi_sasl_mech_name(sec->mech);
    ksf_err e = sasl_versions(&ss, ei);
    if (e == KSF_OK) {
        e = sasl_handshake(&ss, mech, ei);
    }
    if (e != KSF_OK || sec->mech != KSFI_SASL_PLAIN) {
        return e == KSF_OK ? sasl_scram(&ss, sec, ei) : e;
    }
    uint8_t *tok = NULL, *answer = NULL;
    size_t len = 0, alen = 0;
    if (ksfi_sasl_plain(sec->username, sec->password, &tok, &len) != KSF_OK) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory in the SASL exchange");
    }
    e = sasl_step(&ss, sec, tok, len, &answer, &alen, ei);
    OPENSSL_cleanse(tok, len);
    ksfi_free(tok);
    ksfi_free(answer);
    return e;
}
