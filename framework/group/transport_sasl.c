/*
 * The SASL exchange on a membership connection (KIP-152): ApiVersions v0, SaslHandshake
 * v1, then SaslAuthenticate v0-2 carrying the mechanisms of sasl.c. Part of the
 * transport (declared in transport.h): transport.c calls it while opening a connection,
 * and sasl.c stays pure, so neither calls the other back.
 */
#include "group/transport.h"

#include "base/alloc.h"
#include "base/errinfo.h"
#include "group/group_proto.h"
#include "group/sasl.h"

#include <librdkafka/rdkafka.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Kafka framing for the SASL requests ------------------------------------------- */

static void
put_be(ksfi_gp_buf *b, uint64_t v, int bytes)
{
    uint8_t x[8];
    for (int i = 0; i < bytes; i++) {
        x[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    }
    ksfi_gp_buf_put(b, x, (size_t)bytes);
}

static void
put_uvarint(ksfi_gp_buf *b, uint64_t v)
{
    while (v >= 0x80) {
        uint8_t c = (uint8_t)(v | 0x80);
        ksfi_gp_buf_put(b, &c, 1);
        v >>= 7;
    }
    uint8_t c = (uint8_t)v;
    ksfi_gp_buf_put(b, &c, 1);
}

/* int32 size, then request header v1 (v2 adds empty tagged fields when @p flexible). */
static void
frame_header(ksfi_gp_buf *b, int16_t api, int16_t version, int32_t corr,
             const char *client_id, bool flexible)
{
    put_be(b, 0, 4);
    put_be(b, (uint16_t)api, 2);
    put_be(b, (uint16_t)version, 2);
    put_be(b, (uint32_t)corr, 4);
    if (client_id) {
        put_be(b, (uint16_t)strlen(client_id), 2);
        ksfi_gp_buf_put(b, client_id, strlen(client_id));
    } else {
        put_be(b, 0xffff, 2);
    }
    if (flexible) {
        put_uvarint(b, 0);
    }
}

static void
frame_size(ksfi_gp_buf *b)
{
    if (!b->oom) {
        uint32_t n = (uint32_t)(b->len - 4);
        b->data[0] = (uint8_t)(n >> 24);
        b->data[1] = (uint8_t)(n >> 16);
        b->data[2] = (uint8_t)(n >> 8);
        b->data[3] = (uint8_t)n;
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
exchange(sasl_session *ss, ksfi_gp_buf *b, bool flexible, uint8_t **payload, rbuf *r,
         ksf_errinfo *ei)
{
    size_t len = 0;
    frame_size(b);
    if (b->oom) {
        return ksfi_fail(ei, KSF_ENOMEM, "out of memory encoding a SASL request");
    }
    ksf_err e = ksfi_conn_write(ss->c, b->data, b->len, ss->deadline, ei);
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
        e = exchange(ss, &req, false, &payload, &r, ei); /* a whole frame already */
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
    ksfi_gp_buf b = {0};
    uint8_t *payload = NULL;
    rbuf r;
    frame_header(&b, KSFI_API_SASL_HANDSHAKE, 1, ++ss->corr, ss->client_id, false);
    put_be(&b, strlen(mech), 2);
    ksfi_gp_buf_put(&b, mech, strlen(mech));
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
    ksfi_free(b.data);
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
    ksfi_gp_buf b = {0};
    uint8_t *payload = NULL;
    rbuf r;
    frame_header(&b, KSFI_API_SASL_AUTHENTICATE, ss->v_auth, ++ss->corr, ss->client_id,
                 flex);
    if (flex) {
        put_uvarint(&b, len + 1);
    } else {
        put_be(&b, len, 4);
    }
    ksfi_gp_buf_put(&b, tok, len);
    if (flex) {
        put_uvarint(&b, 0);
    }
    ksf_err e = exchange(ss, &b, flex, &payload, &r, ei);
    OPENSSL_cleanse(b.data, b.len);
    ksfi_free(b.data);
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
